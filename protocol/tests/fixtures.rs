//! Every golden message from the seed parses into the right type and serialises back to an
//! equivalent JSON value.

use protocol::broker::DeliveryTask;
use protocol::locker_api::{
    ApiErrorResponse, CellsOpenRequest, CellsOpenResponse, GrpcCellOpenRequest,
};
use protocol::ws::{AckStatus, CommandKind, EventType, Peer, PeerKind, Priority};
use protocol::{Envelope, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses as `T`, serialises again and compares JSON values.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let text = read(name);
    let value: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    let again = serde_json::to_value(&value).unwrap();
    assert_eq!(again, original, "{name} does not round-trip");
    value
}

fn envelope(name: &str) -> Envelope {
    let env = Envelope::from_json(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    // through the Deserialize impl too, with the same result
    let via_serde: Envelope = round_trip(name);
    assert_eq!(env, via_serde);
    env
}

#[test]
fn drone_register() {
    let Message::Register(r) = envelope("drone_register.json").message else {
        panic!("not register")
    };
    assert_eq!(r.model, "Clover 4");
    assert_eq!(r.battery_level.get(), 95.5);
}

#[test]
fn drone_telemetry() {
    let Message::Telemetry(t) = envelope("drone_telemetry.json").message else {
        panic!("not telemetry")
    };
    assert_eq!(t.position.lat.get(), 55.7558);
    assert_eq!(t.position.alt.get(), 10.5);
}

#[test]
fn drone_events() {
    for (file, kind, stamped) in [
        ("drone_event_arrived.json", EventType::Arrived, true),
        (
            "drone_event_drop_confirmed.json",
            EventType::DropConfirmed,
            false,
        ),
        (
            "drone_event_arrived_base.json",
            EventType::ArrivedBase,
            false,
        ),
    ] {
        let env = envelope(file);
        assert_eq!(env.timestamp.is_some(), stamped, "{file}");
        let Message::Event(e) = env.message else {
            panic!("{file}: not an event")
        };
        assert_eq!(e.event_type, kind);
        assert!(e.delivery_id.is_some());
    }
}

#[test]
fn cloud_task() {
    let Message::Task(t) = envelope("cloud_task.json").message else {
        panic!("not task")
    };
    assert_eq!(t.destination.aruco_id, 123);
    assert_eq!(t.priority, Priority::Normal);
}

#[test]
fn cloud_commands() {
    for (file, kind, has_id) in [
        (
            "cloud_command_drop_cargo.json",
            CommandKind::DropCargo,
            false,
        ),
        (
            "cloud_command_return_to_base.json",
            CommandKind::ReturnToBase,
            false,
        ),
        ("cloud_command_pause.json", CommandKind::Pause, true),
    ] {
        let Message::Command(c) = envelope(file).message else {
            panic!("{file}: not a command")
        };
        assert_eq!(c.command, kind);
        assert_eq!(c.cmd_id.is_some(), has_id);
    }
}

#[test]
fn mission_seed_action_alias() {
    let text = r#"{"type":"command","payload":{"action":"abort","cmd_id":"3c9e1f20-5a7b-4d8c-9e0f-112233445566"}}"#;
    let Message::Command(c) = Envelope::from_json(text).unwrap().message else {
        panic!()
    };
    assert_eq!(c.command, CommandKind::Abort);
}

#[test]
fn drone_command_ack() {
    let Message::Ack(a) = envelope("drone_command_ack.json").message else {
        panic!("not ack")
    };
    assert_eq!(a.status, AckStatus::Executed);
}

#[test]
fn broker_task() {
    let t: DeliveryTask = round_trip("broker_delivery_task.json");
    assert_eq!(t.to_task().destination.aruco_id, 123);
}

#[test]
fn locker_api_bodies() {
    let _: CellsOpenRequest = round_trip("locker_cells_open_request.json");
    let r: CellsOpenResponse = round_trip("locker_cells_open_response.json");
    assert_eq!(r.cell_id, 5);
    let e: ApiErrorResponse = round_trip("api_error_response.json");
    assert_eq!(e.error.code, "ORDER_NOT_FOUND");
    let _: GrpcCellOpenRequest = round_trip("grpc_cell_open_request.json");
}

/// Every envelope among the fixtures (ours and the extensions'): `to_json`, which writes the
/// payload without a `serde_json::Value`, gives the bytes the `Serialize` impl gives through one,
/// as it is and with the relay's `source` stamped on; and `from_json` (one pass when `type` comes
/// first) reads what the `Deserialize` impl (two steps) reads.
#[test]
fn to_json_and_from_json_agree_with_the_value_path_on_every_fixture() {
    let mut envelopes = 0;
    for dir in [fixtures_dir(), fixtures_dir().join("../extensions")] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if value.get("type").is_none() {
                continue; // an HTTP body or a broker task, not a frame
            }
            let name = path.display();
            let mut env = Envelope::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let via_serde: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!(env, via_serde, "{name}");
            assert_eq!(
                env.to_json(),
                serde_json::to_string(&env).unwrap(),
                "{name}"
            );
            env.source = Some(Peer {
                kind: PeerKind::Drone,
                id: "9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d".into(),
            });
            assert_eq!(
                env.to_json(),
                serde_json::to_string(&env).unwrap(),
                "{name}"
            );
            envelopes += 1;
        }
    }
    assert!(
        envelopes >= 10,
        "only {envelopes} envelopes among the fixtures"
    );
}

/// Where the seed's shared fixtures are: `$SKYPOST_SHARED/fixtures/protocol` when that is set,
/// else `shared/fixtures/protocol` in the nearest folder above this crate that has one (beside
/// the checkout in CI, `/work/shared` for a checkout or worktree anywhere under `/work`).
fn shared_fixtures_dir() -> Result<PathBuf, String> {
    if let Some(root) = std::env::var_os("SKYPOST_SHARED") {
        return Ok(PathBuf::from(root).join("fixtures/protocol"));
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/fixtures/protocol"))
        .find(|d| d.is_dir())
        .ok_or_else(|| {
            format!(
                "no shared/fixtures/protocol in any folder above {}: the seed's fixtures must be \
                 checked out beside this repository (CI has them), or SKYPOST_SHARED set to them",
                here.display()
            )
        })
}

/// Our copies are the seed's: every file in the shared fixtures must be here, byte for byte.
/// Missing shared fixtures fail the test (they used to skip it, which checked nothing).
#[test]
fn copies_match_shared_fixtures() {
    let shared = shared_fixtures_dir().unwrap_or_else(|e| panic!("{e}"));
    let entries = std::fs::read_dir(&shared)
        .unwrap_or_else(|e| panic!("cannot read the shared fixtures {}: {e}", shared.display()));
    let mut compared = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let ours = std::fs::read(fixtures_dir().join(&name)).unwrap_or_else(|_| {
            panic!("shared fixture {name} has no copy in protocol/tests/fixtures")
        });
        assert_eq!(
            ours,
            std::fs::read(&path).unwrap(),
            "{name} differs from the shared copy"
        );
        compared += 1;
    }
    assert!(compared > 0, "{} holds no fixtures", shared.display());
    eprintln!("{compared} fixtures match {}", shared.display());
}
