//! The locker's operations (the HTTP API's and the link's), and the door monitor.
//!
//! Each operation checks the cell with [`CellStore`], records what it is about to do (saved to
//! disk), asks the board, and records the board's answer. A cell is reported open only on the
//! board's `OK`; when the board's answer is uncertain (timeout, reset, unplugged mid-command) the
//! board's own `STATUS` decides.
//!
//! The door monitor ([`Locker::run_monitor`]) follows the doors the board reports (`DOOR` lines
//! and a periodic `STATUS`) and ends sessions: door opened then closed → lock the bolt → the
//! parcel is in (drop) or out (pickup). It also re-locks any bolt the board reports pulled for a
//! cell that has no session (a late `OK`, a board that rebooted), so a door is never left unlocked.

use crate::cells::{CellError, CellStore, Contents, Purpose, Session};
use crate::scanner::CameraProbe;
use crate::screen::{self, Message};
use crate::uplink::{QrValidator, Uplink, ValidateError};
use chrono::Utc;
use hal::display::Display;
use hal::lockboard::{BoardError, BoardEvent, LockBoard};
use protocol::error::codes;
use protocol::lockboard::{BoltState, CellNumber, CellStatus, DoorState};
use protocol::locker_api::{
    CellOutOfService, CellsCloseRequest, CellsCloseResponse, CellsOpenRequest, CellsOpenResponse,
    CellsSyncRequest, CellsSyncResponse, ComponentHealth, HealthResponse, HealthStatus,
    QrScanResponse,
};
use protocol::ws::{Event, EventType};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{error, info, warn, Instrument};
use uuid::Uuid;

/// A refused operation: HTTP status, wire error code, words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiFailure {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

/// Codes the protocol crate does not name (locker-only).
pub mod extra_codes {
    pub const CELL_EMPTY: &str = "CELL_EMPTY";
    pub const CELL_OUT_OF_SERVICE: &str = "CELL_OUT_OF_SERVICE";
    pub const DOOR_OPEN: &str = "DOOR_OPEN";
    pub const VALIDATION_UNAVAILABLE: &str = "VALIDATION_UNAVAILABLE";
    /// The locker cannot record what it does (full or failing disk): it opens nothing.
    pub const STORAGE_FAILED: &str = "STORAGE_FAILED";
    /// Too many failed QR scans from one source: it is backing off.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
}

/// Where a scanned code came from: failed scans are limited per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanSource {
    /// The locker's own camera.
    Camera,
    /// `POST /api/qr/scan`, by the peer's address (`None`: not known).
    Api(Option<std::net::IpAddr>),
    /// A `locker_request` over the relay link (the backend).
    Link,
}

impl std::fmt::Display for ScanSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanSource::Camera => write!(f, "the camera"),
            ScanSource::Api(Some(ip)) => write!(f, "API client {ip}"),
            ScanSource::Api(None) => write!(f, "an API client"),
            ScanSource::Link => write!(f, "the relay link"),
        }
    }
}

