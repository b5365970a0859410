//! Flight-mode encodings: HEARTBEAT `custom_mode` ↔ [`FlightMode`], for PX4 and ArduCopter.
//!
//! PX4 packs a main mode in bits 16..24 and a sub mode (for AUTO) in bits 24..32 of `custom_mode`
//! (`px4_custom_mode.h`); `MAV_CMD_DO_SET_MODE` takes them as param 2 and 3. ArduCopter numbers its
//! modes (`Copter::Mode::Number`) and takes the number as param 2.

use super::{Autopilot, FlightMode, FlightModeKind};

/// PX4 main modes.
pub mod px4 {
    pub const MANUAL: u8 = 1;
    pub const ALTCTL: u8 = 2;
    pub const POSCTL: u8 = 3;
    pub const AUTO: u8 = 4;
    pub const ACRO: u8 = 5;
    pub const OFFBOARD: u8 = 6;
    pub const STABILIZED: u8 = 7;
    pub const RATTITUDE: u8 = 8;
    /// AUTO sub modes.
    pub const AUTO_READY: u8 = 1;
    pub const AUTO_TAKEOFF: u8 = 2;
    pub const AUTO_LOITER: u8 = 3;
    pub const AUTO_MISSION: u8 = 4;
    pub const AUTO_RTL: u8 = 5;
    pub const AUTO_LAND: u8 = 6;
    pub const AUTO_FOLLOW_TARGET: u8 = 8;
    pub const AUTO_PRECLAND: u8 = 9;

    /// `custom_mode` for a main/sub mode pair.
    pub fn custom_mode(main: u8, sub: u8) -> u32 {
        (u32::from(main) << 16) | (u32::from(sub) << 24)
    }
}

/// ArduCopter mode numbers.
pub mod copter {
    pub const STABILIZE: u32 = 0;
    pub const ACRO: u32 = 1;
    pub const ALT_HOLD: u32 = 2;
    pub const AUTO: u32 = 3;
    pub const GUIDED: u32 = 4;
    pub const LOITER: u32 = 5;
    pub const RTL: u32 = 6;
    pub const CIRCLE: u32 = 7;
    pub const LAND: u32 = 9;
    pub const DRIFT: u32 = 11;
    pub const SPORT: u32 = 13;
    pub const FLIP: u32 = 14;
    pub const AUTOTUNE: u32 = 15;
    pub const POSHOLD: u32 = 16;
    pub const BRAKE: u32 = 17;
    pub const THROW: u32 = 18;
    pub const GUIDED_NOGPS: u32 = 20;
    pub const SMART_RTL: u32 = 21;
    pub const AUTO_RTL: u32 = 27;
}

/// Decodes a HEARTBEAT's `custom_mode` for this autopilot.
pub fn decode(autopilot: Autopilot, custom_mode: u32) -> FlightMode {
    match autopilot {
        Autopilot::Px4 => decode_px4(custom_mode),
        Autopilot::ArduPilot => decode_copter(custom_mode),
        _ => FlightMode {
            kind: FlightModeKind::Unknown,
            raw: format!("custom({custom_mode:#x})"),
        },
    }
}

fn mode(kind: FlightModeKind, raw: &str) -> FlightMode {
    FlightMode {
        kind,
        raw: raw.to_owned(),
    }
}

