//! The world a drone-agent test flies in: the sim vehicle (real MAVLink over real UDP or TCP,
//! faster than real time), a scripted backend behind an in-process WebSocket server (the relay's
//! place), and the agent itself — in this process, or as its own binary for kill tests.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod precision;

use futures_util::{SinkExt, StreamExt};
use protocol::ws::{Command, CommandKind, DroneState, Event, EventAck, EventType, Message, Task};
use protocol::Envelope;
use sim::vehicle::{self, Flavour, Transport, VehicleConfig, VehicleHandle};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as Ws;
use uuid::Uuid;

pub const DRONE_ID: &str = "5f0c7a8e-3b1d-4c2a-9e6f-1a2b3c4d5e6f";
pub const TOKEN: &str = "test-token";
/// Sim speed-up: a 300 m delivery takes a few seconds of wall time.
pub const SPEEDUP: f64 = 20.0;
pub const WAIT: Duration = Duration::from_secs(60);

type Outbound = mpsc::UnboundedSender<Option<String>>;

/// The backend's end of the relay: every frame from the agent, in order, across reconnects.
pub struct Backend {
    pub url: String,
    frames: mpsc::UnboundedReceiver<Envelope>,
    current: Arc<Mutex<Option<Outbound>>>,
    /// Acknowledge events as they arrive (on by default).
    pub ack_events: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
    /// Refuse new connections (the TCP connection is dropped before the WebSocket handshake).
    pub refuse: Arc<AtomicBool>,
    /// Every event received, duplicates included, in arrival order.
    pub events: Vec<Event>,
    /// Every other frame received.
    pub others: Vec<Envelope>,
}

