//! systemd's service notification protocol (`sd_notify(3)`), for units with `Type=notify` and
//! `WatchdogSec=`.
//!
//! The protocol is one datagram of `KEY=value` lines to the Unix socket named by `NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`). It is written here instead of through
//! the `sd-notify` crate because the daemons need the socket as a value ([`Notifier::to_socket`]):
//! tests point it at their own socket and read what a daemon really sent, without touching the
//! process environment that every test thread shares. All three daemons notify through here
//! only (the workspace no longer depends on `sd-notify`).
//!
//! [`Service`] is what a daemon's main loop holds:
//! - [`Service::ready`] once the daemon is really up (its hardware reached, its config valid);
//! - [`Service::watchdog_due`] in the main loop's `select!`, then [`Service::alive`] *only if the
//!   loop judges itself healthy*: before readiness this extends the start timeout
//!   (`EXTEND_TIMEOUT_USEC`, so a daemon waiting for its hardware is not killed while its loop turns),
//!   after readiness it feeds the watchdog (`WATCHDOG=1`). A loop that stops turning, or that
//!   stops calling `alive`, is killed and restarted by systemd (`Restart=on-failure`).
//! - [`Service::stopping`] when shutdown starts.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset (started by hand, in tests, in a
//! container), and a failed send is logged, never fatal: systemd being away must not stop a drone.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// Sends notifications to systemd's socket, or nowhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The socket systemd named in `NOTIFY_SOCKET`, or a disabled notifier when it is unset or
    /// unusable (that is logged: a unit with `Type=notify` would then time out starting).
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Self::disabled(),
            Some(name) => match address(Path::new(&name)) {
                Ok(addr) => Self::with_addr(addr),
                Err(e) => {
                    tracing::warn!(socket = ?name, error = %e, "NOTIFY_SOCKET is unusable; systemd will not hear from us");
                    Self::disabled()
                }
            },
        }
    }

    /// Notifications to the socket at `path` (a leading `@` names an abstract socket).
    pub fn to_socket(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::with_addr(address(path.as_ref())?))
    }

    /// Sends nothing.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    fn with_addr(addr: SocketAddr) -> Self {
        match UnixDatagram::unbound() {
            Ok(sock) => Self {
                target: Some((sock, addr)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a datagram socket for systemd notifications");
                Self::disabled()
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `message` (newline-separated `KEY=value` lines) as one datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        match &self.target {
            None => Ok(()),
            Some((sock, addr)) => sock.send_to_addr(message.as_bytes(), addr).map(|_| ()),
        }
    }

    /// [`Notifier::send`], logging a failure instead of returning it.
    fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!(error = %e, message, "systemd notification not sent");
        }
    }
}

fn address(path: &Path) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)
        }
        None if bytes.first() == Some(&b'/') => SocketAddr::from_pathname(path),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET must be an absolute path or start with @",
        )),
    }
}

/// How often to feed the watchdog: half of `WATCHDOG_USEC` (as `sd_watchdog_enabled(3)` advises),
/// when the watchdog is on and meant for this process (`WATCHDOG_PID`, if set, is our pid).
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// A daemon's side of its systemd unit: readiness, status line, watchdog, stopping.
#[derive(Debug)]
pub struct Service {
    notifier: Notifier,
    watchdog: Option<tokio::time::Interval>,
    period: Option<Duration>,
    ready: bool,
}

