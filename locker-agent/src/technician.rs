//! The technician's command line: a Unix socket in the running agent, and the `locker-agent
//! status | cells | open | close | test | events` client commands that use it over SSH.
//!
//! The conventions are the drone agent's (`drone-agent status`/`events`), so one habit serves
//! both machines:
//!
//! - **Access control is the socket file's permissions**: mode 0660, in the service's runtime
//!   directory (`/run/skypost-locker`, mode 0750, owned by the service user, from the unit's
//!   `RuntimeDirectory=`): root and the `skypost-locker` group, nobody else.
//! - **Where**: `[technician] socket` if configured, else `$RUNTIME_DIRECTORY/technician.sock`
//!   (set by systemd), else `technician.sock` in the state directory (an agent started by hand).
//! - **Protocol**: one request line of words (`status`, `cells`, `events`, `open 3`,
//!   `open 3 force`, `close 3`, `service 3`, `service 3 empty`, `test board`, `test camera`),
//!   one JSON reply line, then the agent
//!   closes the connection. A refusal or failure is `{"error": "..."}`. `socat - UNIX:…` works.
//! - **Exit codes** (the client): 0 done; 3 agent not reachable (not running, or no permission
//!   on the socket); 4 a garbled exchange; 5 the agent refused or the operation failed (a cell
//!   holding a parcel without `--force`, a board that does not answer, no camera).
//!
//! Reading commands only read (the cell record, the board's `STATUS`, the camera's counters).
//! `open`/`close` go through [`Locker::technician`], the same path as the API's, so the door
//! monitor, the state file and the events see a technician's open like any other.

use crate::locker::{BoardTest, CellView, Locker, RecentEvent, TechAction};
use crate::scanner::CameraStatus;
use hal::lockboard::LockBoard;
use protocol::locker_api::HealthStatus;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

pub use daemon::technician::SOCKET_NAME;
/// Where the packaged unit puts it (`RuntimeDirectory=skypost-locker`); the client's default.
pub const DEFAULT_SOCKET: &str = "/run/skypost-locker/technician.sock";
/// How long the client waits for a reply: an open waits for the bolt's travel (15 s by default,
/// up to two minutes if configured so), a camera test for a frame.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(150);
/// How long `test camera` waits for the next good frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How many errors `status` lists.
const LAST_ERRORS: usize = 5;

pub use daemon::technician::{bind, socket_path, ClientError};