/// How failed QR scans are limited: `free` failures per source within `window` are answered
/// as usual; past that the source is refused without asking the backend for `backoff`,
/// doubling with each further burst up to `backoff_max`. A scan that opens a cell resets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanLimit {
    pub free: u32,
    pub window: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for ScanLimit {
    fn default() -> Self {
        Self {
            free: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// One source's recent failed scans.
#[derive(Debug, Default)]
struct ScanGate {
    failures: VecDeque<tokio::time::Instant>,
    blocked_until: Option<tokio::time::Instant>,
    /// Bursts in a row (the backoff doubles with each).
    level: u32,
    /// Scans refused while backing off, since the burst was reported.
    refused: u64,
}

/// Sources remembered at most (an attacker with many addresses cannot grow memory).
const SCAN_SOURCES: usize = 1024;

impl From<CellError> for ApiFailure {
    fn from(e: CellError) -> Self {
        let (status, code) = match &e {
            CellError::NotFound(_) => (404, codes::CELL_NOT_FOUND),
            CellError::Busy { .. } => (409, codes::CELL_BUSY),
            CellError::Occupied { .. } | CellError::WouldOrphan { .. } => {
                (409, codes::CELL_OCCUPIED)
            }
            CellError::NoParcel { .. } => (409, extra_codes::CELL_EMPTY),
            CellError::OutOfService { .. } => (409, extra_codes::CELL_OUT_OF_SERVICE),
            CellError::BadMapping(_) => (400, codes::INVALID_PAYLOAD),
            CellError::CodeUsed => (409, codes::QR_ALREADY_USED),
            CellError::Persist { .. } | CellError::Missing { .. } => {
                (503, extra_codes::STORAGE_FAILED)
            }
        };
        ApiFailure::new(status, code, e.to_string())
    }
}

fn board_failure(e: &BoardError) -> ApiFailure {
    match e {
        BoardError::Refused {
            code: protocol::lockboard::BoardErrorCode::DoorOpen,
            ..
        } => ApiFailure::new(409, extra_codes::DOOR_OPEN, e.to_string()),
        BoardError::Refused { .. } | BoardError::Unexpected { .. } => {
            ApiFailure::new(502, codes::BOARD_ERROR, e.to_string())
        }
        _ => ApiFailure::new(503, codes::BOARD_UNAVAILABLE, e.to_string()),
    }
}

/// Whether a failed command may still have moved the bolt (only `STATUS` can tell).
fn uncertain(e: &BoardError) -> bool {
    matches!(
        e,
        BoardError::Timeout { .. } | BoardError::Reset { .. } | BoardError::Disconnected { .. }
    )
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub locker_id: Uuid,
    /// A bolt pulled for this long with its door never opened is locked again.
    pub open_timeout: Duration,
    /// How often the monitor asks the board for `STATUS`.
    pub poll_interval: Duration,
    pub version: String,
    /// A bolt the board refuses to lock (jammed) is tried again after this, doubling up to
    /// `lock_retry_max`, `lock_attempts` times in all; then the agent gives up until a
    /// technician's `service N`.
    pub lock_retry: Duration,
    pub lock_retry_max: Duration,
    pub lock_attempts: u32,
    pub scan_limit: ScanLimit,
}

/// Events held in memory while the outbox cannot take them (a full disk), oldest first. Past
/// this the oldest are dropped, logged: the board's state is still reconciled on recovery.
const EVENT_BACKLOG: usize = 1000;

/// A cell whose bolt the board refused to lock: when to try again, and whether we gave up.
#[derive(Debug, Clone)]
struct LockRetry {
    attempts: u32,
    next: tokio::time::Instant,
    gave_up: bool,
}

/// Why the monitor did not lock a bolt.
#[derive(Debug)]
enum LockFailure {
    /// The board refused (jammed): retried later, with backoff, a bounded number of times.
    Refused,
    /// Not tried now (backing off, or given up until a technician looks).
    Waiting,
    /// The board did not answer for sure (timeout, unplugged): tried again on the next poll.
    Uncertain(BoardError),
}

pub struct Locker<B> {
    board: B,
    store: Mutex<CellStore>,
    settings: Settings,
    uplink: Arc<dyn Uplink>,
    validator: Option<Arc<dyn QrValidator>>,
    display: Arc<dyn Display>,
    /// Cells with a board command in flight: the monitor leaves them alone.
    in_flight: Mutex<std::collections::HashMap<u16, u32>>,
    /// Cells whose door we already reported open without a session (report once).
    stray_open: Mutex<HashSet<u16>>,
    /// Cells whose door is open as far as we reported: `door_closed` goes out once per closing,
    /// from whichever sees it first (the board's `DOOR` line or a `STATUS`), and always before
    /// what the closing leads to (`parcel_loaded`, `picked_up`).
    doors_open: Mutex<HashSet<u16>>,
    /// The camera loop, once it runs (for `/health` and the technician).
    camera: Mutex<Option<CameraProbe>>,
    /// The latest events sent, newest last (`locker-agent events`).
    recent: Mutex<VecDeque<RecentEvent>>,
    /// Bumped whenever a bolt command finishes: a `STATUS` asked for before that is stale and
    /// must not be acted on (it would show a bolt that has since moved in its old place).
    epoch: std::sync::atomic::AtomicU64,
    /// Events the outbox could not take yet, oldest first (sent in order before any new one).
    backlog: tokio::sync::Mutex<VecDeque<Event>>,
    /// Why the outbox last refused an event, while the backlog is not empty (for `/health`).
    backlog_error: Mutex<Option<(usize, String)>>,
    /// Bolts the board refused to lock, per cell.
    lock_retry: Mutex<HashMap<u16, LockRetry>>,
    /// Failed QR scans per source.
    scans: Mutex<HashMap<ScanSource, ScanGate>>,
}

impl<B: LockBoard> Locker<B> {
    pub fn new(
        board: B,
        store: CellStore,
        settings: Settings,
        uplink: Arc<dyn Uplink>,
        validator: Option<Arc<dyn QrValidator>>,
        display: Arc<dyn Display>,
    ) -> Self {
        let me = Self {
            board,
            store: Mutex::new(store),
            settings,
            uplink,
            validator,
            display,
            in_flight: Mutex::new(std::collections::HashMap::new()),
            stray_open: Mutex::new(HashSet::new()),
            doors_open: Mutex::new(HashSet::new()),
            camera: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
            epoch: std::sync::atomic::AtomicU64::new(0),
            backlog: tokio::sync::Mutex::new(VecDeque::new()),
            backlog_error: Mutex::new(None),
            lock_retry: Mutex::new(HashMap::new()),
            scans: Mutex::new(HashMap::new()),
        };
        me.show(&Message::Idle);
        me
    }

    pub fn board(&self) -> &B {
        &self.board
    }

    /// Tells the locker about its camera loop (a later call replaces it: a restarted loop).
    pub fn attach_camera(&self, probe: CameraProbe) {
        *self.camera.lock().unwrap_or_else(|p| p.into_inner()) = Some(probe);
    }

    /// The camera loop, if one is running.
    pub fn camera(&self) -> Option<CameraProbe> {
        self.camera
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn store(&self) -> MutexGuard<'_, CellStore> {
        // A panic while holding the lock cannot leave the store half-changed on disk (every
        // change is saved whole), so the in-memory copy is still the best we have.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn show(&self, m: &Message) {
        if let Err(e) = self.display.show(&screen::render(m)) {
            warn!(error = %e, "display write failed");
        }
    }

    /// Reports an event. One the outbox cannot take (a full disk) is held in memory and sent,
    /// in order, before any later one as soon as the outbox takes events again.
    async fn emit(&self, ev: Event) {
        self.remember(&ev);
        let mut backlog = self.backlog.lock().await;
        if backlog.len() >= EVENT_BACKLOG {
            if let Some(old) = backlog.pop_front() {
                error!(event_type = ?old.event_type, cell = ?old.cell_id, capacity = EVENT_BACKLOG,
                    "events held back while the outbox fails: the oldest is dropped");
            }
        }
        backlog.push_back(ev);
        self.flush(&mut backlog).await;
    }

    /// Hands held-back events to the outbox, oldest first, until it refuses one.
    async fn flush(&self, backlog: &mut VecDeque<Event>) {
        let mut sent = 0usize;
        while let Some(ev) = backlog.front() {
            let t = ev.event_type;
            match self.uplink.publish_event(ev.clone()).await {
                Ok(()) => {
                    backlog.pop_front();
                    sent += 1;
                }
                Err(e) => {
                    let mut held = self.backlog_error.lock().unwrap_or_else(|p| p.into_inner());
                    if held.is_none() {
                        error!(event_type = ?t, held = backlog.len(), error = %e,
                            "event could not be queued for the backend; held in memory");
                    } else {
                        // every poll retries: once at ERROR is enough
                        tracing::debug!(event_type = ?t, held = backlog.len(), error = %e, "outbox still refuses events");
                    }
                    *held = Some((backlog.len(), e.to_string()));
                    return;
                }
            }
        }
        let was = self
            .backlog_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if was.is_some() && sent > 0 {
            info!(
                sent,
                "events held back during an outbox failure are queued now"
            );
        }
    }

    /// After a storage failure: saves the cell state again and queues the events held back.
    /// Called on every poll, so the locker heals by itself once the disk takes writes again.
    async fn recover_storage(&self) {
        let saved = self.store().retry_save();
        if let Ok(true) = saved {
            warn!(
                "the cell state is saved again after a storage failure; reconciling with the board"
            );
        }
        if self
            .backlog_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            let mut backlog = self.backlog.lock().await;
            self.flush(&mut backlog).await;
        }
    }

    /// Why the locker cannot record what it does right now, if it cannot.
    pub fn storage_problem(&self) -> Option<String> {
        let unsaved = self.store().unsaved().map(|e| e.to_owned());
        let held = self
            .backlog_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match (unsaved, held) {
            (None, None) => None,
            (Some(e), None) => Some(format!("cell state not saved: {e}")),
            (None, Some((n, e))) => Some(format!("{n} event(s) held in memory: {e}")),
            (Some(e), Some((n, _))) => Some(format!(
                "cell state not saved: {e}; {n} event(s) held in memory"
            )),
        }
    }

    fn event(kind: EventType, number: u16, uuid: Option<Uuid>) -> Event {
        let mut ev = Event::new(kind);
        ev.cell_id = Some(number);
        ev.cell_uuid = uuid;
        ev
    }

    /// A copy of the cells (for status tools and tests).
    pub fn cells(&self) -> Vec<crate::cells::Cell> {
        self.store().cells().to_vec()
    }

    pub async fn sync(&self, req: CellsSyncRequest) -> Result<CellsSyncResponse, ApiFailure> {
        let n = self.store().sync(&req.cells)?;
        info!(cells = n, "cell mapping synced");
        Ok(CellsSyncResponse {
            success: true,
            synced: u32::try_from(n).unwrap_or(u32::MAX),
        })
    }

    pub async fn open(&self, req: CellsOpenRequest) -> Result<CellsOpenResponse, ApiFailure> {
        let purpose = match req.delivery_id {
            Some(d) => Purpose::Drop {
                delivery_id: Some(d),
            },
            None => Purpose::Service,
        };
        let (number, opened_at) = self.open_cell(req.cell_uuid, purpose).await?;
        Ok(CellsOpenResponse {
            success: true,
            cell_id: number,
            opened_at,
        })
    }

    /// Records the session, pulls the bolt, and believes only the board.
    async fn open_cell(
        &self,
        id: Uuid,
        purpose: Purpose,
    ) -> Result<(u16, chrono::DateTime<Utc>), ApiFailure> {
        let number = self.store().by_uuid(id)?.number;
        // Fail closed: a cell opened now could not be followed on disk. Try to heal first (the
        // disk may be back since the last poll).
        self.recover_storage().await;
        if let Some(problem) = self.storage_problem() {
            warn!(cell = number, %problem, "open refused: the locker cannot record what it does");
            return Err(ApiFailure::new(
                503,
                extra_codes::STORAGE_FAILED,
                format!("the locker cannot record what it does, so it opens nothing: {problem}"),
            ));
        }
        // In flight from before the session is recorded until its outcome is: the door monitor
        // must never judge a half-recorded session by a STATUS taken meanwhile.
        let _flight = InFlight::new(self, number);
        let number = self.store().begin(id, purpose.clone())?;
        let span = tracing::info_span!("open_cell", cell = number, purpose = purpose.name());
        async {
            let cell = CellNumber::new(number)
                .map_err(|e| ApiFailure::new(500, codes::INTERNAL, e.to_string()))?;
            let result = self.board.open(cell).await;
            let result = match result {
                Ok(()) => Ok(()),
                Err(e) if uncertain(&e) => {
                    // The bolt may have moved anyway: ask the board, never guess.
                    match self.board.status().await {
                        Ok(s) if bolt_of(&s, cell) == Some(BoltState::Unlocked) => {
                            warn!(error = %e, "open was not acknowledged, but the board reports the bolt pulled");
                            Ok(())
                        }
                        _ => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    // The bolt is pulled whether or not this is saved: say so (a failed save
                    // is retried and shows in /health).
                    let at = self.store().opened(number);
                    info!("cell open");
                    let mut ev = Self::event(EventType::CellOpened, number, Some(id));
                    match &purpose {
                        Purpose::Drop { delivery_id } => ev.delivery_id = *delivery_id,
                        Purpose::Pickup { order_id, .. } => ev.order_id = *order_id,
                        Purpose::Service => ev.reason = Some("opened through the API without a delivery".into()),
                    }
                    self.emit(ev).await;
                    Ok((number, at))
                }
                Err(e) => {
                    warn!(error = %e, "board did not open the cell");
                    self.store().abandon(number);
                    let mut ev = Self::event(EventType::BoardFault, number, Some(id));
                    ev.reason = Some(format!("cell {number}: {e}"));
                    if jammed(&e) {
                        // A bolt that jams once is a bolt a technician must look at.
                        let why = format!("bolt jammed on open: {e}");
                        error!(cell = number, error = %e, "jammed bolt: cell out of service until a technician's `service {number}`");
                        self.store().set_out_of_service(number, Some(why));
                        ev.reason = Some(format!(
                            "cell {number} out of service: {e}; a technician must check it and run `locker-agent service {number}`"
                        ));
                    }
                    self.emit(ev).await;
                    Err(board_failure(&e))
                }
            }
        }
        .instrument(span)
        .await
    }

    pub async fn close(&self, req: CellsCloseRequest) -> Result<CellsCloseResponse, ApiFailure> {
        let number = self.store().by_uuid(req.cell_uuid)?.number;
        let cell = CellNumber::new(number)
            .map_err(|e| ApiFailure::new(500, codes::INTERNAL, e.to_string()))?;
        let _flight = InFlight::new(self, number);
        self.board
            .close(cell)
            .await
            .map_err(|e| board_failure(&e))?;
        let closed_at = Utc::now();
        // Closing through the API ends a session whose door was used, and abandons one whose
        // door never opened (the backend gave up on it).
        let seen = self
            .store()
            .by_number(number)
            .and_then(|c| c.session.as_ref().map(|s| s.door_seen_open));
        match seen {
            Some(true) => self.finish(number).await,
            Some(false) => {
                self.store().abandon(number);
            }
            None => {}
        }
        self.lock_retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&number);
        self.emit(Self::event(
            EventType::CellClosed,
            number,
            Some(req.cell_uuid),
        ))
        .await;
        if let Some(problem) = self.store().unsaved().map(str::to_owned) {
            // The board did its part: say exactly that, and that the record is behind.
            return Err(ApiFailure::new(
                503,
                extra_codes::STORAGE_FAILED,
                format!(
                    "cell {number} is locked (the board confirmed it at {}), but the locker could not record it ({problem}); it keeps it in memory and saves it once the disk takes writes",
                    closed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
            ));
        }
        Ok(CellsCloseResponse {
            success: true,
            cell_id: number,
            closed_at,
        })
    }

    /// A customer's code over the relay link (`locker_request`).
    pub async fn qr_scan(&self, code: &str) -> Result<QrScanResponse, ApiFailure> {
        self.qr_scan_from(code, ScanSource::Link).await
    }

    /// A customer's code from `source`. Failed scans are limited per source
    /// ([`ScanLimit`]): a source that keeps failing is refused (429 `RATE_LIMITED`) without the
    /// backend being asked, and each burst is reported as a `qr_rejected` event.
    pub async fn qr_scan_from(
        &self,
        code: &str,
        source: ScanSource,
    ) -> Result<QrScanResponse, ApiFailure> {
        if let Some(wait) = self.scan_blocked(source) {
            self.show(&Message::Unavailable);
            return Err(ApiFailure::new(
                429,
                extra_codes::RATE_LIMITED,
                format!(
                    "too many failed scans from {source}: try again in {:.0} s",
                    wait.as_secs_f64().ceil()
                ),
            ));
        }
        let r = self.qr_scan_checked(code).await;
        match &r {
            Ok(_) => self.scan_succeeded(source),
            Err(f) if counts_as_failed_scan(f) => self.scan_failed(source, f).await,
            Err(_) => {}
        }
        r
    }

    /// How long `source` must still wait, if it is backing off.
    fn scan_blocked(&self, source: ScanSource) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        let mut scans = self.scans.lock().unwrap_or_else(|p| p.into_inner());
        let gate = scans.get_mut(&source)?;
        let until = gate.blocked_until.filter(|u| *u > now)?;
        gate.refused += 1;
        Some(until - now)
    }

    fn scan_succeeded(&self, source: ScanSource) {
        self.scans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source);
    }

    async fn scan_failed(&self, source: ScanSource, f: &ApiFailure) {
        let limit = self.settings.scan_limit;
        let now = tokio::time::Instant::now();
        let burst = {
            let mut scans = self.scans.lock().unwrap_or_else(|p| p.into_inner());
            if scans.len() >= SCAN_SOURCES && !scans.contains_key(&source) {
                // Forget the quietest sources first: those with nothing in the window.
                scans.retain(|_, g| {
                    g.failures
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < limit.window)
                });
                if scans.len() >= SCAN_SOURCES {
                    return; // all busy: the newcomer is not tracked (bounded memory first)
                }
            }
            let gate = scans.entry(source).or_default();
            while gate
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limit.window)
            {
                gate.failures.pop_front();
            }
            if gate.failures.is_empty() && gate.blocked_until.is_none_or(|u| u <= now) {
                gate.level = 0; // a quiet window: start over
            }
            gate.failures.push_back(now);
            if gate.failures.len() > limit.free as usize {
                gate.level += 1;
                let backoff = limit
                    .backoff
                    .saturating_mul(1 << (gate.level - 1).min(16))
                    .min(limit.backoff_max);
                gate.blocked_until = Some(now + backoff);
                let n = gate.failures.len();
                gate.failures.clear();
                let refused = std::mem::take(&mut gate.refused);
                Some((n, backoff, gate.level, refused))
            } else {
                None
            }
        };
        if let Some((n, backoff, level, refused)) = burst {
            warn!(%source, failed = n, backoff_s = backoff.as_secs_f64(), level, refused_meanwhile = refused,
                last = %f.message, "burst of failed QR scans: backing off");
            let mut ev = Event::new(EventType::QrRejected);
            ev.reason = Some(format!(
                "burst of failed scans from {source}: {n} within {:.0} s (last: {}); refusing scans from it for {:.0} s",
                limit.window.as_secs_f64(),
                f.message,
                backoff.as_secs_f64()
            ));
            self.emit(ev).await;
        }
    }

    async fn qr_scan_checked(&self, code: &str) -> Result<QrScanResponse, ApiFailure> {
        let code = code.trim();
        if code.is_empty() || code.len() > 2048 {
            return Err(ApiFailure::new(
                400,
                codes::INVALID_PAYLOAD,
                "qr_data must be 1 to 2048 characters",
            ));
        }
        if self.store().code_used(code) {
            self.show(&Message::AlreadyUsed);
            return Err(CellError::CodeUsed.into());
        }
        let Some(validator) = &self.validator else {
            self.show(&Message::Unavailable);
            return Err(ApiFailure::new(
                503,
                extra_codes::VALIDATION_UNAVAILABLE,
                "no QR validation is configured (cloud link)",
            ));
        };
        self.show(&Message::Checking);
        let verdict = match validator.validate(code).await {
            Ok(v) => v,
            Err(e) => {
                // The customer is told to try again; the backend hears that a code could not
                // be checked (as a rejection whose reason says so: the protocol has no event
                // for "not checked"), and nothing opens.
                error!(error = %e, "QR code could not be validated");
                self.show(&Message::Unavailable);
                let mut ev = Event::new(EventType::QrRejected);
                ev.reason = Some(format!("not checked: {e}"));
                self.emit(ev).await;
                let status = if matches!(e, ValidateError::Timeout(_)) {
                    504
                } else {
                    503
                };
                return Err(ApiFailure::new(
                    status,
                    extra_codes::VALIDATION_UNAVAILABLE,
                    e.to_string(),
                ));
            }
        };
        let cell_uuid = match (verdict.valid, verdict.cell_uuid) {
            (true, Some(c)) => c,
            (valid, _) => {
                let reason = verdict
                    .reason
                    .clone()
                    .unwrap_or_else(|| screen::DEFAULT_REJECTION.to_owned());
                self.show(&Message::Rejected {
                    reason: reason.clone(),
                });
                let mut ev = Event::new(EventType::QrRejected);
                ev.order_id = verdict.order_id;
                ev.reason = Some(reason.clone());
                self.emit(ev).await;
                let msg = if valid {
                    "the backend accepted the code but named no cell".to_owned()
                } else {
                    reason
                };
                return Err(ApiFailure::new(403, codes::QR_INVALID, msg));
            }
        };
        let purpose = Purpose::Pickup {
            order_id: verdict.order_id,
            code: code.to_owned(),
        };
        match self.open_cell(cell_uuid, purpose).await {
            Ok((number, opened_at)) => {
                self.show(&Message::CellOpen { cell: number });
                Ok(QrScanResponse {
                    success: true,
                    cell_id: number,
                    order_id: verdict.order_id,
                    opened_at,
                })
            }
            Err(f) => {
                if f.code == codes::QR_ALREADY_USED {
                    self.show(&Message::AlreadyUsed);
                } else {
                    self.show(&Message::OutOfOrder {
                        detail: f.message.clone(),
                    });
                }
                Err(f)
            }
        }
    }

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

    /// Follows the doors until the board driver stops. Run it on its own task.
    pub async fn run_monitor(self: Arc<Self>) {
        let mut events = self.board.events();
        let mut tick = tokio::time::interval(self.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(BoardEvent::Door { cell, door }) => self.door_event(cell, door).await,
                    Ok(BoardEvent::Ready { firmware, reason }) => {
                        let mut e = Event::new(EventType::BoardRecovered);
                        let why = reason.map(|r| format!(" ({r} reset)")).unwrap_or_default();
                        e.reason = Some(format!("board (re)started{why}, firmware {firmware}"));
                        self.emit(e).await;
                        self.poll().await;
                    }
                    Ok(BoardEvent::Connected) => self.poll().await,
                    Ok(BoardEvent::Disconnected { reason }) => {
                        let mut e = Event::new(EventType::BoardFault);
                        e.reason = Some(reason);
                        self.emit(e).await;
                        self.show(&Message::OutOfOrder { detail: "lock board offline".into() });
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "door monitor fell behind; polling the board");
                        self.poll().await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.poll().await,
            }
        }
    }

    async fn door_event(&self, cell: CellNumber, door: DoorState) {
        let number = cell.get();
        let uuid = self.store().by_number(number).map(|c| c.cell_uuid);
        match door {
            DoorState::Open => {
                self.saw_open(number, uuid).await;
            }
            DoorState::Closed => {
                self.saw_closed(number, uuid).await;
                // The board's STATUS decides what happens next.
                self.poll().await;
            }
        }
    }

    async fn saw_closed(&self, number: u16, uuid: Option<Uuid>) {
        let was_open = self
            .doors_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&number);
        if was_open {
            self.emit(Self::event(EventType::DoorClosed, number, uuid))
                .await;
        }
    }

    async fn saw_open(&self, number: u16, uuid: Option<Uuid>) {
        self.doors_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number);
        let has_session = self
            .store()
            .by_number(number)
            .is_some_and(|c| c.session.is_some());
        if has_session {
            let first = self.store().door_opened(number);
            if first {
                self.emit(Self::event(EventType::DoorOpened, number, uuid))
                    .await
            }
        } else {
            let first = self
                .stray_open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(number);
            if first {
                warn!(cell = number, "door open with no open session");
                let mut ev = Self::event(EventType::DoorOpened, number, uuid);
                ev.reason = Some("door open without an open session".into());
                self.emit(ev).await;
            }
        }
    }

    /// Asks the board for every cell and acts on what it says.
    pub async fn poll(&self) {
        self.recover_storage().await;
        let epoch = self.epoch();
        match self.board.status().await {
            Ok(status) => self.reconcile(&status, epoch).await,
            Err(e) => tracing::debug!(error = %e, "status poll failed"),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn reconcile(&self, status: &[CellStatus], epoch: u64) {
        for cs in status {
            let number = cs.cell.get();
            // The cell as recorded, read *before* the checks below: if no command finished since
            // the STATUS was asked for and none is in flight now, this record and that STATUS
            // describe the same moment.
            let cell = self.store().by_number(number).cloned();
            {
                // Both checked under the in-flight lock, which `flight` holds while it ends a
                // command and bumps the epoch: no command can finish between the two checks.
                let f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                if self.epoch() != epoch {
                    // A bolt moved since this STATUS was asked for; the next poll is fresh.
                    return;
                }
                if f.contains_key(&number) {
                    continue;
                }
            }
            if cs.door == DoorState::Closed {
                self.stray_open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&number);
            }
            let uuid = cell.as_ref().map(|c| c.cell_uuid);
            if cs.door == DoorState::Closed {
                // before closed_door below: its parcel_loaded / picked_up follow the closing
                self.saw_closed(number, uuid).await;
            }
            let session = cell.and_then(|c| c.session);
            match (session, cs.door, cs.bolt) {
                (None, DoorState::Closed, BoltState::Unlocked) => {
                    warn!(cell = number, "bolt pulled with no session: locking it");
                    self.relock(cs.cell).await;
                }
                (None, DoorState::Open, _) => self.saw_open(number, uuid).await,
                (None, _, _) => {}
                (Some(_), DoorState::Open, _) => self.saw_open(number, uuid).await,
                (Some(s), DoorState::Closed, bolt) => self.closed_door(cs.cell, s, bolt).await,
            }
        }
    }

    async fn closed_door(&self, cell: CellNumber, s: Session, bolt: BoltState) {
        let number = cell.get();
        if s.door_seen_open {
            if bolt == BoltState::Unlocked {
                match self.lock(cell).await {
                    Ok(()) => {}
                    // The door was used, so the parcel went in (or out) whatever the bolt does:
                    // record that now; the bolt is reported and retried on its own.
                    Err(LockFailure::Refused | LockFailure::Waiting) => {}
                    Err(LockFailure::Uncertain(e)) => {
                        warn!(cell = number, error = %e, "could not lock after the door closed; will retry");
                        return;
                    }
                }
            }
            self.finish(number).await;
            return;
        }
        let Some(opened_at) = s.opened_at else {
            // Recorded, but the agent stopped before the board answered (no command is in
            // flight now): the bolt says whether it happened.
            if bolt == BoltState::Unlocked {
                self.store().opened(number);
            } else {
                info!(
                    cell = number,
                    "open never completed before a restart; abandoned"
                );
                self.store().abandon(number);
            }
            return;
        };
        if bolt == BoltState::Locked {
            if s.unsure {
                self.unknown_outcome(number, &s).await;
                return;
            }
            // Locked again without the door ever opening (board rebooted, technician).
            info!(
                cell = number,
                "bolt locked before the door opened; session abandoned"
            );
            self.abandon(number, "bolt locked before the door was opened")
                .await;
            return;
        }
        let waited = Utc::now() - opened_at;
        if waited.to_std().unwrap_or_default() >= self.settings.open_timeout {
            info!(cell = number, ?waited, "door never opened; locking again");
            if self.lock(cell).await.is_ok() {
                if s.unsure {
                    self.unknown_outcome(number, &s).await;
                } else {
                    self.abandon(number, "door was not opened in time").await;
                }
            }
        }
    }

    /// A session restored from a record that was behind the board (a save had failed before the
    /// agent stopped) ended without the door being seen open: it may have been opened while
    /// nothing could be written. A drop then may have left a parcel: never offer the cell empty.
    async fn unknown_outcome(&self, number: u16, s: &Session) {
        let what = match &s.purpose {
            Purpose::Drop { .. } => "a parcel may be inside",
            Purpose::Pickup { .. } => "the parcel may have been taken",
            Purpose::Service => "it may have been used",
        };
        let reason = format!(
            "{} session ended while the locker could not record its door (a save had failed before the agent stopped): {what}",
            s.purpose.name()
        );
        error!(cell = number, %reason, "cell out of service until a technician's `service {number}`");
        let uuid = self.store().by_number(number).map(|c| c.cell_uuid);
        self.store().unknown_outcome(number, reason.clone());
        let mut ev = Self::event(EventType::BoardFault, number, uuid);
        ev.reason = Some(format!(
            "cell {number} out of service: {reason}; check it and run `locker-agent service {number}` (with --empty if it is empty)"
        ));
        if let Purpose::Drop { delivery_id } = &s.purpose {
            ev.delivery_id = *delivery_id;
        }
        self.emit(ev).await;
    }

    async fn board_close(&self, cell: CellNumber) -> Result<(), BoardError> {
        let _flight = InFlight::new(self, cell.get());
        self.board.close(cell).await
    }

    /// The monitor's lock of a bolt. A refusal (jammed) is reported with the board's words the
    /// first time, takes the cell out of service, and is tried again with backoff
    /// (`lock_retry`, doubling to `lock_retry_max`) up to `lock_attempts` times; then the agent
    /// says it gave up and leaves the bolt to a technician's `service N`.
    async fn lock(&self, cell: CellNumber) -> Result<(), LockFailure> {
        let number = cell.get();
        let now = tokio::time::Instant::now();
        if let Some(r) = self
            .lock_retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&number)
        {
            if r.gave_up || now < r.next {
                return Err(LockFailure::Waiting);
            }
        }
        let e = match self.board_close(cell).await {
            Ok(()) => {
                let had = self
                    .lock_retry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&number);
                if let Some(r) = had {
                    info!(
                        cell = number,
                        attempts = r.attempts + 1,
                        "bolt locked after earlier refusals"
                    );
                }
                return Ok(());
            }
            // Only the board's own refusal counts against the bolt; a board that does not
            // answer is a board fault (reported as such), tried again on every poll.
            // (A DOOR_OPEN refusal is the door, not the bolt: the next poll sees it closed.)
            Err(
                e @ BoardError::Refused {
                    code: protocol::lockboard::BoardErrorCode::DoorOpen,
                    ..
                },
            ) => return Err(LockFailure::Uncertain(e)),
            Err(e @ (BoardError::Refused { .. } | BoardError::Unexpected { .. })) => e,
            Err(e) => return Err(LockFailure::Uncertain(e)),
        };
        let (attempts, gave_up) = {
            let mut retry = self.lock_retry.lock().unwrap_or_else(|p| p.into_inner());
            let r = retry.entry(number).or_insert(LockRetry {
                attempts: 0,
                next: now,
                gave_up: false,
            });
            r.attempts += 1;
            let backoff = self
                .settings
                .lock_retry
                .saturating_mul(1 << (r.attempts - 1).min(16))
                .min(self.settings.lock_retry_max);
            r.next = now + backoff;
            r.gave_up = r.attempts >= self.settings.lock_attempts.max(1);
            (r.attempts, r.gave_up)
        };
        let uuid = self.store().by_number(number).map(|c| c.cell_uuid);
        if attempts == 1 {
            error!(cell = number, error = %e, "the board will not lock the bolt: cell out of service");
            if jammed(&e) {
                self.store()
                    .set_out_of_service(number, Some(format!("bolt will not lock: {e}")));
            }
            let mut ev = Self::event(EventType::BoardFault, number, uuid);
            ev.reason = Some(format!(
                "cell {number}: the bolt will not lock: {e}; out of service, retrying"
            ));
            self.emit(ev).await;
        } else {
            warn!(cell = number, attempts, error = %e, "the bolt still will not lock");
        }
        if gave_up {
            error!(cell = number, attempts, error = %e, "gave up locking the bolt: a technician must look");
            let mut ev = Self::event(EventType::BoardFault, number, uuid);
            ev.reason = Some(format!(
                "cell {number}: gave up locking the bolt after {attempts} attempts: {e}; a technician must free it and run `locker-agent service {number}`"
            ));
            self.emit(ev).await;
        }
        Err(LockFailure::Refused)
    }

    async fn relock(&self, cell: CellNumber) {
        if let Err(LockFailure::Uncertain(e)) = self.lock(cell).await {
            warn!(cell = cell.get(), error = %e, "re-lock failed; will retry");
        }
    }

    async fn abandon(&self, number: u16, reason: &str) {
        let abandoned = self.store().abandon(number);
        if let Some(s) = abandoned {
            let uuid = self.store().by_number(number).map(|c| c.cell_uuid);
            let mut ev = Self::event(EventType::CellClosed, number, uuid);
            ev.reason = Some(reason.to_owned());
            if let Purpose::Drop { delivery_id } = s.purpose {
                ev.delivery_id = delivery_id;
            }
            self.emit(ev).await;
            self.show(&Message::Idle);
        }
    }

    /// The door was used and the bolt is home: record the parcel in or out, and say so.
    async fn finish(&self, number: u16) {
        let done = self.store().complete(number);
        let uuid = self.store().by_number(number).map(|c| c.cell_uuid);
        let Some((session, contents)) = done else {
            return;
        };
        let mut ev = match &session.purpose {
            Purpose::Drop { delivery_id } => {
                let mut ev = Self::event(EventType::ParcelLoaded, number, uuid);
                ev.delivery_id = *delivery_id;
                ev
            }
            Purpose::Pickup { order_id, .. } => {
                self.show(&Message::PickupDone { cell: number });
                let mut ev = Self::event(EventType::PickedUp, number, uuid);
                ev.order_id = *order_id;
                ev
            }
            Purpose::Service => Self::event(EventType::CellClosed, number, uuid),
        };
        if let Contents::Parcel { delivery_id, .. } = contents {
            ev.delivery_id = ev.delivery_id.or(delivery_id);
        }
        info!(cell = number, event_type = ?ev.event_type, "session complete");
        self.emit(ev).await;
    }
}

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
    fn remember(&self, ev: &Event) {
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
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT_EVENTS {
            r.pop_front();
        }
        r.push_back(entry);
    }

    /// The latest events, oldest first.
    pub fn recent_events(&self) -> Vec<RecentEvent> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().cloned().collect()
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