impl Service {
    /// From the environment systemd gives the service (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`). Call inside the tokio runtime.
    pub fn from_env() -> Self {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let period = watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id());
        Self::new(Notifier::from_env(), period)
    }

    /// An explicit notifier and watchdog period (tests; `None`: no watchdog).
    pub fn new(notifier: Notifier, watchdog_period: Option<Duration>) -> Self {
        let period = watchdog_period.filter(|_| notifier.is_enabled());
        let watchdog = period.map(|p| {
            let mut i = tokio::time::interval(p);
            // A loop that was busy for a while owes one beat, not a burst of them.
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Self {
            notifier,
            watchdog,
            period,
            ready: false,
        }
    }

    /// Neither systemd nor a watchdog: everything is a no-op.
    pub fn disabled() -> Self {
        Self::new(Notifier::disabled(), None)
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Tells systemd the service is up (`READY=1`), with a status line for `systemctl status`.
    /// Only the first call sends `READY=1`; later ones update the status.
    pub fn ready(&mut self, status: &str) {
        if self.ready {
            self.status(status);
            return;
        }
        self.ready = true;
        self.notifier
            .notify(&format!("READY=1\nSTATUS={}", one_line(status)));
        tracing::info!(status, "ready (systemd notified)");
    }

    /// The one-line status `systemctl status` shows.
    pub fn status(&self, status: &str) {
        self.notifier
            .notify(&format!("STATUS={}", one_line(status)));
    }

    /// Resolves each time the watchdog should hear from us; never, when there is no watchdog.
    /// Use it as a branch of the main loop's `select!` (cancel-safe).
    pub async fn watchdog_due(&mut self) {
        match &mut self.watchdog {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Says the main loop is healthy. Before [`Service::ready`]: extends the start-up timeout by
    /// three watchdog periods (still starting, not stuck); after it: feeds the watchdog.
    pub fn alive(&self) {
        let Some(period) = self.period else { return };
        if self.ready {
            self.notifier.notify("WATCHDOG=1");
        } else {
            let extend = (period * 3).as_micros();
            self.notifier
                .notify(&format!("EXTEND_TIMEOUT_USEC={extend}"));
        }
    }

    /// Tells systemd the service is shutting down (`STOPPING=1`).
    pub fn stopping(&self) {
        self.notifier.notify("STOPPING=1");
    }
}

/// A status is one line of the datagram: a newline would start a new `KEY=`.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, sock, path)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn watchdog_period_is_half_and_for_us_only() {
        let half = Some(Duration::from_secs(10));
        assert_eq!(watchdog_period(Some("20000000"), None, 7), half);
        assert_eq!(watchdog_period(Some("20000000"), Some("7"), 7), half);
        assert_eq!(watchdog_period(Some("20000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }

    #[test]
    fn relative_socket_names_are_refused() {
        assert!(Notifier::to_socket("run/notify").is_err());
        assert!(Notifier::to_socket("@skypost-test-abstract").is_ok());
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_succeeds() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.send("READY=1").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn start_extends_then_ready_feeds_the_watchdog_then_stopping() {
        let (_dir, sock, path) = listener();
        let period = Duration::from_secs(15);
        let mut svc = Service::new(Notifier::to_socket(&path).unwrap(), Some(period));

        // Still starting: a healthy loop extends the start timeout, it does not feed the watchdog.
        svc.watchdog_due().await;
        svc.alive();
        assert_eq!(recv(&sock), "EXTEND_TIMEOUT_USEC=45000000");

        svc.ready("flight controller reached\nbut not armed");
        assert_eq!(
            recv(&sock),
            "READY=1\nSTATUS=flight controller reached but not armed"
        );
        svc.ready("again");
        assert_eq!(recv(&sock), "STATUS=again", "READY=1 is sent once");

        svc.watchdog_due().await;
        svc.alive();
        assert_eq!(recv(&sock), "WATCHDOG=1");

        svc.stopping();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watchdog_alive_sends_nothing_and_due_never_fires() {
        let (_dir, sock, path) = listener();
        let mut svc = Service::new(Notifier::to_socket(&path).unwrap(), None);
        svc.alive();
        let due = tokio::time::timeout(Duration::from_secs(3600), svc.watchdog_due()).await;
        assert!(due.is_err(), "no watchdog: never due");
        svc.stopping();
        assert_eq!(recv(&sock), "STOPPING=1", "nothing was sent before");
    }

    #[test]
    fn abstract_sockets_receive_too() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("skypost-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::to_socket(format!("@{name}")).unwrap();
        n.send("READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }
}
