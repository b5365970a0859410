//! Issue 18, defect 1: a disk that refuses writes (full, failing SD card), against the sim
//! vehicle and a scripted backend.
//!
//! The disk "fills" through real writes that fail on purpose, without root, mount or a tmpfs:
//! every write of the state file and of the outbox goes through a temporary file
//! (`<name>.tmp`, then rename), so a directory put where that temporary file goes makes the
//! write fail (EISDIR) at the same place a full disk fails it (ENOSPC); removing the directory
//! is "the disk was freed".

use crate::common;

use common::*;
use protocol::ws::{AckStatus, CommandKind, Event, EventType, Message};
use sim::vehicle::Flavour;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The writes that fail, and how to make them work again.
struct Jam(Vec<PathBuf>);

impl Jam {
    /// The state file (`drone-state.json`, written through `drone-state.tmp`).
    fn state_file(dir: &Path) -> Self {
        let p = dir.join("drone-state.tmp");
        jam(&p);
        Self(vec![p])
    }

    /// The outbox: its next event file. A failed push does not spend the seq, so every later
    /// push tries the same name; a few more are jammed in case an event is written meanwhile.
    fn outbox(dir: &Path) -> Self {
        let ob = dir.join("outbox");
        let mut high = std::fs::read_to_string(ob.join("seq"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        for e in std::fs::read_dir(&ob).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(n) = name.split('.').next().and_then(|n| n.parse::<u64>().ok()) {
                high = high.max(n);
            }
        }
        let paths: Vec<_> = (high + 1..high + 6)
            .map(|s| ob.join(format!("{s:020}.tmp")))
            .collect();
        for p in &paths {
            jam(p);
        }
        Self(paths)
    }

    fn free(self) {
        for p in self.0 {
            std::fs::remove_dir(p).unwrap();
        }
    }
}

/// Puts a directory where a write's temporary file goes. A write in progress holds that name
/// (as a file) until it is renamed into place, on another thread since the agent's writes are
/// off its async workers: that write finishes first, as it would before a disk fills up.
fn jam(p: &Path) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match std::fs::create_dir(p) {
            Ok(()) => return,
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && !p.is_dir()
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("cannot jam {}: {e}", p.display()),
        }
    }
}

fn kind(e: &Event) -> String {
    e.event_type.as_str().to_owned()
}

/// Waits for an event by its wire name (events this test adds have no older spelling).
async fn event_named(b: &mut Backend, name: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
    // one deadline for the whole wait: telemetry keeps arriving
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(e) = b
            .events
            .iter()
            .find(|e| kind(e) == name && pred(e))
            .cloned()
        {
            return e;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left, b.next()).await.is_err() {
            panic!(
                "no {name} event within {WAIT:?}; events so far: {:?}",
                b.event_types()
            );
        }
    }
}

/// The saved state's wire name, as the state file on disk holds it.
fn state_on_disk(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("drone-state.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let state = &v["machine"]["state"];
    match state {
        serde_json::Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        other => other.as_str().unwrap_or_default().to_owned(),
    }
}

/// The task's ack (its delivery id stands in for a command id).
async fn task_ack(b: &mut Backend, id: uuid::Uuid) -> protocol::ws::Ack {
    b.ack_for(id).await
}

/// On the ground, a task that cannot be recorded is refused with the reason and the drone does
/// not take off — the state file, then the outbox; once the disk is freed a task flies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_be_recorded_is_refused_on_the_ground() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    let dir = w.state_dir();

    let jam = Jam::state_file(&dir);
    let id = w.send_task(60.0);
    let ack = task_ack(&mut w.backend, id).await;
    assert_eq!(ack.status, AckStatus::Rejected, "{ack:?}");
    let why = ack.reason.clone().unwrap_or_default();
    assert!(
        why.contains("cannot save") && why.contains("state file"),
        "{why}"
    );
    jam.free();

    let jam = Jam::outbox(&dir);
    let id = w.send_task(60.0);
    let ack = task_ack(&mut w.backend, id).await;
    assert_eq!(ack.status, AckStatus::Rejected, "{ack:?}");
    let why = ack.reason.clone().unwrap_or_default();
    assert!(
        why.contains("cannot save") && why.contains("outbox"),
        "{why}"
    );
    // the telemetry says so meanwhile
    let tel = w
        .backend
        .frame(|e| {
            matches!(&e.message, Message::Telemetry(t)
                if serde_json::to_value(t).unwrap()["storage"] == "failed")
        })
        .await;
    drop(tel);
    assert!(!w.vehicle.view().borrow().armed, "never armed");
    jam.free();

    // freed: the next task is taken at once (the events held meanwhile stored first)
    let id = w.send_task(60.0);
    let ack = task_ack(&mut w.backend, id).await;
    assert_eq!(ack.status, AckStatus::Executed, "{ack:?}");
    event_named(&mut w.backend, "storage_restored", |_| true).await;
    w.backend.event(EventType::TookOff).await;
    let took_off = w
        .backend
        .events
        .iter()
        .filter(|e| e.event_type == EventType::TookOff)
        .count();
    assert_eq!(
        took_off, 1,
        "only the task taken after the disk was freed flew"
    );
    w.stop().await;
}

