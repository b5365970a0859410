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
//! delivery). Anything else, or a refusal, gets `{"error": "..."}`.
//!
//! `status`, `events` and `preflight` only *read* (watches, and the autopilot's own checks): a
//! technician can never stall the task that owns the state machine. `test release` is the one
//! command that moves hardware; it is logged as a technician action and one runs at a time.

use cloud_link::LinkStatus;
use hal::flight::{FcSnapshot, LinkState};
use hal::flight::{FlightController, LandedState};
use hal::payload::PayloadRelease;
use protocol::ws::DroneState;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Recent events kept for `drone-agent events`.
pub const RECENT_EVENTS: usize = 50;
/// The longest request line accepted; a technician's client sends a word.
const MAX_REQUEST: usize = 256;
/// A client that does not send its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket's file name inside the runtime (or state) directory.
pub const SOCKET_NAME: &str = "technician.sock";
/// Where the packaged unit puts it (`RuntimeDirectory=skypost-drone`); the client's default.
pub const DEFAULT_SOCKET: &str = "/run/skypost-drone/technician.sock";

/// Where the running agent listens: `$RUNTIME_DIRECTORY` (set by systemd from the unit's
/// `RuntimeDirectory=`), else the state directory (an agent started by hand).
pub fn socket_path(state_dir: &Path) -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several directories separated by ':'; ours is the first
        Some(dirs) => {
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            PathBuf::from(first).join(SOCKET_NAME)
        }
        None => state_dir.join(SOCKET_NAME),
    }
}

/// What the runtime publishes after every event it handles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentView {
    pub state: DroneState,
    pub delivery_id: Option<uuid::Uuid>,
    /// Newest last, at most [`RECENT_EVENTS`].
    pub recent: VecDeque<RecentEvent>,
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
            recent: VecDeque::new(),
            last_error: None,
            camera_fault: None,
        }
    }

    /// Records one handled event; `error` marks a refusal.
    pub fn record(&mut self, entry: RecentEvent, error: bool) {
        if error {
            self.last_error = Some(entry.clone());
        }
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(entry);
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
    fn new(checks: Vec<CheckLine>) -> Self {
        Self {
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }
}

/// How long `test release` holds the release open before closing it again.
const RELEASE_HOLD: Duration = Duration::from_secs(2);
/// Replies to commands that move hardware or wait on the autopilot take longer than a read.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server reads from, and the hardware `preflight` and `test release` use.
pub struct Sources<F, P> {
    pub view: watch::Receiver<AgentView>,
    pub fc: watch::Receiver<FcSnapshot>,
    pub cloud: watch::Receiver<LinkStatus>,
    pub controller: Arc<F>,
    pub payload: Arc<P>,
    pub min_takeoff_percent: f64,
    /// A camera is configured (its faults come through [`AgentView::camera_fault`]).
    pub has_camera: bool,
    /// One hardware test at a time.
    pub busy: Arc<tokio::sync::Mutex<()>>,
}

impl<F, P> Clone for Sources<F, P> {
    fn clone(&self) -> Self {
        Self {
            view: self.view.clone(),
            fc: self.fc.clone(),
            cloud: self.cloud.clone(),
            controller: self.controller.clone(),
            payload: self.payload.clone(),
            min_takeoff_percent: self.min_takeoff_percent,
            has_camera: self.has_camera,
            busy: self.busy.clone(),
        }
    }
}

impl<F: FlightController, P: PayloadRelease> Sources<F, P> {
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

    /// Opens the payload release, holds it, closes it. Refused unless on the ground, disarmed,
    /// and not on a delivery.
    pub async fn test_release(&self) -> Result<ChecksReply, String> {
        let state = self.view.borrow().state;
        let (armed, landed) = {
            let s = self.fc.borrow();
            (s.armed, s.landed)
        };
        if !matches!(
            state,
            DroneState::Idle | DroneState::Completed | DroneState::LandedElsewhere
        ) {
            return Err(format!(
                "the drone is {} (a delivery is on): test release only when idle",
                format!("{state:?}").to_uppercase()
            ));
        }
        if armed {
            return Err("the drone is armed: disarm it first".into());
        }
        if matches!(
            landed,
            LandedState::InAir | LandedState::TakingOff | LandedState::Landing
        ) {
            return Err(format!("the autopilot says {landed:?}: only on the ground"));
        }
        let Ok(_turn) = self.busy.try_lock() else {
            return Err("another hardware test is running".into());
        };
        info!(
            action = "test release",
            "technician action: opening the payload release"
        );
        let mut checks = Vec::new();
        let opened = self.payload.release().await;
        checks.push(CheckLine {
            name: "release".into(),
            passed: opened.is_ok(),
            detail: opened.map_or_else(|e| e.to_string(), |()| "opened (confirmed)".into()),
        });
        tokio::time::sleep(RELEASE_HOLD).await;
        let closed = self.payload.close().await;
        checks.push(CheckLine {
            name: "close".into(),
            passed: closed.is_ok(),
            detail: closed.map_or_else(|e| e.to_string(), |()| "closed again".into()),
        });
        let reply = ChecksReply::new(checks);
        info!(
            action = "test release",
            passed = reply.passed,
            "technician action done"
        );
        Ok(reply)
    }
}

impl<F, P> Sources<F, P> {
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
        }
    }
}

