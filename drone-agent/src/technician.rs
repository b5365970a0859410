//! The technician's window into a running agent: a Unix socket, and the `drone-agent status`,
//! `events`, `preflight` and `test release` client commands that use it over SSH.
//!
//! **Access control is the socket file's permissions.** The socket is created mode 0660 inside
//! the service's runtime directory (`/run/skypost-drone`, mode 0750, owned by the service user):
//! root and members of the `skypost-drone` group may use it, nobody else.
//!
//! **Protocol.** One request line, one JSON reply line, then the agent closes the connection:
//! `status` → [`StatusReport`]; `events` → the recent transitions and refusals; `preflight` →
//! [`ChecksReply`] (the autopilot's pre-flight checks plus the cloud link and camera, each pass or
//! fail with what was seen); `test release` → [`ChecksReply`] (open the payload release, hold it
//! open two seconds, close it; refused unless the drone is on the ground, disarmed and not on a
//! delivery); `ready` → `{"state": "IDLE"}` (a drone that landed elsewhere is back in service;
//! refused while armed or in the air). Anything else, or a refusal, gets `{"error": "..."}`.
//!
//! `status`, `events` and `preflight` only *read* (watches, and the autopilot's own checks): a
//! technician can never stall the task that owns the state machine. `test release` and `ready`
//! act, and they act as events of the machine (sent to the agent's task): the machine refuses
//! them when they do not fit, reports them, and a task arriving during a test release is
//! refused, not flown with the release open.

use cloud_link::LinkStatus;
use daemon::ring::Ring;
use hal::flight::FlightController;
use hal::flight::{FcSnapshot, LinkState};
use protocol::ws::DroneState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

/// A technician's request that acts (through the machine).
#[derive(Debug)]
pub enum TechRequest {
    /// `drone-agent ready`: the reply is the new state, or why not.
    Ready(tokio::sync::oneshot::Sender<Result<String, String>>),
    /// `drone-agent test release`.
    TestRelease(tokio::sync::oneshot::Sender<Result<ChecksReply, String>>),
}

/// Recent events kept for `drone-agent events`.
pub const RECENT_EVENTS: usize = 50;
/// How long the client waits for a reply that only reads.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the packaged unit puts it (`RuntimeDirectory=skypost-drone`); the client's default.
pub const DEFAULT_SOCKET: &str = "/run/skypost-drone/technician.sock";

/// Where the running agent listens (`daemon::technician::socket_path`, nothing configured).
pub fn socket_path(state_dir: &Path) -> PathBuf {
    daemon::technician::socket_path(None, state_dir)
}

/// What the runtime publishes after every event it handles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentView {
    pub state: DroneState,
    pub delivery_id: Option<uuid::Uuid>,
    /// Newest last, at most [`RECENT_EVENTS`].
    pub recent: Ring<RecentEvent, RECENT_EVENTS>,
    /// The last refusal or failure the agent reported, if any.
    pub last_error: Option<RecentEvent>,
    /// Why the camera is failed, while it is.
    #[serde(default)]
    pub camera_fault: Option<String>,
}

impl AgentView {
    pub fn new(state: DroneState, delivery_id: Option<uuid::Uuid>) -> Self {
        Self {
            state,
            delivery_id,
            recent: Ring::new(),
            last_error: None,
            camera_fault: None,
        }
    }

    /// Records one handled event; `error` marks a refusal.
    pub fn record(&mut self, entry: RecentEvent, error: bool) {
        if error {
            self.last_error = Some(entry.clone());
        }
        self.recent.push(entry);
    }
}

/// One line of the agent's recent history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecentEvent {
    /// Seconds since the Unix epoch.
    pub at_unix_s: f64,
    /// The machine event's name (`task`, `arrived`, `drop_cargo` ...).
    pub event: String,
    /// `NAVIGATING -> WAITING_DROP`, or the refusal's reason.
    pub detail: String,
}

impl RecentEvent {
    pub fn now(event: &str, detail: String) -> Self {
        Self {
            at_unix_s: unix_s(SystemTime::now()),
            event: event.to_owned(),
            detail,
        }
    }
}

