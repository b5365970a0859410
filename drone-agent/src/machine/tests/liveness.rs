//! Liveness, proved rather than hoped: every state the machine can reach (and every variant a
//! state file can hold: parcel on board or not, left the ground or not, a release under way,
//! each approach attempt count), under every event the world can send — each flight
//! operation's refusal included — must be able to reach IDLE by events the world produces by
//! itself. The one human step allowed is the technician's `ready` after landing away. And no
//! state may repeat a flight operation without bound while the autopilot keeps refusing it.
//!
//! Timers are modelled: a timer fires only while it runs (started and not cancelled; a restart
//! stops them all), so a state that waits on a timer nobody started is caught.

use super::super::*;
use super::delivery;
use protocol::ws::{CommandKind, DroneState};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

#[derive(Clone)]
struct Node {
    m: Machine,
    timers: BTreeSet<Timer>,
}

impl Node {
    /// A cheap hash of what tells nodes apart most often (the state's variant, the storage's
    /// flags and counters, the timers): [`Node::same`] decides within a bucket. The explorer
    /// looks nodes up tens of millions of times; formatting the key each time was most of this
    /// test's time.
    fn bucket(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::hash::DefaultHasher::new();
        std::mem::discriminant(self.m.raw_state()).hash(&mut h);
        let d = self.m.drone();
        (
            d.delivery.is_some(),
            d.parcel_on_board,
            d.nav_attempts,
            d.releasing,
            d.left_ground,
            d.flight.is_some(),
            d.cloud_down,
            d.testing,
            d.drop_wait_cut_s,
            d.storage_failed.is_some(),
            d.approach.is_some(),
            d.camera_fault.is_some(),
        )
            .hash(&mut h);
        self.timers.hash(&mut h);
        h.finish()
    }

    /// The same node as far as the machine can tell: what [`Node::key`] shows, compared field
    /// by field.
    fn same(&self, o: &Node) -> bool {
        self.m.raw_state() == o.m.raw_state()
            && self.timers == o.timers
            && self.m.drone() == o.m.drone()
            // the last energy reading decides only the pre-flight check
            && (self.m.state() != DroneState::Preflight
                || self.m.energy_reading() == o.m.energy_reading())
    }

    /// The node as text, for messages (lookups use [`Node::bucket`] and [`Node::same`]).
    fn key(&self) -> String {
        // the last energy reading decides only the pre-flight check: part of the key there
        let energy = match self.m.state() {
            DroneState::Preflight => format!("{:?}", self.m.energy_reading()),
            _ => String::new(),
        };
        format!(
            "{:?}|{:?}|{:?}{energy}",
            self.m.raw_state(),
            self.m.drone(),
            self.timers
        )
    }
}

