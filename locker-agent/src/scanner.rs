//! The camera loop: frames → QR decoding → debounce → a pickup.
//!
//! The camera and the decoder are blocking and CPU-bound, so they run on the grab loop's thread
//! (`hal::camera::grab`: fixed rate, a failed camera reopened with backoff); fresh codes cross to
//! the async side on a channel, where [`crate::locker::run_pickups`] hands each to
//! [`crate::locker::Locker::qr_scan`] (which validates it, opens the cell and tells
//! the screen).
//!
//! Debounce: a code counts again only after it has been out of sight for `debounce` — a customer
//! holding a phone up for ten seconds is one scan, not a hundred. (Showing a used code again later
//! is a second scan, which the locker then refuses as used.)

use hal::camera::grab::{CameraHealth, FrameSink, GrabConfig, GrabLoop};
use hal::camera::{CameraSource, Frame};
use hal::qr::{Decoded, QrDecoder};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

/// Remembers when each code was last seen.
#[derive(Debug)]
pub struct Debouncer {
    hold: Duration,
    last_seen: HashMap<String, Instant>,
}

impl Debouncer {
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            last_seen: HashMap::new(),
        }
    }

    /// True when `code`, seen at `now`, is a new scan.
    pub fn fresh(&mut self, code: &str, now: Instant) -> bool {
        let hold = self.hold;
        self.last_seen
            .retain(|_, t| now.saturating_duration_since(*t) <= hold);
        let fresh = !self.last_seen.contains_key(code);
        self.last_seen.insert(code.to_owned(), now);
        fresh
    }
}

/// Counters a benchmark, `/health` and the technician can read.
#[derive(Debug, Default)]
pub struct ScannerStats {
    /// Loop turns: frames grabbed plus failed grabs.
    pub frames: AtomicU64,
    pub camera_errors: AtomicU64,
    pub codes: AtomicU64,
    pub scans: AtomicU64,
    /// Frames with a sign of a code (a grid, finder patterns) that no decoder could read: the
    /// decoder's failures as the customer sees them (a code held up, nothing happening).
    pub unreadable: AtomicU64,
    /// Whether the latest grab failed.
    pub failing: AtomicBool,
    last_frame: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

impl ScannerStats {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // plain values: a panic elsewhere cannot leave them half-written
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the last good frame arrived.
    pub fn last_frame(&self) -> Option<Instant> {
        *Self::lock(&self.last_frame)
    }

    /// The last grab error, if any since the start.
    pub fn last_error(&self) -> Option<String> {
        Self::lock(&self.last_error).clone()
    }
}

/// One frame and what the decoder made of it (`locker-agent test camera`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub frame: Frame,
    pub decoded: Decoded,
    pub grabbed_at: SystemTime,
}

/// The camera loop as the rest of the agent sees it: counters, and a way to ask for the next
/// frame. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CameraProbe {
    /// What the camera is (`/dev/video0`, a directory).
    pub source: String,
    pub frame_time: Duration,
    pub started: Instant,
    pub stats: Arc<ScannerStats>,
    snapshots: std::sync::mpsc::Sender<oneshot::Sender<Snapshot>>,
}

/// The camera loop's state for `/health` and `locker-agent status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CameraStatus {
    pub source: String,
    /// Frames arriving now: the latest grab worked and is recent.
    pub ok: bool,
    pub frames: u64,
    /// Seconds since the last good frame; `None` before the first.
    pub last_frame_age_s: Option<f64>,
    pub camera_errors: u64,
    /// Frames with a code in sight that could not be read.
    pub unreadable: u64,
    pub scans: u64,
    pub last_error: Option<String>,
}

impl CameraStatus {
    /// The one-line form `/health` and the technician's `status` share.
    pub fn detail(&self) -> String {
        let age = self
            .last_frame_age_s
            .map_or("no frame yet".to_owned(), |a| {
                format!("last frame {a:.1} s ago")
            });
        let mut d = format!(
            "{}: {}, {} frames, {} camera errors, {} unreadable codes",
            self.source, age, self.frames, self.camera_errors, self.unreadable
        );
        if !self.ok {
            if let Some(e) = &self.last_error {
                d.push_str(&format!("; last error: {e}"));
            }
        }
        d
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    #[error("the camera loop has stopped")]
    Stopped,
    #[error("no frame from the camera within {0:?}")]
    Timeout(Duration),
}

impl CameraProbe {
    /// A frame older than this means frames have stopped arriving (a few frame times, and never
    /// less than a second: USB cameras stall briefly when the light changes).
    pub fn stale_after(&self) -> Duration {
        (self.frame_time * 5).max(Duration::from_secs(1))
    }

    pub fn status(&self) -> CameraStatus {
        let st = &self.stats;
        let age = st.last_frame().map(|t| t.elapsed());
        CameraStatus {
            source: self.source.clone(),
            ok: !st.failing.load(Ordering::Relaxed) && age.is_some_and(|a| a <= self.stale_after()),
            frames: st.frames.load(Ordering::Relaxed),
            last_frame_age_s: age.map(|a| a.as_secs_f64()),
            camera_errors: st.camera_errors.load(Ordering::Relaxed),
            unreadable: st.unreadable.load(Ordering::Relaxed),
            scans: st.scans.load(Ordering::Relaxed),
            last_error: st.last_error(),
        }
    }

