//! Flat memory under glibc: bounded malloc arenas, a fixed mmap threshold, no stack cache.
//!
//! glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after the
//! first poll the ~1 MB pod-list buffers of later polls, and the steps by which a growing buffer
//! gets there, come from the heap and stay resident: measured, the RSS of an idle agent polling
//! 110 pods went from 4.4 to 6.9 MiB in 12 s with no API request at all. Per-thread arenas (up
//! to 8 per core) keep what the API's connection threads freed. A fixed threshold (which also
//! turns the raising off), a low trim threshold and two arenas keep it within a few KiB.
//!
//! glibc also keeps the stack of each thread that ended, for the next one (up to 40 MiB): the
//! API serves a connection per thread, so every connection that was open at once leaves its
//! stack's top 16 KiB resident (measured: 4 of them, 64 KiB, after the benchmark's 4 clients).
//! A stack cache of 0 unmaps each when its thread has ended; a new connection's thread then maps
//! a fresh one (one `mmap` per connection, against the request's own work).
//!
//! And per-thread caches of small freed blocks (tcache, and the fastbins, which are not merged
//! with their neighbours until a later large request): with threads that come and go per
//! connection, what they held stayed spread over the heap, and its resident part crept up by
//! 4–8 KiB per 100,000 requests. Without them every small block is merged back when freed, and
//! the heap stays flat (RssAnon the same from 10,000 to 300,000 requests in 4 of 4 runs), at no
//! cost above the noise of `cargo bench --bench api` (docs/performance.md "Resident memory on the local API").
//!
//! These are read by glibc before `main`, from `GLIBC_TUNABLES`, and setting them at run time
//! needs `mallopt` (unsafe). So `run` re-executes itself once with them set, unless the
//! environment already has `GLIBC_TUNABLES` (the systemd unit can set it; an operator's own
//! value is kept). musl's allocator returns freed memory by itself: nothing to do there.

/// What `run` sets: 2 arenas, blocks from 128 KiB mmapped and returned at free, the top of the
/// heap trimmed above 128 KiB, no cache of ended threads' stacks, no tcache, no fastbins.
pub const TUNABLES: &str = "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072:\
glibc.malloc.trim_threshold=131072:glibc.pthread.stack_cache_size=0:\
glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0";

/// Re-executes this process with `GLIBC_TUNABLES` set, on glibc when it is not set yet. Returns
/// only when it does not (not glibc, already set, or the exec failed: then it runs as it is).
pub fn bound_glibc_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "yurt-ota".into());
        // The binary by its path, so the process keeps its name (`comm`, for ps, pidof and the
        // journal); /proc/self/exe when that path is gone (the package replaced the file).
        let exe = std::env::current_exe()
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| "/proc/self/exe".into());
        let e = std::process::Command::new(exe)
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", TUNABLES)
            .exec();
        eprintln!("yurt-ota: cannot re-execute with GLIBC_TUNABLES set ({e}); running without");
    }
}
