//! What the locker shows about itself: `/health`, the technician's cell views, board test and
//! actions, and the recent events.

use super::*;

use crate::cells::{Contents, Purpose};
use chrono::Utc;
use hal::lockboard::{BoardError, LockBoard};
use protocol::error::codes;
use protocol::lockboard::{BoltState, CellNumber, DoorState};
use protocol::locker_api::{
    CellOutOfService, CellsCloseRequest, ComponentHealth, HealthResponse, HealthStatus,
};
use protocol::ws::{Event, EventType};
use tracing::{info, warn};
use uuid::Uuid;

/// Events kept for `locker-agent events`.
pub const RECENT_EVENTS: usize = 100;

/// One event the locker sent, as the technician sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecentEvent {
    pub at: chrono::DateTime<Utc>,
    /// The wire name (`cell_opened`, `board_fault`, `technician_action` ...).
    pub event: String,
    pub cell: Option<u16>,
    pub detail: String,
}

impl RecentEvent {
    /// Faults a technician should see under "last errors".
    pub fn is_error(&self) -> bool {
        self.event == "board_fault" || self.detail.starts_with("not checked")
    }
}

/// A technician's `open N` / `close N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TechAction {
    Open,
    Close,
}

/// One cell as `locker-agent cells` shows it: the board's word on bolt and door, the locker's
/// record of what it holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CellView {
    pub number: u16,
    pub cell_uuid: Option<Uuid>,
    /// `locked` / `unlocked`, from the board.
    pub bolt: String,
    /// `open` / `closed`, from the board.
    pub door: String,
    /// `empty`, `parcel`, or `unmapped` (no UUID synced for this number).
    pub contents: String,
    /// Why it is open (`drop`, `pickup`, `service`), if it is.
    pub session: Option<String>,
    pub out_of_service: Option<String>,
}

/// `locker-agent test board`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoardTest {
    /// The STATUS round trip, when it worked.
    pub round_trip_ms: Option<f64>,
    pub cells_reported: Option<usize>,
    /// Why the round trip failed (not `error`: that key is the socket protocol's refusal).
    pub failure: Option<String>,
    pub connected: bool,
    pub firmware: Option<String>,
    pub reopens: u64,
    pub garbage_lines: u64,
    pub consecutive_timeouts: u32,
    pub last_error: Option<String>,
}

impl<B: LockBoard> Locker<B> {
    pub fn health(&self) -> HealthResponse {
        let board = self.board.health().borrow().clone();
        let cloud_ok = self.uplink.connected();
        let board_h = ComponentHealth {
            ok: board.ok(),
            detail: board.last_error.clone().or_else(|| {
                board.firmware.as_ref().map(|f| {
                    let reset = board
                        .last_reset
                        .map(|r| format!(", last reset: {r}"))
                        .unwrap_or_default();
                    format!("firmware {f}{reset}, reopened {} times", board.reopens)
                })
            }),
        };
        // Same shape as the board's entry: ok, and one line a technician can read. A locker
        // without a camera is configured that way, not broken.
        let camera = match self.camera() {
            Some(p) => {
                let st = p.status();
                ComponentHealth {
                    ok: st.ok,
                    detail: Some(st.detail()),
                }
            }
            None => ComponentHealth {
                ok: true,
                detail: Some("not configured".to_owned()),
            },
        };
        let storage_problem = self.storage_problem();
        let storage = ComponentHealth {
            ok: storage_problem.is_none(),
            detail: storage_problem,
        };
        let out_of_service = self.out_of_service();
        HealthResponse {
            status: if board.ok() && camera.ok && storage.ok && out_of_service.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            version: self.settings.version.clone(),
            board: board_h,
            camera: Some(camera),
            cloud: ComponentHealth {
                ok: cloud_ok,
                detail: (!cloud_ok).then(|| "not connected".to_owned()),
            },
            cells: u32::try_from(self.store().cells().len()).unwrap_or(u32::MAX),
            storage: Some(storage),
            out_of_service,
        }
    }

    /// Cells a technician must look at: out of service in the record, or (unmapped cells) a
    /// bolt the agent gave up locking.
    fn out_of_service(&self) -> Vec<CellOutOfService> {
        let mut out: Vec<CellOutOfService> = self
            .store()
            .cells()
            .iter()
            .filter_map(|c| {
                c.out_of_service.as_ref().map(|r| CellOutOfService {
                    cell_id: c.number,
                    reason: format!("out of service: {r}"),
                })
            })
            .collect();
        let retry = self.lock_retry.lock().unwrap_or_else(|p| p.into_inner());
        for (n, r) in retry.iter().filter(|(_, r)| r.gave_up) {
            if !out.iter().any(|c| c.cell_id == *n) {
                out.push(CellOutOfService {
                    cell_id: *n,
                    reason: format!(
                        "out of service: the bolt would not lock after {} attempts",
                        r.attempts
                    ),
                });
            }
        }
        out.sort_by_key(|c| c.cell_id);
        out
    }

    pub(crate) fn remember(&self, ev: &Event) {
        let name = ev.event_type.as_str().to_owned();
        let mut detail = Vec::new();
        if let Some(r) = &ev.reason {
            detail.push(r.clone());
        }
        if let Some(d) = ev.delivery_id {
            detail.push(format!("delivery {d}"));
        }
        if let Some(o) = ev.order_id {
            detail.push(format!("order {o}"));
        }
        let entry = RecentEvent {
            at: ev.timestamp,
            event: name,
            cell: ev.cell_id,
            detail: detail.join("; "),
        };
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }

