use super::*;
use protocol::ws::DroneState::*;
use std::collections::BTreeSet;

fn delivery() -> Delivery {
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

/// Event sequences from IDLE that reach every state (and every state-local variant).
fn setups() -> Vec<(&'static str, Vec<Event>)> {
    use CommandKind::*;
    let to_nav = vec![Event::Task(delivery()), Event::PreflightPassed];
    let cruise = [to_nav.clone(), vec![Event::ClimbComplete]].concat();
    let approach = [cruise.clone(), vec![Event::OverDestination]].concat();
    let waiting = [approach.clone(), vec![Event::AtDropHeight]].concat();
    let dropped = [waiting.clone(), vec![cmd(DropCargo), Event::ReleaseDone]].concat();
    let returning = [dropped.clone(), vec![cmd(ReturnToBase)]].concat();
    let aborting = [cruise.clone(), vec![cmd(Abort)]].concat();
    vec![
        ("idle", vec![]),
        ("preflight", vec![Event::Task(delivery())]),
        ("nav/takeoff", to_nav.clone()),
        ("nav/cruise", cruise.clone()),
        ("nav/approach", approach.clone()),
        ("waiting_drop", waiting.clone()),
        ("dropped", dropped.clone()),
        ("returning", returning.clone()),
        ("aborting", aborting.clone()),
        (
            "completed",
            [returning.clone(), vec![Event::LandedAtHome]].concat(),
        ),
        (
            "paused/takeoff",
            [to_nav.clone(), vec![cmd(Pause)]].concat(),
        ),
        ("paused/cruise", [cruise.clone(), vec![cmd(Pause)]].concat()),
        (
            "paused/approach",
            [approach.clone(), vec![cmd(Pause)]].concat(),
        ),
        (
            "paused/waiting",
            [waiting.clone(), vec![cmd(Pause)]].concat(),
        ),
        (
            "paused/dropped",
            [dropped.clone(), vec![cmd(Pause)]].concat(),
        ),
        (
            "paused/returning",
            [returning.clone(), vec![cmd(Pause)]].concat(),
        ),
        (
            "paused/aborting",
            [aborting.clone(), vec![cmd(Pause)]].concat(),
        ),
        (
            "emergency",
            [cruise.clone(), vec![Event::BatteryCritical]].concat(),
        ),
        (
            "failsafe/parcel",
            [cruise.clone(), vec![Event::FcLinkLost]].concat(),
        ),
        (
            "failsafe/empty",
            [dropped.clone(), vec![Event::FcLinkLost]].concat(),
        ),
        (
            "landed_elsewhere",
            [cruise.clone(), vec![Event::LandedAway]].concat(),
        ),
    ]
}

fn every_event() -> Vec<Event> {
    use CommandKind::*;
    let mut v = vec![
        Event::Task(Delivery {
            delivery_id: Uuid::from_u128(8),
            ..delivery()
        }),
        Event::PreflightPassed,
        Event::PreflightFailed("gps".into()),
        Event::ClimbComplete,
        Event::OverDestination,
        Event::AtDropHeight,
        Event::ApproachFailed("marker not seen".into()),
        Event::ReleaseDone,
        Event::ReleaseFailed("servo".into()),
        Event::LandedAtHome,
        Event::LandedAway,
        Event::BatteryLow,
        Event::BatteryCritical,
        Event::GpsLost,
        Event::GpsRestored,
        Event::FcLinkLost,
        Event::FcLinkRestored { airborne: true },
        Event::FcLinkRestored { airborne: false },
        Event::CloudLost,
        Event::FlightOpFailed("goto denied".into()),
        Event::Restarted { airborne: true },
        Event::Restarted { airborne: false },
        Event::Recovered,
    ];
    for t in [
        Timer::DropWait,
        Timer::AutoReturn,
        Timer::Approach,
        Timer::GpsLoss,
    ] {
        v.push(Event::TimerFired(t));
    }
    for c in [DropCargo, ReturnToBase, Pause, Resume, Abort, ReturnToHome] {
        v.push(Event::Command(c));
    }
    v
}

/// The table is the truth: every transition the machine makes is listed, and every listed one is
/// made by some state and event (with either restart policy).
#[test]
fn table_matches_machine() {
    let listed: BTreeSet<_> = TRANSITIONS
        .iter()
        .map(|t| (t.from as u8, t.on, t.to as u8))
        .collect();
    let mut seen = BTreeSet::new();
    for continue_after_restart in [true, false] {
        let limits = Limits {
            continue_after_restart,
            ..Limits::default()
        };
        for (name, setup) in setups() {
            for event in every_event() {
                let mut m = Machine::new(limits.clone());
                run(&mut m, &setup);
                let out = m.handle(&event);
                if let Some((from, to)) = out.transition {
                    let key = (from as u8, event.name(), to as u8);
                    assert!(
                        listed.contains(&key),
                        "{name}: {from:?} --{}--> {to:?} is not in TRANSITIONS",
                        event.name()
                    );
                    seen.insert(key);
                }
            }
        }
    }
    for t in TRANSITIONS {
        assert!(
            seen.contains(&(t.from as u8, t.on, t.to as u8)),
            "listed but never made: {t:?}"
        );
    }
}

/// Every transition reports exactly one event to the cloud, first among the effects.
#[test]
fn every_transition_reports() {
    for (name, setup) in setups() {
        for event in every_event() {
            let mut m = Machine::new(Limits::default());
            run(&mut m, &setup);
            let out = m.handle(&event);
            if out.transition.is_some() {
                assert!(
                    matches!(out.effects.first(), Some(Effect::Report { .. })),
                    "{name} + {}: transition without a report: {out:?}",
                    event.name()
                );
            }
        }
    }
}

#[test]
fn happy_path_in_seed_order() {
    use CommandKind::*;
    let mut m = Machine::new(Limits::default());
    let mut reports = vec![];
    let mut states = vec![m.state()];
    for e in [
        Event::Task(delivery()),
        Event::PreflightPassed,
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
        assert!(
            out.rejected.is_none(),
            "{} rejected: {:?}",
            e.name(),
            out.rejected
        );
        for eff in &out.effects {
            if let Effect::Report { event, .. } = eff {
                reports.push(*event);
            }
        }
        if states.last() != Some(&m.state()) {
            states.push(m.state());
        }
    }
    use protocol::ws::EventType as E;
    assert_eq!(
        reports,
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
        priority: protocol::ws::Priority::Priority,
        ..delivery()
    };
    let why = m.handle(&Event::Task(other)).rejected.expect("rejected");
    assert!(
        why.contains(&Uuid::from_u128(9).to_string())
            && why.contains(&Uuid::from_u128(7).to_string()),
        "{why}"
    );
}

#[test]
fn approach_retries_are_bounded_then_home_with_parcel() {
    let mut m = Machine::new(Limits {
        max_nav_attempts: 2,
        ..Limits::default()
    });
    run(
        &mut m,
        &[
            Event::Task(delivery()),
            Event::PreflightPassed,
            Event::ClimbComplete,
            Event::OverDestination,
        ],
    );
    let out = m.handle(&Event::ApproachFailed("marker 7 seen, want 123".into()));
    assert_eq!(out.transition, Some((Navigating, Navigating)));
    assert!(out.effects.iter().any(|e| matches!(
        e,
        Effect::Report {
            event: EventType::RetryNavigation,
            ..
        }
    )));
    assert!(out.effects.iter().any(|e| matches!(e, Effect::Goto { .. })));
    m.handle(&Event::OverDestination);
    let out = m.handle(&Event::ApproachFailed("marker not seen".into()));
    assert_eq!(m.state(), Aborting);
    assert!(m.parcel_on_board());
    assert!(out.effects.contains(&Effect::ReturnHome));
}

#[test]
fn drop_timeout_goes_home_and_says_why() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &setups()
            .into_iter()
            .find(|(n, _)| *n == "waiting_drop")
            .unwrap()
            .1,
    );
    let out = m.handle(&Event::TimerFired(Timer::DropWait));
    assert_eq!(m.state(), Aborting);
    let Some(Effect::Report {
        event: EventType::DropTimeout,
        reason: Some(r),
    }) = out.effects.first()
    else {
        panic!("{out:?}")
    };
    assert!(r.contains("120 s"), "{r}");
}

