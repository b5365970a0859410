//! `sim backend`: a scripted backend that plays the seed's orchestrator and drone service
//! against the relay, for one whole delivery.
//!
//! It connects to `/ws/backend`, acknowledges every event (so agents can drop them from their
//! outboxes), syncs the locker's cells through the relay's HTTP bridge, sends the drone its `task`,
//! opens a cell when the drone reports `arrived`, sends `drop_cargo` and `return_to_base`, lets
//! the parcel fall into the cell (the sim lock board's door), and finally hands the customer's QR
//! code to a simulated customer who shows it to the locker's camera (an image file in the camera's
//! directory) and takes the parcel out. It answers the locker's `qr_validate` like the
//! orchestrator: a code is good once.
//!
//! Every step has a timeout; the run ends with a [`Report`] (ok or the step that failed) and
//! prints progress a person can follow.

use futures_util::{SinkExt, StreamExt};
use protocol::geo::LatLon;
use protocol::locker_api::{CellMapping, CellsOpenRequest, CellsSyncRequest};
use protocol::ws::{
    Command, CommandKind, DroneState, EventAck, EventType, Message, Peer, PeerKind, PresenceStatus,
    QrValidation, Task,
};
use protocol::Envelope;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as Ws;
use uuid::Uuid;

/// Drone events that end a delivery early: waiting for the next milestone is pointless then.
const FATAL: &[EventType] = &[
    EventType::PreflightFailed,
    EventType::Aborted,
    EventType::DropTimeout,
    EventType::Failsafe,
    EventType::BatteryCritical,
    EventType::LandedElsewhere,
    EventType::CloudLinkLost,
];

/// What can go differently in a run (the whole-system test's variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Everything works.
    Normal,
    /// The relay dies while the drone flies out and comes back (the orchestrator restarts it).
    CloudDrop,
    /// The locker is offline when the drone arrives: the drone waits, then flies home with the parcel.
    LockerOffline,
    /// The customer first shows a wrong code: nothing opens, then the right one works.
    WrongQr,
    /// The customer shows the same code again after the pickup: nothing opens the second time.
    QrTwice,
    /// Two relays in a cluster on RabbitMQ (`--amqp-url`); the agents dial relay A, the backend
    /// is on B; A is killed with SIGKILL mid-flight and the agents fail over to B.
    RelayFailover,
}

/// `sim backend`: the script on its own, against a relay and agents started elsewhere.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// The relay's address (host:port of its WebSocket and HTTP listener).
    #[arg(long)]
    pub relay: SocketAddr,
    /// The backend credential the relay expects.
    #[arg(long)]
    pub token: String,
    #[arg(long)]
    pub drone: Uuid,
    #[arg(long)]
    pub locker: Uuid,
    /// The locker's position, `LAT,LON` in degrees.
    #[arg(long)]
    pub destination: String,
    #[arg(long, default_value_t = 123)]
    pub aruco_id: u32,
    /// The locker camera's frame directory (the customer's code is written there).
    #[arg(long)]
    pub camera_dir: PathBuf,
    /// The sim lock board's control socket (`sim lockboard --control`).
    #[arg(long)]
    pub lockboard_control: PathBuf,
    #[arg(long, value_enum, default_value = "normal")]
    pub variant: Variant,
    #[arg(long, default_value_t = 60.0)]
    pub step_timeout_s: f64,
}

/// Runs `sim backend`; `Ok(false)` if the delivery did not complete.
pub async fn run_cli(args: BackendArgs) -> Result<bool, String> {
    let (lat, lon) = args
        .destination
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .ok_or_else(|| format!("--destination {:?} is not LAT,LON", args.destination))?;
    let scenario = Scenario {
        relay: args.relay,
        backend_token: args.token,
        drone_id: args.drone,
        locker_id: args.locker,
        destination: (lat, lon),
        aruco_id: args.aruco_id,
        camera_dir: args.camera_dir,
        lockboard_control: args.lockboard_control,
        variant: args.variant,
        step_timeout: Duration::from_secs_f64(args.step_timeout_s),
        drone_ready: None,
    };
    let report = run(scenario, |_| {}).await;
    println!("{}", report.to_json());
    Ok(report.ok)
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub relay: SocketAddr,
    pub backend_token: String,
    pub drone_id: Uuid,
    pub locker_id: Uuid,
    /// Destination of the delivery (the locker's position), degrees.
    pub destination: (f64, f64),
    pub aruco_id: u32,
    /// The locker camera's frame directory: the customer "shows" a code by writing an image here.
    pub camera_dir: PathBuf,
    /// The sim lock board's control socket (doors are opened and closed through it).
    pub lockboard_control: PathBuf,
    pub variant: Variant,
    /// Longest wait for any one step.
    pub step_timeout: Duration,
    /// How to ask the drone whether it is ready to fly (its technician `preflight`: exit 0 when
    /// every check passes). With one, the task goes out only once the drone says so, as a drone
    /// service would send it; without (`sim backend` alone) a refused task is sent again.
    pub drone_ready: Option<ReadyProbe>,
}

