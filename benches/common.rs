//! What both benchmarks start from: `n` real-shaped pods, the recorded fixture pods cloned under
//! new names and uids.

use serde_json::Value;

pub fn fixture_pods(n: usize) -> Vec<Value> {
    let mut templates = Vec::new();
    for v in ["1.32", "1.33", "1.35", "1.36"] {
        let path = format!(
            "{}/tests/fixtures/kind-v{v}-kube-system-podlist.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let list: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        templates.extend(list["items"].as_array().unwrap().iter().cloned());
    }
    (0..n)
        .map(|i| {
            let mut p = templates[i % templates.len()].clone();
            let name = format!("{}-{i:03}", p["metadata"]["name"].as_str().unwrap());
            p["metadata"]["name"] = name.into();
            p["metadata"]["uid"] = format!("00000000-0000-4000-8000-{i:012}").into();
            p
        })
        .collect()
}
