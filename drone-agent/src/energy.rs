//! Energy to get home (issue 12): what the drone's battery can still do, in percent of the pack,
//! learned in flight. Pure: numbers in, verdicts out; the runtime feeds it the autopilot's
//! battery percentage per flight phase and persists the model between flights.
//!
//! The model is three rates: percent per second of hover, per second of cruise at the configured
//! cruise speed, and per metre of climb. A leg against the wind takes longer at the same airspeed,
//! so it costs cruise-seconds, not metres: `distance / (cruise speed - headwind)`. Descending and
//! landing are hover-seconds at the descent rate. The reserve is added on top of every estimate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Consumption rates, percent of the pack. Seeded from config for the first flight, then learned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergyModel {
    pub hover_pct_per_s: f64,
    pub cruise_pct_per_s: f64,
    pub climb_pct_per_m: f64,
    /// Flights the rates were learned from (0: still the config's seed).
    #[serde(default)]
    pub flights: u32,
}

/// The flight a verdict is about: where the drone is against home, and how it will fly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    /// Horizontal distance to fly, metres.
    pub distance_m: f64,
    /// The wind's component against the direction of flight, m/s (negative: a tailwind).
    pub headwind_mps: f64,
    /// Height to climb first (to cruise altitude), metres.
    pub climb_m: f64,
    /// Height to come down at the end (to land), metres.
    pub descent_m: f64,
    /// Time spent hovering on the way (an approach, a drop wait), seconds.
    pub hover_s: f64,
}

/// How the drone flies: from config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlightProfile {
    pub cruise_speed_mps: f64,
    pub descent_speed_mps: f64,
    /// Percent kept for the unexpected, on top of every estimate.
    pub reserve_pct: f64,
}

/// What a trip costs, with the parts that make it up (for the event's reason).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// Everything, the reserve included.
    pub total_pct: f64,
    pub cruise_s: f64,
    pub headwind_mps: f64,
    pub distance_m: f64,
}

/// A trip that cannot be flown at all: the headwind is as fast as the drone.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("a headwind of {headwind_mps:.1} m/s leaves no ground speed at a cruise speed of {cruise_speed_mps:.1} m/s")]
pub struct NoGroundSpeed {
    pub headwind_mps: f64,
    pub cruise_speed_mps: f64,
}

/// Below this ground speed a leg is not worth flying (it would take most of the battery).
const MIN_GROUND_SPEED_MPS: f64 = 1.0;

impl EnergyModel {
    /// The percent a trip needs, the reserve included.
    pub fn need(&self, trip: Trip, profile: FlightProfile) -> Result<Need, NoGroundSpeed> {
        let ground = profile.cruise_speed_mps - trip.headwind_mps;
        if ground < MIN_GROUND_SPEED_MPS {
            return Err(NoGroundSpeed {
                headwind_mps: trip.headwind_mps,
                cruise_speed_mps: profile.cruise_speed_mps,
            });
        }
        let cruise_s = trip.distance_m.max(0.0) / ground;
        let descent_s = trip.descent_m.max(0.0) / profile.descent_speed_mps.max(0.1);
        let total_pct = cruise_s * self.cruise_pct_per_s
            + trip.climb_m.max(0.0) * self.climb_pct_per_m
            + (descent_s + trip.hover_s.max(0.0)) * self.hover_pct_per_s
            + profile.reserve_pct;
        Ok(Need {
            total_pct,
            cruise_s,
            headwind_mps: trip.headwind_mps,
            distance_m: trip.distance_m,
        })
    }

    /// How long the drone may still hover where it is and then fly `home`, given `have` percent:
    /// the drop wait's budget. Zero when the trip home already takes everything.
    pub fn hover_budget_s(&self, have_pct: f64, home: Trip, profile: FlightProfile) -> f64 {
        match self.need(home, profile) {
            Ok(need) if self.hover_pct_per_s > 0.0 => {
                ((have_pct - need.total_pct) / self.hover_pct_per_s).max(0.0)
            }
            _ => 0.0,
        }
    }

