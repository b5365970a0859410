//! The cloud link cut 20 times and the agent killed with SIGKILL 20 times during deliveries: the
//! delivery completes, and after de-duplication by id the backend has every event, in order,
//! with no gap in the sequence numbers.

use crate::common;

use common::*;
use protocol::ws::{AckStatus, Command, CommandKind, EventType, Message};
use protocol::Envelope;
use rand::{Rng, SeedableRng};
use sim::vehicle::Flavour;
use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Re-sends the backend's task and commands until acknowledged (same id each time: the agent
/// acts once). A kill before the agent acknowledged the task loses it, as it should: the backend
/// sends it again.
struct Script {
    task: Option<protocol::ws::Task>,
    drop_id: Uuid,
    rtb_id: Uuid,
    acked: HashSet<Uuid>,
}

impl Script {
    fn new() -> Self {
        Self {
            task: None,
            drop_id: Uuid::new_v4(),
            rtb_id: Uuid::new_v4(),
            acked: HashSet::new(),
        }
    }

    /// `faults`: how many cuts/kills so far. The drop waits for all 20 (the drone hovers over the
    /// locker meanwhile), so every fault lands inside the delivery however fast the sim flies.
    fn step(&mut self, b: &Backend, faults: u32) {
        for env in &b.others {
            if let Message::Ack(a) = &env.message {
                assert_eq!(
                    a.status,
                    AckStatus::Executed,
                    "{a:?}; events {:#?}",
                    b.event_story()
                );
                self.acked.insert(a.cmd_id);
            }
        }
        let seen = b.event_types();
        let send = |kind, id| {
            b.send(Envelope::new(Command {
                command: kind,
                cmd_id: Some(id),
                delivery_id: None,
            }))
        };
        if let Some(t) = &self.task {
            if !self.acked.contains(&t.delivery_id) {
                b.send(Envelope::new(t.clone()));
            }
        }
        if seen.contains(&EventType::Arrived) && !self.acked.contains(&self.drop_id) && faults >= 20
        {
            send(CommandKind::DropCargo, self.drop_id);
        }
        if seen.contains(&EventType::DropConfirmed) && !self.acked.contains(&self.rtb_id) {
            send(CommandKind::ReturnToBase, self.rtb_id);
        }
    }

    fn done(b: &Backend) -> bool {
        b.event_types().contains(&EventType::Ready)
    }
}

/// No gap in seq, each id once after de-duplication, and the delivery's milestones in order.
fn check_event_stream(b: &Backend) {
    let mut by_id = BTreeMap::new();
    for e in &b.events {
        let prev = by_id.insert(e.event_id.expect("event id"), e.clone());
        if let Some(p) = prev {
            assert_eq!(p.seq, e.seq, "a re-sent event keeps its seq");
        }
    }
    let mut seqs: Vec<u64> = by_id.values().map(|e| e.seq.expect("seq")).collect();
    seqs.sort_unstable();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "gap in event sequence"
    );
    let mut ordered: Vec<_> = by_id.values().collect();
    ordered.sort_by_key(|e| e.seq);
    let mut milestones: Vec<EventType> = ordered
        .iter()
        .map(|e| e.event_type)
        .filter(|t| !matches!(t, EventType::AgentRestarted | EventType::CloudLinkLost))
        .collect();
    // a kill between publishing a step's event and saving its state repeats that step after the
    // restart: the same milestone twice in a row (new id) is allowed, a missing one is not
    milestones.dedup();
    use EventType::*;
    assert_eq!(
        milestones,
        [
            TaskAssigned,
            TookOff,
            Arrived,
            DropConfirmed,
            ReturnCommand,
            ArrivedBase,
            Ready
        ],
        "{ordered:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_link_cut_twenty_times_loses_nothing() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    w.send_task(300.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let mut script = Script::new();
    let mut cuts = 0;
    let mut next_cut = Instant::now() + Duration::from_millis(rng.random_range(50..400));
    let deadline = Instant::now() + WAIT;
    while !Script::done(&w.backend) {
        assert!(
            Instant::now() < deadline,
            "delivery did not complete; events: {:#?}",
            w.backend.event_story()
        );
        tokio::select! {
            _ = tokio::time::sleep_until(next_cut), if cuts < 20 => {
                // only a cut that dropped a live connection counts
                if w.backend.cut() {
                    cuts += 1;
                }
                next_cut = Instant::now() + Duration::from_millis(rng.random_range(50..400));
            }
            _ = tokio::time::timeout(Duration::from_millis(100), w.backend.next()) => {}
        }
        script.step(&w.backend, cuts);
    }
    assert_eq!(cuts, 20, "all cuts happened during the delivery");
    assert!(
        w.backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            > 20
    );
    check_event_stream(&w.backend);
    w.stop().await;
}

/// The agent binary, killed with SIGKILL at random moments and started again each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_times_resumes_and_completes() {
    let (vehicle, connection) = vehicle(Flavour::ArduPilot).await;
    let mut backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("drone-agent.toml");
    std::fs::write(
        &cfg_path,
        config_toml(&backend.url, &connection, &dir.path().join("state")),
    )
    .unwrap();
    let log_path = dir.path().join("agent.log");
    let spawn = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_drone-agent"))
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("agent starts")
    };
    let mut agent = spawn();
    backend.registered().await;
    arm_ready(&vehicle, Flavour::ArduPilot).await;
    let t = task(north_of_home(Flavour::ArduPilot, 600.0));
    assert!(backend.send(Envelope::new(t.clone())));

    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut script = Script::new();
    script.task = Some(t);
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.random_range(100..350));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !Script::done(&backend) {
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "not completed after {kills} kills; events {:#?}\n{}",
            backend.event_story(),
            log()
        );
        tokio::select! {
            _ = tokio::time::sleep_until(next_kill), if kills < 20 => {
                agent.kill().await.expect("SIGKILL");
                kills += 1;
                agent = spawn();
                next_kill = Instant::now() + Duration::from_millis(rng.random_range(100..350));
            }
            _ = tokio::time::timeout(Duration::from_millis(100), backend.next()) => {}
        }
        script.step(&backend, kills);
    }
    assert_eq!(kills, 20, "all kills happened during the delivery");
    check_event_stream(&backend);
    vehicle
        .wait_for(WAIT, |v| v.gripper_released && v.on_ground && !v.armed)
        .await
        .expect("parcel released, landed and disarmed");

    // SIGTERM: saves state and exits cleanly, landing nothing
    let pid = agent.id().expect("running") as i32;
    nix_kill(pid);
    let status = tokio::time::timeout(WAIT, agent.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/drone-state.json")).unwrap())
            .unwrap();
    assert!(saved["machine"].is_object());
}

fn nix_kill(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
