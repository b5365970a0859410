use super::*;
use protocol::ws::DroneState::*;
use protocol::ws::{CommandKind, EventType};
use uuid::Uuid;

mod liveness;

pub(super) fn delivery() -> Delivery {
    Delivery {
        delivery_id: Uuid::from_u128(7),
        lat: 55.7558,
        lon: 37.6173,
        aruco_id: 123,
        priority: protocol::ws::Priority::Normal,
    }
}

fn run(m: &mut Machine, events: &[Event]) -> Vec<Outcome> {
    events.iter().map(|e| m.handle(e)).collect()
}

fn cmd(c: CommandKind) -> Event {
    Event::Command(c)
}

fn reports(out: &Outcome) -> Vec<EventType> {
    out.reports().map(|(e, _)| e).collect()
}

fn reason(out: &Outcome, want: EventType) -> String {
    out.reports()
        .find(|(e, _)| *e == want)
        .and_then(|(_, r)| r.map(str::to_owned))
        .unwrap_or_else(|| panic!("no {want:?} report with a reason in {out:?}"))
}

fn to_cruise() -> Vec<Event> {
    vec![
        Event::Task(delivery()),
        Event::PreflightPassed,
        Event::LeftGround,
        Event::ClimbComplete,
    ]
}

fn to_waiting() -> Vec<Event> {
    [
        to_cruise(),
        vec![Event::OverDestination, Event::AtDropHeight],
    ]
    .concat()
}

#[test]
fn happy_path_in_seed_order() {
    use CommandKind::*;
    let mut m = Machine::new(Limits::default());
    let mut sent = vec![];
    let mut states = vec![m.state()];
    for e in [
        Event::Task(delivery()),
        Event::PreflightPassed,
        Event::LeftGround,
        Event::ClimbComplete,
        Event::OverDestination,
        Event::AtDropHeight,
        cmd(DropCargo),
        Event::ReleaseDone,
        cmd(ReturnToBase),
        Event::LandedAtHome,
        Event::Recovered,
    ] {
        let out = m.handle(&e);
        assert!(out.rejected.is_none(), "{} rejected: {out:?}", e.name());
        sent.extend(reports(&out));
        if states.last() != Some(&m.state()) {
            states.push(m.state());
        }
    }
    use EventType as E;
    assert_eq!(
        sent,
        [
            E::TaskAssigned,
            E::TookOff,
            E::Arrived,
            E::DropConfirmed,
            E::ReturnCommand,
            E::ArrivedBase,
            E::Ready
        ]
    );
    assert_eq!(
        states,
        [
            Idle,
            Preflight,
            Navigating,
            WaitingDrop,
            Dropped,
            Returning,
            Completed,
            Idle
        ]
    );
    assert!(m.delivery().is_none());
}

/// Item 7: `took_off` once the vehicle has left the ground, not when the pre-flight passed.
#[test]
fn took_off_is_reported_when_the_vehicle_leaves_the_ground() {
    let mut m = Machine::new(Limits::default());
    m.handle(&Event::Task(delivery()));
    let out = m.handle(&Event::PreflightPassed);
    assert!(reports(&out).is_empty(), "{out:?}");
    assert_eq!(
        out.flights().collect::<Vec<_>>(),
        [Fly::Takeoff { alt_m: 30.0 }]
    );
    assert_eq!(reports(&m.handle(&Event::LeftGround)), [EventType::TookOff]);
    assert!(reports(&m.handle(&Event::LeftGround)).is_empty(), "once");
    assert!(!reports(&m.handle(&Event::ClimbComplete)).contains(&EventType::TookOff));
}

#[test]
fn drop_while_navigating_is_rejected_with_reason() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &[Event::Task(delivery()), Event::PreflightPassed]);
    let out = m.handle(&cmd(CommandKind::DropCargo));
    let why = out.rejected.expect("rejected");
    assert!(
        why.contains("drop_cargo") && why.contains("NAVIGATING"),
        "{why}"
    );
    assert!(out.effects.is_empty());
    assert_eq!(m.state(), Navigating);
}

#[test]
fn task_while_busy_is_rejected_naming_both_deliveries() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &[Event::Task(delivery())]);
    let other = Delivery {
        delivery_id: Uuid::from_u128(9),
        ..delivery()
    };
    let why = m.handle(&Event::Task(other)).rejected.expect("rejected");
    assert!(
        why.contains(&Uuid::from_u128(9).to_string())
            && why.contains(&Uuid::from_u128(7).to_string()),
        "{why}"
    );
}

/// `[energy]` as a test sets it: 20 min of hover, cruise a little dearer, 10 % reserve.
pub(super) fn energy_limits() -> energy::EnergyLimits {
    energy::EnergyLimits {
        model: crate::energy::EnergyModel {
            hover_pct_per_s: 100.0 / 1200.0,
            cruise_pct_per_s: 0.07,
            climb_pct_per_m: 0.05,
            flights: 0,
        },
        profile: crate::energy::FlightProfile {
            cruise_speed_mps: 12.0,
            descent_speed_mps: 1.5,
            reserve_pct: 10.0,
        },
        return_alt_m: None,
    }
}