    /// The next good frame and its decoding.
    pub async fn snapshot(&self, timeout: Duration) -> Result<Snapshot, SnapshotError> {
        let (tx, rx) = oneshot::channel();
        self.snapshots
            .send(tx)
            .map_err(|_| SnapshotError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(SnapshotError::Stopped),
            Err(_) => Err(SnapshotError::Timeout(timeout)),
        }
    }
}

/// The running camera thread. Dropping it (or [`ScannerHandle::stop`]) stops the thread.
pub struct ScannerHandle {
    pub stats: Arc<ScannerStats>,
    probe: CameraProbe,
    frames: tokio::sync::watch::Receiver<u64>,
    grab: Option<GrabLoop>,
}

impl ScannerHandle {
    /// Loop turns so far (frames and failed attempts), as they happen (a test waits on it
    /// instead of sleeping).
    pub fn frames(&self) -> tokio::sync::watch::Receiver<u64> {
        self.frames.clone()
    }

    /// The loop's counters and snapshot requests, for `/health` and the technician socket.
    pub fn probe(&self) -> CameraProbe {
        self.probe.clone()
    }

    /// The grab loop's own view: opens, reopens, errors.
    pub fn health(&self) -> Option<tokio::sync::watch::Receiver<CameraHealth>> {
        self.grab.as_ref().map(|g| g.health())
    }

    pub fn stop(mut self) {
        if let Some(g) = self.grab.take() {
            g.stop();
        }
    }
}

/// What the grab loop's frames go to: the decoder, the debouncer, the counters.
struct Scan {
    decoder: QrDecoder,
    debouncer: Debouncer,
    stats: Arc<ScannerStats>,
    codes: mpsc::Sender<String>,
    turns: tokio::sync::watch::Sender<u64>,
    snapshots: std::sync::mpsc::Receiver<oneshot::Sender<Snapshot>>,
}

impl Scan {
    fn turn(&self) {
        let n = self.stats.frames.fetch_add(1, Ordering::Relaxed) + 1;
        self.turns.send_replace(n);
    }
}

impl FrameSink for Scan {
    fn frame(&mut self, frame: Frame, captured: Instant, wall: SystemTime) -> bool {
        let st = self.stats.clone();
        let decoded = self.decoder.decode(&frame);
        *ScannerStats::lock(&st.last_frame) = Some(captured);
        st.failing.store(false, Ordering::Relaxed);
        if decoded.hint && decoded.codes.is_empty() {
            st.unreadable.fetch_add(1, Ordering::Relaxed);
        }
        for code in &decoded.codes {
            st.codes.fetch_add(1, Ordering::Relaxed);
            if self.debouncer.fresh(code, Instant::now()) {
                st.scans.fetch_add(1, Ordering::Relaxed);
                debug!(stage = ?decoded.stage, "QR code scanned");
                if self.codes.blocking_send(code.clone()).is_err() {
                    return false;
                }
            }
        }
        // Whoever asked for a frame gets this one (the copy only when asked).
        while let Ok(reply) = self.snapshots.try_recv() {
            let _ = reply.send(Snapshot {
                frame: frame.clone(),
                decoded: decoded.clone(),
                grabbed_at: wall,
            });
        }
        self.turn();
        true
    }

    fn fault(&mut self, why: &str, _first: bool) {
        self.stats.camera_errors.fetch_add(1, Ordering::Relaxed);
        self.stats.failing.store(true, Ordering::Relaxed);
        *ScannerStats::lock(&self.stats.last_error) = Some(why.to_owned());
        // a presentation does not survive the camera going away
        self.decoder.forget();
        self.turn();
    }
}

/// Starts the camera thread on `source` (opened on that thread, and reopened with backoff
/// whenever it fails); fresh codes arrive on the returned channel.
pub fn spawn(
    source: &CameraSource,
    decoder: QrDecoder,
    fps: f64,
    debounce: Duration,
) -> std::io::Result<(ScannerHandle, mpsc::Receiver<String>)> {
    let (tx, rx) = mpsc::channel(8);
    let stats = Arc::new(ScannerStats::default());
    let cfg = GrabConfig::new(fps);
    let (turns, frames) = tokio::sync::watch::channel(0u64);
    let name = source.describe();
    let (snap_tx, snap_rx) = std::sync::mpsc::channel::<oneshot::Sender<Snapshot>>();
    let probe = CameraProbe {
        source: name.clone(),
        frame_time: cfg.period(),
        started: Instant::now(),
        stats: stats.clone(),
        snapshots: snap_tx,
    };
    info!(
        camera = %name,
        fps,
        second_opinion = decoder.has_second_opinion(),
        "camera loop starting"
    );
    let sink = Scan {
        decoder,
        debouncer: Debouncer::new(debounce),
        stats: stats.clone(),
        codes: tx,
        turns,
        snapshots: snap_rx,
    };
    let src = source.clone();
    let grab = GrabLoop::spawn("qr-camera", name, Box::new(move || src.open()), cfg, sink)?;
    Ok((
        ScannerHandle {
            stats,
            probe,
            frames,
            grab: Some(grab),
        },
        rx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_code_is_one_scan() {
        let mut d = Debouncer::new(Duration::from_secs(3));
        let t0 = Instant::now();
        assert!(d.fresh("A", t0));
        for i in 1..100 {
            assert!(!d.fresh("A", t0 + Duration::from_millis(100 * i)));
        }
        assert!(d.fresh("B", t0 + Duration::from_secs(10)));
        // out of sight for longer than the hold: a new scan
        assert!(d.fresh("A", t0 + Duration::from_secs(20)));
    }
}
