//! Whole deliveries against the sim vehicle in both flavours, over real sockets.

use crate::common;

use common::*;
use protocol::ws::{AckStatus, CommandKind, DroneState, EventType};
use sim::vehicle::Flavour;

async fn whole_delivery(flavour: Flavour) {
    let mut w = World::start(flavour, |c| c).await;
    let delivery = w.fly_to_locker(250.0).await;
    let view = w.vehicle.view().borrow().clone();
    assert!(
        !view.on_ground && (view.alt_rel_m - 4.0).abs() < 1.0,
        "hovering at drop height: {view:?}"
    );
    assert!(!view.gripper_released);

    let drop = w.backend.command(CommandKind::DropCargo);
    assert_eq!(w.backend.ack_for(drop).await.status, AckStatus::Executed);
    let confirmed = w.backend.event(EventType::DropConfirmed).await;
    assert_eq!(confirmed.delivery_id, Some(delivery));
    assert_eq!(confirmed.to_state, Some(DroneState::Dropped));
    // the sim's view refreshes every real tick: wait for it rather than race it
    w.vehicle
        .wait_for(WAIT, |v| v.gripper_released)
        .await
        .expect("the sim saw the gripper open");

    let rtb = w.backend.command(CommandKind::ReturnToBase);
    assert_eq!(w.backend.ack_for(rtb).await.status, AckStatus::Executed);
    let base = w.backend.event(EventType::ArrivedBase).await;
    assert_eq!(base.delivery_id, Some(delivery));
    w.backend.event(EventType::Ready).await;
    w.vehicle
        .wait_for(WAIT, |v| v.on_ground && !v.armed)
        .await
        .expect("landed and disarmed");

    use EventType::*;
    assert_eq!(
        w.backend.event_types(),
        [
            TaskAssigned,
            TookOff,
            Arrived,
            DropConfirmed,
            ReturnCommand,
            ArrivedBase,
            Ready
        ]
    );
    // telemetry carried real percent and WGS-84
    let tel = w
        .backend
        .others
        .iter()
        .rev()
        .find_map(|e| match &e.message {
            protocol::Message::Telemetry(t) => Some(t.clone()),
            _ => None,
        });
    let tel = tel.expect("telemetry frames");
    assert!(tel.battery_level.get() > 50.0 && tel.battery_level.get() <= 100.0);
    assert!((tel.position.lat.get() - north_of_home(flavour, 0.0).0).abs() < 0.01);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_delivery_px4() {
    whole_delivery(Flavour::Px4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_delivery_ardupilot() {
    whole_delivery(Flavour::ArduPilot).await;
}
