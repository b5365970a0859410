//! QR decoding: time per 640×480 frame on realistic idle scenes and on frames with a code,
//! detection rate per condition, and multi-frame presentations.
//!
//! ```text
//! cargo bench -p locker-agent --bench qr_decode                     # rqrr alone
//! cargo bench -p locker-agent --bench qr_decode --features opencv   # + WeChat second opinion
//! QR_BENCH_IDLE=1000 QR_BENCH_PRESENTATIONS=40 cargo bench -p locker-agent --bench qr_decode
//! QR_BENCH_PARTS=idle,code cargo bench ...   # only those parts (idle, code, presentations,
//!                                            # detection, timings), e.g. under a profiler
//! ```
//!
//! Idle frames: `sim::camera::locker::IdleScene` (door panels with gaps and numbers, signage, a
//! keypad, shading, a phone or a paper slip with no code), one fresh scene per seed
//! (`QR_BENCH_IDLE`, default 300), each decoded by a fresh decoder so no frame is skipped as
//! "unchanged"; then static scenes (30 frames each, sensor noise only), the locker's usual
//! case, through one decoder. Median, p90 and max per frame; any code read is a false positive.
//!
//! Frames with a code: `presentation(Easy)` frames (a code on a phone, 4 px modules, shaken)
//! and the old centred test frame.
//!
//! Detection: codes of three module sizes (3, 4, 6 px per module) under each condition in
//! `tests/qrgen`, `N` codes each (single frames, as before).
//!
//! Presentations: `QR_BENCH_PRESENTATIONS` (default 20) per kind of hardness, 20 frames each
//! (2 s at 10 fps), fed in order to one decoder: how many are read by the last frame, after how
//! many frames, and how many single frames are read by a fresh decoder.
//!
//! Every time is the decoding thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time.

#[path = "../tests/qrgen/mod.rs"]
mod qrgen;

use hal::qr::{half, rqrr_pass, QrDecoder};
use qrgen::{degrade, frame_with_code, Condition};
use sim::camera::locker::{presentation, Hardness, IdleScene};
use std::time::Duration;

/// CPU time of this thread: what a frame costs a core, whatever else the machine is doing
/// (a shared build box runs at a load of 10; wall time would mostly measure the others).
#[derive(Clone, Copy)]
struct Instant(Duration);

impl Instant {
    fn now() -> Self {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map(Duration::from)
            .unwrap_or_default();
        Instant(t)
    }
    fn elapsed(&self) -> Duration {
        Self::now().0.saturating_sub(self.0)
    }
}

const N: u64 = 10;
const ITER: usize = 200;
const PRESENTATION_FRAMES: usize = 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn second_opinion() -> bool {
    cfg!(feature = "opencv")
}

fn main() {
    if let Ok(dir) = std::env::var("QR_BENCH_DUMP") {
        dump(std::path::Path::new(&dir));
        return;
    }
    let idle_n = env("QR_BENCH_IDLE", 300);
    let pres_n = env("QR_BENCH_PRESENTATIONS", 20);
    // `QR_BENCH_PARTS=idle,code` runs only those parts (to profile one path); all by default
    let parts = std::env::var("QR_BENCH_PARTS").unwrap_or_default();
    let part = |name: &str| parts.is_empty() || parts.split(',').any(|p| p.trim() == name);
    if part("idle") {
        idle(idle_n);
    }
    if part("code") {
        with_code();
    }
    if part("presentations") {
        presentations(pres_n);
    }
    if part("detection") {
        detection();
    }
    if part("timings") {
        timings();
    }
}

/// Writes a few idle frames and the first and last frame of each kind of presentation as PNG
/// (`QR_BENCH_DUMP=DIR`): to look at what the numbers are about.
fn dump(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("dump dir");
    for s in 0..6 {
        IdleScene::new(s)
            .frame(0)
            .save(dir.join(format!("idle-{s}.png")))
            .expect("png");
    }
    for &h in Hardness::ALL {
        let p = presentation(h, 1, PRESENTATION_FRAMES);
        for i in [0, PRESENTATION_FRAMES - 1] {
            p.frames[i]
                .save(dir.join(format!("{h:?}-{i}.png")))
                .expect("png");
        }
    }
}

