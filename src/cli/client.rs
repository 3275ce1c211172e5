//! The client side of the CLI: one call to the agent's API, over TCP or its Unix socket.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{load_settings, ClientOpts, Failure};
use crate::config::{self, Listen};
use crate::snapshot::Snapshot;

/// An answer from the agent.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn json(&self) -> Result<Value, Failure> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Failure::Failed(format!("the agent sent invalid JSON: {e}")))
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }

    /// The agent's own error sentence, or the relayed body.
    pub(super) fn message(&self) -> String {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v) if v.get("error").is_some() => {
                v["message"].as_str().unwrap_or_default().to_owned()
            }
            _ => self.text(),
        }
    }
}

pub(super) enum Target {
    Http(String),
    Unix(PathBuf),
}

pub(super) struct Client {
    pub(super) target: Target,
    pub(super) token: Option<String>,
    pub(super) agent: ureq::Agent,
}

impl Client {
    pub(super) fn new(opts: &ClientOpts) -> Result<Client, Failure> {
        // The file gives the address (unless --api does) and the token (unless --token-file does).
        let settings = match load_settings(opts.config.as_deref()) {
            Ok(s) => Some(s),
            Err(e) if opts.config.is_some() => return Err(e),
            Err(Failure::Failed(m) | Failure::Usage(m)) => {
                eprintln!("yurt-ota: warning: ignoring {}: {m}", config::DEFAULT_PATH);
                None
            }
        };
        let api =
            match &opts.api {
                Some(a) => a.clone(),
                None => settings
                    .as_ref()
                    .map_or(format!("http://{}", config::DEFAULT_API), |s| {
                        match &s.api.listen {
                            Listen::Tcp(addr) => format!("http://{addr}"),
                            Listen::Unix(p) => format!("unix:{}", p.display()),
                        }
                    }),
            };
        let target = if let Some(path) = api.strip_prefix("unix:") {
            Target::Unix(PathBuf::from(path))
        } else if api.starts_with("http://") {
            Target::Http(api.trim_end_matches('/').to_owned())
        } else {
            return Err(Failure::Usage(format!(
                "--api {api:?}: give http://HOST:PORT or unix:/PATH"
            )));
        };
        let token_file = opts
            .token_file
            .clone()
            .or_else(|| settings.and_then(|s| s.api.token_file));
        let token = match token_file {
            Some(path) if opts.token_file.is_some() => {
                Some(crate::api::read_token(&path).map_err(Failure::Failed)?)
            }
            // The config's token is used when this user may read it (root, or the service's group).
            Some(path) => crate::api::read_token(&path).ok(),
            None => None,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .new_agent();
        Ok(Client {
            target,
            token,
            agent,
        })
    }

    pub(super) fn describe(&self) -> String {
        match &self.target {
            Target::Http(base) => base.clone(),
            Target::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    pub(super) fn unreachable(&self, e: impl std::fmt::Display) -> Failure {
        Failure::Failed(format!(
            "agent not reachable at {} ({e}) — is yurt-ota running? (systemctl status yurt-ota; or pass --api)",
            self.describe()
        ))
    }

    pub(super) fn call(&self, method: &str, path: &str) -> Result<Answer, Failure> {
        self.send(method, path, None)
    }

    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Answer, Failure> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        match &self.target {
            Target::Http(base) => {
                let url = format!("{base}{path}");
                let mut req = ureq::http::Request::builder().method(method).uri(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                if body.is_some() {
                    req = req.header("Content-Type", "application/json");
                }
                let req = req
                    .body(body.unwrap_or_default().as_bytes().to_vec())
                    .map_err(|e| Failure::Failed(format!("{method} {url}: {e}")))?;
                let result = self.agent.run(req);
                let mut resp = result.map_err(|e| self.unreachable(e))?;
                let status = resp.status().as_u16();
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(crate::upstream::MAX_BODY)
                    .read_to_vec()
                    .map_err(|e| self.unreachable(e))?;
                Ok(Answer { status, body })
            }
            Target::Unix(p) => {
                unix_call(p, method, path, auth.as_deref(), body).map_err(|e| self.unreachable(e))
            }
        }
    }

    pub(super) fn get_json(&self, path: &str) -> Result<Value, Failure> {
        let a = self.call("GET", path)?;
        if a.status != 200 {
            return Err(Failure::Failed(format!(
                "GET {path}: the agent answered {}: {}",
                a.status,
                a.message()
            )));
        }
        a.json()
    }

    pub(super) fn pods(&self) -> Result<Snapshot, Failure> {
        let a = self.call("GET", "/pods")?;
        if a.status != 200 {
            return Err(Failure::Failed(format!(
                "the agent has no pod list ({}): {}",
                a.status,
                a.message()
            )));
        }
        Snapshot::build(&a.body).map_err(|e| Failure::Failed(format!("the agent sent {e}")))
    }
}

/// One HTTP/1.1 request over a Unix socket, with `Connection: close` so the answer ends at EOF.
fn unix_call(
    path: &Path,
    method: &str,
    target: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Answer> {
    use std::io::{Error, ErrorKind};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or_default();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n{body}", body.len())?;
    let mut raw = Vec::new();
    s.take(crate::upstream::MAX_BODY + 65536)
        .read_to_end(&mut raw)?;
    let bad = || Error::new(ErrorKind::InvalidData, "not an HTTP answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad())?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "chunked answers are not expected from the agent",
        ));
    }
    Ok(Answer {
        status,
        body: raw[end + 4..].to_vec(),
    })
}
