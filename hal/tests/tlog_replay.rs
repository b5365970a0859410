//! Real ArduCopter 4.7 SITL streams (`tests/fixtures/mavlink/*.tlog`, copies of
//! `../shared/fixtures/mavlink`) replayed through the hal's receive path: a TCP server plays the
//! recorded frames to a `MavlinkFc` connected with `tcpout:`, exactly as a SITL's port would.
//!
//! The replay is stepped, not timed: the server sends frames up to a chosen one and stops there, the
//! test waits until the hal's snapshot shows that frame (frames on one TCP stream are handled in
//! order), and then asserts what the hal made of everything before it. No pacing, no sleeps.

use hal::flight::mavlink::MavlinkFc;
use hal::flight::{
    BatteryChargeState, FcError, FcLinkConfig, FcSnapshot, FlightController, GripperAction,
    Severity,
};
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::MavMessage;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mavlink")
}

/// One recorded message: the raw MAVLink 2 frame (the recorder's stamp is not replayed: the
/// replay is stepped).
struct Frame {
    raw: Vec<u8>,
    msg: Option<MavMessage>,
}

/// Splits a tlog: per message an 8-byte big-endian µs stamp, then one MAVLink 2 frame.
fn read_tlog(name: &str) -> Vec<Frame> {
    let data = std::fs::read(fixtures().join(name)).unwrap();
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 8 < data.len() {
        i += 8;
        assert_eq!(
            data[i], 0xFD,
            "{name}: MAVLink 2 frame expected at byte {i}"
        );
        let len = usize::from(data[i + 1]);
        let signed = data[i + 2] & 1 == 1;
        let n = 12 + len + if signed { 13 } else { 0 };
        let raw = data[i..i + n].to_vec();
        let mut r = mavlink::MavlinkReader::new(&raw[..]);
        let msg = r.read_any_message::<MavMessage>().ok().map(|(_, m)| m);
        frames.push(Frame { raw, msg });
        i += n;
    }
    frames
}

fn status_text(f: &Frame) -> Option<String> {
    match &f.msg {
        Some(MavMessage::STATUSTEXT(t)) => Some(t.text.to_str().unwrap_or("").trim().to_owned()),
        _ => None,
    }
}

/// The index of the first frame at or after `from` that satisfies `pred`.
fn find(frames: &[Frame], from: usize, pred: impl Fn(&Frame) -> bool) -> usize {
    frames[from..]
        .iter()
        .position(pred)
        .map(|i| i + from)
        .expect("frame not in the recording")
}

fn find_text(frames: &[Frame], from: usize, text: &str) -> usize {
    find(frames, from, |f| status_text(f).as_deref() == Some(text))
}

/// The recorded autopilot's port, played step by step.
struct Replay {
    fc: Arc<MavlinkFc>,
    stream: TcpStream,
    frames: Vec<Frame>,
    next: usize,
}

impl Replay {
    async fn start(name: &str) -> Replay {
        Self::start_with(name, |_| {}).await
    }

    async fn start_with(name: &str, tweak: impl FnOnce(&mut FcLinkConfig)) -> Replay {
        let frames = read_tlog(name);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = FcLinkConfig::new(
            format!("tcpout:{}", listener.local_addr().unwrap())
                .parse()
                .unwrap(),
        );
        cfg.heartbeat_timeout_ms = 5000;
        cfg.command_timeout_ms = 200;
        cfg.command_retries = 1;
        tweak(&mut cfg);
        let fc = MavlinkFc::start(cfg);
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        Replay {
            fc,
            stream,
            frames,
            next: 0,
        }
    }

    /// Sends every frame up to and including `last`.
    async fn play_through(&mut self, last: usize) {
        let mut buf = Vec::new();
        for f in &self.frames[self.next..=last] {
            buf.extend_from_slice(&f.raw);
        }
        self.stream.write_all(&buf).await.unwrap();
        self.next = last + 1;
    }

    /// Plays up to the STATUSTEXT at `index` and waits until the hal has taken it in: the snapshot
    /// then reflects every frame before it.
    async fn play_to_text(&mut self, index: usize) -> FcSnapshot {
        let text = status_text(&self.frames[index]).expect("a STATUSTEXT frame");
        self.play_through(index).await;
        self.fc
            .wait_for(WAIT, |s| {
                s.last_status_text.as_deref() == Some(text.as_str())
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "the hal never showed {text:?}; snapshot {:#?}",
                    *self.fc.snapshot().borrow()
                )
            })
    }
}

/// The copies beside the tests are the shared recordings, byte for byte (where the shared folder is
/// beside the checkout).
#[test]
fn copies_match_the_shared_recordings() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/mavlink");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        eprintln!(
            "no {} beside this checkout; comparing skipped",
            shared.display()
        );
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let ours = std::fs::read(fixtures().join(&name)).unwrap_or_else(|_| {
            panic!("shared recording {name} has no copy in hal/tests/fixtures")
        });
        assert!(ours == std::fs::read(&path).unwrap(), "{name} differs");
    }
}

