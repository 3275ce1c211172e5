//! One scripted upstream for unit tests, instead of a fake per test module: a pod list the test
//! sets, upgrade calls answered with a set status and logged in order, and, for the fleet
//! budget, DaemonSets and a Lease store. (Integration tests use a real HTTP upstream.)

use std::sync::{Arc, Mutex};

use super::{Relay, Upstream, UpstreamError};
use crate::fleet::testing::Store as Leases;
use crate::fleet::DaemonSetInfo;

pub struct Fake {
    /// What `list_pods` answers.
    pub pods: Mutex<Result<Vec<u8>, UpstreamError>>,
    /// The status every upgrade call is answered with.
    pub status: u16,
    /// Every upgrade call, `upgrade NS/POD`, in order; in the Lease store's log when there is
    /// one, so that the order of slot writes and calls is one list.
    pub calls: Mutex<Vec<String>>,
    pub daemonsets: Vec<DaemonSetInfo>,
    /// The Lease store and this node's name.
    pub leases: Option<(Arc<Leases>, &'static str)>,
}

impl Default for Fake {
    /// No pod list (the connection is refused), upgrades answered 200, no fleet.
    fn default() -> Fake {
        Fake {
            pods: Mutex::new(Err(UpstreamError::Connect("no pod list set".into()))),
            status: 200,
            calls: Mutex::default(),
            daemonsets: Vec::new(),
            leases: None,
        }
    }
}

impl Fake {
    /// Answers `GET /pods` with `body`.
    pub fn listing(body: Vec<u8>) -> Fake {
        Fake {
            pods: Mutex::new(Ok(body)),
            ..Fake::default()
        }
    }

    pub fn set_pods(&self, answer: Result<Vec<u8>, UpstreamError>) {
        *self.pods.lock().unwrap() = answer;
    }
}

impl Upstream for Fake {
    fn list_pods(&self) -> Result<Vec<u8>, UpstreamError> {
        self.pods.lock().unwrap().clone()
    }
    fn upgrade(&self, ns: &str, pod: &str) -> Result<Relay, UpstreamError> {
        let call = format!("upgrade {ns}/{pod}");
        match &self.leases {
            Some((leases, _)) => leases.ops.lock().unwrap().push(call),
            None => self.calls.lock().unwrap().push(call),
        }
        Ok(Relay {
            status: self.status,
            content_type: None,
            body: format!("Start updating pod {ns}/{pod}").into_bytes(),
        })
    }
    fn imagepull(&self, ns: &str, pod: &str) -> Result<Relay, UpstreamError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("imagepull {ns}/{pod}"));
        Ok(Relay {
            status: 200,
            content_type: None,
            body: Vec::new(),
        })
    }
    fn kind(&self) -> &'static str {
        "test"
    }
    fn url(&self) -> &str {
        "test://"
    }
    fn daemonsets(&self) -> Vec<DaemonSetInfo> {
        self.daemonsets.clone()
    }
    fn leases(&self) -> crate::fleet::run::Io<'_> {
        let (leases, node) = self.leases.as_ref()?;
        Some((&**leases, node))
    }
}