/// `drone-agent status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub agent_version: String,
    pub state: DroneState,
    pub delivery_id: Option<uuid::Uuid>,
    pub flight_controller: FcStatus,
    pub cloud: CloudStatus,
    pub last_error: Option<RecentEvent>,
    /// The ground stations sharing the autopilot's link, with their drop counters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<hal::flight::router::EndpointStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FcStatus {
    /// `connected`, `lost` or `never_connected`.
    pub link: String,
    pub autopilot: String,
    pub armed: bool,
    pub mode: String,
    pub battery_percent: Option<f64>,
    pub battery_voltage: Option<f64>,
    pub gps_fix: String,
    pub satellites: Option<u8>,
    pub lat_deg: Option<f64>,
    pub lon_deg: Option<f64>,
    pub relative_alt_m: Option<f64>,
    pub sensors_healthy: bool,
    pub last_status_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloudStatus {
    pub connected: bool,
    pub detail: String,
}

/// The reply to `events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventsReport {
    pub events: Vec<RecentEvent>,
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One check or step of `preflight` / `test release`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckLine {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The reply to `preflight` and `test release`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChecksReply {
    pub passed: bool,
    pub checks: Vec<CheckLine>,
}

impl ChecksReply {
    pub fn new(checks: Vec<CheckLine>) -> Self {
        Self {
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }
}

/// Replies to commands that move hardware or wait on the autopilot take longer than a read.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server reads from, the autopilot `preflight` asks, and the agent's task the acting
/// requests go to (through its machine).
pub struct Sources<F> {
    pub view: watch::Receiver<AgentView>,
    pub fc: watch::Receiver<FcSnapshot>,
    pub cloud: watch::Receiver<LinkStatus>,
    pub controller: Arc<F>,
    pub min_takeoff_percent: f64,
    /// A camera is configured (its faults come through [`AgentView::camera_fault`]).
    pub has_camera: bool,
    /// `ready` and `test release` go to the task that owns the machine.
    pub agent: mpsc::Sender<TechRequest>,
    /// The ground-station router, when endpoints are configured.
    pub router: Option<Arc<hal::flight::router::Router>>,
}

impl<F> Clone for Sources<F> {
    fn clone(&self) -> Self {
        Self {
            view: self.view.clone(),
            fc: self.fc.clone(),
            cloud: self.cloud.clone(),
            controller: self.controller.clone(),
            min_takeoff_percent: self.min_takeoff_percent,
            has_camera: self.has_camera,
            agent: self.agent.clone(),
            router: self.router.clone(),
        }
    }
}

impl<F: FlightController> Sources<F> {
    /// The autopilot's pre-flight checks, then the agent's own links.
    pub async fn preflight(&self) -> ChecksReply {
        let mut checks = match self
            .controller
            .preflight_check(self.min_takeoff_percent)
            .await
        {
            Ok(r) => r
                .checks
                .into_iter()
                .map(|c| CheckLine {
                    name: c.name.to_owned(),
                    passed: c.passed,
                    detail: c.detail,
                })
                .collect(),
            Err(e) => vec![CheckLine {
                name: "flight_controller".into(),
                passed: false,
                detail: e.to_string(),
            }],
        };
        let cloud = self.cloud.borrow().clone();
        checks.push(CheckLine {
            name: "cloud".into(),
            passed: cloud.is_connected(),
            detail: match &cloud {
                LinkStatus::Connected { .. } => "connected to the relay".into(),
                other => format!("{other:?}"),
            },
        });
        if self.has_camera {
            let fault = self.view.borrow().camera_fault.clone();
            checks.push(CheckLine {
                name: "camera".into(),
                passed: fault.is_none(),
                detail: fault.unwrap_or_else(|| "no fault seen".into()),
            });
        }
        ChecksReply::new(checks)
    }
}

impl<F> Sources<F> {
    /// Opens the payload release, holds it, closes it — as an event of the machine, which
    /// refuses it unless the drone is on the ground with no delivery on (and blocks a task
    /// while it runs). Refused while the autopilot says armed.
    pub async fn test_release(&self) -> Result<ChecksReply, String> {
        let (tx, rx) = oneshot::channel();
        self.agent
            .send(TechRequest::TestRelease(tx))
            .await
            .map_err(|_| "the agent is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the agent ended the test without an answer".to_owned())?
    }

    /// `drone-agent ready`: a drone that landed elsewhere is back in service (refused while
    /// armed or in the air). The reply is the new state.
    pub async fn ready(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.agent
            .send(TechRequest::Ready(tx))
            .await
            .map_err(|_| "the agent is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "the agent ended without an answer".to_owned())?
    }
}

impl<F> Sources<F> {
    pub fn status(&self) -> StatusReport {
        let view = self.view.borrow().clone();
        let fc = self.fc.borrow().clone();
        let cloud = self.cloud.borrow().clone();
        let link = match fc.link {
            LinkState::NeverConnected => "never_connected",
            LinkState::Connected { .. } => "connected",
            LinkState::Lost { .. } => "lost",
        };
        StatusReport {
            agent_version: format!("drone-agent {}", env!("CARGO_PKG_VERSION")),
            state: view.state,
            delivery_id: view.delivery_id,
            flight_controller: FcStatus {
                link: link.to_owned(),
                autopilot: format!("{:?}", fc.autopilot),
                armed: fc.armed,
                mode: format!("{:?}", fc.mode),
                battery_percent: fc.battery_percent,
                battery_voltage: fc.battery_voltage,
                gps_fix: format!("{:?}", fc.gps_fix),
                satellites: fc.satellites,
                lat_deg: fc.position.map(|p| p.lat_deg),
                lon_deg: fc.position.map(|p| p.lon_deg),
                relative_alt_m: fc.position.map(|p| p.alt_rel_m),
                sensors_healthy: fc.healthy,
                last_status_text: fc.last_status_text.clone(),
            },
            cloud: CloudStatus {
                connected: cloud.is_connected(),
                detail: format!("{cloud:?}"),
            },
            last_error: view.last_error,
            endpoints: self.router.as_ref().map(|r| r.stats()).unwrap_or_default(),
        }
    }
}

impl<F: FlightController> Sources<F> {
    /// The reply to one request line.
    pub async fn reply(&self, request: &str) -> serde_json::Value {
        use daemon::technician::refusal;
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.unwrap_or_else(|e| refusal(format!("reply not encodable: {e}")))
        };
        match request {
            "status" => json(serde_json::to_value(self.status())),
            "events" => json(serde_json::to_value(EventsReport {
                events: self.view.borrow().recent.to_vec(),
            })),
            "preflight" => json(serde_json::to_value(self.preflight().await)),
            "test release" => match self.test_release().await {
                Ok(reply) => json(serde_json::to_value(reply)),
                Err(why) => {
                    info!(action = "test release", reason = %why, "technician action refused");
                    refusal(why)
                }
            },
            "ready" => match self.ready().await {
                Ok(state) => serde_json::json!({ "state": state }),
                Err(why) => {
                    info!(action = "ready", reason = %why, "technician action refused");
                    refusal(why)
                }
            },
            other => refusal(format!(
                "unknown request {other:?}: expected status, events, preflight, ready or test release"
            )),
        }
    }
}

/// Serves technicians on `listener` until the task is dropped.
pub async fn serve<F>(listener: UnixListener, sources: Sources<F>)
where
    F: FlightController + Send + Sync + 'static,
{
    daemon::technician::serve(listener, move |line: String| {
        let sources = sources.clone();
        async move { sources.reply(&line).await }
    })
    .await
}

pub use daemon::technician::{bind, ClientError};

/// Sends one request and returns the JSON reply.
pub async fn request(path: &Path, what: &str) -> Result<serde_json::Value, ClientError> {
    let wait = if what == "status" || what == "events" {
        REQUEST_TIMEOUT
    } else {
        ACTION_TIMEOUT
    };
    daemon::technician::request(path, what, wait).await
}

/// `status` for a person: aligned lines, no colour codes (they are never written, so piping to
/// a file or `less` is always clean).
pub fn render_status(s: &StatusReport) -> String {
    let fc = &s.flight_controller;
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18}{v}\n"));
    line("agent", s.agent_version.clone());
    line("state", format!("{:?}", s.state).to_uppercase());
    line(
        "delivery",
        s.delivery_id.map_or("-".to_owned(), |d| d.to_string()),
    );
    line(
        "flight controller",
        format!("{} ({}, {})", fc.link, fc.autopilot, fc.mode),
    );
    line("armed", fc.armed.to_string());
    line(
        "battery",
        format!(
            "{} / {}",
            opt(fc.battery_percent, " %"),
            opt(fc.battery_voltage, " V")
        ),
    );
    line(
        "gps",
        format!(
            "{} ({} satellites)",
            fc.gps_fix,
            fc.satellites.map_or("-".to_owned(), |n| n.to_string())
        ),
    );
    line(
        "position",
        match (fc.lat_deg, fc.lon_deg) {
            (Some(lat), Some(lon)) => {
                format!("{lat:.6}, {lon:.6}, {} rel", opt(fc.relative_alt_m, " m"))
            }
            _ => "-".to_owned(),
        },
    );
    line("sensors healthy", fc.sensors_healthy.to_string());
    if let Some(t) = &fc.last_status_text {
        line("fc says", t.clone());
    }
    line(
        "cloud",
        if s.cloud.connected {
            "connected".to_owned()
        } else {
            format!("down ({})", s.cloud.detail)
        },
    );
    line(
        "last error",
        s.last_error
            .as_ref()
            .map_or("-".to_owned(), |e| format!("{}: {}", e.event, e.detail)),
    );
    for e in &s.endpoints {
        line(
            &format!("gcs {}", e.name),
            format!(
                "{} {:?}{} peers {} in {} out {} dropped {} refused {} bad signature {}",
                e.connection,
                e.mode,
                if e.signed { " signed" } else { "" },
                e.peers,
                e.received,
                e.sent,
                e.dropped,
                e.refused,
                e.bad_signature
            ),
        );
    }
    out
}

/// `events` for a person: one line per event, oldest first.
pub fn render_events(r: &EventsReport) -> String {
    let mut out = String::new();
    for e in &r.events {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp(
            e.at_unix_s.trunc() as i64,
            (e.at_unix_s.fract() * 1e9) as u32,
        )
        .map_or_else(
            || e.at_unix_s.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
        );
        out.push_str(&format!("{at}  {:<20} {}\n", e.event, e.detail));
    }
    if r.events.is_empty() {
        out.push_str("(no events since the agent started)\n");
    }
    out
}

/// `preflight` / `test release` for a person: one line per check, PASS or FAIL first.
pub fn render_checks(r: &ChecksReply) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let mark = if c.passed { "PASS" } else { "FAIL" };
        out.push_str(&format!("{mark}  {:<18}{}\n", c.name, c.detail));
    }
    out.push_str(if r.passed { "all passed\n" } else { "FAILED\n" });
    out
}

