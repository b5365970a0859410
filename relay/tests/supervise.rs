//! The relay's own loop and systemd: readiness, and a watchdog fed only while the hub answers.
//! systemd is played by a datagram socket in a temporary directory (`daemon::systemd`'s
//! `Notifier::to_socket`), so what the relay really sends is read back.

use daemon::systemd::{Notifier, Service};
use relay::{Config, Relay};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixDatagram;

const WAIT: Duration = Duration::from_secs(10);
const PERIOD: Duration = Duration::from_millis(40);

fn config() -> Config {
    let text =
        "[server]\nlisten = \"127.0.0.1:0\"\n[backend]\ntoken = \"backend-secret-0123456789\"\n";
    daemon::config::parse(text, std::path::Path::new("test.toml")).unwrap()
}

async fn recv(sock: &UnixDatagram, within: Duration) -> Option<String> {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(within, sock.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_from_the_relays_loop_and_stops_when_the_hub_is_wedged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let systemd_side = UnixDatagram::bind(&path).unwrap();
    let mut service = Service::new(Notifier::to_socket(&path).unwrap(), Some(PERIOD));

    let relay = Arc::new(Relay::start(&config()).await.unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let looping = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay.supervise(&mut service, None, stop_rx).await.ok();
        }
    });

    let ready = recv(&systemd_side, WAIT).await.unwrap();
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert_eq!(
        recv(&systemd_side, WAIT).await.as_deref(),
        Some("WATCHDOG=1")
    );

    // wedge the hub: the loop finds a lock that stays taken, and systemd hears nothing more
    let (release, held) = std::sync::mpsc::channel();
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let hub = relay.hub().clone();
    let holder = std::thread::spawn(move || {
        hub.hold_locked_until_signalled(held, locked_tx);
    });
    locked_rx.await.unwrap();
    // drain a beat already sent before the lock was taken
    while recv(&systemd_side, Duration::ZERO).await.is_some() {}
    assert_eq!(
        recv(&systemd_side, PERIOD * 5).await,
        None,
        "the watchdog was fed while the hub was wedged"
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(
        recv(&systemd_side, WAIT).await.as_deref(),
        Some("WATCHDOG=1"),
        "fed again once the hub answers"
    );

    stop_tx.send(()).unwrap();
    looping.await.unwrap();
}
