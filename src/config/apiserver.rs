//! The `[upstream]` keys of the apiserver upstream (SPEC section 2b): where the apiserver is
//! (a kubeconfig, or a server URL with its CA and credentials), the node, and how outdated pods
//! are detected. Validated here; only allowed with `kind = "apiserver"`.

use std::path::PathBuf;

use super::errors::Errors;
use super::raw::RawUpstream;
use super::types::{absolute_path, check_authority};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiserverSettings {
    /// Server, CA and credentials from a kubeconfig file; exactly one of this and `server`.
    pub kubeconfig: Option<PathBuf>,
    /// `https://host[:port]`, without a trailing slash.
    pub server: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Bearer token, re-read when it changes (rotated tokens).
    pub token_file: Option<PathBuf>,
    /// Mutual TLS: certificate and key, only together.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `None`: the host name, as the kubelet does.
    pub node_name: Option<String>,
    pub detect: Detect,
}

/// How the agent tells that a pod needs an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// `PodNeedUpgrade` from OpenYurt's controller.
    Openyurt,
    /// The owning DaemonSet's revision compared with the pod's, without OpenYurt.
    Revision,
}

impl std::str::FromStr for Detect {
    type Err = String;

    fn from_str(s: &str) -> Result<Detect, String> {
        match s {
            "openyurt" => Ok(Detect::Openyurt),
            "revision" => Ok(Detect::Revision),
            other => Err(format!(
                "unknown value {other:?}; expected \"openyurt\" or \"revision\""
            )),
        }
    }
}

impl std::fmt::Display for Detect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Detect::Openyurt => "openyurt",
            Detect::Revision => "revision",
        })
    }
}

/// The apiserver settings of `[upstream]`: `Some` only for `kind = "apiserver"` and no error.
/// With another kind, each apiserver key that is set is an error.
pub(super) fn settings(u: &RawUpstream, e: &mut Errors) -> Option<ApiserverSettings> {
    let keys = [
        ("kubeconfig", &u.kubeconfig),
        ("server", &u.server),
        ("ca_file", &u.ca_file),
        ("token_file", &u.token_file),
        ("client_cert", &u.client_cert),
        ("client_key", &u.client_key),
        ("node_name", &u.node_name),
        ("detect", &u.detect),
    ];
    if u.kind.as_deref() != Some("apiserver") {
        for (key, value) in keys {
            if value.is_some() {
                e.push(
                    &format!("upstream.{key}"),
                    "only used with kind = \"apiserver\"".into(),
                );
            }
        }
        return None;
    }
    let before = e.len();
    // An empty string is the same as leaving the key out (as the packaged file shows them).
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let path = |e: &mut Errors, key: &str, v: &Option<String>| {
        let v = set(v)?;
        match absolute_path(&v) {
            Ok(p) => Some(p),
            Err(msg) => {
                e.push(&format!("upstream.{key}"), msg);
                None
            }
        }
    };
    let kubeconfig = path(e, "kubeconfig", &u.kubeconfig);
    let server = set(&u.server).and_then(|s| match parse_server(&s) {
        Ok(s) => Some(s),
        Err(msg) => {
            e.push("upstream.server", msg);
            None
        }
    });
    match (set(&u.kubeconfig), set(&u.server)) {
        (Some(_), Some(_)) => e.push(
            "upstream.server",
            "set kubeconfig or server, not both (the kubeconfig names its server)".into(),
        ),
        (None, None) => e.push(
            "upstream.kubeconfig",
            "required for kind = \"apiserver\": a kubeconfig, or server = \"https://...\"".into(),
        ),
        _ => {}
    }
    let ca_file = path(e, "ca_file", &u.ca_file);
    let token_file = path(e, "token_file", &u.token_file);
    let cert = path(e, "client_cert", &u.client_cert);
    let key = path(e, "client_key", &u.client_key);
    let client_cert = match (set(&u.client_cert), set(&u.client_key)) {
        (Some(_), None) => {
            e.push("upstream.client_key", "required with client_cert".into());
            None
        }
        (None, Some(_)) => {
            e.push("upstream.client_cert", "required with client_key".into());
            None
        }
        _ => cert.zip(key),
    };
    let node_name = set(&u.node_name).and_then(|n| match crate::names::check_subdomain(&n) {
        Ok(()) => Some(n),
        Err(msg) => {
            e.push("upstream.node_name", msg);
            None
        }
    });
    let detect = match u.detect.as_deref() {
        None => Some(Detect::Openyurt),
        Some(d) => d.parse().map_err(|msg| e.push("upstream.detect", msg)).ok(),
    };
    if e.len() != before {
        return None;
    }
    Some(ApiserverSettings {
        kubeconfig,
        server,
        ca_file,
        token_file,
        client_cert,
        node_name,
        detect: detect?,
    })
}

