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
//!
//! One concern a file: `ops` the cell operations, `scan` QR pickups, `monitor` the door monitor,
//! `views` health and the technician's views, `inflight` the in-flight bookkeeping. How a
//! refusal is told lives beside the API, in [`crate::failure`].

mod inflight;
mod monitor;
mod ops;
mod scan;
mod views;

pub use scan::{run_pickups, ScanLimit, ScanSource};
pub use views::{BoardTest, CellView, RecentEvent, TechAction, RECENT_EVENTS};

use crate::failure::{board_failure, extra_codes, jammed, uncertain, ApiFailure};
use inflight::InFlight;
use monitor::bolt_of;
use monitor::LockRetry;
use scan::ScanGate;

use crate::cells::{CellError, CellStore};
use crate::scanner::CameraProbe;
use crate::screen::{self, Message};
use crate::uplink::{QrValidator, Uplink};
use daemon::ring::Ring;
use hal::display::Display;
use hal::lockboard::LockBoard;
use protocol::ws::{Event, EventType};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{error, info, warn};
use uuid::Uuid;

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
    recent: Mutex<Ring<RecentEvent, RECENT_EVENTS>>,
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
        // the cells' state file is written by `Store` outside the lock
        let mut store = store;
        store.defer_writes();
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
            recent: Mutex::new(Ring::new()),
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

    /// The cells, locked until the returned guard goes (for a call, until the end of the
    /// statement); a change made through it is written to disk after the lock is released.
    pub(crate) fn store(&self) -> Store<'_> {
        Store {
            guard: Some(lock_store(&self.store)),
            lock: &self.store,
        }
    }

    pub(crate) fn show(&self, m: &Message) {
        if let Err(e) = self.display.show(&screen::render(m)) {
            warn!(error = %e, "display write failed");
        }
    }

    /// Reports an event. One the outbox cannot take (a full disk) is held in memory and sent,
    /// in order, before any later one as soon as the outbox takes events again.
    pub(crate) async fn emit(&self, ev: Event) {
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
    pub(crate) async fn recover_storage(&self) {
        let saved = {
            let mut store = self.store();
            let retried = store.retry_save();
            match retried {
                // staged, not yet written
                Ok(true) => store.write().map(|()| true),
                other => other,
            }
        };
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

    pub(crate) fn event(kind: EventType, number: u16, uuid: Option<Uuid>) -> Event {
        let mut ev = Event::new(kind);
        ev.cell_id = Some(number);
        ev.cell_uuid = uuid;
        ev
    }

    /// A copy of the cells (for status tools and tests).
    pub fn cells(&self) -> Vec<crate::cells::Cell> {
        self.store().cells().to_vec()
    }
}

fn lock_store(lock: &Mutex<CellStore>) -> MutexGuard<'_, CellStore> {
    // A panic while holding the lock cannot leave the store half-changed on disk (every change
    // is saved whole), so the in-memory copy is still the best we have.
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

/// The locked cell store ([`Locker::store`]). Dropped (or [`Store::write`]), it releases the lock
/// first and then writes the change made through it, if any: the fsync keeps no reader of the
/// cells waiting. Snapshots carry a generation, so of two writes racing to the disk the older
/// never replaces the newer ([`crate::cells::StateWriter`]).
pub(crate) struct Store<'a> {
    /// `Some` until released.
    guard: Option<MutexGuard<'a, CellStore>>,
    lock: &'a Mutex<CellStore>,
}

impl Store<'_> {
    /// Releases the lock and writes the change; the write's outcome, for a caller that must
    /// not act on a change the disk did not take.
    pub(crate) fn write(mut self) -> Result<(), CellError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), CellError> {
        let Some(mut guard) = self.guard.take() else {
            return Ok(());
        };
        let pending = guard.take_pending();
        drop(guard);
        let Some(snapshot) = pending else {
            return Ok(());
        };
        let result = snapshot.write();
        lock_store(self.lock).written(snapshot.generation(), &result);
        result
    }
}

impl Drop for Store<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            error!(error = %e, "cell state not saved; kept in memory until the disk takes it");
        }
    }
}

impl std::ops::Deref for Store<'_> {
    type Target = CellStore;
    fn deref(&self) -> &CellStore {
        self.guard.as_deref().expect("held until released")
    }
}

impl std::ops::DerefMut for Store<'_> {
    fn deref_mut(&mut self) -> &mut CellStore {
        self.guard.as_deref_mut().expect("held until released")
    }
}
