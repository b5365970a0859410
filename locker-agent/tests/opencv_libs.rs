//! The locker built with `opencv` for WeChat alone must not need libopencv_videoio: that library
//! drags in GStreamer, FFmpeg and more, about 40 MiB resident, and the locker's < 30 MiB budget
//! with OpenCV holds only without it. Capture through OpenCV is hal's `opencv-capture` feature
//! (the locker's `opencv-capture`, or the drone's `opencv` in a workspace-wide build).
#![cfg(feature = "opencv")]

#[test]
fn wechat_without_opencv_capture_does_not_link_videoio() {
    let bin = env!("CARGO_BIN_EXE_locker-agent");
    let out = std::process::Command::new("readelf")
        .args(["-d", "-W", bin])
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {bin}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let needs = |lib: &str| {
        text.lines()
            .any(|l| l.contains("(NEEDED)") && l.contains(lib))
    };
    // the check reads the right thing: WeChat is linked
    assert!(needs("libopencv_wechat_qrcode"), "{text}");
    assert_eq!(
        needs("libopencv_videoio"),
        hal::camera::OPENCV_CAPTURE,
        "libopencv_videoio needed exactly when OpenCV capture is built in:\n{text}"
    );
}
