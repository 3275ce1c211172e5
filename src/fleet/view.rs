//! What the policy knows of each DaemonSet's strategy and fleet budget: pure data, built by the
//! loop from what the upstream reports (`DaemonSetInfo`) and from the slot attempts the act step
//! made (`SlotView`). The policy never learns which upstream it talks to, nor does any I/O.

use std::collections::HashMap;

use super::strategy::{budget, Strategy};

/// A DaemonSet as the upstream reports it (apiserver mode); YurtHub reports none, as OpenYurt's
/// cloud controller carries the strategies out there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonSetInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `apps.openyurt.io/update-strategy`, as written.
    pub strategy: Option<String>,
    /// `apps.openyurt.io/max-unavailable`, as written.
    pub max_unavailable: Option<String>,
    /// `status.desiredNumberScheduled`.
    pub desired_number_scheduled: u32,
    /// `spec.minReadySeconds`: a pod is available once Ready this long.
    pub min_ready_seconds: u32,
}

/// What is known of a DaemonSet's slots, from this node's last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotView {
    /// Not tried yet, or tried again now.
    Unknown,
    /// This node holds slot `index`.
    Held { index: u32 },
    /// No slot to take now: `held` slots held by others, at most ten of them named (then
    /// "N more"); fewer than the budget while this node waits its turn in line for a free one
    /// (`fleet::run::turn`). Tried again at `retry_ms`.
    Full {
        holders: Vec<String>,
        held: u32,
        retry_ms: u64,
    },
    /// The Leases could not be read or written; tried again at `retry_ms`. Fail closed.
    Unavailable { error: String, retry_ms: u64 },
}

/// One DaemonSet as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSetView {
    pub namespace: String,
    pub name: String,
    /// `Ok(None)`: no annotation; `Err(value)`: a value no OpenYurt knows (left alone).
    pub strategy: Result<Option<Strategy>, String>,
    /// Fleet budget in slots; `None`: no budget.
    pub budget: Option<u32>,
    pub slots: SlotView,
    /// `spec.minReadySeconds`: this node's pod is available once Ready this long (SPEC 6b).
    pub min_ready: std::time::Duration,
}

impl DaemonSetView {
    /// The view of `info` with no slot attempt yet, and the budget annotation's error, if it
    /// had one (the default budget applies then: a typo must not lift the budget).
    pub fn of(info: &DaemonSetInfo) -> (DaemonSetView, Option<String>) {
        let strategy = match info.strategy.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => Strategy::parse(v).map(Some).ok_or_else(|| v.to_owned()),
        };
        let (budget, error) = match strategy {
            Ok(Some(s)) => match budget(
                s,
                info.max_unavailable.as_deref(),
                info.desired_number_scheduled,
            ) {
                Ok(b) => (b.map(|b| b.slots), None),
                Err(e) => (
                    budget(
                        Strategy::AdvancedRollingUpdate,
                        None,
                        info.desired_number_scheduled,
                    )
                    .ok()
                    .flatten()
                    .map(|b| b.slots),
                    Some(e),
                ),
            },
            _ => (None, None),
        };
        (
            DaemonSetView {
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                strategy,
                budget,
                slots: SlotView::Unknown,
                min_ready: std::time::Duration::from_secs(u64::from(info.min_ready_seconds)),
            },
            error,
        )
    }

    /// The word for status: `OTA`, `AdvancedRollingUpdate`, `unknown: VALUE`, or none.
    pub fn strategy_word(&self) -> Option<String> {
        match &self.strategy {
            Ok(s) => s.map(|s| s.word().to_owned()),
            Err(v) => Some(format!("unknown: {v}")),
        }
    }
}

/// Every DaemonSet the upstream reports, by uid (a pod's owner uid).
pub type FleetView = HashMap<String, DaemonSetView>;

#[cfg(test)]
mod tests {
    use super::*;

    fn info(strategy: Option<&str>, max: Option<&str>) -> DaemonSetInfo {
        DaemonSetInfo {
            uid: "u".into(),
            namespace: "fleet".into(),
            name: "gw".into(),
            strategy: strategy.map(Into::into),
            max_unavailable: max.map(Into::into),
            desired_number_scheduled: 5,
            min_ready_seconds: 0,
        }
    }

    #[test]
    fn views_carry_strategy_budget_and_errors() {
        let (v, e) = DaemonSetView::of(&info(Some("auto"), Some("2")));
        assert_eq!(v.strategy, Ok(Some(Strategy::AdvancedRollingUpdate)));
        assert_eq!((v.budget, e), (Some(2), None));
        let (v, _) = DaemonSetView::of(&info(Some("OTA"), None));
        assert_eq!(
            (v.budget, v.strategy_word().as_deref()),
            (None, Some("OTA"))
        );
        let (v, _) = DaemonSetView::of(&info(Some("Rolling"), Some("2")));
        assert_eq!(v.strategy, Err("Rolling".into()));
        assert_eq!(v.budget, None);
        assert_eq!(v.strategy_word().as_deref(), Some("unknown: Rolling"));
        let (v, _) = DaemonSetView::of(&info(None, Some("2")));
        assert_eq!((v.strategy, v.budget), (Ok(None), None));
        // A malformed budget keeps the default (10% of 5, at least 1), and says why.
        let (v, e) = DaemonSetView::of(&info(Some("AdvancedRollingUpdate"), Some("two")));
        assert_eq!(v.budget, Some(1));
        assert!(e.unwrap().contains("max-unavailable"));
        let (v, e) = DaemonSetView::of(&info(Some("OTA"), Some("two")));
        assert_eq!(v.budget, Some(1), "annotated OTA: the default, never none");
        assert!(e.is_some());
    }
}
