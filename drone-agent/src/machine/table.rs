//! Every transition the machine makes, as data: the truth the diagram is drawn from, checked
//! against the machine by the liveness exploration (`tests::liveness`), which fails when the
//! machine makes a transition this table does not list, or the table lists one it never makes.
//!
//! Edges named `restarted_*` are an agent restart finding the vehicle airborne, on the ground at
//! home or away, or the autopilot unreachable; they include every variant a state file can hold
//! (a take-off that had not left the ground goes back to PREFLIGHT). `flight_op_refused` is the
//! autopilot's final word on the current flight operation after the bounded retries
//! (`flight_op_refused_for_now`: it said "temporarily rejected" every time). `storage_failed`
//! in PREFLIGHT: the task could not be recorded, so it is refused before the take-off.

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
    // Idle: on the ground. `restarted_airborne` here (and in COMPLETED, LANDED_ELSEWHERE): no
    // flight on record but the vehicle flies: `[restart] unknown_airborne` = return_home / land / hold
    t(Idle, "task", Preflight),
    t(Idle, "restarted_airborne", Returning),
    t(Idle, "restarted_airborne", EmergencyLanding),
    t(Idle, "restarted_airborne", Paused),
    // Preflight: checks, then the take-off order (no report: `took_off` waits for the vehicle to leave the ground)
    t(Preflight, "abort", Idle),
    t(Preflight, "preflight_failed", Idle),
    t(Preflight, "preflight_passed", Navigating),
    t(Preflight, "restarted_airborne", Navigating),
    t(Preflight, "storage_failed", Idle),
    // Navigating: take-off, cruise, approach
    t(Navigating, "abort", Returning),
    t(Navigating, "abort", Aborting),
    t(Navigating, "approach_tick", Navigating),
    t(Navigating, "approach_tick", Returning),
    t(Navigating, "approach_tick", Aborting),
    t(Navigating, "camera_fault", Navigating),
    t(Navigating, "camera_fault", Returning),
    t(Navigating, "camera_fault", Aborting),
    t(Navigating, "camera_frame", WaitingDrop),
    t(Navigating, "approach_timeout", Navigating),
    t(Navigating, "approach_timeout", Returning),
    t(Navigating, "approach_timeout", Aborting),
    t(Navigating, "at_drop_height", WaitingDrop),
    t(Navigating, "autopilot_took_over", AutopilotControl),
    t(Navigating, "battery_critical", EmergencyLanding),
    t(Navigating, "battery_low", Returning),
    t(Navigating, "battery_low", Aborting),
    t(Navigating, "fc_link_lost", Failsafe),
    t(Navigating, "flight_op_refused", Idle),
    t(Navigating, "flight_op_refused", Returning),
    t(Navigating, "flight_op_refused", Aborting),
    t(Navigating, "flight_op_refused_for_now", Idle),
    t(Navigating, "flight_op_refused_for_now", Returning),
    t(Navigating, "flight_op_refused_for_now", Aborting),
    t(Navigating, "gps_loss_timeout", EmergencyLanding),
    t(Navigating, "landed_at_home", Completed),
    t(Navigating, "landed_away", LandedElsewhere),
    t(Navigating, "pause", Paused),
    t(Navigating, "restarted_airborne", Navigating),
    t(Navigating, "restarted_airborne", Returning),
    t(Navigating, "restarted_airborne", Aborting),
    t(Navigating, "restarted_at_home", Preflight),
    t(Navigating, "restarted_at_home", Completed),
    t(Navigating, "restarted_away", Preflight),
    t(Navigating, "restarted_away", LandedElsewhere),
    t(Navigating, "restarted_fc_unreachable", Failsafe),
    t(Navigating, "return_to_home", Returning),
    t(Navigating, "return_to_home", Aborting),
    // WaitingDrop
    t(WaitingDrop, "abort", Returning),
    t(WaitingDrop, "abort", Aborting),
    t(WaitingDrop, "autopilot_took_over", AutopilotControl),
    t(WaitingDrop, "battery_critical", EmergencyLanding),
    t(WaitingDrop, "battery_low", Returning),
    t(WaitingDrop, "battery_low", Aborting),
    t(WaitingDrop, "cloud_lost", Returning),
    t(WaitingDrop, "cloud_lost", Aborting),
    t(WaitingDrop, "drop_wait_expired", Returning),
    t(WaitingDrop, "drop_wait_expired", Aborting),
    t(WaitingDrop, "fc_link_lost", Failsafe),
    t(WaitingDrop, "flight_op_refused", Returning),
    t(WaitingDrop, "flight_op_refused", Aborting),
    t(WaitingDrop, "flight_op_refused_for_now", Returning),
    t(WaitingDrop, "flight_op_refused_for_now", Aborting),
    t(WaitingDrop, "gps_loss_timeout", EmergencyLanding),
    t(WaitingDrop, "landed_at_home", Completed),
    t(WaitingDrop, "landed_away", LandedElsewhere),
    t(WaitingDrop, "pause", Paused),
    t(WaitingDrop, "payload_released", Dropped),
    t(WaitingDrop, "release_done", Dropped),
    t(WaitingDrop, "release_failed", Returning),
    t(WaitingDrop, "release_failed", Aborting),
    t(WaitingDrop, "restarted_airborne", WaitingDrop),
    t(WaitingDrop, "restarted_airborne", Returning),
    t(WaitingDrop, "restarted_airborne", Aborting),
    t(WaitingDrop, "restarted_at_home", Preflight),
    t(WaitingDrop, "restarted_at_home", Completed),
    t(WaitingDrop, "restarted_away", Preflight),
    t(WaitingDrop, "restarted_away", LandedElsewhere),
    t(WaitingDrop, "restarted_fc_unreachable", Failsafe),
    t(WaitingDrop, "return_to_home", Returning),
    t(WaitingDrop, "return_to_home", Aborting),
    // Dropped
    t(Dropped, "abort", Returning),
    t(Dropped, "abort", Aborting),
    t(Dropped, "auto_return_due", Returning),
    t(Dropped, "auto_return_due", Aborting),
    t(Dropped, "autopilot_took_over", AutopilotControl),
    t(Dropped, "battery_critical", EmergencyLanding),
    t(Dropped, "battery_low", Returning),
    t(Dropped, "battery_low", Aborting),
    t(Dropped, "fc_link_lost", Failsafe),
    t(Dropped, "flight_op_refused", Returning),
    t(Dropped, "flight_op_refused", Aborting),
    t(Dropped, "flight_op_refused_for_now", Returning),
    t(Dropped, "flight_op_refused_for_now", Aborting),
    t(Dropped, "gps_loss_timeout", EmergencyLanding),
    t(Dropped, "landed_at_home", Completed),
    t(Dropped, "landed_away", LandedElsewhere),
    t(Dropped, "pause", Paused),
    t(Dropped, "restarted_airborne", Returning),
    t(Dropped, "restarted_airborne", Aborting),
    t(Dropped, "restarted_at_home", Preflight),
    t(Dropped, "restarted_at_home", Completed),
    t(Dropped, "restarted_away", Preflight),
    t(Dropped, "restarted_away", LandedElsewhere),
    t(Dropped, "restarted_fc_unreachable", Failsafe),
    t(Dropped, "return_to_base", Returning),
    t(Dropped, "return_to_base", Aborting),
    t(Dropped, "return_to_home", Returning),
    t(Dropped, "return_to_home", Aborting),
    // Returning
    t(Returning, "autopilot_took_over", AutopilotControl),
    t(Returning, "battery_critical", EmergencyLanding),
    t(Returning, "fc_link_lost", Failsafe),
    t(Returning, "flight_op_refused", Returning),
    t(Returning, "flight_op_refused", Aborting),
    t(Returning, "flight_op_refused", EmergencyLanding),
    t(Returning, "flight_op_refused_for_now", Returning),
    t(Returning, "flight_op_refused_for_now", Aborting),
    t(Returning, "flight_op_refused_for_now", EmergencyLanding),
    t(Returning, "gps_loss_timeout", EmergencyLanding),
    t(Returning, "landed_at_home", Completed),
    t(Returning, "landed_away", LandedElsewhere),
    t(Returning, "pause", Paused),
    t(Returning, "restarted_at_home", Preflight),
    t(Returning, "restarted_at_home", Completed),
    t(Returning, "restarted_away", Preflight),
    t(Returning, "restarted_away", LandedElsewhere),
    t(Returning, "restarted_fc_unreachable", Failsafe),
    // Completed
    t(Completed, "ready", Idle),
    t(Completed, "restarted_airborne", Returning),
    t(Completed, "restarted_airborne", EmergencyLanding),
    t(Completed, "restarted_airborne", Paused),
    // Paused: holding; `resume` goes back where it came from
    t(Paused, "abort", Returning),
    t(Paused, "abort", Aborting),
    t(Paused, "autopilot_took_over", AutopilotControl),
    t(Paused, "battery_critical", EmergencyLanding),
    t(Paused, "battery_low", Returning),
    t(Paused, "battery_low", Aborting),
    t(Paused, "fc_link_lost", Failsafe),
    t(Paused, "flight_op_refused", Returning),
    t(Paused, "flight_op_refused", Aborting),
    t(Paused, "flight_op_refused_for_now", Returning),
    t(Paused, "flight_op_refused_for_now", Aborting),
    t(Paused, "gps_loss_timeout", EmergencyLanding),
    t(Paused, "landed_at_home", Completed),
    t(Paused, "landed_away", LandedElsewhere),
    t(Paused, "restarted_at_home", Preflight),
    t(Paused, "restarted_at_home", Completed),
    t(Paused, "restarted_away", Preflight),
    t(Paused, "restarted_away", LandedElsewhere),
    t(Paused, "restarted_fc_unreachable", Failsafe),
    t(Paused, "resume", Navigating),
    t(Paused, "resume", WaitingDrop),
    t(Paused, "resume", Dropped),
    t(Paused, "resume", Returning),
    t(Paused, "resume", Aborting),
    t(Paused, "resume", EmergencyLanding),
    t(Paused, "return_to_home", Returning),
    t(Paused, "return_to_home", Aborting),
    // Aborting: home with the parcel
    t(Aborting, "autopilot_took_over", AutopilotControl),
    t(Aborting, "battery_critical", EmergencyLanding),
    t(Aborting, "fc_link_lost", Failsafe),
    t(Aborting, "flight_op_refused", Returning),
    t(Aborting, "flight_op_refused", Aborting),
    t(Aborting, "flight_op_refused", EmergencyLanding),
    t(Aborting, "flight_op_refused_for_now", Returning),
    t(Aborting, "flight_op_refused_for_now", Aborting),
    t(Aborting, "flight_op_refused_for_now", EmergencyLanding),
    t(Aborting, "gps_loss_timeout", EmergencyLanding),
    t(Aborting, "landed_at_home", Completed),
    t(Aborting, "landed_away", LandedElsewhere),
    t(Aborting, "pause", Paused),
    t(Aborting, "restarted_at_home", Preflight),
    t(Aborting, "restarted_at_home", Completed),
    t(Aborting, "restarted_away", Preflight),
    t(Aborting, "restarted_away", LandedElsewhere),
    t(Aborting, "restarted_fc_unreachable", Failsafe),
    // EmergencyLanding
    t(EmergencyLanding, "autopilot_took_over", AutopilotControl),
    t(EmergencyLanding, "fc_link_lost", Failsafe),
    t(EmergencyLanding, "landed_at_home", Completed),
    t(EmergencyLanding, "landed_away", LandedElsewhere),
    t(EmergencyLanding, "restarted_at_home", Preflight),
    t(EmergencyLanding, "restarted_at_home", Completed),
    t(EmergencyLanding, "restarted_away", Preflight),
    t(EmergencyLanding, "restarted_away", LandedElsewhere),
    t(EmergencyLanding, "restarted_fc_unreachable", Failsafe),
    // Failsafe: no autopilot link: its own failsafe flies
    t(Failsafe, "fc_link_restored_airborne", Returning),
    t(Failsafe, "fc_link_restored_airborne", Aborting),
    t(Failsafe, "fc_link_restored_at_home", Preflight),
    t(Failsafe, "fc_link_restored_at_home", Completed),
    t(Failsafe, "fc_link_restored_away", Preflight),
    t(Failsafe, "fc_link_restored_away", LandedElsewhere),
    t(Failsafe, "landed_at_home", Completed),
    t(Failsafe, "landed_away", LandedElsewhere),
    t(Failsafe, "restarted_airborne", Returning),
    t(Failsafe, "restarted_airborne", Aborting),
    t(Failsafe, "restarted_at_home", Preflight),
    t(Failsafe, "restarted_at_home", Completed),
    t(Failsafe, "restarted_away", Preflight),
    t(Failsafe, "restarted_away", LandedElsewhere),
    // LandedElsewhere: the one human step: a technician's `ready`
    t(LandedElsewhere, "technician_ready", Idle),
    t(LandedElsewhere, "restarted_airborne", Returning),
    t(LandedElsewhere, "restarted_airborne", EmergencyLanding),
    t(LandedElsewhere, "restarted_airborne", Paused),
    // AutopilotControl: the autopilot changed mode by itself: followed until `resume` (or `[autopilot] take_back_after_s`)
    t(AutopilotControl, "abort", Returning),
    t(AutopilotControl, "abort", Aborting),
    t(AutopilotControl, "fc_link_lost", Failsafe),
    t(AutopilotControl, "landed_at_home", Completed),
    t(AutopilotControl, "landed_away", LandedElsewhere),
    t(AutopilotControl, "pause", Paused),
    t(AutopilotControl, "restarted_at_home", Preflight),
    t(AutopilotControl, "restarted_at_home", Completed),
    t(AutopilotControl, "restarted_away", Preflight),
    t(AutopilotControl, "restarted_away", LandedElsewhere),
    t(AutopilotControl, "restarted_fc_unreachable", Failsafe),
    t(AutopilotControl, "resume", Navigating),
    t(AutopilotControl, "resume", WaitingDrop),
    t(AutopilotControl, "resume", Dropped),
    t(AutopilotControl, "resume", Returning),
    t(AutopilotControl, "resume", Aborting),
    t(AutopilotControl, "resume", EmergencyLanding),
    t(AutopilotControl, "return_to_home", Returning),
    t(AutopilotControl, "return_to_home", Aborting),
    t(AutopilotControl, "take_back_due", Returning),
    t(AutopilotControl, "take_back_due", Aborting),
];

/// The machine as a Mermaid state diagram: one arrow per pair of states, labelled with every
/// event that takes it (in table order).
pub fn mermaid() -> String {
    let mut out = String::from("stateDiagram-v2\n    [*] --> IDLE\n");
    let mut arrows: Vec<((&'static str, &'static str), Vec<&'static str>)> = Vec::new();
    for tr in TRANSITIONS {
        let key = (super::state_name(tr.from), super::state_name(tr.to));
        match arrows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, on)) if !on.contains(&tr.on) => on.push(tr.on),
            Some(_) => {}
            None => arrows.push((key, vec![tr.on])),
        }
    }
    for ((from, to), on) in arrows {
        out.push_str(&format!("    {from} --> {to}: {}\n", on.join(", ")));
    }
    out
}
