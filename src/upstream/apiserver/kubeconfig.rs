//! Kubeconfig files: `clusters`, `users`, `contexts`, `current-context` (YAML or its JSON form),
//! read by `crate::yaml` (yaml-rust2, nesting and aliases bounded) as kubectl reads them:
//! `tokenFile` over `token` and `*-data` over the file, as client-go does.
//!
//! The reader is ours over the YAML and base64 libraries: kube-rs's `Kubeconfig` is part of a
//! Kubernetes client library (`kube-client`), which SPEC 9 excludes, and the standalone readers
//! found (`kube-conf` 0.1, `kubeclient` 0.1) are unmaintained and read YAML with `serde_yaml`
//! (unmaintained, aliases unbounded; SPEC 2b asks for a bound).
//!
//! Only what a node agent needs: an `https://` server, the CA (file or data), and one credential
//! (token, token file, or client certificate and key, file or data). Anything else that would
//! change how the agent authenticates (`exec`, `auth-provider`, `username`/`password`, proxies,
//! `insecure-skip-tls-verify`) is refused with the key and the file named, never ignored.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Bytes given inline (`*-data`, base64-decoded) or a file to read (relative paths resolved
/// against the kubeconfig's directory, as kubectl does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Data(Vec<u8>),
}

impl Source {
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Source::File(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())),
            Source::Data(d) => Ok(d.clone()),
        }
    }

    /// For check-config: where it comes from, never the bytes.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Source::File(p) => format!("file {}", p.display()),
            Source::Data(d) => format!("{key}-data in the kubeconfig ({} bytes)", d.len()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Token(String),
    TokenFile(PathBuf),
    ClientCert { cert: Source, key: Source },
}

impl Auth {
    /// For check-config: the method, never the secret.
    pub fn describe(&self) -> String {
        match self {
            Auth::None => "none (anonymous)".into(),
            Auth::Token(_) => "bearer token (inline in the kubeconfig)".into(),
            Auth::TokenFile(p) => format!(
                "bearer token from {} (re-read when it changes)",
                p.display()
            ),
            Auth::ClientCert { cert, .. } => {
                format!(
                    "client certificate ({})",
                    cert.describe("client-certificate")
                )
            }
        }
    }
}

/// Where and how to reach the apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://host[:port]` without a trailing slash.
    pub server: String,
    /// None: no CA configured (refused by the caller: no bundled roots).
    pub ca: Option<Source>,
    pub auth: Auth,
}

pub fn load(path: &Path) -> Result<Target, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, path)
}

pub fn parse(text: &str, file: &Path) -> Result<Target, String> {
    let f = file.display();
    let doc = crate::yaml::parse(text)
        .map_err(|e| format!("{f}: line {}: {}", e.line, e.msg))?
        .ok_or_else(|| format!("{f}: empty file"))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let ctx_name = str_at(&doc, "current-context", file)?
        .ok_or_else(|| format!("{f}: current-context: missing"))?;
    let context = named(&doc, "contexts", "context", ctx_name, file)?;
    let cluster_name = str_at(context, "cluster", file)?
        .ok_or_else(|| format!("{f}: contexts[{ctx_name}].context.cluster: missing"))?;
    let user_name = str_at(context, "user", file)?;
    let cluster = named(&doc, "clusters", "cluster", cluster_name, file)?;
    for key in ["insecure-skip-tls-verify", "proxy-url", "tls-server-name"] {
        if !cluster[key].is_null() && cluster[key] != Value::Bool(false) {
            return Err(format!(
                "{f}: clusters[{cluster_name}].cluster.{key}: not supported by yurt-ota"
            ));
        }
    }
    let server = str_at(cluster, "server", file)?
        .ok_or_else(|| format!("{f}: clusters[{cluster_name}].cluster.server: missing"))?;
    let server = check_server(server)
        .map_err(|e| format!("{f}: clusters[{cluster_name}].cluster.server: {e}"))?;
    let ca = source(cluster, "certificate-authority", base, file)?;
    let auth = match user_name {
        None => Auth::None,
        Some(u) => user(named(&doc, "users", "user", u, file)?, u, base, file)?,
    };
    Ok(Target { server, ca, auth })
}

