//! The QR decoder on what a locker camera sees (`sim::camera::locker`): idle scenes never give a
//! code or wake the decoders, a static scene is judged once, and presentations are read.
//! Rates and times: `cargo bench -p locker-agent --bench qr_decode`.

use hal::qr::QrDecoder;
use sim::camera::locker::{idle_frame, presentation, Hardness, IdleScene};
use std::time::Duration;

#[test]
fn idle_scenes_give_no_code_and_no_sighting() {
    for seed in 0..40 {
        let mut d = QrDecoder::new(false).unwrap();
        let out = d.decode(&idle_frame(seed));
        assert!(out.codes.is_empty(), "scene {seed}: {:?}", out.codes);
        assert!(!out.hint, "scene {seed} woke the decoders");
    }
}

#[test]
fn a_static_scene_is_judged_once_then_skipped() {
    let scene = IdleScene::new(77);
    let mut d = QrDecoder::new(false).unwrap();
    assert!(!d.decode(&scene.frame(0)).unchanged);
    for i in 1..6 {
        let out = d.decode(&scene.frame(i));
        assert!(out.unchanged, "frame {i}: sensor noise is not a change");
    }
    // another scene is a change
    assert!(!d.decode(&idle_frame(78)).unchanged);
}

#[test]
fn presentations_are_read_and_only_their_code() {
    for h in [
        Hardness::Easy,
        Hardness::Noise,
        Hardness::Jpeg,
        Hardness::LowRes,
    ] {
        for seed in 0..2 {
            let p = presentation(h, seed, 20);
            // a budget no debug build runs out of: the same steps run as in the field build
            let mut d = QrDecoder::new(false)
                .unwrap()
                .with_budget(Duration::from_secs(10));
            let mut read = false;
            for f in &p.frames {
                let out = d.decode(f);
                assert!(
                    out.codes.iter().all(|c| *c == p.text),
                    "{h:?} {seed}: {:?}",
                    out.codes
                );
                read |= !out.codes.is_empty();
                if read {
                    break;
                }
            }
            assert!(read, "{h:?} seed {seed} not read in 20 frames");
        }
    }
}
