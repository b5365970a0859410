//! When the disk will not take a write (full, or a failing SD card): the flight never waits for
//! it. Whatever cannot be written is said at once over the live link, kept in memory, and
//! written when the disk takes writes again; the machine hears `StorageFailed` /
//! `StorageRestored` and decides (on the ground: no task is taken).
//!
//! - Events the outbox refuses are sent live at once (with their event id, no seq) and held, in
//!   order, behind any already held; the retry stores them in the outbox (same id: the backend
//!   de-duplicates) and the outbox sends them again with their seq.
//! - At most [`HELD_EVENTS`] are held. Past that the oldest event that is not a state change
//!   goes first (state changes are what the backend's books are made of), and only if every
//!   held event is one does the oldest state change go; either way it is counted and the count
//!   is in the `storage_restored` report.
//! - The retry re-saves the state file and stores the held events: first after
//!   [`RETRY_FIRST`], doubling to [`RETRY_MAX`] while the disk still refuses; also at once when a
//!   task arrives (so a freed disk takes it). Each retry does a bounded amount of work (one save,
//!   at most the held events).

use super::{Agent, Cloud};
use crate::machine::Event;
use hal::flight::FlightController;
use hal::payload::PayloadRelease;
use protocol::Envelope;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Events held in memory while the outbox refuses them. A whole delivery reports about 15.
pub const HELD_EVENTS: usize = 256;
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Storage {
    /// Why the last write failed, while writes still fail.
    failed: Option<String>,
    /// The state file is behind the machine.
    state_unsaved: bool,
    held: VecDeque<protocol::ws::Event>,
    /// Held events dropped over the bound since the failure began.
    dropped: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// What the machine has not been told yet.
    news: Option<Event>,
}

impl Storage {
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// `StorageFailed` / `StorageRestored` for the machine, once.
    pub fn take_news(&mut self) -> Option<Event> {
        self.news.take()
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            error!(error = %why, "storage failed: flying on; events kept in memory and the state file re-saved when the disk takes writes again");
            self.backoff = RETRY_FIRST;
            self.retry_at = Some(Instant::now() + RETRY_FIRST);
            self.news = Some(Event::StorageFailed(why.clone()));
        }
        self.failed = Some(why);
    }

    fn hold(&mut self, event: protocol::ws::Event) {
        if self.held.len() >= HELD_EVENTS {
            let victim = self
                .held
                .iter()
                .position(|e| e.to_state.is_none())
                .unwrap_or(0);
            if let Some(gone) = self.held.remove(victim) {
                self.dropped += 1;
                error!(event_type = ?gone.event_type, bound = HELD_EVENTS, dropped = self.dropped,
                    "storage failed and the events held in memory are at their bound: one dropped");
            }
        }
        self.held.push_back(event);
    }
}

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    /// Stores an event in the outbox, or — if the outbox refuses it, or events are already
    /// held — sends it live now and holds it for the outbox.
    pub(super) async fn store_event(&mut self, mut event: protocol::ws::Event) {
        // the live copy and the stored one must be one event to the backend
        event.event_id.get_or_insert_with(uuid::Uuid::new_v4);
        if self.storage.held.is_empty() {
            match self.link.publish_event(event.clone()).await {
                Ok(()) => return,
                Err(e) => self
                    .storage
                    .fail(format!("could not store the event in the outbox: {e}")),
            }
        }
        warn!(event_type = ?event.event_type, held = self.storage.held.len() + 1, "event not on disk: sent live and held in memory");
        self.link.send(Envelope::new(event.clone()));
        self.storage.hold(event);
        self.push_telemetry();
    }

    /// Writes the state file; a failure is remembered (and retried), never fatal.
    pub(super) fn save(&mut self) {
        match self.state_file.save(self.machine.to_json(), &self.commands) {
            Ok(()) => self.storage.state_unsaved = false,
            Err(e) => {
                self.storage.state_unsaved = true;
                error!(error = %e, "could not save the state file; a restart now would forget this step");
                self.storage
                    .fail(format!("could not save the state file: {e}"));
                self.push_telemetry();
            }
        }
    }

    /// One retry: the state file, then the held events in order. All written: storage is back
    /// (the machine hears it). Otherwise the next retry backs off.
    pub(super) async fn retry_storage(&mut self) {
        if !self.storage.failed() {
            return;
        }
        self.save();
        let mut stored = 0usize;
        while self.storage.failed() && !self.storage.state_unsaved {
            let Some(event) = self.storage.held.front().cloned() else {
                break;
            };
            match self.link.publish_event(event).await {
                Ok(()) => {
                    self.storage.held.pop_front();
                    stored += 1;
                }
                Err(e) => {
                    self.storage.failed =
                        Some(format!("could not store the event in the outbox: {e}"));
                    break;
                }
            }
        }
        if self.storage.state_unsaved || !self.storage.held.is_empty() {
            self.storage.backoff = (self.storage.backoff * 2).min(RETRY_MAX);
            self.storage.retry_at = Some(Instant::now() + self.storage.backoff);
            warn!(
                held = self.storage.held.len(),
                stored,
                next_retry_s = self.storage.backoff.as_secs_f64(),
                error = self.storage.failed.as_deref().unwrap_or_default(),
                "storage still failing"
            );
            return;
        }
        let dropped = std::mem::take(&mut self.storage.dropped);
        let what = format!(
            "state file saved again; {stored} event(s) kept in memory stored in the outbox{}",
            if dropped > 0 {
                format!("; {dropped} dropped over the bound of {HELD_EVENTS}")
            } else {
                String::new()
            }
        );
        info!(stored, dropped, "storage works again");
        self.storage.failed = None;
        self.storage.retry_at = None;
        self.storage.news = Some(Event::StorageRestored(what));
        self.push_telemetry();
    }
}
