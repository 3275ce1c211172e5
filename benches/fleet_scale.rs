//! The fleet budget at scale (issue 24): the simulation of `yurt_ota::fleet::scale` for
//! N = 100, 1,000 and 10,000 nodes, budget 10 %, with faults, and a broken release; prints the
//! table of docs/performance.md. `cargo bench --bench fleet_scale [-- 100 1000]`.
//!
//! Exits 1 when a target of issue 24 that the runs meet breaks (CI runs it): nodes down above
//! the budget, more than 2 409s per slot taken, more than 10 requests per upgraded node, or a
//! broken release starting more upgrades than the budget plus the slots of nodes that died.
//! The rollout time is printed, not checked (docs/performance.md says why 1.15 × is not met).

use std::time::{Duration, Instant};

use yurt_ota::fleet::scale::{run, table, Scenario};

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    let mut broken_targets: Vec<String> = Vec::new();
    let mut reports = Vec::new();
    for &n in &sizes {
        let started = Instant::now();
        let r = run(&Scenario::faulty(n, 1));
        eprintln!(
            "N={n}: simulated in {:.1} s; {} upgraded, {} failed (longer than ready_timeout), {} died, {} NotReady, {} LISTs, peak held {}",
            started.elapsed().as_secs_f64(),
            r.upgraded,
            r.failed,
            r.died,
            r.nodes - r.live,
            r.lists,
            r.peak_held
        );
        if r.peak_down > r.budget || r.peak_held > r.budget {
            broken_targets.push(format!(
                "N={n}: {} nodes down, {} slots held, budget {}",
                r.peak_down, r.peak_held, r.budget
            ));
        }
        if r.conflicts_per_take() > 2.0 {
            broken_targets.push(format!(
                "N={n}: {:.2} 409s per slot taken (at most 2)",
                r.conflicts_per_take()
            ));
        }
        if r.per_upgraded() > 10.0 {
            broken_targets.push(format!(
                "N={n}: {:.1} requests per upgraded node (at most 10)",
                r.per_upgraded()
            ));
        }
        reports.push(r);
    }
    println!("{}", table(&reports));
    for &n in &sizes {
        let s = Scenario {
            broken: true,
            horizon: Duration::from_secs(1800),
            ..Scenario::faulty(n, 2)
        };
        let r = run(&s);
        println!(
            "broken release, N={n}: {} upgrades started of a budget of {} ({} of them on nodes that died, whose slots expired), {} upgraded, peak held {}",
            r.started, r.budget, r.died, r.upgraded, r.peak_held
        );
        if r.started > r.budget + r.died || r.peak_held > r.budget || r.upgraded > 0 {
            broken_targets.push(format!(
                "broken release, N={n}: {} started, budget {}, {} died",
                r.started, r.budget, r.died
            ));
        }
    }
    if !broken_targets.is_empty() {
        eprintln!("fleet targets broken:\n  {}", broken_targets.join("\n  "));
        std::process::exit(1);
    }
}
