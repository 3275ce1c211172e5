//! `yurt-ota status`: the agent's `/v1/status` (the data), and its rendering for a terminal.
//!
//! Tables are kubectl-style columns laid out by comfy-table (`table`).

use serde_json::Value;

use super::{Client, Failure};
use crate::names::escape_controls;

/// Fetches `/v1/status` and prints it: as JSON, or rendered.
pub(super) fn status(client: &Client, json: bool) -> Result<(), Failure> {
    let v = client.get_json("/v1/status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", render(&v));
    }
    Ok(())
}

/// The status document as text: a header, the gates, holds and breaker, then the pods.
fn render(v: &Value) -> String {
    let mut out = overview(v);
    out += &gates(v);
    out += &pods(v);
    out
}

/// A string field, or `-`.
/// A string field as text for the terminal, control characters escaped; `-` when absent.
fn s(v: &Value) -> String {
    v.as_str()
        .map_or_else(|| "-".into(), |t| escape_controls(t).into_owned())
}

/// Version, mode, readiness and the upstream.
fn overview(v: &Value) -> String {
    let u = &v["upstream"];
    let mut out = format!(
        "yurt-ota {}  mode: {}  ready: {}\n",
        s(&v["version"]),
        s(&v["mode"]),
        if v["ready"] == true {
            "yes".to_owned()
        } else {
            format!("no ({})", s(&v["not_ready_reason"]))
        }
    );
    out += &format!(
        "upstream: {} {}  last success: {}\n",
        s(&u["kind"]),
        s(&u["url"]),
        s(&u["last_success"])
    );
    if let Some(e) = u["last_error"].as_object() {
        out += &format!(
            "last error: {} ({} failures in a row, at {})\n",
            s(&e["message"]),
            u["consecutive_failures"],
            s(&e["at"])
        );
    }
    out
}

/// The gates as a table, the verdict on them, holds, the breaker and what is in flight.
fn gates(v: &Value) -> String {
    let mut out = String::new();
    let gates = v["gates"].as_array().cloned().unwrap_or_default();
    if gates.is_empty() {
        out += "gates: none configured\n";
    } else {
        let rows: Vec<Vec<String>> = gates
            .iter()
            .map(|g| {
                vec![
                    s(&g["name"]),
                    s(&g["kind"]),
                    if g["safety"] == true { "yes" } else { "no" }.into(),
                    if g["open"] == true { "open" } else { "closed" }.into(),
                    format!("{}s", g["for_seconds"]),
                    g["error"]
                        .as_str()
                        .map_or_else(|| s(&g["detail"]), |e| format!("error: {e}")),
                ]
            })
            .collect();
        out += &table(&["GATE", "KIND", "SAFETY", "STATE", "FOR", "DETAIL"], &rows);
    }
    let verdict = if v["upgrade_gates_stable"] == true {
        "open and stable".to_owned()
    } else if v["upgrade_gates_open"] == true {
        format!(
            "open, stable in {}s (stable_for {})",
            v["stable_in_seconds"],
            s(&v["stable_for"])
        )
    } else {
        let names: Vec<String> = v["blocked_by"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        format!("closed: {}", names.join(", "))
    };
    out += &format!("upgrade gates: {verdict}\n");
    for h in v["holds"].as_array().into_iter().flatten() {
        out += &format!(
            "hold {}: until {} ({})\n",
            s(&h["name"]),
            s(&h["expires"]),
            s(&h["reason"])
        );
    }
    if v["breaker"]["tripped"] == true {
        out += &format!(
            "circuit breaker: TRIPPED at {}: {} (yurt-ota reset-breaker)\n",
            s(&v["breaker"]["since"]),
            s(&v["breaker"]["reason"])
        );
    }
    for b in v["blocked_revisions"].as_array().into_iter().flatten() {
        let rev = b["revision"].as_str().unwrap_or("(not named)");
        out += &format!(
            "revision {} of {} BLOCKED since {}: the upgrade of {} failed: {} (a newer revision clears it; yurt-ota reset-breaker)\n",
            escape_controls(rev),
            s(&b["daemonset"]),
            s(&b["since"]),
            s(&b["pod"]),
            s(&b["reason"])
        );
    }
    for f in v["in_flight"].as_array().into_iter().flatten() {
        let maybe = if f["may_have_started"] == true {
            ", may have started: the pod is read again"
        } else {
            ""
        };
        out += &format!(
            "in flight: {} since {} (deadline {}{maybe})\n",
            s(&f["pod"]),
            s(&f["started"]),
            s(&f["ready_deadline"])
        );
    }
    out
}

/// State persistence, the pod counts, the pods waiting and why, and the recent upgrade calls.
fn pods(v: &Value) -> String {
    let mut out = String::new();
    if v["state"]["persistent"] == false {
        out += &format!("state: memory only ({})\n", s(&v["state"]["error"]));
    } else if v["state"]["writable"] == false {
        out += &format!(
            "state: CANNOT BE WRITTEN ({}); upgrades and changes through the API pause until it can\n",
            s(&v["state"]["error"])
        );
    }
    let outdated = v["pods_needing_upgrade"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match v["snapshot"].as_object() {
        Some(snap) => {
            out += &format!(
                "pods: {} on the node, {} need upgrade (list {}s old)\n",
                snap["pods"],
                outdated.len(),
                snap["age_seconds"]
            )
        }
        None => out += "pods: no pod list yet\n",
    }
    if !outdated.is_empty() {
        let rows: Vec<Vec<String>> = outdated
            .iter()
            .map(|p| {
                vec![
                    s(&p["namespace"]),
                    s(&p["name"]),
                    s(&p["target_revision"]),
                    s(&p["image"]),
                    if p["queued"] == true { "yes" } else { "no" }.into(),
                    s(&p["why_not_yet"]),
                ]
            })
            .collect();
        out += "\n";
        out += &table(
            &[
                "NAMESPACE",
                "POD",
                "TO REVISION",
                "IMAGE",
                "QUEUED",
                "WHY NOT YET",
            ],
            &rows,
        );
    }
    if let Some(recent) = v["recent_upgrades"].as_array().filter(|r| !r.is_empty()) {
        let rows: Vec<Vec<String>> = recent
            .iter()
            .map(|r| {
                vec![
                    s(&r["at"]),
                    s(&r["pod"]),
                    r["status"].to_string(),
                    s(&r["detail"]),
                ]
            })
            .collect();
        out += "\nrecent upgrade calls:\n";
        out += &table(&["AT", "POD", "STATUS", "DETAIL"], &rows);
    }
    out
}

/// Left-aligned columns, two spaces apart, measured in display width (comfy-table's NOTHING
/// preset: no borders, no wrapping).
///
/// Cells come from the agent and, through it, from apps and the upstream: control characters
/// are escaped, so no cell can break the layout or drive the terminal.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    use comfy_table::{presets::NOTHING, Table};
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec());
    for r in rows {
        t.add_row(r.iter().map(|c| escape_controls(c).into_owned()));
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
}
