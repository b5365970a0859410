//! The whole delivery, every part a real process: PX4 and ArduPilot flavours, the cloud link
//! dropped mid-flight, relay A of a two-relay cluster killed mid-flight, the locker offline on
//! arrival, a wrong QR code, a QR code used twice.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// A real RabbitMQ on loopback for the cluster variant: the relay tests' own broker module.
#[path = "../../relay/tests/common/broker.rs"]
mod broker;

/// `target/<profile>/`, where cargo put the workspace's binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_owned();
    for bin in ["sim", "relay", "drone-agent", "locker-agent"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
            dir.join(bin).display()
        );
    }
    dir
}

/// Runs `sim demo` with `args`; returns its exit success, the JSON report and the output.
fn demo(args: &[&str]) -> (bool, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let work = dir.path().join("work");
    let out = Command::new(bin_dir().join("sim"))
        .arg("demo")
        // the workspace's binaries are built without OpenCV: the GPS approach
        .arg("--no-camera")
        .args(args)
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--work-dir")
        .arg(&work)
        .arg("--report")
        .arg(&report)
        .args(["--step-timeout-s", "60"])
        .output()
        .expect("sim demo runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report written; output:\n{text}\nlogs in {}",
                work.display()
            )
        });
    if !out.status.success() {
        // keep the logs for whoever reads the failure
        let logs: String = [
            "relay",
            "relay-b",
            "drone-agent",
            "locker-agent",
            "vehicle",
            "lockboard",
        ]
        .iter()
        .map(|l| {
            format!(
                "\n--- {l}.log (tail)\n{}",
                tail(&work.join(format!("{l}.log")))
            )
        })
        .collect();
        return (false, json, text + &logs);
    }
    (true, json, text)
}