/// An energy reading `north_m` north of home with `pct` left, 6 m/s of wind
/// blowing from home's side toward the drone (a headwind home).
pub(super) fn energy_reading(pct: f64, north_m: f64) -> Event {
    // home 500 m south of the delivery's destination
    let d = delivery();
    let h =
        protocol::geo::LatLon::new(d.lat, d.lon).offset(protocol::geo::NorthEast::new(-500.0, 0.0));
    let home = (h.lat_deg, h.lon_deg);
    let here = h.offset(protocol::geo::NorthEast::new(north_m, 0.0));
    Event::Energy(energy::EnergyReading {
        battery_pct: pct,
        here: (here.lat_deg, here.lon_deg),
        home,
        alt_m: 30.0,
        wind_ne_mps: (6.0, 0.0),
        velocity_ne_mps: (0.0, 0.0),
        clock_rate: 1.0,
    })
}

/// Limits with a precision approach (a camera and `[precision]`).
pub(super) fn with_precision(gps_fallback: bool) -> Limits {
    Limits {
        energy: Some(energy_limits()),
        precision: Some(crate::precision::PrecisionConfig {
            gps_fallback,
            ..Default::default()
        }),
        ..Limits::default()
    }
}

/// One frame seeing `id` `off_m` ahead of a still drone at `alt` (over the destination).
pub(super) fn frame(now_s: f64, id: Option<u32>, off_m: f64, alt: f64) -> Event {
    let d = delivery();
    let markers = id
        .map(|id| hal::marker::MarkerDetection {
            id,
            corners: [(0.0, 0.0); 4],
            target: hal::marker::TargetGeometry {
                angle_x: 0.0,
                angle_y: (-off_m / alt).atan(),
                distance_m: alt,
                forward_m: off_m,
                right_m: 0.0,
                down_m: alt,
                size_px: 40.0,
            },
        })
        .into_iter()
        .collect();
    Event::CameraFrame(Frame {
        now_s,
        markers,
        pose: crate::precision::Pose {
            at: hal::flight::GeoPoint::new(d.lat, d.lon, alt),
            heading_deg: 0.0,
            speed_mps: 0.0,
        },
    })
}

#[test]
fn approach_retries_are_bounded_then_home_with_parcel() {
    let mut m = Machine::new(Limits {
        max_nav_attempts: 2,
        ..with_precision(false)
    });
    run(
        &mut m,
        &[to_cruise(), vec![Event::OverDestination]].concat(),
    );
    // the marker is never seen: the approach's clock fails it (the machine's decision)
    m.handle(&Event::ApproachTick { now_s: 0.0 });
    assert_eq!(m.approach().map(|a| a.gps_only), Some(false));
    let out = m.handle(&Event::ApproachTick { now_s: 15.0 });
    assert_eq!(out.transition, Some((Navigating, Navigating)));
    assert_eq!(reports(&out), [EventType::RetryNavigation]);
    assert!(reason(&out, EventType::RetryNavigation).contains("marker 123 not seen within 15.0 s"));
    assert!(out
        .flights()
        .any(|f| matches!(f, Fly::Goto { alt_m, .. } if alt_m == 30.0)));
    assert!(m.approach().is_none(), "the approach ends with its phase");
    m.handle(&Event::OverDestination);
    m.handle(&frame(20.0, Some(123), 1.0, 10.0));
    let out = m.handle(&Event::ApproachTick { now_s: 23.0 });
    assert!(reason(&out, EventType::Aborted).contains("marker 123 lost for 3.0 s"));
    assert_eq!(m.state(), Aborting);
    assert!(m.parcel_on_board());
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::ReturnHome]);
}

#[test]
fn the_machines_approach_steers_then_arrives_when_centred() {
    let mut m = Machine::new(with_precision(false));
    run(
        &mut m,
        &[to_cruise(), vec![Event::OverDestination]].concat(),
    );
    // 2 m ahead at 10 m: a steer north at the same height, no state-file-worthy transition
    let out = m.handle(&frame(1.0, Some(123), 2.0, 10.0));
    let d = delivery();
    assert!(
        matches!(out.flights().collect::<Vec<_>>()[..], [Fly::Goto { lat, alt_m, .. }] if lat > d.lat && alt_m == 10.0),
        "{out:?}"
    );
    assert_eq!(out.transition, None);
    // someone else's marker is not steered to
    let out = m.handle(&frame(1.5, Some(9), 0.0, 4.0));
    assert_eq!(out.flights().count(), 0);
    for t in [2.0, 2.1] {
        m.handle(&frame(t, Some(123), 0.0, 4.0));
    }
    let out = m.handle(&frame(2.2, Some(123), 0.0, 4.0));
    assert_eq!(out.transition, Some((Navigating, WaitingDrop)));
    assert_eq!(reports(&out), [EventType::Arrived]);
    assert!(m.approach().is_none());
}