fn decode_px4(custom_mode: u32) -> FlightMode {
    use FlightModeKind as K;
    let main = ((custom_mode >> 16) & 0xff) as u8;
    let sub = ((custom_mode >> 24) & 0xff) as u8;
    match (main, sub) {
        (px4::MANUAL, _) => mode(K::Manual, "MANUAL"),
        (px4::ALTCTL, _) => mode(K::AltitudeHold, "ALTCTL"),
        (px4::POSCTL, _) => mode(K::PositionHold, "POSCTL"),
        (px4::ACRO, _) => mode(K::Acro, "ACRO"),
        (px4::OFFBOARD, _) => mode(K::Offboard, "OFFBOARD"),
        (px4::STABILIZED, _) => mode(K::Stabilized, "STABILIZED"),
        (px4::RATTITUDE, _) => mode(K::Acro, "RATTITUDE"),
        (px4::AUTO, px4::AUTO_READY) => mode(K::Hold, "AUTO.READY"),
        (px4::AUTO, px4::AUTO_TAKEOFF) => mode(K::Takeoff, "AUTO.TAKEOFF"),
        (px4::AUTO, px4::AUTO_LOITER) => mode(K::Hold, "AUTO.LOITER"),
        (px4::AUTO, px4::AUTO_MISSION) => mode(K::Auto, "AUTO.MISSION"),
        (px4::AUTO, px4::AUTO_RTL) => mode(K::ReturnToLaunch, "AUTO.RTL"),
        (px4::AUTO, px4::AUTO_LAND) => mode(K::Land, "AUTO.LAND"),
        (px4::AUTO, px4::AUTO_PRECLAND) => mode(K::Land, "AUTO.PRECLAND"),
        (px4::AUTO, px4::AUTO_FOLLOW_TARGET) => mode(K::Other, "AUTO.FOLLOW_TARGET"),
        _ => FlightMode {
            kind: K::Other,
            raw: format!("PX4({main}.{sub})"),
        },
    }
}

fn decode_copter(custom_mode: u32) -> FlightMode {
    use FlightModeKind as K;
    match custom_mode {
        copter::STABILIZE => mode(K::Stabilized, "STABILIZE"),
        copter::ACRO => mode(K::Acro, "ACRO"),
        copter::ALT_HOLD => mode(K::AltitudeHold, "ALT_HOLD"),
        copter::AUTO => mode(K::Auto, "AUTO"),
        copter::GUIDED => mode(K::Guided, "GUIDED"),
        copter::LOITER => mode(K::Hold, "LOITER"),
        copter::RTL => mode(K::ReturnToLaunch, "RTL"),
        copter::CIRCLE => mode(K::Other, "CIRCLE"),
        copter::LAND => mode(K::Land, "LAND"),
        copter::DRIFT => mode(K::Other, "DRIFT"),
        copter::SPORT => mode(K::Other, "SPORT"),
        copter::FLIP => mode(K::Other, "FLIP"),
        copter::AUTOTUNE => mode(K::Other, "AUTOTUNE"),
        copter::POSHOLD => mode(K::PositionHold, "POSHOLD"),
        copter::BRAKE => mode(K::Hold, "BRAKE"),
        copter::THROW => mode(K::Other, "THROW"),
        copter::GUIDED_NOGPS => mode(K::Guided, "GUIDED_NOGPS"),
        copter::SMART_RTL => mode(K::ReturnToLaunch, "SMART_RTL"),
        copter::AUTO_RTL => mode(K::ReturnToLaunch, "AUTO_RTL"),
        other => FlightMode {
            kind: K::Other,
            raw: format!("COPTER({other})"),
        },
    }
}

/// `MAV_CMD_DO_SET_MODE` params 2 and 3 (after param 1 = `MAV_MODE_FLAG_CUSTOM_MODE_ENABLED`)
/// that select `kind` on this autopilot, or None if it has no such mode.
pub fn encode(autopilot: Autopilot, kind: FlightModeKind) -> Option<(f32, f32)> {
    use FlightModeKind as K;
    match autopilot {
        Autopilot::Px4 => {
            let (main, sub) = match kind {
                K::Manual => (px4::MANUAL, 0),
                K::Stabilized => (px4::STABILIZED, 0),
                K::Acro => (px4::ACRO, 0),
                K::AltitudeHold => (px4::ALTCTL, 0),
                K::PositionHold => (px4::POSCTL, 0),
                K::Offboard => (px4::OFFBOARD, 0),
                // PX4 flies DO_REPOSITION targets from Hold: it is PX4's "guided"
                K::Hold | K::Guided => (px4::AUTO, px4::AUTO_LOITER),
                K::Auto => (px4::AUTO, px4::AUTO_MISSION),
                K::Takeoff => (px4::AUTO, px4::AUTO_TAKEOFF),
                K::Land => (px4::AUTO, px4::AUTO_LAND),
                K::ReturnToLaunch => (px4::AUTO, px4::AUTO_RTL),
                K::Other | K::Unknown => return None,
            };
            Some((f32::from(main), f32::from(sub)))
        }
        Autopilot::ArduPilot => {
            let n = match kind {
                K::Manual | K::Stabilized => copter::STABILIZE,
                K::Acro => copter::ACRO,
                K::AltitudeHold => copter::ALT_HOLD,
                K::PositionHold => copter::POSHOLD,
                K::Guided | K::Offboard => copter::GUIDED,
                // BRAKE, never LOITER: LOITER takes its climb rate from the throttle stick, and
                // with no transmitter that is stick-down (RC input 1000 µs): the vehicle descends
                K::Hold => copter::BRAKE,
                K::Auto => copter::AUTO,
                K::Land => copter::LAND,
                K::ReturnToLaunch => copter::RTL,
                K::Takeoff | K::Other | K::Unknown => return None,
            };
            Some((n as f32, 0.0))
        }
        _ => None,
    }
}