/// A command that exits 0 once the drone is ready for a task.
#[derive(Debug, Clone)]
pub struct ReadyProbe {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// What the orchestrator does for a variant at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The drone took off (CloudDrop restarts the relay here).
    DroneTookOff,
    /// The drone is over the destination soon (LockerOffline stops the locker here).
    DroneCruising,
}

/// One event as the backend saw it first.
#[derive(Debug, Clone)]
pub struct ReportedEvent {
    pub source: PeerKind,
    pub event: EventType,
    pub to_state: Option<DroneState>,
    pub event_id: Option<Uuid>,
    pub seq: Option<u64>,
}

/// The outcome, for the summary and the tests.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub ok: bool,
    pub failure: Option<String>,
    /// Every event, de-duplicated by id, with its source, in arrival order (with its id and
    /// `seq`, so a test can see a gap or a reordering).
    pub events: Vec<ReportedEvent>,
    /// Event frames that repeated an id already seen (re-sent after a lost acknowledgement).
    pub duplicate_events: u32,
    pub duration: Duration,
    pub distance_m: f64,
    pub cell_id: Option<u16>,
    pub min_battery: Option<f64>,
    /// Pickup attempts the locker refused (`qr_rejected`).
    pub qr_rejected: u32,
    /// The drone's telemetry track: seconds since the start, latitude, longitude, altitude
    /// above home (for the flight picture).
    pub track: Vec<(f64, f64, f64, f64)>,
    /// When each of [`Report::events`] arrived, seconds since the start (same order).
    pub event_times: Vec<f64>,
}

impl Report {
    /// The report as JSON: what the whole-system tests read.
    pub fn to_json(&self) -> serde_json::Value {
        let events: Vec<serde_json::Value> = self
            .events
            .iter()
            .map(|e| {
                serde_json::json!({"source": e.source, "event": e.event, "to_state": e.to_state,
                    "event_id": e.event_id, "seq": e.seq})
            })
            .collect();
        serde_json::json!({
            "ok": self.ok,
            "failure": self.failure,
            "events": events,
            "duration_s": self.duration.as_secs_f64(),
            "distance_m": self.distance_m,
            "cell_id": self.cell_id,
            "min_battery": self.min_battery,
            "qr_rejected": self.qr_rejected,
            "duplicate_events": self.duplicate_events,
        })
    }
}

struct Conn {
    scenario: Scenario,
    frames: mpsc::UnboundedReceiver<Envelope>,
    out: mpsc::UnboundedSender<Envelope>,
    seen_events: HashSet<Uuid>,
    report: Report,
    last_pos: Option<(f64, f64)>,
    last_print: Instant,
    used_codes: HashSet<String>,
    good_code: String,
    order_id: Uuid,
    cell_uuid: Uuid,
}

/// One progress line, stamped with the time since the run began.
macro_rules! say {
    ($($t:tt)*) => { println!("[{:>6.1}s] {}", $crate::backend::elapsed_s(), format!($($t)*)) };
}
pub(crate) use say;

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Seconds since the first progress line (or this call).
pub fn elapsed_s() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Runs the whole scripted delivery. `hook` lets the orchestrator act at the variant's moments.
pub async fn run(scenario: Scenario, mut hook: impl FnMut(Hook) + Send) -> Report {
    let started = Instant::now();
    let (out, out_rx) = mpsc::unbounded_channel();
    let (frames_tx, frames) = mpsc::unbounded_channel();
    tokio::spawn(connection(scenario.clone(), out_rx, frames_tx));
    let mut c = Conn {
        scenario,
        frames,
        out,
        seen_events: HashSet::new(),
        report: Report::default(),
        last_pos: None,
        last_print: Instant::now(),
        used_codes: HashSet::new(),
        good_code: String::new(),
        order_id: Uuid::new_v4(),
        cell_uuid: Uuid::new_v4(),
    };
    let result = c.script(&mut hook).await;
    c.report.duration = started.elapsed();
    match result {
        Ok(()) => c.report.ok = true,
        Err(e) => {
            say!("FAILED: {e}");
            c.report.failure = Some(e);
        }
    }
    c.report
}

