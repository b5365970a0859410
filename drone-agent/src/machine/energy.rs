//! Energy to get home (issue 12), as the machine decides it: the runtime sends the autopilot's
//! numbers ([`EnergyReading`]) at every telemetry step, and the machine, with the learned
//! [`EnergyModel`] in its limits, answers three questions — does the task's round trip fit the
//! battery before take-off, must the drone turn home now, and how long may it still wait over the
//! locker. One place decides: the runtime only measures.

use crate::energy::{headwind_mps, EnergyModel, FlightProfile, Need, NoGroundSpeed, Trip};
use protocol::geo::LatLon;

/// The config's energy numbers (`[energy]`) and the model learned so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyLimits {
    pub model: EnergyModel,
    pub profile: FlightProfile,
    /// The altitude the autopilot's return flies at (RTL_ALT, RTL_RETURN_ALT); `None`: cruise.
    pub return_alt_m: Option<f64>,
}

/// What the autopilot reports now, as the energy estimate needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyReading {
    /// Battery left, percent.
    pub battery_pct: f64,
    /// Where the drone is and where home is, degrees.
    pub here: (f64, f64),
    pub home: (f64, f64),
    /// Height above home, metres.
    pub alt_m: f64,
    /// The wind estimate: the air's velocity north and east (moving *to*), m/s.
    pub wind_ne_mps: (f64, f64),
    /// The drone's velocity over the ground, north and east, m/s: flying away from home, it
    /// must stop before it turns.
    pub velocity_ne_mps: (f64, f64),
    /// Seconds of the autopilot's clock per second of the agent's (1 in the field; a sim may run
    /// faster): the model's rates are per autopilot second, the machine's timers are the agent's.
    pub clock_rate: f64,
}

/// Distance and headwind of the straight leg `from` → `to`.
fn leg(from: (f64, f64), to: (f64, f64), wind_ne: (f64, f64)) -> (f64, f64) {
    let d = LatLon::new(from.0, from.1).north_east_to(LatLon::new(to.0, to.1));
    let dist = d.length_m();
    let headwind = if dist > 1.0 {
        headwind_mps(wind_ne, d.bearing_deg())
    } else {
        0.0
    };
    (dist, headwind)
}

/// How hard the autopilots stop by default (ArduPilot WPNAV_ACCEL 2.5 m/s², PX4 MPC_ACC_HOR
/// 3 m/s²): the lower one, so the stop is not underestimated.
const BRAKE_MPS2: f64 = 2.5;

/// The autopilot's return from here: stop if flying away (the braking distance is flown out and
/// back, the braking time at full power), up to its return altitude if lower, home against the
/// wind, down and land.
fn home_trip(e: &EnergyLimits, r: &EnergyReading, cruise_alt_m: f64) -> Trip {
    let (distance_m, headwind_mps) = leg(r.here, r.home, r.wind_ne_mps);
    let return_alt = e.return_alt_m.unwrap_or(cruise_alt_m);
    let to_home = LatLon::new(r.here.0, r.here.1).north_east_to(LatLon::new(r.home.0, r.home.1));
    let away_mps = if distance_m > 1.0 {
        -(r.velocity_ne_mps.0 * to_home.north_m + r.velocity_ne_mps.1 * to_home.east_m) / distance_m
    } else {
        0.0
    }
    .max(0.0);
    let braking_s = away_mps / BRAKE_MPS2;
    Trip {
        distance_m: distance_m + away_mps * braking_s / 2.0,
        headwind_mps,
        climb_m: (return_alt - r.alt_m).max(0.0),
        descent_m: r.alt_m.max(return_alt),
        hover_s: braking_s,
    }
}

/// What the way home needs from here, the reserve on top.
pub fn home_need(
    e: &EnergyLimits,
    r: &EnergyReading,
    cruise_alt_m: f64,
) -> Result<Need, NoGroundSpeed> {
    e.model.need(home_trip(e, r, cruise_alt_m), e.profile)
}

/// How long (the agent's seconds) the drone may still hover here before it must turn home.
pub fn hover_budget_s(e: &EnergyLimits, r: &EnergyReading, cruise_alt_m: f64) -> f64 {
    let home = home_trip(e, r, cruise_alt_m);
    e.model.hover_budget_s(r.battery_pct, home, e.profile) / r.clock_rate.max(1e-3)
}