#[tokio::test]
async fn servo9_is_read_from_the_extension_fields_of_port_0() {
    let mut r = Replay::start("ardupilot-servo9.tlog").await;
    let frames = &r.frames;
    // the recording really has it where the issue says: port 0, extension field, no port 1
    let servo9 = find(
        frames,
        0,
        |f| matches!(&f.msg, Some(MavMessage::SERVO_OUTPUT_RAW(o)) if o.servo9_raw == 1900),
    );
    assert!(!frames.iter().any(|f| matches!(
        &f.msg,
        Some(MavMessage::SERVO_OUTPUT_RAW(o)) if o.port != 0
    )));
    let before = find_text(frames, 0, "Arming motors");
    assert!(before < servo9);
    let s = r.play_to_text(before).await;
    let outs = s.servo_outputs_us.expect("servo outputs");
    assert_eq!(outs[8], 0, "output 9 not yet driven: {outs:?}");
    // output 8 carries the gripper, grabbed
    assert_eq!(outs[7], 1900);

    let landed = find_text(&r.frames, servo9, "SIM Hit ground at 0.504416 m/s");
    let s = r.play_to_text(landed).await;
    let outs = s.servo_outputs_us.expect("servo outputs");
    assert_eq!(outs[8], 1900, "servo9_raw on port 0: {outs:?}");
    assert!(outs[9..].iter().all(|v| *v == 0), "{outs:?}");
}

/// ArduPilot answers every GCS on a link: the recording holds its ACKs to the recorder (255/190).
/// One of them for the very command we are waiting on must not answer ours.
#[tokio::test]
async fn an_ack_addressed_to_another_gcs_is_not_taken_for_ours() {
    let mut r = Replay::start_with("ardupilot-servo9.tlog", |c| {
        // long enough that only an ACK can end the wait
        c.command_timeout_ms = 3000;
        c.command_retries = 0;
    })
    .await;
    let foreign = find(&r.frames, 0, |f| {
        matches!(&f.msg, Some(MavMessage::COMMAND_ACK(a))
            if a.command == apm::MavCmd::MAV_CMD_DO_GRIPPER)
    });
    let Some(MavMessage::COMMAND_ACK(ack)) = &r.frames[foreign].msg else {
        unreachable!()
    };
    assert_eq!((ack.target_system, ack.target_component), (255, 190));
    assert_eq!(ack.result, apm::MavResult::MAV_RESULT_ACCEPTED);
    // up to just before the recorded ACK, then our own DO_GRIPPER
    r.play_through(foreign - 1).await;
    r.fc.wait_for(WAIT, |s| s.link.is_connected())
        .await
        .expect("link up");
    let fc = r.fc.clone();
    let gripper = tokio::spawn(async move { fc.set_gripper(GripperAction::Release).await });
    // wait until the command is on the wire (the autopilot side reads it), then play the foreign
    // ACK and after it an ACK of our own that refuses
    let (read, _write) = r.stream.split();
    let mut reader = mavlink::AsyncMavlinkReader::new(read);
    loop {
        let (_, m) = tokio::time::timeout(WAIT, reader.read_any_message::<MavMessage>())
            .await
            .unwrap()
            .unwrap();
        if matches!(&m, MavMessage::COMMAND_LONG(c) if c.command == apm::MavCmd::MAV_CMD_DO_GRIPPER)
        {
            break;
        }
    }
    drop(reader);
    r.play_through(foreign).await;
    let ours = MavMessage::COMMAND_ACK(apm::COMMAND_ACK_DATA {
        command: apm::MavCmd::MAV_CMD_DO_GRIPPER,
        result: apm::MavResult::MAV_RESULT_DENIED,
        target_system: 1,
        target_component: 191,
        ..Default::default()
    });
    let mut frame = Vec::new();
    mavlink::write_v2_msg(
        &mut frame,
        mavlink::MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 0,
        },
        &ours,
    )
    .unwrap();
    r.stream.write_all(&frame).await.unwrap();
    let result = tokio::time::timeout(WAIT, gripper).await.unwrap().unwrap();
    assert!(
        matches!(
            result,
            Err(FcError::Denied {
                command: "MAV_CMD_DO_GRIPPER",
                ..
            })
        ),
        "the recorder's ACCEPTED was taken for ours: {result:?}"
    );
}