#[test]
fn a_camera_fault_in_the_approach_is_the_machines_decision() {
    // no fallback: reported, then the approach has failed (retry)
    let mut m = Machine::new(with_precision(false));
    run(
        &mut m,
        &[to_cruise(), vec![Event::OverDestination]].concat(),
    );
    let out = m.handle(&Event::CameraFault("no frame for 2 s".into()));
    assert_eq!(
        reports(&out),
        [EventType::CameraFault, EventType::RetryNavigation]
    );
    assert!(reason(&out, EventType::RetryNavigation).contains("camera failed: no frame"));
    // still failed at the next approach: its first tick fails it
    let out = m.handle(&Event::OverDestination);
    assert_eq!(out.transition, None);
    let out = m.handle(&Event::ApproachTick { now_s: 9.0 });
    assert_eq!(reports(&out), [EventType::RetryNavigation]);

    // fallback: finished by GPS, back over the GPS point
    let mut m = Machine::new(with_precision(true));
    run(
        &mut m,
        &[to_cruise(), vec![Event::OverDestination]].concat(),
    );
    let out = m.handle(&Event::CameraFault("unplugged".into()));
    assert!(reason(&out, EventType::CameraFault).contains("finishing the approach by GPS"));
    let d = delivery();
    assert_eq!(
        out.flights().collect::<Vec<_>>(),
        [Fly::Goto {
            lat: d.lat,
            lon: d.lon,
            alt_m: 4.0
        }]
    );
    assert_eq!(m.approach().map(|a| a.gps_only), Some(true));
    assert_eq!(
        m.handle(&Event::ApproachTick { now_s: 99.0 }).transition,
        None
    );
    assert_eq!(
        m.handle(&Event::AtDropHeight).transition,
        Some((Navigating, WaitingDrop))
    );
    // outside the approach: only reported
    let out = m.handle(&Event::CameraRestored);
    assert_eq!(reports(&out), [EventType::CameraRestored]);
    assert_eq!(m.camera_fault(), None);
}

/// The descent over the destination is a goto to the destination at drop height (the
/// runtime's `HoverAt` is "here", see item 17).
#[test]
fn approach_descends_over_the_destination() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    let out = m.handle(&Event::OverDestination);
    let d = delivery();
    assert_eq!(
        out.flights().collect::<Vec<_>>(),
        [Fly::Goto {
            lat: d.lat,
            lon: d.lon,
            alt_m: 4.0
        }]
    );
}

#[test]
fn drop_timeout_goes_home_and_says_why() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_waiting());
    let out = m.handle(&Event::TimerFired(Timer::DropWait));
    assert_eq!(m.state(), Aborting);
    assert!(reason(&out, EventType::DropTimeout).contains("120 s"));
}

#[test]
fn pause_and_resume_return_to_the_same_phase() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    let out = m.handle(&cmd(CommandKind::Pause));
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::Hold]);
    assert_eq!(m.state(), Paused);
    let out = m.handle(&cmd(CommandKind::Resume));
    assert_eq!(m.nav_phase(), Some(NavPhase::Cruising));
    assert!(
        out.flights().any(|f| matches!(f, Fly::Goto { .. })),
        "{out:?}"
    );
}

/// Item 17: resuming a paused take-off climbs on where the drone is; it never flies at the
/// destination from the take-off spot.
#[test]
fn resuming_a_paused_takeoff_climbs_here() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &[
            Event::Task(delivery()),
            Event::PreflightPassed,
            Event::LeftGround,
        ],
    );
    m.handle(&cmd(CommandKind::Pause));
    let out = m.handle(&cmd(CommandKind::Resume));
    assert_eq!(
        out.flights().collect::<Vec<_>>(),
        [Fly::HoverAt { alt_m: 30.0 }],
        "{out:?}"
    );
    assert_eq!(m.nav_phase(), Some(NavPhase::TakingOff));
}

/// A pause must not use up the drop wait: resuming into WAITING_DROP starts it again.
#[test]
fn resume_into_waiting_drop_restarts_the_drop_wait() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_waiting());
    let out = m.handle(&cmd(CommandKind::Pause));
    assert!(out.effects.contains(&Effect::CancelTimer(Timer::DropWait)));
    let out = m.handle(&cmd(CommandKind::Resume));
    assert!(out.effects.contains(&Effect::StartTimer(
        Timer::DropWait,
        Limits::default().drop_wait
    )));
}

#[test]
fn battery_thresholds() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    m.handle(&Event::BatteryLow("10.3 V under 10.5 V".into()));
    assert_eq!(m.state(), Aborting, "parcel on board: home with it");
    let out = m.handle(&Event::BatteryCritical("9.9 V".into()));
    assert_eq!(m.state(), EmergencyLanding);
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::LandNow]);
}

fn with_energy() -> Limits {
    Limits {
        energy: Some(energy_limits()),
        ..Limits::default()
    }
}

