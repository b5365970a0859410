//! What one frame's JSON costs (issue 14: the relay's CPU per frame is almost all of it).
//!
//! Runs `Envelope::from_slice` (parse) or `Envelope::to_json` (serialise) on one realistic frame
//! in a loop, so callgrind can count the instructions of one call, which does not depend on the
//! load of the shared machine:
//!
//! ```text
//! cargo bench -p protocol --bench json --profile loadtest --no-run   # target/loadtest/deps/json-*
//! protocol/benches/callgrind.sh        # every frame, both directions: instructions per call
//! B=$(ls -t target/loadtest/deps/json-* | grep -v '\.d$' | head -1)
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*json::run_parse*' \
//!     $B telemetry parse 1000          # one of them by hand: the "Collected" total / 1000
//! ```
//!
//! The `loadtest` profile is the relay's benchmark build (release code generation without fat
//! LTO), so these counts compare with the relay's own per-frame profile
//! (docs/notes/issue-14-final.md, session 6). Without arguments
//! (`cargo bench -p protocol --bench json --profile loadtest`), every frame and direction is
//! timed for a rough ns per call (load-dependent: the load average is printed with it).
//!
//! Frames (the bytes as they arrive at the relay from an agent; `serialise` writes the same frame
//! with the relay's `source` stamped on, as `conn::agent_frame` does before forwarding it):
//! - `telemetry`: a drone's 1 Hz telemetry with every field the drone agent fills
//!   (`drone-agent/src/report.rs`), what 19,900 agents send every second;
//! - `event`: a drone event as the agent writes it (id, seq, transition, reason, position);
//! - `locker_response`: a locker's answer to a bridged `cells_open`;
//! - `seed_telemetry`: the seed's telemetry fixture as it is in `tests/fixtures` (pretty-printed,
//!   three payload fields).

use protocol::locker_api::CellsOpenResponse;
use protocol::units::{
    Degrees, Latitude, Longitude, Metres, MetresPerSecond, Percent, Position, Volts,
};
use protocol::ws::{
    DroneState, Event, EventType, FlightStatus, GpsFix, GpsStatus, LockerOutcome, LockerResponse,
    Peer, PeerKind, StorageHealth, Telemetry,
};
use protocol::{Envelope, Message};
use std::hint::black_box;
use std::time::Instant;
use uuid::Uuid;

const FRAMES: &[&str] = &["telemetry", "event", "locker_response", "seed_telemetry"];

fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn unit<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("bench value out of range: {e:?}"))
}

fn position() -> Position {
    Position {
        lat: unit(Latitude::new(55.751_234_5)),
        lon: unit(Longitude::new(37.618_432_1)),
        alt: unit(Metres::new(42.37)),
    }
}

const DELIVERY: Uuid = Uuid::from_u128(0x9b2f6d1e_7c4a_4f3b_8a2d_0e1f2a3b4c5d);

/// The message of each frame, built with the types as the agents build them.
fn message(name: &str) -> Message {
    match name {
        "telemetry" => Message::Telemetry(Telemetry {
            battery_level: unit(Percent::new(73.41)),
            position: position(),
            status: FlightStatus::Flying,
            battery_voltage: Some(unit(Volts::new(15.87))),
            alt_msl: Some(unit(Metres::new(198.62))),
            heading: Some(unit(Degrees::new(181.4))),
            ground_speed: Some(unit(MetresPerSecond::new(11.23))),
            gps: Some(GpsStatus {
                fix: GpsFix::Fix3d,
                satellites: 14,
            }),
            armed: Some(true),
            flight_mode: Some("AUTO".to_owned()),
            state: Some(DroneState::Navigating),
            delivery_id: Some(DELIVERY),
            storage: Some(StorageHealth::Ok),
        }),
        "event" => Message::Event(Event {
            event_type: EventType::Arrived,
            delivery_id: Some(DELIVERY),
            timestamp: at("2026-12-02T16:34:52.123456789Z"),
            event_id: Some(Uuid::from_u128(0x3c9e1f20_5a7b_4d8c_9e0f_112233445566)),
            seq: Some(1_042),
            from_state: Some(DroneState::Navigating),
            to_state: Some(DroneState::WaitingDrop),
            reason: Some("within 1.5 m of the destination marker".to_owned()),
            position: Some(position()),
            cell_id: None,
            cell_uuid: None,
            order_id: None,
        }),
        "locker_response" => Message::LockerResponse(LockerResponse {
            request_id: Uuid::from_u128(0x0f1e2d3c_4b5a_4978_8695_a4b3c2d1e0f9),
            status: 200,
            outcome: LockerOutcome::CellOpened(CellsOpenResponse {
                success: true,
                cell_id: 5,
                opened_at: at("2026-12-02T16:34:52.518Z"),
            }),
        }),
        other => panic!("no frame {other}: one of {FRAMES:?}"),
    }
}

/// The frame's bytes as the agent sends them.
fn wire(name: &str) -> Vec<u8> {
    if name == "seed_telemetry" {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/drone_telemetry.json"
        );
        return std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let mut env = Envelope::new(message(name));
    env.timestamp = Some(at("2026-12-02T16:34:52.987654321Z"));
    env.to_json().into_bytes()
}

/// The envelope the relay serialises: the agent's frame with `source` stamped on.
fn stamped(name: &str) -> Envelope {
    let mut env = Envelope::from_slice(&wire(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    env.source = Some(Peer {
        kind: if name == "locker_response" {
            PeerKind::Locker
        } else {
            PeerKind::Drone
        },
        id: "5d1c3a2b-9e8f-4a7b-8c6d-5e4f3a2b1c0d".to_owned(),
    });
    env
}

#[inline(never)]
fn run_parse(bytes: &[u8], n: u64) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if let Ok(env) = Envelope::from_slice(black_box(bytes)) {
            ok += black_box(env).kind().len();
        }
    }
    ok
}

#[inline(never)]
fn run_serialise(env: &Envelope, n: u64) -> usize {
    let mut len = 0;
    for _ in 0..n {
        len += black_box(black_box(env).to_json()).len();
    }
    len
}

fn one(name: &str, what: &str, n: u64) {
    let started = Instant::now();
    let check = match what {
        "parse" => {
            let bytes = wire(name);
            let started = Instant::now();
            let c = run_parse(&bytes, n);
            report(name, what, n, started, bytes.len());
            c
        }
        "serialise" => {
            let env = stamped(name);
            let bytes = env.to_json().len();
            let started = Instant::now();
            let c = run_serialise(&env, n);
            report(name, what, n, started, bytes);
            c
        }
        other => panic!("no direction {other}: parse or serialise"),
    };
    black_box(check);
    black_box(started);
}

fn report(name: &str, what: &str, n: u64, started: Instant, bytes: usize) {
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!("{name:>16} {what:<9} {bytes:>4} B  {ns:>8.0} ns/call  ({n} calls)");
}

fn main() {
    // `cargo bench` passes `--bench`; anything starting with `-` is cargo's, not ours
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n = |i: usize, default: u64| {
        args.get(i)
            .map(|s| s.parse().unwrap_or_else(|e| panic!("iterations {s}: {e}")))
            .unwrap_or(default)
    };
    match args.as_slice() {
        [] => {
            println!(
                "load average: {}",
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .trim()
            );
            for name in FRAMES {
                for what in ["parse", "serialise"] {
                    one(name, what, 20_000);
                }
            }
        }
        [name, what, ..] => one(name, what, n(2, 1_000)),
        [name] => panic!("usage: json [FRAME parse|serialise [CALLS]] (frame {name})"),
    }
}
