//! Each injected fault, and what the hal promises when it happens.

use crate::common;

use common::{rig, rig_with, WAIT};
use hal::flight::{FcError, FlightController, GpsFixType, LinkState, MissionControl};
use mavlink::dialects::ardupilotmega::MavResult;
use sim::vehicle::{Fault, Flavour};
use std::time::Duration;

const ARM: u32 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_drop_is_reported_then_the_link_is_reopened() {
    for flavour in [Flavour::Px4, Flavour::ArduPilot] {
        let r = rig(flavour).await;
        r.wait("link", |s| s.link.is_connected()).await;
        let dropped = std::time::SystemTime::now();
        r.vehicle
            .inject(Fault::LinkDrop(Duration::from_millis(2500)));
        let s = r
            .wait("link lost", |s| matches!(s.link, LinkState::Lost { .. }))
            .await;
        let LinkState::Lost {
            since,
            last_heartbeat,
        } = s.link
        else {
            unreachable!()
        };
        // `last_heartbeat` is when the last HEARTBEAT really arrived (the hal measures it): the
        // loss is declared no earlier than a heartbeat timeout (1.2 s) after it, and that
        // HEARTBEAT came before the drop (the sim beats at 2 Hz real at least; 600 ms of slack
        // for one in flight)
        let silent = since.duration_since(last_heartbeat).unwrap();
        assert!(silent >= Duration::from_millis(1100), "{silent:?}");
        assert!(
            last_heartbeat <= dropped + Duration::from_millis(600),
            "a HEARTBEAT after the drop: {:?}",
            last_heartbeat.duration_since(dropped)
        );
        // while lost, commands fail at once with LinkLost rather than hanging
        assert_eq!(
            r.fc.arm().await,
            Err(FcError::LinkLost {
                command: "MAV_CMD_COMPONENT_ARM_DISARM(arm)"
            })
        );
        r.wait("link back", |s| s.link.is_connected()).await;
        // and work again afterwards
        r.ready().await;
        r.fc.arm().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_are_resent_with_confirmation_incremented() {
    // PX4: arm is the only command of `arm()` (ArduPilot switches to GUIDED first)
    let r = rig(Flavour::Px4).await;
    r.ready().await;
    r.vehicle.inject(Fault::LoseAcks(2));
    r.fc.arm().await.unwrap();
    let v = r.vehicle.wait_for(WAIT, |v| v.armed).await.unwrap();
    let confirmations: Vec<u8> = v
        .commands
        .iter()
        .filter(|c| c.0 == ARM)
        .map(|c| c.1)
        .collect();
    assert_eq!(confirmations, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_is_still_taken_and_all_acks_lost_is_a_timeout() {
    let r = rig(Flavour::Px4).await;
    r.ready().await;
    // every ACK lost: a Timeout naming the attempts (1 + command_retries)
    r.vehicle.inject(Fault::LoseAcks(5));
    match r.fc.arm().await {
        Err(FcError::Timeout {
            command, attempts, ..
        }) => {
            assert_eq!(command, "MAV_CMD_COMPONENT_ARM_DISARM(arm)");
            assert_eq!(attempts, 5);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // the vehicle saw every attempt (only the ACKs were lost)
    let v = r
        .vehicle
        .wait_for(WAIT, |v| {
            v.commands.iter().filter(|c| c.0 == ARM).count() == 5
        })
        .await;
    assert!(v.is_some(), "five arm attempts reached the vehicle");
    r.fc.disarm().await.unwrap();
    // the first ACK arrives after the resend: the command succeeds once, the stray ACK is ignored
    // (MAVLink ACKs carry no request id, so this is the last command of the test)
    r.vehicle
        .inject(Fault::DelayAcks(1, Duration::from_millis(400)));
    r.fc.arm().await.unwrap();
    let v = r.vehicle.view().borrow().clone();
    let arms: Vec<u8> = v
        .commands
        .iter()
        .filter(|c| c.0 == ARM)
        .map(|c| c.1)
        .collect();
    assert!(
        arms.ends_with(&[0, 1]),
        "resent while the ACK was late: {arms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_is_its_own_error() {
    let r = rig(Flavour::ArduPilot).await;
    r.ready().await;
    let cases = [
        (
            MavResult::MAV_RESULT_TEMPORARILY_REJECTED,
            "TemporarilyRejected",
        ),
        (MavResult::MAV_RESULT_DENIED, "Denied"),
        (MavResult::MAV_RESULT_UNSUPPORTED, "Unsupported"),
        (MavResult::MAV_RESULT_FAILED, "Failed"),
    ];
    for (result, name) in cases {
        r.vehicle.inject(Fault::Refuse {
            command: ARM,
            result,
            n: 1,
        });
        let e = r.fc.arm().await.unwrap_err();
        let got = match &e {
            FcError::TemporarilyRejected { .. } => "TemporarilyRejected",
            FcError::Denied { .. } => "Denied",
            FcError::Unsupported { .. } => "Unsupported",
            FcError::Failed { .. } => "Failed",
            _ => "other",
        };
        assert_eq!(got, name, "{e}");
        assert!(
            e.to_string().contains("MAV_CMD_COMPONENT_ARM_DISARM"),
            "{e}"
        );
        assert_eq!(e.is_transient(), name == "TemporarilyRejected");
    }
    // the refusal is used up: the next attempt goes through
    r.fc.arm().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arming_too_early_is_refused_with_the_autopilots_reason() {
    for (flavour, text) in [
        (Flavour::ArduPilot, "Arm: "),
        // PX4 1.16 says it through the events protocol only
        (Flavour::Px4, "No valid global position estimate"),
    ] {
        let r = rig(flavour).await;
        r.wait("link", |s| s.link.is_connected()).await;
        let e = r.fc.arm().await.unwrap_err();
        match &e {
            FcError::Failed {
                reason: Some(reason),
                ..
            }
            | FcError::Denied {
                reason: Some(reason),
                ..
            } => {
                assert!(reason.contains(text), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let report = r.fc.preflight_check(30.0).await.unwrap();
        assert!(!report.passed());
        assert!(
            report
                .failures()
                .any(|c| c.name == "armable" || c.name == "gps"),
            "{report:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gps_loss_and_battery_sag_show_in_the_snapshot_and_preflight() {
    let r = rig(Flavour::Px4).await;
    r.ready().await;
    r.vehicle.inject(Fault::GpsLoss(60.0));
    r.wait("no fix", |s| {
        s.gps_fix == GpsFixType::NoFix && s.satellites == Some(0)
    })
    .await;
    let report = r.fc.preflight_check(30.0).await.unwrap();
    assert!(report.failures().any(|c| c.name == "gps"), "{report:#?}");
    r.wait("fix back", |s| s.gps_fix.is_3d()).await;

    let (before, before_v) = {
        let s = r.fc.snapshot().borrow().clone();
        (s.battery_percent.unwrap(), s.battery_voltage.unwrap())
    };
    r.vehicle.inject(Fault::BatterySag(60.0));
    let s = r
        .wait("battery sag", |s| {
            s.battery_percent.is_some_and(|p| p <= before - 59.0)
        })
        .await;
    // 60 % of a 4-cell pack is ~1.7 V for good; the transient dip on top has decayed by the time a
    // loaded machine delivers the snapshot, so only the lasting part is asserted
    assert!(
        s.battery_voltage.unwrap() < before_v - 1.2,
        "{before_v} V before, {:?} after",
        s.battery_voltage
    );
    let report = r.fc.preflight_check(50.0).await.unwrap();
    let battery = report.checks.iter().find(|c| c.name == "battery").unwrap();
    assert!(!battery.passed, "{battery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_upload_survives_a_short_link_drop() {
    use hal::flight::{GeoPoint, MissionItem};
    let r = rig_with(Flavour::ArduPilot, |c| {
        c.mission_timeout_ms = 300;
        c.mission_retries = 10;
        c.heartbeat_timeout_ms = 3000;
    })
    .await;
    r.ready().await;
    let home = r.fc.snapshot().borrow().home.unwrap();
    let items: Vec<MissionItem> = (0..20)
        .map(|i| MissionItem::Waypoint {
            point: GeoPoint::new(home.lat_deg + f64::from(i) * 1e-4, home.lon_deg, 20.0),
            hold_s: 0.0,
        })
        .collect();
    r.vehicle
        .inject(Fault::LinkDrop(Duration::from_millis(800)));
    r.fc.upload_mission(&items).await.unwrap();
    r.vehicle
        .wait_for(WAIT, |v| v.mission_len == 21)
        .await
        .expect("all items stored");
}
