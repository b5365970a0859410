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