impl Backend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws/drone", listener.local_addr().unwrap());
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let current: Arc<Mutex<Option<Outbound>>> = Arc::default();
        let ack_events = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicUsize::new(0));
        let refuse = Arc::new(AtomicBool::new(false));
        let (cur, ack, conns, refusing) = (
            current.clone(),
            ack_events.clone(),
            connections.clone(),
            refuse.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if refusing.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                // as the relay does: small frames go out at once, not after Nagle's wait
                let _ = tcp.set_nodelay(true);
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Option<String>>();
                *cur.lock().unwrap() = Some(out_tx.clone());
                let frames_tx = frames_tx.clone();
                let ack = ack.clone();
                tokio::spawn(async move {
                    let (mut sink, mut stream) = ws.split();
                    loop {
                        tokio::select! {
                            f = stream.next() => match f {
                                Some(Ok(Ws::Text(t))) => {
                                    let Ok(env) = Envelope::from_json(t.as_str()) else { continue };
                                    if let (Message::Event(e), true) = (&env.message, ack.load(Ordering::SeqCst)) {
                                        if let Some(id) = e.event_id {
                                            let _ = out_tx.send(Some(Envelope::new(EventAck { event_id: id }).to_json()));
                                        }
                                    }
                                    let _ = frames_tx.send(env);
                                }
                                Some(Ok(_)) => {}
                                _ => return,
                            },
                            out = out_rx.recv() => match out {
                                Some(Some(text)) => { if sink.send(Ws::text(text)).await.is_err() { return } }
                                _ => return, // cut: drop the socket, no close frame
                            },
                        }
                    }
                });
            }
        });
        Self {
            url,
            frames,
            current,
            refuse,
            ack_events,
            connections,
            events: vec![],
            others: vec![],
        }
    }

    /// Sends to the agent's current connection; false if it has none.
    pub fn send(&self, env: Envelope) -> bool {
        self.send_text(&env.to_json())
    }

    /// Sends any text frame, well-formed or not.
    pub fn send_text(&self, text: &str) -> bool {
        self.current
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|tx| tx.send(Some(text.to_owned())).is_ok())
    }

    /// Drops the agent's connection without a close frame (a dead 4G link).
    /// Returns whether there was a connection to drop.
    pub fn cut(&self) -> bool {
        match self.current.lock().unwrap().take() {
            Some(tx) => tx.send(None).is_ok(),
            None => false,
        }
    }

    pub async fn next(&mut self) -> Envelope {
        let env = tokio::time::timeout(WAIT, self.frames.recv())
            .await
            .expect("a frame from the agent in time")
            .expect("open");
        match &env.message {
            Message::Event(e) => self.events.push(e.clone()),
            _ => self.others.push(env.clone()),
        }
        env
    }

    /// Waits for the first event of `kind` not yet consumed.
    pub async fn event(&mut self, kind: EventType) -> Event {
        if let Some(e) = self.events.iter().find(|e| e.event_type == kind).cloned() {
            return e;
        }
        // one deadline for the whole wait: telemetry keeps arriving, so a per-frame timeout
        // alone would wait forever for an event that never comes
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let env = tokio::time::timeout(left, self.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {kind:?} event within {WAIT:?}; events so far: {:?}",
                        self.events
                            .iter()
                            .map(|e| format!(
                                "{:?}({})",
                                e.event_type,
                                e.reason.as_deref().unwrap_or("")
                            ))
                            .collect::<Vec<_>>()
                    )
                });
            if let Message::Event(e) = env.message {
                if e.event_type == kind {
                    return e;
                }
            }
        }
    }

    /// Waits for a frame matching `pred` (events are logged on the way).
    pub async fn frame(&mut self, mut pred: impl FnMut(&Envelope) -> bool) -> Envelope {
        if let Some(e) = self.others.iter().find(|e| pred(e)).cloned() {
            return e;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let env = tokio::time::timeout(left, self.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no matching frame within {WAIT:?}; events so far: {:?}",
                        self.event_types()
                    )
                });
            if pred(&env) {
                return env;
            }
        }
    }

    pub async fn ack_for(&mut self, cmd_id: Uuid) -> protocol::ws::Ack {
        let env = self
            .frame(|e| matches!(&e.message, Message::Ack(a) if a.cmd_id == cmd_id))
            .await;
        let Message::Ack(a) = env.message else {
            unreachable!()
        };
        a
    }

    /// Sends a command with a fresh id; returns the id.
    pub fn command(&self, kind: CommandKind) -> Uuid {
        let id = Uuid::new_v4();
        assert!(
            self.send(Envelope::new(Command {
                command: kind,
                cmd_id: Some(id),
                delivery_id: None
            })),
            "agent connected"
        );
        id
    }

    /// Waits until the agent is connected (its register frame arrived).
    pub async fn registered(&mut self) {
        self.frame(|e| e.kind() == "register").await;
    }

    /// Waits for a telemetry frame whose agent state satisfies `pred` (frames already received
    /// are not looked at: telemetry is a stream, only a fresh one says what is now).
    pub async fn telemetry_state(
        &mut self,
        mut pred: impl FnMut(DroneState) -> bool,
    ) -> DroneState {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let env = tokio::time::timeout(left, self.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no matching telemetry within {WAIT:?}; events so far: {:?}",
                        self.event_types()
                    )
                });
            if let Message::Telemetry(t) = env.message {
                if let Some(s) = t.state.filter(|s| pred(*s)) {
                    return s;
                }
            }
        }
    }

    /// Event types in order, duplicates (same event_id) removed.
    /// Every event once, with its reason: what a failing test prints.
    /// The events received, each once (a re-sent event keeps its id), in arrival order.
    pub fn unique_events(&self) -> impl Iterator<Item = &Event> {
        let mut seen = std::collections::HashSet::new();
        self.events.iter().filter(move |e| seen.insert(e.event_id))
    }

    pub fn event_story(&self) -> Vec<String> {
        self.unique_events()
            .map(|e| match &e.reason {
                Some(r) => format!("{:?}: {r}", e.event_type),
                None => format!("{:?}", e.event_type),
            })
            .collect()
    }

    pub fn event_types(&self) -> Vec<EventType> {
        self.unique_events().map(|e| e.event_type).collect()
    }
}