/// Issue 12: the way home at cruise against the wind, down and land, plus the reserve: when
/// the battery has only that left, home with the parcel and the numbers.
#[test]
fn energy_for_the_way_home_turns_the_drone_with_the_numbers() {
    let mut m = Machine::new(with_energy());
    run(&mut m, &to_cruise());
    // 1.4 km out, 6 m/s against: 28 % needed; 40 % is enough, 27 % is not
    let out = m.handle(&energy_reading(40.0, 1400.0));
    assert_eq!(m.state(), Navigating, "{out:?}");
    let out = m.handle(&energy_reading(27.0, 1400.0));
    assert_eq!(m.state(), Aborting);
    let (event, reason) = out.reports().next().unwrap();
    assert_eq!(event, EventType::BatteryLow);
    assert_eq!(
        reason,
        Some("energy: needed 28 %, have 27 % at 1.4 km, headwind 6 m/s")
    );
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::ReturnHome]);
    // on the way home the estimate says nothing more
    let out = m.handle(&energy_reading(20.0, 1000.0));
    assert!(out.effects.is_empty(), "{out:?}");
    // without `[energy]` the readings change nothing: the fixed thresholds decide
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    m.handle(&energy_reading(12.0, 1400.0));
    assert_eq!(m.state(), Navigating);
}

#[test]
fn a_round_trip_beyond_the_battery_is_refused_before_take_off() {
    let mut m = Machine::new(with_energy());
    m.handle(&Event::Task(delivery()));
    // on the ground at home, 500 m from the destination: 30 % is too little for out, the
    // 120 s drop wait, back and the reserve
    m.handle(&energy_reading(30.0, 0.0));
    let out = m.handle(&Event::PreflightPassed);
    assert_eq!(m.state(), Idle, "{out:?}");
    let (event, reason) = out.reports().next().unwrap();
    assert_eq!(event, EventType::PreflightFailed);
    let reason = reason.unwrap();
    assert!(
        reason.starts_with("energy: the round trip needs"),
        "{reason}"
    );
    assert!(reason.contains("the battery has 30 %"), "{reason}");
    assert!(reason.contains("drop wait 120 s"), "{reason}");
    // with a full battery it flies
    let mut m = Machine::new(with_energy());
    m.handle(&Event::Task(delivery()));
    m.handle(&energy_reading(100.0, 0.0));
    m.handle(&Event::PreflightPassed);
    assert_eq!(m.state(), Navigating);
}

#[test]
fn the_battery_shortens_the_drop_wait_and_says_so() {
    let mut m = Machine::new(with_energy());
    run(&mut m, &to_cruise());
    m.handle(&Event::OverDestination);
    // 500 m from home, 6 m/s against: the way home needs 83 s × 0.07 + 20 s × 0.083 + 10 ≈
    // 17.5 %; 20 % leaves about 30 s of hover, less than the 120 s configured
    m.handle(&energy_reading(20.0, 500.0));
    let out = m.handle(&Event::AtDropHeight);
    assert_eq!(m.state(), WaitingDrop);
    let wait = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::StartTimer(Timer::DropWait, d) => Some(*d),
            _ => None,
        })
        .unwrap();
    assert!(wait.as_secs() > 20 && wait.as_secs() < 40, "{wait:?}");
    let (event, reason) = out.reports().next().unwrap();
    assert_eq!(event, EventType::Arrived);
    let reason = reason.unwrap();
    assert!(reason.contains("drop wait shortened to"), "{reason}");
    assert!(reason.contains("of 120 s"), "{reason}");
    let out = m.handle(&Event::TimerFired(Timer::DropWait));
    let (_, reason) = out.reports().next().unwrap();
    assert!(reason.unwrap().contains("(shortened by the battery)"));
    assert_eq!(m.state(), Aborting);
}

#[test]
fn gps_loss_holds_then_lands() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    let out = m.handle(&Event::GpsLost);
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::Hold]);
    m.handle(&Event::TimerFired(Timer::GpsLoss));
    assert_eq!(m.state(), EmergencyLanding);
}

/// Cloud up/down are events; the machine times the outage and acts only while waiting for
/// the drop (elsewhere the flight goes on; over the locker the clock starts on arrival).
#[test]
fn cloud_loss_only_matters_while_waiting_for_the_drop() {
    let limits = Limits::default();
    let mut m = Machine::new(limits.clone());
    run(&mut m, &to_cruise());
    let out = m.handle(&Event::CloudDown);
    assert_eq!(
        out.effects,
        [Effect::StartTimer(
            Timer::CloudLoss,
            limits.cloud_loss_return
        )]
    );
    assert!(m
        .handle(&Event::TimerFired(Timer::CloudLoss))
        .effects
        .is_empty());
    assert_eq!(m.state(), Navigating);
    m.handle(&Event::OverDestination);
    let out = m.handle(&Event::AtDropHeight);
    assert!(out.effects.contains(&Effect::StartTimer(
        Timer::CloudLoss,
        limits.cloud_loss_return
    )));
    let out = m.handle(&Event::TimerFired(Timer::CloudLoss));
    assert_eq!(m.state(), Aborting);
    assert_eq!(reports(&out), [EventType::CloudLinkLost]);
    // back up in time: nothing happens
    let mut m = Machine::new(limits.clone());
    run(&mut m, &to_waiting());
    m.handle(&Event::CloudDown);
    let out = m.handle(&Event::CloudUp);
    assert_eq!(out.effects, [Effect::CancelTimer(Timer::CloudLoss)]);
}

