//! Issue 13, "knowing who is flying" and "flight logs", against the sim vehicle: a ground station
//! on another link changes the mode (the sim's `gcs_mode`, a SET_MODE from system 255), the
//! agent reports `pilot_override` and stops commanding, and the hand-back (the pilot's switch to
//! GUIDED, or the backend's `resume`) continues the delivery. The flight's `.tlog` opens with
//! pymavlink's `mavlogdump` and holds the whole flight; the autopilot's own log, downloaded with
//! LOG_DATA packets lost on the way, matches the sim's file byte for byte.
//!
//! Python (for mavlogdump) is `$SKYPOST_PYTHON`, the checkout's `.venv/bin/python`, or
//! `python3`, whichever imports pymavlink; without one the tlog check says so and is skipped,
//! except under `CI=true`, where it fails.

use crate::common;

use common::*;
use protocol::ws::{AckStatus, CommandKind, DroneState, EventType};
use sim::vehicle::{Fault, Flavour};
use std::path::PathBuf;
use std::process::Command;

/// The commands that fly the vehicle (what the agent must not send under a pilot).
const FLYING: [u32; 7] = [400, 176, 20, 21, 22, 192, 11];

fn flying_commands(commands: &[(u32, u8)]) -> Vec<u32> {
    commands
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| FLYING.contains(c))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ground_stations_mode_change_is_a_pilot_override_and_guided_hands_back() {
    let mut w = World::start(Flavour::ArduPilot, |c| {
        c + "\n[pilot]\nhand_back_mode = \"GUIDED\"\n\n[logs]\nmargin_s = 0.5\nfetch_autopilot_log = true\n"
    })
    .await;
    w.climb_out(250.0).await;
    // the pilot's transmitter at mid-stick (LOITER takes its climb from it), then LOITER from a
    // ground station the agent does not route
    w.vehicle.inject(Fault::RcThrottle(1500));
    w.vehicle.inject(Fault::GcsMode("LOITER".into()));
    let over = w.backend.event(EventType::PilotOverride).await;
    let at_override = w.vehicle.view().borrow().clone();
    println!(
        "pilot override: {:?} -> {:?} \"{}\"",
        over.from_state,
        over.to_state,
        over.reason.as_deref().unwrap_or("")
    );
    assert_eq!(over.to_state, Some(DroneState::PilotOverride));
    let why = over.reason.unwrap_or_default();
    assert!(
        why.contains("LOITER") && why.contains("RC transmitter"),
        "{why}"
    );
    // five sim seconds under the pilot: the agent commands nothing, the mode stays the pilot's
    let later = w
        .vehicle
        .wait_for(WAIT, |v| v.t_s > at_override.t_s + 5.0)
        .await
        .unwrap();
    let sent = flying_commands(&later.commands[at_override.commands.len()..]);
    assert!(sent.is_empty(), "the agent flew under the pilot: {sent:?}");
    assert_eq!(later.mode, "LOITER");
    w.backend
        .telemetry_state(|s| s == DroneState::PilotOverride)
        .await;
    // the pilot hands back by switching to GUIDED: the delivery goes on to the locker
    w.vehicle.inject(Fault::GcsMode("GUIDED".into()));
    let back = w.backend.event(EventType::Resumed).await;
    assert!(
        back.reason.unwrap_or_default().contains("GUIDED"),
        "handed back by the mode"
    );
    w.backend.event(EventType::Arrived).await;
    let drop = w.backend.command(CommandKind::DropCargo);
    assert_eq!(w.backend.ack_for(drop).await.status, AckStatus::Executed);
    w.backend.event(EventType::DropConfirmed).await;
    // lose LOG_DATA packets during the download that follows the landing
    w.vehicle.inject(Fault::LogDrop(40));
    let rtb = w.backend.command(CommandKind::ReturnToBase);
    assert_eq!(w.backend.ack_for(rtb).await.status, AckStatus::Executed);
    w.backend.event(EventType::ArrivedBase).await;

    // the autopilot's own log: downloaded whole despite the lost packets
    let ready = w.backend.event(EventType::FlightLogReady).await;
    let why = ready.reason.unwrap_or_default();
    let path = PathBuf::from(why.split(": ").next().unwrap_or_default());
    let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{why}: {e}"));
    let files = w.vehicle.log_files();
    let want = files.last().expect("the sim logged the flight");
    println!(
        "autopilot log: {} bytes, 40 LOG_DATA lost: \"{why}\"",
        got.len()
    );
    assert_eq!(path.extension().unwrap(), "bin");
    assert!(got == **want, "the download differs from the sim's file");
    use sha2::Digest as _;
    let sha: String = sha2::Sha256::digest(&got)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        why.contains(&sha) && why.contains(&got.len().to_string()),
        "{why}"
    );

    // the flight recorder's .tlog: closed when the agent stops, then read by pymavlink
    let logs = w.state_dir().join("flight-logs");
    // the agent stops; the world (and its folder) stays until the end of the test
    if let Some(agent) = w.agent.take() {
        agent.stop().await;
    }
    let tlogs = hal::flight::tlog::list(&logs).unwrap();
    assert_eq!(tlogs.len(), 1, "one flight, one tlog: {tlogs:?}");
    let Some(python) = pymavlink_python("the tlog check") else {
        return;
    };
    let out = Command::new(&python)
        .args([
            "-m",
            "pymavlink.tools.mavlogdump",
            "--types",
            "HEARTBEAT,COMMAND_INT,COMMAND_LONG",
        ])
        .arg(&tlogs[0].path)
        .output()
        .expect("run mavlogdump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let heartbeats: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("HEARTBEAT") && l.contains("type : 2"))
        .collect();
    let armed = |l: &str| {
        l.split("base_mode : ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|b| b & 128 != 0)
    };
    println!(
        "tlog {}: {} bytes, {} lines of HEARTBEAT/COMMAND_*, {} vehicle heartbeats",
        tlogs[0].path.display(),
        tlogs[0].bytes,
        text.lines().count(),
        heartbeats.len()
    );
    // the whole flight: armed from the first vehicle HEARTBEAT, disarmed at the end, and the
    // agent's own commands (both ways recorded) in between
    assert!(heartbeats.first().is_some_and(|l| armed(l)), "starts armed");
    assert!(
        heartbeats.last().is_some_and(|l| !armed(l)),
        "ends disarmed"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("COMMAND_INT") && l.contains("command : 192")),
        "the agent's gotos are in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_pilot_override_waits_for_resume_then_the_delivery_goes_on() {
    let mut w = World::start(Flavour::Px4, |c| c + "\n[logs]\nmax_mb = 0\n").await;
    w.climb_out(150.0).await;
    w.vehicle.inject(Fault::GcsMode("MANUAL".into()));
    let over = w.backend.event(EventType::PilotOverride).await;
    assert_eq!(over.to_state, Some(DroneState::PilotOverride));
    let at_override = w.vehicle.view().borrow().clone();
    let later = w
        .vehicle
        .wait_for(WAIT, |v| v.t_s > at_override.t_s + 5.0)
        .await
        .unwrap();
    let sent = flying_commands(&later.commands[at_override.commands.len()..]);
    assert!(sent.is_empty(), "the agent flew under the pilot: {sent:?}");
    assert_eq!(later.mode, "MANUAL");
    // no hand-back mode configured: only the backend's resume gives the delivery back
    let resume = w.backend.command(CommandKind::Resume);
    assert_eq!(w.backend.ack_for(resume).await.status, AckStatus::Executed);
    let back = w.backend.event(EventType::Resumed).await;
    assert_eq!(back.from_state, Some(DroneState::PilotOverride));
    w.backend.event(EventType::Arrived).await;
    w.stop().await;
}
