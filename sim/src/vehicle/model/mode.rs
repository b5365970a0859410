//! Flight modes, flavour-neutral, and how each flavour numbers them on the wire. The numbers are
//! written here independently of the hal's on purpose: the sim is a check on the hal.

use super::*;

/// Flight mode, flavour-neutral; each flavour encodes it its own way in HEARTBEAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ArduPilot STABILIZE / PX4 MANUAL (boot mode; the sim holds position in it).
    Manual,
    /// ArduPilot GUIDED (PX4 has none: it uses Hold).
    Guided,
    /// ArduPilot LOITER (climb rate from the RC throttle) / PX4 AUTO.LOITER.
    Hold,
    /// ArduPilot BRAKE: stop and hold, climb rate 0 (PX4 has none).
    Brake,
    /// PX4 AUTO.TAKEOFF.
    Takeoff,
    Auto,
    Rtl,
    Land,
}

impl Mode {
    pub fn name(self, f: Flavour) -> &'static str {
        match (f, self) {
            (Flavour::ArduPilot, Mode::Manual) => "STABILIZE",
            (Flavour::ArduPilot, Mode::Guided) => "GUIDED",
            (Flavour::ArduPilot, Mode::Hold) => "LOITER",
            (Flavour::ArduPilot, Mode::Brake) => "BRAKE",
            (Flavour::Px4, Mode::Brake) => "AUTO.LOITER",
            (Flavour::ArduPilot, Mode::Takeoff) => "TAKEOFF",
            (Flavour::ArduPilot, Mode::Auto) => "AUTO",
            (Flavour::ArduPilot, Mode::Rtl) => "RTL",
            (Flavour::ArduPilot, Mode::Land) => "LAND",
            (Flavour::Px4, Mode::Manual) => "MANUAL",
            (Flavour::Px4, Mode::Guided) => "AUTO.LOITER",
            (Flavour::Px4, Mode::Hold) => "AUTO.LOITER",
            (Flavour::Px4, Mode::Takeoff) => "AUTO.TAKEOFF",
            (Flavour::Px4, Mode::Auto) => "AUTO.MISSION",
            (Flavour::Px4, Mode::Rtl) => "AUTO.RTL",
            (Flavour::Px4, Mode::Land) => "AUTO.LAND",
        }
    }

    pub(super) fn custom_mode(self, f: Flavour) -> u32 {
        match f {
            Flavour::ArduPilot => match self {
                Mode::Manual => 0,
                Mode::Guided | Mode::Takeoff => 4,
                Mode::Hold => 5,
                Mode::Brake => 17,
                Mode::Auto => 3,
                Mode::Rtl => 6,
                Mode::Land => 9,
            },
            Flavour::Px4 => {
                let (main, sub): (u32, u32) = match self {
                    Mode::Manual => (1, 0),
                    Mode::Guided | Mode::Hold | Mode::Brake => (4, 3),
                    Mode::Takeoff => (4, 2),
                    Mode::Auto => (4, 4),
                    Mode::Rtl => (4, 5),
                    Mode::Land => (4, 6),
                };
                (main << 16) | (sub << 24)
            }
        }
    }

    pub(super) fn from_set_mode(f: Flavour, p2: f32, p3: f32) -> Option<Mode> {
        match f {
            Flavour::ArduPilot => match p2 as u32 {
                0 => Some(Mode::Manual),
                4 => Some(Mode::Guided),
                5 => Some(Mode::Hold),
                17 => Some(Mode::Brake),
                3 => Some(Mode::Auto),
                6 => Some(Mode::Rtl),
                9 => Some(Mode::Land),
                _ => None,
            },
            Flavour::Px4 => match (p2 as u32, p3 as u32) {
                (1, _) | (2, _) | (3, _) | (7, _) => Some(Mode::Manual),
                (4, 3) | (4, 1) => Some(Mode::Hold),
                (4, 2) => Some(Mode::Takeoff),
                (4, 4) => Some(Mode::Auto),
                (4, 5) => Some(Mode::Rtl),
                (4, 6) => Some(Mode::Land),
                _ => None,
            },
        }
    }
}
