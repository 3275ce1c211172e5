//! detect = "revision": whether a DaemonSet pod is at its DaemonSet's current template, by the
//! DaemonSet controller's own rule (`IsPodUpdated`). Pure: the caller reads the objects.
//! Ours: the rule lives in kube-controller-manager, and no Rust crate carries it (SPEC 9
//! excludes Kubernetes client libraries in any case).

use std::fmt;

/// What of a DaemonSet the rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonSetView {
    pub generation: i64,
    pub observed_generation: i64,
    /// `updateStrategy.type`.
    pub strategy: String,
    /// `apps.openyurt.io/update-strategy` annotation, if present.
    pub ota_annotation: Option<String>,
    /// `deprecated.daemonset.template.generation` annotation.
    pub template_generation: Option<String>,
    /// Hash (`controller-revision-hash` label) of the owned ControllerRevision with the highest
    /// `.revision`, if any.
    pub newest_hash: Option<String>,
}

/// The labels of a pod that the rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodLabels {
    pub template_generation: Option<String>,
    pub revision_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add `PodNeedUpgrade` with this status and `controllerrevision: <hash>`.
    Condition { needs: bool, hash: String },
    /// Left alone; the reason is shown in status.
    Skip(Skip),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotOnDelete(String),
    NoAnnotation,
    /// An annotation value OpenYurt does not know (SPEC 6b: OTA, AdvancedRollingUpdate, and
    /// their old spellings, compared case-insensitively).
    UnknownStrategy(String),
    /// The controller has not caught up with a spec change yet: decide later.
    Settling {
        generation: i64,
        observed: i64,
    },
    NoRevision,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotOnDelete(s) => write!(f, "updateStrategy is {s:?}, not OnDelete: left to the DaemonSet controller"),
            Skip::NoAnnotation => write!(f, "no apps.openyurt.io/update-strategy annotation: not handled"),
            Skip::Settling { generation, observed } => write!(
                f,
                "status.observedGeneration {observed} has not caught up with generation {generation} yet"
            ),
            Skip::UnknownStrategy(s) => write!(f, "apps.openyurt.io/update-strategy {s:?} is not OTA or AdvancedRollingUpdate: not handled"),
            Skip::NoRevision => write!(f, "no ControllerRevision owned by the DaemonSet yet"),
        }
    }
}

