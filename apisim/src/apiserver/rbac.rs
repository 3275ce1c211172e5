//! RBAC as the kube-apiserver's authorizer does it, over a manifest (by default the shipped
//! `packaging/kubernetes/rbac.yaml`): Roles, ClusterRoles and their bindings to users, groups
//! and ServiceAccounts. A request not granted is answered 403 with the real `Forbidden` Status
//! (`responsewriters.Forbidden`: the message names the user, verb, resource, API group and
//! namespace), so a call the manifest forgets fails a test as it would fail on a cluster.
//!
//! `system:masters` is allowed everything without RBAC (as the apiserver's superuser group);
//! non-resource paths (`/api`, `/apis`, `/version`, `/healthz`) are open to every authenticated
//! user, as the default `system:discovery` and `system:public-info-viewer` roles make them.

use serde_json::{json, Value};

/// The manifest every stand-in enforces unless told another.
pub const SHIPPED: &str = include_str!("../../../packaging/kubernetes/rbac.yaml");

/// Who is asking: the authenticated user name and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// A ServiceAccount's token, as the TokenReview of a real one reads.
    pub fn service_account(namespace: &str, name: &str) -> User {
        User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

impl User {
    /// A client certificate's user, as the apiserver's x509 authenticator reads it: the
    /// subject's CommonName is the user, each Organization a group. `None` when the DER cannot
    /// be read (the handshake verified it against the CA already).
    pub fn from_certificate(der: &[u8]) -> Option<User> {
        // Certificate ::= SEQ { tbs SEQ { [0] version?, serial, sigAlg, issuer, validity,
        // subject, ... }, ... }; Name ::= SEQ OF SET OF SEQ { OID, value }.
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut rest = tbs;
        let mut fields = Vec::new();
        while !rest.is_empty() && fields.len() < 6 {
            let (tag, body, next) = tlv(rest)?;
            if tag != 0xa0 {
                fields.push(body);
            }
            rest = next;
        }
        let subject = *fields.get(4)?;
        let (mut name, mut groups) = (None, Vec::new());
        let mut sets = subject;
        while !sets.is_empty() {
            let (_, set, next) = tlv(sets)?;
            sets = next;
            let (_, atv, _) = tlv(set)?;
            let (_, oid, after) = tlv(atv)?;
            let (_, value, _) = tlv(after)?;
            let value = String::from_utf8(value.to_vec()).ok()?;
            match oid {
                [0x55, 0x04, 0x03] => name = Some(value),
                [0x55, 0x04, 0x0a] => groups.push(value),
                _ => {}
            }
        }
        groups.push("system:authenticated".into());
        Some(User {
            name: name?,
            groups,
        })
    }
}

/// One DER tag-length-value: (tag, value, what follows).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, b.get(head..end)?, b.get(end..)?))
}

