//! Connects to a flight controller, prints what the hal sees, and optionally flies a short hop.
//! The way to check the hal against a real autopilot or SITL:
//!
//! ```text
//! # PX4 SITL (make px4_sitl gz_x500, or the SIH model): its API link sends to UDP 14540
//! cargo run -p hal --example fc-probe -- udpin:0.0.0.0:14540
//! # ArduPilot SITL (sim_vehicle.py -v ArduCopter): TCP 5760 takes one client
//! cargo run -p hal --example fc-probe -- tcpout:127.0.0.1:5760
//! # a flight controller on USB
//! cargo run -p hal --example fc-probe -- serial:/dev/serial/by-id/usb-…-if00:921600
//! # add --fly to arm, take off to 10 m, fly 100 m north, RTL and wait for landing (SITL only!)
//! cargo run -p hal --example fc-probe -- tcpout:127.0.0.1:5760 --fly
//! ```

use hal::flight::mavlink::MavlinkFc;
use hal::flight::{FcLinkConfig, FlightController, GeoPoint, LandedState};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber_init();
    let mut args = std::env::args().skip(1);
    let connection = args.next().ok_or("usage: fc-probe CONNECTION [--fly]")?;
    let fly = args.any(|a| a == "--fly");
    let fc = MavlinkFc::start(FcLinkConfig::new(connection.parse()?));
    let s = fc
        .wait_for(Duration::from_secs(30), |s| s.link.is_connected())
        .await
        .ok_or("no HEARTBEAT from an autopilot within 30 s")?;
    println!(
        "connected: {:?} system/component {:?}, mode {}",
        s.autopilot, s.target, s.mode.raw
    );
    let s = fc
        .wait_for(Duration::from_secs(5), |s| {
            s.position.is_some() && s.battery_percent.is_some()
        })
        .await
        .unwrap_or_else(|| fc.snapshot().borrow().clone());
    println!("snapshot: {s:#?}");
    let report = fc.preflight_check(30.0).await?;
    for c in &report.checks {
        println!(
            "preflight {:8} {} {}",
            c.name,
            if c.passed { "ok  " } else { "FAIL" },
            c.detail
        );
    }
    if !fly {
        return Ok(());
    }
    // real SITLs need a while after boot before they arm (ArduPilot ~40 s): retry
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match fc.arm().await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                println!("arm: {e}; retrying");
                let _ = fc.wait_for(Duration::from_secs(2), |_| false).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("armed");
    fc.takeoff(10.0).await?;
    fc.wait_for(Duration::from_secs(60), |s| {
        s.position.is_some_and(|p| p.alt_rel_m > 9.5)
    })
    .await
    .ok_or("did not reach 10 m")?;
    println!("at 10 m");
    let home = fc.snapshot().borrow().home.ok_or("no home position")?;
    let lat = home.lat_deg + 0.0009;
    fc.goto(GeoPoint::new(lat, home.lon_deg, 10.0)).await?;
    fc.wait_for(Duration::from_secs(120), |s| {
        s.position
            .is_some_and(|p| p.distance_m(lat, home.lon_deg) < 3.0)
    })
    .await
    .ok_or("did not arrive")?;
    println!("arrived 100 m north");
    fc.return_to_launch().await?;
    fc.wait_for(Duration::from_secs(300), |s| {
        !s.armed && s.landed == LandedState::OnGround
    })
    .await
    .ok_or("did not land")?;
    println!("landed and disarmed at home");
    Ok(())
}

fn tracing_subscriber_init() {
    daemon::logging::init("fc-probe");
}