pub fn decide(ds: &DaemonSetView, pod: &PodLabels) -> Decision {
    if ds.strategy != "OnDelete" {
        return Decision::Skip(Skip::NotOnDelete(ds.strategy.clone()));
    }
    match ds
        .ota_annotation
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => return Decision::Skip(Skip::NoAnnotation),
        Some("ota" | "advancedrollingupdate" | "auto") => {}
        Some(_) => {
            let s = ds.ota_annotation.clone().unwrap_or_default();
            return Decision::Skip(Skip::UnknownStrategy(s));
        }
    }
    if ds.observed_generation < ds.generation {
        return Decision::Skip(Skip::Settling {
            generation: ds.generation,
            observed: ds.observed_generation,
        });
    }
    let Some(hash) = ds.newest_hash.clone() else {
        return Decision::Skip(Skip::NoRevision);
    };
    let by_generation = ds.template_generation.is_some()
        && pod.template_generation.is_some()
        && ds.template_generation == pod.template_generation;
    let by_hash = pod.revision_hash.as_deref() == Some(hash.as_str());
    Decision::Condition {
        needs: !(by_generation || by_hash),
        hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds() -> DaemonSetView {
        DaemonSetView {
            generation: 3,
            observed_generation: 3,
            strategy: "OnDelete".into(),
            ota_annotation: Some("OTA".into()),
            template_generation: Some("3".into()),
            newest_hash: Some("7d9f8c".into()),
        }
    }

    fn pod(generation: Option<&str>, hash: Option<&str>) -> PodLabels {
        PodLabels {
            template_generation: generation.map(str::to_owned),
            revision_hash: hash.map(str::to_owned),
        }
    }

    fn cond(needs: bool) -> Decision {
        Decision::Condition {
            needs,
            hash: "7d9f8c".into(),
        }
    }

    #[test]
    fn the_table() {
        let base = ds();
        let settling = DaemonSetView {
            observed_generation: 2,
            ..ds()
        };
        let rolling = DaemonSetView {
            strategy: "RollingUpdate".into(),
            ..ds()
        };
        let plain = DaemonSetView {
            ota_annotation: None,
            ..ds()
        };
        let lower = DaemonSetView {
            ota_annotation: Some("ota".into()),
            ..ds()
        };
        let aru = DaemonSetView {
            ota_annotation: Some("AdvancedRollingUpdate".into()),
            ..ds()
        };
        let odd = DaemonSetView {
            ota_annotation: Some("Sometimes".into()),
            ..ds()
        };
        let no_rev = DaemonSetView {
            newest_hash: None,
            ..ds()
        };
        let no_gen_annotation = DaemonSetView {
            template_generation: None,
            ..ds()
        };
        // `rollout undo`: the template goes back to an old revision's, which the controller
        // re-numbers as the newest; generation moves on (4), so the old pod's labels (gen 2,
        // hash of that revision) match by hash, not by generation.
        let undone = DaemonSetView {
            generation: 4,
            observed_generation: 4,
            template_generation: Some("4".into()),
            newest_hash: Some("5b6c".into()),
            ..ds()
        };
        let table: Vec<(&str, &DaemonSetView, PodLabels, Decision)> = vec![
            (
                "current by both",
                &base,
                pod(Some("3"), Some("7d9f8c")),
                cond(false),
            ),
            (
                "current by generation only",
                &base,
                pod(Some("3"), Some("old")),
                cond(false),
            ),
            (
                "current by hash only",
                &base,
                pod(Some("2"), Some("7d9f8c")),
                cond(false),
            ),
            ("outdated", &base, pod(Some("2"), Some("old")), cond(true)),
            (
                "ota, old spelling",
                &lower,
                pod(Some("2"), Some("old")),
                cond(true),
            ),
            (
                "AdvancedRollingUpdate",
                &aru,
                pod(Some("2"), Some("old")),
                cond(true),
            ),
            (
                "unknown strategy",
                &odd,
                pod(Some("2"), Some("old")),
                Decision::Skip(Skip::UnknownStrategy("Sometimes".into())),
            ),
            ("no labels at all", &base, pod(None, None), cond(true)),
            (
                "no generation annotation: hash decides",
                &no_gen_annotation,
                pod(None, Some("7d9f8c")),
                cond(false),
            ),
            (
                "no generation annotation, old hash",
                &no_gen_annotation,
                pod(Some("3"), Some("old")),
                cond(true),
            ),
            (
                "undo: old pod current by hash",
                &undone,
                pod(Some("2"), Some("5b6c")),
                Decision::Condition {
                    needs: false,
                    hash: "5b6c".into(),
                },
            ),
            (
                "undo: pod of the undone release outdated",
                &undone,
                pod(Some("3"), Some("7d9f8c")),
                Decision::Condition {
                    needs: true,
                    hash: "5b6c".into(),
                },
            ),
            (
                "settling",
                &settling,
                pod(Some("2"), Some("old")),
                Decision::Skip(Skip::Settling {
                    generation: 3,
                    observed: 2,
                }),
            ),
            (
                "rolling update",
                &rolling,
                pod(Some("2"), Some("old")),
                Decision::Skip(Skip::NotOnDelete("RollingUpdate".into())),
            ),
            (
                "no annotation",
                &plain,
                pod(Some("2"), None),
                Decision::Skip(Skip::NoAnnotation),
            ),
            (
                "no revision",
                &no_rev,
                pod(Some("2"), None),
                Decision::Skip(Skip::NoRevision),
            ),
        ];
        for (name, d, p, want) in table {
            assert_eq!(decide(d, &p), want, "{name}");
        }
    }

    #[test]
    fn skips_say_why() {
        assert!(Skip::NotOnDelete("RollingUpdate".into())
            .to_string()
            .contains("not OnDelete"));
        assert!(Skip::Settling {
            generation: 3,
            observed: 2
        }
        .to_string()
        .contains("observedGeneration 2"));
    }
}