#[test]
fn state_survives_serialisation_with_local_data() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &[to_cruise(), vec![cmd(CommandKind::Pause)]].concat(),
    );
    let back = Machine::from_json(m.to_json(), Limits::default()).unwrap();
    assert_eq!(back.raw_state(), m.raw_state());
    assert_eq!(back.delivery(), m.delivery());
    assert!(back.left_ground());
    assert_eq!(back.drone().flight, m.drone().flight);
}

#[test]
fn restart_in_the_air_follows_the_policy() {
    for (carry_on, want) in [(true, Navigating), (false, Aborting)] {
        let mut m = Machine::new(Limits {
            continue_after_restart: carry_on,
            ..Limits::default()
        });
        run(&mut m, &to_cruise());
        let mut m = Machine::from_json(m.to_json(), m.limits().clone()).unwrap();
        let out = m.handle(&Event::Restarted(Vehicle::Airborne));
        assert_eq!(m.state(), want);
        assert_eq!(reports(&out), [EventType::AgentRestarted]);
    }
}

/// Item 2: a take-off the autopilot refuses on the ground ends the delivery at once with the
/// autopilot's words: IDLE, one report, no return-to-launch, disarmed.
#[test]
fn takeoff_refused_on_the_ground_returns_to_idle_with_the_autopilots_words() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &[Event::Task(delivery()), Event::PreflightPassed]);
    let out = m.handle(&Event::FlightOpFailed {
        op: FlightOp::Takeoff,
        why: "Mode change to GUIDED failed: requires position".into(),
        transient: false,
    });
    assert_eq!(m.state(), Idle);
    assert_eq!(reports(&out), [EventType::PreflightFailed]);
    assert!(reason(&out, EventType::PreflightFailed).contains("requires position"));
    assert!(out.effects.contains(&Effect::Disarm));
    assert_eq!(out.flights().count(), 0, "no RTL on the ground: {out:?}");
    assert!(m.delivery().is_none());
    assert!(
        m.handle(&Event::Task(delivery())).rejected.is_none(),
        "ready again"
    );
}

/// A "not yet" (`TEMPORARILY_REJECTED`) on the ground is asked again, backing off, at most
/// `flight_op_retries` times, silently; then IDLE with one report.
#[test]
fn transient_takeoff_refusals_back_off_and_are_bounded() {
    let limits = Limits::default();
    let mut m = Machine::new(limits.clone());
    run(&mut m, &[Event::Task(delivery()), Event::PreflightPassed]);
    let refusal = Event::FlightOpFailed {
        op: FlightOp::Takeoff,
        why: "Arm: Need Position Estimate".into(),
        transient: true,
    };
    let mut waits = vec![];
    for _ in 0..limits.flight_op_retries {
        let out = m.handle(&refusal);
        assert!(reports(&out).is_empty(), "not reported per retry: {out:?}");
        let Some(Effect::StartTimer(Timer::FlightRetry, after)) = out.effects.last() else {
            panic!("{out:?}")
        };
        waits.push(*after);
        let again = m.handle(&Event::TimerFired(Timer::FlightRetry));
        assert_eq!(
            again.flights().collect::<Vec<_>>(),
            [Fly::Takeoff { alt_m: 30.0 }]
        );
    }
    assert!(
        waits.windows(2).all(|w| w[1] > w[0]),
        "backs off: {waits:?}"
    );
    let out = m.handle(&refusal);
    assert_eq!(m.state(), Idle);
    assert_eq!(reports(&out), [EventType::PreflightFailed]);
}

/// Item 2's storm: a refused return-to-launch is asked again a bounded number of times,
/// reported once, then the drone lands where it is.
#[test]
fn refused_return_to_launch_is_bounded_reported_once_then_lands() {
    let limits = Limits::default();
    let mut m = Machine::new(limits.clone());
    run(
        &mut m,
        &[to_cruise(), vec![cmd(CommandKind::Abort)]].concat(),
    );
    let refusal = Event::FlightOpFailed {
        op: FlightOp::ReturnHome,
        why: "Mode change to RTL failed: requires position".into(),
        transient: false,
    };
    let (mut sent, mut rtl) = (vec![], 0);
    for _ in 0..50 {
        let out = m.handle(&refusal);
        sent.extend(reports(&out));
        let out = m.handle(&Event::TimerFired(Timer::FlightRetry));
        rtl += out.flights().filter(|f| *f == Fly::ReturnHome).count();
        sent.extend(reports(&out));
        if m.state() != Aborting {
            break;
        }
    }
    assert_eq!(rtl as u32, limits.flight_op_retries);
    assert_eq!(m.state(), EmergencyLanding);
    assert_eq!(sent, [EventType::FlightOpRefused, EventType::Failsafe]);
}

/// Item 12: the refusal of an operation a newer one superseded changes nothing.
#[test]
fn a_superseded_operations_refusal_is_not_applied() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    m.handle(&cmd(CommandKind::Pause)); // Hold supersedes the goto
    let out = m.handle(&Event::FlightOpFailed {
        op: FlightOp::Goto,
        why: "home position not known yet".into(),
        transient: false,
    });
    assert_eq!(out, Outcome::default());
    assert_eq!(m.state(), Paused);
}

