//! Links `yurt-ota` with link/cold-text.ld: code that does not run in the usual mode (TLS and
//! the apiserver upstream, the simulator, backtrace printing, optional gates) grouped after the
//! rest of `.text`, so that fewer of its pages are resident (docs/performance.md "Resident memory on the local API").

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/cold-text.ld");
    // ELF targets, linked by GNU ld or lld through cc: every target this project builds for.
    // gold has no INSERT: a build that asks for it links without the layout (and
    // tests/integration/layout.rs says so).
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    if flags.contains("-fuse-ld=gold") {
        println!(
            "cargo:warning=linking with gold: link/cold-text.ld left out (gold has no INSERT)"
        );
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(&dir).join("link/cold-text.ld");
    println!(
        "cargo:rustc-link-arg-bin=yurt-ota=-Wl,-T,{}",
        script.display()
    );
}
