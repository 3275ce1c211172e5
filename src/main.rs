//! The `yurt-ota` binary: logging, signals, then the command line in `cli`.
#![forbid(unsafe_code)]

use std::io::Write;

use yurt_ota::shutdown::Shutdown;

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let daemon = args.first().is_some_and(|a| a == "run" || a == "sim");
    if daemon {
        // Before any thread: may replace this process with itself, GLIBC_TUNABLES set.
        yurt_ota::malloc::bound_glibc_heap();
    }
    init_logging(if daemon { "info" } else { "warn" });

    // SIGTERM (systemd stop) and SIGINT trip `stop`; the daemon's threads wait on it.
    let stop = Shutdown::new();
    if daemon {
        if let Err(e) = stop.on_signals() {
            eprintln!("yurt-ota: cannot handle SIGTERM/SIGINT: {e}");
            std::process::exit(1);
        }
    }
    std::process::exit(yurt_ota::cli::main(args, stop));
}

/// Plain lines to stderr: no timestamps (journald adds its own), level first.
fn init_logging(default: &str) {
    let filter = std::env::var("YURT_OTA_LOG").unwrap_or_else(|_| default.to_owned());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format(|buf, record| writeln!(buf, "{}: {}", record.level(), one_line(record.args())))
        .target(env_logger::Target::Stderr)
        .init();
}

/// A log message as one line of plain text: control characters from outside text (a hold
/// reason, an upstream answer) are escaped, so none can forge a record or drive a terminal.
fn one_line(args: &std::fmt::Arguments) -> String {
    yurt_ota::names::escape_controls(&args.to_string()).into_owned()
}