    /// The model after one more flight: each rate moves a third of the way to what this flight
    /// measured, and only where the flight measured enough of that phase to mean something.
    pub fn learn(&self, flight: &FlightLog) -> EnergyModel {
        const WEIGHT: f64 = 1.0 / 3.0;
        let blend = |old: f64, new: Option<f64>| match new {
            Some(new) if new.is_finite() && new > 0.0 => old + (new - old) * WEIGHT,
            _ => old,
        };
        EnergyModel {
            hover_pct_per_s: blend(self.hover_pct_per_s, flight.hover.rate(MIN_HOVER_S)),
            cruise_pct_per_s: blend(self.cruise_pct_per_s, flight.cruise.rate(MIN_CRUISE_S)),
            climb_pct_per_m: blend(self.climb_pct_per_m, flight.climb.rate(MIN_CLIMB_M)),
            flights: self.flights.saturating_add(1),
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wind = if self.headwind_mps >= 0.0 {
            "headwind"
        } else {
            "tailwind"
        };
        write!(
            f,
            "needed {:.0} % at {:.1} km, {wind} {:.0} m/s",
            self.total_pct,
            self.distance_m / 1000.0,
            self.headwind_mps.abs()
        )
    }
}

const MIN_HOVER_S: f64 = 20.0;
const MIN_CRUISE_S: f64 = 30.0;
const MIN_CLIMB_M: f64 = 10.0;

/// Percent used against time (or metres) in one phase of one flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseUse {
    pub pct: f64,
    /// Seconds, or metres for the climb.
    pub amount: f64,
}

impl PhaseUse {
    fn rate(&self, min_amount: f64) -> Option<f64> {
        (self.amount >= min_amount).then(|| self.pct / self.amount)
    }
}

/// What one flight used, phase by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FlightLog {
    pub hover: PhaseUse,
    pub cruise: PhaseUse,
    pub climb: PhaseUse,
}

/// What the vehicle is doing between two battery readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Hover,
    Cruise,
    /// Climbing: the amount is the height gained.
    Climb,
}

impl FlightLog {
    /// One step between two battery readings: `used_pct` (positive when the percentage fell)
    /// over `amount` seconds (metres gained for a climb). Readings that went up (a percentage
    /// recomputed by the autopilot, noise) are not energy used: skipped.
    pub fn record(&mut self, phase: Phase, used_pct: f64, amount: f64) {
        if !(used_pct.is_finite() && amount.is_finite()) || used_pct < 0.0 || amount <= 0.0 {
            return;
        }
        let slot = match phase {
            Phase::Hover => &mut self.hover,
            Phase::Cruise => &mut self.cruise,
            Phase::Climb => &mut self.climb,
        };
        slot.pct += used_pct;
        slot.amount += amount;
    }
}

/// The wind's component against a track, from the wind vector (north, east, m/s, the direction
/// the air moves *to*) and the track's bearing in degrees.
pub fn headwind_mps(wind_to_ne: (f64, f64), track_deg: f64) -> f64 {
    let (n, e) = (track_deg.to_radians().cos(), track_deg.to_radians().sin());
    -(wind_to_ne.0 * n + wind_to_ne.1 * e)
}

