//! The grab loop both agents run their camera on: a source that vanishes is reported once,
//! retried with backoff, and reported back once it returns; frames resume without a restart.

use hal::camera::grab::{CameraHealth, FrameSink, GrabConfig, GrabLoop};
use hal::camera::{CameraSource, Frame};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Ev {
    Frame(u8),
    Fault(String, bool),
    Restored,
}

struct Sink(mpsc::Sender<Ev>);

impl FrameSink for Sink {
    fn frame(&mut self, frame: Frame, _: Instant, _: SystemTime) -> bool {
        self.0.send(Ev::Frame(frame.get_pixel(0, 0).0[0])).is_ok()
    }
    fn fault(&mut self, why: &str, first: bool) {
        let _ = self.0.send(Ev::Fault(why.to_owned(), first));
    }
    fn restored(&mut self) {
        let _ = self.0.send(Ev::Restored);
    }
}

fn fast() -> GrabConfig {
    GrabConfig {
        fps: 200.0,
        lost_after: Duration::from_secs(5),
        reopen_min: Duration::from_millis(5),
        reopen_max: Duration::from_millis(40),
    }
}

fn spawn(source: CameraSource) -> (GrabLoop, mpsc::Receiver<Ev>) {
    let (tx, rx) = mpsc::channel();
    let describe = source.describe();
    let g = GrabLoop::spawn(
        "test-camera",
        describe,
        Box::new(move || source.open()),
        fast(),
        Sink(tx),
    )
    .unwrap();
    (g, rx)
}

/// Events until `want` matches one (which is returned), with every event before it.
fn until(rx: &mpsc::Receiver<Ev>, want: impl Fn(&Ev) -> bool) -> (Ev, Vec<Ev>) {
    let end = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if want(&ev) => return (ev, seen),
            Ok(ev) => seen.push(ev),
            Err(e) => panic!("no matching event ({e}); saw {seen:?}"),
        }
    }
}

fn health_until(g: &GrabLoop, want: impl Fn(&CameraHealth) -> bool) -> CameraHealth {
    let mut h = g.health();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(WAIT, h.wait_for(|v| want(v)))
            .await
            .expect("health never got there")
            .expect("loop gone")
            .clone()
    })
}

fn grey(dir: &std::path::Path, name: &str, level: u8) {
    image::GrayImage::from_pixel(32, 24, image::Luma([level]))
        .save(dir.join(name))
        .unwrap();
}

#[test]
fn a_directory_that_vanishes_and_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    grey(&frames, "a.png", 40);
    let (g, rx) = spawn(CameraSource::Directory {
        path: frames.clone(),
    });
    until(&rx, |e| matches!(e, Ev::Frame(40)));
    assert!(health_until(&g, |h| h.frames > 0).ok);

    // unplugged: one fault report however many attempts fail, health says why
    std::fs::remove_dir_all(&frames).unwrap();
    let (ev, _) = until(&rx, |e| matches!(e, Ev::Fault(..)));
    let Ev::Fault(why, first) = ev else {
        unreachable!()
    };
    assert!(first, "{why}");
    assert!(why.contains("frames"), "the error names the source: {why}");
    let h = health_until(&g, |h| h.errors >= 3);
    assert!(!h.ok);
    let (_, between) = until(&rx, |e| matches!(e, Ev::Fault(_, false)));
    assert!(
        between.iter().all(|e| matches!(e, Ev::Fault(_, false))),
        "{between:?}"
    );

    // back: reported once, frames flow again from the same loop
    std::fs::create_dir(&frames).unwrap();
    grey(&frames, "b.png", 200);
    let (_, before) = until(&rx, |e| matches!(e, Ev::Restored));
    assert!(
        before
            .iter()
            .all(|e| matches!(e, Ev::Fault(_, false) | Ev::Frame(_))),
        "{before:?}"
    );
    until(&rx, |e| matches!(e, Ev::Frame(200)));
    let h = health_until(&g, |h| h.ok);
    assert!(h.reopens >= 1, "{h:?}");
    g.stop();
}

#[test]
fn a_v4l2_device_path_that_disappears_is_retried_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path().join("video7");
    let (g, rx) = spawn(CameraSource::V4l2 {
        device: dev.clone(),
        width: 640,
        height: 480,
    });
    let (ev, _) = until(&rx, |e| matches!(e, Ev::Fault(..)));
    let Ev::Fault(why, true) = ev else {
        panic!("{ev:?}")
    };
    assert!(why.contains("video7") && why.contains("open"), "{why}");
    let h = health_until(&g, |h| h.errors >= 3);
    assert!(!h.ok && h.source.contains("video7"), "{h:?}");
    // Something appears at the path (not a camera): the retries reach it and say so.
    std::fs::write(&dev, b"").unwrap();
    let h = health_until(&g, |h| {
        h.last_error
            .as_deref()
            .is_some_and(|e| e.contains("VIDIOC_QUERYCAP"))
    });
    assert!(!h.ok);
    g.stop();
}