/// Everything the world can send, whatever the state (timers: only running ones).
fn world_events(n: &Node) -> Vec<Event> {
    use CommandKind::*;
    let mut v = vec![
        Event::Task(delivery()),
        Event::PreflightPassed,
        Event::PreflightFailed("gps: no fix".into()),
        Event::LeftGround,
        Event::ClimbComplete,
        Event::OverDestination,
        Event::AtDropHeight,
        // the precision approach: frames (the task's marker off-centre high up, centred at the
        // drop height, another marker, nothing) and its clock (start, and long past any timeout)
        super::frame(0.0, Some(delivery().aruco_id), 3.0, 10.0),
        super::frame(0.0, Some(delivery().aruco_id), 0.0, 4.0),
        super::frame(0.0, Some(9), 0.0, 4.0),
        super::frame(0.0, None, 0.0, 4.0),
        Event::ApproachTick { now_s: 0.0 },
        Event::ApproachTick { now_s: 1000.0 },
        Event::ReleaseDone,
        Event::ReleaseFailed("servo did not move".into()),
        Event::PayloadRead(PayloadReading::Released),
        Event::PayloadRead(PayloadReading::Closed),
        Event::PayloadRead(PayloadReading::Unknown),
        Event::LandedAtHome,
        Event::LandedAway,
        Event::BatteryLow("24 %".into()),
        Event::BatteryCritical("9 %".into()),
        Event::GpsLost,
        Event::GpsRestored,
        Event::FcLinkLost,
        Event::FcLinkRestored(Vehicle::Airborne),
        Event::FcLinkRestored(Vehicle::OnGround { at_home: true }),
        Event::FcLinkRestored(Vehicle::OnGround { at_home: false }),
        Event::CloudDown,
        Event::CloudUp,
        Event::AutopilotTookOver {
            mode: "RTL".into(),
            reason: "Battery Failsafe".into(),
        },
        Event::PilotOverride {
            who: "ground station `qgc`".into(),
            what: "mode LOITER".into(),
        },
        Event::PilotHandBack {
            mode: "GUIDED".into(),
        },
        Event::Restarted(Vehicle::Airborne),
        Event::Restarted(Vehicle::OnGround { at_home: true }),
        Event::Restarted(Vehicle::OnGround { at_home: false }),
        Event::Restarted(Vehicle::Unreachable),
        Event::Recovered,
        Event::TechnicianReady {
            armed: false,
            in_air: false,
        },
        Event::TechnicianReady {
            armed: true,
            in_air: false,
        },
        Event::TestRelease,
        Event::TestReleaseDone,
    ];
    // A failed write changes nothing but a flag and a report in the air (see
    // `storage_failure_in_the_air_changes_nothing_but_a_report`); on the ground it refuses
    // tasks. Sent on the ground only: in the air it would double the states explored for nothing.
    if !n.m.airborne() {
        v.push(Event::StorageFailed("No space left on device".into()));
        v.push(Event::StorageRestored("all stored".into()));
    }
    // The camera matters to the approach only (its start and its course); elsewhere a fault is
    // a flag and a report, and sending it everywhere would double the states for nothing.
    if n.m.state() == DroneState::Navigating {
        v.push(Event::CameraFault("no frame for 2 s".into()));
        v.push(Event::CameraRestored);
    }
    // the autopilot's numbers: plenty for anything, and too little for the way home (sent where
    // they can matter: before the take-off and in the air)
    if n.m.airborne() || n.m.state() == DroneState::Preflight {
        v.push(super::energy_reading(100.0, 0.0));
        v.push(super::energy_reading(5.0, 1400.0));
    }
    for c in [DropCargo, ReturnToBase, Pause, Resume, Abort, ReturnToHome] {
        v.push(Event::Command(c));
    }
    for op in OPS {
        for transient in [false, true] {
            v.push(refusal(op, transient));
        }
    }
    v.extend(n.timers.iter().map(|t| Event::TimerFired(*t)));
    v
}

const OPS: [FlightOp; 6] = [
    FlightOp::Takeoff,
    FlightOp::Goto,
    FlightOp::HoverAt,
    FlightOp::Hold,
    FlightOp::ReturnHome,
    FlightOp::LandNow,
];

fn refusal(op: FlightOp, transient: bool) -> Event {
    Event::FlightOpFailed {
        op,
        why: "refused".into(),
        transient,
    }
}

/// May an escape from a stuck state use this event? The world's events, the runtime's own
/// `ready` after COMPLETED, and the technician's `ready` (the one human step) — not a crash,
/// not a technician's test.
fn counts_for_liveness(e: &Event) -> bool {
    !matches!(
        e,
        Event::Restarted(_) | Event::TestRelease | Event::TechnicianReady { armed: true, .. }
    )
}

fn step(n: &Node, e: &Event) -> (Node, Outcome) {
    let mut next = n.clone();
    match e {
        Event::TimerFired(t) => {
            next.timers.remove(t);
        }
        Event::Restarted(_) => {
            // a new process: the state file, no timers
            next.timers.clear();
            next.m = Machine::from_json(next.m.to_json(), next.m.limits().clone())
                .expect("state file reloads");
        }
        _ => {}
    }
    let out = next.m.handle(e);
    for eff in &out.effects {
        match eff {
            Effect::StartTimer(t, _) => {
                next.timers.insert(*t);
            }
            Effect::CancelTimer(t) => {
                next.timers.remove(t);
            }
            _ => {}
        }
    }
    (next, out)
}

/// Every variant a state file can hold for the state `n` is in: parcel, left the ground,
/// release under way, approach attempts.
fn persisted_variants(n: &Node, max_nav_attempts: u32) -> Vec<Node> {
    let mut out = vec![];
    let json = n.m.to_json();
    for parcel in [false, true] {
        for left in [false, true] {
            for releasing in [false, true] {
                for attempts in 0..max_nav_attempts {
                    let mut j = json.clone();
                    let Some(inner) = find_storage(&mut j) else {
                        panic!("no storage in {json}")
                    };
                    inner["parcel_on_board"] = parcel.into();
                    inner["left_ground"] = left.into();
                    inner["releasing"] = releasing.into();
                    inner["nav_attempts"] = attempts.into();
                    if let Ok(m) = Machine::from_json(j, n.m.limits().clone()) {
                        out.push(Node {
                            m,
                            timers: BTreeSet::new(),
                        });
                    }
                }
            }
        }
    }
    out
}

