//! Every transition the machine makes, as data: the truth the diagram is drawn from, checked
//! against the machine by `tests::table_matches_machine`.

use protocol::ws::DroneState::{self, *};

/// One edge: in `from`, the event named `on` (see [`super::Event::name`]) leads to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    pub from: DroneState,
    pub on: &'static str,
    pub to: DroneState,
}

const fn t(from: DroneState, on: &'static str, to: DroneState) -> Transition {
    Transition { from, on, to }
}

/// Every transition, self-transitions included (a retry re-enters NAVIGATING).
pub const TRANSITIONS: &[Transition] = &[
    // the seed's happy path, with PREFLIGHT in front
    t(Idle, "task", Preflight),
    t(Preflight, "preflight_passed", Navigating),
    t(Preflight, "preflight_failed", Idle),
    t(Preflight, "flight_op_failed", Idle),
    t(Preflight, "abort", Idle),
    t(Navigating, "at_drop_height", WaitingDrop),
    t(Navigating, "approach_failed", Navigating),
    t(Navigating, "approach_timeout", Navigating),
    t(Navigating, "pause", Paused),
    t(WaitingDrop, "release_done", Dropped),
    t(WaitingDrop, "approach_failed", Navigating),
    t(WaitingDrop, "release_failed", Aborting),
    t(WaitingDrop, "drop_wait_expired", Aborting),
    t(WaitingDrop, "cloud_lost", Aborting),
    t(WaitingDrop, "pause", Paused),
    t(Dropped, "return_to_base", Returning),
    t(Dropped, "return_to_home", Returning),
    t(Dropped, "auto_return_due", Returning),
    t(Dropped, "pause", Paused),
    t(Returning, "landed_at_home", Completed),
    t(Returning, "pause", Paused),
    t(Aborting, "landed_at_home", Completed),
    t(Aborting, "pause", Paused),
    t(Completed, "ready", Idle),
    // mission controls
    t(Paused, "resume", Navigating),
    t(Paused, "resume", WaitingDrop),
    t(Paused, "resume", Dropped),
    t(Paused, "resume", Returning),
    t(Paused, "resume", Aborting),
    // failsafes shared by every flying state (the `airborne` superstate)
    t(Navigating, "abort", Aborting),
    t(Navigating, "return_to_home", Aborting),
    t(Navigating, "battery_low", Aborting),
    t(WaitingDrop, "abort", Aborting),
    t(WaitingDrop, "return_to_home", Aborting),
    t(WaitingDrop, "battery_low", Aborting),
    t(Dropped, "abort", Returning),
    t(Dropped, "battery_low", Returning),
    t(Paused, "abort", Aborting),
    t(Paused, "abort", Returning),
    t(Paused, "return_to_home", Aborting),
    t(Paused, "return_to_home", Returning),
    t(Paused, "battery_low", Aborting),
    t(Paused, "battery_low", Returning),
    t(Navigating, "flight_op_failed", Aborting),
    t(WaitingDrop, "flight_op_failed", Aborting),
    t(Dropped, "flight_op_failed", Returning),
    t(Returning, "flight_op_failed", Returning),
    t(Aborting, "flight_op_failed", Aborting),
    t(Paused, "flight_op_failed", Aborting),
    t(Paused, "flight_op_failed", Returning),
    t(Returning, "abort", Returning),
    t(Navigating, "battery_critical", EmergencyLanding),
    t(WaitingDrop, "battery_critical", EmergencyLanding),
    t(Dropped, "battery_critical", EmergencyLanding),
    t(Returning, "battery_critical", EmergencyLanding),
    t(Aborting, "battery_critical", EmergencyLanding),
    t(Paused, "battery_critical", EmergencyLanding),
    t(Navigating, "gps_loss_timeout", EmergencyLanding),
    t(WaitingDrop, "gps_loss_timeout", EmergencyLanding),
    t(Dropped, "gps_loss_timeout", EmergencyLanding),
    t(Returning, "gps_loss_timeout", EmergencyLanding),
    t(Aborting, "gps_loss_timeout", EmergencyLanding),
    t(Paused, "gps_loss_timeout", EmergencyLanding),
    t(Navigating, "fc_link_lost", Failsafe),
    t(WaitingDrop, "fc_link_lost", Failsafe),
    t(Dropped, "fc_link_lost", Failsafe),
    t(Returning, "fc_link_lost", Failsafe),
    t(Aborting, "fc_link_lost", Failsafe),
    t(Paused, "fc_link_lost", Failsafe),
    t(EmergencyLanding, "fc_link_lost", Failsafe),
    t(Navigating, "landed_away", LandedElsewhere),
    t(WaitingDrop, "landed_away", LandedElsewhere),
    t(Dropped, "landed_away", LandedElsewhere),
    t(Returning, "landed_away", LandedElsewhere),
    t(Aborting, "landed_away", LandedElsewhere),
    t(Paused, "landed_away", LandedElsewhere),
    t(EmergencyLanding, "landed_away", LandedElsewhere),
    t(Navigating, "landed_at_home", Completed),
    t(WaitingDrop, "landed_at_home", Completed),
    t(Dropped, "landed_at_home", Completed),
    t(Paused, "landed_at_home", Completed),
    t(EmergencyLanding, "landed_at_home", Completed),
    // the flight controller's own failsafe had the drone
    t(Failsafe, "fc_link_restored_airborne", Aborting),
    t(Failsafe, "fc_link_restored_airborne", Returning),
    t(Failsafe, "fc_link_restored_on_ground", LandedElsewhere),
    t(Failsafe, "landed_away", LandedElsewhere),
    t(Failsafe, "landed_at_home", Completed),
    t(LandedElsewhere, "ready", Idle),
    // after an agent restart in the air (by config: carry on, or home with the parcel)
    t(Navigating, "restarted_airborne", Navigating),
    t(Navigating, "restarted_airborne", Aborting),
    t(WaitingDrop, "restarted_airborne", WaitingDrop),
    t(WaitingDrop, "restarted_airborne", Aborting),
    t(Dropped, "restarted_airborne", Returning),
];

/// The machine as a Mermaid state diagram, one edge per row of [`TRANSITIONS`] (duplicates
/// merged).
pub fn mermaid() -> String {
    let mut out = String::from("stateDiagram-v2\n    [*] --> IDLE\n");
    let mut seen = std::collections::BTreeSet::new();
    for tr in TRANSITIONS {
        let from = super::state_name(tr.from);
        let to = super::state_name(tr.to);
        if seen.insert((from.clone(), tr.on, to.clone())) {
            out.push_str(&format!("    {from} --> {to}: {}\n", tr.on));
        }
    }
    out
}
