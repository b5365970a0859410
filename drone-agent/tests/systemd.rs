//! The agent binary under a stand-in for systemd's notify socket: it must not say READY=1 before
//! the flight controller is reached, keep its start-up alive (EXTEND_TIMEOUT_USEC) while it waits,
//! feed the watchdog after READY, and say STOPPING=1 on SIGTERM.

use crate::common;

use common::*;
use sim::vehicle::{self, Flavour, Transport, VehicleConfig};
use std::net::SocketAddr;
use test_support::{agent_command, NotifySocket};

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
    let log_path = dir.path().join("agent.log");
    let mut notes = NotifySocket::bind(&dir.path().join("notify.sock"), &log_path, WAIT);
    let mut agent = agent_command(
        env!("CARGO_BIN_EXE_drone-agent"),
        &cfg_path,
        &notes,
        &log_path,
    )
    // 0.4 s: the agent speaks every 0.2 s, so the test sees several beats quickly
    .env("WATCHDOG_USEC", "400000")
    .spawn()
    .expect("agent starts");
    let pid = agent.id().expect("running");

    // No flight controller yet: status, then the start-up is extended, beat after beat.
    assert_eq!(
        notes.next().await,
        "STATUS=waiting for the flight controller"
    );
    for _ in 0..3 {
        assert_eq!(notes.next().await, "EXTEND_TIMEOUT_USEC=600000");
    }

    // The flight controller appears: READY=1, then only watchdog beats.
    let mut cfg = VehicleConfig::standard(Flavour::Px4);
    cfg.speedup = SPEEDUP;
    cfg.transport = Transport::Udp {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer: SocketAddr::from(([127, 0, 0, 1], agent_port)),
    };
    let _vehicle = vehicle::spawn(cfg).await.unwrap();
    let ready = notes.until(|n| n != "EXTEND_TIMEOUT_USEC=600000").await;
    assert!(
        ready.starts_with("READY=1\nSTATUS=flight controller reached"),
        "{ready:?}"
    );
    for _ in 0..3 {
        assert_eq!(notes.next().await, "WATCHDOG=1");
    }

    // SIGTERM: STOPPING=1 and a clean exit.
    let status = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let stopping = notes.until(|n| n != "WATCHDOG=1").await;
    assert_eq!(stopping, "STOPPING=1");
    let exit = tokio::time::timeout(WAIT, agent.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
