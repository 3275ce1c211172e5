//! The listing commands: `pods`, `holds` and `events`, as tables or JSON.

use serde_json::Value;

use super::status::table;
use super::{Client, Failure};

/// `GET path`, and the array under `key` as a table of `(header, field)` columns, or the JSON.
pub(super) fn list(
    client: &Client,
    path: &str,
    key: &str,
    columns: &[(&str, &str)],
    json: bool,
) -> Result<(), Failure> {
    let v = client.get_json(path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            columns
                .iter()
                .map(|(_, field)| item[*field].as_str().unwrap_or("-").to_owned())
                .collect()
        })
        .collect();
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    print!("{}", table(&header, &rows));
    Ok(())
}

pub(super) fn pods(client: &Client, needs_upgrade: bool, json: bool) -> Result<(), Failure> {
    let snap = client.pods()?;
    let mut chosen: Vec<usize> = (0..snap.pods.len())
        .filter(|&i| !needs_upgrade || snap.pods[i].needs_upgrade())
        .collect();
    // Indices, not pods: --json prints the served items at the same positions.
    chosen.sort_by(|&a, &b| crate::pod::upgrade_order(&snap.pods[a], &snap.pods[b]));
    if json {
        let list: Value =
            serde_json::from_slice(&snap.body).map_err(|e| Failure::Failed(e.to_string()))?;
        let items: Vec<Value> = chosen.iter().map(|&i| list["items"][i].clone()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": items})
            )
            .unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = chosen
        .iter()
        .map(|&i| {
            let p = &snap.pods[i];
            let upgrade = if p.needs_upgrade() {
                "yes"
            } else if p.condition(crate::pod::NEED_UPGRADE).is_some() {
                "no"
            } else {
                "-"
            };
            vec![
                p.metadata.namespace.clone(),
                p.metadata.name.clone(),
                p.owner()
                    .map_or("-".into(), |o| format!("{}/{}", o.kind, o.name)),
                if p.is_deleting() {
                    "deleting".into()
                } else if p.is_ready() {
                    "yes".into()
                } else {
                    "no".into()
                },
                upgrade.into(),
                p.spec
                    .containers
                    .first()
                    .map_or(String::new(), |c| c.image.clone()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAMESPACE",
                "NAME",
                "OWNER",
                "READY",
                "NEEDS UPGRADE",
                "IMAGE"
            ],
            &rows
        )
    );
    Ok(())
}
