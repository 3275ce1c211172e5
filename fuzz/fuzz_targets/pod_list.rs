//! An upstream's pod list, parsed and validated into the snapshot the API serves.
#![no_main]
use libfuzzer_sys::fuzz_target;
use yurt_ota::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(snap) = Snapshot::build(data) {
        let _ = snap.needing_upgrade_in_order();
    }
});
