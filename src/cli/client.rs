//! The client side of the CLI: one call to the agent's API, over TCP or its Unix socket.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{load_settings, ClientOpts, Failure};
use crate::config::{self, Listen};
use crate::http::client::{
    split_http_base, Client as Http, Error, Request, Response, Tcp, Transport, Unix,
};
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
}

/// A CLI call: connect and answer within this.
const TIMEOUT: Duration = Duration::from_secs(30);

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
        Ok(Client { target, token })
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
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let req = Request {
            method,
            target: path,
            headers: &headers,
            body: body.map(str::as_bytes),
        };
        let answer = match &self.target {
            Target::Http(base) => {
                let (authority, prefix) = split_http_base(base);
                let target = format!("{prefix}{path}");
                let req = Request {
                    target: &target,
                    ..req
                };
                let tcp = Tcp {
                    authority: authority.to_owned(),
                };
                answer(Http::new(tcp, TIMEOUT, Some(TIMEOUT)).send(&req))
            }
            Target::Unix(p) => {
                let unix = Unix(p.clone());
                answer(Http::new(unix, TIMEOUT, Some(TIMEOUT)).send(&req))
            }
        };
        answer.map_err(|e| self.unreachable(e))
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

/// The status and the whole body.
fn answer<S: Transport>(resp: Result<Response<S>, Error>) -> Result<Answer, Error> {
    let mut resp = resp?;
    let body = resp.read_to_vec(crate::upstream::MAX_BODY)?;
    Ok(Answer {
        status: resp.status,
        body,
    })
}