/// The wind vector (north, east, m/s, moving *to*) from the ground velocity and the velocity
/// through the air the autopilot was asked for: the difference is what the air adds.
pub fn wind_from_velocities(ground_ne: (f64, f64), air_ne: (f64, f64)) -> (f64, f64) {
    (ground_ne.0 - air_ne.0, ground_ne.1 - air_ne.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> EnergyModel {
        // a pack that hovers 20 min (5 %/min) and cruises a little cheaper
        EnergyModel {
            hover_pct_per_s: 100.0 / 1200.0,
            cruise_pct_per_s: 0.07,
            climb_pct_per_m: 0.05,
            flights: 0,
        }
    }

    fn profile() -> FlightProfile {
        FlightProfile {
            cruise_speed_mps: 12.0,
            descent_speed_mps: 1.5,
            reserve_pct: 10.0,
        }
    }

    fn home(distance_m: f64, headwind_mps: f64) -> Trip {
        Trip {
            distance_m,
            headwind_mps,
            climb_m: 0.0,
            descent_m: 30.0,
            hover_s: 0.0,
        }
    }

    #[test]
    fn a_headwind_costs_time_and_so_energy() {
        let calm = model().need(home(1400.0, 0.0), profile()).unwrap();
        let windy = model().need(home(1400.0, 6.0), profile()).unwrap();
        // 1400 m at 12 m/s = 116.7 s; at 6 m/s ground speed = 233.3 s
        assert!((calm.cruise_s - 116.7).abs() < 0.1, "{calm:?}");
        assert!((windy.cruise_s - 233.3).abs() < 0.1, "{windy:?}");
        // 233.3 s × 0.07 + 20 s descent × 0.0833 + 10 reserve = 28.0 %
        assert!((windy.total_pct - 28.0).abs() < 0.1, "{windy:?}");
        assert!(windy.total_pct > calm.total_pct + 8.0);
        assert_eq!(windy.to_string(), "needed 28 % at 1.4 km, headwind 6 m/s");
        let tail = model().need(home(1400.0, -6.0), profile()).unwrap();
        assert!(tail.total_pct < calm.total_pct);
        assert!(tail.to_string().contains("tailwind 6 m/s"));
    }

    #[test]
    fn a_headwind_as_fast_as_the_drone_is_no_way_home() {
        let err = model().need(home(500.0, 11.5), profile()).unwrap_err();
        assert!(err.to_string().contains("headwind of 11.5 m/s"), "{err}");
    }

    #[test]
    fn the_hover_budget_is_what_is_left_after_the_way_home() {
        // the way home needs 28 %: with 38 % there are 10 % to hover = 120 s
        let budget = model().hover_budget_s(38.0, home(1400.0, 6.0), profile());
        assert!((budget - 120.0).abs() < 1.5, "{budget}");
        assert_eq!(
            model().hover_budget_s(20.0, home(1400.0, 6.0), profile()),
            0.0
        );
    }

    #[test]
    fn learning_moves_a_third_of_the_way_and_ignores_thin_phases() {
        let mut log = FlightLog::default();
        log.record(Phase::Hover, 10.0, 60.0); // 0.1667 %/s measured
        log.record(Phase::Cruise, 0.5, 10.0); // too little cruise to learn from
        log.record(Phase::Climb, 1.5, 30.0); // 0.05 %/m, same as before
        log.record(Phase::Hover, -3.0, 5.0); // a reading that went up: not energy
        let learned = model().learn(&log);
        let expected = model().hover_pct_per_s + (10.0 / 60.0 - model().hover_pct_per_s) / 3.0;
        assert!((learned.hover_pct_per_s - expected).abs() < 1e-9);
        assert_eq!(learned.cruise_pct_per_s, model().cruise_pct_per_s);
        assert!((learned.climb_pct_per_m - 0.05).abs() < 1e-9);
        assert_eq!(learned.flights, 1);
    }

    #[test]
    fn wind_from_the_velocities_and_against_the_track() {
        // flying north at 12 m/s through the air, 6 m/s over the ground: 6 m/s from the north
        let wind = wind_from_velocities((6.0, 0.0), (12.0, 0.0));
        assert_eq!(wind, (-6.0, 0.0));
        assert!((headwind_mps(wind, 0.0) - 6.0).abs() < 1e-9);
        assert!((headwind_mps(wind, 180.0) + 6.0).abs() < 1e-9);
        assert!(headwind_mps(wind, 90.0).abs() < 1e-9);
    }
}
