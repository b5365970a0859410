//! The grab loop both agents run their camera on: one thread that opens the source, grabs at a
//! fixed rate while frames are wanted, and when the camera fails (unplugged, a directory gone, no
//! frame in time) closes it and reopens it with a bounded exponential backoff, reporting the
//! fault once and the recovery once. Health ([`CameraHealth`]) is published on a `watch`.
//!
//! What the frames are for is the [`FrameSink`]'s business: the locker decodes QR codes, the
//! drone finds markers and encodes video. The sink runs on the loop's thread (frames are big and
//! the work is CPU-bound: no copy, no queue).

use super::{Camera, CameraError, Frame};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Opens (and after a fault, reopens) the camera.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn Camera>, CameraError> + Send>;

#[derive(Debug, Clone, PartialEq)]
pub struct GrabConfig {
    /// Frames per second while frames are wanted.
    pub fps: f64,
    /// A grab that takes longer than this is a fault (a camera that stalls).
    pub lost_after: Duration,
    /// First wait before reopening a failed camera; doubled after each failed attempt...
    pub reopen_min: Duration,
    /// ...up to this.
    pub reopen_max: Duration,
}

impl GrabConfig {
    pub fn new(fps: f64) -> Self {
        Self {
            fps,
            lost_after: Duration::from_secs(2),
            reopen_min: Duration::from_millis(250),
            reopen_max: Duration::from_secs(5),
        }
    }

    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps.clamp(0.1, 1000.0))
    }
}

/// The camera as health checks see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CameraHealth {
    /// What the camera is (`/dev/video0 640x480 YUYV (V4L2)`, a directory).
    pub source: String,
    /// The latest attempt gave a frame.
    pub ok: bool,
    pub frames: u64,
    /// Failed opens and grabs.
    pub errors: u64,
    /// Times the camera was opened again after a fault.
    pub reopens: u64,
    pub last_error: Option<String>,
    pub last_frame: Option<Instant>,
}

/// What the loop's frames go to. Runs on the loop's thread.
pub trait FrameSink: Send + 'static {
    /// Called before each frame: blocks while no frames are wanted (the drone between
    /// approaches); `false` ends the loop. Default: always wanted.
    fn wanted(&mut self) -> bool {
        true
    }
    /// A good frame. `false` ends the loop.
    fn frame(&mut self, frame: Frame, captured: Instant, captured_wall: SystemTime) -> bool;
    /// An open or a grab failed; `first` on the first failure after frames (or at start).
    fn fault(&mut self, _why: &str, _first: bool) {}
    /// Frames arrive again after a fault.
    fn restored(&mut self) {}
}

/// The running loop. Dropping it (or [`GrabLoop::stop`]) stops the thread at its next wait;
/// [`GrabLoop::detach`] leaves it to the sink to end it.
pub struct GrabLoop {
    stop: Option<mpsc::Sender<()>>,
    health: watch::Receiver<CameraHealth>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrabLoop {
    /// Starts the loop on a thread named `name`. The first open happens on that thread.
    pub fn spawn(
        name: &str,
        describe: String,
        open: Opener,
        cfg: GrabConfig,
        sink: impl FrameSink,
    ) -> std::io::Result<Self> {
        let (stop_tx, stop_rx) = mpsc::channel();
        let (health_tx, health) = watch::channel(CameraHealth {
            source: describe,
            ..CameraHealth::default()
        });
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(open, cfg, sink, stop_rx, health_tx))?;
        Ok(Self {
            stop: Some(stop_tx),
            health,
            thread: Some(thread),
        })
    }

    pub fn health(&self) -> watch::Receiver<CameraHealth> {
        self.health.clone()
    }

    /// Stops the loop and waits for its thread.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Lets the loop run on without this handle: it ends when its sink says so (`wanted` or
    /// `frame` returning false). Returns its health.
    pub fn detach(mut self) -> watch::Receiver<CameraHealth> {
        // dropped without a message: the thread reads that as "no one will stop me"
        self.stop.take();
        self.thread.take();
        self.health.clone()
    }
}

impl Drop for GrabLoop {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Waits `d` unless stopped first; true when stopped. A detached loop (sender gone, no
/// message) just waits.
fn pause(stop: &mpsc::Receiver<()>, d: Duration) -> bool {
    match stop.recv_timeout(d) {
        Err(RecvTimeoutError::Timeout) => false,
        Ok(()) => true,
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(d);
            false
        }
    }
}

fn run(
    mut open: Opener,
    cfg: GrabConfig,
    mut sink: impl FrameSink,
    stop: mpsc::Receiver<()>,
    health: watch::Sender<CameraHealth>,
) {
    let period = cfg.period();
    let mut camera: Option<Box<dyn Camera>> = None;
    let mut ever_opened = false;
    let mut faulty = false;
    let mut backoff = cfg.reopen_min;
    let mut next = Instant::now();
    let mut fail_first_open = None;
    // opened at once, wanted or not: a camera missing at start is reported at start
    match open() {
        Ok(c) => {
            health.send_modify(|h| h.source = c.describe());
            camera = Some(c);
            ever_opened = true;
        }
        Err(e) => fail_first_open = Some(format!("cannot open: {e}")),
    }
    let fail = |why: String, faulty: &mut bool, sink: &mut dyn FnMut(&str, bool)| {
        health.send_modify(|h| {
            h.ok = false;
            h.errors += 1;
            h.last_error = Some(why.clone());
        });
        let first = !*faulty;
        if first {
            warn!(error = %why, "camera failed; reopening it with backoff");
        } else {
            debug!(error = %why, "camera still failing");
        }
        *faulty = true;
        sink(&why, first);
    };
    if let Some(why) = fail_first_open {
        fail(why, &mut faulty, &mut |w, f| sink.fault(w, f));
    }
    loop {
        if !sink.wanted() {
            return;
        }
        let now = Instant::now();
        if next > now && pause(&stop, next - now) {
            return;
        }
        if stop.try_recv().is_ok() {
            return;
        }
        next = Instant::now().max(next) + period;
        let cam = match camera.as_mut() {
            Some(c) => c,
            None => match open() {
                Ok(c) => {
                    if ever_opened {
                        health.send_modify(|h| h.reopens += 1);
                    }
                    ever_opened = true;
                    health.send_modify(|h| h.source = c.describe());
                    camera.insert(c)
                }
                Err(e) => {
                    fail(format!("cannot open: {e}"), &mut faulty, &mut |w, f| {
                        sink.fault(w, f)
                    });
                    if pause(&stop, backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(cfg.reopen_max);
                    next = Instant::now();
                    continue;
                }
            },
        };
        let started = Instant::now();
        match cam.grab() {
            Ok(frame) if started.elapsed() <= cfg.lost_after => {
                let captured = Instant::now();
                backoff = cfg.reopen_min;
                health.send_modify(|h| {
                    h.ok = true;
                    h.frames += 1;
                    h.last_frame = Some(captured);
                });
                if std::mem::take(&mut faulty) {
                    info!("camera delivering frames again");
                    sink.restored();
                }
                if !sink.frame(frame, captured, SystemTime::now()) {
                    return;
                }
            }
            res => {
                let why = match res {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("no frame for {:.1} s", started.elapsed().as_secs_f64()),
                };
                camera = None;
                fail(why, &mut faulty, &mut |w, f| sink.fault(w, f));
                if pause(&stop, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(cfg.reopen_max);
                next = Instant::now();
            }
        }
    }
}
