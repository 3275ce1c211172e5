//! What `kubectl apply -f packaging/kubernetes/rbac.yaml` creates: Namespaces,
//! ServiceAccounts, Secrets, Roles, RoleBindings, ClusterRoles and ClusterRoleBindings, stored
//! and served as written (create, get, list; a second apply's patch is not served). The RBAC
//! objects stored are enforced beside the stand-in's manifest, and a ServiceAccount token
//! Secret of the agent's ServiceAccount gets its token, as the token controller fills it.

use serde_json::{json, Value};

use super::store::{Res, CONFIG};
use super::Cluster;

/// A request's target among these kinds: (resource, namespace, name), from the path after
/// `/api/v1` or `/apis/<group>/v1`.
pub fn route<'a>(group: &str, rest: &[&'a str]) -> Option<(Res, Option<&'a str>, Option<&'a str>)> {
    let (ns, tail) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(*ns), tail),
        _ => (None, rest),
    };
    let (plural, name) = match tail {
        [p] => (*p, None),
        [p, n] => (*p, Some(*n)),
        _ => return None,
    };
    let (res, .., cluster) = CONFIG.iter().find(|c| c.2 == plural && c.3 == group)?;
    (*cluster == ns.is_none()).then_some((*res, ns, name))
}

impl Cluster {
    /// The RBAC objects stored (applied with kubectl), to enforce.
    pub fn rbac_objects(&self) -> Vec<Value> {
        let st = self.lock();
        let mut out = Vec::new();
        for res in [
            Res::Roles,
            Res::RoleBindings,
            Res::ClusterRoles,
            Res::ClusterRoleBindings,
        ] {
            out.extend(st.store.list(res, None).map(|o| {
                let mut o = o.clone();
                o["kind"] = json!(res.kind());
                o
            }));
        }
        out
    }

    /// The token controller's part: a `kubernetes.io/service-account-token` Secret of the
    /// ServiceAccount `sa` (namespace, name) gets `token` in `data`.
    pub fn fill_token(&self, ns: &str, name: &str, sa: (&str, &str), token: &str) {
        let mut st = self.lock();
        let Some(mut secret) = st.store.get(Res::Secrets, ns, name).cloned() else {
            return;
        };
        let theirs = secret["type"] == "kubernetes.io/service-account-token"
            && ns == sa.0
            && secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa.1;
        if !theirs {
            return;
        }
        let b64 = super::tls::base64;
        secret["data"] = json!({"token": b64(token.as_bytes()), "namespace": b64(ns.as_bytes())});
        st.store.put(Res::Secrets, secret);
        drop(st);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("", &["namespaces", "yurt-ota"]),
            Some((Res::Namespaces, None, Some("yurt-ota")))
        );
        assert_eq!(
            route("", &["namespaces"]),
            Some((Res::Namespaces, None, None))
        );
        assert_eq!(
            route("", &["namespaces", "a", "secrets", "s"]),
            Some((Res::Secrets, Some("a"), Some("s")))
        );
        assert_eq!(
            route("rbac.authorization.k8s.io", &["clusterroles", "r"]),
            Some((Res::ClusterRoles, None, Some("r")))
        );
        assert_eq!(
            route(
                "rbac.authorization.k8s.io",
                &["namespaces", "a", "clusterroles"]
            ),
            None
        );
        assert_eq!(route("", &["roles"]), None);
    }
}