/// Whether `current` is the mode a request for `wanted` switches to: on ArduPilot exactly that
/// mode number (LOITER and BRAKE are both Hold, and only BRAKE holds without a stick); on PX4 as
/// [`satisfies`].
pub fn reached(autopilot: Autopilot, current: &FlightMode, wanted: FlightModeKind) -> bool {
    match (autopilot, encode(autopilot, wanted)) {
        (Autopilot::ArduPilot, Some((n, _))) => decode(autopilot, n as u32).raw == current.raw,
        _ => satisfies(autopilot, current.kind, wanted),
    }
}

/// Whether a decoded mode satisfies a request for `wanted` (PX4 reports Hold for guided flight).
pub fn satisfies(autopilot: Autopilot, current: FlightModeKind, wanted: FlightModeKind) -> bool {
    current == wanted
        || (autopilot == Autopilot::Px4
            && wanted == FlightModeKind::Guided
            && current == FlightModeKind::Hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn px4_round_trip() {
        for kind in [
            FlightModeKind::Manual,
            FlightModeKind::Hold,
            FlightModeKind::Auto,
            FlightModeKind::Takeoff,
            FlightModeKind::Land,
            FlightModeKind::ReturnToLaunch,
            FlightModeKind::Offboard,
            FlightModeKind::PositionHold,
        ] {
            let (main, sub) = encode(Autopilot::Px4, kind).unwrap();
            let m = decode(Autopilot::Px4, px4::custom_mode(main as u8, sub as u8));
            assert_eq!(m.kind, kind, "{m:?}");
        }
        assert_eq!(decode(Autopilot::Px4, 0x0304_0000).raw, "AUTO.LOITER");
        assert_eq!(
            decode(Autopilot::Px4, 0x0404_0000).kind,
            FlightModeKind::Auto
        );
    }

    #[test]
    fn copter_round_trip() {
        for kind in [
            FlightModeKind::Guided,
            FlightModeKind::Hold,
            FlightModeKind::Auto,
            FlightModeKind::Land,
            FlightModeKind::ReturnToLaunch,
            FlightModeKind::AltitudeHold,
        ] {
            let (n, _) = encode(Autopilot::ArduPilot, kind).unwrap();
            assert_eq!(decode(Autopilot::ArduPilot, n as u32).kind, kind);
        }
        assert_eq!(decode(Autopilot::ArduPilot, 0).raw, "STABILIZE");
        assert_eq!(decode(Autopilot::ArduPilot, 99).kind, FlightModeKind::Other);
        assert!(encode(Autopilot::ArduPilot, FlightModeKind::Takeoff).is_none());
        // hold is BRAKE: LOITER (also Hold) does not count as having reached it
        assert_eq!(
            encode(Autopilot::ArduPilot, FlightModeKind::Hold),
            Some((17.0, 0.0))
        );
        let loiter = decode(Autopilot::ArduPilot, copter::LOITER);
        assert_eq!(loiter.kind, FlightModeKind::Hold);
        assert!(!reached(
            Autopilot::ArduPilot,
            &loiter,
            FlightModeKind::Hold
        ));
        let brake = decode(Autopilot::ArduPilot, copter::BRAKE);
        assert!(reached(Autopilot::ArduPilot, &brake, FlightModeKind::Hold));
    }
}