/// Item 5: a mode change the agent did not ask for is reported with the autopilot's words and
/// followed: nothing is commanded until `resume`.
#[test]
fn the_autopilots_own_decision_is_reported_and_followed() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    let out = m.handle(&Event::AutopilotTookOver {
        mode: "RTL".into(),
        reason: "Battery Failsafe".into(),
    });
    assert_eq!(m.state(), AutopilotControl);
    assert!(reason(&out, EventType::AutopilotTookOver).contains("Battery Failsafe"));
    assert_eq!(out.flights().count(), 0);
    for e in [
        Event::GpsLost,
        Event::BatteryLow("low".into()),
        Event::TimerFired(Timer::FlightRetry),
        Event::TimerFired(Timer::GpsLoss),
    ] {
        assert_eq!(m.handle(&e).flights().count(), 0, "{}", e.name());
    }
    let out = m.handle(&Event::LandedAtHome);
    assert_eq!(m.state(), Completed);
    assert_eq!(reports(&out), [EventType::ArrivedBase]);
    // ... or `resume` takes control back: over the locker again from cruise
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_waiting());
    m.handle(&Event::AutopilotTookOver {
        mode: "LOITER".into(),
        reason: "RC pilot".into(),
    });
    let out = m.handle(&cmd(CommandKind::Resume));
    assert_eq!(m.nav_phase(), Some(NavPhase::Cruising));
    assert!(out
        .flights()
        .any(|f| matches!(f, Fly::Goto { alt_m, .. } if alt_m == 30.0)));
}

#[test]
fn take_back_by_config_flies_home() {
    let mut m = Machine::new(Limits {
        take_back_after: Some(std::time::Duration::from_secs(30)),
        ..Limits::default()
    });
    run(&mut m, &to_cruise());
    let out = m.handle(&Event::AutopilotTookOver {
        mode: "LOITER".into(),
        reason: "fence".into(),
    });
    assert!(out.effects.contains(&Effect::StartTimer(
        Timer::TakeBack,
        std::time::Duration::from_secs(30)
    )));
    let out = m.handle(&Event::TimerFired(Timer::TakeBack));
    assert_eq!(m.state(), Aborting);
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::ReturnHome]);
}

/// Item 14: LANDED_ELSEWHERE's way out is a technician's `ready`, refused while armed or in
/// the air.
#[test]
fn landed_elsewhere_leaves_on_a_technicians_ready_only_when_safe() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &[to_cruise(), vec![Event::LandedAway]].concat());
    assert_eq!(m.state(), LandedElsewhere);
    assert!(m.handle(&Event::Task(delivery())).rejected.is_some());
    let out = m.handle(&Event::TechnicianReady {
        armed: true,
        in_air: false,
    });
    assert!(out.rejected.expect("refused").contains("armed"));
    assert_eq!(m.state(), LandedElsewhere);
    let out = m.handle(&Event::TechnicianReady {
        armed: false,
        in_air: false,
    });
    assert_eq!(m.state(), Idle);
    assert_eq!(reports(&out), [EventType::Ready]);
    assert!(m.handle(&Event::Task(delivery())).rejected.is_none());
}

/// Item 15: a restart in FAILSAFE after the autopilot landed resolves (home or away).
#[test]
fn restart_in_failsafe_after_the_autopilot_landed_resolves() {
    for (at_home, want) in [(true, Completed), (false, LandedElsewhere)] {
        let mut m = Machine::new(Limits::default());
        run(&mut m, &[to_cruise(), vec![Event::FcLinkLost]].concat());
        assert_eq!(m.state(), Failsafe);
        let mut m = Machine::from_json(m.to_json(), Limits::default()).unwrap();
        m.handle(&Event::Restarted(Vehicle::OnGround { at_home }));
        assert_eq!(m.state(), want);
    }
}

/// A take-off that had not left the ground when the agent died is checked again.
#[test]
fn restart_during_a_takeoff_still_on_the_ground_checks_again() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &[Event::Task(delivery()), Event::PreflightPassed]);
    let out = m.handle(&Event::Restarted(Vehicle::OnGround { at_home: true }));
    assert_eq!(m.state(), Preflight);
    assert!(out.effects.contains(&Effect::RunPreflight));
}

/// Item 16: killed between `drop_cargo` and the confirmation: the payload is read, then the
/// release is confirmed (it is open) or ordered again (it is not).
#[test]
fn restart_mid_release_reads_the_payload_then_confirms_or_releases_again() {
    for (reading, want) in [
        (PayloadReading::Released, Dropped),
        (PayloadReading::Closed, WaitingDrop),
        (PayloadReading::Unknown, WaitingDrop),
    ] {
        let mut m = Machine::new(Limits::default());
        run(
            &mut m,
            &[to_waiting(), vec![cmd(CommandKind::DropCargo)]].concat(),
        );
        assert!(m.drone().releasing);
        let mut m = Machine::from_json(m.to_json(), Limits::default()).unwrap();
        let out = m.handle(&Event::Restarted(Vehicle::Airborne));
        assert!(out.effects.contains(&Effect::ReadPayload), "{out:?}");
        let out = m.handle(&Event::PayloadRead(reading));
        assert_eq!(m.state(), want, "{reading:?}");
        if want == WaitingDrop {
            assert!(out.effects.contains(&Effect::ReleasePayload));
        } else {
            assert_eq!(reports(&out), [EventType::DropConfirmed]);
        }
    }
}

