//! The agent binary under a stand-in for systemd's notify socket: it must not say READY=1 before
//! the flight controller is reached, keep its start-up alive (EXTEND_TIMEOUT_USEC) while it waits,
//! feed the watchdog after READY, and say STOPPING=1 on SIGTERM.

mod common;

use common::*;
use sim::vehicle::{self, Flavour, Transport, VehicleConfig};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::mpsc;

/// Every datagram the agent sends, read on a thread (the socket is a std one: it is what
/// systemd's side looks like).
fn notify_socket(path: &std::path::Path) -> mpsc::Receiver<String> {
    let sock = UnixDatagram::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
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
    rx
}

fn next(rx: &mpsc::Receiver<String>, log: &std::path::Path) -> String {
    rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "no notification; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_the_fc_answers_watchdog_after_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start().await;
    let agent_port = free_udp_port();
    let cfg_path = dir.path().join("drone-agent.toml");
    std::fs::write(
        &cfg_path,
        config_toml(
            &backend.url,
            &format!("udpin:127.0.0.1:{agent_port}"),
            &dir.path().join("state"),
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let notes = notify_socket(&sock_path);
    let log_path = dir.path().join("agent.log");
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_drone-agent"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("NOTIFY_SOCKET", &sock_path)
        // 0.4 s: the agent speaks every 0.2 s, so the test sees several beats quickly
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");
    let pid = agent.id().expect("running");

    // No flight controller yet: status, then the start-up is extended, beat after beat.
    assert_eq!(
        next(&notes, &log_path),
        "STATUS=waiting for the flight controller"
    );
    for _ in 0..3 {
        assert_eq!(next(&notes, &log_path), "EXTEND_TIMEOUT_USEC=600000");
    }

    // The flight controller appears: READY=1, then only watchdog beats.
    let mut cfg = VehicleConfig::standard(Flavour::Px4);
    cfg.speedup = SPEEDUP;
    cfg.transport = Transport::Udp {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer: SocketAddr::from(([127, 0, 0, 1], agent_port)),
    };
    let _vehicle = vehicle::spawn(cfg).await.unwrap();
    let ready = loop {
        let n = next(&notes, &log_path);
        if n != "EXTEND_TIMEOUT_USEC=600000" {
            break n;
        }
    };
    assert!(
        ready.starts_with("READY=1\nSTATUS=flight controller reached"),
        "{ready:?}"
    );
    for _ in 0..3 {
        assert_eq!(next(&notes, &log_path), "WATCHDOG=1");
    }

    // SIGTERM: STOPPING=1 and a clean exit.
    let status = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let stopping = loop {
        let n = next(&notes, &log_path);
        if n != "WATCHDOG=1" {
            break n;
        }
    };
    assert_eq!(stopping, "STOPPING=1");
    let exit = tokio::time::timeout(WAIT, agent.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
