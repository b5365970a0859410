//! QR decoding on generated, degraded codes, and a customer pickup through the camera loop.
//! Detection rates per condition are printed by `cargo bench -p locker-agent --bench qr_decode`;
//! these tests hold the floor.

mod common;
mod qrgen;

use common::*;
use hal::camera::CameraSource;
use hal::qr::QrDecoder;
use locker_agent::cells::Contents;
use locker_agent::scanner;
use protocol::lockboard::BoltState;
use protocol::ws::EventType;
use qrgen::{degrade, frame_with_code, Condition};
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;

fn rate(decoder: &mut QrDecoder, c: Condition, module_px: u32, n: u64) -> usize {
    (0..n)
        .filter(|i| {
            let text = format!("SKYPOST-ORDER-{i:04}-{}", module_px);
            let f = degrade(&frame_with_code(&text, module_px), c, *i);
            // each frame judged on its own, as the bench's single-frame table does
            decoder.forget();
            decoder.decode(&f).codes == vec![text]
        })
        .count()
}

#[test]
fn clean_and_mildly_degraded_codes_decode_with_rqrr() {
    // a budget no debug build on a loaded machine runs out of: the same steps as in the field
    let mut d = QrDecoder::new(false)
        .unwrap()
        .with_budget(Duration::from_secs(10));
    for px in [3, 4, 6] {
        assert_eq!(
            rate(&mut d, Condition::Clean, px, 3),
            3,
            "clean, {px} px/module"
        );
        assert_eq!(
            rate(&mut d, Condition::Rotate(15.0), px, 3),
            3,
            "rotated, {px} px/module"
        );
        assert_eq!(
            rate(&mut d, Condition::LowContrast(100, 150), px, 3),
            3,
            "low contrast, {px} px/module"
        );
    }
    assert!(rate(&mut d, Condition::Noise(20.0), 4, 4) >= 3);
    assert!(rate(&mut d, Condition::Blur(1.0), 4, 4) >= 3);
}

#[test]
fn an_empty_scene_decodes_nothing_and_gives_no_hint() {
    let mut d = QrDecoder::new(true).unwrap();
    let out = d.decode(&qrgen::background());
    assert!(out.codes.is_empty());
    assert!(
        !out.hint,
        "the background alone must not wake the expensive path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickup_through_the_camera_is_one_scan_however_long_the_code_is_held() {
    let h = Harness::start().await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 4)]).await;
    h.drop_parcel(a, 4).await;
    let order = Uuid::new_v4();
    h.backend.allow("SKYPOST-PICKUP-77", a, order);

    let frames = h.dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let (handle, codes) = scanner::spawn(
        &CameraSource::Directory {
            path: frames.clone(),
        },
        QrDecoder::new(true).unwrap(),
        50.0,
        Duration::from_secs(60),
    )
    .unwrap();
    let pickups = tokio::spawn(locker_agent::locker::run_pickups(h.locker.clone(), codes));

    // The customer holds the code up; the camera sees it frame after frame.
    frame_with_code("SKYPOST-PICKUP-77", 4)
        .save(frames.join("a.png"))
        .unwrap();
    h.backend.wait_event(EventType::CellOpened, 4).await;
    // Keep it in view for many more frames, then take it away.
    let seen = *handle.frames().borrow();
    tokio::time::timeout(WAIT, handle.frames().wait_for(|n| *n >= seen + 20))
        .await
        .expect("camera loop stalled")
        .unwrap();
    std::fs::remove_file(frames.join("a.png")).unwrap();
    let stats = handle.stats.clone();
    assert!(
        stats.codes.load(Ordering::Relaxed) >= 15,
        "frames {} codes {} camera errors {}",
        stats.frames.load(Ordering::Relaxed),
        stats.codes.load(Ordering::Relaxed),
        stats.camera_errors.load(Ordering::Relaxed)
    );
    assert_eq!(
        stats.scans.load(Ordering::Relaxed),
        1,
        "held code counted once"
    );

    h.board.open_door(4).await.unwrap();
    h.board.close_door(4).await.unwrap();
    let ev = h.backend.wait_event(EventType::PickedUp, 4).await;
    // the screen (a file here) showed the customer their cell, then thanked them
    let screen = h.screen();
    assert!(screen.contains("Cell 4 is open"), "{screen}");
    assert!(screen.contains("Cell 4 is closed"), "{screen}");
    assert_eq!(ev.order_id, Some(order));
    h.wait_board("bolt 4 locked", |s| s.bolt(4) == Some(BoltState::Locked))
        .await;
    assert!(matches!(h.locker.cells()[0].contents, Contents::Empty));
    // one OPEN for the drop, one for the pickup
    assert_eq!(h.board.snapshot().unlocked, vec![4, 4]);
    handle.stop();
    pickups.abort();
}