/// `https://host[:port]`, host a name or an IP (v6 in brackets); a path prefix is refused.
pub fn check_server(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .ok_or_else(|| format!("{s:?} is not an https:// URL"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("{s:?}: only https://host[:port] is supported"));
    }
    Ok(format!("https://{rest}"))
}

fn user(u: &Value, name: &str, base: &Path, file: &Path) -> Result<Auth, String> {
    let f = file.display();
    for key in [
        "exec",
        "auth-provider",
        "username",
        "password",
        "as",
        "as-groups",
        "impersonate",
    ] {
        if !u[key].is_null() {
            return Err(format!(
                "{f}: users[{name}].user.{key}: not supported by yurt-ota (use a token, tokenFile, or client-certificate and client-key)"
            ));
        }
    }
    let cert = source(u, "client-certificate", base, file)?;
    let key = source(u, "client-key", base, file)?;
    let token = str_at(u, "token", file)?.filter(|t| !t.is_empty());
    let token_file = str_at(u, "tokenFile", file)?.filter(|t| !t.is_empty());
    match (cert, key) {
        (Some(cert), Some(key)) => return Ok(Auth::ClientCert { cert, key }),
        (Some(_), None) => {
            return Err(format!(
                "{f}: users[{name}].user.client-key: missing (client-certificate is set)"
            ))
        }
        (None, Some(_)) => {
            return Err(format!(
                "{f}: users[{name}].user.client-certificate: missing (client-key is set)"
            ))
        }
        (None, None) => {}
    }
    // client-go reads `tokenFile` over `token` (and re-reads it), so both do.
    Ok(match (token, token_file) {
        (_, Some(p)) => Auth::TokenFile(base.join(p)),
        (Some(t), None) => Auth::Token(t.to_owned()),
        (None, None) => Auth::None,
    })
}

/// `KEY` (a path) or `KEY-data` (base64).
fn source(node: &Value, key: &str, base: &Path, file: &Path) -> Result<Option<Source>, String> {
    let data_key = format!("{key}-data");
    if let Some(d) = str_at(node, &data_key, file)?.filter(|d| !d.is_empty()) {
        let bytes =
            base64(d).ok_or_else(|| format!("{}: {data_key}: not valid base64", file.display()))?;
        return Ok(Some(Source::Data(bytes)));
    }
    Ok(str_at(node, key, file)?
        .filter(|p| !p.is_empty())
        .map(|p| Source::File(base.join(p))))
}

fn str_at<'a>(node: &'a Value, key: &str, file: &Path) -> Result<Option<&'a str>, String> {
    match &node[key] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(format!("{}: {key}: expected a string", file.display())),
    }
}

/// The `inner` map of the entry named `name` in the list `list`.
fn named<'a>(
    doc: &'a Value,
    list: &str,
    inner: &str,
    name: &str,
    file: &Path,
) -> Result<&'a Value, String> {
    let f = file.display();
    let entries = doc[list]
        .as_array()
        .ok_or_else(|| format!("{f}: {list}: missing or not a list"))?;
    let entry = entries
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .ok_or_else(|| format!("{f}: {list}: no entry named {name:?}"))?;
    let v = &entry[inner];
    if !v.is_object() {
        return Err(format!("{f}: {list}[{name}].{inner}: missing or not a map"));
    }
    Ok(v)
}

/// Standard base64 with padding (the `base64` crate); whitespace ignored, as `kubectl`
/// reads PEM data wrapped over lines.
pub fn base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape kubeadm writes to /etc/kubernetes/kubelet.conf (client cert rotated to a file).
    const KUBELET: &str = r#"apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=
    server: https://192.168.1.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:edge-7
  name: system:node:edge-7@kubernetes
current-context: system:node:edge-7@kubernetes
kind: Config
preferences: {}
users:
- name: system:node:edge-7
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
"#;

    /// The shape of k3s's agent kubeconfig (/var/lib/rancher/k3s/agent/kubelet.kubeconfig).
    const K3S_AGENT: &str = r#"apiVersion: v1
