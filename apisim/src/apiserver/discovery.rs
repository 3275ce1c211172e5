//! API discovery as the apiserver serves it to kubectl (the legacy, unaggregated documents:
//! client-go falls back to them when `/api` and `/apis` answer plain JSON): `/api`, `/apis`,
//! and each group version's resource list, for the resources the stand-in serves. Open to
//! every authenticated user, as the `system:discovery` role makes them.

use serde_json::{json, Value};

/// `(group version, [(plural, kind, namespaced, verbs, short names)])`.
type Resources = (
    &'static str,
    &'static [(&'static str, &'static str, bool, &'static str, &'static str)],
);

const GROUP_VERSIONS: [Resources; 4] = [
    (
        "v1",
        &[
            ("namespaces", "Namespace", false, "create,get,list", "ns"),
            (
                "serviceaccounts",
                "ServiceAccount",
                true,
                "create,get,list",
                "sa",
            ),
            ("secrets", "Secret", true, "create,get,list", ""),
            ("pods", "Pod", true, "delete,get,list,watch", "po"),
            ("pods/status", "Pod", true, "get,patch", ""),
        ],
    ),
    (
        "apps/v1",
        &[
            (
                "daemonsets",
                "DaemonSet",
                true,
                "get,list,patch,watch",
                "ds",
            ),
            (
                "controllerrevisions",
                "ControllerRevision",
                true,
                "get,list,watch",
                "",
            ),
        ],
    ),
    (
        "rbac.authorization.k8s.io/v1",
        &[
            ("roles", "Role", true, "create,get,list", ""),
            ("rolebindings", "RoleBinding", true, "create,get,list", ""),
            ("clusterroles", "ClusterRole", false, "create,get,list", ""),
            (
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
                "create,get,list",
                "",
            ),
        ],
    ),
    (
        "coordination.k8s.io/v1",
        &[(
            "leases",
            "Lease",
            true,
            "create,delete,get,list,update,watch",
            "",
        )],
    ),
];

/// The discovery document at `parts` (the path's segments), if it is one.
pub fn answer(parts: &[&str]) -> Option<Value> {
    match parts {
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})),
        ["apis"] => {
            let groups: Vec<Value> = GROUP_VERSIONS
                .iter()
                .filter_map(|(gv, _)| gv.split_once('/'))
                .map(|(g, v)| {
                    let version = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [version], "preferredVersion": version})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["api", "v1"] => Some(list("v1")),
        ["apis", g, v] => {
            let gv = format!("{g}/{v}");
            GROUP_VERSIONS
                .iter()
                .any(|(x, _)| *x == gv)
                .then(|| list(&gv))
        }
        _ => None,
    }
}

fn list(gv: &str) -> Value {
    let (_, resources) = GROUP_VERSIONS
        .iter()
        .find(|(x, _)| *x == gv)
        .expect("a served group version");
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, kind, namespaced, verbs, short)| {
            let mut r = json!({"name": name, "singularName": "", "namespaced": namespaced,
                               "kind": kind, "verbs": verbs.split(',').collect::<Vec<_>>()});
            if !short.is_empty() {
                r["shortNames"] = json!([short]);
            }
            if !name.contains('/') {
                r["singularName"] = json!(kind.to_lowercase());
            }
            r
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
           "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_resources() {
        let apis = answer(&["apis"]).unwrap();
        let names: Vec<&str> = apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["apps", "rbac.authorization.k8s.io", "coordination.k8s.io"]
        );
        let apps = answer(&["apis", "apps", "v1"]).unwrap();
        assert_eq!(apps["resources"][0]["shortNames"][0], "ds");
        assert!(answer(&["apis", "batch", "v1"]).is_none());
        assert_eq!(answer(&["api"]).unwrap()["versions"][0], "v1");
    }
}
