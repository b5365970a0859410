//! The runtime against the in-memory autopilot, payload and cloud (`fake`), on tokio's paused
//! clock: whole flows in milliseconds, no sockets.

use super::fake::{denied, not_yet, Answer, FakeCloud, FakeFc, FakePayload, HOME};
use super::*;
use crate::machine::{Delivery, Limits, Vehicle};
use protocol::units::{Latitude, Longitude};
use protocol::ws::{Destination, EventType, Message, Priority, Task};
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;

const DEST: (f64, f64) = (55.001, 37.0);

fn config(dir: &std::path::Path, extra: &str) -> DroneConfig {
    let text = include_str!("../../drone-agent.example.toml").replace(
        "state_dir = \"/var/lib/skypost-drone\"",
        &format!("state_dir = {:?}", dir.display().to_string()),
    );
    daemon::config::parse(
        &format!("{text}\n{extra}"),
        std::path::Path::new("test.toml"),
    )
    .expect("test config")
}

struct World {
    fc: Arc<FakeFc>,
    cloud: Arc<FakeCloud>,
    payload: Arc<FakePayload>,
    frames: mpsc::Sender<Envelope>,
    tech: mpsc::Sender<TechRequest>,
    view: watch::Receiver<crate::technician::AgentView>,
    turns: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts the agent over the fakes; `machine` and `restored` as a restart would give them.
fn start_with(fc: FakeFc, extra_config: &str, machine: Option<Machine>, telemetry: bool) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), extra_config);
    let fc = Arc::new(fc);
    let (cloud, payload) = (Arc::new(FakeCloud::new()), Arc::new(FakePayload::default()));
    let restored = machine.is_some();
    let machine = machine.unwrap_or_else(|| Machine::new(cfg.limits()));
    let (agent, internal) = Agent::new(
        cfg,
        fc.clone(),
        payload.clone(),
        cloud.clone(),
        machine,
        CommandLog::default(),
        restored,
    );
    let (view, turns) = (agent.technician_view(), agent.turns());
    let (frames, incoming) = mpsc::channel(8);
    let (tech, tech_rx) = mpsc::channel(4);
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(agent.run(incoming, internal, tech_rx, async move {
        let _ = stopped.await;
    }));
    if telemetry {
        // a real autopilot streams its state: the monitor sees every phase
        let fc = fc.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                fc.update(|_| {});
            }
        });
    }
    World {
        fc,
        cloud,
        payload,
        frames,
        tech,
        view,
        turns,
        stop: Some(stop),
        done,
        _dir: dir,
    }
}

/// A machine as a state file holds it: delivery 1 to `DEST`, then these events.
fn machine_after(events: &[Event]) -> Machine {
    let mut m = Machine::new(Limits::default());
    m.handle(&Event::Task(Delivery {
        delivery_id: Uuid::from_u128(1),
        lat: DEST.0,
        lon: DEST.1,
        aruco_id: 7,
        priority: Priority::Normal,
    }));
    for e in events {
        m.handle(e);
    }
    m
}

/// An autopilot that reports the vehicle armed and in the air.
fn flying_fc() -> FakeFc {
    let fc = FakeFc::new();
    fc.update(|s| {
        s.armed = true;
        s.landed = hal::flight::LandedState::InAir;
    });
    fc
}

fn start(fc: FakeFc) -> World {
    start_with(fc, "", None, true)
}

fn task(id: u128) -> Envelope {
    Envelope::new(Message::Task(Task {
        delivery_id: Uuid::from_u128(id),
        destination: Destination {
            lat: Latitude::new(DEST.0).expect("lat"),
            lon: Longitude::new(DEST.1).expect("lon"),
            aruco_id: 7,
        },
        priority: Priority::Normal,
        volume: None,
    }))
}

fn command(kind: protocol::ws::CommandKind) -> Envelope {
    Envelope::new(Message::Command(protocol::ws::Command {
        command: kind,
        delivery_id: None,
        cmd_id: Some(Uuid::new_v4()),
    }))
}

