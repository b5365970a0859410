//! MAVLink 2 message signing on one endpoint (<https://mavlink.io/en/guide/message_signing.html>),
//! with the `mavlink` crate's frame helpers (`mav2-message-signing`: the signed flag, the
//! signature's SHA-256) and our own timestamp state, because the spec wants it persisted and the
//! crate's `SigningData` keeps it private.
//!
//! Signing is per hop: frames from a signed endpoint are checked here and go on to the autopilot
//! unsigned (its link is the agent's, on the vehicle); frames to the endpoint are signed here.
//!
//! Timestamps (10 µs ticks since 2015-01-01): ours only go up; an incoming stream (link id,
//! system, component) must go up too (a replay is dropped), and a stream first seen more than a
//! minute behind our clock is refused. The clock is saved to the state dir every
//! [`SAVE_EVERY`]; at start it resumes at the saved value plus that interval (a crash loses at
//! most that much), or at the wall clock if later: a Pi without a real-time clock that boots in
//! 1970 still never reuses a timestamp.

use mavlink::MAVLinkV2MessageRaw;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How often a changed signing clock is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);
const TICKS_PER_S: u64 = 100_000;
/// 2015-01-01T00:00:00Z in Unix seconds: the signing epoch.
const EPOCH_2015: u64 = 1_420_070_400;
/// A new stream this far behind our clock is a replay of an old one.
const NEW_STREAM_SLACK: u64 = 60 * TICKS_PER_S;
const IFLAG_SIGNED: u8 = 0x01;

/// The signing clock at `t`.
pub fn ticks(t: SystemTime) -> u64 {
    let us = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    (us / 10).saturating_sub(u128::from(EPOCH_2015) * u128::from(TICKS_PER_S)) as u64
}

/// Why a frame from a signed endpoint was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Unsigned,
    BadSignature,
    /// Not newer than the last frame of its stream.
    Replayed,
    /// A new stream too far behind our clock.
    Stale,
}

struct State {
    timestamp: u64,
    streams: HashMap<(u8, u32, u8), u64>,
    saved: u64,
}

/// One endpoint's key, link id and clock.
pub struct Signer {
    key: [u8; 32],
    link_id: u8,
    file: Option<PathBuf>,
    state: Mutex<State>,
}

impl Signer {
    /// A signer whose clock resumes from `file` (if given and readable) at `now`.
    pub fn new(key: [u8; 32], link_id: u8, file: Option<PathBuf>, now: SystemTime) -> Self {
        let stored = file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        let resumed = stored.map_or(0, |s| s + SAVE_EVERY.as_secs() * TICKS_PER_S);
        let timestamp = resumed.max(ticks(now));
        Self {
            key,
            link_id,
            file,
            state: Mutex::new(State {
                timestamp,
                streams: HashMap::new(),
                saved: stored.unwrap_or(0),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our clock now (the last timestamp used or accepted).
    pub fn timestamp(&self) -> u64 {
        self.state().timestamp
    }

    /// Signs a frame serialized with `serialize_message_for_signing`.
    pub fn sign(&self, frame: &mut MAVLinkV2MessageRaw, now: SystemTime) {
        let ts = {
            let mut s = self.state();
            s.timestamp = (s.timestamp + 1).max(ticks(now));
            s.timestamp
        };
        *frame.signature_link_id_mut() = self.link_id;
        frame
            .signature_timestamp_bytes_mut()
            .copy_from_slice(&ts.to_le_bytes()[..6]);
        let mut sig = [0u8; 6];
        frame.calculate_signature(&self.key, &mut sig);
        frame.signature_value_mut().copy_from_slice(&sig);
    }

    /// Checks a frame from the endpoint; a good one moves its stream's and our clock on.
    pub fn verify(&self, frame: &MAVLinkV2MessageRaw, now: SystemTime) -> Result<(), Rejection> {
        if frame.incompatibility_flags() & IFLAG_SIGNED == 0 {
            return Err(Rejection::Unsigned);
        }
        let mut sig = [0u8; 6];
        frame.calculate_signature(&self.key, &mut sig);
        if sig != frame.signature_value() {
            return Err(Rejection::BadSignature);
        }
        let ts = frame.signature_timestamp();
        let stream = (
            frame.signature_link_id(),
            frame.system_id(),
            frame.component_id(),
        );
        let mut s = self.state();
        s.timestamp = s.timestamp.max(ticks(now));
        match s.streams.get(&stream) {
            Some(&last) if ts <= last => return Err(Rejection::Replayed),
            None if ts + NEW_STREAM_SLACK < s.timestamp => return Err(Rejection::Stale),
            _ => {}
        }
        s.streams.insert(stream, ts);
        s.timestamp = s.timestamp.max(ts);
        Ok(())
    }

    /// Saves the clock if it moved since the last save (atomically; errors are the caller's to
    /// report).
    pub async fn save(&self) -> Result<(), daemon::fs::WriteError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let ts = {
            let s = self.state();
            if s.timestamp == s.saved {
                return Ok(());
            }
            s.timestamp
        };
        daemon::fs::write_atomic_async(file.clone(), format!("{ts}\n").into_bytes()).await?;
        self.state().saved = ts;
        Ok(())
    }

    /// Where the clock is saved.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mavlink::dialects::ardupilotmega as apm;
    use mavlink::MavHeader;

    fn frame(signer: Option<&Signer>, now: SystemTime) -> MAVLinkV2MessageRaw {
        let mut f = MAVLinkV2MessageRaw::new();
        let header = MavHeader {
            system_id: 255,
            component_id: 190,
            sequence: 7,
        };
        let msg = apm::MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA::default());
        match signer {
            Some(s) => {
                f.serialize_message_for_signing(header, &msg);
                s.sign(&mut f, now);
            }
            None => f.serialize_message(header, &msg),
        }
        f
    }

    #[test]
    fn signed_frames_pass_and_everything_else_is_refused() {
        let now = SystemTime::now();
        let gcs = Signer::new([7; 32], 1, None, now);
        let us = Signer::new([7; 32], 0, None, now);
        let f = frame(Some(&gcs), now);
        assert_eq!(us.verify(&f, now), Ok(()));
        assert_eq!(us.verify(&f, now), Err(Rejection::Replayed));
        assert_eq!(us.verify(&frame(None, now), now), Err(Rejection::Unsigned));
        let stranger = Signer::new([8; 32], 1, None, now);
        assert_eq!(
            us.verify(&frame(Some(&stranger), now), now),
            Err(Rejection::BadSignature)
        );
        // a stream first heard two minutes behind our clock
        let old = Signer::new([7; 32], 2, None, now - Duration::from_secs(120));
        let f = frame(Some(&old), now - Duration::from_secs(120));
        assert_eq!(us.verify(&f, now), Err(Rejection::Stale));
    }

    #[tokio::test]
    async fn the_clock_survives_a_restart_with_the_wall_clock_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gcs.signing");
        let now = SystemTime::now();
        let s = Signer::new([1; 32], 0, Some(file.clone()), now);
        for _ in 0..1000 {
            let _ = frame(Some(&s), now);
        }
        let before = s.timestamp();
        s.save().await.unwrap();
        // the Pi reboots without its clock: 1970
        let again = Signer::new([1; 32], 0, Some(file), SystemTime::UNIX_EPOCH);
        assert!(
            again.timestamp() > before,
            "{} <= {before}",
            again.timestamp()
        );
    }
}