/// ArduPilot's start-up: GPS fix and home seconds before the EKF navigates by them. The hal must
/// show the gap (position estimate not usable, pre-flight failing on it) and its end.
#[tokio::test]
async fn the_ekf_start_up_is_seen_as_no_position_estimate_until_it_uses_gps() {
    let mut r = Replay::start("ardupilot-servo9.tlog").await;
    let origin = find_text(&r.frames, 0, "EKF3 IMU1 origin set");
    let s = r.play_to_text(origin).await;
    assert!(s.gps_fix.is_3d(), "{:?}", s.gps_fix);
    assert!(s.home.is_some(), "home is set with the origin");
    assert_eq!(s.position_estimate, Some(false));
    let report = r.fc.preflight_check(30.0).await.unwrap();
    let position = report.checks.iter().find(|c| c.name == "position").unwrap();
    assert!(!position.passed, "{report:#?}");
    assert!(!report.passed());

    let using_gps = find_text(&r.frames, origin, "EKF3 IMU1 is using GPS");
    let arming = find_text(&r.frames, using_gps, "Arming motors");
    let s = r.play_to_text(arming).await;
    assert_eq!(s.position_estimate, Some(true));
    assert!(s.healthy, "{:?}", s.health_failures);
}

/// The early-task run: ArduPilot's pre-arm bit was healthy and arming in STABILIZE succeeded while
/// the EKF had no position; then every position mode was refused. The hal sees the estimate
/// missing, and delivers the refusal in the autopilot's words.
#[tokio::test]
async fn the_early_task_run_shows_no_position_while_pre_arm_passes() {
    let mut r = Replay::start("ardupilot-early-task.tlog").await;
    let mut messages = r.fc.autopilot_messages();
    let arming = find_text(&r.frames, 0, "Arming motors");
    let s = r.play_to_text(arming).await;
    assert_eq!(s.position_estimate, Some(false));
    let report = r.fc.preflight_check(30.0).await.unwrap();
    let check = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap();
    assert!(
        check("armable").passed,
        "the pre-arm bit is healthy: {report:#?}"
    );
    assert!(!check("position").passed, "{report:#?}");

    let refused = find_text(
        &r.frames,
        arming,
        "Mode change to GUIDED failed: requires position",
    );
    r.play_to_text(refused).await;
    let mut seen = Vec::new();
    while let Ok(m) = messages.try_recv() {
        seen.push((m.severity, m.text));
    }
    assert!(
        seen.contains(&(
            Severity::Warning,
            "Mode change to GUIDED failed: requires position".to_owned()
        )),
        "{seen:?}"
    );
    assert!(seen.contains(&(Severity::Info, "Arming motors".to_owned())));
}

/// The battery failsafe run: 10.3 V under BATT_LOW_VOLT with 89 % left; ArduPilot announces its
/// failsafe and switches to RTL by itself. The hal reports the change as the autopilot's own, with
/// its words, and every battery verdict, not just the percentage.
#[tokio::test]
async fn the_autopilots_battery_failsafe_and_its_own_rtl_are_reported() {
    let mut r = Replay::start("ardupilot-battery-failsafe.tlog").await;
    let failsafe = find_text(&r.frames, 0, "Battery Failsafe");
    let s = r.play_to_text(failsafe).await;
    assert_eq!(s.mode.raw, "RTL");
    let change = s
        .autopilot_mode_change
        .clone()
        .expect("an autopilot-initiated change");
    assert_eq!(
        (change.from.raw.as_str(), change.to.raw.as_str()),
        ("GUIDED", "RTL")
    );
    assert_eq!(
        change.reason.as_deref(),
        Some("Battery 1 is low 10.30V used 361 mAh; Battery Failsafe")
    );
    assert_eq!(s.battery_failsafe.as_deref(), Some("Battery Failsafe"));
    assert!(s.critical, "HEARTBEAT system_status CRITICAL");
    assert!((s.battery_voltage.unwrap() - 10.3).abs() < 0.01);
    assert!(
        s.battery_percent.unwrap() >= 85.0,
        "percent stays high: {s:?}"
    );
    assert_eq!(s.cell_voltage(3).map(|v| (v * 100.0).round()), Some(343.0));
    let report = r.fc.preflight_check(30.0).await.unwrap();
    let battery = report.checks.iter().find(|c| c.name == "battery").unwrap();
    assert!(!battery.passed, "{battery:?}");

    // later: ArduPilot's battery health bit and charge state follow
    let ground = find(&r.frames, failsafe, |f| {
        status_text(f).is_some_and(|t| t.starts_with("SIM Hit ground"))
    });
    let s = r.play_to_text(ground).await;
    assert_eq!(s.health_failures, vec!["battery"]);
    assert!(!s.healthy);
    assert_eq!(s.battery_charge_state, Some(BatteryChargeState::Low));
    // still the same change: nothing else happened
    assert_eq!(s.autopilot_mode_change.map(|c| c.seq), Some(change.seq));
}