impl World {
    /// Waits (on the paused clock) until the machine is in `state`.
    async fn until(&mut self, state: DroneState) {
        let wait = self.view.wait_for(|v| v.state == state);
        tokio::time::timeout(Duration::from_secs(600), wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "never reached {state:?}; events {:?}",
                    self.cloud.event_types()
                )
            })
            .expect("agent running");
    }

    /// Waits until the cloud has seen `event`.
    async fn until_event(&self, event: EventType) {
        tokio::time::timeout(Duration::from_secs(600), async {
            loop {
                let notified = self.cloud.notify.notified();
                if self.cloud.event_types().contains(&event) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {event:?}; events {:?}", self.cloud.event_types()));
    }

    fn count(&self, event: EventType) -> usize {
        self.cloud
            .event_types()
            .iter()
            .filter(|e| **e == event)
            .count()
    }

    async fn stop(mut self) -> Self {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.done).await;
        self
    }
}

#[tokio::test(start_paused = true)]
async fn a_whole_delivery_against_the_fake_autopilot() {
    let fc = FakeFc::new();
    fc.script("takeoff", Answer::Delay(Duration::from_secs(2))); // accepted a little later
    let mut w = start(fc);
    w.frames.send(task(1)).await.expect("send");
    w.until(DroneState::WaitingDrop).await;
    w.frames
        .send(command(protocol::ws::CommandKind::DropCargo))
        .await
        .expect("send");
    w.until(DroneState::Dropped).await;
    w.frames
        .send(command(protocol::ws::CommandKind::ReturnToBase))
        .await
        .expect("send");
    w.until(DroneState::Idle).await;
    use EventType as E;
    assert_eq!(
        w.cloud.event_types(),
        [
            E::TaskAssigned,
            E::TookOff,
            E::Arrived,
            E::DropConfirmed,
            E::ReturnCommand,
            E::ArrivedBase,
            E::Ready
        ]
    );
    let calls = w.fc.calls();
    // the example config's [geofence]: stored and verified before the arm
    assert_eq!(
        &calls[..5],
        [
            "preflight",
            "fence 1 120",
            "arm",
            "takeoff 30",
            "goto 55.0010,37.0000,30"
        ]
    );
    assert!(
        calls.contains(&"goto 55.0010,37.0000,4".to_owned()),
        "{calls:?}"
    );
    w.stop().await;
}

/// Item 2 against the runtime: the autopilot refuses the arm on the ground. One refusal
/// reported with its words, no return-to-launch, back to IDLE, ready for the next task.
#[tokio::test(start_paused = true)]
async fn an_arm_refused_on_the_ground_is_one_report_and_idle() {
    let fc = FakeFc::new();
    fc.script(
        "arm",
        Answer::Refuse(denied("arm", "Arm: Need Position Estimate")),
    );
    let mut w = start(fc);
    w.frames.send(task(1)).await.expect("send");
    w.until_event(EventType::PreflightFailed).await;
    w.until(DroneState::Idle).await;
    assert_eq!(w.fc.count("arm"), 1);
    assert_eq!(w.fc.count("rtl"), 0, "{:?}", w.fc.calls());
    assert_eq!(
        w.cloud.event_types(),
        [EventType::TaskAssigned, EventType::PreflightFailed]
    );
    let events = w.cloud.events.lock().expect("events").clone();
    let why = events[1].reason.clone().unwrap_or_default();
    assert!(why.contains("Need Position Estimate"), "{why}");
    // and the next task flies
    w.frames.send(task(2)).await.expect("send");
    w.until(DroneState::WaitingDrop).await;
    w.stop().await;
}

/// "Not yet" on the ground: asked again with backoff, silently, then flown.
#[tokio::test(start_paused = true)]
async fn a_transient_arm_refusal_is_retried_with_backoff() {
    let fc = FakeFc::new();
    fc.script("arm", Answer::Refuse(not_yet("arm", "EKF settling")));
    fc.script("arm", Answer::Refuse(not_yet("arm", "EKF settling")));
    let w = start(fc);
    let t0 = tokio::time::Instant::now();
    w.frames.send(task(1)).await.expect("send");
    w.until_event(EventType::TookOff).await;
    assert_eq!(w.fc.count("arm"), 3);
    // 0.5 s then 1 s (config defaults): backed off, not hammered
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(w.count(EventType::FlightOpRefused), 0);
    w.stop().await;
}

/// Item 2's storm against the runtime: the autopilot refuses every return-to-launch. It is
/// asked a bounded number of times with backoff, reported once, then the drone lands.
#[tokio::test(start_paused = true)]
async fn a_refused_return_to_launch_is_bounded_then_lands() {
    let fc = FakeFc::new();
    for _ in 0..100 {
        fc.script(
            "rtl",
            Answer::Refuse(denied(
                "rtl",
                "Mode change to RTL failed: requires position",
            )),
        );
    }
    let mut w = start(fc);
    w.frames.send(task(1)).await.expect("send");
    w.until_event(EventType::TookOff).await;
    w.frames
        .send(command(protocol::ws::CommandKind::Abort))
        .await
        .expect("send");
    // the fake lands at once: the report of the landing order is the thing to wait for
    w.until_event(EventType::Failsafe).await;
    w.until(DroneState::Idle).await;
    let retries = Limits::default().flight_op_retries as usize;
    assert_eq!(w.fc.count("rtl"), retries + 1, "{:?}", w.fc.calls());
    assert_eq!(w.count(EventType::FlightOpRefused), 1);
    assert_eq!(w.count(EventType::Aborted), 1);
    assert_eq!(w.fc.count("land"), 1);
    w.stop().await;
}

/// Item 12: the result of a flight operation a newer one superseded is never applied.
#[tokio::test(start_paused = true)]
async fn a_superseded_operations_failure_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "");
    let fc = Arc::new(FakeFc::new());
    let (mut agent, _rx) = Agent::new(
        cfg.clone(),
        fc,
        Arc::new(FakePayload::default()),
        Arc::new(FakeCloud::new()),
        Machine::new(cfg.limits()),
        CommandLog::default(),
        false,
    );
    for e in [
        Event::Task(Delivery {
            delivery_id: Uuid::from_u128(1),
            lat: DEST.0,
            lon: DEST.1,
            aruco_id: 7,
            priority: Priority::Normal,
        }),
        Event::PreflightPassed,
        Event::LeftGround,
        Event::ClimbComplete,
    ] {
        agent.feed(e).await;
    }
    let goto_seq = agent.flight_seq;
    agent
        .feed(Event::Command(protocol::ws::CommandKind::Pause))
        .await;
    assert!(agent.flight_seq > goto_seq);
    agent
        .on_internal(Internal::FlightFailed {
            seq: goto_seq,
            op: FlightOp::Goto,
            error: denied("goto", "home position not known yet"),
        })
        .await;
    assert_eq!(agent.state(), DroneState::Paused, "stale failure applied");
}

