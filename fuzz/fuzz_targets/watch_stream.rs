//! A watch stream from the apiserver, one event a line, applied to the node's pod store: no
//! line panics, and whatever the store then holds renders as a pod list the snapshot accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use yurt_ota::snapshot::Snapshot;
use yurt_ota::upstream::apiserver::watch::{parse_event, Store};

fuzz_target!(|data: &[u8]| {
    let mut store = Store::default();
    // The whole input as a list first (a relist), then line by line as events.
    let _ = store.replace(data);
    for line in data.split(|b| *b == b'\n') {
        if let Ok(ev) = parse_event(line) {
            let _ = store.apply(ev);
        }
    }
    let rendered = store.render(|_| None);
    if let Err(e) = Snapshot::build(&rendered) {
        panic!("the store rendered a list the snapshot refuses: {e:?}");
    }
});
