//! What the tests of several crates share, written once: the agents' binaries driven as systemd
//! and a technician drive them.
//!
//! - [`NotifySocket`]: a stand-in for systemd's notify socket, every datagram the daemon sends.
//! - [`agent_command`]: `<agent> run --config <file>` as the unit starts it.
//! - [`start_for_technician`]: an agent started that way with its runtime directory, up to READY=1.
//! - [`cli`], [`assert_no_agent`], [`socket_mode`]: the technician's side of the socket.
//!
//! Only ever a dev-dependency (`publish = false`): nothing here reaches a board.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

/// Every datagram a daemon sends to `NOTIFY_SOCKET`, in order.
///
/// The socket is a std one read on its own thread (it is what systemd's side looks like); the
/// test awaits the datagrams, so no runtime worker blocks on them.
pub struct NotifySocket {
    path: PathBuf,
    log: PathBuf,
    wait: Duration,
    rx: mpsc::UnboundedReceiver<String>,
}

impl NotifySocket {
    /// Binds `path`. Each datagram must come within `wait`; when one does not, the panic shows
    /// the daemon's log file `log`.
    pub fn bind(path: &Path, log: &Path, wait: Duration) -> Self {
        let sock = UnixDatagram::bind(path)
            .unwrap_or_else(|e| panic!("binding the notify socket {}: {e}", path.display()));
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        Self {
            path: path.to_owned(),
            log: log.to_owned(),
            wait,
            rx,
        }
    }

    /// What `NOTIFY_SOCKET` is set to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram; panics (with the daemon's log) when none comes in time.
    pub async fn next(&mut self) -> String {
        match tokio::time::timeout(self.wait, self.rx.recv()).await {
            Ok(Some(n)) => n,
            _ => panic!(
                "no notification within {:?}; log {}:\n{}",
                self.wait,
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    /// Skips datagrams until one for which `wanted` holds, and returns it.
    pub async fn until(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let n = self.next().await;
            if wanted(&n) {
                return n;
            }
        }
    }
}

/// `<agent> run --config <config>` as the systemd unit starts it: `NOTIFY_SOCKET` set,
/// `RUST_LOG=info`, stdout dropped, stderr to `log`, killed when dropped. The caller adds what its
/// test needs (`RUNTIME_DIRECTORY`, `WATCHDOG_USEC`) and spawns it.
pub fn agent_command(
    agent: &str,
    config: &Path,
    notify: &NotifySocket,
    log: &Path,
) -> tokio::process::Command {
    let stderr = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("creating the agent log {}: {e}", log.display()));
    let mut cmd = tokio::process::Command::new(agent);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", notify.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);
    cmd
}

/// An agent started by [`start_for_technician`].
pub struct UnitAgent {
    /// Killed when dropped.
    pub child: tokio::process::Child,
    pub notify: NotifySocket,
    /// Its technician socket, in its runtime directory.
    pub socket: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

/// Starts `<agent> run --config <config>` as its unit does, under `dir`: `dir/run` as its
/// runtime directory (`RUNTIME_DIRECTORY`, where its technician socket goes), `dir/notify.sock`,
/// `dir/agent.log`. First checks that the client finds no agent there ([`assert_no_agent`]);
/// returns once the agent has said READY=1.
pub async fn start_for_technician(
    agent: &str,
    config: &Path,
    dir: &Path,
    wait: Duration,
) -> UnitAgent {
    let runtime_dir = dir.join("run");
    std::fs::create_dir(&runtime_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", runtime_dir.display()));
    let socket = runtime_dir.join("technician.sock");
    assert_no_agent(&cli(agent, &["status"], &socket));
    let log = dir.join("agent.log");
    let mut notify = NotifySocket::bind(&dir.join("notify.sock"), &log, wait);
    let child = agent_command(agent, config, &notify, &log)
        .env("RUNTIME_DIRECTORY", &runtime_dir)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {agent}: {e}"));
    notify.until(|n| n.starts_with("READY=1")).await;
    UnitAgent {
        child,
        notify,
        socket,
        log,
    }
}

/// The technician's client: `<agent> <args> --socket <socket>`, run to its end.
pub fn cli(agent: &str, args: &[&str], socket: &Path) -> Output {
    std::process::Command::new(agent)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap_or_else(|e| panic!("running {agent}: {e}"))
}

/// What the client says when no agent listens: exit code 3 and a hint, nothing on stdout.
pub fn assert_no_agent(out: &Output) {
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent"),
        "{out:?}"
    );
}

/// The permission bits of a file (the technician socket is 0660).
pub fn socket_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_in_order_and_until_skips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let mut notify = NotifySocket::bind(&path, &dir.path().join("log"), Duration::from_secs(5));
        let tx = UnixDatagram::unbound().unwrap();
        for n in [
            "STATUS=starting",
            "EXTEND_TIMEOUT_USEC=1",
            "READY=1\nSTATUS=up",
        ] {
            tx.send_to(n.as_bytes(), notify.path()).unwrap();
        }
        assert_eq!(notify.next().await, "STATUS=starting");
        let ready = notify.until(|n| n.starts_with("READY=1")).await;
        assert_eq!(ready, "READY=1\nSTATUS=up");
    }

    #[tokio::test]
    #[should_panic(expected = "no notification within")]
    async fn silence_fails_and_shows_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "the agent's last words").unwrap();
        let mut notify =
            NotifySocket::bind(&dir.path().join("n.sock"), &log, Duration::from_millis(50));
        notify.next().await;
    }
}
