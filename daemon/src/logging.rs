//! `tracing` set-up shared by every daemon.
//!
//! - Under systemd (`JOURNAL_STREAM` set) events go to the journal with their fields as journal
//!   fields (`journalctl -o verbose` shows `DELIVERY_ID=…`), so a technician can filter by them.
//! - Otherwise, human-readable lines on stderr; `SKYPOST_LOG_FORMAT=json` gives one JSON object per
//!   line for log shippers.
//! - The filter comes from `RUST_LOG` (e.g. `info,drone_agent=debug`), default `info`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

/// Where log lines went, so the caller can say so once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    Journald,
    StderrText,
    StderrJson,
}

/// Installs the global subscriber. Safe to call twice (the second call does nothing), which keeps
/// tests that start several daemons in one process simple.
pub fn init(service: &'static str) -> LogSink {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