fn stats(label: &str, times: &mut [Duration], extra: &str) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = times.len().max(1);
    println!(
        "| {label} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {extra} |",
        times.len(),
        ms(times.get(n / 2).copied().unwrap_or_default()),
        ms(times.get(n * 9 / 10).copied().unwrap_or_default()),
        ms(times.last().copied().unwrap_or_default()),
    );
}

fn idle(n: usize) {
    println!("# idle frames (640x480, sim::camera::locker::IdleScene)");
    println!("| frames | n | median | p90 | max | codes read (false positives) / hinted |\n|---|---|---|---|---|---|");
    let scenes: Vec<_> = (0..n as u64).map(|s| IdleScene::new(s).frame(0)).collect();
    let mut times = Vec::with_capacity(n);
    let (mut false_pos, mut hinted, mut with_finders) = (0, 0, 0);
    for f in &scenes {
        let mut d = QrDecoder::new(second_opinion()).expect("decoder");
        let t = Instant::now();
        let out = d.decode(f);
        times.push(t.elapsed());
        false_pos += out.codes.len();
        hinted += usize::from(out.hint);
        with_finders += usize::from(out.finders > 0);
    }
    stats(
        "fresh scenes, a new decoder each",
        &mut times,
        &format!("{false_pos} / {hinted} (frames with finder candidates: {with_finders})"),
    );
    // The agent keeps one decoder: its buffers are warm. A different scene every frame still
    // takes the whole path (the "unchanged" skip compares with the last idle frame).
    let mut times = Vec::with_capacity(n);
    let (mut false_pos, mut hinted, mut skipped) = (0, 0, 0);
    let mut d = QrDecoder::new(second_opinion()).expect("decoder");
    for f in &scenes {
        let t = Instant::now();
        let out = d.decode(f);
        times.push(t.elapsed());
        false_pos += out.codes.len();
        hinted += usize::from(out.hint);
        skipped += usize::from(out.unchanged);
    }
    stats(
        "fresh scenes, one decoder",
        &mut times,
        &format!("{false_pos} / {hinted} (skipped as unchanged: {skipped})"),
    );
    let mut times = Vec::new();
    let (mut false_pos, mut hinted) = (0, 0);
    let mut d = QrDecoder::new(second_opinion()).expect("decoder");
    for s in 0..(n as u64 / 30).max(3) {
        let scene = IdleScene::new(10_000 + s);
        for i in 0..30 {
            let f = scene.frame(i);
            let t = Instant::now();
            let out = d.decode(&f);
            times.push(t.elapsed());
            false_pos += out.codes.len();
            hinted += usize::from(out.hint);
        }
    }
    stats(
        "static scenes, 30 frames each",
        &mut times,
        &format!("{false_pos} / {hinted}"),
    );
}

fn with_code() {
    println!("\n# frames with a code (640x480)");
    println!("| frames | n | median | p90 | max | read |\n|---|---|---|---|---|---|");
    let mut times = Vec::new();
    let mut read = 0;
    let mut total = 0;
    let mut stages = std::collections::BTreeMap::new();
    for s in 0..10 {
        let p = presentation(Hardness::Easy, s, 10);
        let mut d = QrDecoder::new(second_opinion()).expect("decoder");
        for f in &p.frames {
            let t = Instant::now();
            let out = d.decode(f);
            times.push(t.elapsed());
            total += 1;
            read += usize::from(out.codes == vec![p.text.clone()]);
            *stages.entry(format!("{:?}", out.stage)).or_insert(0) += 1;
        }
    }
    stats(
        "code on a phone, 4 px modules, shaken",
        &mut times,
        &format!("{read}/{total} {stages:?}"),
    );
    // what the pipeline before issue 15 began with on every frame: one rqrr pass, whole frame
    let (mut times, mut read) = (Vec::new(), 0);
    for s in 0..10 {
        let p = presentation(Hardness::Easy, s, 10);
        for f in &p.frames {
            let t = Instant::now();
            let (codes, _) = rqrr_pass(f);
            times.push(t.elapsed());
            read += usize::from(codes == vec![p.text.clone()]);
        }
    }
    let n = times.len();
    stats(
        "the same frames, one plain rqrr pass (whole frame)",
        &mut times,
        &format!("{read}/{n}"),
    );
    let f = frame_with_code("SKYPOST-ORDER-0001-7f3a9c", 4);
    let mut d = QrDecoder::new(second_opinion()).expect("decoder");
    let mut times = Vec::new();
    let mut read = 0;
    for _ in 0..ITER {
        let t = Instant::now();
        let out = d.decode(&f);
        times.push(t.elapsed());
        read += usize::from(!out.codes.is_empty());
    }
    stats(
        "centred test code (tests/qrgen), same frame",
        &mut times,
        &format!("{read}/{ITER}"),
    );
}

