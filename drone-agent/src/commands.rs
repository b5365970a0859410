//! Idempotent commands: the outcome of each recent command id, so the same id twice acts once
//! (the second gets the first's acknowledgement again). Persisted with the state.

use protocol::ws::{Ack, AckStatus};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use uuid::Uuid;

/// How many recent ids are remembered unless `[commands] remember` says otherwise: far more
/// than a backend retries within a flight.
pub const REMEMBERED: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandLog {
    recent: VecDeque<Ack>,
    /// From the config at every start, not from the state file.
    #[serde(skip, default = "remembered")]
    keep: usize,
}

fn remembered() -> usize {
    REMEMBERED
}

impl Default for CommandLog {
    fn default() -> Self {
        Self {
            recent: VecDeque::new(),
            keep: REMEMBERED,
        }
    }
}

impl CommandLog {
    /// Remember this many ids from now on (the oldest are forgotten first).
    pub fn set_capacity(&mut self, keep: usize) {
        self.keep = keep.max(1);
        while self.recent.len() > self.keep {
            self.recent.pop_front();
        }
    }

    /// The acknowledgement already given for this id, if any.
    pub fn seen(&self, cmd_id: Uuid) -> Option<&Ack> {
        self.recent.iter().find(|a| a.cmd_id == cmd_id)
    }

    pub fn record(&mut self, cmd_id: Uuid, rejected: Option<String>) -> Ack {
        let ack = Ack {
            cmd_id,
            status: if rejected.is_some() {
                AckStatus::Rejected
            } else {
                AckStatus::Executed
            },
            reason: rejected,
        };
        self.recent.push_back(ack.clone());
        while self.recent.len() > self.keep {
            self.recent.pop_front();
        }
        ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_outcomes_and_forgets_the_oldest() {
        let mut log = CommandLog::default();
        let first = Uuid::from_u128(1);
        log.record(first, Some("not now".into()));
        assert_eq!(log.seen(first).unwrap().status, AckStatus::Rejected);
        for i in 2..=(REMEMBERED as u128 + 1) {
            log.record(Uuid::from_u128(i), None);
        }
        assert!(log.seen(first).is_none());
        assert!(log.seen(Uuid::from_u128(2)).is_some());
    }

    #[test]
    fn capacity_comes_from_the_config() {
        let mut log = CommandLog::default();
        log.set_capacity(16);
        for i in 0..20 {
            log.record(Uuid::from_u128(i), None);
        }
        assert!(log.seen(Uuid::from_u128(3)).is_none());
        assert!(log.seen(Uuid::from_u128(4)).is_some());
    }
}
