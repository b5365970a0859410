//! The camera loop: frames → QR decoding → debounce → a pickup.
//!
//! The camera and the decoder are blocking and CPU-bound, so they run on a thread of their own at
//! the configured frame rate; fresh codes cross to the async side on a channel, where
//! [`run_pickups`] hands each to [`Locker::qr_scan`] (which validates it, opens the cell and tells
//! the screen).
//!
//! Debounce: a code counts again only after it has been out of sight for `debounce` — a customer
//! holding a phone up for ten seconds is one scan, not a hundred. (Showing a used code again later
//! is a second scan, which the locker then refuses as used.)

use crate::locker::Locker;
use hal::camera::Camera;
use hal::lockboard::LockBoard;
use hal::qr::QrDecoder;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

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

/// Counters a benchmark or `/health` can read.
#[derive(Debug, Default)]
pub struct ScannerStats {
    pub frames: AtomicU64,
    pub camera_errors: AtomicU64,
    pub codes: AtomicU64,
    pub scans: AtomicU64,
}

/// The running camera thread. Dropping it (or [`ScannerHandle::stop`]) stops the thread.
pub struct ScannerHandle {
    stop: Arc<AtomicBool>,
    pub stats: Arc<ScannerStats>,
    frames: tokio::sync::watch::Receiver<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScannerHandle {
    /// Frames processed so far, as they happen (a test waits on it instead of sleeping).
    pub fn frames(&self) -> tokio::sync::watch::Receiver<u64> {
        self.frames.clone()
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ScannerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the camera thread; fresh codes arrive on the returned channel.
pub fn spawn(
    mut camera: Box<dyn Camera>,
    mut decoder: QrDecoder,
    fps: f64,
    debounce: Duration,
) -> std::io::Result<(ScannerHandle, mpsc::Receiver<String>)> {
    let (tx, rx) = mpsc::channel(8);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ScannerStats::default());
    let frame_time = Duration::from_secs_f64(1.0 / fps.max(0.1));
    let (stop2, stats2) = (stop.clone(), stats.clone());
    let (frames_tx, frames) = tokio::sync::watch::channel(0u64);
    let name = camera.describe();
    let thread = std::thread::Builder::new()
        .name("qr-camera".into())
        .spawn(move || {
            let span = tracing::info_span!("camera", source = %name);
            let _g = span.enter();
            info!(
                fps,
                second_opinion = decoder.has_second_opinion(),
                "camera loop started"
            );
            let mut debouncer = Debouncer::new(debounce);
            let mut failing = false;
            while !stop2.load(Ordering::Relaxed) {
                let started = Instant::now();
                match camera.grab() {
                    Ok(frame) => {
                        if failing {
                            info!("camera frames are back");
                            failing = false;
                        }
                        let decoded = decoder.decode(&frame);
                        for code in decoded.codes {
                            stats2.codes.fetch_add(1, Ordering::Relaxed);
                            if debouncer.fresh(&code, Instant::now()) {
                                stats2.scans.fetch_add(1, Ordering::Relaxed);
                                debug!(stage = ?decoded.stage, "QR code scanned");
                                if tx.blocking_send(code).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        stats2.camera_errors.fetch_add(1, Ordering::Relaxed);
                        if !failing {
                            warn!(error = %e, "camera frame failed");
                            failing = true;
                        }
                    }
                }
                let n = stats2.frames.fetch_add(1, Ordering::Relaxed) + 1;
                frames_tx.send_replace(n);
                // Rate limit: the camera's own pace on hardware; files would otherwise spin.
                if let Some(rest) = frame_time.checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        })?;
    Ok((
        ScannerHandle {
            stop,
            stats,
            frames,
            thread: Some(thread),
        },
        rx,
    ))
}

/// Turns each fresh code into a pickup attempt, one at a time (a customer is in front of one
/// locker; a second code while the first is being checked waits).
pub async fn run_pickups<B: LockBoard>(locker: Arc<Locker<B>>, mut codes: mpsc::Receiver<String>) {
    while let Some(code) = codes.recv().await {
        match locker.qr_scan(&code).await {
            Ok(r) => info!(cell = r.cell_id, order_id = ?r.order_id, "pickup: cell opened"),
            Err(f) => info!(code = f.code, reason = %f.message, "pickup refused"),
        }
    }
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