/// An `https://host[:port]` URL: the apiserver is only spoken to over TLS.
fn parse_server(s: &str) -> Result<String, String> {
    let Some(rest) = s.strip_prefix("https://") else {
        return Err(format!(
            "{s:?} is not an https:// URL (the apiserver is only reached over TLS)"
        ));
    };
    check_authority(s, rest)?;
    Ok(s.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::raw::RawUpstream;

    fn check(u: RawUpstream) -> Result<ApiserverSettings, Vec<String>> {
        let mut e = Errors::new("", Path::new("/etc/yurt-ota/config.toml"));
        let s = settings(&u, &mut e);
        let errs: Vec<String> = crate::config::ConfigErrors::from(e)
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        match s {
            Some(s) if errs.is_empty() => Ok(s),
            _ => Err(errs),
        }
    }

    fn apiserver() -> RawUpstream {
        RawUpstream {
            kind: Some("apiserver".into()),
            ..RawUpstream::default()
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.into())
    }

    #[test]
    fn a_kubeconfig_or_a_server_is_read() {
        let k = check(RawUpstream {
            kubeconfig: s("/etc/yurt-ota/kubeconfig"),
            node_name: s("edge-1"),
            ..apiserver()
        })
        .unwrap();
        assert_eq!(
            k.kubeconfig.as_deref(),
            Some(Path::new("/etc/yurt-ota/kubeconfig"))
        );
        assert_eq!(
            (k.detect, k.node_name.as_deref()),
            (Detect::Openyurt, Some("edge-1"))
        );
        let v = check(RawUpstream {
            server: s("https://10.0.0.1:6443/"),
            ca_file: s("/etc/yurt-ota/ca.crt"),
            token_file: s("/etc/yurt-ota/token"),
            client_cert: s("/c.crt"),
            client_key: s("/c.key"),
            detect: s("revision"),
            // Empty means unset, as in the packaged file.
            kubeconfig: s(""),
            ..apiserver()
        })
        .unwrap();
        assert_eq!(v.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(v.client_cert, Some(("/c.crt".into(), "/c.key".into())));
        assert_eq!(v.detect, Detect::Revision);
    }

    #[test]
    fn every_apiserver_error_names_its_key() {
        let errs = check(RawUpstream {
            kubeconfig: s("kubeconfig"),
            server: s("http://10.0.0.1:99999"),
            ca_file: s("ca.crt"),
            client_cert: s("/c.crt"),
            node_name: s("Not_A_Name"),
            detect: s("guess"),
            ..apiserver()
        })
        .unwrap_err();
        let want = [
            "`upstream.kubeconfig`: \"kubeconfig\" must be an absolute path",
            "`upstream.server`: \"http://10.0.0.1:99999\" is not an https:// URL",
            "`upstream.server`: set kubeconfig or server, not both",
            "`upstream.ca_file`: \"ca.crt\" must be an absolute path",
            "`upstream.client_key`: required with client_cert",
            "`upstream.node_name`:",
            "`upstream.detect`: unknown value \"guess\"",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        let errs = check(RawUpstream {
            server: s("https://10.0.0.1:65536"),
            ..apiserver()
        })
        .unwrap_err();
        assert!(errs[0].contains("1..=65535"), "{errs:?}");
        let errs = check(apiserver()).unwrap_err();
        assert!(
            errs[0].contains("`upstream.kubeconfig`: required"),
            "{errs:?}"
        );
    }

    #[test]
    fn apiserver_keys_are_refused_with_another_kind() {
        let errs = check(RawUpstream {
            kind: s("yurthub"),
            server: s("https://10.0.0.1:6443"),
            detect: s("revision"),
            ..RawUpstream::default()
        })
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("`upstream.server`: only used with kind = \"apiserver\""));
        assert!(errs[1].contains("`upstream.detect`: only used with"));
        // Without a kind (yurthub by default) too.
        let errs = check(RawUpstream {
            kubeconfig: s("/k"),
            ..RawUpstream::default()
        })
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
    }
}