    /// The latest events, oldest first.
    pub fn recent_events(&self) -> Vec<RecentEvent> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_vec()
    }

    /// Every cell the board drives: bolt and door from a fresh `STATUS`, contents from the record.
    pub async fn cell_views(&self) -> Result<Vec<CellView>, BoardError> {
        let status = self.board.status().await?;
        let store = self.store();
        let mut out: Vec<CellView> = status
            .iter()
            .map(|cs| {
                let n = cs.cell.get();
                let rec = store.by_number(n);
                CellView {
                    number: n,
                    cell_uuid: rec.map(|c| c.cell_uuid),
                    bolt: match cs.bolt {
                        BoltState::Locked => "locked",
                        BoltState::Unlocked => "unlocked",
                    }
                    .into(),
                    door: match cs.door {
                        DoorState::Open => "open",
                        DoorState::Closed => "closed",
                    }
                    .into(),
                    contents: match rec.map(|c| &c.contents) {
                        None => "unmapped".into(),
                        Some(Contents::Empty) => "empty".into(),
                        Some(Contents::Parcel { .. }) => "parcel".into(),
                    },
                    session: rec
                        .and_then(|c| c.session.as_ref())
                        .map(|s| s.purpose.name().to_owned()),
                    out_of_service: rec.and_then(|c| c.out_of_service.clone()),
                }
            })
            .collect();
        out.sort_by_key(|c| c.number);
        Ok(out)
    }

    /// A STATUS round trip, timed, and the driver's health.
    pub async fn test_board(&self) -> BoardTest {
        let started = std::time::Instant::now();
        let result = self.board.status().await;
        let elapsed = started.elapsed();
        let h = self.board.health().borrow().clone();
        let (round_trip_ms, cells_reported, failure) = match result {
            Ok(s) => (Some(elapsed.as_secs_f64() * 1000.0), Some(s.len()), None),
            Err(e) => (None, None, Some(e.to_string())),
        };
        BoardTest {
            round_trip_ms,
            cells_reported,
            failure,
            connected: h.connected,
            firmware: h.firmware,
            reopens: h.reopens,
            garbage_lines: h.garbage_lines,
            consecutive_timeouts: h.consecutive_timeouts,
            last_error: h.last_error,
        }
    }

    /// A technician's `open N` / `close N`. Refused for a cell holding a parcel unless `force`
    /// (a parcel cell opened by mistake is a parcel anyone can take). Logged, and reported to
    /// the backend as a `technician_action` event, whether it worked or not.
    pub async fn technician(
        &self,
        action: TechAction,
        number: u16,
        force: bool,
    ) -> Result<String, ApiFailure> {
        let verb = match action {
            TechAction::Open => "open",
            TechAction::Close => "close",
        };
        let max = self.store().max_cells();
        if number == 0 || number > max {
            return Err(ApiFailure::new(
                400,
                codes::INVALID_PAYLOAD,
                format!("no cell {number}: this board drives cells 1 to {max}"),
            ));
        }
        let record = self.store().by_number(number).cloned();
        if let Some(c) = &record {
            if c.contents.holds_parcel() && !force {
                warn!(
                    cell = number,
                    action = verb,
                    "technician action refused: cell holds a parcel"
                );
                return Err(ApiFailure::new(
                    409,
                    codes::CELL_OCCUPIED,
                    format!("cell {number} holds a parcel: {verb} it anyway with --force"),
                ));
            }
        }
        let forced = force && record.as_ref().is_some_and(|c| c.contents.holds_parcel());
        info!(
            technician = true,
            cell = number,
            action = verb,
            forced,
            "technician action"
        );
        let uuid = record.as_ref().map(|c| c.cell_uuid);
        let result = match (action, uuid) {
            // The door monitor then follows the door like any other open; the session is
            // "service", which leaves the contents as recorded.
            (TechAction::Open, Some(id)) => self
                .open_cell(id, Purpose::Service)
                .await
                .map(|(n, _)| format!("cell {n} is open")),
            (TechAction::Open, None) => Err(ApiFailure::new(
                409,
                codes::CELL_NOT_FOUND,
                format!(
                    "cell {number} has no UUID yet (no sync from the backend): the locker locks                      any bolt that has no reason to be open, so it would close again at once"
                ),
            )),
            (TechAction::Close, Some(id)) => self
                .close(CellsCloseRequest { cell_uuid: id })
                .await
                .map(|r| format!("cell {} is locked", r.cell_id)),
            (TechAction::Close, None) => {
                let cell = CellNumber::new(number)
                    .map_err(|e| ApiFailure::new(400, codes::INVALID_PAYLOAD, e.to_string()))?;
                self.board_close(cell)
                    .await
                    .map(|()| format!("cell {number} is locked"))
                    .map_err(|e| board_failure(&e))
            }
        };
        let mut ev = Self::event(EventType::TechnicianAction, number, uuid);
        ev.reason = Some(match &result {
            Ok(_) if forced => format!("technician {verb} (forced: the cell holds a parcel)"),
            Ok(_) => format!("technician {verb}"),
            Err(f) => format!("technician {verb} failed: {}", f.message),
        });
        self.emit(ev).await;
        result
    }
}