#[test]
fn pause_and_resume_return_to_the_same_phase() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &[
            Event::Task(delivery()),
            Event::PreflightPassed,
            Event::ClimbComplete,
        ],
    );
    assert!(m
        .handle(&cmd(CommandKind::Pause))
        .effects
        .contains(&Effect::Hold));
    assert_eq!(m.state(), Paused);
    let out = m.handle(&cmd(CommandKind::Resume));
    assert_eq!(m.nav_phase(), Some(NavPhase::Cruising));
    assert!(
        out.effects.iter().any(|e| matches!(e, Effect::Goto { .. })),
        "{out:?}"
    );
}

#[test]
fn battery_thresholds() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &[
            Event::Task(delivery()),
            Event::PreflightPassed,
            Event::ClimbComplete,
        ],
    );
    m.handle(&Event::BatteryLow);
    assert_eq!(
        m.state(),
        Aborting,
        "low battery with the parcel: home with it"
    );
    let out = m.handle(&Event::BatteryCritical);
    assert_eq!(m.state(), EmergencyLanding);
    assert!(out.effects.contains(&Effect::LandNow));
    assert!(m.handle(&cmd(CommandKind::Resume)).rejected.is_some());
}

#[test]
fn gps_loss_holds_then_lands() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &[
            Event::Task(delivery()),
            Event::PreflightPassed,
            Event::ClimbComplete,
        ],
    );
    let out = m.handle(&Event::GpsLost);
    assert!(out.effects.contains(&Effect::Hold));
    assert_eq!(m.state(), Navigating);
    m.handle(&Event::TimerFired(Timer::GpsLoss));
    assert_eq!(m.state(), EmergencyLanding);
}