/// The `/ws/backend` connection, re-dialled whenever it drops (the relay may restart).
async fn connection(
    s: Scenario,
    mut out: mpsc::UnboundedReceiver<Envelope>,
    frames: mpsc::UnboundedSender<Envelope>,
) {
    let url = format!("ws://{}/ws/backend", s.relay);
    let mut pending: Option<Envelope> = None;
    loop {
        let Ok(mut req) = url.as_str().into_client_request() else {
            return;
        };
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", s.backend_token)) {
            req.headers_mut().insert("Authorization", v);
        }
        let ws = match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => ws,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (mut sink, mut stream) = ws.split();
        if let Some(env) = pending.take() {
            if sink.send(Ws::text(env.to_json())).await.is_err() {
                pending = Some(env);
                continue;
            }
        }
        loop {
            tokio::select! {
                f = stream.next() => match f {
                    Some(Ok(Ws::Text(t))) => {
                        if let Ok(env) = Envelope::from_json(t.as_str()) {
                            if frames.send(env).is_err() { return; }
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
                o = out.recv() => match o {
                    Some(env) => {
                        if sink.send(Ws::text(env.to_json())).await.is_err() {
                            pending = Some(env);
                            break;
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

impl Conn {
    async fn script(&mut self, hook: &mut (impl FnMut(Hook) + Send)) -> Result<(), String> {
        let s = self.scenario.clone();
        let drone = Peer {
            kind: PeerKind::Drone,
            id: s.drone_id.to_string(),
        };
        say!("backend: waiting for the drone and the locker to be online at the relay");
        let mut online = HashSet::new();
        self.until("drone and locker online", |_, env| {
            if let Message::Presence(p) = &env.message {
                if p.status == PresenceStatus::Connected {
                    online.insert(p.peer.kind);
                }
            }
            online.contains(&PeerKind::Drone) && online.contains(&PeerKind::Locker)
        })
        .await?;

        // the locker's cells, as the backend knows them
        let cells: Vec<CellMapping> = (1..=4)
            .map(|n| CellMapping {
                cell_uuid: Uuid::new_v4(),
                cell_id: n,
                size: None,
            })
            .collect();
        self.cell_uuid = cells[2].cell_uuid;
        let (status, body) = self
            .bridge(
                "cells/sync",
                &serde_json::to_string(&CellsSyncRequest { cells }).unwrap_or_default(),
            )
            .await?;
        if status != 200 {
            return Err(format!("cells/sync answered {status}: {body}"));
        }
        say!("locker: 4 cells synced");

        // the order and its delivery
        let delivery_id = Uuid::new_v4();
        self.good_code = format!("SKYPOST:{}:{:08x}", self.order_id, rand::random::<u32>());
        let (lat, lon) = s.destination;
        let task: Task = serde_json::from_value(serde_json::json!({
            "delivery_id": delivery_id,
            "destination": {"lat": lat, "lon": lon, "aruco_id": s.aruco_id},
            "priority": "normal"
        }))
        .map_err(|e| e.to_string())?;
        // a drone service assigns only a drone that reports a GPS fix
        self.until("the drone's GPS fix", |_, env| {
            matches!(&env.message, Message::Telemetry(t)
                if t.gps.is_some_and(|g| !matches!(g.fix, protocol::ws::GpsFix::NoFix | protocol::ws::GpsFix::Fix2d)))
        })
        .await?;
        if let Some(probe) = &s.drone_ready {
            say!("backend: waiting for the drone to say it is ready (pre-flight checks)");
            self.wait_ready(probe).await?;
            say!("backend: the drone's pre-flight checks pass");
        }
        let mut attempt = 1;
        loop {
            say!(
                "backend: delivery {delivery_id} for order {} → drone {} (attempt {attempt})",
                self.order_id,
                s.drone_id
            );
            self.send(Envelope::new(task.clone()).with_target(drone.clone()));
            let mut outcome = None;
            self.until("take-off or a pre-flight refusal", |_, env| {
                if let (Message::Event(e), Some(src)) = (&env.message, &env.source) {
                    if src.kind == PeerKind::Drone
                        && matches!(
                            e.event_type,
                            EventType::TookOff | EventType::PreflightFailed
                        )
                    {
                        outcome = Some(e.event_type);
                        return true;
                    }
                }
                false
            })
            .await?;
            if outcome == Some(EventType::TookOff) {
                break;
            }
            if attempt >= 10 {
                return Err("the drone failed its pre-flight checks 10 times".into());
            }
            // not ready yet (estimator settling): ask again shortly, as a drone service would
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        hook(Hook::DroneTookOff);
        hook(Hook::DroneCruising);

        if s.variant == Variant::LockerOffline {
            self.event(PeerKind::Drone, EventType::Arrived).await?;
            let open = CellsOpenRequest {
                cell_uuid: self.cell_uuid,
                delivery_id: Some(delivery_id),
            };
            let (status, body) = self
                .bridge(
                    "cells/open",
                    &serde_json::to_string(&open).unwrap_or_default(),
                )
                .await?;
            say!(
                "backend: locker answered {status} ({}); not dropping, the drone decides",
                body["error"]["code"]
            );
            if status == 200 {
                return Err("the locker was supposed to be offline".into());
            }
            let e = self.event(PeerKind::Drone, EventType::DropTimeout).await?;
            say!("drone: gave up waiting: {}", e.1.unwrap_or_default());
            self.event(PeerKind::Drone, EventType::ArrivedBase).await?;
            return Ok(());
        }

        self.event(PeerKind::Drone, EventType::Arrived).await?;
        let open = CellsOpenRequest {
            cell_uuid: self.cell_uuid,
            delivery_id: Some(delivery_id),
        };
        let (status, body) = self
            .bridge(
                "cells/open",
                &serde_json::to_string(&open).unwrap_or_default(),
            )
            .await?;
        if status != 200 {
            return Err(format!("cells/open answered {status}: {body}"));
        }
        let cell = body["cell_id"].as_u64().unwrap_or(0) as u16;
        self.report.cell_id = Some(cell);
        say!("locker: cell {cell} unlocked for the drop");

        let drop_id = Uuid::new_v4();
        self.send(
            Envelope::new(Command {
                command: CommandKind::DropCargo,
                cmd_id: Some(drop_id),
                delivery_id: Some(delivery_id),
            })
            .with_target(drone.clone()),
        );
        self.event(PeerKind::Drone, EventType::DropConfirmed)
            .await?;
        // the parcel falls through the open hatch; the door swings shut behind it
        self.door(cell, "open").await?;
        self.door(cell, "close").await?;
        self.event(PeerKind::Locker, EventType::ParcelLoaded)
            .await?;
        say!("locker: parcel in cell {cell}");

        let rtb = Uuid::new_v4();
        self.send(
            Envelope::new(Command {
                command: CommandKind::ReturnToBase,
                cmd_id: Some(rtb),
                delivery_id: Some(delivery_id),
            })
            .with_target(drone),
        );
        self.event(PeerKind::Drone, EventType::ArrivedBase).await?;
        self.event(PeerKind::Drone, EventType::Ready).await?;

        // the customer
        if s.variant == Variant::WrongQr {
            say!("customer: shows a code that is not theirs");
            self.show_code("SKYPOST:not-a-real-order").await?;
            self.event(PeerKind::Locker, EventType::QrRejected).await?;
            self.hide_code().await;
        }
        say!("customer: shows the QR code from the app");
        self.show_code(&self.good_code.clone()).await?;
        let opened = self.event(PeerKind::Locker, EventType::CellOpened).await?;
        self.hide_code().await;
        match opened.1.filter(|r| !r.is_empty()) {
            Some(why) => say!("locker: cell {cell} open for the customer ({why})"),
            None => say!("locker: cell {cell} open for the customer"),
        }
        self.door(cell, "open").await?;
        self.door(cell, "close").await?;
        self.event(PeerKind::Locker, EventType::PickedUp).await?;
        say!("customer: parcel picked up");

        if s.variant == Variant::QrTwice {
            // back a while later (past the camera's debounce), same code
            self.pump_for(Duration::from_millis(2500)).await;
            say!("customer: shows the same code again");
            self.show_code(&self.good_code.clone()).await?;
            let screen = s
                .camera_dir
                .parent()
                .map(|d| d.join("screen.txt"))
                .unwrap_or_default();
            let deadline = tokio::time::Instant::now() + s.step_timeout;
            loop {
                self.pump_for(Duration::from_millis(100)).await;
                let text = tokio::fs::read_to_string(&screen).await.unwrap_or_default();
                if text.contains("already used") {
                    say!("locker: screen says the code was already used");
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err("the locker's screen never said the code was used".into());
                }
            }
            self.hide_code().await;
            self.pump_for(Duration::from_millis(500)).await;
            let opens = self
                .report
                .events
                .iter()
                .filter(|e| e.event == EventType::CellOpened)
                .count();
            if opens != 2 {
                return Err(format!(
                    "expected the cell opened twice (drop, pickup), saw {opens}"
                ));
            }
        }
        Ok(())
    }

    /// Runs `probe` until it exits 0, handling frames in between; fails after the step timeout.
    async fn wait_ready(&mut self, probe: &ReadyProbe) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.scenario.step_timeout;
        loop {
            let status = tokio::process::Command::new(&probe.program)
                .args(&probe.args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .map_err(|e| format!("cannot run {}: {e}", probe.program.display()))?;
            if status.success() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err("the drone never said it was ready to fly".into());
            }
            self.pump_for(Duration::from_millis(250)).await;
        }
    }

    /// Handles frames for a while (acks, QR verdicts, progress) without waiting for anything.
    async fn pump_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(env)) = tokio::time::timeout_at(deadline, self.frames.recv()).await {
            self.observe(&env);
        }
    }

    fn send(&self, env: Envelope) {
        let _ = self.out.send(env);
    }

    /// Waits for an event from `kind`; returns (state it led to, reason).
    async fn event(
        &mut self,
        from: PeerKind,
        want: EventType,
    ) -> Result<(Option<DroneState>, Option<String>), String> {
        let mut found = None;
        let mut fatal = None;
        self.until(&format!("{want:?} from the {from:?}"), |_, env| {
            if let (Message::Event(e), Some(src)) = (&env.message, &env.source) {
                if src.kind == from && e.event_type == want {
                    found = Some((e.to_state, e.reason.clone()));
                    return true;
                }
                if src.kind == PeerKind::Drone && FATAL.contains(&e.event_type) {
                    fatal = Some(format!(
                        "the drone reported {:?}: {}",
                        e.event_type,
                        e.reason.clone().unwrap_or_default()
                    ));
                    return true;
                }
            }
            false
        })
        .await?;
        match fatal {
            Some(f) => Err(f),
            None => Ok(found.unwrap_or_default()),
        }
    }

    /// Pumps frames (acknowledging events, answering QR validation, printing progress) until
    /// `done` says so or the step times out.
    async fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Self, &Envelope) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.scenario.step_timeout;
        loop {
            let env = tokio::time::timeout_at(deadline, self.frames.recv())
                .await
                .map_err(|_| format!("timed out waiting for {what}"))?
                .ok_or("relay connection task ended")?;
            self.observe(&env);
            if done(self, &env) {
                return Ok(());
            }
        }
    }

    fn observe(&mut self, env: &Envelope) {
        let source = env.source.clone();
        match &env.message {
            Message::Event(e) => {
                if let (Some(id), Some(src)) = (e.event_id, &source) {
                    self.send(Envelope::new(EventAck { event_id: id }).with_target(src.clone()));
                }
                if !e.event_id.is_some_and(|id| self.seen_events.insert(id)) && e.event_id.is_some()
                {
                    self.report.duplicate_events += 1;
                    return; // a re-sent event: acknowledged again, reported once
                }
                let kind = source.map(|s| s.kind).unwrap_or(PeerKind::Relay);
                self.report.events.push(ReportedEvent {
                    source: kind,
                    event: e.event_type,
                    to_state: e.to_state,
                    event_id: e.event_id,
                    seq: e.seq,
                });
                self.report.event_times.push(elapsed_s());
                if e.event_type == EventType::QrRejected {
                    self.report.qr_rejected += 1;
                }
                let who = if kind == PeerKind::Drone {
                    "drone "
                } else {
                    "locker"
                };
                let state = match (e.from_state, e.to_state) {
                    (Some(a), Some(b)) if a != b => format!("  {a:?} → {b:?}"),
                    _ => String::new(),
                };
                let reason = e
                    .reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default();
                let cell = e.cell_id.map(|c| format!(" cell {c}")).unwrap_or_default();
                say!("{who}: {:?}{cell}{state}{reason}", e.event_type);
            }
            Message::Telemetry(t) => {
                let (lat, lon) = (t.position.lat.get(), t.position.lon.get());
                if let Some((plat, plon)) = self.last_pos {
                    self.report.distance_m +=
                        LatLon::new(plat, plon).distance_m(LatLon::new(lat, lon));
                }
                self.last_pos = Some((lat, lon));
                self.report
                    .track
                    .push((elapsed_s(), lat, lon, t.position.alt.get()));
                let pct = t.battery_level.get();
                self.report.min_battery =
                    Some(self.report.min_battery.map_or(pct, |m: f64| m.min(pct)));
                if self.last_print.elapsed() >= Duration::from_secs(1) {
                    self.last_print = Instant::now();
                    say!(
                        "drone : {:<12} {:.6}, {:.6}  alt {:>5.1} m  battery {:>5.1} %  {:?}",
                        t.state.map(|s| format!("{s:?}")).unwrap_or_default(),
                        lat,
                        lon,
                        t.position.alt.get(),
                        pct,
                        t.status
                    );
                }
            }
            Message::QrValidate(q) => {
                let valid = q.qr_data == self.good_code && !self.used_codes.contains(&q.qr_data);
                let reason = if valid {
                    None
                } else if self.used_codes.contains(&q.qr_data) {
                    Some("This code has already been used.".to_owned())
                } else {
                    Some("This code is not valid for this locker.".to_owned())
                };
                if valid {
                    self.used_codes.insert(q.qr_data.clone());
                }
                say!(
                    "backend: QR code {} → {}",
                    q.qr_data,
                    if valid { "valid" } else { "refused" }
                );
                let verdict = QrValidation {
                    request_id: q.request_id,
                    valid,
                    cell_uuid: valid.then_some(self.cell_uuid),
                    order_id: valid.then_some(self.order_id),
                    reason,
                };
                if let Some(src) = source {
                    self.send(Envelope::new(verdict).with_target(src));
                }
            }
            Message::Presence(p) => say!("relay : {:?} {} {:?}", p.peer.kind, p.peer.id, p.status),
            Message::Error(e) => say!("relay : error {}: {}", e.code, e.message),
            _ => {}
        }
    }

    /// Calls the relay's HTTP bridge for the locker.
    async fn bridge(
        &mut self,
        route: &str,
        body: &str,
    ) -> Result<(u16, serde_json::Value), String> {
        let s = &self.scenario;
        let path = format!("/api/lockers/{}/{route}", s.locker_id);
        http_post(s.relay, &path, &s.backend_token, body).await
    }

    async fn door(&mut self, cell: u16, action: &str) -> Result<(), String> {
        let line = format!("door {cell} {action}");
        let reply = control(&self.scenario.lockboard_control, &line).await?;
        if reply.starts_with("err") {
            return Err(format!("lock board refused `{line}`: {reply}"));
        }
        Ok(())
    }

    async fn show_code(&mut self, code: &str) -> Result<(), String> {
        let png = qr_png(code)?;
        let tmp = self.scenario.camera_dir.join(".customer.png.tmp");
        let path = self.scenario.camera_dir.join("customer.png");
        tokio::fs::write(&tmp, png)
            .await
            .map_err(|e| e.to_string())?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| e.to_string())
    }

    async fn hide_code(&mut self) {
        let _ = tokio::fs::remove_file(self.scenario.camera_dir.join("customer.png")).await;
    }
}

/// A QR code as a PNG, big and clean (a phone screen held up to the camera).
pub fn qr_png(code: &str) -> Result<Vec<u8>, String> {
    let qr = qrcode::QrCode::new(code.as_bytes()).map_err(|e| e.to_string())?;
    let width = qr.width() as u32;
    let colors = qr.to_colors();
    let scale = (300 / width).max(2);
    let mut canvas = image::GrayImage::from_pixel(640, 480, image::Luma([255]));
    let (x0, y0) = ((640 - width * scale) / 2, (480 - width * scale) / 2);
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (mx, my) = (i as u32 % width, i as u32 / width);
            for dy in 0..scale {
                for dx in 0..scale {
                    canvas.put_pixel(x0 + mx * scale + dx, y0 + my * scale + dy, image::Luma([0]));
                }
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    canvas
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// One line to the sim lock board's control socket; its one-line answer.
pub async fn control(socket: &std::path::Path, line: &str) -> Result<String, String> {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("lock board control {}: {e}", socket.display()))?;
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.trim().to_owned())
}

/// A minimal HTTP/1.1 POST with a bearer token; returns the status and the JSON body.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, serde_json::Value), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("relay {addr}: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    Ok((
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}
