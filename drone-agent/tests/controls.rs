//! Mission controls and failsafes, each against the sim vehicle.

use crate::common;

use common::*;
use protocol::geo::LatLon;
use protocol::ws::{AckStatus, CommandKind, DroneState, EventType, Message};
use protocol::Envelope;
use sim::vehicle::{Fault, Flavour};
use std::time::Duration;

/// Pause while cruising: the vehicle stops; resume: it flies on and arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_in_cruise() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    w.send_task(400.0);
    w.backend.event(EventType::TookOff).await;
    w.vehicle
        .wait_for(WAIT, |v| {
            v.alt_rel_m > 19.0 && v.lat_deg > north_of_home(Flavour::Px4, 50.0).0
        })
        .await
        .expect("cruising");
    let pause = w.backend.command(CommandKind::Pause);
    assert_eq!(w.backend.ack_for(pause).await.status, AckStatus::Executed);
    let paused = w.backend.event(EventType::Paused).await;
    assert_eq!(paused.to_state, Some(DroneState::Paused));
    // holding: after a few sim seconds to brake, the position stops changing
    let t_pause = w.vehicle.view().borrow().t_s;
    let a = w
        .vehicle
        .wait_for(WAIT, |v| v.t_s > t_pause + 12.0)
        .await
        .unwrap();
    let b = w
        .vehicle
        .wait_for(WAIT, |v| v.t_s > a.t_s + 5.0)
        .await
        .unwrap();
    let moved = LatLon::new(a.lat_deg, a.lon_deg).distance_m(LatLon::new(b.lat_deg, b.lon_deg));
    assert!(moved < 3.0, "moved {moved} m while paused");

    let resume = w.backend.command(CommandKind::Resume);
    assert_eq!(w.backend.ack_for(resume).await.status, AckStatus::Executed);
    w.backend.event(EventType::Resumed).await;
    w.backend.event(EventType::Arrived).await;
    w.stop().await;
}

/// Abort on the way: home with the parcel, the gripper never opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_flies_home_with_the_parcel() {
    let mut w = World::start(Flavour::ArduPilot, |c| c).await;
    w.send_task(300.0);
    w.backend.event(EventType::TookOff).await;
    w.vehicle
        .wait_for(WAIT, |v| v.alt_rel_m > 10.0)
        .await
        .unwrap();
    let abort = w.backend.command(CommandKind::Abort);
    assert_eq!(w.backend.ack_for(abort).await.status, AckStatus::Executed);
    let aborted = w.backend.event(EventType::Aborted).await;
    assert_eq!(aborted.to_state, Some(DroneState::Aborting));
    let base = w.backend.event(EventType::ArrivedBase).await;
    assert!(base.reason.unwrap_or_default().contains("parcel"));
    assert!(!w.vehicle.view().borrow().gripper_released);
    w.stop().await;
}

/// Return-to-home mid-flight, and the same command id twice acts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_home_is_idempotent_by_id() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    w.send_task(300.0);
    w.backend.event(EventType::TookOff).await;
    let id = uuid::Uuid::new_v4();
    let cmd = || {
        Envelope::new(protocol::ws::Command {
            command: CommandKind::ReturnToHome,
            cmd_id: Some(id),
            delivery_id: None,
        })
    };
    assert!(w.backend.send(cmd()));
    assert_eq!(w.backend.ack_for(id).await.status, AckStatus::Executed);
    w.backend.event(EventType::ReturnCommand).await;
    assert!(w.backend.send(cmd()));
    // the second ack is the first one again
    let acks = async {
        loop {
            let env = w.backend.next().await;
            if matches!(&env.message, Message::Ack(a) if a.cmd_id == id) {
                return env;
            }
        }
    };
    let again = tokio::time::timeout(WAIT, acks)
        .await
        .expect("the second ack in time");
    assert!(matches!(again.message, Message::Ack(a) if a.status == AckStatus::Executed));
    w.backend.event(EventType::ArrivedBase).await;
    let returns = w
        .backend
        .event_types()
        .iter()
        .filter(|e| **e == EventType::ReturnCommand)
        .count();
    assert_eq!(returns, 1, "acted once");
    w.stop().await;
}