clusters:
- cluster:
    server: https://127.0.0.1:6444
    certificate-authority: /var/lib/rancher/k3s/agent/server-ca.crt
  name: local
contexts:
- context:
    cluster: local
    namespace: default
    user: user
  name: Default
current-context: Default
kind: Config
preferences: {}
users:
- name: user
  user:
    client-certificate: /var/lib/rancher/k3s/agent/client-kubelet.crt
    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key
"#;

    fn p() -> &'static Path {
        Path::new("/etc/yurt-ota/kubeconfig")
    }

    #[test]
    fn kubelet_kubeconfig_loads() {
        let t = parse(KUBELET, p()).unwrap();
        assert_eq!(t.server, "https://192.168.1.10:6443");
        assert_eq!(
            t.ca,
            Some(Source::Data(b"-----BEGIN CERTIFICATE-----\nMIIC".to_vec()))
        );
        let pem = Source::File("/var/lib/kubelet/pki/kubelet-client-current.pem".into());
        assert_eq!(
            t.auth,
            Auth::ClientCert {
                cert: pem.clone(),
                key: pem
            }
        );
    }

    #[test]
    fn k3s_agent_kubeconfig_loads() {
        let t = parse(K3S_AGENT, p()).unwrap();
        assert_eq!(t.server, "https://127.0.0.1:6444");
        assert_eq!(
            t.ca,
            Some(Source::File(
                "/var/lib/rancher/k3s/agent/server-ca.crt".into()
            ))
        );
        assert!(matches!(t.auth, Auth::ClientCert { .. }));
        assert!(t.auth.describe().contains("client-kubelet.crt"));
    }

    #[test]
    fn token_file_relative_to_kubeconfig_and_json_form() {
        let json = r#"{"apiVersion":"v1","kind":"Config","current-context":"c",
          "clusters":[{"name":"k","cluster":{"server":"https://api.fleet.example:6443/","certificate-authority":"ca.crt"}}],
          "contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}],
          "users":[{"name":"u","user":{"tokenFile":"token"}}]}"#;
        let t = parse(json, p()).unwrap();
        assert_eq!(t.server, "https://api.fleet.example:6443");
        assert_eq!(t.ca, Some(Source::File("/etc/yurt-ota/ca.crt".into())));
        assert_eq!(t.auth, Auth::TokenFile("/etc/yurt-ota/token".into()));
    }

    #[test]
    fn inline_token_is_never_described() {
        let y = K3S_AGENT.replace(
            "    client-certificate: /var/lib/rancher/k3s/agent/client-kubelet.crt\n    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key\n",
            "    token: s3cr3t-token\n",
        );
        let t = parse(&y, p()).unwrap();
        assert_eq!(t.auth, Auth::Token("s3cr3t-token".into()));
        assert!(!t.auth.describe().contains("s3cr3t"));
    }

    #[test]
    fn unsupported_keys_are_named_with_the_file() {
        let exec = K3S_AGENT.replace(
            "    client-certificate: /var/lib/rancher/k3s/agent/client-kubelet.crt\n",
            "    exec:\n      command: aws\n",
        );
        let e = parse(&exec, p()).unwrap_err();
        assert!(
            e.contains("/etc/yurt-ota/kubeconfig") && e.contains("users[user].user.exec"),
            "{e}"
        );
        let ap = K3S_AGENT.replace(
            "    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key\n",
            "    client-key: k\n    auth-provider:\n      name: gcp\n",
        );
        assert!(parse(&ap, p()).unwrap_err().contains("user.auth-provider"));
        let insecure = K3S_AGENT.replace(
            "  name: local",
            "    insecure-skip-tls-verify: true\n  name: local",
        );
        assert!(parse(&insecure, p())
            .unwrap_err()
            .contains("insecure-skip-tls-verify"));
        let http = K3S_AGENT.replace("https://127.0.0.1:6444", "http://127.0.0.1:6444");
        assert!(parse(&http, p()).unwrap_err().contains("cluster.server"));
        let half = K3S_AGENT.replace(
            "    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key\n",
            "",
        );
        assert!(parse(&half, p())
            .unwrap_err()
            .contains("client-key: missing"));
        let nocontext = K3S_AGENT.replace("current-context: Default", "current-context: other");
        assert!(parse(&nocontext, p())
            .unwrap_err()
            .contains("no entry named \"other\""));
        let e = parse("{{{", p()).unwrap_err();
        assert!(e.contains("kubeconfig: line 1: "), "{e}");
        let e = parse("a: [1", p()).unwrap_err();
        assert!(e.contains("kubeconfig: line 2: not YAML"), "{e}");
    }

    /// client-go: `tokenFile` over `token`; `*-data` over the file.
    #[test]
    fn token_file_over_token_and_data_over_file() {
        let y = K3S_AGENT
            .replace(
                "    client-certificate: /var/lib/rancher/k3s/agent/client-kubelet.crt\n    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key\n",
                "    token: inline\n    tokenFile: /run/token\n",
            )
            .replace(
                "    certificate-authority: /var/lib/rancher/k3s/agent/server-ca.crt\n",
                "    certificate-authority: /ca.crt\n    certificate-authority-data: aGk=\n",
            );
        let t = parse(&y, p()).unwrap();
        assert_eq!(t.auth, Auth::TokenFile("/run/token".into()));
        assert_eq!(t.ca, Some(Source::Data(b"hi".to_vec())));
    }

    /// What kubectl itself writes and reads: flow maps (the k3s recipe of docs/apiserver.md), a long value
    /// folded onto the next line, a tab after a key, CR line endings.
    #[test]
    fn flow_maps_folded_values_tabs_and_cr_line_endings() {
        let y = "apiVersion: v1\nkind: Config\nclusters:\n- name: k3s\n  cluster: {server: https://10.0.0.1:6443, certificate-authority: /etc/yurt-ota/ca.crt}\ncontexts:\n- name: c\n  context: {cluster: k3s, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eXVydC1vdGE6eXVydC1vdGEifQ\n      .c2lnbmF0dXJl\n";
        let t = parse(y, p()).unwrap();
        assert_eq!(t.server, "https://10.0.0.1:6443");
        assert_eq!(t.ca, Some(Source::File("/etc/yurt-ota/ca.crt".into())));
        assert_eq!(
            t.auth,
            Auth::Token("eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eXVydC1vdGE6eXVydC1vdGEifQ .c2lnbmF0dXJl".into())
        );
        let cr = y
            .replace("user:\n    token", "user:\n    token:\t")
            .replace("token:\t:", "token:\t")
            .replace('\n', "\r");
        assert_eq!(parse(&cr, p()).unwrap().server, "https://10.0.0.1:6443");
    }

    /// Issue 23 item 7: 40,000 nested `- ` is refused with its line, not a stack overflow.
    #[test]
    fn deep_nesting_is_refused_with_its_line() {
        let y = format!("apiVersion: v1\nclusters:\n{}x\n", "- ".repeat(40_000));
        let e = parse(&y, p()).unwrap_err();
        assert!(
            e.contains("kubeconfig: line 3: nested deeper than 64"),
            "{e}"
        );
    }

    #[test]
    fn servers_with_ip_host_and_v6() {
        assert_eq!(
            check_server("https://10.0.0.1:6443").unwrap(),
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            check_server("https://k3s.local").unwrap(),
            "https://k3s.local"
        );
        assert_eq!(
            check_server("https://[fd00::1]:6443").unwrap(),
            "https://[fd00::1]:6443"
        );
        assert!(check_server("https://a/prefix").is_err());
        assert!(check_server("10.0.0.1:6443").is_err());
    }

    #[test]
    fn base64_decodes_and_refuses_garbage() {
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64("aGVs\nbG8h").unwrap(), b"hello!");
        assert_eq!(base64("aGk=").unwrap(), b"hi");
        assert_eq!(base64("").unwrap(), b"");
        assert!(base64("aGk").is_none());
        assert!(base64("a=Gk").is_none());
        assert!(base64("aG*k").is_none());
    }
}