fn presentations(n: usize) {
    println!("\n# presentations: {n} per kind, {PRESENTATION_FRAMES} frames each (2 s at 10 fps)");
    println!("| kind | read by frame 20 | median frames to read | single frames read | frames with a sighting | wrong codes | time per frame median / p90 / max |\n|---|---|---|---|---|---|---|");
    let mut all_read = 0;
    let mut all = 0;
    for &h in Hardness::ALL {
        let mut read = 0;
        let mut to_read = Vec::new();
        let mut single = 0;
        let mut frames = 0;
        let mut wrong = 0;
        let mut hinted = 0;
        let mut times = Vec::new();
        for s in 0..n as u64 {
            let p = presentation(h, s, PRESENTATION_FRAMES);
            let mut d = QrDecoder::new(second_opinion()).expect("decoder");
            let mut got = None;
            for (i, f) in p.frames.iter().enumerate() {
                let t = Instant::now();
                let out = d.decode(f);
                times.push(t.elapsed());
                hinted += usize::from(out.hint);
                wrong += out.codes.iter().filter(|c| **c != p.text).count();
                if got.is_none() && out.codes.contains(&p.text) {
                    got = Some(i + 1);
                }
            }
            if let Some(k) = got {
                read += 1;
                to_read.push(k);
            }
            for f in &p.frames {
                let mut fresh = QrDecoder::new(second_opinion()).expect("decoder");
                frames += 1;
                single += usize::from(fresh.decode(f).codes.contains(&p.text));
            }
        }
        to_read.sort();
        all_read += read;
        all += n;
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let k = times.len().max(1);
        println!(
            "| {} | {read}/{n} | {} | {single}/{frames} | {hinted}/{frames} | {wrong} | {:.1} / {:.1} / {:.1} ms |",
            h.name(),
            to_read
                .get(to_read.len() / 2)
                .map_or("-".to_owned(), |v| v.to_string()),
            ms(times.get(k / 2).copied().unwrap_or_default()),
            ms(times.get(k * 9 / 10).copied().unwrap_or_default()),
            ms(times.last().copied().unwrap_or_default()),
        );
    }
    println!(
        "| all | {all_read}/{all} ({:.0} %) | | | | | |",
        100.0 * all_read as f64 / all.max(1) as f64
    );
}