/// The task's round trip from here: climb, out against the wind, come down to the drop height,
/// wait the configured drop wait hovering, climb back, home against the wind, land; the reserve
/// once. `Ok` carries the percent needed and the words for a refusal.
pub fn round_trip(
    e: &EnergyLimits,
    r: &EnergyReading,
    dest: (f64, f64),
    cruise_alt_m: f64,
    drop_alt_m: f64,
    drop_wait_s: f64,
) -> Result<(f64, String), NoGroundSpeed> {
    let (distance_m, headwind) = leg(r.home, dest, r.wind_ne_mps);
    let no_reserve = FlightProfile {
        reserve_pct: 0.0,
        ..e.profile
    };
    let hover_s = drop_wait_s * r.clock_rate;
    let out = e.model.need(
        Trip {
            distance_m,
            headwind_mps: headwind,
            climb_m: (cruise_alt_m - r.alt_m).max(0.0),
            descent_m: cruise_alt_m - drop_alt_m,
            hover_s,
        },
        no_reserve,
    )?;
    let return_alt = e.return_alt_m.unwrap_or(cruise_alt_m);
    let back = e.model.need(
        Trip {
            distance_m,
            headwind_mps: -headwind,
            climb_m: (return_alt - drop_alt_m).max(0.0),
            descent_m: return_alt,
            hover_s: 0.0,
        },
        e.profile,
    )?;
    let total = out.total_pct + back.total_pct;
    let wind = if headwind >= 0.0 {
        format!("headwind {:.0} m/s out", headwind)
    } else {
        format!("tailwind {:.0} m/s out", -headwind)
    };
    Ok((
        total,
        format!(
            "the round trip needs {total:.0} % (out {:.1} km, {wind}: {:.0} %; drop wait {:.0} s; back and land with {:.0} % reserve: {:.0} %), the battery has {:.0} %",
            distance_m / 1000.0,
            out.total_pct,
            drop_wait_s,
            e.profile.reserve_pct,
            back.total_pct,
            r.battery_pct
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn limits() -> EnergyLimits {
        EnergyLimits {
            model: EnergyModel {
                hover_pct_per_s: 100.0 / 1200.0,
                cruise_pct_per_s: 0.07,
                climb_pct_per_m: 0.05,
                flights: 0,
            },
            profile: FlightProfile {
                cruise_speed_mps: 12.0,
                descent_speed_mps: 1.5,
                reserve_pct: 10.0,
            },
            return_alt_m: None,
        }
    }

    fn reading(north_m: f64, pct: f64, wind_ne: (f64, f64)) -> EnergyReading {
        let home = (47.0, 8.0);
        let here = LatLon::new(home.0, home.1).offset(protocol::geo::NorthEast::new(north_m, 0.0));
        EnergyReading {
            battery_pct: pct,
            here: (here.lat_deg, here.lon_deg),
            home,
            alt_m: 30.0,
            wind_ne_mps: wind_ne,
            velocity_ne_mps: (0.0, 0.0),
            clock_rate: 1.0,
        }
    }

    #[test]
    fn home_is_against_the_wind_that_blows_from_it() {
        // 1400 m north of home; the air moves north (from the south): home is into it
        let need = home_need(&limits(), &reading(1400.0, 40.0, (6.0, 0.0)), 30.0).unwrap();
        assert!((need.headwind_mps - 6.0).abs() < 0.01, "{need:?}");
        assert!((need.total_pct - 28.0).abs() < 0.2, "{need:?}");
        let calm = home_need(&limits(), &reading(1400.0, 40.0, (0.0, 0.0)), 30.0).unwrap();
        assert!(calm.total_pct < need.total_pct - 8.0);
        // flying away at 15 m/s: 6 s to stop, 45 m further out
        let mut away = reading(1400.0, 40.0, (6.0, 0.0));
        away.velocity_ne_mps = (15.0, 0.0);
        let stopping = home_need(&limits(), &away, 30.0).unwrap();
        assert!((stopping.distance_m - 1445.0).abs() < 0.5, "{stopping:?}");
        assert!(stopping.total_pct > need.total_pct + 0.9, "{stopping:?}");
    }

    #[test]
    fn the_round_trip_counts_both_legs_the_wait_and_one_reserve() {
        let e = limits();
        let mut r = reading(0.0, 100.0, (0.0, 0.0));
        r.alt_m = 0.0;
        let dest = {
            let p = LatLon::new(47.0, 8.0).offset(protocol::geo::NorthEast::new(1200.0, 0.0));
            (p.lat_deg, p.lon_deg)
        };
        let (pct, words) = round_trip(&e, &r, dest, 30.0, 4.0, 60.0).unwrap();
        // 2 × 100 s cruise × 0.07 = 14; climbs 30 + 26 m × 0.05 = 2.8; hover: 60 s wait +
        // 26/1.5 + 30/1.5 s of descent = 97.3 s × 0.0833 = 8.1; reserve 10
        assert!((pct - 34.9).abs() < 0.2, "{pct} {words}");
        assert!(words.contains("the battery has 100 %"), "{words}");
        // the wind costs more against than it saves with
        r.wind_ne_mps = (-6.0, 0.0);
        let (windy, _) = round_trip(&e, &r, dest, 30.0, 4.0, 60.0).unwrap();
        assert!(windy > pct + 4.0, "{windy}");
    }

    #[test]
    fn the_budget_is_in_the_agents_seconds() {
        let e = limits();
        let mut r = reading(1400.0, 38.0, (6.0, 0.0));
        let real = hover_budget_s(&e, &r, 30.0);
        assert!((real - 120.0).abs() < 3.0, "{real}");
        r.clock_rate = 20.0;
        assert!((hover_budget_s(&e, &r, 30.0) - real / 20.0).abs() < 1e-9);
    }
}
