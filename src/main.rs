//! The `yurt-ota` binary: logging, signals, then the command line in `cli`.
#![forbid(unsafe_code)]

use std::io::Write;

use yurt_ota::shutdown::Shutdown;

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let daemon = args.first().is_some_and(|a| a == "run" || a == "sim");
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

/// Plain lines to stderr: no timestamps (journald adds its own), level first. Under systemd,
/// each line also starts with its sd-daemon priority (`<4>` for a warning), which journald
/// strips and files the line under (`journalctl -p warning`).
fn init_logging(default: &str) {
    let filter = std::env::var("YURT_OTA_LOG").unwrap_or_else(|_| default.to_owned());
    let journal = stderr_is_journal();
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format(move |buf, record| {
            let prefix = if journal {
                journal_prefix(record.level())
            } else {
                ""
            };
            let message = one_line(record.args());
            writeln!(buf, "{prefix}{}: {message}", record.level())
        })
        .target(env_logger::Target::Stderr)
        .init();
}

/// The sd-daemon priority prefix for a log level (sd-daemon(3)).
fn journal_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "<3>",
        log::Level::Warn => "<4>",
        log::Level::Info => "<6>",
        log::Level::Debug | log::Level::Trace => "<7>",
    }
}

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` ("DEV:INODE") names stderr itself,
/// not a stream some ancestor had (a client run from a service's shell keeps its plain lines).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let meta = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    meta.is_ok_and(|m| names_stream(&var.to_string_lossy(), m.dev(), m.ino()))
}

/// `$JOURNAL_STREAM`'s "DEV:INODE", both decimal, against a file's device and inode.
fn names_stream(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// A log message as one line of plain text: control characters from outside text (a hold
/// reason, an upstream answer) are escaped, so none can forge a record or drive a terminal.
fn one_line(args: &std::fmt::Arguments) -> String {
    yurt_ota::names::escape_controls(&args.to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_prefixes_are_the_sd_daemon_priorities() {
        assert_eq!(journal_prefix(log::Level::Error), "<3>");
        assert_eq!(journal_prefix(log::Level::Warn), "<4>");
        assert_eq!(journal_prefix(log::Level::Info), "<6>");
        assert_eq!(journal_prefix(log::Level::Debug), "<7>");
        assert_eq!(journal_prefix(log::Level::Trace), "<7>");
    }

    #[test]
    fn journal_stream_must_name_this_stderr() {
        assert!(names_stream("8:12345", 8, 12345));
        assert!(!names_stream("8:12345", 8, 12346));
        assert!(!names_stream("9:12345", 8, 12345));
        assert!(!names_stream("", 8, 12345));
        assert!(!names_stream("8", 8, 12345));
        assert!(!names_stream("x:y", 8, 12345));
    }
}