/// Item 18: the technician's test release goes through the machine; a task meanwhile waits.
#[test]
fn test_release_blocks_a_task_until_done() {
    let mut m = Machine::new(Limits::default());
    let out = m.handle(&Event::TestRelease);
    assert!(out.effects.contains(&Effect::TestRelease));
    assert!(
        m.handle(&Event::TestRelease).rejected.is_some(),
        "one at a time"
    );
    let why = m
        .handle(&Event::Task(delivery()))
        .rejected
        .expect("blocked");
    assert!(why.contains("test release"), "{why}");
    m.handle(&Event::TestReleaseDone);
    assert!(m.handle(&Event::Task(delivery())).rejected.is_none());
    assert!(
        m.handle(&Event::TestRelease).rejected.is_some(),
        "not on a delivery"
    );
}

#[test]
fn diagram_covers_every_state() {
    let d = mermaid();
    for s in DroneState::ALL {
        assert!(d.contains(state_name(s)), "{s:?} missing from the diagram");
    }
}

/// The diagram in the crate docs is the one generated from the table.
#[test]
fn docs_diagram_is_current() {
    let doc = include_str!("../../docs/state-machine.md");
    assert!(
        doc.contains(&mermaid()),
        "drone-agent/docs/state-machine.md is stale: regenerate with `cargo run -p drone-agent -- diagram`"
    );
}

/// Issue 18: a task whose state or `task_assigned` cannot be written is refused on the ground
/// with the reason (fail closed), and tasks are refused until the disk takes writes again.
#[test]
fn a_task_that_cannot_be_recorded_is_refused_on_the_ground() {
    let mut m = Machine::new(Limits::default());
    m.handle(&Event::Task(delivery()));
    let out = m.handle(&Event::StorageFailed("No space left on device".into()));
    assert_eq!(m.state(), Idle);
    let why = out.rejected.clone().expect("refused");
    assert!(
        why.contains("No space left on device")
            && why.contains(&delivery().delivery_id.to_string()),
        "{why}"
    );
    assert_eq!(reports(&out), [EventType::PreflightFailed]);
    assert_eq!(out.flights().count(), 0);
    assert!(m.delivery().is_none());
    let why = m
        .handle(&Event::Task(delivery()))
        .rejected
        .expect("still refused");
    assert!(why.contains("cannot save"), "{why}");
    assert_eq!(m.state(), Idle);
    let out = m.handle(&Event::StorageRestored("3 events stored".into()));
    assert_eq!(reports(&out), [EventType::StorageRestored]);
    assert!(m.handle(&Event::Task(delivery())).rejected.is_none());
    assert_eq!(m.state(), Preflight);
}

/// In the air a failed write is reported once and the flight goes on untouched.
#[test]
fn storage_failure_in_the_air_changes_nothing_but_a_report() {
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    let before = m.raw_state().clone();
    let out = m.handle(&Event::StorageFailed("No space left on device".into()));
    assert_eq!(reports(&out), [EventType::StorageFailed]);
    assert_eq!(out.effects.len(), 1, "nothing but the report: {out:?}");
    assert!(out.transition.is_none() && out.rejected.is_none());
    assert_eq!(m.raw_state(), &before);
    assert!(
        m.handle(&Event::StorageFailed("again".into()))
            .effects
            .is_empty(),
        "reported once"
    );
    // the delivery carries on
    m.handle(&Event::OverDestination);
    m.handle(&Event::AtDropHeight);
    assert_eq!(m.state(), WaitingDrop);
    let out = m.handle(&Event::StorageRestored("2 events stored".into()));
    assert_eq!(reports(&out), [EventType::StorageRestored]);
    assert_eq!(m.storage_failed(), None);
    // without the autopilot's link too (FAILSAFE acts on little else)
    m.handle(&Event::FcLinkLost);
    assert_eq!(m.state(), Failsafe);
    let out = m.handle(&Event::StorageFailed("No space left on device".into()));
    assert_eq!(reports(&out), [EventType::StorageFailed]);
}

