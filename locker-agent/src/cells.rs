//! The cells: which backend UUID is which board cell, what each holds, and which is open and why.
//!
//! Pure state and rules, no I/O but the state file: the [`crate::locker`] module does the board
//! calls and asks this module what is allowed. Every change is written to disk before the caller
//! acts on it ([`CellStore::save`]: temporary file, fsync, rename, fsync of the directory), so a
//! restart or a power cut in the middle of a pickup comes back knowing the cell is open for that
//! order and whether its door was already seen open.
//!
//! A cell has *contents* (empty, or a parcel) and, while its bolt is pulled, an *open session*
//! saying why (a drone drop, a customer pickup, a technician). The session ends when the door has
//! been seen open and then closed again (the parcel went in or came out) or when nobody opened the
//! door in time.

use chrono::{DateTime, Utc};
use protocol::locker_api::{CellMapping, CellSize};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Bumped when the file's shape changes.
const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub cell_uuid: Uuid,
    /// The board's number for it (`OPEN_<n>`).
    pub number: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<CellSize>,
    pub contents: Contents,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// Set by a technician or after a jammed bolt; such a cell is never offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Contents {
    Empty,
    Parcel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<Uuid>,
        loaded_at: DateTime<Utc>,
    },
}

impl Contents {
    pub fn holds_parcel(&self) -> bool {
        matches!(self, Contents::Parcel { .. })
    }
}

/// Why a cell's bolt is pulled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub enum Purpose {
    /// A drone is dropping a parcel in.
    Drop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery_id: Option<Uuid>,
    },
    /// A customer is taking their parcel out; `code` is the QR code that opened it.
    Pickup {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<Uuid>,
        code: String,
    },
    /// Opened through the API without a delivery (a technician, a backend retry).
    Service,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    #[serde(flatten)]
    pub purpose: Purpose,
    /// When the session was recorded (before the board was asked).
    pub started_at: DateTime<Utc>,
    /// When the board acknowledged the bolt pulled; `None` while the command is in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// The board reported this door open at least once during the session.
    #[serde(default)]
    pub door_seen_open: bool,
    /// Loaded from a state file that may be behind what happened (a save had failed before the
    /// agent stopped): `door_seen_open` may be wrong, so "never opened" is not to be believed.
    #[serde(skip)]
    pub unsure: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    cells: Vec<Cell>,
    /// QR codes that already opened a cell, newest last, bounded.
    #[serde(default)]
    used_codes: VecDeque<String>,
}

/// Why a cells operation is refused. [`crate::api`] turns each into a status and an error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    #[error("cell {0} is not known to this locker")]
    NotFound(Uuid),
    #[error("cell {number} is busy: it is already open ({purpose})")]
    Busy { number: u16, purpose: &'static str },
    #[error("cell {number} already holds a parcel")]
    Occupied { number: u16 },
    #[error("cell {number} holds no parcel")]
    NoParcel { number: u16 },
    #[error("cell {number} is out of service: {reason}")]
    OutOfService { number: u16, reason: String },
    #[error("sync refused: it would orphan cell {number} ({cell_uuid}), which holds a parcel or is open")]
    WouldOrphan { cell_uuid: Uuid, number: u16 },
    #[error("sync refused: {0}")]
    BadMapping(String),
    #[error("this QR code was already used")]
    CodeUsed,
    #[error("cannot save cell state to {path}: {reason}")]
    Persist { path: PathBuf, reason: String },
    #[error(
        "the cell state file {path} is missing: the locker would forget which cell holds which \
         parcel. Restore it, or for a first boot start with `--init` (or create {marker})"
    )]
    Missing { path: PathBuf, marker: PathBuf },
}

