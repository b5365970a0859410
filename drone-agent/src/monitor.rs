//! Turns flight-controller snapshots into state-machine events: progress (left the ground,
//! climbed, arrived, landed), failsafes (battery, GPS, link) and the autopilot's own mode
//! changes. Pure: a snapshot and the machine's position in, events out, so every threshold is
//! tested without a vehicle. What a landing or "airborne" means is the machine's
//! ([`crate::machine::landed`], [`crate::machine::is_airborne`]); the monitor only measures.

use crate::machine::{self, Event, NavPhase, Vehicle};
use hal::flight::{FcSnapshot, FlightModeKind, LandedState, LinkState};
use protocol::ws::DroneState;

/// How long the autopilot's battery announcement waits for the autopilot's own action (a mode
/// change in its next HEARTBEAT, 1 Hz on both autopilots) before the agent acts itself.
pub const AUTOPILOT_ACTION_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

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
    /// `(cells, return volts per cell, critical volts per cell)` when the voltage is judged.
    pub battery_cells: Option<(u32, f64, f64)>,
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
    /// The vehicle has been in the air during this delivery (the machine's word).
    pub left_ground: bool,
}

/// Edge detection over the snapshot stream: each condition is reported once when it starts.
#[derive(Debug)]
pub struct Monitor {
    th: Thresholds,
    fc_lost: bool,
    gps_lost: bool,
    battery_low: bool,
    battery_critical: bool,
    /// The last autopilot-initiated mode change seen (`AutopilotModeChange::seq`).
    last_change: Option<u32>,
    /// When the autopilot said its battery is low (its failsafe announcement, or charge state
    /// LOW): its own action, if it is set to take one, shows in its next HEARTBEAT's mode. Only if
    /// none shows within [`AUTOPILOT_ACTION_GRACE`] does the agent act itself.
    autopilot_low_since: Option<std::time::SystemTime>,
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
            last_change: None,
            autopilot_low_since: None,
            last: None,
        }
    }

    /// The machine moved (a transition, a retry back to cruising): progress it was already told
    /// about may be due again, e.g. `over_destination` after a `retry_navigation`.
    pub fn machine_moved(&mut self) {
        self.last = None;
    }

    /// What the vehicle is doing now, as the machine's [`Vehicle`].
    pub fn vehicle(&self, snap: &FcSnapshot) -> Vehicle {
        if !snap.link.is_connected() {
            return Vehicle::Unreachable;
        }
        if airborne(snap) {
            return Vehicle::Airborne;
        }
        Vehicle::OnGround {
            at_home: machine::landed(distance_from_home(snap), self.th.home_radius_m)
                == Event::LandedAtHome,
        }
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
                out.push(Event::FcLinkRestored(self.vehicle(snap)));
            }
            _ => {}
        }
        if !snap.link.is_connected() {
            return out; // everything else in the snapshot is stale
        }
        // a mode change the hal did not ask for, seen once (its `seq`)
        let change = snap
            .autopilot_mode_change
            .as_ref()
            .filter(|c| Some(c.seq) != self.last_change);
        if let Some(c) = change {
            self.last_change = Some(c.seq);
        }
        if !machine::is_airborne(at.state) {
            // a new flight starts with clean flags
            self.gps_lost = false;
            self.battery_low = false;
            self.battery_critical = false;
            self.autopilot_low_since = None;
            self.last = None;
            return out;
        }
        // the agent's own states allow some of the autopilot's own steps (RTL ending in LAND)
        if let Some(c) = change.filter(|c| !expected_mode(at.state, c.to.kind)) {
            if self.autopilot_low_since.take().is_some() {
                // its battery failsafe's action: the take-over carries its words, and the agent
                // must follow it, not fly home over it (or land, on BATT_FS_LOW_ACT = land)
                self.battery_low = true;
            }
            let reason = c
                .reason
                .clone()
                .or_else(|| snap.last_status_text.clone())
                .unwrap_or_else(|| "no reason given".into());
            out.push(Event::AutopilotTookOver {
                mode: c.to.raw.clone(),
                reason: fence_breach_reason(snap, reason),
            });
        }
        if let Some(e) = self.battery(snap) {
            out.push(e);
        }
        let has_fix = snap.gps_fix.is_3d();
        // `Unknown` is "not reported yet" (a fresh link after a restart), not a lost fix
        let lost_fix = !has_fix && snap.gps_fix != hal::flight::GpsFixType::Unknown;
        if at.left_ground && lost_fix && !self.gps_lost {
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

    /// Percent, and volts per cell when the pack is described: the worse of the two decides.
    fn battery(&mut self, snap: &FcSnapshot) -> Option<Event> {
        let th = &self.th;
        let pct = snap.battery_percent;
        let per_cell = match (th.battery_cells, snap.battery_voltage) {
            (Some((cells, _, _)), Some(v)) if cells > 0 && v > 0.0 => Some(v / f64::from(cells)),
            _ => None,
        };
        use hal::flight::{BatteryChargeState as Charge, BatteryFaultAction};
        let said = snap.battery_charge_state;
        // the autopilot's fault bits: which mean land now and which home is the hal's choice
        let (fault_land, fault_home) = match snap.battery_fault_action() {
            Some((action, faults)) => {
                let why = format!(
                    "the autopilot reports battery faults: {}",
                    faults.join(", ")
                );
                match action {
                    BatteryFaultAction::LandNow => (Some(why), None),
                    BatteryFaultAction::ReturnHome => (None, Some(why)),
                }
            }
            None => (None, None),
        };
        let critical = matches!(
            said,
            Some(Charge::Critical | Charge::Emergency | Charge::Failed)
        )
        .then(|| format!("the autopilot reports the battery {said:?}"))
        .or(fault_land)
        .or_else(|| {
            pct.filter(|p| *p < th.battery_critical_percent).map(|p| {
                format!(
                    "battery {p:.0} % under {:.0} %",
                    th.battery_critical_percent
                )
            })
        })
        .or_else(|| {
            let (_, _, crit) = th.battery_cells?;
            per_cell
                .filter(|c| *c < crit)
                .map(|c| format!("battery {c:.2} V per cell under {crit:.2} V"))
        });
        let own_low = fault_home.or_else(|| {
            pct.filter(|p| *p < th.battery_return_percent)
                .map(|p| format!("battery {p:.0} % under {:.0} %", th.battery_return_percent))
                .or_else(|| {
                    let (_, ret, _) = th.battery_cells?;
                    per_cell
                        .filter(|c| *c < ret)
                        .map(|c| format!("battery {c:.2} V per cell under {ret:.2} V"))
                })
        });
        let autopilot_low = snap.battery_failsafe.clone().or_else(|| {
            matches!(said, Some(Charge::Low))
                .then(|| "the autopilot reports the battery low".to_owned())
        });
        let low = match (own_low, autopilot_low) {
            (Some(why), _) => Some(why),
            (None, Some(why)) if !self.battery_low => match self.autopilot_low_since {
                None => {
                    self.autopilot_low_since = Some(snap.at);
                    None
                }
                // a HEARTBEAT's time since, and no mode change of the autopilot's: it only warned
                Some(since)
                    if snap.at.duration_since(since).unwrap_or_default()
                        >= AUTOPILOT_ACTION_GRACE =>
                {
                    Some(why)
                }
                Some(_) => None,
            },
            (None, _) => None,
        };
        if let Some(why) = critical {
            if !self.battery_critical {
                self.battery_critical = true;
                self.battery_low = true;
                return Some(Event::BatteryCritical(why));
            }
        } else if let Some(why) = low {
            if !self.battery_low {
                self.battery_low = true;
                return Some(Event::BatteryLow(why));
            }
        }
        None
    }

    fn progress(&self, snap: &FcSnapshot, at: Position) -> Option<Event> {
        let pos = snap.position?;
        if at.left_ground
            && !snap.armed
            && matches!(snap.landed, LandedState::OnGround | LandedState::Unknown)
        {
            snap.home?;
            return Some(machine::landed(
                distance_from_home(snap),
                self.th.home_radius_m,
            ));
        }
        if at.state != DroneState::Navigating {
            return None;
        }
        if at.phase == Some(NavPhase::TakingOff) && !at.left_ground && airborne(snap) {
            return Some(Event::LeftGround);
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
                    && (pos.alt_rel_m - self.th.drop_alt_m).abs() <= self.th.alt_tolerance_m
                    && settled(snap) =>
            {
                Some(Event::AtDropHeight)
            }
            _ => None,
        }
    }
}

