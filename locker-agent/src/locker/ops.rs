//! The cell operations: sync, open, close (the HTTP API's and the link's), and a technician's
//! `service`.

use super::*;

use crate::cells::Purpose;
use chrono::Utc;
use hal::lockboard::LockBoard;
use protocol::error::codes;
use protocol::lockboard::{BoltState, CellNumber};
use protocol::locker_api::{
    CellsCloseRequest, CellsCloseResponse, CellsOpenRequest, CellsOpenResponse, CellsSyncRequest,
    CellsSyncResponse,
};
use protocol::ws::EventType;
use tracing::{error, info, warn, Instrument};
use uuid::Uuid;

impl<B: LockBoard> Locker<B> {
    pub async fn sync(&self, req: CellsSyncRequest) -> Result<CellsSyncResponse, ApiFailure> {
        let n = {
            let mut store = self.store();
            let old = store.cells().to_vec();
            let n = store.sync(&req.cells)?;
            if let Err(e) = store.write() {
                self.store().restore_mapping(old);
                return Err(e.into());
            }
            n
        };
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
    pub(crate) async fn open_cell(
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
        let number = {
            let mut store = self.store();
            let number = store.begin(id, purpose.clone())?;
            // written before the board is asked; undone when the disk does not take it
            if let Err(e) = store.write() {
                self.store().undo_begin(number);
                return Err(e.into());
            }
            number
        };
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

/// The cell operations against the simulated lock board on a real pty, through the hal's
/// `LockBoard` trait (the serial driver), the way the agent runs them.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::LogUplink;
    use hal::display::TerminalDisplay;
    use hal::lockboard::{SerialLockBoard, SerialLockBoardConfig};
    use protocol::locker_api::CellMapping;
    use sim::lockboard::{BoardSnapshot, SimBoard, SimBoardConfig};
    use std::sync::atomic::Ordering;

    const WAIT: Duration = Duration::from_secs(10);

    struct Rig {
        locker: Locker<SerialLockBoard>,
        board: SimBoard,
        _dir: tempfile::TempDir,
    }

    async fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let board = SimBoard::start(SimBoardConfig {
            cells: 4,
            travel: Duration::from_millis(40),
            link: dir.path().join("lockboard"),
        })
        .unwrap();
        let mut cfg = SerialLockBoardConfig::new(board.path());
        cfg.travel_timeout = Duration::from_millis(600);
        cfg.status_timeout = Duration::from_millis(300);
        cfg.reopen_interval = Duration::from_millis(50);
        let serial = SerialLockBoard::spawn(cfg);
        let store = CellStore::open(&dir.path().join("cells.json"), 4, 100, true).unwrap();
        let display =
            Arc::new(TerminalDisplay::open(&dir.path().join("screen.txt"), false).unwrap());
        let settings = Settings {
            locker_id: Uuid::from_u128(7),
            open_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            version: "test".into(),
            lock_retry: Duration::from_millis(20),
            lock_retry_max: Duration::from_millis(80),
            lock_attempts: 4,
            scan_limit: ScanLimit::default(),
        };
        let locker = Locker::new(serial, store, settings, Arc::new(LogUplink), None, display);
        let mut health = locker.board().health();
        tokio::time::timeout(WAIT, health.wait_for(|h| h.connected))
            .await
            .expect("the serial driver never connected to the sim board")
            .unwrap();
        Rig {
            locker,
            board,
            _dir: dir,
        }
    }

    async fn wait_board(board: &SimBoard, what: &str, f: impl Fn(&BoardSnapshot) -> bool) {
        let mut rx = board.watch();
        tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
            .await
            .unwrap_or_else(|_| panic!("board never reached: {what}; {:?}", board.snapshot()))
            .unwrap();
    }

    fn in_flight(locker: &Locker<SerialLockBoard>) -> HashMap<u16, u32> {
        locker.in_flight.lock().unwrap().clone()
    }

    async fn synced(locker: &Locker<SerialLockBoard>, cells: &[(Uuid, u16)]) {
        let req = CellsSyncRequest {
            cells: cells
                .iter()
                .map(|&(cell_uuid, cell_id)| CellMapping {
                    cell_uuid,
                    cell_id,
                    size: None,
                })
                .collect(),
        };
        locker.sync(req).await.unwrap();
    }

    #[tokio::test]
    async fn open_pulls_only_that_bolt_and_leaves_nothing_in_flight() {
        let r = rig().await;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        synced(&r.locker, &[(a, 2), (b, 3)]).await;
        let epoch = r.locker.epoch.load(Ordering::SeqCst);
        let resp = r
            .locker
            .open(CellsOpenRequest {
                cell_uuid: a,
                delivery_id: Some(Uuid::new_v4()),
            })
            .await
            .unwrap();
        assert!(resp.success);
        assert_eq!(resp.cell_id, 2);
        let snap = r.board.snapshot();
        assert_eq!(snap.unlocked, vec![2], "only cell 2 was ever pulled");
        assert_eq!(snap.bolts[1], BoltState::Unlocked);
        assert_eq!(snap.bolts[2], BoltState::Locked);
        assert!(in_flight(&r.locker).is_empty(), "the open left a mark");
        assert!(
            r.locker.epoch.load(Ordering::SeqCst) > epoch,
            "the finished command did not bump the epoch"
        );
        let cell = r
            .locker
            .cells()
            .into_iter()
            .find(|c| c.number == 2)
            .unwrap();
        assert!(
            cell.session.is_some(),
            "no session recorded for the open cell"
        );
    }

    #[tokio::test]
    async fn close_locks_the_bolt_again() {
        let r = rig().await;
        let a = Uuid::new_v4();
        synced(&r.locker, &[(a, 1)]).await;
        r.locker
            .open(CellsOpenRequest {
                cell_uuid: a,
                delivery_id: None,
            })
            .await
            .unwrap();
        wait_board(&r.board, "bolt 1 pulled", |s| {
            s.bolts[0] == BoltState::Unlocked
        })
        .await;
        let resp = r
            .locker
            .close(CellsCloseRequest { cell_uuid: a })
            .await
            .unwrap();
        assert!(resp.success);
        assert_eq!(resp.cell_id, 1);
        assert_eq!(r.board.snapshot().bolts[0], BoltState::Locked);
        assert!(in_flight(&r.locker).is_empty());
    }

    #[tokio::test]
    async fn an_unknown_cell_is_refused_without_touching_the_board() {
        let r = rig().await;
        synced(&r.locker, &[(Uuid::new_v4(), 1)]).await;
        let f = r
            .locker
            .open(CellsOpenRequest {
                cell_uuid: Uuid::new_v4(),
                delivery_id: None,
            })
            .await
            .unwrap_err();
        assert_eq!((f.status, f.code), (404, codes::CELL_NOT_FOUND));
        let f = r
            .locker
            .close(CellsCloseRequest {
                cell_uuid: Uuid::new_v4(),
            })
            .await
            .unwrap_err();
        assert_eq!(f.status, 404);
        assert!(r.board.snapshot().unlocked.is_empty());
        assert!(in_flight(&r.locker).is_empty());
    }

    #[tokio::test]
    async fn in_flight_marks_are_counted_per_cell() {
        let r = rig().await;
        let first = InFlight::new(&r.locker, 3);
        let second = InFlight::new(&r.locker, 3);
        let other = InFlight::new(&r.locker, 1);
        assert_eq!(in_flight(&r.locker), HashMap::from([(3, 2), (1, 1)]));
        let epoch = r.locker.epoch.load(Ordering::SeqCst);
        // a second, refused command on the same cell ends: the first is still in flight
        drop(second);
        assert_eq!(in_flight(&r.locker).get(&3), Some(&1));
        assert_eq!(r.locker.epoch.load(Ordering::SeqCst), epoch + 1);
        drop(first);
        drop(other);
        assert!(in_flight(&r.locker).is_empty());
        assert_eq!(r.locker.epoch.load(Ordering::SeqCst), epoch + 3);
    }
}