/// `/health` has a camera entry shaped like the board's: "not configured" without a camera,
/// then frames and their age, then the grab error while frames stop (the directory removed),
/// then back (restored), and the loop that reopened it reads codes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_camera() {
    let h = Harness::start().await;
    let (s, v) = http(h.addr, "GET", "/health", None, "").await;
    assert_eq!(s, 200);
    assert_eq!(v["camera"]["ok"], true, "{v}");
    assert_eq!(v["camera"]["detail"], "not configured", "{v}");

    let frames = h.dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let (handle, _codes) = scanner::spawn(
        &CameraSource::Directory {
            path: frames.clone(),
        },
        QrDecoder::new(false).unwrap(),
        50.0,
        Duration::from_secs(5),
    )
    .unwrap();
    h.locker.attach_camera(handle.probe());
    let mut turns = handle.frames();
    tokio::time::timeout(WAIT, turns.wait_for(|n| *n >= 3))
        .await
        .expect("camera loop stalled")
        .unwrap();
    let (_, v) = http(h.addr, "GET", "/health", None, "").await;
    assert_eq!(v["camera"]["ok"], true, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    let detail = v["camera"]["detail"].as_str().unwrap();
    assert!(detail.contains("last frame"), "{detail}");
    assert!(detail.contains("0 camera errors"), "{detail}");

    // The camera goes away: the entry says so, with the error, and the locker is degraded.
    std::fs::remove_dir(&frames).unwrap();
    let stats = handle.stats.clone();
    let seen = *turns.borrow();
    tokio::time::timeout(
        WAIT,
        turns.wait_for(|n| *n > seen + 1 && stats.camera_errors.load(Ordering::Relaxed) > 0),
    )
    .await
    .expect("camera errors never counted")
    .unwrap();
    let (_, v) = http(h.addr, "GET", "/health", None, "").await;
    assert_eq!(v["camera"]["ok"], false, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    assert!(
        v["camera"]["detail"]
            .as_str()
            .unwrap()
            .contains("last error"),
        "{v}"
    );

    // Back: the next good frame clears it.
    std::fs::create_dir_all(&frames).unwrap();
    let errors = stats.camera_errors.load(Ordering::Relaxed);
    let seen = *turns.borrow();
    tokio::time::timeout(
        WAIT,
        turns.wait_for(|n| *n > seen + 1 && !stats.failing.load(Ordering::Relaxed)),
    )
    .await
    .expect("camera never came back")
    .unwrap();
    let (_, v) = http(h.addr, "GET", "/health", None, "").await;
    assert_eq!(v["camera"]["ok"], true, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert!(stats.camera_errors.load(Ordering::Relaxed) >= errors);
    // and the same loop reads codes again: no restart
    frame_with_code("SKYPOST-AFTER-REPLUG", 4)
        .save(frames.join("code.png"))
        .unwrap();
    tokio::time::timeout(
        WAIT,
        turns.wait_for(|_| stats.codes.load(Ordering::Relaxed) > 0),
    )
    .await
    .expect("no code read after the camera came back")
    .unwrap();
    handle.stop();
}

/// A V4L2 camera whose device path is gone (unplugged, or not yet enumerated): the agent keeps
/// running, `/health` is degraded and names the device, and the loop keeps trying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_v4l2_device_degrades_health_and_is_retried() {
    let h = Harness::start().await;
    let dev = h.dir.path().join("video3");
    let (handle, _codes) = scanner::spawn(
        &CameraSource::V4l2 {
            device: dev.clone(),
            width: 640,
            height: 480,
        },
        QrDecoder::new(false).unwrap(),
        50.0,
        Duration::from_secs(5),
    )
    .unwrap();
    h.locker.attach_camera(handle.probe());
    let stats = handle.stats.clone();
    tokio::time::timeout(
        WAIT,
        handle
            .frames()
            .wait_for(|_| stats.camera_errors.load(Ordering::Relaxed) >= 2),
    )
    .await
    .expect("the device was not retried")
    .unwrap();
    let (_, v) = http(h.addr, "GET", "/health", None, "").await;
    assert_eq!(v["camera"]["ok"], false, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    let detail = v["camera"]["detail"].as_str().unwrap();
    assert!(detail.contains("video3"), "{detail}");
    handle.stop();
}