/// At the target *and* no longer moving towards it (PX4 reports 4.5 m while still descending
/// to 4.0 m): vertical speed under 0.3 m/s, when the autopilot reports it.
fn settled(snap: &FcSnapshot) -> bool {
    snap.velocity_ned_mps.is_none_or(|v| v[2].abs() < 0.3)
}

fn distance_from_home(snap: &FcSnapshot) -> Option<f64> {
    let (home, pos) = (snap.home?, snap.position?);
    Some(home.distance_m(pos.lat_deg, pos.lon_deg))
}

fn airborne(snap: &FcSnapshot) -> bool {
    snap.armed && snap.landed != LandedState::OnGround
}

/// The modes the agent's own commands put the autopilot in, for each flying state: a change to
/// any other is the autopilot's (or a pilot's) decision.
fn expected_mode(state: DroneState, mode: FlightModeKind) -> bool {
    use FlightModeKind as M;
    match mode {
        M::Unknown => true,
        M::Guided | M::Hold | M::Offboard => matches!(
            state,
            DroneState::Navigating
                | DroneState::WaitingDrop
                | DroneState::Dropped
                | DroneState::Paused
                | DroneState::Returning
                | DroneState::Aborting
        ),
        M::Takeoff => state == DroneState::Navigating,
        M::ReturnToLaunch => matches!(state, DroneState::Returning | DroneState::Aborting),
        // RTL ends in a landing on PX4
        M::Land => matches!(
            state,
            DroneState::Returning | DroneState::Aborting | DroneState::EmergencyLanding
        ),
        M::Auto
        | M::Manual
        | M::Stabilized
        | M::Acro
        | M::AltitudeHold
        | M::PositionHold
        | M::Other => false,
    }
}