/// Issue 18: no flight on record (lost, empty, unreadable state, or IDLE) and the vehicle
/// flying: made safe by `[restart] unknown_airborne`, with the reason; never IDLE under it.
#[test]
fn flying_with_no_flight_on_record_is_made_safe_by_config() {
    for (policy, want, fly) in [
        (UnknownAirborne::ReturnHome, Returning, Fly::ReturnHome),
        (UnknownAirborne::Land, EmergencyLanding, Fly::LandNow),
        (UnknownAirborne::Hold, Paused, Fly::Hold),
    ] {
        let mut m = Machine::new(Limits {
            unknown_airborne: policy,
            ..Limits::default()
        });
        m.set_lost_record("state file unreadable, moved aside: EOF".into());
        let out = m.handle(&Event::Restarted(Vehicle::Airborne));
        assert_eq!(m.state(), want, "{policy:?}");
        assert_eq!(out.flights().collect::<Vec<_>>(), [fly]);
        let why = reason(&out, EventType::AgentRestarted);
        assert!(
            why.contains("unreadable") && why.contains(policy.name()),
            "{why}"
        );
        assert!(m.left_ground(), "a landing is a landing");
    }
    // `hold` waits for the backend: resume flies home
    let mut m = Machine::new(Limits {
        unknown_airborne: UnknownAirborne::Hold,
        ..Limits::default()
    });
    m.handle(&Event::Restarted(Vehicle::Airborne));
    let out = m.handle(&cmd(CommandKind::Resume));
    assert_eq!(m.state(), Returning);
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::ReturnHome]);
    // and a restored COMPLETED (or landed away) under a flying drone too
    let mut m = Machine::new(Limits::default());
    run(&mut m, &[to_cruise(), vec![Event::LandedAway]].concat());
    let mut m = Machine::from_json(m.to_json(), Limits::default()).unwrap();
    m.handle(&Event::Restarted(Vehicle::Airborne));
    assert_eq!(m.state(), Returning);
    // then home as any flight ends
    m.handle(&Event::LandedAtHome);
    assert_eq!(m.state(), Completed);
}

/// Issue 13: a person's override suspends the delivery (nothing commanded, no timer that would
/// fly), `resume` or the hand-back mode gives it back, and a landing ends it like any landing.
#[test]
fn a_pilots_override_is_followed_until_handed_back_or_landed() {
    let pilot = || Event::PilotOverride {
        who: "ground station `qgc`".into(),
        what: "mode LOITER (was GUIDED)".into(),
    };
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_waiting());
    let out = m.handle(&pilot());
    assert_eq!(m.state(), PilotOverride);
    assert!(reason(&out, EventType::PilotOverride).contains("`qgc`"));
    assert_eq!(out.flights().count(), 0);
    assert!(out.effects.contains(&Effect::CancelTimer(Timer::DropWait)));
    for e in [
        Event::GpsLost,
        Event::BatteryLow("low".into()),
        Event::TimerFired(Timer::FlightRetry),
        pilot(),
    ] {
        assert_eq!(m.handle(&e).flights().count(), 0, "{}", e.name());
        assert_eq!(m.state(), PilotOverride);
    }
    // the pilot switches to GUIDED: over the locker again from cruise
    let out = m.handle(&Event::PilotHandBack {
        mode: "GUIDED".into(),
    });
    assert_eq!(m.nav_phase(), Some(NavPhase::Cruising));
    assert!(reason(&out, EventType::Resumed).contains("GUIDED"));
    assert!(out
        .flights()
        .any(|f| matches!(f, Fly::Goto { alt_m, .. } if alt_m == 30.0)));
    // a hand-back mode outside an override changes nothing
    assert_eq!(
        m.handle(&Event::PilotHandBack {
            mode: "GUIDED".into()
        }),
        Outcome::default()
    );
    // the pilot lands it away from home and disarms: LANDED_ELSEWHERE, a technician's step
    m.handle(&pilot());
    let out = m.handle(&Event::LandedAway);
    assert_eq!(m.state(), LandedElsewhere);
    assert!(reason(&out, EventType::LandedElsewhere).contains("pilot"));
    // from the autopilot's failsafe too, and `resume` hands back from there
    let mut m = Machine::new(Limits::default());
    run(&mut m, &to_cruise());
    m.handle(&Event::AutopilotTookOver {
        mode: "RTL".into(),
        reason: "Battery Failsafe".into(),
    });
    m.handle(&pilot());
    assert_eq!(m.state(), PilotOverride);
    let out = m.handle(&cmd(CommandKind::Resume));
    assert_eq!(m.state(), Navigating);
    assert_eq!(out.flights().count(), 1);
    // on the ground it is said, and nothing changes
    let mut m = Machine::new(Limits::default());
    let out = m.handle(&pilot());
    assert_eq!(m.state(), Idle);
    assert_eq!(reports(&out), [EventType::PilotOverride]);
}

/// Issue 12 meets issue 13: under a pilot the way home's energy running short turns nothing
/// (the agent commands nothing while a person flies); the reading is kept, and the first one
/// after the hand-back turns the drone home.
#[test]
fn energy_short_under_a_pilot_turns_nothing_until_handed_back() {
    let mut m = Machine::new(with_energy());
    run(&mut m, &to_cruise());
    m.handle(&Event::PilotOverride {
        who: "ground station `qgc`".into(),
        what: "mode LOITER (was GUIDED)".into(),
    });
    assert_eq!(m.state(), PilotOverride);
    let out = m.handle(&energy_reading(27.0, 1400.0));
    assert_eq!(m.state(), PilotOverride);
    assert_eq!(out.flights().count(), 0);
    m.handle(&cmd(CommandKind::Resume));
    assert_eq!(m.state(), Navigating);
    let out = m.handle(&energy_reading(27.0, 1400.0));
    assert_eq!(m.state(), Aborting, "the parcel comes home");
    assert_eq!(out.flights().collect::<Vec<_>>(), [Fly::ReturnHome]);
}