/// One flight log for `drone-agent logs`: a `.tlog` of the autopilot link, or the autopilot's
/// own log (`.bin` ArduPilot dataflash, `.ulg` PX4) downloaded after a flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub path: std::path::PathBuf,
    pub bytes: u64,
    /// `tlog`, `bin` or `ulg`.
    pub kind: String,
}

/// The logs in `dir`, oldest first (names start with the flight's time). Read from the folder,
/// not the running agent: the technician lists and copies them (scp) with the agent stopped too.
pub fn list_logs(dir: &std::path::Path) -> std::io::Result<Vec<LogEntry>> {
    let mut out: Vec<LogEntry> = hal::flight::tlog::list(dir)?
        .into_iter()
        .map(|l| LogEntry {
            path: l.path,
            bytes: l.bytes,
            kind: "tlog".into(),
        })
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = match path.extension().and_then(|e| e.to_str()) {
                Some(k @ ("bin" | "ulg")) => k.to_owned(),
                _ => continue,
            };
            let bytes = entry.metadata()?.len();
            out.push(LogEntry { path, bytes, kind });
        }
    }
    out.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    Ok(out)
}

/// `logs` for a person: one line per file, size and path.
pub fn render_logs(dir: &std::path::Path, logs: &[LogEntry]) -> String {
    let mut out = String::new();
    for l in logs {
        out.push_str(&format!(
            "{:<5} {:>10.1} kB  {}\n",
            l.kind,
            l.bytes as f64 / 1000.0,
            l.path.display()
        ));
    }
    if logs.is_empty() {
        out.push_str(&format!("(no flight logs in {})\n", dir.display()));
    }
    out
}
