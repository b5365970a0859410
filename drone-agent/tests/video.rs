//! Live video: `video_frame` messages (base64 JPEG at the configured size and rate) from the
//! camera while a delivery flies, with telemetry and events still flowing.

use crate::common;

use base64::Engine as _;
use common::*;
use protocol::ws::{EventType, Message};
use sim::vehicle::Flavour;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_frames_flow_beside_a_delivery() {
    let frames = tempfile::tempdir().unwrap();
    // the camera's picture: a gradient, 640x480 (the agent scales it to the video size)
    image::GrayImage::from_fn(640, 480, |x, y| image::Luma([((x + y) % 256) as u8]))
        .save(frames.path().join("frame.png"))
        .unwrap();
    let dir = frames.path().display().to_string();
    let mut w = World::start(Flavour::Px4, move |c| {
        c + &format!(
            r#"
[camera]
source = {{ kind = "directory", path = "{dir}" }}
fps = 10.0
[video]
enabled = true
fps = 5.0
width = 320
height = 240
jpeg_quality = 50
"#
        )
    })
    .await;
    w.fly_to_locker(150.0).await;
    // at least five frames in all (the flight took a few seconds at 5 fps)
    let count = |b: &Backend| {
        b.others
            .iter()
            .filter(|e| matches!(e.message, Message::VideoFrame(_)))
            .count()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while count(&w.backend) < 5 {
        assert!(tokio::time::Instant::now() < deadline, "video stalled");
        w.backend.next().await;
    }
    let videos: Vec<_> = w
        .backend
        .others
        .iter()
        .filter_map(|e| match &e.message {
            Message::VideoFrame(v) => Some(v.clone()),
            _ => None,
        })
        .collect();
    assert!(videos.len() >= 3, "{} video frames", videos.len());
    for pair in videos.windows(2) {
        assert!(pair[1].seq > pair[0].seq, "seq increases");
    }
    for v in &videos {
        assert_eq!((v.width, v.height), (320, 240));
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(&v.frame)
            .unwrap();
        let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
    }
    // the delivery's own traffic was not held up by it
    assert!(w
        .backend
        .others
        .iter()
        .any(|e| matches!(e.message, Message::Telemetry(_))));
    assert!(w.backend.event_types().contains(&EventType::Arrived));
    w.stop().await;
}
