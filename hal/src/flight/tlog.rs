//! Flight logs as `.tlog` files (issue 13): every MAVLink frame on the autopilot link, both ways,
//! from arming to disarming plus a margin, in the format MAVProxy and QGroundControl write (per
//! frame: the wall-clock time as 8-byte big-endian microseconds since the Unix epoch, then the
//! frame's raw bytes), so pymavlink's `mavlogdump.py` and any ground station open them.
//!
//! Disk is bounded: the files in the log folder never add up to more than `max_bytes`; the oldest
//! are deleted first, and a flight that alone outgrows the bound stops being recorded. A disk that
//! refuses writes never stops the caller: the recorder says so once ([`RecorderEvent::Failed`])
//! and records nothing more until the vehicle has disarmed. Time is passed in, never read.
//!
//! Not wired yet: the link's transport hands frames to a recorder in a later change (issue 13).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    pub dir: PathBuf,
    /// The most the folder's `.tlog` files may add up to.
    pub max_bytes: u64,
    /// How long recording goes on after the vehicle disarmed.
    pub margin: Duration,
}

/// What changed, for the caller to log and report.
#[derive(Debug, Clone, PartialEq)]
pub enum RecorderEvent {
    Started(PathBuf),
    Finished {
        path: PathBuf,
        bytes: u64,
    },
    /// Recording of this flight stopped: the disk refused, or the flight outgrew `max_bytes`.
    Failed {
        path: PathBuf,
        reason: String,
    },
    /// An old log deleted to make room.
    Deleted(PathBuf),
}

enum State {
    Idle,
    Recording {
        out: Output,
        trailing_until: Option<SystemTime>,
    },
    /// This flight is not being recorded (it failed); waiting for the disarm to start afresh.
    Stopped,
}

struct Output {
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
    last_flush: SystemTime,
}

/// Records flights, frame by frame. One per autopilot link.
pub struct FlightRecorder {
    config: RecorderConfig,
    state: State,
    /// The other logs in the folder, oldest first, with their sizes.
    older: Vec<(PathBuf, u64)>,
}

/// How often buffered frames are written out: a crash loses at most this much of the log.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl FlightRecorder {
    pub fn new(config: RecorderConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            older: Vec::new(),
        }
    }

    /// One frame on the link at `at`, with the vehicle's armed state as last reported. Returns
    /// what changed (at most a few events: started, deleted old logs, finished or failed).
    pub fn frame(&mut self, at: SystemTime, armed: bool, frame: &[u8]) -> Vec<RecorderEvent> {
        let mut events = Vec::new();
        match &mut self.state {
            State::Idle if armed => match self.start(at) {
                Ok(path) => events.push(RecorderEvent::Started(path)),
                Err((path, e)) => {
                    events.push(RecorderEvent::Failed {
                        path,
                        reason: e.to_string(),
                    });
                    self.state = State::Stopped;
                    return events;
                }
            },
            State::Idle => return events,
            State::Stopped => {
                if !armed {
                    self.state = State::Idle;
                }
                return events;
            }
            State::Recording { trailing_until, .. } => {
                if armed {
                    *trailing_until = None;
                } else if trailing_until.is_none() {
                    *trailing_until = Some(at + self.config.margin);
                }
            }
        }
        if let Err(reason) = self.write(at, frame, &mut events) {
            let path = self.current_path();
            self.state = State::Stopped;
            events.push(RecorderEvent::Failed { path, reason });
            if !armed {
                self.state = State::Idle;
            }
            return events;
        }
        if let State::Recording {
            trailing_until: Some(until),
            ..
        } = &self.state
        {
            if at >= *until {
                events.extend(self.close());
            }
        }
        events
    }

    /// Closes the current log (the margin ran out, or shutdown): what it holds stays.
    pub fn close(&mut self) -> Option<RecorderEvent> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Recording { out, .. } => Some(finish(out)),
            other => {
                self.state = other;
                None
            }
        }
    }

    fn current_path(&self) -> PathBuf {
        match &self.state {
            State::Recording { out, .. } => out.path.clone(),
            _ => self.config.dir.clone(),
        }
    }

    fn start(&mut self, at: SystemTime) -> Result<PathBuf, (PathBuf, io::Error)> {
        let dir = self.config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
        self.older = list(&dir)
            .map_err(|e| (dir.clone(), e))?
            .into_iter()
            .map(|l| (l.path, l.bytes))
            .collect();
        let mut path = dir.join(file_name(at));
        // two flights in one second (a bounce): a suffix, never an overwrite
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!(
                "{}-{n}.tlog",
                file_name(at).trim_end_matches(".tlog")
            ));
            n += 1;
        }
        let file = File::create(&path).map_err(|e| (path.clone(), e))?;
        self.state = State::Recording {
            out: Output {
                path: path.clone(),
                file: BufWriter::with_capacity(64 * 1024, file),
                bytes: 0,
                last_flush: at,
            },
            trailing_until: None,
        };
        Ok(path)
    }

    fn write(
        &mut self,
        at: SystemTime,
        frame: &[u8],
        events: &mut Vec<RecorderEvent>,
    ) -> Result<(), String> {
        let State::Recording { out, .. } = &mut self.state else {
            return Ok(());
        };
        let record = 8 + frame.len() as u64;
        // room first: the oldest logs go until this frame fits under the bound
        while out.bytes + record + self.older.iter().map(|(_, b)| b).sum::<u64>()
            > self.config.max_bytes
        {
            if self.older.is_empty() {
                return Err(format!(
                    "the flight alone outgrew the log folder's bound of {} bytes",
                    self.config.max_bytes
                ));
            }
            let (old, _) = self.older.remove(0);
            match fs::remove_file(&old) {
                Ok(()) => events.push(RecorderEvent::Deleted(old)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete the old log {}: {e}", old.display())),
            }
        }
        let micros = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        out.file
            .write_all(&micros.to_be_bytes())
            .and_then(|()| out.file.write_all(frame))
            .map_err(|e| format!("write failed: {e}"))?;
        out.bytes += record;
        if at.duration_since(out.last_flush).unwrap_or_default() >= FLUSH_EVERY {
            out.file.flush().map_err(|e| format!("write failed: {e}"))?;
            out.last_flush = at;
        }
        Ok(())
    }
}

