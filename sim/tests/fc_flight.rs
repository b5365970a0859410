//! The hal's MavlinkFc flies the sim vehicle through a delivery, in both flavours, over real
//! sockets: connect, detect, arm, take off, fly 500 m, release the gripper, RTL, land.

use crate::common;

use common::{offset, rig, Rig};
use hal::flight::{
    Autopilot, FlightController, FlightModeKind, GeoPoint, GripperAction, LandedState, LinkState,
    MissionControl, MissionItem,
};
use hal::payload::{FcPayload, FcReleaseMethod, PayloadRelease};
use sim::vehicle::model::{GRIPPER_CHANNEL, GRIPPER_RELEASE_US};
use sim::vehicle::Flavour;

async fn delivery(flavour: Flavour, expect: Autopilot) {
    let r = rig(flavour).await;
    let s = r
        .wait("autopilot detected", |s| {
            s.link.is_connected() && s.autopilot != Autopilot::Unknown
        })
        .await;
    assert_eq!(s.autopilot, expect);
    assert_eq!(s.target, Some((1, 1)));
    let report = r.ready().await;
    assert!(
        report.checks.iter().any(|c| c.name == "gps" && c.passed),
        "{report:?}"
    );
    let home = r.wait("home", |s| s.home.is_some()).await.home.unwrap();

    r.fc.arm().await.unwrap();
    assert!(r.fc.snapshot().borrow().armed);
    r.fc.takeoff(10.0).await.unwrap();
    let s = r
        .wait("10 m", |s| s.position.is_some_and(|p| p.alt_rel_m >= 9.5))
        .await;
    assert!(
        matches!(s.landed, LandedState::InAir | LandedState::TakingOff),
        "{:?}",
        s.landed
    );

    let (lat, lon) = offset(home.lat_deg, home.lon_deg, 300.0, 400.0);
    r.fc.goto(GeoPoint::new(lat, lon, 20.0)).await.unwrap();
    let s = r
        .wait("arrival 500 m away", |s| {
            s.position
                .is_some_and(|p| p.distance_m(lat, lon) < 1.5 && (p.alt_rel_m - 20.0).abs() < 0.5)
        })
        .await;
    let p = s.position.unwrap();
    assert!((p.alt_msl_m - (home.alt_msl_m + 20.0)).abs() < 0.5);
    assert!(home.distance_m(p.lat_deg, p.lon_deg) > 495.0);

    // the parcel: through the payload interface, confirmed by the autopilot's ACK
    let payload = FcPayload::new(r.fc.clone(), FcReleaseMethod::Gripper).unwrap();
    payload.release().await.unwrap();
    r.vehicle
        .wait_for(common::WAIT, |v| v.gripper_released)
        .await
        .expect("gripper opened");
    r.wait("gripper output", |s| {
        s.servo_outputs_us
            .is_some_and(|o| o[GRIPPER_CHANNEL - 1] == GRIPPER_RELEASE_US)
    })
    .await;

    r.fc.return_to_launch().await.unwrap();
    assert_eq!(
        r.fc.snapshot().borrow().mode.kind,
        FlightModeKind::ReturnToLaunch
    );
    let s = r
        .wait("landed and disarmed at home", |s| {
            !s.armed && s.landed == LandedState::OnGround
        })
        .await;
    let p = s.position.unwrap();
    assert!(
        home.distance_m(p.lat_deg, p.lon_deg) < 2.0,
        "landed {} m from home",
        home.distance_m(p.lat_deg, p.lon_deg)
    );
    assert!(s.battery_percent.unwrap() < 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_over_udp_flies_a_delivery() {
    delivery(Flavour::Px4, Autopilot::Px4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ardupilot_over_tcp_flies_a_delivery() {
    delivery(Flavour::ArduPilot, Autopilot::ArduPilot).await;
}

async fn land_hold_resume_hover(flavour: Flavour) {
    let r = rig(flavour).await;
    r.airborne(10.0).await;
    let home = r.wait("home", |s| s.home.is_some()).await.home.unwrap();
    let (lat, lon) = offset(home.lat_deg, home.lon_deg, 400.0, 0.0);
    r.fc.goto(GeoPoint::new(lat, lon, 15.0)).await.unwrap();
    r.wait("under way", |s| {
        s.position
            .is_some_and(|p| p.distance_m(home.lat_deg, home.lon_deg) > 50.0)
    })
    .await;
    r.fc.hold().await.unwrap();
    // PX4 holds in Hold; ArduPilot in GUIDED at the point BRAKE stopped it (never LOITER)
    let held = match flavour {
        Flavour::Px4 => FlightModeKind::Hold,
        Flavour::ArduPilot => FlightModeKind::Guided,
    };
    assert_eq!(r.fc.snapshot().borrow().mode.kind, held);
    let s = r
        .wait("stopped", |s| {
            s.velocity_ned_mps.is_some_and(|v| v[0].hypot(v[1]) < 0.2)
        })
        .await;
    // stopped mid-leg, not at the target (on PX4 guided legs already fly in Hold, so a bare mode
    // change would not stop anything)
    let p = s.position.unwrap();
    assert!(
        p.distance_m(lat, lon) > 100.0,
        "held {} m from the target",
        p.distance_m(lat, lon)
    );
    r.fc.resume().await.unwrap();
    r.wait("arrived after resume", |s| {
        s.position.is_some_and(|p| p.distance_m(lat, lon) < 1.5)
    })
    .await;
    r.fc.hover_at(4.0).await.unwrap();
    r.wait("hover at 4 m", |s| {
        s.position.is_some_and(|p| (p.alt_rel_m - 4.0).abs() < 0.2)
    })
    .await;
    r.fc.send_landing_target(hal::flight::LandingTarget {
        target_num: 7,
        angle_x_rad: 0.01,
        angle_y_rad: -0.02,
        distance_m: Some(4.0),
        size_x_rad: 0.1,
        size_y_rad: 0.1,
        captured_at: std::time::SystemTime::now(),
    })
    .await
    .unwrap();
    r.vehicle
        .wait_for(common::WAIT, |v| v.landing_targets >= 1)
        .await
        .expect("LANDING_TARGET seen");
    r.fc.land().await.unwrap();
    assert_eq!(r.fc.snapshot().borrow().mode.kind, FlightModeKind::Land);
    let s = r
        .wait("landed", |s| !s.armed && s.landed == LandedState::OnGround)
        .await;
    assert!(s.position.unwrap().distance_m(lat, lon) < 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_hold_resume_hover_land() {
    land_hold_resume_hover(Flavour::Px4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ardupilot_hold_resume_hover_land() {
    land_hold_resume_hover(Flavour::ArduPilot).await;
}

async fn mission(flavour: Flavour) {
    let r = rig(flavour).await;
    r.ready().await;
    let home = r.wait("home", |s| s.home.is_some()).await.home.unwrap();
    let (lat, lon) = offset(home.lat_deg, home.lon_deg, 0.0, 200.0);
    r.fc.clear_mission().await.unwrap();
    let items = [
        MissionItem::Takeoff { alt_rel_m: 12.0 },
        MissionItem::Waypoint {
            point: GeoPoint::new(lat, lon, 12.0),
            hold_s: 2.0,
        },
        MissionItem::Gripper(GripperAction::Release),
        MissionItem::ReturnToLaunch,
    ];
    r.fc.upload_mission(&items).await.unwrap();
    let s = r.fc.snapshot().borrow().clone();
    assert_eq!(s.mission.count, Some(4));
    // ArduPilot holds home as item 0
    let expected_len = if flavour == Flavour::ArduPilot { 5 } else { 4 };
    r.vehicle
        .wait_for(common::WAIT, |v| v.mission_len == expected_len)
        .await
        .expect("the vehicle holds the mission");
    r.fc.arm().await.unwrap();
    r.fc.start_mission().await.unwrap();
    r.wait("waypoint reached", |s| s.mission.last_reached >= Some(1))
        .await;
    r.wait("gripper item done", |s| s.mission.last_reached >= Some(2))
        .await;
    assert!(r.vehicle.view().borrow().gripper_released);
    let s = r
        .wait("home again", |s| {
            !s.armed && s.landed == LandedState::OnGround
        })
        .await;
    assert!(home.distance_m(s.position.unwrap().lat_deg, s.position.unwrap().lon_deg) < 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_mission_upload_and_run() {
    mission(Flavour::Px4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ardupilot_mission_upload_and_run() {
    mission(Flavour::ArduPilot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servo_release_is_confirmed_by_the_output_report() {
    // ArduPilot: DO_SET_SERVO on output 6; PX4: DO_SET_ACTUATOR set 1 = output 9 (AUX1)
    for (flavour, channel) in [(Flavour::ArduPilot, 6u8), (Flavour::Px4, 9u8)] {
        let r = rig(flavour).await;
        r.wait("link", |s| s.link.is_connected()).await;
        let payload = FcPayload::new(
            r.fc.clone(),
            FcReleaseMethod::Servo {
                channel,
                release_pwm_us: 1900,
                hold_pwm_us: 1100,
                confirm_timeout_ms: 5000,
            },
        )
        .unwrap();
        // confirmed = the autopilot's SERVO_OUTPUT_RAW showed it, so the vehicle has it already
        payload.release().await.unwrap();
        let idx = usize::from(channel - 1);
        r.vehicle
            .wait_for(common::WAIT, |v| v.servo_us[idx] == 1900)
            .await
            .expect("servo at 1900");
        payload.close().await.unwrap();
        r.vehicle
            .wait_for(common::WAIT, |v| v.servo_us[idx] == 1100)
            .await
            .expect("servo at 1100");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_heartbeat_and_telemetry_rates_reach_the_autopilot() {
    let r: Rig = rig(Flavour::ArduPilot).await;
    r.wait("link", |s| s.link.is_connected()).await;
    // SET_MESSAGE_INTERVAL (511) for each configured stream, then REQUEST_MESSAGE (512) for home
    let v = r
        .vehicle
        .wait_for(common::WAIT, |v| {
            v.commands.iter().filter(|c| c.0 == 511).count() >= 8
                && v.commands.iter().any(|c| c.0 == 512)
        })
        .await
        .expect("message intervals requested");
    assert!(
        v.commands.iter().all(|c| c.1 == 0),
        "no resends needed: {:?}",
        v.commands
    );
    let s = r.fc.snapshot().borrow().clone();
    assert!(matches!(s.link, LinkState::Connected { .. }));
    // our own HEARTBEAT: system 1, MAV_COMP_ID_ONBOARD_COMPUTER (191), MAV_TYPE_ONBOARD_CONTROLLER (18)
    let v = r
        .vehicle
        .wait_for(common::WAIT, |v| v.heartbeats_received >= 2)
        .await
        .expect("companion heartbeats");
    assert_eq!(v.last_heartbeat_from, Some((1, 191, 18)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udpout_reaches_a_vehicle_that_answers_whoever_talks() {
    // the companion sends first (its own HEARTBEAT); the vehicle answers the sender, as PX4 does
    let mut vc = sim::vehicle::VehicleConfig::standard(Flavour::Px4);
    vc.speedup = common::SPEEDUP;
    vc.transport = sim::vehicle::Transport::Udp {
        bind: "127.0.0.1:0".parse().unwrap(),
        // nobody listens here: the vehicle's first packets go nowhere, like PX4's before a client
        peer: "127.0.0.1:9".parse().unwrap(),
    };
    let vehicle = sim::vehicle::spawn(vc).await.unwrap();
    let fc = hal::flight::mavlink::MavlinkFc::start(common::link_config(&format!(
        "udpout:{}",
        vehicle.local_addr()
    )));
    let s = fc
        .wait_for(common::WAIT, |s| s.link.is_connected())
        .await
        .expect("link over udpout");
    assert_eq!(s.autopilot, Autopilot::Px4);
    fc.set_gripper(GripperAction::Grab).await.unwrap();
}
