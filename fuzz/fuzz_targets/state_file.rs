//! `state.json` as found at start: loaded, or set aside as corrupt; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use yurt_ota::state::Store;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let base = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("yurt-ota-fuzz-state-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    // A fresh directory each time, so corrupt files set aside do not pile up.
    let _ = std::fs::remove_dir_all(base);
    std::fs::create_dir_all(base).unwrap();
    std::fs::write(base.join("state.json"), data).unwrap();
    let store = Store::open(base);
    let _ = store.get();
});
