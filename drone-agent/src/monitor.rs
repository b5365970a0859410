//! Turns flight-controller snapshots into state-machine events: progress (climbed, arrived,
//! landed) and failsafes (battery, GPS, link). Pure: a snapshot and the machine's position in,
//! events out, so every threshold is tested without a vehicle.

use crate::machine::{Event, NavPhase};
use hal::flight::{FcSnapshot, LandedState, LinkState};
use protocol::ws::DroneState;

/// Thresholds, from the config.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub cruise_alt_m: f64,
    pub drop_alt_m: f64,
    pub arrive_radius_m: f64,
    pub alt_tolerance_m: f64,
    pub home_radius_m: f64,
    pub battery_return_percent: f64,
    pub battery_critical_percent: f64,
}

/// Where the machine stands, as far as the monitor needs to know.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub state: DroneState,
    pub phase: Option<NavPhase>,
    /// Destination of the active delivery, degrees.
    pub destination: Option<(f64, f64)>,
    /// A precision approach decides when the drone is in place (not the GPS position).
    pub precision: bool,
}

fn is_airborne(s: DroneState) -> bool {
    use DroneState::*;
    matches!(
        s,
        Navigating
            | WaitingDrop
            | Dropped
            | Returning
            | Aborting
            | Paused
            | EmergencyLanding
            | Failsafe
    )
}

/// Edge detection over the snapshot stream: each condition is reported once when it starts.
#[derive(Debug)]
pub struct Monitor {
    th: Thresholds,
    fc_lost: bool,
    gps_lost: bool,
    battery_low: bool,
    battery_critical: bool,
    /// Armed and in the air at least once since this flight began: only then does "on the
    /// ground, disarmed" mean landed (and not "not yet taken off").
    flown: bool,
    last: Option<(Position, &'static str)>,
}

impl Monitor {
    pub fn new(th: Thresholds) -> Self {
        Self {
            th,
            fc_lost: false,
            gps_lost: false,
            battery_low: false,
            battery_critical: false,
            flown: false,
            last: None,
        }
    }

    /// After a restart in the air the drone has flown, whatever this process saw.
    pub fn assume_flown(&mut self) {
        self.flown = true;
    }

    /// The machine moved (a transition, a retry back to cruising): progress it was already told
    /// about may be due again, e.g. `over_destination` after a `retry_navigation`.
    pub fn machine_moved(&mut self) {
        self.last = None;
    }

    pub fn observe(&mut self, snap: &FcSnapshot, at: Position) -> Vec<Event> {
        let mut out = Vec::new();
        match snap.link {
            LinkState::Lost { .. } if !self.fc_lost => {
                self.fc_lost = true;
                out.push(Event::FcLinkLost);
            }
            LinkState::Connected { .. } if self.fc_lost => {
                self.fc_lost = false;
                out.push(Event::FcLinkRestored {
                    airborne: airborne(snap),
                });
            }
            _ => {}
        }
        if !snap.link.is_connected() {
            return out; // everything else in the snapshot is stale
        }
        if !is_airborne(at.state) {
            // a new flight starts with clean flags
            self.gps_lost = false;
            self.battery_low = false;
            self.battery_critical = false;
            self.flown = false;
            self.last = None;
            return out;
        }
        if snap.armed && snap.landed == LandedState::InAir {
            self.flown = true;
        }
        if let Some(pct) = snap.battery_percent {
            if pct < self.th.battery_critical_percent && !self.battery_critical {
                self.battery_critical = true;
                self.battery_low = true;
                out.push(Event::BatteryCritical);
            } else if pct < self.th.battery_return_percent && !self.battery_low {
                self.battery_low = true;
                out.push(Event::BatteryLow);
            }
        }
        let has_fix = snap.gps_fix.is_3d();
        // `Unknown` is "not reported yet" (a fresh link after a restart), not a lost fix
        let lost_fix = !has_fix && snap.gps_fix != hal::flight::GpsFixType::Unknown;
        if self.flown && lost_fix && !self.gps_lost {
            self.gps_lost = true;
            out.push(Event::GpsLost);
        } else if has_fix && self.gps_lost {
            self.gps_lost = false;
            out.push(Event::GpsRestored);
        }
        if let Some(progress) = self.progress(snap, at) {
            // once per state and phase: the machine has moved on when it changes
            if self.last != Some((at, progress.name())) {
                self.last = Some((at, progress.name()));
                out.push(progress);
            }
        }
        out
    }

