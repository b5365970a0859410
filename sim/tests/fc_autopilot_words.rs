//! The hal against the sim's real-autopilot behaviours (issue 11), over real sockets: what the
//! hal does about a stick-less LOITER, an EKF without a position, a gripper that reports late, a
//! failsafe of the autopilot's own, PX4's events, and a companion that dies.

use crate::common;

use common::{offset, rig, rig_full, WAIT};
use hal::flight::{FcError, FlightController, GeoPoint, GripperAction, HeartbeatType};
use sim::vehicle::{Fault, Flavour};
use std::time::Duration;

const DO_SET_MODE: u32 = 176;

/// Issue 11 item 1: pause over a leg on ArduPilot without a transmitter. LOITER would take the
/// throttle stick (1000 µs) as "descend"; the hal's BRAKE then GUIDED must hold the altitude.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ardupilot_hold_without_a_transmitter_keeps_its_altitude() {
    let r = rig(Flavour::ArduPilot).await;
    r.airborne(30.0).await;
    assert_eq!(r.vehicle.view().borrow().rc_throttle_us, 1000);
    let home = r.wait("home", |s| s.home.is_some()).await.home.unwrap();
    let (lat, lon) = offset(home.lat_deg, home.lon_deg, 600.0, 0.0);
    r.fc.goto(GeoPoint::new(lat, lon, 30.0)).await.unwrap();
    r.vehicle
        .wait_for(WAIT, |v| v.speed_mps > 9.0)
        .await
        .expect("cruising");
    let modes_before = r.vehicle.view().borrow().commands.len();
    r.fc.hold().await.unwrap();
    let v = r.vehicle.view().borrow().clone();
    assert_eq!(v.mode, "GUIDED", "held in GUIDED after BRAKE");
    let set_modes = v.commands[modes_before..]
        .iter()
        .filter(|c| c.0 == DO_SET_MODE)
        .count();
    assert_eq!(set_modes, 2, "BRAKE, then GUIDED: {:?}", v.commands);
    // 30 s of sim time in the hold: the lowest altitude seen
    let t0 = v.t_s;
    let start_alt = v.alt_rel_m;
    let mut lowest = start_alt;
    r.vehicle
        .wait_for(WAIT, |v| {
            lowest = lowest.min(v.alt_rel_m);
            v.t_s >= t0 + 30.0
        })
        .await
        .unwrap();
    let lost = 30.0 - lowest;
    assert!(lost < 0.5, "lost {lost:.2} m in 30 s of hold");
    eprintln!("ardupilot hold without RC: lost {lost:.3} m in 30 s (from {start_alt:.2} m)");
    assert!(r.vehicle.view().borrow().armed);
}

/// Issue 11 item 2: a task in the EKF's start-up window. The hal arms after switching to GUIDED,
/// so ArduPilot refuses the arm itself, in words, and nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arming_on_ardupilot_before_the_ekf_has_a_position_is_refused_in_its_words() {
    let r = rig(Flavour::ArduPilot).await;
    let s = r
        .wait("fix and home", |s| s.gps_fix.is_3d() && s.home.is_some())
        .await;
    assert!(
        !r.vehicle.view().borrow().position_ok,
        "still in the window"
    );
    assert_eq!(s.position_estimate, Some(false));
    let report = r.fc.preflight_check(30.0).await.unwrap();
    assert!(
        report.failures().any(|c| c.name == "position"),
        "{report:#?}"
    );
    match r.fc.arm().await {
        Err(FcError::Failed {
            reason: Some(reason),
            ..
        }) => assert!(reason.contains("Arm: Need Position Estimate"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let v = r.vehicle.view().borrow().clone();
    assert!(!v.armed);
    assert_eq!(v.mode, "GUIDED");
    // once the EKF uses GPS, the same sequence arms
    r.ready().await;
    r.fc.arm().await.unwrap();
}

/// Issue 11 item 4: ArduPilot ACKs DO_GRIPPER at once; the hal waits for "Gripper load released".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ardupilot_gripper_release_is_confirmed_by_its_report_not_the_ack() {
    let r = rig(Flavour::ArduPilot).await;
    r.airborne(5.0).await;
    r.fc.set_gripper(GripperAction::Release).await.unwrap();
    assert!(
        r.vehicle.view().borrow().gripper_released,
        "the hal returned before the gripper opened"
    );
    assert_eq!(
        r.fc.snapshot().borrow().gripper,
        Some(GripperAction::Release)
    );
}

/// Issue 11 items 5 and 6: ArduPilot's voltage failsafe with the RTL action, at a high percentage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autopilots_own_rtl_is_reported_with_its_reason() {
    let r = rig(Flavour::ArduPilot).await;
    r.airborne(10.0).await;
    let mut messages = r.fc.autopilot_messages();
    r.vehicle
        .inject(Fault::Param("BATT_FS_LOW_ACT".into(), 2.0));
    r.vehicle.inject(Fault::VoltageSag(2.3));
    let s = r
        .wait("the autopilot's RTL with its reason", |s| {
            s.autopilot_mode_change.as_ref().is_some_and(|c| {
                c.to.raw == "RTL"
                    && c.reason
                        .as_deref()
                        .is_some_and(|r| r.contains("Battery Failsafe"))
            })
        })
        .await;
    let change = s.autopilot_mode_change.unwrap();
    assert_eq!(change.from.raw, "GUIDED");
    assert_eq!(s.battery_failsafe.as_deref(), Some("Battery Failsafe"));
    assert!(s.battery_percent.unwrap() > 80.0, "percent stays high");
    assert!(s.battery_voltage.unwrap() < 10.5);
    let mut texts = Vec::new();
    while let Ok(m) = messages.try_recv() {
        texts.push(m.text);
    }
    assert!(texts.iter().any(|t| t == "Battery Failsafe"), "{texts:?}");
}