/// Item 17: resuming a paused take-off climbs where the drone is.
#[tokio::test(start_paused = true)]
async fn resuming_a_paused_takeoff_hovers_here() {
    let fc = FakeFc::new();
    fc.script("takeoff", Answer::Hang); // still climbing when the pause comes
    let mut w = start_with(fc, "", None, true);
    w.frames.send(task(1)).await.expect("send");
    tokio::time::timeout(Duration::from_secs(60), async {
        while w.fc.count("takeoff") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("take-off asked");
    w.fc.update(|s| {
        s.armed = true;
        s.landed = hal::flight::LandedState::InAir;
        if let Some(p) = s.position.as_mut() {
            p.alt_rel_m = 5.0;
        }
    });
    w.until_event(EventType::TookOff).await;
    w.frames
        .send(command(protocol::ws::CommandKind::Pause))
        .await
        .expect("send");
    w.until(DroneState::Paused).await;
    w.frames
        .send(command(protocol::ws::CommandKind::Resume))
        .await
        .expect("send");
    w.until_event(EventType::Resumed).await;
    let calls = w.fc.calls();
    let after_resume: Vec<_> = calls.iter().skip_while(|c| *c != "hold").skip(1).collect();
    assert_eq!(
        after_resume.first().map(|s| s.as_str()),
        Some("hover_at 30"),
        "{calls:?}"
    );
    w.stop().await;
}

/// Item 18: a closed cloud channel does not make the loop spin.
#[tokio::test(start_paused = true)]
async fn a_closed_frame_channel_does_not_spin_the_loop() {
    let w = start_with(FakeFc::new(), "", None, false);
    let World { frames, .. } = &w;
    drop(frames.clone());
    let (turns, mut w) = (w.turns.clone(), w);
    // close it for real: the only sender goes
    let (dead, _) = mpsc::channel(1);
    let _ = std::mem::replace(&mut w.frames, dead);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let n = turns.load(Ordering::Relaxed);
    // telemetry every 3 s and the systemd watchdog: a handful of turns, not millions
    assert!(n < 50, "{n} turns in 10 s");
    w.stop().await;
}

/// Item 18: `test release` goes through the machine, and a task meanwhile is refused.
#[tokio::test(start_paused = true)]
async fn a_test_release_blocks_a_task_until_it_is_done() {
    let w = start(FakeFc::new());
    let (tx, rx) = oneshot::channel();
    w.tech
        .send(TechRequest::TestRelease(tx))
        .await
        .expect("send");
    tokio::time::timeout(Duration::from_secs(60), async {
        while *w.payload.releases.lock().expect("lock") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("release started");
    w.frames.send(task(1)).await.expect("send");
    let reply = rx.await.expect("answered").expect("passed");
    assert!(reply.passed);
    assert_eq!(*w.payload.closes.lock().expect("lock"), 1);
    let refused = w
        .cloud
        .frames
        .lock()
        .expect("frames")
        .iter()
        .any(|f| matches!(&f.message, Message::Error(e) if e.message.contains("test release")));
    assert!(refused, "the task during the test was not refused");
    assert_eq!(w.count(EventType::TaskAssigned), 0);
    w.stop().await;
}

/// Item 14: `drone-agent ready` brings LANDED_ELSEWHERE back to IDLE, not while armed.
#[tokio::test(start_paused = true)]
async fn technician_ready_after_landing_away() {
    let m = machine_after(&[Event::PreflightPassed, Event::LeftGround, Event::LandedAway]);
    let fc = FakeFc::new();
    fc.update(|s| s.armed = true);
    let mut w = start_with(fc, "", Some(m), false);
    w.until(DroneState::LandedElsewhere).await;
    let ask = |w: &World| {
        let (tx, rx) = oneshot::channel();
        let tech = w.tech.clone();
        async move {
            tech.send(TechRequest::Ready(tx)).await.expect("send");
            rx.await.expect("answered")
        }
    };
    let refused = ask(&w).await.expect_err("armed");
    assert!(refused.contains("armed"), "{refused}");
    w.fc.update(|s| s.armed = false);
    tokio::task::yield_now().await;
    assert_eq!(ask(&w).await.expect("ready"), "IDLE");
    w.until(DroneState::Idle).await;
    assert!(w.count(EventType::Ready) >= 1);
    w.stop().await;
}

/// Item 16: killed mid-release; the autopilot reports the release open: confirmed without
/// releasing again. Nothing reports it (a gripper not heard from since the link came up):
/// released again.
#[tokio::test(start_paused = true)]
async fn restart_mid_release_reads_the_payload() {
    for (reported, want_releases) in [(Some(hal::payload::PayloadState::Released), 0), (None, 1)] {
        let m = machine_after(&[
            Event::PreflightPassed,
            Event::LeftGround,
            Event::ClimbComplete,
            Event::OverDestination,
            Event::AtDropHeight,
            Event::Command(protocol::ws::CommandKind::DropCargo),
        ]);
        let fc = flying_fc();
        fc.update(|s| {
            if let Some(p) = s.position.as_mut() {
                (p.lat_deg, p.lon_deg, p.alt_rel_m) = (DEST.0, DEST.1, 4.0);
            }
        });
        let mut w = start_with(fc, "", Some(m), false);
        *w.payload.reports.lock().expect("lock") = reported;
        w.until_event(EventType::DropConfirmed).await;
        w.until(DroneState::Dropped).await;
        assert_eq!(
            *w.payload.releases.lock().expect("lock"),
            want_releases,
            "{reported:?}"
        );
        w.stop().await;
    }
}

/// Item 12: after a restart in flight nothing is commanded before the autopilot's home is
/// known.
#[tokio::test(start_paused = true)]
async fn restart_in_flight_waits_for_home_before_commanding() {
    let m = machine_after(&[
        Event::PreflightPassed,
        Event::LeftGround,
        Event::ClimbComplete,
    ]);
    let fc = flying_fc();
    fc.update(|s| s.home = None);
    let w = start_with(fc, "", Some(m), false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        w.fc.calls().is_empty(),
        "commanded before home: {:?}",
        w.fc.calls()
    );
    w.fc.update(|s| {
        s.home = Some(hal::flight::GlobalPosition {
            lat_deg: HOME.0,
            lon_deg: HOME.1,
            alt_msl_m: 100.0,
            alt_rel_m: 0.0,
        })
    });
    w.until_event(EventType::AgentRestarted).await;
    assert_eq!(
        w.fc.calls().first().map(String::as_str),
        Some("goto 55.0010,37.0000,30")
    );
    let _ = Vehicle::Airborne;
    w.stop().await;
}

/// Issue 11 item 6: the autopilot's battery fault bits are judged with percent and voltage. A
/// fault that may end the pack within minutes lands here; one that makes its capacity doubtful
/// flies home. The percentage stays healthy throughout.
#[tokio::test(start_paused = true)]
async fn battery_fault_bits_land_now_or_fly_home() {
    for (fault, event, order, other) in [
        (
            "over_temperature",
            EventType::BatteryCritical,
            "land",
            "rtl",
        ),
        ("under_temperature", EventType::BatteryLow, "rtl", "land"),
    ] {
        let mut w = start(FakeFc::new());
        w.frames.send(task(1)).await.expect("send");
        w.until(DroneState::WaitingDrop).await;
        w.fc.update(|s| s.battery_faults = vec![fault]);
        w.until_event(event).await;
        let reason = w
            .cloud
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|e| e.event_type == event)
            .and_then(|e| e.reason.clone())
            .unwrap_or_default();
        assert!(reason.contains(fault), "{fault}: {reason}");
        assert_eq!(w.fc.count(order), 1, "{fault}: {:?}", w.fc.calls());
        assert_eq!(w.fc.count(other), 0, "{fault}: {:?}", w.fc.calls());
        w.stop().await;
    }
}