fn find_storage(v: &mut serde_json::Value) -> Option<&mut serde_json::Value> {
    if v.get("parcel_on_board").is_some() {
        return Some(v);
    }
    match v {
        serde_json::Value::Object(map) => map.values_mut().find_map(find_storage),
        _ => None,
    }
}

struct Explored {
    nodes: Vec<Node>,
    /// (from, event index into `events`, to), with the event's liveness flag.
    edges: Vec<(usize, bool, usize)>,
    transitions: BTreeSet<(u8, &'static str, u8)>,
}

fn explore(limits: &Limits) -> Explored {
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut nodes: Vec<Node> = vec![];
    let mut queue = VecDeque::new();
    let mut push = |n: Node, nodes: &mut Vec<Node>, queue: &mut VecDeque<usize>| -> usize {
        let bucket = index.entry(n.bucket()).or_default();
        if let Some(&i) = bucket.iter().find(|&&i| nodes[i].same(&n)) {
            return i;
        }
        let i = nodes.len();
        bucket.push(i);
        nodes.push(n);
        queue.push_back(i);
        i
    };
    push(
        Node {
            m: Machine::new(limits.clone()),
            timers: BTreeSet::new(),
        },
        &mut nodes,
        &mut queue,
    );
    let mut edges = vec![];
    let mut transitions = BTreeSet::new();
    let mut seeded: HashSet<String> = HashSet::new();
    while let Some(i) = queue.pop_front() {
        let n = nodes[i].clone();
        // every state also as a state file may hold it
        let state_key = format!("{:?}", n.m.raw_state());
        if seeded.insert(state_key) {
            for v in persisted_variants(&n, limits.max_nav_attempts) {
                push(v, &mut nodes, &mut queue);
            }
        }
        // `[restart] unknown_airborne`: every policy's edge from a ground state, not only this
        // run's (the states they lead to are explored under this run's limits).
        let mut events: Vec<(Event, Option<UnknownAirborne>)> =
            world_events(&n).into_iter().map(|e| (e, None)).collect();
        if !n.m.airborne() {
            for p in [
                UnknownAirborne::ReturnHome,
                UnknownAirborne::Land,
                UnknownAirborne::Hold,
            ] {
                if p != limits.unknown_airborne {
                    events.push((Event::Restarted(Vehicle::Airborne), Some(p)));
                }
            }
        }
        for (e, policy) in events {
            let (next, out) = match policy {
                None => step(&n, &e),
                Some(unknown_airborne) => {
                    let with = Limits {
                        unknown_airborne,
                        ..limits.clone()
                    };
                    let mut other = n.clone();
                    other.m = Machine::from_json(n.m.to_json(), with).expect("reloads");
                    let (mut next, out) = step(&other, &e);
                    next.m = Machine::from_json(next.m.to_json(), limits.clone()).expect("reloads");
                    (next, out)
                }
            };
            if let Some((from, to)) = out.transition {
                transitions.insert((from as u8, e.name(), to as u8));
                assert!(
                    matches!(out.effects.first(), Some(Effect::Report { .. }))
                        || (from, to) == (DroneState::Preflight, DroneState::Navigating),
                    "{from:?} --{}--> {to:?} without a report: {out:?}",
                    e.name()
                );
            }
            // most events leave the node as it was: no lookup
            let j = if next.same(&n) {
                i
            } else {
                push(next, &mut nodes, &mut queue)
            };
            edges.push((i, counts_for_liveness(&e), j));
        }
    }
    Explored {
        nodes,
        edges,
        transitions,
    }
}

/// Nodes from which IDLE can be reached over edges allowed for liveness.
fn can_reach_idle(x: &Explored) -> Vec<bool> {
    let mut back: Vec<Vec<usize>> = vec![vec![]; x.nodes.len()];
    for &(from, ok, to) in &x.edges {
        if ok {
            back[to].push(from);
        }
    }
    let mut good = vec![false; x.nodes.len()];
    let mut queue: VecDeque<usize> = (0..x.nodes.len())
        .filter(|i| x.nodes[*i].m.state() == DroneState::Idle)
        .collect();
    for i in &queue {
        good[*i] = true;
    }
    while let Some(i) = queue.pop_front() {
        for &p in &back[i] {
            if !good[p] {
                good[p] = true;
                queue.push_back(p);
            }
        }
    }
    good
}

/// From `n`, the autopilot refuses whatever flight operation is current, every time, and
/// every retry timer fires: how many flight operations go out, and how many refusal reports?
fn storm(n: &Node) -> (usize, usize, String) {
    let mut n = n.clone();
    let (mut flights, mut refusal_reports) = (0, 0);
    let mut seen: Vec<Node> = Vec::new();
    for _ in 0..1000 {
        if seen.iter().any(|s| s.same(&n)) {
            return (usize::MAX, refusal_reports, format!("loops at {}", n.key()));
        }
        seen.push(n.clone());
        let event = if let Some(cmd) = n.m.drone().flight {
            refusal(cmd.fly.op(), true)
        } else if n.timers.contains(&Timer::FlightRetry) {
            Event::TimerFired(Timer::FlightRetry)
        } else {
            break;
        };
        let (next, out) = step(&n, &event);
        refusal_reports += out
            .reports()
            .filter(|(e, _)| *e == protocol::ws::EventType::FlightOpRefused)
            .count();
        n = next;
        if n.timers.contains(&Timer::FlightRetry) {
            let (next, out) = step(&n, &Event::TimerFired(Timer::FlightRetry));
            flights += out.flights().count();
            n = next;
        }
    }
    (flights, refusal_reports, String::new())
}

fn check(limits: Limits, label: &str) -> BTreeSet<(u8, &'static str, u8)> {
    let x = explore(&limits);
    let good = can_reach_idle(&x);
    let stuck: Vec<_> = x
        .nodes
        .iter()
        .zip(&good)
        .filter(|(_, g)| !**g)
        .map(|(n, _)| n.key())
        .collect();
    eprintln!(
        "liveness [{label}]: {} states, {} edges explored, {} distinct transitions; {} cannot reach IDLE",
        x.nodes.len(),
        x.edges.len(),
        x.transitions.len(),
        stuck.len()
    );
    assert!(
        stuck.is_empty(),
        "{} state(s) cannot reach IDLE, e.g.:\n{}",
        stuck.len(),
        stuck.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    // Each operation is asked at most 1 + retries times before the machine moves on, and the
    // chain of give-ups (goto → home → land) is at most as long as the kinds of operation.
    let bound = OPS.len() * (limits.flight_op_retries as usize + 1);
    let mut worst = 0;
    for n in &x.nodes {
        let (flights, reports, why) = storm(n);
        assert!(
            flights <= bound,
            "a refused operation is repeated without bound from {}: {why}",
            n.key()
        );
        assert!(
            reports <= OPS.len(),
            "refusals reported per retry from {}",
            n.key()
        );
        worst = worst.max(flights);
    }
    eprintln!("liveness [{label}]: at most {worst} flight operations under refusal everywhere (bound {bound})");
    x.transitions
}

#[test]
fn every_reachable_state_can_reach_idle_and_no_refusal_storms() {
    // both restart policies and both take-back settings, one thread each (each run also takes
    // every `unknown_airborne` policy's edges, see `explore`)
    let seen: BTreeSet<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = [
            (true, None, UnknownAirborne::ReturnHome),
            (false, Some(std::time::Duration::from_secs(60)), UnknownAirborne::Hold),
        ]
        .into_iter()
        .map(|(continue_after_restart, take_back, unknown_airborne)| {
            scope.spawn(move || {
                // the precision approach in both runs, with and without the GPS fallback
                let limits = Limits {
                    continue_after_restart,
                    take_back_after: take_back,
                    unknown_airborne,
                    ..super::with_precision(!continue_after_restart)
                };
                let label = format!(
                    "continue_after_restart={continue_after_restart}, take_back={take_back:?}, unknown_airborne={unknown_airborne:?}"
                );
                check(limits, &label)
            })
        })
        .collect();
        runs.into_iter()
            .flat_map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // The table is the truth: every transition made is listed, every listed one is made.
    let listed: BTreeSet<_> = TRANSITIONS
        .iter()
        .map(|t| (t.from as u8, t.on, t.to as u8))
        .collect();
    let name = |s: u8| {
        DroneState::ALL
            .into_iter()
            .find(|d| *d as u8 == s)
            .map(|d| format!("{d:?}"))
            .unwrap_or_default()
    };
    let missing: Vec<_> = seen
        .difference(&listed)
        .map(|(f, on, t)| format!("    t({}, \"{on}\", {}),", name(*f), name(*t)))
        .collect();
    let never: Vec<_> = listed
        .difference(&seen)
        .map(|(f, on, t)| format!("    t({}, \"{on}\", {}),", name(*f), name(*t)))
        .collect();
    if std::env::var_os("LIVENESS_DUMP_TABLE").is_some() {
        for (f, on, t) in &seen {
            println!("    t({}, \"{on}\", {}),", name(*f), name(*t));
        }
    }
    assert!(
        missing.is_empty() && never.is_empty(),
        "TRANSITIONS is out of date.\nmade but not listed:\n{}\nlisted but never made:\n{}",
        missing.join("\n"),
        never.join("\n")
    );
}
