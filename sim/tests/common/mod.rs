//! Shared set-up for the flight-controller tests: a sim vehicle and a `hal` MavlinkFc talking real
//! MAVLink over real sockets on 127.0.0.1 (UDP for the PX4 flavour, TCP for ArduPilot).
#![allow(dead_code)]

pub mod model;

use hal::flight::mavlink::MavlinkFc;
use hal::flight::{FcLinkConfig, FcSnapshot, FlightController, PreflightReport};
use sim::vehicle::{self, Flavour, Transport, VehicleConfig, VehicleHandle};
use std::sync::Arc;
use std::time::Duration;

pub const SPEEDUP: f64 = 50.0;
/// Generous real-time bound for anything a test waits for; runs take a fraction of it.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Rig {
    pub vehicle: VehicleHandle,
    pub fc: Arc<MavlinkFc>,
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

pub fn link_config(connection: &str) -> FcLinkConfig {
    let mut cfg = FcLinkConfig::new(connection.parse().unwrap());
    cfg.heartbeat_timeout_ms = 1200;
    cfg.reopen_interval_ms = 100;
    cfg.command_timeout_ms = 250;
    cfg.command_retries = 4;
    cfg.in_progress_timeout_ms = 5000;
    cfg.mode_change_timeout_ms = 2000;
    cfg.mission_timeout_ms = 300;
    // the sim runs 50× real time: the gripper's settle is the sim's business, not the test's
    cfg.gripper_settle_ms = 0;
    cfg.gripper_confirm_timeout_ms = 2000;
    cfg.hold_brake_timeout_ms = 2000;
    cfg
}

pub async fn rig(flavour: Flavour) -> Rig {
    rig_with(flavour, |_| {}).await
}

pub async fn rig_with(flavour: Flavour, tweak: impl FnOnce(&mut FcLinkConfig)) -> Rig {
    rig_full(flavour, |_| {}, tweak).await
}

/// A rig with the vehicle's parameters and the link's config both adjusted.
pub async fn rig_full(
    flavour: Flavour,
    params: impl FnOnce(&mut sim::vehicle::model::Params),
    tweak: impl FnOnce(&mut FcLinkConfig),
) -> Rig {
    let mut vc = VehicleConfig::standard(flavour);
    params(&mut vc.params);
    vc.speedup = SPEEDUP;
    vc.seed = 42;
    let connection;
    match flavour {
        Flavour::Px4 => {
            let port = free_udp_port();
            vc.transport = Transport::Udp {
                bind: "127.0.0.1:0".parse().unwrap(),
                peer: format!("127.0.0.1:{port}").parse().unwrap(),
            };
            connection = format!("udpin:127.0.0.1:{port}");
        }
        Flavour::ArduPilot => {
            vc.transport = Transport::Tcp {
                listen: "127.0.0.1:0".parse().unwrap(),
            };
            connection = String::new();
        }
    }
    let vehicle = vehicle::spawn(vc).await.unwrap();
    let connection = if connection.is_empty() {
        format!("tcpout:{}", vehicle.local_addr())
    } else {
        connection
    };
    let mut cfg = link_config(&connection);
    tweak(&mut cfg);
    let fc = MavlinkFc::start(cfg);
    Rig { vehicle, fc }
}

impl Rig {
    pub async fn wait(&self, what: &str, pred: impl FnMut(&FcSnapshot) -> bool) -> FcSnapshot {
        match self.fc.wait_for(WAIT, pred).await {
            Some(s) => s,
            None => panic!(
                "timed out waiting for {what}; last snapshot: {:#?}\nvehicle: {:?}",
                *self.fc.snapshot().borrow(),
                self.vehicle.view().borrow()
            ),
        }
    }

    /// Waits until every pre-flight check passes (GPS fix, home, EKF ready).
    pub async fn ready(&self) -> PreflightReport {
        let mut rx = self.fc.snapshot();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let report = self.fc.preflight_check(30.0).await.unwrap();
            if report.passed() {
                return report;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!("pre-flight never passed: {report:#?}");
            }
        }
    }

    pub async fn airborne(&self, alt: f64) {
        self.ready().await;
        self.fc.arm().await.unwrap();
        self.fc.takeoff(alt).await.unwrap();
        self.wait("take-off altitude", |s| {
            s.position.is_some_and(|p| p.alt_rel_m >= alt - 0.5)
        })
        .await;
    }
}

/// A point `north_m`, `east_m` from (lat, lon).
pub fn offset(lat: f64, lon: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    let p =
        protocol::geo::LatLon::new(lat, lon).offset(protocol::geo::NorthEast::new(north_m, east_m));
    (p.lat_deg, p.lon_deg)
}