#[test]
fn cloud_loss_only_matters_while_waiting_for_the_drop() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &[
            Event::Task(delivery()),
            Event::PreflightPassed,
            Event::ClimbComplete,
        ],
    );
    m.handle(&Event::CloudLost);
    assert_eq!(m.state(), Navigating);
    run(
        &mut m,
        &[
            Event::OverDestination,
            Event::AtDropHeight,
            Event::CloudLost,
        ],
    );
    assert_eq!(m.state(), Aborting);
}

#[test]
fn state_survives_serialisation_with_local_data() {
    let mut m = Machine::new(Limits::default());
    run(
        &mut m,
        &[
            Event::Task(delivery()),
            Event::PreflightPassed,
            Event::ClimbComplete,
            cmd(CommandKind::Pause),
        ],
    );
    let saved = m.to_json();
    let mut back = Machine::from_json(saved, Limits::default()).unwrap();
    assert_eq!(back.raw_state(), m.raw_state());
    assert_eq!(back.delivery(), m.delivery());
    assert!(back.parcel_on_board());
    back.handle(&cmd(CommandKind::Resume));
    assert_eq!(back.nav_phase(), Some(NavPhase::Cruising));
}

#[test]
fn restart_in_the_air_follows_the_policy() {
    let waiting = setups()
        .into_iter()
        .find(|(n, _)| *n == "waiting_drop")
        .unwrap()
        .1;
    let mut carry_on = Machine::new(Limits::default());
    run(&mut carry_on, &waiting);
    let out = carry_on.handle(&Event::Restarted { airborne: true });
    assert_eq!(carry_on.state(), WaitingDrop);
    assert!(out
        .effects
        .iter()
        .any(|e| matches!(e, Effect::StartTimer(Timer::DropWait, _))));

    let mut go_home = Machine::new(Limits {
        continue_after_restart: false,
        ..Limits::default()
    });
    run(&mut go_home, &waiting);
    go_home.handle(&Event::Restarted { airborne: true });
    assert_eq!(go_home.state(), Aborting);
}

#[test]
fn diagram_covers_every_state() {
    let d = mermaid();
    for s in [
        Idle,
        Preflight,
        Navigating,
        WaitingDrop,
        Dropped,
        Returning,
        Completed,
        Paused,
        Aborting,
        EmergencyLanding,
        Failsafe,
        LandedElsewhere,
    ] {
        assert!(d.contains(&state_name(s)), "{s:?} missing from the diagram");
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