impl<B: LockBoard> Locker<B> {
    /// A technician's `service N [--empty]`, after looking at the cell (a jammed bolt freed, the
    /// contents checked): puts it back in service, forgets the failed lock attempts, and lets
    /// the door monitor lock a bolt that is still pulled at once. `empty`: they found no parcel
    /// in it. Logged and reported (`technician_action`).
    pub async fn service(&self, number: u16, empty: bool) -> Result<String, ApiFailure> {
        let max = self.store().max_cells();
        if number == 0 || number > max {
            return Err(ApiFailure::new(
                400,
                codes::INVALID_PAYLOAD,
                format!("no cell {number}: this board drives cells 1 to {max}"),
            ));
        }
        let uuid = self.store().by_number(number).map(|c| c.cell_uuid);
        if empty && uuid.is_none() {
            return Err(ApiFailure::new(
                409,
                codes::CELL_NOT_FOUND,
                format!("cell {number} has no UUID yet: there is no record to mark empty"),
            ));
        }
        let was = self.store().set_out_of_service(number, None);
        let retried = self
            .lock_retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&number);
        if empty {
            self.store().set_empty(number);
        }
        let mut done = match (&was, &retried) {
            (Some(r), _) => format!("cell {number} is back in service (it was out: {r})"),
            (None, Some(r)) => format!(
                "cell {number}: {} failed lock attempt(s) forgotten",
                r.attempts
            ),
            (None, None) => format!("cell {number} was in service"),
        };
        if empty {
            done.push_str("; recorded empty");
        }
        info!(technician = true, cell = number, empty, was = ?was, "technician service");
        let mut ev = Self::event(EventType::TechnicianAction, number, uuid);
        ev.reason = Some(format!("technician service: {done}"));
        self.emit(ev).await;
        // A bolt still pulled is locked now, not at the next tick.
        self.poll().await;
        if let Some(problem) = self.store().unsaved().map(str::to_owned) {
            done.push_str(&format!(" (not saved yet: {problem})"));
        }
        Ok(done)
    }
}