    fn progress(&self, snap: &FcSnapshot, at: Position) -> Option<Event> {
        let pos = snap.position?;
        if self.flown
            && !snap.armed
            && matches!(snap.landed, LandedState::OnGround | LandedState::Unknown)
        {
            let home = snap.home?;
            let d = home.distance_m(pos.lat_deg, pos.lon_deg);
            return Some(if d <= self.th.home_radius_m {
                Event::LandedAtHome
            } else {
                Event::LandedAway
            });
        }
        if at.state != DroneState::Navigating {
            return None;
        }
        let (lat, lon) = at.destination?;
        let dist = pos.distance_m(lat, lon);
        match at.phase? {
            NavPhase::TakingOff
                if pos.alt_rel_m >= self.th.cruise_alt_m - self.th.alt_tolerance_m =>
            {
                Some(Event::ClimbComplete)
            }
            // above halfway down from cruise: after a retry the drone climbs before it comes
            // down again, so a marker out of the frame at drop height gets a wider look
            NavPhase::Cruising
                if dist <= self.th.arrive_radius_m
                    && pos.alt_rel_m >= (self.th.cruise_alt_m + self.th.drop_alt_m) / 2.0 =>
            {
                Some(Event::OverDestination)
            }
            NavPhase::Approaching
                if !at.precision
                    && dist <= self.th.arrive_radius_m
                    && (pos.alt_rel_m - self.th.drop_alt_m).abs() <= self.th.alt_tolerance_m =>
            {
                Some(Event::AtDropHeight)
            }
            _ => None,
        }
    }
}

fn airborne(snap: &FcSnapshot) -> bool {
    snap.armed && snap.landed != LandedState::OnGround
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::flight::{GlobalPosition, GpsFixType};
    use std::time::SystemTime;

    fn th() -> Thresholds {
        Thresholds {
            cruise_alt_m: 30.0,
            drop_alt_m: 4.0,
            arrive_radius_m: 2.0,
            alt_tolerance_m: 0.5,
            home_radius_m: 10.0,
            battery_return_percent: 25.0,
            battery_critical_percent: 10.0,
        }
    }

    fn snap(lat: f64, lon: f64, alt: f64, armed: bool, landed: LandedState) -> FcSnapshot {
        let mut s = FcSnapshot::initial();
        s.link = LinkState::Connected {
            since: SystemTime::now(),
        };
        s.position = Some(GlobalPosition {
            lat_deg: lat,
            lon_deg: lon,
            alt_msl_m: 100.0 + alt,
            alt_rel_m: alt,
        });
        s.home = Some(GlobalPosition {
            lat_deg: 55.0,
            lon_deg: 37.0,
            alt_msl_m: 100.0,
            alt_rel_m: 0.0,
        });
        s.armed = armed;
        s.landed = landed;
        s.gps_fix = GpsFixType::Fix3d;
        s.battery_percent = Some(90.0);
        s
    }

    fn nav(phase: NavPhase) -> Position {
        Position {
            state: DroneState::Navigating,
            phase: Some(phase),
            destination: Some((55.001, 37.0)),
            precision: false,
        }
    }

    #[test]
    fn not_yet_armed_is_not_landed() {
        let mut m = Monitor::new(th());
        let e = m.observe(
            &snap(55.0, 37.0, 0.0, false, LandedState::OnGround),
            nav(NavPhase::TakingOff),
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn flight_progress_in_order_and_once() {
        let mut m = Monitor::new(th());
        assert!(m
            .observe(
                &snap(55.0, 37.0, 10.0, true, LandedState::InAir),
                nav(NavPhase::TakingOff)
            )
            .is_empty());
        assert_eq!(
            m.observe(
                &snap(55.0, 37.0, 29.7, true, LandedState::InAir),
                nav(NavPhase::TakingOff)
            ),
            [Event::ClimbComplete]
        );
        assert!(
            m.observe(
                &snap(55.0, 37.0, 29.8, true, LandedState::InAir),
                nav(NavPhase::TakingOff)
            )
            .is_empty(),
            "once"
        );
        assert_eq!(
            m.observe(
                &snap(55.001, 37.0, 30.0, true, LandedState::InAir),
                nav(NavPhase::Cruising)
            ),
            [Event::OverDestination]
        );
        assert!(m
            .observe(
                &snap(55.001, 37.0, 10.0, true, LandedState::InAir),
                nav(NavPhase::Approaching)
            )
            .is_empty());
        assert_eq!(
            m.observe(
                &snap(55.001, 37.0, 4.2, true, LandedState::InAir),
                nav(NavPhase::Approaching)
            ),
            [Event::AtDropHeight]
        );
    }

    #[test]
    fn landing_home_or_away() {
        let returning = Position {
            state: DroneState::Returning,
            phase: None,
            destination: None,
            precision: false,
        };
        let mut m = Monitor::new(th());
        m.observe(&snap(55.0, 37.0, 20.0, true, LandedState::InAir), returning);
        assert!(
            m.observe(
                &snap(55.0, 37.0, 0.0, true, LandedState::OnGround),
                returning
            )
            .is_empty(),
            "still armed"
        );
        assert_eq!(
            m.observe(
                &snap(55.0, 37.0, 0.0, false, LandedState::OnGround),
                returning
            ),
            [Event::LandedAtHome]
        );
        let mut m = Monitor::new(th());
        m.observe(&snap(55.0, 37.0, 20.0, true, LandedState::InAir), returning);
        assert_eq!(
            m.observe(
                &snap(55.01, 37.0, 0.0, false, LandedState::OnGround),
                returning
            ),
            [Event::LandedAway]
        );
    }

    #[test]
    fn battery_gps_and_link_edges() {
        let mut m = Monitor::new(th());
        let at = nav(NavPhase::Cruising);
        let mut s = snap(55.0, 37.0, 30.0, true, LandedState::InAir);
        m.observe(&s, at);
        s.battery_percent = Some(24.0);
        assert_eq!(m.observe(&s, at), [Event::BatteryLow]);
        assert!(m.observe(&s, at).is_empty());
        s.battery_percent = Some(9.0);
        assert_eq!(m.observe(&s, at), [Event::BatteryCritical]);
        s.gps_fix = GpsFixType::NoFix;
        assert_eq!(m.observe(&s, at), [Event::GpsLost]);
        s.gps_fix = GpsFixType::Fix3d;
        assert_eq!(m.observe(&s, at), [Event::GpsRestored]);
        s.link = LinkState::Lost {
            since: SystemTime::now(),
            last_heartbeat: SystemTime::now(),
        };
        assert_eq!(m.observe(&s, at), [Event::FcLinkLost]);
        assert!(m.observe(&s, at).is_empty());
        s.link = LinkState::Connected {
            since: SystemTime::now(),
        };
        assert_eq!(
            m.observe(&s, at),
            [Event::FcLinkRestored { airborne: true }]
        );
    }
}
