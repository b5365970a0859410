//! Shutdown signals as one future, so every daemon stops the same way: SIGTERM (systemd stop) or
//! SIGINT (Ctrl-C on a technician's terminal) resolve it; the daemon then saves state and closes
//! its links in order.

use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
}

/// Resolves on the first SIGTERM or SIGINT.
///
/// Errors only if the signal handlers cannot be installed (no tokio runtime with signals enabled);
/// callers treat that as fatal at start-up.
pub async fn wait() -> std::io::Result<Signal> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => Signal::Terminate,
        _ = int.recv() => Signal::Interrupt,
    })
}