impl<B> Locker<B> {
    /// Counts commands in flight per cell (a second, refused open of the same cell must not
    /// clear the first one's mark); ending one bumps the epoch.
    fn flight(&self, number: u16, on: bool) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            *f.entry(number).or_insert(0) += 1;
        } else {
            if let Some(n) = f.get_mut(&number) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    f.remove(&number);
                }
            }
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Marks a cell as having a board command in flight for as long as it lives (also when the
/// operation returns early with an error or its future is dropped).
struct InFlight<'a, B> {
    locker: &'a Locker<B>,
    number: u16,
}

impl<'a, B> InFlight<'a, B> {
    fn new(locker: &'a Locker<B>, number: u16) -> Self {
        locker.flight(number, true);
        Self { locker, number }
    }
}

impl<B> Drop for InFlight<'_, B> {
    fn drop(&mut self) {
        self.locker.flight(self.number, false);
    }
}

/// A scan refused for the code itself (not for the backend or the board being down).
fn counts_as_failed_scan(f: &ApiFailure) -> bool {
    f.code == codes::QR_INVALID
        || f.code == codes::QR_ALREADY_USED
        || f.code == codes::INVALID_PAYLOAD
}

/// The board's own word that a bolt is stuck.
fn jammed(e: &BoardError) -> bool {
    matches!(
        e,
        BoardError::Refused {
            code: protocol::lockboard::BoardErrorCode::Jammed,
            ..
        }
    )
}

fn bolt_of(status: &[CellStatus], cell: CellNumber) -> Option<BoltState> {
    status.iter().find(|c| c.cell == cell).map(|c| c.bolt)
}