/// Next to `cells.json`: says the locker is being set up, so a missing state file is a first
/// boot (the package creates it with the state directory). Removed once the file is written.
pub const FIRST_BOOT_MARKER: &str = "first-boot";
/// Next to `cells.json`: present while the file is known to hold everything the agent knew.
/// Removed (which needs no free space) when a save fails, and written again after one works, so
/// after a restart the agent knows whether its record may be behind the board.
const IN_SYNC_MARKER: &str = "cells.json.in-sync";

/// Writes the state file in the order its snapshots were taken: a snapshot older than the one
/// on disk is not written (the newer one holds its change too).
#[derive(Debug)]
pub struct StateWriter {
    path: PathBuf,
    /// The generation of the snapshot on disk.
    on_disk: Mutex<u64>,
}

impl StateWriter {
    /// Writes `snapshot` unless a newer one is already on disk. Blocking (fsync); called with no
    /// lock on the store held.
    pub fn write(&self, snapshot: &Snapshot) -> Result<(), CellError> {
        let err = |reason: String| CellError::Persist {
            path: self.path.clone(),
            reason,
        };
        // Held across the write: two writers must not reorder their renames.
        let mut on_disk = self.on_disk.lock().unwrap_or_else(|p| p.into_inner());
        if snapshot.generation <= *on_disk {
            return Ok(());
        }
        let bytes = snapshot.bytes.as_ref().map_err(|e| err(e.clone()))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        // On a tokio worker the blocking form hands the worker's other tasks to another thread
        // while the disk syncs.
        daemon::fs::write_atomic_blocking(&self.path, bytes).map_err(|e| err(e.to_string()))?;
        *on_disk = snapshot.generation;
        Ok(())
    }
}

/// The whole state as it was after one change, to be written by [`StateWriter::write`].
#[derive(Debug)]
pub struct Snapshot {
    generation: u64,
    bytes: Result<Vec<u8>, String>,
    writer: Arc<StateWriter>,
}

impl Snapshot {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes it (see [`StateWriter::write`]).
    pub fn write(&self) -> Result<(), CellError> {
        self.writer.write(self)
    }
}

/// The cells and their state file.
///
/// Standalone, every change is written before the method returns. Under the locker
/// ([`CellStore::defer_writes`]) a change only takes a [`Snapshot`] ([`CellStore::take_pending`]),
/// which the locker writes once it has released its lock on the store, so nobody waits for the
/// fsync to read the cells; [`CellStore::written`] then records how the write went.
#[derive(Debug)]
pub struct CellStore {
    path: PathBuf,
    file: StateFile,
    writer: Arc<StateWriter>,
    /// Bumped by every change; a snapshot carries the number it was taken at.
    generation: u64,
    /// The newest generation whose write outcome has been recorded.
    reported: u64,
    /// Under the locker: changes are staged here, not written.
    deferred: bool,
    pending: Option<Snapshot>,
    max_cells: u16,
    used_kept: usize,
    used_index: HashSet<String>,
    /// Why the last save failed; `None` while the file holds the state in memory.
    unsaved: Option<String>,
    /// Whether [`IN_SYNC_MARKER`] is known to exist.
    marked_in_sync: bool,
}