fn tail(path: &std::path::Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The events from one source, in order.
fn events(report: &Value, source: &str) -> Vec<String> {
    report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == source)
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

/// `want` appears in `have` in this order (other events may come between).
fn in_order(have: &[String], want: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

const DRONE_HAPPY: &[&str] = &[
    "task_assigned",
    "took_off",
    "arrived",
    "drop_confirmed",
    "return_command",
    "arrived_base",
    "ready",
];
const LOCKER_HAPPY: &[&str] = &[
    "cell_opened",
    "door_opened",
    "door_closed",
    "parcel_loaded",
    "cell_opened",
    "door_opened",
    "door_closed",
    "picked_up",
];

fn assert_delivered(args: &[&str]) -> Value {
    assert_delivered_with_output(args).0
}

/// [`assert_delivered`], with `sim demo`'s output.
fn assert_delivered_with_output(args: &[&str]) -> (Value, String) {
    let (ok, report, text) = demo(args);
    assert!(ok && report["ok"] == true, "delivery failed:\n{text}");
    let drone = events(&report, "drone");
    let locker = events(&report, "locker");
    assert!(
        in_order(&drone, DRONE_HAPPY),
        "drone events out of order: {drone:?}\n{text}"
    );
    assert!(
        in_order(&locker, LOCKER_HAPPY),
        "locker events out of order: {locker:?}\n{text}"
    );
    assert!(
        report["cell_id"]
            .as_u64()
            .is_some_and(|c| (1..=4).contains(&c)),
        "{report}"
    );
    assert!(
        report["distance_m"].as_f64().unwrap() > 500.0,
        "flew out and back: {report}"
    );
    (report, text)
}

#[test]
fn px4_flavour() {
    assert_delivered(&["--flavour", "px4"]);
}

#[test]
fn ardupilot_flavour() {
    assert_delivered(&["--flavour", "ardupilot"]);
}

#[test]
fn cloud_link_dropped_mid_flight() {
    let report = assert_delivered(&["--variant", "cloud-drop"]);
    // every event still arrived once, in order, despite the outage
    let drone = events(&report, "drone");
    assert_eq!(
        drone.iter().filter(|e| *e == "arrived").count(),
        1,
        "{drone:?}"
    );
}

/// Issue 14's failover: relays A and B in one cluster on a real RabbitMQ, the agents with
/// `[cloud] urls = [A, B]`, the backend on B; A is killed with SIGKILL once the drone has taken
/// off. The drone and the locker reconnect to B and the delivery completes; the backend sees every
/// event of each agent once after de-duplication by id, in the order sent, `seq` without a gap.
#[test]
fn relay_killed_mid_flight_agents_fail_over() {
    let amqp = &broker::broker().amqp_url;
    let (report, text) =
        assert_delivered_with_output(&["--variant", "relay-failover", "--amqp-url", amqp]);
    // A was killed while the drone flew, and events came after it: they went through B
    let killed = text
        .find("relay A is killed")
        .unwrap_or_else(|| panic!("relay A was never killed:\n{text}"));
    assert!(
        text[killed..].contains("drone : Arrived"),
        "no drone event after relay A died:\n{text}"
    );
    for source in ["drone", "locker"] {
        let seen: Vec<&Value> = report["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == source)
            .collect();
        let mut ids = std::collections::HashSet::new();
        for e in &seen {
            assert!(
                ids.insert(e["event_id"].as_str().expect("every event has an id")),
                "{source}: an id reported twice: {report}"
            );
        }
        let seqs: Vec<u64> = seen
            .iter()
            .map(|e| e["seq"].as_u64().expect("every event has a seq"))
            .collect();
        // a fresh outbox numbers from 1: the first event is 1 and each next one follows
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(
            seqs, want,
            "{source}: seq out of order or with a gap: {report}"
        );
    }
}

#[test]
fn locker_offline_when_the_drone_arrives() {
    let (ok, report, text) = demo(&["--variant", "locker-offline"]);
    assert!(ok, "{text}");
    let drone = events(&report, "drone");
    assert!(
        in_order(
            &drone,
            &["took_off", "arrived", "drop_timeout", "arrived_base"]
        ),
        "{drone:?}\n{text}"
    );
    assert!(
        !drone.contains(&"drop_confirmed".to_owned()),
        "nothing dropped: {drone:?}"
    );
    assert!(!events(&report, "locker").contains(&"cell_opened".to_owned()));
}

#[test]
fn wrong_qr_code_opens_nothing() {
    let report = assert_delivered(&["--variant", "wrong-qr"]);
    let locker = events(&report, "locker");
    assert!(
        in_order(
            &locker,
            &["parcel_loaded", "qr_rejected", "cell_opened", "picked_up"]
        ),
        "{locker:?}"
    );
    assert_eq!(
        locker.iter().filter(|e| *e == "cell_opened").count(),
        2,
        "{locker:?}"
    );
}

#[test]
fn qr_code_used_twice_opens_once() {
    let report = assert_delivered(&["--variant", "qr-twice"]);
    let locker = events(&report, "locker");
    assert_eq!(
        locker.iter().filter(|e| *e == "cell_opened").count(),
        2,
        "drop and one pickup only: {locker:?}"
    );
}

/// The lock board's own firmware (`locker-agent/firmware/`) on an emulated AVR in place of the
/// Rust sim: the locker agent opens and locks real AVR machine code's bolts. Without the AVR
/// toolchain or simavr this says so and passes locally; in CI (`CI=true`) it fails.
#[test]
fn with_the_lock_board_firmware() {
    let firmware =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../locker-agent/firmware");
    let built = Command::new("make").arg("-C").arg(&firmware).output();
    let ok = matches!(&built, Ok(o) if o.status.success());
    if !ok {
        let why = match &built {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot build the lock board firmware and harness:\n{why}"
        );
        eprintln!("SKIPPED (fails in CI): cannot build the lock board firmware: {why}");
        return;
    }
    assert_delivered(&["--board", "firmware"]);
}