/// Issue 11 items 8 to 10: PX4 with no RC flies; its refusals arrive as events, in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_without_rc_passes_preflight_and_its_refusals_arrive_as_events() {
    let r = rig(Flavour::Px4).await;
    r.wait("link", |s| s.link.is_connected()).await;
    let mut messages = r.fc.autopilot_messages();
    match r.fc.arm().await {
        Err(FcError::Denied {
            reason: Some(reason),
            ..
        }) => assert!(
            reason.contains("No valid global position estimate"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    let m = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.px4_event,
        Some(hal::flight::mavlink::px4_event_id("check_modes_global_pos"))
    );
    // RC receiver enabled but unhealthy: not a flight need
    let report = r.ready().await;
    let health = report.checks.iter().find(|c| c.name == "health").unwrap();
    assert!(health.passed, "{health:?}");
    r.fc.arm().await.unwrap();
    r.fc.takeoff(5.0).await.unwrap();
}

/// Issue 11 item 10: with `heartbeat_type = "gcs"` and NAV_DLL_ACT = 2, PX4 returns when the
/// companion dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_returns_when_the_companion_dies_if_it_counts_as_the_data_link() {
    let r = rig_full(
        Flavour::Px4,
        |p| {
            p.nav_dll_act = 2;
            p.com_dl_loss_t_s = 5.0;
        },
        |c| c.heartbeat_type = HeartbeatType::Gcs,
    )
    .await;
    // PX4 refuses to arm until its data link beats (our HEARTBEAT, now MAV_TYPE_GCS = 6)
    r.vehicle
        .wait_for(WAIT, |v| v.last_heartbeat_from.is_some_and(|h| h.2 == 6))
        .await
        .expect("our GCS-typed HEARTBEAT");
    r.airborne(10.0).await;
    let common::Rig { vehicle, fc } = r;
    // the companion dies: no more HEARTBEATs
    drop(fc);
    let v = vehicle
        .wait_for(WAIT, |v| v.gcs_failsafe && v.mode == "AUTO.RTL")
        .await
        .expect("PX4 returns by itself");
    assert!(v.armed);
}

/// Issue 11 item 12: an operation's result is never applied after a newer one superseded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_goto_reports_cancelled_not_its_late_result() {
    let r = rig(Flavour::Px4).await;
    r.airborne(10.0).await;
    let home = r.wait("home", |s| s.home.is_some()).await.home.unwrap();
    let (lat1, lon1) = offset(home.lat_deg, home.lon_deg, 100.0, 0.0);
    let (lat2, lon2) = offset(home.lat_deg, home.lon_deg, 0.0, 100.0);
    // the first go-to's ACK comes late; the second is issued meanwhile
    r.vehicle
        .inject(Fault::DelayAcks(1, Duration::from_millis(400)));
    let fc = r.fc.clone();
    let first = tokio::spawn(async move { fc.goto(GeoPoint::new(lat1, lon1, 10.0)).await });
    r.vehicle
        .wait_for(WAIT, |v| {
            v.commands.iter().filter(|c| c.0 == 192).count() >= 1
        })
        .await
        .unwrap();
    let second = r.fc.goto(GeoPoint::new(lat2, lon2, 10.0)).await;
    assert_eq!(second, Ok(()));
    let first = first.await.unwrap();
    assert_eq!(
        first,
        Err(FcError::Cancelled {
            command: "MAV_CMD_DO_REPOSITION"
        })
    );
}

/// Issue 11 item 6: BATTERY_STATUS fault bits (the control socket's `battery_fault`) reach the
/// hal by name, judged (land now / home) and failing its pre-flight, at a full percentage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_fault_bits_reach_the_hal_by_name() {
    let r = rig(Flavour::ArduPilot).await;
    let fault = sim::vehicle::control::parse_fault("battery_fault spikes over_temperature")
        .expect("control line");
    r.vehicle.inject(fault);
    let s = r
        .wait("the fault bits", |s| !s.battery_faults.is_empty())
        .await;
    assert_eq!(s.battery_faults, ["spikes", "over_temperature"]);
    assert_eq!(
        s.battery_fault_action(),
        Some((
            hal::flight::BatteryFaultAction::LandNow,
            vec!["over_temperature"]
        ))
    );
    assert!(s.battery_percent.unwrap() > 90.0, "percent stays high");
    let pre = r.fc.preflight_check(20.0).await.expect("preflight runs");
    assert!(!pre.passed(), "a battery fault fails the pre-flight");
    r.vehicle.inject(Fault::BatteryFaults(0));
    r.wait("the faults cleared", |s| s.battery_faults.is_empty())
        .await;
}
