//! The technician's commands against the real agent binary over its real Unix socket: `status`
//! (text and `--json`), `events` after a refused command, `preflight`, `test release` (done on
//! the ground, refused on a delivery), the socket's permissions, and the exit codes.

use crate::common;

use common::*;
use protocol::ws::{CommandKind, EventType};
use protocol::Envelope;
use sim::vehicle::Flavour;
use std::path::Path;
use std::process::Output;
use test_support::{socket_mode, start_for_technician};

const AGENT: &str = env!("CARGO_BIN_EXE_drone-agent");

fn cli(args: &[&str], socket: &Path) -> Output {
    test_support::cli(AGENT, args, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_events_over_the_technician_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (vehicle, connection) = vehicle(Flavour::Px4).await;
    let mut backend = Backend::start().await;
    let cfg_path = dir.path().join("drone-agent.toml");
    std::fs::write(
        &cfg_path,
        config_toml(&backend.url, &connection, &dir.path().join("state")),
    )
    .unwrap();
    // No agent yet: exit code 3 and a hint, nothing on stdout. Then READY=1 on a stand-in for
    // systemd's socket says the FC was reached.
    let agent = start_for_technician(AGENT, &cfg_path, dir.path(), WAIT).await;
    let (socket, log_path) = (agent.socket.clone(), agent.log.clone());
    backend.registered().await;

    let out = cli(&["status", "--json"], &socket);
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["flight_controller"]["link"], "connected", "{status}");
    assert_eq!(status["cloud"]["connected"], true, "{status}");
    assert_eq!(status["state"], "IDLE");
    assert!(status["delivery_id"].is_null());
    assert_eq!(status["flight_controller"]["autopilot"], "Px4");
    assert_eq!(
        socket_mode(&socket),
        0o660,
        "group-only access to the socket"
    );

    // A command that makes no sense while IDLE is refused, and the technician sees why.
    let cmd = backend.command(CommandKind::DropCargo);
    backend.ack_for(cmd).await;
    let out = cli(&["events", "--json"], &socket);
    assert!(out.status.success(), "{out:?}");
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = events["events"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert!(
        last["detail"].as_str().unwrap().starts_with("refused: "),
        "{events}"
    );

    let out = cli(&["status"], &socket);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("state             IDLE"), "{text}");
    assert!(text.contains("flight controller connected (Px4"), "{text}");
    assert!(text.contains("last error        "), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes: {text}");

    let out = cli(&["events"], &socket);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("refused: "), "{text}");

    // preflight: the autopilot's checks and the cloud link, each PASS/FAIL
    arm_ready(&vehicle, Flavour::Px4).await;
    let out = cli(&["preflight"], &socket);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("PASS  gps"), "{text}");
    assert!(text.contains("PASS  cloud"), "{text}");
    assert!(text.ends_with("all passed\n"), "{text}");

    // test release on the ground, disarmed, idle: the gripper opens, then closes
    let before = vehicle.view().borrow().commands.len();
    let out = cli(&["test", "release", "--json"], &socket);
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["passed"], true, "{reply}");
    let v = vehicle.view().borrow().clone();
    let grippers = v.commands[before..]
        .iter()
        .filter(|(cmd, _)| *cmd == 211) // MAV_CMD_DO_GRIPPER
        .count();
    assert!(
        grippers >= 2,
        "release and grab: {:?}",
        &v.commands[before..]
    );
    assert!(!v.gripper_released, "closed again");

    // on a delivery it is refused, exit 5, and nothing moves
    assert!(backend.send(Envelope::new(task(north_of_home(Flavour::Px4, 200.0)))));
    backend.event(EventType::TaskAssigned).await;
    let out = cli(&["test", "release"], &socket);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only when idle"),
        "{out:?}"
    );
}