/// Commands that make no sense now, a task while busy, malformed and unknown frames: each answered,
/// and the flight goes on to arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_out_of_order_input_is_answered_and_the_flight_goes_on() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    let first = task(north_of_home(Flavour::Px4, 200.0));
    assert!(w.backend.send(Envelope::new(first.clone())));
    w.backend.event(EventType::TookOff).await;

    // the same task again (a backend that missed the ack): acknowledged again, not refused
    assert!(w.backend.send(Envelope::new(first.clone())));
    let acks_for_first = |b: &Backend| {
        b.others
            .iter()
            .filter_map(|e| match &e.message {
                Message::Ack(a) if a.cmd_id == first.delivery_id => Some(a.status),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while acks_for_first(&w.backend).len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second ack");
        w.backend.next().await;
    }
    assert_eq!(
        acks_for_first(&w.backend),
        [AckStatus::Executed, AckStatus::Executed]
    );

    let drop = w.backend.command(CommandKind::DropCargo);
    let ack = w.backend.ack_for(drop).await;
    assert_eq!(ack.status, AckStatus::Rejected);
    assert!(ack.reason.unwrap().contains("NAVIGATING"));

    let second = task(north_of_home(Flavour::Px4, 100.0));
    let second_id = second.delivery_id;
    assert!(w.backend.send(Envelope::new(second)));
    let rejected = w.backend.ack_for(second_id).await;
    assert_eq!(rejected.status, AckStatus::Rejected);
    assert!(rejected.reason.unwrap().contains("refused"));

    for bad in [
        "{not json",
        r#"{"type":"teleport","payload":{}}"#,
        r#"{"type":"command","payload":{"command":"self_destruct"}}"#,
        r#"{"type":"task","payload":{"delivery_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d","destination":{"lat":95,"lon":1,"aruco_id":1},"priority":"normal"}}"#,
        r#"{"type":"telemetry","payload":{"battery_level":50,"position":{"lat":1,"lon":2,"alt":3},"status":"flying"}}"#,
    ] {
        assert!(w.backend.send_text(bad));
        let err = w.backend.frame(|e| e.kind() == "error").await;
        w.backend.others.retain(|e| e != &err);
        let Message::Error(e) = err.message else {
            unreachable!()
        };
        assert!(!e.message.is_empty(), "{bad}: {e:?}");
    }
    w.backend.event(EventType::Arrived).await;
    w.stop().await;
}

/// Battery sag below the return threshold: home with the parcel; below critical: land now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_low_then_critical() {
    let mut w = World::start(Flavour::ArduPilot, |c| c).await;
    w.climb_out(400.0).await;
    let pct = w.vehicle.view().borrow().battery_pct;
    w.vehicle.inject(Fault::BatterySag(pct - 20.0));
    let low = w.backend.event(EventType::BatteryLow).await;
    assert_eq!(low.to_state, Some(DroneState::Aborting));
    w.vehicle.inject(Fault::BatterySag(12.0));
    let crit = w.backend.event(EventType::BatteryCritical).await;
    assert_eq!(crit.to_state, Some(DroneState::EmergencyLanding));
    w.vehicle
        .wait_for(WAIT, |v| v.mode.contains("LAND"))
        .await
        .expect("landing");
    w.stop().await;
}

/// GPS lost in the air: hold; not back in time: land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gps_loss_holds_then_lands() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    w.climb_out(400.0).await;
    w.vehicle.inject(Fault::GpsLoss(600.0));
    let lost = w.backend.event(EventType::GpsLost).await;
    assert!(lost.reason.unwrap().contains("holding"));
    let ev = loop {
        let e = w.backend.event(EventType::GpsLost).await;
        if e.to_state == Some(DroneState::EmergencyLanding) {
            break e;
        }
        w.backend.events.retain(|x| x.event_id != e.event_id);
    };
    assert!(ev.reason.unwrap().contains("landing"));
    w.stop().await;
}

/// The autopilot's link goes silent: FAILSAFE; when it returns in the air: home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fc_link_loss_is_failsafe_then_home() {
    let mut w = World::start(Flavour::ArduPilot, |c| c).await;
    w.send_task(400.0);
    w.backend.event(EventType::TookOff).await;
    w.vehicle
        .wait_for(WAIT, |v| v.alt_rel_m > 10.0)
        .await
        .unwrap();
    w.vehicle.inject(Fault::LinkDrop(Duration::from_secs(3)));
    let lost = w.backend.event(EventType::FcLinkLost).await;
    assert_eq!(lost.to_state, Some(DroneState::Failsafe));
    let back = w.backend.event(EventType::FcLinkRestored).await;
    assert_eq!(back.to_state, Some(DroneState::Aborting));
    w.backend.event(EventType::ArrivedBase).await;
    w.stop().await;
}

/// Cloud down too long while waiting for the drop: home with the parcel, and the backend hears
/// about it once the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_loss_while_waiting_for_the_drop() {
    let mut w = World::start(Flavour::Px4, |c| c).await;
    w.fly_to_locker(150.0).await;
    // the relay goes away: no connection is accepted until the drone has given up waiting
    w.backend
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    w.backend.cut();
    w.vehicle
        .wait_for(WAIT, |v| v.mode.contains("RTL"))
        .await
        .expect("drone flies home on its own");
    w.backend
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let ev = w.backend.event(EventType::CloudLinkLost).await;
    assert_eq!(ev.to_state, Some(DroneState::Aborting));
    w.backend.event(EventType::ArrivedBase).await;
    assert!(!w.vehicle.view().borrow().gripper_released);
    w.stop().await;
}