/// What a request asks for (`authorizer.Attributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub verb: String,
    pub group: String,
    /// The resource, without its subresource.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Request {
    /// A request's attributes from its method and path; `None` for a non-resource path.
    pub fn of(method: &str, target: &str) -> Option<Request> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", "v1", rest @ ..] if !rest.is_empty() => ("", rest),
            ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
            _ => (None, rest),
        };
        // `/api/v1/namespaces/{name}` is the namespace itself.
        let (resource, name, subresource) = match (rest, namespace) {
            ([], Some(ns)) => ("namespaces", Some(ns), None),
            ([r], _) => (*r, None, None),
            ([r, n], _) => (*r, Some(*n), None),
            ([r, n, s, ..], _) => (*r, Some(*n), Some(*s)),
            _ => return None,
        };
        let namespace = if resource == "namespaces" {
            None
        } else {
            namespace
        };
        let watch =
            crate::apiserver::query_value(query, "watch").is_some_and(|w| w == "1" || w == "true");
        let verb = match (method, name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", false) => "list",
            ("GET", true) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", false) => "deletecollection",
            ("DELETE", true) => "delete",
            (m, _) => return Some(Request::new(&m.to_lowercase(), group, resource, namespace)),
        };
        Some(Request {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    fn new(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Request {
        Request {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: namespace.map(str::to_owned),
            name: None,
        }
    }

    /// `leases`, or `pods/status` for a subresource.
    pub fn full_resource_name(&self) -> String {
        self.full_resource()
    }

    /// `pods/status` for a subresource.
    fn full_resource(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

impl Rule {
    fn allows(&self, r: &Request) -> bool {
        let any = |v: &[String], x: &str| v.iter().any(|s| s == "*" || s == x);
        let full = r.full_resource();
        any(&self.verbs, &r.verb)
            && any(&self.groups, &r.group)
            && (any(&self.resources, &full)
                || r.subresource
                    .as_ref()
                    .is_some_and(|s| self.resources.iter().any(|x| *x == format!("*/{s}"))))
            && (self.names.is_empty() || r.name.as_ref().is_some_and(|n| any(&self.names, n)))
    }
}

#[derive(Debug, Clone)]
enum Subject {
    User(String),
    Group(String),
}

/// A binding resolved: who, what, and where (`None`: every namespace and the cluster scope).
#[derive(Debug, Clone)]
struct Grant {
    subjects: Vec<Subject>,
    rules: Vec<Rule>,
    namespace: Option<String>,
}

/// The manifest's grants.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    grants: Vec<Grant>,
}

impl Rbac {
    /// Reads the RBAC objects of a manifest (other kinds are left alone). A binding to a role
    /// the manifest does not hold grants nothing, as on a cluster.
    pub fn from_manifest(text: &str) -> Result<Rbac, String> {
        let docs = yurt_ota::yaml::parse_all(text).map_err(|e| format!("RBAC manifest: {e}"))?;
        Rbac::from_docs(&docs)
    }

    /// The same from objects already read.
    pub fn from_docs(docs: &[Value]) -> Result<Rbac, String> {
        let kind = |d: &Value| d["kind"].as_str().unwrap_or_default().to_owned();
        let role = |ns: Option<&str>, rk: &str, name: &str| -> Option<Vec<Rule>> {
            let d = docs.iter().find(|d| {
                kind(d) == rk
                    && d["metadata"]["name"] == name
                    && (rk == "ClusterRole" || d["metadata"]["namespace"].as_str() == ns)
            })?;
            Some(
                d["rules"]
                    .as_array()
                    .map(|rs| rs.iter().map(rule).collect())
                    .unwrap_or_default(),
            )
        };
        let mut grants = Vec::new();
        for d in docs {
            let k = kind(d);
            if k != "RoleBinding" && k != "ClusterRoleBinding" {
                continue;
            }
            let ns = (k == "RoleBinding")
                .then(|| d["metadata"]["namespace"].as_str().unwrap_or("default"));
            let rk = d["roleRef"]["kind"].as_str().unwrap_or_default();
            let rn = d["roleRef"]["name"].as_str().unwrap_or_default();
            if k == "ClusterRoleBinding" && rk != "ClusterRole" {
                return Err(format!(
                    "RBAC manifest: ClusterRoleBinding {:?} refers to a {rk}",
                    d["metadata"]["name"]
                ));
            }
            let Some(rules) = role(ns, rk, rn) else {
                continue;
            };
            let subjects = d["subjects"]
                .as_array()
                .map(|ss| ss.iter().filter_map(|s| subject(s, ns)).collect())
                .unwrap_or_default();
            grants.push(Grant {
                subjects,
                rules,
                namespace: ns.map(str::to_owned),
            });
        }
        Ok(Rbac { grants })
    }

    /// Whether `user` may do `r` (None: a non-resource path, open to the authenticated).
    pub fn allows(&self, user: &User, r: Option<&Request>) -> bool {
        let Some(r) = r else { return true };
        if user.groups.iter().any(|g| g == "system:masters") {
            return true;
        }
        self.grants.iter().any(|g| {
            g.subjects.iter().any(|s| match s {
                Subject::User(n) => *n == user.name,
                Subject::Group(n) => user.groups.contains(n),
            }) && (g.namespace.is_none() || g.namespace == r.namespace)
                && g.rules.iter().any(|rule| rule.allows(r))
        })
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn rule(r: &Value) -> Rule {
    Rule {
        groups: strings(&r["apiGroups"]),
        resources: strings(&r["resources"]),
        verbs: strings(&r["verbs"]),
        names: strings(&r["resourceNames"]),
    }
}

fn subject(s: &Value, binding_ns: Option<&str>) -> Option<Subject> {
    let name = s["name"].as_str()?;
    Some(match s["kind"].as_str()? {
        "User" => Subject::User(name.to_owned()),
        "Group" => Subject::Group(name.to_owned()),
        "ServiceAccount" => {
            let ns = s["namespace"].as_str().or(binding_ns)?;
            Subject::User(format!("system:serviceaccount:{ns}:{name}"))
        }
        _ => return None,
    })
}

/// The apiserver's 403: `<resource>[.<group>] ["<name>"] is forbidden: User "<u>" cannot
/// <verb> resource "<resource>[/<sub>]" in API group "<group>" (in the namespace "<ns>" | at
/// the cluster scope)`.
pub fn forbidden(user: &User, r: &Request) -> Value {
    let qualified = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    let scope = match &r.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".into(),
    };
    let why = format!(
        "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
        user.name,
        r.verb,
        r.full_resource(),
        r.group
    );
    let message = match &r.name {
        Some(n) => format!("{qualified} {n:?} is forbidden: {why}"),
        None => format!("{qualified} is forbidden: {why}"),
    };
    let mut details = json!({"group": r.group, "kind": r.resource});
    if let Some(n) = &r.name {
        details["name"] = json!(n);
    }
    super::store::status(403, "Forbidden", &message, Some(details))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa() -> User {
        User::service_account("yurt-ota", "yurt-ota")
    }

    fn can(rbac: &Rbac, method: &str, target: &str) -> bool {
        rbac.allows(&sa(), Request::of(method, target).as_ref())
    }

    #[test]
    fn the_shipped_manifest_grants_the_agents_calls_and_no_more() {
        let r = Rbac::from_manifest(SHIPPED).unwrap();
        for (m, t) in [
            ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn"),
            (
                "GET",
                "/api/v1/pods?fieldSelector=spec.nodeName%3Dn&watch=1",
            ),
            ("GET", "/api/v1/namespaces/edge-apps/pods/p"),
            ("DELETE", "/api/v1/namespaces/edge-apps/pods/p"),
            ("PATCH", "/api/v1/namespaces/edge-apps/pods/p/status"),
            (
                "GET",
                "/apis/apps/v1/namespaces/edge-apps/daemonsets?fieldSelector=x",
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/edge-apps/daemonsets?watch=1",
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/edge-apps/controllerrevisions",
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases",
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases/a.b.0",
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases?watch=1&labelSelector=x",
            ),
            (
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases/a.b.0",
            ),
            ("GET", "/version"),
            ("GET", "/apis"),
        ] {
            assert!(can(&r, m, t), "{m} {t}");
        }
        for (m, t) in [
            (
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/edge-apps/leases",
            ),
            (
                "DELETE",
                "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases/a.b.0",
            ),
            ("PATCH", "/api/v1/namespaces/edge-apps/pods/p"),
            ("GET", "/apis/coordination.k8s.io/v1/leases?watch=1"),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/edge-apps/leases?watch=true",
            ),
            ("GET", "/api/v1/secrets"),
            ("GET", "/apis/apps/v1/namespaces/edge-apps/daemonsets/ds"),
            ("PATCH", "/apis/apps/v1/namespaces/edge-apps/daemonsets/ds"),
        ] {
            assert!(!can(&r, m, t), "{m} {t}");
        }
        let admin = User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        let del = Request::of("DELETE", "/api/v1/namespaces/x/secrets/s");
        assert!(r.allows(&admin, del.as_ref()));
    }

    #[test]
    fn forbidden_reads_as_the_apiservers() {
        let r = Request::of(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/yurt-ota/leases",
        )
        .unwrap();
        assert_eq!(
            forbidden(&sa(), &r)["message"],
            "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:yurt-ota:yurt-ota\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"yurt-ota\""
        );
        let r = Request::of("PATCH", "/api/v1/namespaces/ns/pods/p/status").unwrap();
        let s = forbidden(&sa(), &r);
        assert_eq!(
            s["message"],
            "pods \"p\" is forbidden: User \"system:serviceaccount:yurt-ota:yurt-ota\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"ns\""
        );
        assert_eq!(
            (&s["code"], &s["reason"], &s["details"]["kind"]),
            (&json!(403), &json!("Forbidden"), &json!("pods"))
        );
        let r = Request::of("GET", "/api/v1/pods?watch=true").unwrap();
        assert!(forbidden(&sa(), &r)["message"]
            .as_str()
            .unwrap()
            .ends_with("cannot watch resource \"pods\" in API group \"\" at the cluster scope"));
    }

    #[test]
    fn a_certificates_subject_is_its_user_and_groups() {
        let c = crate::apiserver::tls::generate(&["localhost".into()], "t".into()).unwrap();
        let der = yurt_ota::upstream::apiserver::kubeconfig::base64(
            &c.client_cert_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
        let u = User::from_certificate(&der).unwrap();
        assert_eq!(u.name, "yurt-ota-node");
        assert_eq!(u.groups, ["yurt-ota:nodes", "system:authenticated"]);
        assert!(User::from_certificate(b"\x30\x82").is_none());
    }

    /// `watch` is its own verb, as the apiserver's request-info resolver makes it: a grant of
    /// `list` does not let a watch through, nor the reverse.
    #[test]
    fn watch_and_list_are_separate_verbs() {
        let m = |verbs: &str| {
            format!("kind: Role\nmetadata: {{name: r, namespace: a}}\nrules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  verbs: [{verbs}]\n---\nkind: RoleBinding\nmetadata: {{name: b, namespace: a}}\nroleRef: {{kind: Role, name: r}}\nsubjects:\n- {{kind: ServiceAccount, name: yurt-ota, namespace: yurt-ota}}\n")
        };
        let list = "/apis/coordination.k8s.io/v1/namespaces/a/leases?labelSelector=k%3Dv";
        let watch = "/apis/coordination.k8s.io/v1/namespaces/a/leases?labelSelector=k%3Dv&watch=1";
        let r = Rbac::from_manifest(&m("list")).unwrap();
        assert!(can(&r, "GET", list) && !can(&r, "GET", watch));
        let r = Rbac::from_manifest(&m("watch")).unwrap();
        assert!(!can(&r, "GET", list) && can(&r, "GET", watch));
        assert_eq!(Request::of("GET", watch).unwrap().verb, "watch");
        assert_eq!(
            Request::of("GET", &watch.replace("watch=1", "watch=false"))
                .unwrap()
                .verb,
            "list"
        );
    }

    #[test]
    fn role_bindings_hold_in_their_namespace_only() {
        let m = "kind: Role\nmetadata: {name: r, namespace: a}\nrules:\n- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [get]\n---\nkind: RoleBinding\nmetadata: {name: b, namespace: a}\nroleRef: {kind: Role, name: r}\nsubjects:\n- {kind: Group, name: g}\n";
        let r = Rbac::from_manifest(m).unwrap();
        let u = User {
            name: "u".into(),
            groups: vec!["g".into()],
        };
        let get = |ns: &str| Request::of("GET", &format!("/api/v1/namespaces/{ns}/configmaps/c"));
        assert!(r.allows(&u, get("a").as_ref()));
        assert!(!r.allows(&u, get("b").as_ref()));
        assert!(!r.allows(&sa(), get("a").as_ref()));
    }
}