fn finish(mut out: Output) -> RecorderEvent {
    match out
        .file
        .flush()
        .and_then(|()| out.file.get_ref().sync_all())
    {
        Ok(()) => RecorderEvent::Finished {
            path: out.path,
            bytes: out.bytes,
        },
        Err(e) => RecorderEvent::Failed {
            path: out.path,
            reason: format!("closing failed: {e}"),
        },
    }
}

/// `flight-20261202T091500Z.tlog`: names sort by time.
fn file_name(at: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = at.into();
    format!("flight-{}.tlog", t.format("%Y%m%dT%H%M%SZ"))
}

/// One log in the folder.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFile {
    pub path: PathBuf,
    pub bytes: u64,
}

/// The folder's `.tlog` files, oldest first (for `drone-agent logs` too).
pub fn list(dir: &Path) -> io::Result<Vec<LogFile>> {
    let mut logs = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(logs),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tlog") {
            logs.push(LogFile {
                bytes: entry.metadata()?.len(),
                path,
            });
        }
    }
    logs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_000_000 + secs)
    }

    fn recorder(dir: &Path, max_bytes: u64) -> FlightRecorder {
        FlightRecorder::new(RecorderConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            margin: Duration::from_secs(5),
        })
    }

    #[test]
    fn records_from_arm_to_disarm_plus_the_margin_in_tlog_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path(), 1 << 20);
        assert!(
            r.frame(t(0), false, b"before").is_empty(),
            "nothing before arming"
        );
        let ev = r.frame(t(1), true, b"armed");
        assert!(matches!(&ev[..], [RecorderEvent::Started(_)]), "{ev:?}");
        assert!(r.frame(t(2), false, b"disarmed").is_empty());
        assert!(r.frame(t(6), false, b"margin").is_empty());
        let ev = r.frame(t(7), false, b"last");
        let [RecorderEvent::Finished { path, bytes }] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(*bytes, 4 * 8 + 5 + 8 + 6 + 4);
        assert!(
            r.frame(t(8), false, b"after").is_empty(),
            "nothing after the margin"
        );
        let data = fs::read(path).unwrap();
        assert_eq!(data.len() as u64, *bytes);
        let micros = u64::from_be_bytes(data[..8].try_into().unwrap());
        assert_eq!(
            micros,
            t(1).duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
        );
        assert_eq!(&data[8..13], b"armed");
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("flight-2026"));
    }

    #[test]
    fn rearming_in_the_margin_keeps_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path(), 1 << 20);
        r.frame(t(0), true, b"a");
        r.frame(t(1), false, b"b");
        r.frame(t(3), true, b"c"); // a bounce: armed again within the margin
        assert!(r.frame(t(20), true, b"d").is_empty());
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn oldest_logs_go_first_and_a_flight_that_outgrows_the_bound_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path(), 100);
        for flight in 0..3u64 {
            let base = flight * 100;
            r.frame(t(base), true, &[0u8; 22]);
            r.frame(t(base + 1), false, &[0u8; 22]);
            r.frame(t(base + 10), false, &[0u8; 2]);
        }
        // each flight is 30 + 30 + 10 = 70 bytes: only the newest fits under 100
        let logs = list(dir.path()).unwrap();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0]
            .path
            .to_string_lossy()
            .contains(&file_name(t(200))[..20]));
        // a flight bigger than the bound: stopped once, nothing more this flight, then afresh
        let ev = r.frame(t(300), true, &[0u8; 120]);
        assert!(
            ev.iter().any(
                |e| matches!(e, RecorderEvent::Failed { reason, .. } if reason.contains("outgrew"))
            ),
            "{ev:?}"
        );
        assert!(r.frame(t(301), true, b"x").is_empty());
        r.frame(t(302), false, b"x");
        assert!(matches!(
            &r.frame(t(400), true, b"y")[..],
            [RecorderEvent::Started(_), ..]
        ));
    }

    #[test]
    fn a_folder_that_cannot_be_written_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // a file where the folder should be: creating the folder fails
        let blocked = dir.path().join("logs");
        fs::write(&blocked, b"not a folder").unwrap();
        let mut r = recorder(&blocked, 1 << 20);
        let ev = r.frame(t(0), true, b"a");
        assert!(matches!(&ev[..], [RecorderEvent::Failed { .. }]), "{ev:?}");
        assert!(
            r.frame(t(1), true, b"b").is_empty(),
            "reported once per flight"
        );
    }
}
