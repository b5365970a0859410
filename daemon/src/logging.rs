//! `tracing` set-up shared by every daemon.
//!
//! - Under systemd (`JOURNAL_STREAM` set) events go to the journal with their fields as journal
//!   fields (`journalctl -o verbose` shows `DELIVERY_ID=…`), so a technician can filter by them.
//! - Otherwise, human-readable lines on stderr; `SKYPOST_LOG_FORMAT=json` gives one JSON object per
//!   line for log shippers.
//! - The filter comes from `RUST_LOG` (e.g. `info,drone_agent=debug`: a default level and
//!   per-target levels), default `info`. A `RUST_LOG` that does not parse is reported on stderr
//!   and `info` is used.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer, Registry};

/// Where log lines went, so the caller can say so once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    Journald,
    StderrText,
    StderrJson,
}

/// The filter `RUST_LOG` asks for; `info` when unset or unreadable (said once on stderr: the
/// subscriber that would log it is what is being built).
fn rust_log(value: Option<&str>) -> Targets {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => info(),
        Some(v) => v.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("RUST_LOG={v:?} is not a filter ({e}); logging at info");
            info()
        }),
    }
}

/// Installs the global subscriber. Safe to call twice (the second call does nothing), which keeps
/// tests that start several daemons in one process simple.
pub fn init(service: &'static str) -> LogSink {
    let filter = || rust_log(std::env::var("RUST_LOG").ok().as_deref());
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_syslog_identifier(service.to_owned())
                .with_filter(filter());
            if Registry::default().with(layer).try_init().is_ok() {
                return LogSink::Journald;
            }
        }
    }
    let json = std::env::var("SKYPOST_LOG_FORMAT").is_ok_and(|v| v == "json");
    let layer = if json {
        fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let _ = Registry::default().with(layer).try_init();
    if json {
        LogSink::StderrJson
    } else {
        LogSink::StderrText
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_levels_per_target_and_a_fallback() {
        let t = rust_log(Some("warn,drone_agent=debug"));
        assert!(t.would_enable("drone_agent::runtime", &Level::DEBUG));
        assert!(!t.would_enable("cloud_link", &Level::INFO));
        assert!(t.would_enable("cloud_link", &Level::WARN));
        let t = rust_log(None);
        assert!(t.would_enable("anything", &Level::INFO));
        assert!(!t.would_enable("anything", &Level::DEBUG));
        let t = rust_log(Some("drone_agent=loud"));
        assert!(t.would_enable("anything", &Level::INFO), "unreadable: info");
    }
}
