//! QR decoding: detection rate per condition, and time per 640×480 frame.
//!
//! ```text
//! cargo bench -p locker-agent --bench qr_decode                     # rqrr alone
//! cargo bench -p locker-agent --bench qr_decode --features opencv   # + WeChat second opinion
//! ```
//!
//! Detection: codes of three module sizes (3, 4, 6 px per module) under each condition in
//! `tests/qrgen`, `N` codes each. Columns: `rqrr` (one plain rqrr pass), `pipeline` (our decoder
//! without WeChat: rqrr, then pre-processed passes when there is a sign of a code), and with the
//! feature `+wechat` (the pipeline with the gated second opinion) and `wechat` (WeChat alone, on
//! every frame, for scale).
//!
//! Timing: median and 90th percentile over `ITER` frames of the same 640×480 scene with a code
//! (4 px modules) and without.

#[path = "../tests/qrgen/mod.rs"]
mod qrgen;

use hal::qr::{finder_hint, half, rqrr_pass, QrDecoder};
use qrgen::{degrade, frame_with_code, Condition};
use std::time::{Duration, Instant};

const N: u64 = 10;
const ITER: usize = 200;

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let mut pipeline = QrDecoder::new(false).expect("decoder");
    #[cfg(feature = "opencv")]
    let mut second = QrDecoder::new(true).expect("WeChat decoder");

    println!("# QR detection rate ({N} codes per cell; module sizes 3/4/6 px)");
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
                if pipeline.decode(&f).codes == want {
                    piped[k] += 1;
                }
                #[cfg(feature = "opencv")]
                {
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

    println!("\n# decode time per 640x480 frame ({ITER} frames)");
    println!("| decoder | frame | median | p90 |\n|---|---|---|---|");
    let with_code = frame_with_code("SKYPOST-ORDER-0001-7f3a9c", 4);
    let empty = qrgen::background();
    let blurred = degrade(&with_code, Condition::Blur(2.0), 1);
    report("one rqrr pass, full size", "empty", &mut || {
        rqrr_pass(&empty).1
    });
    report("one rqrr pass, half size", "empty", &mut || {
        rqrr_pass(&half(&empty)).1
    });
    report("finder-pattern hint", "empty", &mut || {
        usize::from(finder_hint(&empty))
    });
    report("pipeline (rqrr)", "code", &mut || {
        pipeline.decode(&with_code).codes.len()
    });
    report("pipeline (rqrr)", "empty", &mut || {
        pipeline.decode(&empty).codes.len()
    });
    report("pipeline (rqrr)", "blurred code (blur 2)", &mut || {
        pipeline.decode(&blurred).codes.len()
    });
    #[cfg(feature = "opencv")]
    {
        report("pipeline + wechat", "code", &mut || {
            second.decode(&with_code).codes.len()
        });
        report("pipeline + wechat", "empty", &mut || {
            second.decode(&empty).codes.len()
        });
        report("pipeline + wechat", "blurred code (blur 2)", &mut || {
            second.decode(&blurred).codes.len()
        });
        report("wechat alone", "code", &mut || {
            second.wechat_only(&with_code).map(|v| v.len()).unwrap_or(0)
        });
        report("wechat alone", "empty", &mut || {
            second.wechat_only(&empty).map(|v| v.len()).unwrap_or(0)
        });
    }
}

fn report(decoder: &str, frame: &str, f: &mut dyn FnMut() -> usize) {
    let mut times: Vec<Duration> = Vec::with_capacity(ITER);
    let iters = if decoder.starts_with("wechat") && frame == "empty" {
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
        "| {decoder} | {frame} | {:.2} ms | {:.2} ms |",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10])
    );
}