/// A take-over for a fence breach says where it happened (the autopilot says only which limit):
/// the position and height above home when the autopilot reported it.
fn fence_breach_reason(snap: &FcSnapshot, reason: String) -> String {
    let fence = snap.fence.as_ref().is_some_and(|f| f.breached)
        || reason.to_ascii_lowercase().contains("fence");
    match (fence, &snap.position) {
        (true, Some(p)) => format!(
            "{reason}; at {:.6},{:.6}, {:.1} m above home",
            p.lat_deg, p.lon_deg, p.alt_rel_m
        ),
        _ => reason,
    }
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
            battery_cells: Some((3, 3.5, 3.3)),
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
            left_ground: true,
        }
    }

    fn taking_off() -> Position {
        Position {
            left_ground: false,
            ..nav(NavPhase::TakingOff)
        }
    }

    #[test]
    fn not_yet_armed_is_not_landed() {
        let mut m = Monitor::new(th());
        let e = m.observe(
            &snap(55.0, 37.0, 0.0, false, LandedState::OnGround),
            taking_off(),
        );
        assert!(e.is_empty(), "{e:?}");
    }

    /// Item 7: `left_ground` (the machine's `took_off`) once armed and in the air.
    #[test]
    fn left_ground_once_armed_and_in_the_air() {
        let mut m = Monitor::new(th());
        let on_ground = snap(55.0, 37.0, 0.0, true, LandedState::OnGround);
        assert!(
            m.observe(&on_ground, taking_off()).is_empty(),
            "armed, not flying"
        );
        let up = snap(55.0, 37.0, 0.5, true, LandedState::InAir);
        assert_eq!(m.observe(&up, taking_off()), [Event::LeftGround]);
    }

    /// Item 6: a pack in voltage failsafe reads 93 % (ArduPilot counts mAh): the per-cell
    /// voltage decides.
    #[test]
    fn battery_judged_by_voltage_per_cell_too() {
        let mut m = Monitor::new(th());
        let at = nav(NavPhase::Cruising);
        let mut s = snap(55.0, 37.0, 30.0, true, LandedState::InAir);
        s.battery_percent = Some(93.0);
        s.battery_voltage = Some(11.1);
        assert!(m.observe(&s, at).is_empty());
        s.battery_voltage = Some(10.3); // 3.43 V per cell under 3.5
        let e = m.observe(&s, at);
        assert!(
            matches!(&e[..], [Event::BatteryLow(why)] if why.contains("per cell")),
            "{e:?}"
        );
        s.battery_voltage = Some(9.6);
        assert!(matches!(m.observe(&s, at)[..], [Event::BatteryCritical(_)]));
    }

    fn guided_mode() -> hal::flight::FlightMode {
        hal::flight::FlightMode {
            kind: FlightModeKind::Guided,
            raw: "GUIDED".into(),
        }
    }

    /// Item 5: a mode the agent did not ask for is the autopilot's decision, with its words.
    #[test]
    fn a_mode_change_nobody_asked_for_is_reported() {
        let mut m = Monitor::new(th());
        let at = nav(NavPhase::Cruising);
        let mut s = snap(55.0, 37.0, 30.0, true, LandedState::InAir);
        s.mode = hal::flight::FlightMode {
            kind: FlightModeKind::Guided,
            raw: "GUIDED".into(),
        };
        assert!(m.observe(&s, at).is_empty());
        let guided = s.mode.clone();
        s.mode = hal::flight::FlightMode {
            kind: FlightModeKind::ReturnToLaunch,
            raw: "RTL".into(),
        };
        s.autopilot_mode_change = Some(hal::flight::AutopilotModeChange {
            seq: 1,
            from: guided,
            to: s.mode.clone(),
            reason: Some("Battery Failsafe".into()),
            at: SystemTime::now(),
        });
        assert_eq!(
            m.observe(&s, at),
            [Event::AutopilotTookOver {
                mode: "RTL".into(),
                reason: "Battery Failsafe".into()
            }]
        );
        // the agent's own return: RTL is expected while returning
        let mut m = Monitor::new(th());
        let home = Position {
            state: DroneState::Aborting,
            phase: None,
            ..at
        };
        s.autopilot_mode_change = None;
        m.observe(&s, home);
        s.autopilot_mode_change = Some(hal::flight::AutopilotModeChange {
            seq: 2,
            from: guided_mode(),
            to: s.mode.clone(),
            reason: None,
            at: SystemTime::now(),
        });
        assert!(m.observe(&s, home).is_empty());
        // the same change seen again is not news
        assert!(m.observe(&s, at).is_empty());
    }

    /// Item 13: at drop height only once the descent has stopped.
    #[test]
    fn at_drop_height_waits_for_the_descent_to_settle() {
        let mut m = Monitor::new(th());
        let at = nav(NavPhase::Approaching);
        let mut s = snap(55.001, 37.0, 4.4, true, LandedState::InAir);
        s.velocity_ned_mps = Some([0.0, 0.0, 0.8]);
        assert!(m.observe(&s, at).is_empty(), "still descending");
        s.velocity_ned_mps = Some([0.0, 0.0, 0.05]);
        assert_eq!(m.observe(&s, at), [Event::AtDropHeight]);
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
            left_ground: true,
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
        assert!(matches!(m.observe(&s, at)[..], [Event::BatteryLow(_)]));
        assert!(m.observe(&s, at).is_empty());
        s.battery_percent = Some(9.0);
        assert!(matches!(m.observe(&s, at)[..], [Event::BatteryCritical(_)]));
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
            [Event::FcLinkRestored(Vehicle::Airborne)]
        );
    }

    /// The autopilot's own battery failsafe: if its next HEARTBEAT shows a mode change of its
    /// own, that is the event (the agent follows); if not, the agent flies home itself.
    /// The autopilot's fault bits: land now or home, by the hal's judgement, at once (they are
    /// the autopilot's measurement, not an announcement of its own action).
    #[test]
    fn battery_fault_bits_are_judged_with_percent_and_voltage() {
        let at = nav(NavPhase::Cruising);
        let start = snap(55.0, 37.0, 30.0, true, LandedState::InAir);
        let mut m = Monitor::new(th());
        m.observe(&start, at);
        let mut hot = start.clone();
        hot.battery_faults = vec!["spikes", "over_temperature"];
        assert!(matches!(
            &m.observe(&hot, at)[..],
            [Event::BatteryCritical(w)] if w.contains("over_temperature") && !w.contains("spikes")
        ));
        let mut m = Monitor::new(th());
        m.observe(&start, at);
        let mut cold = start.clone();
        cold.battery_faults = vec!["under_temperature"];
        assert!(matches!(
            &m.observe(&cold, at)[..],
            [Event::BatteryLow(w)] if w.contains("under_temperature")
        ));
        assert!(m.observe(&cold, at).is_empty(), "reported once");
    }

    #[test]
    fn the_autopilots_battery_failsafe_waits_one_heartbeat_for_its_action() {
        use std::time::Duration;
        let at = nav(NavPhase::Cruising);
        let start = snap(55.0, 37.0, 30.0, true, LandedState::InAir);
        let mut failsafe = start.clone();
        failsafe.battery_failsafe = Some("Battery Failsafe".into());
        let mut soon = failsafe.clone();
        soon.at = failsafe.at + Duration::from_millis(500);
        let mut next_beat = failsafe.clone();
        next_beat.at = failsafe.at + AUTOPILOT_ACTION_GRACE;

        // warn only: no mode change by the next HEARTBEAT, the agent acts
        let mut m = Monitor::new(th());
        m.observe(&start, at);
        assert!(m.observe(&failsafe, at).is_empty());
        assert!(m.observe(&failsafe, at).is_empty());
        assert!(
            matches!(&m.observe(&next_beat, at)[..], [Event::BatteryLow(w)] if w == "Battery Failsafe")
        );
        assert!(m.observe(&next_beat, at).is_empty());

        // its RTL: the take-over, and no battery event of the agent's own
        let mut m = Monitor::new(th());
        m.observe(&start, at);
        assert!(m.observe(&failsafe, at).is_empty());
        let mut rtl = soon.clone();
        rtl.autopilot_mode_change = Some(hal::flight::AutopilotModeChange {
            seq: 1,
            from: hal::flight::FlightMode::unknown(),
            to: hal::flight::FlightMode {
                kind: FlightModeKind::ReturnToLaunch,
                raw: "RTL".into(),
            },
            reason: Some("Battery Failsafe".into()),
            at: rtl.at,
        });
        assert!(matches!(
            &m.observe(&rtl, at)[..],
            [Event::AutopilotTookOver { .. }]
        ));
        let mut later = rtl.clone();
        later.at += Duration::from_secs(1);
        assert!(m.observe(&later, at).is_empty());

        // our own threshold does not wait
        let mut m = Monitor::new(th());
        m.observe(&start, at);
        let mut own = start.clone();
        own.battery_percent = Some(24.0);
        assert!(matches!(&m.observe(&own, at)[..], [Event::BatteryLow(_)]));
    }
}