/// Binds the socket (replacing a stale one from a previous run) with mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => debug!(path = %path.display(), "removed a stale technician socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves technicians until the task is dropped. Each connection is its own task.
pub async fn serve<F, P>(listener: UnixListener, sources: Sources<F, P>)
where
    F: FlightController + Send + Sync + 'static,
    P: PayloadRelease + Send + Sync + 'static,
{
    if let Ok(addr) = listener.local_addr() {
        info!(socket = ?addr.as_pathname(), "technician socket listening");
    }
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let sources = sources.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &sources).await {
                        debug!(error = %e, "technician connection ended early");
                    }
                });
            }
            Err(e) => {
                // EMFILE and the like: log, wait a little, go on (never a hot loop)
                warn!(error = %e, "technician socket accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn answer<F: FlightController, P: PayloadRelease>(
    stream: UnixStream,
    sources: &Sources<F, P>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let request = line.trim();
    info!(request, "technician request");
    let reply = match request {
        "status" => serde_json::to_string(&sources.status()),
        "events" => serde_json::to_string(&EventsReport {
            events: sources.view.borrow().recent.iter().cloned().collect(),
        }),
        "preflight" => serde_json::to_string(&sources.preflight().await),
        "test release" => match sources.test_release().await {
            Ok(reply) => serde_json::to_string(&reply),
            Err(why) => {
                info!(action = "test release", reason = %why, "technician action refused");
                serde_json::to_string(&serde_json::json!({ "error": why }))
            }
        },
        other => serde_json::to_string(&serde_json::json!({
            "error": format!(
                "unknown request {other:?}: expected status, events, preflight or test release"
            )
        })),
    }
    .map_err(std::io::Error::other)?;
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Client side errors, each with its own exit code (see [`ClientError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path}: {source} (is skypost-drone-agent running? are you in group skypost-drone?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent answered something unreadable: {0}")]
    Reply(#[from] serde_json::Error),
    #[error("the agent refused: {0}")]
    Refused(String),
}

impl ClientError {
    /// 3: agent not reachable (not running, or no permission); 4: protocol trouble; 5: the
    /// agent refused (the same codes as `locker-agent`'s technician commands).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connect { .. } => 3,
            ClientError::Refused(_) => 5,
            _ => 4,
        }
    }
}

/// Sends one request and returns the JSON reply.
pub async fn request(path: &Path, what: &str) -> Result<serde_json::Value, ClientError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{what}\n").as_bytes()).await?;
    let mut line = String::new();
    let mut reader = BufReader::new(read);
    let wait = if what == "status" || what == "events" {
        REQUEST_TIMEOUT
    } else {
        ACTION_TIMEOUT
    };
    tokio::time::timeout(wait, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))??;
    let value: serde_json::Value = serde_json::from_str(line.trim())?;
    if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
        return Err(ClientError::Refused(e.to_owned()));
    }
    Ok(value)
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