impl CellStore {
    /// Loads the state file. A missing file is refused (starting empty would forget every
    /// parcel) unless this is a first boot: `first_boot` (`locker-agent run --init`) or the
    /// [`FIRST_BOOT_MARKER`] file next to it. A file that cannot be read is always an error.
    pub fn open(
        path: &Path,
        max_cells: u16,
        used_kept: usize,
        first_boot: bool,
    ) -> Result<Self, CellError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let marker = dir.join(FIRST_BOOT_MARKER);
        let (file, fresh) = match std::fs::read(path) {
            Ok(bytes) => {
                let f: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| CellError::Persist {
                        path: path.to_owned(),
                        reason: format!("state file is corrupt: {e}"),
                    })?;
                if f.version != STATE_VERSION {
                    return Err(CellError::Persist {
                        path: path.to_owned(),
                        reason: format!("state file version {} is not {STATE_VERSION}", f.version),
                    });
                }
                (f, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !first_boot && !marker.exists() {
                    return Err(CellError::Missing {
                        path: path.to_owned(),
                        marker,
                    });
                }
                let f = StateFile {
                    version: STATE_VERSION,
                    ..Default::default()
                };
                (f, true)
            }
            Err(e) => {
                return Err(CellError::Persist {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        let in_sync = fresh || dir.join(IN_SYNC_MARKER).exists();
        let mut file = file;
        if !in_sync {
            for s in file.cells.iter_mut().filter_map(|c| c.session.as_mut()) {
                s.unsure = true;
            }
        }
        let used_index = file.used_codes.iter().cloned().collect();
        let mut store = Self {
            path: path.to_owned(),
            file,
            writer: Arc::new(StateWriter {
                path: path.to_owned(),
                on_disk: Mutex::new(0),
            }),
            generation: 0,
            reported: 0,
            deferred: false,
            pending: None,
            max_cells,
            used_kept: used_kept.max(1),
            used_index,
            unsaved: None,
            marked_in_sync: false,
        };
        if fresh {
            tracing::warn!(path = %path.display(), "no cell state file: first boot, starting with no cells");
            store.save()?;
            let _ = std::fs::remove_file(&marker);
        } else if !in_sync {
            tracing::warn!(path = %path.display(),
                "the cell state file may be behind the board (a save failed before the agent stopped)");
        }
        Ok(store)
    }

    /// From now on a change is staged as a [`Snapshot`] for the caller to write outside its lock
    /// ([`Self::take_pending`], then [`Self::written`]); methods that report a failed save
    /// ([`Self::begin`], [`Self::sync`]) report only the refusals, and the caller undoes a change
    /// whose write failed ([`Self::undo_begin`], [`Self::restore_mapping`]).
    pub fn defer_writes(&mut self) {
        self.deferred = true;
    }

    /// The snapshot of the latest change not yet handed out, if any.
    pub fn take_pending(&mut self) -> Option<Snapshot> {
        self.pending.take()
    }

    /// Records how the write of the snapshot taken at `generation` went. An outcome older than
    /// one already recorded says nothing about the file now, and is ignored.
    pub fn written(&mut self, generation: u64, result: &Result<(), CellError>) {
        if generation < self.reported {
            return;
        }
        self.reported = generation;
        let marker = self
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join(IN_SYNC_MARKER);
        match result {
            Ok(()) => {
                if generation < self.generation {
                    // a newer change is on its way to the disk; its outcome decides
                    return;
                }
                if self.unsaved.take().is_some() {
                    tracing::info!(path = %self.path.display(), "cell state saved again");
                }
                if !self.marked_in_sync {
                    self.marked_in_sync = std::fs::File::create(&marker).is_ok();
                }
            }
            Err(e) => {
                // Removing a file needs no free space: the marker goes even on a full disk.
                let _ = std::fs::remove_file(&marker);
                self.marked_in_sync = false;
                self.unsaved = Some(e.to_string());
            }
        }
    }

    /// Under the locker: takes back a [`Self::begin`] whose write failed (what the standalone
    /// store does itself).
    pub fn undo_begin(&mut self, number: u16) {
        if let Some(c) = self.by_number_mut(number) {
            c.session = None;
        }
        self.record();
    }

    /// Under the locker: takes back a [`Self::sync`] whose write failed. `old` is the mapping
    /// before it; a cell in both keeps what happened to it since.
    pub fn restore_mapping(&mut self, old: Vec<Cell>) {
        let now = std::mem::take(&mut self.file.cells);
        self.file.cells = carry_state(old, &now);
        self.record();
    }

    /// Why the state in memory is not on disk, if it is not.
    pub fn unsaved(&self) -> Option<&str> {
        self.unsaved.as_deref()
    }

    /// Saves again if an earlier save failed. `Ok(true)`: it had failed and now worked.
    pub fn retry_save(&mut self) -> Result<bool, CellError> {
        if self.unsaved.is_none() {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    /// Saves a fact the board already made true (a bolt moved, a door opened): it is kept in
    /// memory whether or not the save works, and a failure is remembered ([`Self::unsaved`]) and
    /// retried by [`Self::retry_save`].
    fn record(&mut self) {
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "cell state not saved; kept in memory until the disk takes it");
        }
    }

    /// How many cells the board drives (numbers 1..=this).
    pub fn max_cells(&self) -> u16 {
        self.max_cells
    }

    pub fn cells(&self) -> &[Cell] {
        &self.file.cells
    }

    pub fn by_uuid(&self, id: Uuid) -> Result<&Cell, CellError> {
        self.file
            .cells
            .iter()
            .find(|c| c.cell_uuid == id)
            .ok_or(CellError::NotFound(id))
    }

    pub fn by_number(&self, n: u16) -> Option<&Cell> {
        self.file.cells.iter().find(|c| c.number == n)
    }

    fn by_uuid_mut(&mut self, id: Uuid) -> Result<&mut Cell, CellError> {
        self.file
            .cells
            .iter_mut()
            .find(|c| c.cell_uuid == id)
            .ok_or(CellError::NotFound(id))
    }

    pub fn by_number_mut(&mut self, n: u16) -> Option<&mut Cell> {
        self.file.cells.iter_mut().find(|c| c.number == n)
    }

    /// Replaces the mapping. Cells that keep their UUID and number keep their state; a cell that
    /// holds a parcel or is open must keep both, or the sync is refused whole.
    pub fn sync(&mut self, mapping: &[CellMapping]) -> Result<usize, CellError> {
        let mut uuids = HashSet::new();
        let mut numbers = HashSet::new();
        for m in mapping {
            if m.cell_id == 0 || m.cell_id > self.max_cells {
                return Err(CellError::BadMapping(format!(
                    "cell_id {} is outside this board's cells 1..={}",
                    m.cell_id, self.max_cells
                )));
            }
            if !uuids.insert(m.cell_uuid) {
                return Err(CellError::BadMapping(format!(
                    "cell_uuid {} appears twice",
                    m.cell_uuid
                )));
            }
            if !numbers.insert(m.cell_id) {
                return Err(CellError::BadMapping(format!(
                    "cell_id {} appears twice",
                    m.cell_id
                )));
            }
        }
        for c in &self.file.cells {
            let in_use = c.contents.holds_parcel() || c.session.is_some();
            let kept = mapping
                .iter()
                .any(|m| m.cell_uuid == c.cell_uuid && m.cell_id == c.number);
            if in_use && !kept {
                return Err(CellError::WouldOrphan {
                    cell_uuid: c.cell_uuid,
                    number: c.number,
                });
            }
        }
        let old = std::mem::take(&mut self.file.cells);
        let fresh = mapping
            .iter()
            .map(|m| Cell {
                cell_uuid: m.cell_uuid,
                number: m.cell_id,
                size: m.size,
                contents: Contents::Empty,
                session: None,
                out_of_service: None,
            })
            .collect();
        self.file.cells = carry_state(fresh, &old);
        self.file.cells.sort_by_key(|c| c.number);
        if let Err(e) = self.save() {
            self.file.cells = old;
            return Err(e);
        }
        Ok(self.file.cells.len())
    }

    /// Records that `cell` is about to be opened for `purpose`, after checking it may be.
    /// Saved before returning: the caller then asks the board.
    pub fn begin(&mut self, id: Uuid, purpose: Purpose) -> Result<u16, CellError> {
        let code_used = match &purpose {
            Purpose::Pickup { code, .. } => self.used_index.contains(code),
            _ => false,
        };
        let cell = self.by_uuid_mut(id)?;
        if let Some(s) = &cell.session {
            return Err(CellError::Busy {
                number: cell.number,
                purpose: s.purpose.name(),
            });
        }
        if let Some(reason) = &cell.out_of_service {
            return Err(CellError::OutOfService {
                number: cell.number,
                reason: reason.clone(),
            });
        }
        match &purpose {
            Purpose::Drop { .. } if cell.contents.holds_parcel() => {
                return Err(CellError::Occupied {
                    number: cell.number,
                })
            }
            Purpose::Pickup { .. } if code_used => return Err(CellError::CodeUsed),
            Purpose::Pickup { .. } if !cell.contents.holds_parcel() => {
                return Err(CellError::NoParcel {
                    number: cell.number,
                })
            }
            _ => {}
        }
        let number = cell.number;
        cell.session = Some(Session {
            purpose: purpose.clone(),
            started_at: Utc::now(),
            opened_at: None,
            door_seen_open: false,
            unsure: false,
        });
        if let Purpose::Pickup { code, .. } = &purpose {
            self.remember_code(code.clone());
        }
        self.save_or_revert(|s| {
            if let Some(c) = s.by_number_mut(number) {
                c.session = None;
            }
        })?;
        Ok(number)
    }

    /// The board acknowledged the bolt: the session is open from now.
    pub fn opened(&mut self, number: u16) -> DateTime<Utc> {
        let now = Utc::now();
        if let Some(s) = self.by_number_mut(number).and_then(|c| c.session.as_mut()) {
            s.opened_at = Some(now);
        }
        self.record();
        now
    }

    /// The board refused or never answered: the session did not start.
    pub fn abandon(&mut self, number: u16) -> Option<Session> {
        let session = self.by_number_mut(number).and_then(|c| c.session.take());
        if let Some(Session {
            purpose: Purpose::Pickup { code, .. },
            ..
        }) = &session
        {
            // The customer never got to the parcel: let the same code work again.
            self.forget_code(code);
        }
        self.record();
        session
    }

    /// The board reported the door open during the session. Returns true the first time.
    pub fn door_opened(&mut self, number: u16) -> bool {
        let first = match self.by_number_mut(number).and_then(|c| c.session.as_mut()) {
            Some(s) if !s.door_seen_open => {
                s.door_seen_open = true;
                true
            }
            _ => false,
        };
        if first {
            self.record();
        }
        first
    }

    /// The door was opened and closed again and the bolt is home: the parcel went in or out.
    pub fn complete(&mut self, number: u16) -> Option<(Session, Contents)> {
        let cell = self.by_number_mut(number)?;
        let session = cell.session.take()?;
        let now = Utc::now();
        match &session.purpose {
            Purpose::Drop { delivery_id } => {
                cell.contents = Contents::Parcel {
                    delivery_id: *delivery_id,
                    order_id: None,
                    loaded_at: now,
                };
            }
            Purpose::Pickup { .. } => cell.contents = Contents::Empty,
            Purpose::Service => {}
        }
        let contents = cell.contents.clone();
        self.record();
        Some((session, contents))
    }

    /// Ends a drop session whose outcome cannot be known (the record was behind the board): the
    /// cell is counted as holding the parcel, so nothing else is put in it, and taken out of
    /// service until a technician has looked.
    pub fn unknown_outcome(&mut self, number: u16, reason: String) -> Option<Session> {
        let cell = self.by_number_mut(number)?;
        let session = cell.session.take()?;
        if let Purpose::Drop { delivery_id } = &session.purpose {
            if !cell.contents.holds_parcel() {
                cell.contents = Contents::Parcel {
                    delivery_id: *delivery_id,
                    order_id: None,
                    loaded_at: Utc::now(),
                };
            }
        }
        cell.out_of_service = Some(reason);
        self.record();
        Some(session)
    }

    /// Takes a cell out of service (`Some(why)`) or puts it back (`None`); returns the old
    /// reason.
    pub fn set_out_of_service(&mut self, number: u16, reason: Option<String>) -> Option<String> {
        let old = self
            .by_number_mut(number)
            .and_then(|c| std::mem::replace(&mut c.out_of_service, reason));
        self.record();
        old
    }

    /// A technician found the cell empty (`service N --empty`).
    pub fn set_empty(&mut self, number: u16) {
        if let Some(c) = self.by_number_mut(number) {
            c.contents = Contents::Empty;
        }
        self.record();
    }

    pub fn code_used(&self, code: &str) -> bool {
        self.used_index.contains(code)
    }

    fn remember_code(&mut self, code: String) {
        if self.used_index.insert(code.clone()) {
            self.file.used_codes.push_back(code);
            while self.file.used_codes.len() > self.used_kept {
                if let Some(old) = self.file.used_codes.pop_front() {
                    self.used_index.remove(&old);
                }
            }
        }
    }

    fn forget_code(&mut self, code: &str) {
        if self.used_index.remove(code) {
            self.file.used_codes.retain(|c| c != code);
        }
    }

    fn save_or_revert(&mut self, revert: impl FnOnce(&mut Self)) -> Result<(), CellError> {
        self.save().inspect_err(|_| revert(self))
    }

    /// Writes the whole state ([`daemon::fs::write_atomic`]): a crash leaves the old file or the
    /// new one, never half of one. Under the locker it only stages the snapshot (see
    /// [`Self::defer_writes`]).
    pub fn save(&mut self) -> Result<(), CellError> {
        self.generation += 1;
        let snapshot = Snapshot {
            generation: self.generation,
            bytes: serde_json::to_vec_pretty(&self.file).map_err(|e| e.to_string()),
            writer: self.writer.clone(),
        };
        if self.deferred {
            self.pending = Some(snapshot);
            return Ok(());
        }
        let result = snapshot.write();
        self.written(snapshot.generation, &result);
        result
    }
}

/// `cells` in their order and sizes, each with the state of the cell in `state` that has the same
/// UUID and number, if there is one.
fn carry_state(cells: Vec<Cell>, state: &[Cell]) -> Vec<Cell> {
    cells
        .into_iter()
        .map(|c| {
            match state
                .iter()
                .find(|s| s.cell_uuid == c.cell_uuid && s.number == c.number)
            {
                Some(s) => Cell {
                    size: c.size,
                    ..s.clone()
                },
                None => c,
            }
        })
        .collect()
}

impl Purpose {
    pub fn name(&self) -> &'static str {
        match self {
            Purpose::Drop { .. } => "drone drop",
            Purpose::Pickup { .. } => "customer pickup",
            Purpose::Service => "service",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(pairs: &[(Uuid, u16)]) -> Vec<CellMapping> {
        pairs
            .iter()
            .map(|(u, n)| CellMapping {
                cell_uuid: *u,
                cell_id: *n,
                size: None,
            })
            .collect()
    }

    #[test]
    fn deferred_snapshots_never_let_an_older_replace_a_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cells.json");
        let a = Uuid::new_v4();
        let mut s = CellStore::open(&path, 8, 100, true).unwrap();
        s.defer_writes();
        s.sync(&mapping(&[(a, 3)])).unwrap();
        let older = s.take_pending().unwrap();
        s.set_out_of_service(3, Some("jammed".into()));
        let newer = s.take_pending().unwrap();
        assert!(s.take_pending().is_none());
        // the newer snapshot reaches the disk first; the older one must not replace it
        newer.write().unwrap();
        s.written(newer.generation(), &Ok(()));
        older.write().unwrap();
        s.written(older.generation(), &Ok(()));
        assert!(s.unsaved().is_none());
        drop(s);
        let s = CellStore::open(&path, 8, 100, false).unwrap();
        let c = s.by_number(3).unwrap();
        assert_eq!(c.cell_uuid, a);
        assert_eq!(c.out_of_service.as_deref(), Some("jammed"));
    }

    #[test]
    fn deferred_write_failures_are_kept_until_a_newer_write_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cells.json");
        let mut s = CellStore::open(&path, 8, 100, true).unwrap();
        s.defer_writes();
        s.sync(&mapping(&[(Uuid::new_v4(), 3)])).unwrap();
        let failed = s.take_pending().unwrap();
        let full = || -> Result<(), CellError> {
            Err(CellError::Persist {
                path: path.clone(),
                reason: "disk full".into(),
            })
        };
        s.written(failed.generation(), &full());
        assert!(s.unsaved().unwrap().contains("disk full"));
        // nothing on disk yet says the state is whole
        assert!(!dir.path().join(IN_SYNC_MARKER).exists());
        s.set_empty(3);
        let next = s.take_pending().unwrap();
        next.write().unwrap();
        s.written(next.generation(), &Ok(()));
        assert!(s.unsaved().is_none());
        assert!(dir.path().join(IN_SYNC_MARKER).exists());
        // the old failure reported late says nothing about the file now
        s.written(failed.generation(), &full());
        assert!(s.unsaved().is_none());
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cells.json");
        let a = Uuid::new_v4();
        let mut s = CellStore::open(&path, 8, 100, true).unwrap();
        s.sync(&mapping(&[(a, 3)])).unwrap();
        let n = s
            .begin(
                a,
                Purpose::Drop {
                    delivery_id: Some(Uuid::nil()),
                },
            )
            .unwrap();
        s.opened(n);
        s.door_opened(n);
        drop(s);
        let mut s = CellStore::open(&path, 8, 100, true).unwrap();
        let c = s.by_uuid(a).unwrap();
        assert!(c.session.as_ref().unwrap().door_seen_open);
        s.complete(3);
        let s = CellStore::open(&path, 8, 100, true).unwrap();
        assert!(s.by_uuid(a).unwrap().contents.holds_parcel());
    }

    #[test]
    fn sync_refuses_to_orphan_a_parcel_and_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cells.json");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut s = CellStore::open(&path, 8, 100, true).unwrap();
        s.sync(&mapping(&[(a, 1), (b, 2)])).unwrap();
        s.begin(a, Purpose::Drop { delivery_id: None }).unwrap();
        s.complete(1);
        let e = s.sync(&mapping(&[(b, 2)])).unwrap_err();
        assert!(matches!(e, CellError::WouldOrphan { number: 1, .. }), "{e}");
        let e = s.sync(&mapping(&[(a, 2), (b, 1)])).unwrap_err();
        assert!(matches!(e, CellError::WouldOrphan { .. }), "{e}");
        // dropping the empty cell is fine, and the parcel stays
        assert_eq!(s.sync(&mapping(&[(a, 1)])).unwrap(), 1);
        assert!(s.by_uuid(a).unwrap().contents.holds_parcel());
        assert!(matches!(
            s.sync(&mapping(&[(a, 1), (b, 1)])).unwrap_err(),
            CellError::BadMapping(_)
        ));
        assert!(matches!(
            s.sync(&mapping(&[(a, 1), (b, 9)])).unwrap_err(),
            CellError::BadMapping(_)
        ));
    }

    #[test]
    fn a_code_opens_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CellStore::open(&dir.path().join("c.json"), 8, 100, true).unwrap();
        let a = Uuid::new_v4();
        s.sync(&mapping(&[(a, 1)])).unwrap();
        s.begin(a, Purpose::Drop { delivery_id: None }).unwrap();
        s.complete(1);
        let pickup = || Purpose::Pickup {
            order_id: None,
            code: "ORDER-1".into(),
        };
        s.begin(a, pickup()).unwrap();
        assert!(matches!(s.begin(a, pickup()), Err(CellError::Busy { .. })));
        s.abandon(1);
        s.begin(a, pickup()).unwrap();
        s.complete(1);
        assert_eq!(s.begin(a, pickup()), Err(CellError::CodeUsed));
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            CellStore::open(&path, 8, 100, true),
            Err(CellError::Persist { .. })
        ));
    }
}
