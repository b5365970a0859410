//! Benchmark: how much faster than real time the sim vehicle runs a whole delivery on this machine,
//! flown by the real hal over a real socket (so telemetry encoding, the socket and the companion's
//! decoding are all in the measurement).
//!
//! ```text
//! cargo run --release -p sim --example bench-sim            # PX4 over UDP and ArduPilot over TCP
//! cargo run --release -p sim --example bench-sim -- 2000    # a different requested speedup
//! ```
//! Prints the model's own ceiling (stepped flat out, no sockets), then, per flavour, the requested speedup, the achieved one (sim seconds / wall seconds over
//! the flight), and the sim time the flight took.

use hal::flight::mavlink::MavlinkFc;
use hal::flight::{FcLinkConfig, FlightController, GeoPoint, LandedState};
use sim::vehicle::{self, Flavour, Transport, VehicleConfig};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let speedup: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500.0);
    // headroom: the model alone, stepped as fast as it goes, with the default telemetry encoded
    let mut m = sim::vehicle::model::Model::new(
        Flavour::Px4,
        sim::vehicle::model::Params::for_flavour(Flavour::Px4),
        (47.4, 8.5, 488.0),
        1,
    );
    let mut outs = Vec::new();
    let ids: Vec<u32> = m.intervals.keys().copied().collect();
    let t = Instant::now();
    let steps = 500_000;
    for i in 0..steps {
        m.step(0.02, &mut outs);
        outs.clear();
        if i % 10 == 0 {
            for id in &ids {
                let _ = m.telemetry_message(*id);
            }
        }
    }
    println!(
        "model alone (one vehicle, telemetry built every 0.2 s): {:.0}x real time",
        steps as f64 * 0.02 / t.elapsed().as_secs_f64()
    );
    for flavour in [Flavour::Px4, Flavour::ArduPilot] {
        let (sim_s, wall) = fly(flavour, speedup).await;
        println!(
            "{flavour:?}: requested {speedup}x, achieved {:.0}x ({sim_s:.0} s of flight in {:.2} s)",
            sim_s / wall.as_secs_f64(),
            wall.as_secs_f64()
        );
    }
}

async fn fly(flavour: Flavour, speedup: f64) -> (f64, Duration) {
    let mut vc = VehicleConfig::standard(flavour);
    vc.speedup = speedup;
    let connection = match flavour {
        Flavour::Px4 => {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            vc.transport = Transport::Udp {
                bind: "127.0.0.1:0".parse().unwrap(),
                peer: format!("127.0.0.1:{port}").parse().unwrap(),
            };
            format!("udpin:127.0.0.1:{port}")
        }
        Flavour::ArduPilot => {
            vc.transport = Transport::Tcp {
                listen: "127.0.0.1:0".parse().unwrap(),
            };
            String::new()
        }
    };
    let v = vehicle::spawn(vc).await.unwrap();
    let connection = if connection.is_empty() {
        format!("tcpout:{}", v.local_addr())
    } else {
        connection
    };
    let mut cfg = FcLinkConfig::new(connection.parse().unwrap());
    cfg.command_timeout_ms = 300;
    let fc = MavlinkFc::start(cfg);
    let long = Duration::from_secs(120);
    // wait until armable, then time the flight
    loop {
        if fc.preflight_check(30.0).await.unwrap().passed() {
            break;
        }
        let mut rx = fc.snapshot();
        let _ = tokio::time::timeout(long, rx.changed()).await;
    }
    let t0 = v.view().borrow().t_s;
    let wall0 = Instant::now();
    fc.arm().await.unwrap();
    fc.takeoff(20.0).await.unwrap();
    fc.wait_for(long, |s| s.position.is_some_and(|p| p.alt_rel_m > 19.5))
        .await
        .unwrap();
    let home = fc.snapshot().borrow().home.unwrap();
    let lat = home.lat_deg + 0.009; // ~1 km north
    fc.goto(GeoPoint::new(lat, home.lon_deg, 20.0))
        .await
        .unwrap();
    fc.wait_for(long, |s| {
        s.position
            .is_some_and(|p| p.distance_m(lat, home.lon_deg) < 2.0)
    })
    .await
    .unwrap();
    fc.return_to_launch().await.unwrap();
    fc.wait_for(long, |s| !s.armed && s.landed == LandedState::OnGround)
        .await
        .unwrap();
    let t1 = v.view().borrow().t_s;
    (t1 - t0, wall0.elapsed())
}
