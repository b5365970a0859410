//! From frame capture to `LANDING_TARGET` on the autopilot's side of the wire, during a real
//! precision approach.
//!
//! ```text
//! cargo bench -p drone-agent --features opencv --bench precision_latency
//! ```
//!
//! The whole agent flies a precision approach (tests/common/precision.rs: the sim vehicle 3 m off
//! by GPS, the sim's camera rendering into the agent's frame directory, OpenCV's ArUco detector).
//! Each `LANDING_TARGET` carries its frame's capture time (`time_usec`: when the camera worker got
//! the frame); the sim vehicle notes how old it is when it arrives (same host clock). That age is
//! the path camera worker → ArUco detection → runtime → approach decision → MAVLink → TCP → the
//! autopilot. Also reported: how many LANDING_TARGETs a second while the marker was in view.

#[path = "../tests/common/mod.rs"]
mod common;

use common::precision::*;
use protocol::ws::EventType;
use std::time::Instant;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut f = fly(Setup {
            gps_error: (3.0, 0.0),
            locker_ne: (15.0, 12.0),
            shown: Some(23),
            camera_present: true,
            precision: "",
        })
        .await;
        let mut views = f.vehicle.view();
        let mut ages_us = Vec::new();
        let mut last_count = 0;
        let mut first_at: Option<Instant> = None;
        let arrived = async {
            f.backend.event(EventType::Arrived).await;
        };
        tokio::pin!(arrived);
        loop {
            tokio::select! {
                _ = &mut arrived => break,
                changed = views.changed() => {
                    if changed.is_err() { break; }
                    let v = views.borrow_and_update().clone();
                    if v.landing_targets > last_count {
                        last_count = v.landing_targets;
                        first_at.get_or_insert_with(Instant::now);
                        if let Some(a) = v.landing_target_age_us {
                            ages_us.push(a);
                        }
                    }
                }
            }
        }
        let seen_for = first_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        ages_us.sort_unstable();
        let pct = |p: f64| ages_us[((ages_us.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        assert!(!ages_us.is_empty(), "no LANDING_TARGET arrived");
        println!(
            "capture -> LANDING_TARGET at the autopilot: n={} median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
            ages_us.len(),
            pct(0.5),
            pct(0.9),
            pct(1.0)
        );
        println!(
            "LANDING_TARGET rate while approaching: {:.1} Hz ({} over {:.1} s)",
            last_count as f64 / seen_for.max(1e-3),
            last_count,
            seen_for
        );
        f.agent.stop().await;
    });
}