/// In the air, a full disk never stops the flight: `storage_failed` and the milestones reach
/// the backend at once over the live link, the telemetry says `storage: failed`, and when the
/// disk is back the state is saved again and the held events go through the outbox (same ids,
/// now with their seq).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_in_the_air_never_stops_the_flight() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    let dir = w.state_dir();
    w.send_task(60.0);
    w.backend.event(EventType::TookOff).await;
    let (state_jam, outbox_jam) = (Jam::state_file(&dir), Jam::outbox(&dir));

    let failed = event_named(&mut w.backend, "storage_failed", |_| true).await;
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("kept in memory"),
        "{failed:?}"
    );
    let arrived = w.backend.event(EventType::Arrived).await;
    assert_eq!(arrived.seq, None, "sent live, not from the outbox");
    let tel = w
        .backend
        .frame(|e| {
            matches!(&e.message, Message::Telemetry(t)
                if serde_json::to_value(t).unwrap()["storage"] == "failed"
                    && t.state == Some(protocol::ws::DroneState::WaitingDrop))
        })
        .await;
    drop(tel);
    assert_eq!(
        state_on_disk(&dir),
        "Navigating",
        "nothing written meanwhile"
    );

    state_jam.free();
    outbox_jam.free();
    let restored = event_named(&mut w.backend, "storage_restored", |_| true).await;
    assert!(
        restored
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("stored"),
        "{restored:?}"
    );
    assert_eq!(state_on_disk(&dir), "WaitingDrop", "re-saved");
    let again = event_named(&mut w.backend, "arrived", |e| {
        e.event_id == arrived.event_id && e.seq.is_some()
    })
    .await;
    assert_eq!(again.reason, arrived.reason);
    // and the delivery goes on
    let drop_id = w.backend.command(CommandKind::DropCargo);
    assert_eq!(w.backend.ack_for(drop_id).await.status, AckStatus::Executed);
    w.backend.event(EventType::DropConfirmed).await;
    w.stop().await;
}

/// Hovering over the locker, the agent stops and its state is lost (garbage in the file, or no
/// file): the new agent finds the vehicle armed and in the air and makes it safe by config,
/// saying why — never IDLE under a flying drone.
async fn restart_with_lost_state(policy: Option<&str>, lose: fn(&Path)) -> String {
    let mut w = World::start(Flavour::Px4, |c| match policy {
        Some(p) => format!("{c}\n[restart]\nunknown_airborne = \"{p}\"\n"),
        None => c,
    })
    .await;
    w.fly_to_locker(60.0).await;
    if let Some(a) = w.agent.take() {
        a.stop().await;
    }
    lose(&w.state_dir());
    w.agent = Some(InProcessAgent::start(parse_config(&w.config)));
    let e = w.backend.event(EventType::AgentRestarted).await;
    let why = e.reason.unwrap_or_default();
    let want = policy.unwrap_or("return_home");
    assert!(
        why.contains("no flight on record") && why.contains(want),
        "{why}"
    );
    match want {
        "return_home" => {
            w.backend.event(EventType::ArrivedBase).await;
            w.backend.event(EventType::Ready).await;
        }
        _ => {
            w.backend.event(EventType::LandedElsewhere).await;
        }
    }
    let v = w
        .vehicle
        .wait_for(Duration::from_secs(5), |v| v.on_ground && !v.armed)
        .await;
    assert!(v.is_some(), "the vehicle is down and disarmed");
    w.stop().await;
    why
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_under_a_flying_drone_returns_home() {
    let why = restart_with_lost_state(None, |dir| {
        std::fs::write(dir.join("drone-state.json"), b"{\"version\": 1, \"mach").unwrap()
    })
    .await;
    assert!(why.contains("unreadable"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_under_a_flying_drone_lands_by_config() {
    let why = restart_with_lost_state(Some("land"), |dir| {
        std::fs::remove_file(dir.join("drone-state.json")).unwrap()
    })
    .await;
    assert!(why.contains("no state file"), "{why}");
}
