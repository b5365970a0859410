//! Idempotent commands: the outcome of each recent command id, so the same id twice acts once
//! (the second gets the first's acknowledgement again). Persisted with the state.

use protocol::ws::{Ack, AckStatus};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use uuid::Uuid;

/// How many recent ids are remembered: far more than a backend retries within a flight.
const REMEMBERED: usize = 256;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandLog {
    recent: VecDeque<Ack>,
}

impl CommandLog {
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
        while self.recent.len() > REMEMBERED {
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
}
