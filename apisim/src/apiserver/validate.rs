//! Lease validation as the real apiserver does it (`pkg/apis/coordination/validation`, the
//! generic registry's update, `metav1.MicroTime`'s decoding), so the stand-in refuses what a
//! cluster refuses: a name that is not a DNS subdomain (422), a `leaseDurationSeconds` not above
//! 0 or a negative `leaseTransitions` (422), an `acquireTime`/`renewTime` without exactly six
//! fractional digits (400: it does not decode), and an update without `resourceVersion` (422).

use serde_json::{json, Value};

use super::store::{details, status, Res};
use super::{status_reply, Reply};

/// `Invalid` (422): `leases.coordination.k8s.io "<name>" is invalid: <field>: <why>`, with the
/// cause in `details`, as `apierrors.NewInvalid` writes it.
fn invalid(name: &str, field: &str, why: String) -> Reply {
    let message = format!(
        "{} {name:?} is invalid: {field}: {why}",
        Res::Leases.qualified()
    );
    let mut d = details(Res::Leases, name);
    d["causes"] = json!([{"reason": "FieldValueInvalid", "message": why, "field": field}]);
    Reply::Full {
        status: 422,
        content_type: "application/json",
        body: status(422, "Invalid", &message, Some(d))
            .to_string()
            .into_bytes(),
    }
}

/// A Lease's body, as created or updated.
pub fn lease(obj: &Value, updating: bool) -> Result<(), Reply> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    for key in ["acquireTime", "renewTime"] {
        if let Some(t) = obj["spec"][key].as_str() {
            if let Err(e) = micro_time(t) {
                return Err(status_reply(
                    400,
                    "BadRequest",
                    &format!(
                        "Lease in version \"v1\" cannot be handled as a Lease: parsing time {t:?} as \"2006-01-02T15:04:05.000000Z07:00\": {e}"
                    ),
                    None,
                ));
            }
        }
    }
    if yurt_ota::names::check_subdomain(name).is_err() {
        return Err(invalid(
            name,
            "metadata.name",
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ));
    }
    if let Some(d) = obj["spec"]["leaseDurationSeconds"].as_i64() {
        if d <= 0 {
            return Err(invalid(
                name,
                "spec.leaseDurationSeconds",
                format!("Invalid value: {d}: must be greater than 0"),
            ));
        }
    }
    if let Some(t) = obj["spec"]["leaseTransitions"].as_i64() {
        if t < 0 {
            return Err(invalid(
                name,
                "spec.leaseTransitions",
                format!("Invalid value: {t}: must be greater than or equal to 0"),
            ));
        }
    }
    if updating
        && obj["metadata"]["resourceVersion"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        return Err(invalid(
            name,
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update".into(),
        ));
    }
    Ok(())
}

/// `2006-01-02T15:04:05.000000Z07:00`: exactly six fractional digits.
fn micro_time(t: &str) -> Result<(), String> {
    let b = t.as_bytes();
    if b.len() < 20 || t.parse::<jiff::Timestamp>().is_err() {
        return Err(format!("cannot parse {t:?} as \"2006\""));
    }
    let rest = &t[19..];
    let Some(frac) = rest.strip_prefix('.') else {
        return Err(format!("cannot parse {rest:?} as \".000000\""));
    };
    let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
    if digits != 6 {
        return Err(format!("cannot parse {rest:?} as \".000000\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), Reply>) -> (u16, String) {
        match r {
            Ok(()) => (200, String::new()),
            Err(Reply::Full { status, body, .. }) => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                (status, v["message"].as_str().unwrap().to_owned())
            }
            Err(Reply::Watch(_)) => panic!("a watch"),
        }
    }

    fn l(name: &str, spec: Value, rv: Option<&str>) -> Value {
        let mut v = json!({"metadata": {"name": name}, "spec": spec});
        if let Some(rv) = rv {
            v["metadata"]["resourceVersion"] = json!(rv);
        }
        v
    }

    #[test]
    fn leases_are_refused_as_the_apiserver_refuses_them() {
        let good = json!({"holderIdentity": "n", "leaseDurationSeconds": 30,
                          "renewTime": "2026-11-26T22:00:00.000000Z"});
        assert_eq!(code(lease(&l("a.b.0", good.clone(), None), false)).0, 200);
        assert_eq!(
            code(lease(&l("a.b.0", good.clone(), Some("7")), true)).0,
            200
        );
        let (c, m) = code(lease(&l("a.b.0", good.clone(), None), true));
        assert_eq!((c, m.as_str()), (422, "leases.coordination.k8s.io \"a.b.0\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"));
        let mut s = good.clone();
        s["renewTime"] = json!("2026-11-26T22:00:00Z");
        let (c, m) = code(lease(&l("a.b.0", s, None), false));
        assert_eq!(c, 400);
        assert!(m.starts_with("Lease in version \"v1\" cannot be handled as a Lease: parsing time \"2026-11-26T22:00:00Z\""), "{m}");
        let mut s = good.clone();
        s["acquireTime"] = json!("2026-11-26T22:00:00.123Z");
        assert_eq!(code(lease(&l("a.b.0", s, None), false)).0, 400);
        let (c, m) = code(lease(&l("Edge_Apps.0", good.clone(), None), false));
        assert_eq!(c, 422);
        assert!(
            m.contains(
                "metadata.name: Invalid value: \"Edge_Apps.0\": a lowercase RFC 1123 subdomain"
            ),
            "{m}"
        );
        let mut s = good.clone();
        s["leaseDurationSeconds"] = json!(-1);
        let (c, m) = code(lease(&l("a", s, None), false));
        assert_eq!((c, m.as_str()), (422, "leases.coordination.k8s.io \"a\" is invalid: spec.leaseDurationSeconds: Invalid value: -1: must be greater than 0"));
        let mut s = good;
        s["leaseTransitions"] = json!(-2);
        assert_eq!(code(lease(&l("a", s, None), false)).0, 422);
    }
}