/// A request, parsed from its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Cells,
    Events,
    Cell {
        action: TechAction,
        number: u16,
        force: bool,
    },
    /// Put a cell back in service after looking at it (`empty`: it holds no parcel).
    Service {
        number: u16,
        empty: bool,
    },
    TestBoard,
    TestCamera,
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let cell = |action, rest: &[&str]| -> Result<Request, String> {
            let (n, force) = match rest {
                [n] => (n, false),
                [n, "force"] => (n, true),
                _ => return Err("expected: open|close <cell number> [force]".into()),
            };
            let number = n
                .parse::<u16>()
                .map_err(|_| format!("{n:?} is not a cell number"))?;
            Ok(Request::Cell {
                action,
                number,
                force,
            })
        };
        match words.as_slice() {
            ["status"] => Ok(Request::Status),
            ["cells"] => Ok(Request::Cells),
            ["events"] => Ok(Request::Events),
            ["open", rest @ ..] => cell(TechAction::Open, rest),
            ["close", rest @ ..] => cell(TechAction::Close, rest),
            ["service", n, rest @ ..] => {
                let empty = match rest {
                    [] => false,
                    ["empty"] => true,
                    _ => return Err("expected: service <cell number> [empty]".into()),
                };
                let number = n
                    .parse::<u16>()
                    .map_err(|_| format!("{n:?} is not a cell number"))?;
                Ok(Request::Service { number, empty })
            }
            ["test", "board"] => Ok(Request::TestBoard),
            ["test", "camera"] => Ok(Request::TestCamera),
            _ => Err(format!(
                "unknown request {line:?}: expected status, cells, events, open N [force], \
                 close N [force], service N [empty], test board or test camera"
            )),
        }
    }

    /// The line the client sends.
    pub fn line(&self) -> String {
        match self {
            Request::Status => "status".into(),
            Request::Cells => "cells".into(),
            Request::Events => "events".into(),
            Request::Cell {
                action,
                number,
                force,
            } => {
                let verb = match action {
                    TechAction::Open => "open",
                    TechAction::Close => "close",
                };
                if *force {
                    format!("{verb} {number} force")
                } else {
                    format!("{verb} {number}")
                }
            }
            Request::Service { number, empty } => {
                if *empty {
                    format!("service {number} empty")
                } else {
                    format!("service {number}")
                }
            }
            Request::TestBoard => "test board".into(),
            Request::TestCamera => "test camera".into(),
        }
    }
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent_version: String,
    /// `ok` or `degraded` (the same verdict as `GET /health`).
    pub state: HealthStatus,
    pub links: Links,
    pub cells: CellsSummary,
    /// Newest last.
    pub last_errors: Vec<RecentEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Links {
    pub cloud: LinkReport,
    pub lock_board: LinkReport,
    /// `None`: no camera configured.
    pub camera: Option<CameraStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    pub ok: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellsSummary {
    /// Cells with a UUID from the backend.
    pub mapped: usize,
    pub empty: usize,
    pub holding_parcel: usize,
    /// Open now (a drop, a pickup or a technician).
    pub open: usize,
    pub out_of_service: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsReport {
    pub cells: Vec<CellView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReport {
    pub done: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsReport {
    pub events: Vec<RecentEvent>,
}

/// `test camera`: the frame itself travels as PNG (base64) so that the technician's client
/// writes it with the technician's permissions wherever they like; the agent writes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraTest {
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub grabbed_at: chrono::DateTime<chrono::Utc>,
    /// Codes read in that frame.
    pub codes: Vec<String>,
    /// Whether there was a sign of a code (grid or finder patterns).
    pub code_in_sight: bool,
    /// Which decoder read it: `grid`, `rqrr`, `rqrr_preprocessed`, `wechat`, `multi_frame`.
    pub stage: Option<String>,
    pub png_base64: String,
}

fn status<B: LockBoard>(locker: &Locker<B>) -> StatusReport {
    let h = locker.health();
    let mut summary = CellsSummary::default();
    for c in locker.cells() {
        summary.mapped += 1;
        if c.contents.holds_parcel() {
            summary.holding_parcel += 1;
        } else {
            summary.empty += 1;
        }
        if c.session.is_some() {
            summary.open += 1;
        }
        if c.out_of_service.is_some() {
            summary.out_of_service += 1;
        }
    }
    let recent = locker.recent_events();
    let mut last_errors: Vec<RecentEvent> = recent
        .into_iter()
        .rev()
        .filter(RecentEvent::is_error)
        .take(LAST_ERRORS)
        .collect();
    last_errors.reverse();
    StatusReport {
        agent_version: format!("locker-agent {}", env!("CARGO_PKG_VERSION")),
        state: h.status,
        links: Links {
            cloud: LinkReport {
                ok: h.cloud.ok,
                detail: h.cloud.detail,
            },
            lock_board: LinkReport {
                ok: h.board.ok,
                detail: h.board.detail,
            },
            camera: locker.camera().map(|c| c.status()),
        },
        cells: summary,
        last_errors,
    }
}

async fn test_camera<B: LockBoard>(locker: &Locker<B>) -> Result<CameraTest, String> {
    let probe = locker
        .camera()
        .ok_or("no camera is configured ([camera] section)")?;
    let snap = probe
        .snapshot(FRAME_TIMEOUT)
        .await
        .map_err(|e| format!("{e} (camera {})", probe.source))?;
    let mut png = std::io::Cursor::new(Vec::new());
    snap.frame
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the frame: {e}"))?;
    use base64::Engine as _;
    Ok(CameraTest {
        source: probe.source.clone(),
        width: snap.frame.width(),
        height: snap.frame.height(),
        grabbed_at: snap.grabbed_at.into(),
        codes: snap.decoded.codes,
        code_in_sight: snap.decoded.hint,
        stage: snap.decoded.stage.map(|s| {
            match s {
                hal::qr::Stage::Rqrr => "rqrr",
                hal::qr::Stage::RqrrPreprocessed => "rqrr_preprocessed",
                hal::qr::Stage::Grid => "grid",
                hal::qr::Stage::WeChat => "wechat",
                hal::qr::Stage::MultiFrame => "multi_frame",
            }
            .to_owned()
        }),
        png_base64: base64::engine::general_purpose::STANDARD.encode(png.into_inner()),
    })
}

/// Serves technicians until the task is dropped (`daemon::technician` moves the lines).
pub async fn serve<B: LockBoard>(listener: UnixListener, locker: Arc<Locker<B>>) {
    daemon::technician::serve(listener, move |line: String| {
        let locker = locker.clone();
        async move { reply(&locker, &line).await }
    })
    .await
}

/// The reply to one request line.
async fn reply<B: LockBoard>(locker: &Locker<B>, request: &str) -> serde_json::Value {
    let error = |e: String| serde_json::json!({ "error": e });
    let value = async {
        let value = match Request::parse(request) {
            Err(e) => error(e),
            Ok(Request::Status) => serde_json::to_value(status(locker))?,
            Ok(Request::Events) => serde_json::to_value(EventsReport {
                events: locker.recent_events(),
            })?,
            Ok(Request::Cells) => match locker.cell_views().await {
                Ok(cells) => serde_json::to_value(CellsReport { cells })?,
                Err(e) => error(format!("cannot read the cells from the board: {e}")),
            },
            Ok(Request::Cell {
                action,
                number,
                force,
            }) => match locker.technician(action, number, force).await {
                Ok(done) => serde_json::to_value(ActionReport { done })?,
                Err(f) => error(f.message),
            },
            Ok(Request::Service { number, empty }) => match locker.service(number, empty).await {
                Ok(done) => serde_json::to_value(ActionReport { done })?,
                Err(f) => error(f.message),
            },
            Ok(Request::TestBoard) => serde_json::to_value(locker.test_board().await)?,
            Ok(Request::TestCamera) => match test_camera(locker).await {
                Ok(t) => serde_json::to_value(t)?,
                Err(e) => error(e),
            },
        };
        Ok::<_, serde_json::Error>(value)
    }
    .await;
    value.unwrap_or_else(|e| error(format!("reply not encodable: {e}")))
}

/// Sends one request and returns the JSON reply (an `{"error"}` reply is [`ClientError::Refused`]).
pub async fn request(path: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    daemon::technician::request(path, &req.line(), REPLY_TIMEOUT).await
}

/// Words for a person, with colour only on a terminal (see [`Paint`]).
pub mod render {
    use super::*;

    /// Colour on a terminal, plain text anywhere else (a pipe, a file, `less`), and never when
    /// `NO_COLOR` is set.
    #[derive(Debug, Clone, Copy)]
    pub struct Paint(pub bool);

    impl Paint {
        pub fn for_stdout() -> Self {
            use std::io::IsTerminal as _;
            Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        }
        fn wrap(&self, code: &str, s: &str) -> String {
            if self.0 {
                format!("\u{1b}[{code}m{s}\u{1b}[0m")
            } else {
                s.to_owned()
            }
        }
        pub fn good(&self, s: &str) -> String {
            self.wrap("32", s)
        }
        pub fn bad(&self, s: &str) -> String {
            self.wrap("31", s)
        }
        fn verdict(&self, ok: bool) -> String {
            if ok {
                self.good("ok")
            } else {
                self.bad("FAULT")
            }
        }
    }

    fn line(out: &mut String, k: &str, v: impl std::fmt::Display) {
        out.push_str(&format!("{k:<14}{v}\n"));
    }

    fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
        t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
    }

    pub fn status(s: &StatusReport, p: Paint) -> String {
        let mut out = String::new();
        line(&mut out, "agent", &s.agent_version);
        line(
            &mut out,
            "state",
            match s.state {
                HealthStatus::Ok => p.good("OK"),
                HealthStatus::Degraded => p.bad("DEGRADED"),
            },
        );
        let link = |l: &LinkReport| {
            format!(
                "{}{}",
                p.verdict(l.ok),
                l.detail
                    .as_ref()
                    .map_or(String::new(), |d| format!(" ({d})"))
            )
        };
        line(&mut out, "cloud", link(&s.links.cloud));
        line(&mut out, "lock board", link(&s.links.lock_board));
        line(
            &mut out,
            "camera",
            match &s.links.camera {
                None => "not configured".to_owned(),
                Some(c) => format!("{} ({})", p.verdict(c.ok), c.detail()),
            },
        );
        let c = &s.cells;
        line(
            &mut out,
            "cells",
            format!(
                "{} mapped: {} empty, {} with a parcel, {} open, {} out of service",
                c.mapped, c.empty, c.holding_parcel, c.open, c.out_of_service
            ),
        );
        if s.last_errors.is_empty() {
            line(&mut out, "last errors", "-");
        }
        for (i, e) in s.last_errors.iter().enumerate() {
            let cell = e.cell.map_or(String::new(), |n| format!(" cell {n}"));
            line(
                &mut out,
                if i == 0 { "last errors" } else { "" },
                format!("{} {}{cell}: {}", time(&e.at), e.event, e.detail),
            );
        }
        out
    }

    pub fn cells(r: &CellsReport, p: Paint) -> String {
        let mut out = format!(
            "{:<5} {:<9} {:<7} {:<9} {:<8} {}\n",
            "cell", "bolt", "door", "contents", "open for", "uuid"
        );
        for c in &r.cells {
            let bolt = if c.bolt == "unlocked" {
                p.bad(&format!("{:<9}", c.bolt))
            } else {
                format!("{:<9}", c.bolt)
            };
            let mut row = format!(
                "{:<5} {bolt} {:<7} {:<9} {:<8} {}",
                c.number,
                c.door,
                c.contents,
                c.session.as_deref().unwrap_or("-"),
                c.cell_uuid.map_or("-".to_owned(), |u| u.to_string())
            );
            if let Some(r) = &c.out_of_service {
                row.push_str(&format!("  OUT OF SERVICE: {r}"));
            }
            out.push_str(row.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn events(r: &EventsReport) -> String {
        let mut out = String::new();
        for e in &r.events {
            let cell = e.cell.map_or("-".to_owned(), |n| n.to_string());
            out.push_str(
                format!("{}  {:<18} {:<4} {}", time(&e.at), e.event, cell, e.detail).trim_end(),
            );
            out.push('\n');
        }
        if r.events.is_empty() {
            out.push_str("(no events since the agent started)\n");
        }
        out
    }

    pub fn board(t: &BoardTest, p: Paint) -> String {
        let mut out = String::new();
        match (t.round_trip_ms, &t.failure) {
            (Some(ms), _) => line(
                &mut out,
                "STATUS",
                format!(
                    "{} in {ms:.1} ms ({} cells reported)",
                    p.good("answered"),
                    t.cells_reported.unwrap_or(0)
                ),
            ),
            (None, e) => line(
                &mut out,
                "STATUS",
                p.bad(&format!("failed: {}", e.as_deref().unwrap_or("no answer"))),
            ),
        }
        line(&mut out, "connected", t.connected);
        line(&mut out, "firmware", t.firmware.as_deref().unwrap_or("-"));
        line(&mut out, "reopens", t.reopens);
        line(&mut out, "garbage lines", t.garbage_lines);
        line(&mut out, "timeouts", t.consecutive_timeouts);
        line(
            &mut out,
            "last error",
            t.last_error.as_deref().unwrap_or("-"),
        );
        out
    }

    pub fn camera(t: &CameraTest, saved: &Path) -> String {
        let mut out = String::new();
        line(&mut out, "camera", &t.source);
        line(
            &mut out,
            "frame",
            format!(
                "{}x{} at {}, saved to {}",
                t.width,
                t.height,
                time(&t.grabbed_at),
                saved.display()
            ),
        );
        let decoded = if t.codes.is_empty() {
            if t.code_in_sight {
                "a code is in sight but could not be read".to_owned()
            } else {
                "no code in sight".to_owned()
            }
        } else {
            format!(
                "{} (by {})",
                t.codes
                    .iter()
                    .map(|c| format!("{c:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.stage.as_deref().unwrap_or("?")
            )
        };
        line(&mut out, "decoded", decoded);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_their_line() {
        for r in [
            Request::Status,
            Request::Cells,
            Request::Events,
            Request::TestBoard,
            Request::TestCamera,
            Request::Cell {
                action: TechAction::Open,
                number: 3,
                force: true,
            },
            Request::Cell {
                action: TechAction::Close,
                number: 12,
                force: false,
            },
            Request::Service {
                number: 4,
                empty: false,
            },
            Request::Service {
                number: 5,
                empty: true,
            },
        ] {
            assert_eq!(Request::parse(&r.line()), Ok(r));
        }
        assert!(Request::parse("open three").is_err());
        assert!(Request::parse("open 3 now").is_err());
        assert!(Request::parse("reboot").is_err());
        assert!(Request::parse("service").is_err());
        assert!(Request::parse("service 4 full").is_err());
    }

    #[test]
    fn socket_path_prefers_the_config() {
        let p = socket_path(Some(Path::new("/x/t.sock")), Path::new("/state"));
        assert_eq!(p, Path::new("/x/t.sock"));
    }
}