pub fn task(dest: (f64, f64)) -> Task {
    serde_json::from_value(serde_json::json!({
        "delivery_id": Uuid::new_v4(),
        "destination": {"lat": dest.0, "lon": dest.1, "aruco_id": 123},
        "priority": "normal"
    }))
    .unwrap()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PX4-flavoured vehicle on loopback at `speedup`, sending to UDP `peer_port` (the agent's
/// `udpin`, or a tap in front of it).
pub async fn px4_vehicle_to(peer_port: u16, speedup: f64) -> VehicleHandle {
    let mut cfg = VehicleConfig::standard(Flavour::Px4);
    cfg.transport = Transport::Udp {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer: SocketAddr::from(([127, 0, 0, 1], peer_port)),
    };
    cfg.speedup = speedup;
    vehicle::spawn(cfg).await.unwrap()
}

/// A vehicle of `flavour` on ephemeral loopback ports, and the connection string for the agent.
pub async fn vehicle(flavour: Flavour) -> (VehicleHandle, String) {
    vehicle_with(flavour, |_| {}).await
}

/// [`vehicle`] with its config (autopilot parameters, timings) edited first.
pub async fn vehicle_with(
    flavour: Flavour,
    edit: impl FnOnce(&mut VehicleConfig),
) -> (VehicleHandle, String) {
    let mut cfg = VehicleConfig::standard(flavour);
    cfg.speedup = SPEEDUP;
    edit(&mut cfg);
    let (transport, connection) = match flavour {
        Flavour::Px4 => {
            let agent_port = free_udp_port();
            (
                Transport::Udp {
                    bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                    peer: SocketAddr::from(([127, 0, 0, 1], agent_port)),
                },
                format!("udpin:127.0.0.1:{agent_port}"),
            )
        }
        Flavour::ArduPilot => (
            Transport::Tcp {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            String::new(),
        ),
    };
    cfg.transport = transport;
    let v = vehicle::spawn(cfg).await.unwrap();
    let connection = if connection.is_empty() {
        format!("tcpout:{}", v.local_addr())
    } else {
        connection
    };
    (v, connection)
}

/// Waits until the sim vehicle would accept arming (GPS fix and estimator settled).
pub async fn arm_ready(v: &VehicleHandle, flavour: Flavour) {
    let p = sim::vehicle::model::Params::for_flavour(flavour);
    let t = p.gps_fix_after_s + p.arm_ready_after_fix_s + 1.0;
    // and the agent is on the link (its HEARTBEATs arrive): a loaded machine can start the
    // agent's process later than the sim's clock runs
    v.wait_for(WAIT, |view| {
        view.gps_fix && view.t_s >= t && view.heartbeats_received > 0
    })
    .await
    .expect("vehicle ready to arm");
}

/// A destination `north_m` metres north of the vehicle's home.
pub fn north_of_home(flavour: Flavour, north_m: f64) -> (f64, f64) {
    let home = VehicleConfig::standard(flavour).home;
    precision::offset((home.0, home.1), north_m, 0.0)
}

/// The agent's config for this world, as TOML (tests edit it before use).
pub fn config_toml(url: &str, connection: &str, state_dir: &Path) -> String {
    format!(
        r#"
[drone]
id = "{DRONE_ID}"
model = "test quad"
state_dir = "{state}"

[cloud]
url = "{url}"
token = "{TOKEN}"
backoff_initial_s = 0.05
backoff_max_s = 0.2
event_resend_s = 1.0
ping_interval_s = 2.0

[flight_controller]
connection = "{connection}"
heartbeat_timeout_ms = 1500
command_timeout_ms = 300
reopen_interval_ms = 200
# the sim runs faster than real time: no real-time settle after the gripper's report
gripper_settle_ms = 0

[flight]
cruise_alt_m = 20.0
drop_alt_m = 4.0
arrive_radius_m = 1.5
alt_tolerance_m = 0.5

[timeouts]
drop_wait_s = 30.0
auto_return_after_drop_s = 0
approach_s = 30.0
cloud_loss_return_s = 2.0
gps_loss_land_s = 3.0
fc_reattach_s = 10.0

[telemetry]
interval_s = 0.2

[payload]
kind = "gripper"
"#,
        state = state_dir.display()
    )
}

pub fn parse_config(text: &str) -> drone_agent::config::DroneConfig {
    daemon::config::parse(text, Path::new("test.toml")).unwrap()
}

/// The agent running in this process.
pub struct InProcessAgent {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessAgent {
    pub fn start(cfg: drone_agent::config::DroneConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(drone_agent::app::run(cfg, async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// SIGTERM's path: save and exit.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }
}

/// One whole world, in-process.
pub struct World {
    pub flavour: Flavour,
    pub vehicle: VehicleHandle,
    pub backend: Backend,
    pub agent: Option<InProcessAgent>,
    pub dir: tempfile::TempDir,
    pub config: String,
}

impl World {
    pub async fn start(flavour: Flavour, edit: impl FnOnce(String) -> String) -> Self {
        let w = Self::start_with(flavour, |_| {}, edit).await;
        arm_ready(&w.vehicle, flavour).await;
        w
    }

    /// A world whose vehicle config is edited first; returns once the agent has registered,
    /// without waiting for the vehicle to be ready to arm.
    pub async fn start_with(
        flavour: Flavour,
        vehicle_edit: impl FnOnce(&mut VehicleConfig),
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let (vehicle, connection) = vehicle_with(flavour, vehicle_edit).await;
        let backend = Backend::start().await;
        let dir = tempfile::tempdir().unwrap();
        let config = edit(config_toml(&backend.url, &connection, dir.path()));
        let agent = Some(InProcessAgent::start(parse_config(&config)));
        let mut w = Self {
            flavour,
            vehicle,
            backend,
            agent,
            dir,
            config,
        };
        w.backend.registered().await;
        w
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Sends a task to a point `north_m` north of home; returns its delivery id.
    pub fn send_task(&self, north_m: f64) -> Uuid {
        let t = task(north_of_home(self.flavour, north_m));
        let id = t.delivery_id;
        assert!(self.backend.send(Envelope::new(t)));
        id
    }

    /// Sends a task `north_m` north of home and waits until the drone has taken off and climbed
    /// past 15 m (where the flight tests start doing things to it); returns the delivery id.
    pub async fn climb_out(&mut self, north_m: f64) -> Uuid {
        let id = self.send_task(north_m);
        self.backend.event(EventType::TookOff).await;
        self.vehicle
            .wait_for(WAIT, |v| v.alt_rel_m > 15.0)
            .await
            .expect("climbing out past 15 m");
        id
    }

    /// Flies the happy path up to WAITING_DROP.
    pub async fn fly_to_locker(&mut self, north_m: f64) -> Uuid {
        let id = self.send_task(north_m);
        self.backend.event(EventType::TaskAssigned).await;
        self.backend.event(EventType::Arrived).await;
        id
    }

    pub async fn stop(mut self) {
        if let Some(a) = self.agent.take() {
            a.stop().await;
        }
    }
}

/// The Python that imports pymavlink: `$SKYPOST_PYTHON`, the checkout's `.venv/bin/python`
/// (`.ci/run` makes it from `tests/requirements.txt`), or `python3`. Where there is none, `None`
/// and a line saying `what` is skipped; under `CI=true` the test fails instead.
pub fn pymavlink_python(what: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("SKYPOST_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    let found = candidates.iter().find(|c| {
        std::process::Command::new(c)
            .args(["-c", "import pymavlink"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        let why = format!("no Python with pymavlink among {candidates:?}");
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true must run {what}: {why}"
        );
        eprintln!("SKIPPED {what}: {why}");
    }
    found.cloned()
}
