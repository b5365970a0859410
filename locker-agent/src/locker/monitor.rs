//! The door monitor: follows the doors the board reports, ends sessions, locks bolts (with
//! retries for a jammed one) and reconciles the board's `STATUS` with the cell store.

use super::*;

use crate::cells::{Contents, Purpose, Session};
use crate::screen::Message;
use chrono::Utc;
use hal::lockboard::{BoardError, BoardEvent, LockBoard};
use protocol::lockboard::{BoltState, CellNumber, CellStatus, DoorState};
use protocol::ws::{Event, EventType};
use std::sync::Arc;
use tracing::{error, info, warn};
use uuid::Uuid;

/// A cell whose bolt the board refused to lock: when to try again, and whether we gave up.
#[derive(Debug, Clone)]
pub(crate) struct LockRetry {
    pub(crate) attempts: u32,
    pub(crate) next: tokio::time::Instant,
    pub(crate) gave_up: bool,
}

/// Why the monitor did not lock a bolt.
#[derive(Debug)]
pub(crate) enum LockFailure {
    /// The board refused (jammed): retried later, with backoff, a bounded number of times.
    Refused,
    /// Not tried now (backing off, or given up until a technician looks).
    Waiting,
    /// The board did not answer for sure (timeout, unplugged): tried again on the next poll.
    Uncertain(BoardError),
}

pub(crate) fn bolt_of(status: &[CellStatus], cell: CellNumber) -> Option<BoltState> {
    status.iter().find(|c| c.cell == cell).map(|c| c.bolt)
}

impl<B: LockBoard> Locker<B> {
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

    pub(crate) async fn board_close(&self, cell: CellNumber) -> Result<(), BoardError> {
        let _flight = InFlight::new(self, cell.get());
        self.board.close(cell).await
    }

    /// The monitor's lock of a bolt. A refusal (jammed) is reported with the board's words the
    /// first time, takes the cell out of service, and is tried again with backoff
    /// (`lock_retry`, doubling to `lock_retry_max`) up to `lock_attempts` times; then the agent
    /// says it gave up and leaves the bolt to a technician's `service N`.
    pub(crate) async fn lock(&self, cell: CellNumber) -> Result<(), LockFailure> {
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

    pub(crate) async fn abandon(&self, number: u16, reason: &str) {
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
    pub(crate) async fn finish(&self, number: u16) {
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
