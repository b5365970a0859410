//! What differs between the autopilots, in one type: the operations ask [`Ways`] instead of
//! branching on the autopilot themselves. Each answer is the one written for PX4 1.16 or
//! ArduCopter 4.7; another autopilot gets what it got before (mostly ArduPilot's ways).

use super::*;

/// The autopilot's ways, as the operations need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ways(Autopilot);

/// How `hold()` stops the vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HoldBy {
    /// BRAKE (climb rate 0 whatever the sticks say), then GUIDED at the stopped point: never
    /// LOITER, whose climb rate is the throttle stick (ArduPilot).
    BrakeThenGuided,
    /// Hold, and a reposition to here when flying a guided leg (PX4).
    HoldThenHere,
    /// Hold only.
    Hold,
}

impl Ways {
    pub(super) fn of(autopilot: Autopilot) -> Self {
        Self(autopilot)
    }

    fn px4(self) -> bool {
        self.0 == Autopilot::Px4
    }

    /// DO_REPOSITION and NAV_TAKEOFF altitudes are AMSL (PX4). Otherwise they are above home,
    /// and taken only in GUIDED (ArduCopter): the operation sets GUIDED first.
    pub(super) fn amsl_altitudes(self) -> bool {
        self.px4()
    }

    /// The mode the autopilot switches to by itself for a reposition (PX4 flies it in Hold).
    pub(super) fn reposition_mode(self) -> Option<FlightModeKind> {
        self.px4().then_some(FlightModeKind::Hold)
    }

    /// The mode the autopilot switches to by itself for a take-off (PX4's Takeoff).
    pub(super) fn takeoff_mode(self) -> Option<FlightModeKind> {
        self.px4().then_some(FlightModeKind::Takeoff)
    }

    /// The flight mode before arming: ArduCopter checks a mode's position needs only while
    /// armed, so arming in STABILIZE and asking for GUIDED after fails with the motors running.
    pub(super) fn mode_before_arming(self) -> bool {
        self.0 == Autopilot::ArduPilot
    }

    pub(super) fn hold_by(self) -> HoldBy {
        match self.0 {
            Autopilot::ArduPilot => HoldBy::BrakeThenGuided,
            Autopilot::Px4 => HoldBy::HoldThenHere,
            _ => HoldBy::Hold,
        }
    }

    /// The first uploaded mission item's sequence number: ArduPilot's item 0 is home.
    pub(super) fn mission_offset(self) -> u16 {
        u16::from(self.0 == Autopilot::ArduPilot)
    }

    /// The message that reports the position estimate, and its name.
    pub(super) fn estimator_message(self) -> (u32, &'static str) {
        if self.px4() {
            (apm::ESTIMATOR_STATUS_DATA::ID_U32, "ESTIMATOR_STATUS")
        } else {
            (apm::EKF_STATUS_REPORT_DATA::ID_U32, "EKF_STATUS_REPORT")
        }
    }

    /// Without an estimator report on this link the autopilot's own arming checks judge the
    /// position (PX4 streams ESTIMATOR_STATUS only on request); elsewhere pre-flight fails.
    pub(super) fn arming_checks_judge_position(self) -> bool {
        self.px4()
    }

    /// DO_GRIPPER's final ACK means it moved (PX4's IN_PROGRESS then ACCEPTED); ArduPilot ACKs
    /// at once and reports "Gripper load released" later: that report is the confirmation.
    pub(super) fn gripper_confirmed_by_ack(self) -> bool {
        self.px4()
    }

    /// Outputs are driven through actuator sets (PX4's DO_SET_ACTUATOR), not DO_SET_SERVO.
    pub(super) fn servo_by_actuator_set(self) -> bool {
        self.px4()
    }
}
