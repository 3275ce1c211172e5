//! The fleet budget at scale (issue 24): the simulation of `yurt_ota::fleet::scale` for
//! N = 100, 1,000 and 10,000 nodes, budget 10 %, with faults, and a broken release; prints the
//! table of docs/performance.md. `cargo bench --bench fleet_scale [-- 100 1000]`.

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
    }
}
