//! The on-disk event outbox: every event is on disk before `publish` returns, and stays there
//! until the backend's `event_ack` names its id.
//!
//! Layout: one file per event, `<seq:020>.json`, written to a temporary name, fsynced, renamed, and
//! the directory fsynced — a power cut leaves either the whole event or nothing. `seq` is the
//! sender's sequence number (also in the event, so the backend sees gaps). A seq is never used
//! twice, whatever is lost: the high-water mark is kept three ways, and [`Outbox::open`] takes
//! the highest of them:
//! - the events themselves (a seq whose event file was written is spent, even if nothing else
//!   could be written after it: a full disk);
//! - the newest acknowledged event, kept as `<seq:020>.acked` instead of being deleted (a
//!   tombstone: the mark survives with nothing pending);
//! - the counter file `seq`, written after each event (a convenience now: losing it, or failing
//!   to write it, costs nothing but a warning).
//!
//! Bounded: at `capacity` events the oldest is evicted to make room, logged at ERROR level and
//! counted in [`Outbox::evicted`]. With the default capacity (10 000 events, a few MB) that means
//! the drone was cut off for days while changing state constantly; losing the oldest then is the
//! lesser harm than refusing to record what happens now.

use daemon::fs::write_atomic;
use protocol::ws::Event;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An event or the counter could not be written (the error names the file and the step).
    #[error("outbox: {0}")]
    Write(#[from] daemon::fs::WriteError),
    #[error("outbox file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Only a damaged counter or file name gets here (2^64 events is not a lifetime's worth).
    #[error("outbox {path}: the sequence numbers are used up (the seq counter or an event file's name says {last})")]
    SeqExhausted { path: PathBuf, last: u64 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Events not yet acknowledged, in sequence order.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    capacity: usize,
    pending: BTreeMap<u64, Event>,
    last_seq: u64,
    /// The newest acknowledged seq, whose file is kept as `<seq>.acked`.
    tombstone: Option<u64>,
    evicted: u64,
}

/// What a file in the outbox directory is, by its name.
enum Entry {
    Event(u64),
    Acked(u64),
    Corrupt(u64),
    /// A temporary file a failed or interrupted write left behind.
    Temporary,
    Other,
}

fn entry(name: &str) -> Entry {
    let seq = |n: &str| n.parse::<u64>().ok();
    if let Some(n) = name.strip_suffix(".json").and_then(seq) {
        Entry::Event(n)
    } else if let Some(n) = name.strip_suffix(".acked").and_then(seq) {
        Entry::Acked(n)
    } else if let Some(n) = name.strip_suffix(".json.corrupt").and_then(seq) {
        Entry::Corrupt(n)
    } else if name.ends_with(".tmp") {
        Entry::Temporary
    } else {
        Entry::Other
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir`. Files that cannot be parsed are moved aside
    /// to `<name>.corrupt` (kept for a technician) and reported, never silently dropped.
    pub fn open(dir: &Path, capacity: usize) -> Result<(Self, Vec<OutboxError>), OutboxError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut pending = BTreeMap::new();
        let mut problems = Vec::new();
        let seq_path = dir.join("seq");
        let counter = match fs::read_to_string(&seq_path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // The highest seq any file shows; `spent` also counts what was set aside or acknowledged.
        let mut spent = 0u64;
        let mut acked = Vec::new();
        let mut anything = false;
        for e in fs::read_dir(dir).map_err(io(dir))? {
            let path = e.map_err(io(dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            match entry(name) {
                Entry::Event(seq) => {
                    anything = true;
                    spent = spent.max(seq);
                    let parsed = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                        serde_json::from_slice::<Event>(&b).map_err(|e| e.to_string())
                    });
                    match parsed {
                        Ok(event) => {
                            // a file whose event claims another seq than its name (edited or
                            // damaged): never hand out either number again
                            spent = spent.max(event.seq.unwrap_or(seq));
                            pending.insert(seq, event);
                        }
                        Err(reason) => {
                            let aside = path.with_extension("json.corrupt");
                            let _ = fs::rename(&path, &aside);
                            problems.push(OutboxError::Corrupt {
                                path: aside,
                                reason,
                            });
                        }
                    }
                }
                Entry::Acked(seq) => {
                    anything = true;
                    spent = spent.max(seq);
                    acked.push(seq);
                }
                Entry::Corrupt(seq) => {
                    anything = true;
                    spent = spent.max(seq);
                }
                Entry::Temporary => {
                    // Never renamed into place, so never an event: a write that failed.
                    let _ = fs::remove_file(&path);
                }
                Entry::Other => anything |= name == "seq",
            }
        }
        acked.sort_unstable();
        let tombstone = acked.pop();
        for old in acked {
            let _ = fs::remove_file(dir.join(format!("{old:020}.acked")));
        }
        let last_seq = match counter {
            Ok(n) => {
                if spent > n {
                    tracing::warn!(counter = n, highest_on_disk = spent, dir = %dir.display(),
                        "event outbox: the seq counter is behind the events on disk (a write that failed or a crash); continuing after the highest");
                }
                n.max(spent)
            }
            Err(_) if !anything => 0,
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, resume_after = spent,
                    "event outbox: the seq counter file is missing or unreadable; continuing after the highest seq on disk");
                spent
            }
        };
        Ok((
            Self {
                dir: dir.to_owned(),
                capacity: capacity.max(1),
                pending,
                last_seq,
                tombstone,
                evicted: 0,
            },
            problems,
        ))
    }

    /// Stores an event durably and returns it as it will be sent (id and seq filled in).
    pub fn push(&mut self, mut event: Event) -> Result<Event, OutboxError> {
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or_else(|| OutboxError::SeqExhausted {
                path: self.dir.clone(),
                last: self.last_seq,
            })?;
        event.seq = Some(seq);
        if event.event_id.is_none() {
            event.event_id = Some(Uuid::new_v4());
        }
        let bytes = serde_json::to_vec(&event).map_err(|e| OutboxError::Corrupt {
            path: self.file(seq),
            reason: e.to_string(),
        })?;
        // The event before the counter: a kill between the two leaves the event on disk (open()
        // takes the highest seq it finds), while the other order would leave a used seq with no
        // event behind it — a gap the backend would read as a lost event.
        write_atomic(&self.file(seq), &bytes)?;
        // From here the seq is spent: the event is on disk and open() would find it.
        self.last_seq = seq;
        if let Err(e) = write_atomic(&self.dir.join("seq"), seq.to_string().as_bytes()) {
            tracing::warn!(seq, error = %e,
                "event outbox: the event is stored but its counter could not be written; the event file keeps the mark");
        }
        self.pending.insert(seq, event.clone());
        while self.pending.len() > self.capacity {
            if let Some((old, ev)) = self.pending.pop_first() {
                let _ = fs::remove_file(self.file(old));
                self.evicted += 1;
                tracing::error!(seq = old, event_type = ?ev.event_type, capacity = self.capacity,
                    "event outbox full: oldest unacknowledged event evicted");
            }
        }
        Ok(event)
    }

    /// Forgets an acknowledged event. Unknown ids (a duplicate ack) are fine.
    pub fn ack(&mut self, event_id: Uuid) -> Result<bool, OutboxError> {
        let Some(seq) = self
            .pending
            .iter()
            .find(|(_, e)| e.event_id == Some(event_id))
            .map(|(s, _)| *s)
        else {
            return Ok(false);
        };
        self.pending.remove(&seq);
        let path = self.file(seq);
        if self.tombstone.is_none_or(|t| seq > t) {
            // The newest acknowledged event stays as the high-water mark (a rename needs no
            // free space); the one it replaces goes.
            let kept = self.dir.join(format!("{seq:020}.acked"));
            match fs::rename(&path, &kept) {
                Ok(()) => {
                    if let Some(old) = self.tombstone.replace(seq) {
                        let _ = fs::remove_file(self.dir.join(format!("{old:020}.acked")));
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
                Err(e) => return Err(OutboxError::Io { path, source: e }),
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(OutboxError::Io { path, source: e }),
        }
    }

    /// Unacknowledged events, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Event> {
        self.pending.values()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Events evicted because the outbox was full, since it was opened.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ws::EventType;

    #[test]
    fn survives_reopen_and_forgets_acked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, problems) = Outbox::open(dir.path(), 100).unwrap();
        assert!(problems.is_empty());
        let a = ob.push(Event::new(EventType::Arrived)).unwrap();
        let b = ob.push(Event::new(EventType::DropConfirmed)).unwrap();
        assert_eq!((a.seq, b.seq), (Some(1), Some(2)));
        assert!(ob.ack(a.event_id.unwrap()).unwrap());
        assert!(
            !ob.ack(a.event_id.unwrap()).unwrap(),
            "a second ack is harmless"
        );
        drop(ob);
        let (mut ob, _) = Outbox::open(dir.path(), 100).unwrap();
        let left: Vec<_> = ob.pending().map(|e| e.event_id).collect();
        assert_eq!(left, vec![b.event_id]);
        ob.ack(b.event_id.unwrap()).unwrap();
        drop(ob);
        let (mut ob, _) = Outbox::open(dir.path(), 100).unwrap();
        assert!(ob.is_empty());
        assert_eq!(
            ob.push(Event::new(EventType::Ready)).unwrap().seq,
            Some(3),
            "seq never reused"
        );
    }

    #[test]
    fn kill_between_event_and_counter_keeps_the_event_and_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 10).unwrap();
        ob.push(Event::new(EventType::TookOff)).unwrap();
        let second = ob.push(Event::new(EventType::Arrived)).unwrap();
        drop(ob);
        // the process died after writing event 2 but before the counter said 2
        std::fs::write(dir.path().join("seq"), b"1").unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(ob.pending().last().unwrap().event_id, second.event_id);
        assert_eq!(ob.push(Event::new(EventType::Ready)).unwrap().seq, Some(3));
    }

    #[test]
    fn an_event_file_claiming_a_later_seq_than_its_name_never_has_it_reused() {
        // found by the outbox_load fuzzer: file 7 holding an event that says seq 8, no counter;
        // the next event took 8 again
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("00000000000000000007.json"),
            r#"{"event_type": "door_opened", "event_id": "7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f", "seq": 8, "cell_id": 4, "timestamp": "2026-12-02T01:00:00Z"}"#,
        )
        .unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 16).unwrap();
        let next = ob.push(Event::new(EventType::Ready)).unwrap();
        assert_eq!(next.seq, Some(9));
    }

    #[test]
    fn a_counter_at_the_last_seq_refuses_with_an_error_not_a_panic() {
        // found by the outbox_load fuzzer: a counter file saying u64::MAX overflowed in push
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seq"), u64::MAX.to_string()).unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 16).unwrap();
        let err = ob.push(Event::new(EventType::Ready)).unwrap_err();
        assert!(err.to_string().contains("used up"), "{err}");
    }

    #[test]
    fn a_failed_counter_write_never_reuses_a_seq() {
        // issue 18: the event file was written but the counter was not (full disk). The event
        // is on disk, so its seq is spent: the caller must be told it is stored (else it is
        // queued again: a duplicate), and the next event must not take the seq again (it
        // would overwrite it, and the backend would see one seq for two events).
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 10).unwrap();
        let mut told = std::collections::HashMap::new();
        let mut push = |ob: &mut Outbox, kind| {
            let mut ev = Event::new(kind);
            let id = Uuid::new_v4();
            ev.event_id = Some(id);
            if let Ok(stored) = ob.push(ev) {
                told.insert(id, stored.seq.unwrap());
            }
        };
        push(&mut ob, EventType::DoorOpened);
        // a write that fails on purpose: the counter's temporary name is a directory
        std::fs::create_dir(dir.path().join("seq.tmp")).unwrap();
        push(&mut ob, EventType::DoorClosed);
        push(&mut ob, EventType::ParcelLoaded);
        std::fs::remove_dir(dir.path().join("seq.tmp")).unwrap();
        drop(ob);
        let (mut ob, _) = Outbox::open(dir.path(), 10).unwrap();
        for e in ob.pending() {
            assert_eq!(
                told.get(&e.event_id.unwrap()),
                e.seq.as_ref(),
                "an event on disk that its caller was told failed, or under another seq: {e:?}"
            );
        }
        let next = ob.push(Event::new(EventType::Ready)).unwrap().seq.unwrap();
        assert!(told.values().all(|s| *s < next), "{next} after {told:?}");
    }

    #[test]
    fn a_lost_counter_file_restarts_above_the_highest_seq_ever_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 10).unwrap();
        let ids: Vec<Uuid> = (0..3)
            .map(|_| {
                ob.push(Event::new(EventType::CellOpened))
                    .unwrap()
                    .event_id
                    .unwrap()
            })
            .collect();
        for id in ids {
            ob.ack(id).unwrap();
        }
        drop(ob);
        std::fs::remove_file(dir.path().join("seq")).unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(ob.push(Event::new(EventType::Ready)).unwrap().seq, Some(4));
    }

    #[test]
    fn full_outbox_evicts_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), 2).unwrap();
        for _ in 0..3 {
            ob.push(Event::new(EventType::Arrived)).unwrap();
        }
        assert_eq!(ob.len(), 2);
        assert_eq!(ob.evicted(), 1);
        assert_eq!(ob.pending().next().unwrap().seq, Some(2));
    }

    #[test]
    fn corrupt_file_is_set_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000000000000007.json"), b"{not json").unwrap();
        let (ob, problems) = Outbox::open(dir.path(), 10).unwrap();
        assert!(ob.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(dir
            .path()
            .join("00000000000000000007.json.corrupt")
            .exists());
    }
}
