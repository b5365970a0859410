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
    /// `[pilot] hand_back_mode`: the autopilot's mode (its own name, e.g. `GUIDED`) a pilot
    /// switches to to hand the delivery back; `None`: only the backend's `resume` does.
    pub hand_back_mode: Option<String>,
}

/// A flight command a ground station sent through the agent's router shortly before a mode
/// change counts as that station's (the HEARTBEAT shows the change a little later).
pub const ROUTED_COMMAND_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

/// Who is flying now that the mode changed without the agent asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Changer {
    /// The autopilot's own failsafe (battery, link, fence, ...).
    Autopilot,
    /// A person: who, as far as the agent can tell.
    Pilot(String),
}

/// The one place that tells the autopilot's own failsafe from a person. A mode change the agent
/// did not ask for is:
/// - a ground station's, when a mode, arming or flight command from it passed through the
///   agent's router within [`ROUTED_COMMAND_WINDOW`] before (`routed`: the endpoint's name);
/// - else the autopilot's own when the new mode is one its failsafes pick: return to launch
///   (ArduPilot RTL, SMART_RTL, AUTO_RTL; PX4 AUTO.RTL), land, ArduPilot's BRAKE (fence) or
///   PX4's hold (AUTO.LOITER, its link-loss and geofence action). Its words (STATUSTEXT or PX4
///   event, its battery announcement) are the reason, and may come just after the HEARTBEAT;
/// - else a person's: no failsafe picks LOITER, POSHOLD, ALT_HOLD, STABILIZE, ACRO, a mission
///   (AUTO) or PX4's manual modes, and the autopilot does not leave those on its own. Without a
///   routed command the agent cannot tell an RC transmitter from a ground station on its own
///   radio: `who` says so.
///
/// A person who picks RTL or LAND on their transmitter is reported as the autopilot's
/// decision: the agent stops commanding either way, and a landing ends both.
pub fn who_changed_mode(
    autopilot: hal::flight::Autopilot,
    to: &hal::flight::FlightMode,
    routed: Option<&str>,
) -> Changer {
    use hal::flight::Autopilot as A;
    use FlightModeKind as K;
    if let Some(endpoint) = routed {
        return Changer::Pilot(format!("ground station `{endpoint}`"));
    }
    let failsafe_mode = match (autopilot, to.kind) {
        (_, K::ReturnToLaunch | K::Land) => true,
        (A::Px4, K::Hold) => true,
        (A::ArduPilot, K::Hold) => to.raw == "BRAKE",
        _ => false,
    };
    if failsafe_mode {
        Changer::Autopilot
    } else {
        Changer::Pilot("an RC transmitter or a ground station not routed by the agent".into())
    }
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
    /// The last mode, arming or flight command a ground station sent through the router: its
    /// endpoint and when (see [`Monitor::routed_command`]).
    routed: Option<(String, std::time::SystemTime)>,
    /// Armed as of the last snapshot (an arming nobody asked for, on the ground).
    was_armed: Option<bool>,
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
            routed: None,
            was_armed: None,
        }
    }

    /// A ground station's mode, arming or flight command passed through the agent's router
    /// (`endpoint`: its name in the config; `what`: the command). In a flying state the agent
    /// commands, that is a pilot's override at once (a goto from QGroundControl changes no
    /// mode); the HEARTBEAT's mode change that may follow is attributed to the same station.
    pub fn routed_command(
        &mut self,
        endpoint: &str,
        what: &str,
        now: std::time::SystemTime,
        at: Position,
    ) -> Option<Event> {
        self.routed = Some((endpoint.to_owned(), now));
        let flying_it = machine::is_airborne(at.state)
            && !matches!(at.state, DroneState::PilotOverride | DroneState::Failsafe);
        flying_it.then(|| Event::PilotOverride {
            who: format!("ground station `{endpoint}`"),
            what: what.to_owned(),
        })
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
        let was_armed = self.was_armed.replace(snap.armed);
        let armed_now = snap.armed && was_armed == Some(false);
        if !machine::is_airborne(at.state) {
            // armed on the ground with no delivery starting: someone else's hands
            if armed_now
                && matches!(
                    at.state,
                    DroneState::Idle | DroneState::Completed | DroneState::LandedElsewhere
                )
            {
                out.push(Event::PilotOverride {
                    who: self.who(snap, None),
                    what: "armed the vehicle".into(),
                });
            }
            // a new flight starts with clean flags
            self.gps_lost = false;
            self.battery_low = false;
            self.battery_critical = false;
            self.autopilot_low_since = None;
            self.last = None;
            return out;
        }
        let hand_back = change.filter(|c| {
            at.state == DroneState::PilotOverride
                && self
                    .th
                    .hand_back_mode
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(&c.to.raw))
        });
        if let Some(c) = hand_back {
            out.push(Event::PilotHandBack {
                mode: c.to.raw.clone(),
            });
        }
        let routed = self.routed_endpoint(snap.at);
        // the agent's own states allow some of the autopilot's own steps (RTL ending in LAND)
        let change = change
            .filter(|c| hand_back.is_none() && !expected_mode(at.state, snap.autopilot, &c.to));
        let pilot =
            change.and_then(
                |c| match who_changed_mode(snap.autopilot, &c.to, routed.as_deref()) {
                    Changer::Pilot(who) => Some((who, c)),
                    Changer::Autopilot => None,
                },
            );
        if let Some((who, c)) = pilot {
            // under a pilot's override the pilot's further mode changes are theirs to make
            if at.state != DroneState::PilotOverride {
                out.push(Event::PilotOverride {
                    who,
                    what: format!("mode {} (was {})", c.to.raw, c.from.raw),
                });
            }
        } else if let Some(c) = change {
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

    /// The endpoint of a routed command recent enough to explain what the HEARTBEAT shows.
    fn routed_endpoint(&self, now: std::time::SystemTime) -> Option<String> {
        let (endpoint, at) = self.routed.as_ref()?;
        let age = now.duration_since(*at).unwrap_or_default();
        (age <= ROUTED_COMMAND_WINDOW).then(|| endpoint.clone())
    }

    fn who(&self, snap: &FcSnapshot, to: Option<&hal::flight::FlightMode>) -> String {
        let routed = self.routed_endpoint(snap.at);
        let mode = to.cloned().unwrap_or_else(hal::flight::FlightMode::unknown);
        match who_changed_mode(snap.autopilot, &mode, routed.as_deref()) {
            Changer::Pilot(who) => who,
            Changer::Autopilot => "the autopilot".into(),
        }
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
fn expected_mode(
    state: DroneState,
    autopilot: hal::flight::Autopilot,
    mode: &hal::flight::FlightMode,
) -> bool {
    use FlightModeKind as M;
    // ArduPilot's LOITER is a Hold the agent never uses (its hold is BRAKE, then GUIDED): a
    // pilot's mode (issue 13)
    if autopilot == hal::flight::Autopilot::ArduPilot && mode.kind == M::Hold && mode.raw != "BRAKE"
    {
        return false;
    }
    match mode.kind {
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
            hand_back_mode: Some("GUIDED".into()),
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

    fn change(s: &mut FcSnapshot, seq: u32, kind: FlightModeKind, raw: &str) {
        let from = s.mode.clone();
        s.mode = hal::flight::FlightMode {
            kind,
            raw: raw.into(),
        };
        s.autopilot_mode_change = Some(hal::flight::AutopilotModeChange {
            seq,
            from,
            to: s.mode.clone(),
            reason: None,
            at: SystemTime::now(),
        });
    }

    /// Issue 13: a mode no failsafe picks is a person's; a failsafe's mode is the autopilot's.
    #[test]
    fn a_mode_no_failsafe_picks_is_a_pilots_override_and_guided_hands_back() {
        use hal::flight::Autopilot;
        let mut m = Monitor::new(th());
        let at = nav(NavPhase::Cruising);
        let mut s = snap(55.0, 37.0, 30.0, true, LandedState::InAir);
        s.autopilot = Autopilot::ArduPilot;
        s.mode = guided_mode();
        assert!(m.observe(&s, at).is_empty());
        change(&mut s, 1, FlightModeKind::Hold, "LOITER");
        let e = m.observe(&s, at);
        assert!(
            matches!(&e[..], [Event::PilotOverride { who, what }]
                if who.contains("RC transmitter") && what.contains("LOITER")),
            "{e:?}"
        );
        // under the override the pilot's own mode changes are not news; GUIDED hands back
        let over = Position {
            state: DroneState::PilotOverride,
            phase: None,
            ..at
        };
        change(&mut s, 2, FlightModeKind::PositionHold, "POSHOLD");
        assert!(m.observe(&s, over).is_empty());
        change(&mut s, 3, FlightModeKind::Guided, "GUIDED");
        assert_eq!(
            m.observe(&s, over),
            [Event::PilotHandBack {
                mode: "GUIDED".into()
            }]
        );
        // BRAKE is ArduPilot's fence action; PX4's hold is its failsafes' too
        assert_eq!(
            who_changed_mode(
                Autopilot::ArduPilot,
                &hal::flight::FlightMode {
                    kind: FlightModeKind::Hold,
                    raw: "BRAKE".into()
                },
                None
            ),
            Changer::Autopilot
        );
        assert_eq!(
            who_changed_mode(
                Autopilot::Px4,
                &hal::flight::FlightMode {
                    kind: FlightModeKind::Hold,
                    raw: "AUTO.LOITER".into()
                },
                None
            ),
            Changer::Autopilot
        );
    }

    /// Issue 13: a command a ground station sent through the router is that station's override,
    /// and the mode change it causes is attributed to it (even RTL), not reported twice.
    #[test]
    fn a_routed_command_names_the_ground_station() {
        use hal::flight::Autopilot;
        let mut m = Monitor::new(th());
        let at = nav(NavPhase::Cruising);
        let mut s = snap(55.0, 37.0, 30.0, true, LandedState::InAir);
        s.autopilot = Autopilot::ArduPilot;
        s.mode = guided_mode();
        assert!(m.observe(&s, at).is_empty());
        let e = m.routed_command("qgc", "MAV_CMD_NAV_RETURN_TO_LAUNCH", s.at, at);
        assert!(
            matches!(&e, Some(Event::PilotOverride { who, .. }) if who.contains("`qgc`")),
            "{e:?}"
        );
        change(&mut s, 1, FlightModeKind::ReturnToLaunch, "RTL");
        let over = Position {
            state: DroneState::PilotOverride,
            phase: None,
            ..at
        };
        assert!(m.observe(&s, over).is_empty(), "not the autopilot's");
    }

    /// Issue 13: armed on the ground with no delivery: someone else's hands, said.
    #[test]
    fn arming_nobody_asked_for_on_the_ground_is_reported() {
        let mut m = Monitor::new(th());
        let idle = Position {
            state: DroneState::Idle,
            phase: None,
            destination: None,
            precision: false,
            left_ground: false,
        };
        let mut s = snap(55.0, 37.0, 0.0, false, LandedState::OnGround);
        assert!(m.observe(&s, idle).is_empty());
        s.armed = true;
        let e = m.observe(&s, idle);
        assert!(
            matches!(&e[..], [Event::PilotOverride { what, .. }] if what.contains("armed")),
            "{e:?}"
        );
    }
}
