//! A kubeconfig file (YAML or its JSON form), as `upstream.kubeconfig` names it: any input is
//! either a target or an error naming the file, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use yurt_ota::upstream::apiserver::kubeconfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/etc/yurt-ota/kubeconfig");
    match kubeconfig::parse(text, file) {
        Ok(t) => {
            let _ = t.auth.describe();
            let _ = t.ca.as_ref().map(|c| c.describe("certificate-authority"));
        }
        Err(e) => assert!(e.contains("/etc/yurt-ota/kubeconfig"), "{e}"),
    }
});