fn detection() {
    let mut pipeline = QrDecoder::new(false).expect("decoder");
    #[cfg(feature = "opencv")]
    let mut second = QrDecoder::new(true).expect("WeChat decoder");

    println!("\n# QR detection rate, single frames ({N} codes per cell; module sizes 3/4/6 px)");
    #[cfg(feature = "opencv")]
    println!("| condition | rqrr | pipeline | +wechat | wechat alone |\n|---|---|---|---|---|");
    #[cfg(not(feature = "opencv"))]
    println!("| condition | rqrr | pipeline |\n|---|---|---|");
    for &c in Condition::ALL {
        let mut plain = [0; 3];
        let mut piped = [0; 3];
        #[cfg(feature = "opencv")]
        let (mut with_wc, mut wc) = ([0; 3], [0; 3]);
        for (k, px) in [3u32, 4, 6].into_iter().enumerate() {
            for i in 0..N {
                let text = format!("SKYPOST-{i:03}-{px}-7f3a9c");
                let f = degrade(&frame_with_code(&text, px), c, i + 1);
                let want = vec![text.clone()];
                if rqrr_pass(&f).0 == want {
                    plain[k] += 1;
                }
                pipeline.forget();
                if pipeline.decode(&f).codes == want {
                    piped[k] += 1;
                }
                #[cfg(feature = "opencv")]
                {
                    second.forget();
                    if second.decode(&f).codes == want {
                        with_wc[k] += 1;
                    }
                    if second.wechat_only(&f).unwrap_or_default() == want {
                        wc[k] += 1;
                    }
                }
            }
        }
        let cell = |v: [u64; 3]| format!("{}/{}/{}", v[0], v[1], v[2]);
        #[cfg(feature = "opencv")]
        println!(
            "| {} | {} | {} | {} | {} |",
            c.name(),
            cell(plain),
            cell(piped),
            cell(with_wc),
            cell(wc)
        );
        #[cfg(not(feature = "opencv"))]
        println!("| {} | {} | {} |", c.name(), cell(plain), cell(piped));
    }
}

fn timings() {
    println!("\n# building blocks, per 640x480 frame ({ITER} frames)");
    println!("| step | frame | median | p90 |\n|---|---|---|---|");
    let empty = IdleScene::new(1).frame(0);
    report("one rqrr pass, full size", "idle", &mut || {
        rqrr_pass(&empty).1
    });
    report("one rqrr pass, half size", "idle", &mut || {
        rqrr_pass(&half(&empty)).1
    });
    let mut gate = QrDecoder::new(false).expect("decoder");
    report("finder gate (QrDecoder::gate)", "idle", &mut || {
        gate.gate(&empty).finders.len()
    });
    // the steps of a code frame (the first frame of an easy presentation: a code on a phone)
    let phone = presentation(Hardness::Easy, 0, 1).frames.remove(0);
    report("finder gate (QrDecoder::gate)", "code", &mut || {
        gate.gate(&phone).finders.len()
    });
    if let Some(s) = gate.gate(&phone).sighting {
        let crop = s.crop(&phone);
        report("one rqrr pass on the gate's crop", "code", &mut || {
            rqrr_pass(&crop).0.len()
        });
        report(
            "grid fitted to the gate's finders, read",
            "code",
            &mut || {
                let grids = hal::qr::lattice::fit_grids(
                    &phone,
                    [s.corner.x, s.corner.y],
                    [s.a.x, s.a.y],
                    [s.b.x, s.b.y],
                    s.module,
                    hal::qr::stack::GRIDS_PER_FRAME,
                );
                grids
                    .iter()
                    .filter_map(|g| hal::qr::lattice::sample_grid(&phone, g))
                    .filter_map(|l| hal::qr::lattice::read(&l))
                    .count()
            },
        );
    }
    #[cfg(feature = "opencv")]
    {
        let mut second = QrDecoder::new(true).expect("WeChat decoder");
        let with_code = frame_with_code("SKYPOST-ORDER-0001-7f3a9c", 4);
        report("wechat alone", "code", &mut || {
            second.wechat_only(&with_code).map(|v| v.len()).unwrap_or(0)
        });
        report("wechat alone", "idle", &mut || {
            second.wechat_only(&empty).map(|v| v.len()).unwrap_or(0)
        });
    }
}

fn report(step: &str, frame: &str, f: &mut dyn FnMut() -> usize) {
    let mut times: Vec<Duration> = Vec::with_capacity(ITER);
    let iters = if step.starts_with("wechat") && frame == "idle" {
        ITER / 4
    } else {
        ITER
    };
    for _ in 0..5 {
        std::hint::black_box(f());
    }
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {step} | {frame} | {:.2} ms | {:.2} ms |",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10])
    );
}
