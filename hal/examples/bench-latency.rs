//! Benchmark: time from a hal call to its command leaving the socket, i.e. arriving at a MAVLink
//! peer on the same machine (the peer timestamps each COMMAND_LONG as it receives it, and answers
//! with COMMAND_ACK so the next call can start). Target: median under 1 ms.
//!
//! ```text
//! cargo run --release -p hal --example bench-latency          # 2000 calls
//! ```

use hal::flight::mavlink::MavlinkFc;
use hal::flight::{FcLinkConfig, FlightController};
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::MavMessage;
use mavlink::MavHeader;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A minimal autopilot on a blocking thread: HEARTBEAT every 100 ms, ACK every COMMAND_LONG, and
/// the receive instant of each DO_SET_SERVO sent back to the bench.
fn autopilot(hal_port: u16, arrivals: mpsc::Sender<Instant>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let hal = format!("127.0.0.1:{hal_port}");
    let mut seq = 0u8;
    let mut send = |sock: &UdpSocket, msg: &MavMessage| {
        let mut buf = Vec::new();
        mavlink::write_v2_msg(
            &mut buf,
            MavHeader {
                system_id: 1,
                component_id: 1,
                sequence: seq,
            },
            msg,
        )
        .unwrap();
        seq = seq.wrapping_add(1);
        let _ = sock.send_to(&buf, &hal);
    };
    let heartbeat = MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype: apm::MavType::MAV_TYPE_QUADROTOR,
        autopilot: apm::MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
        base_mode: apm::MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
        system_status: apm::MavState::MAV_STATE_STANDBY,
        mavlink_version: 3,
    });
    let mut last_hb = Instant::now() - Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    loop {
        if last_hb.elapsed() >= Duration::from_millis(100) {
            send(&sock, &heartbeat);
            last_hb = Instant::now();
        }
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        let mut r = mavlink::MavlinkReader::new(&buf[..n]);
        while let Ok((_, msg)) = r.read_any_message::<MavMessage>() {
            if let MavMessage::COMMAND_LONG(c) = msg {
                if c.command == apm::MavCmd::MAV_CMD_DO_SET_SERVO && arrivals.send(at).is_err() {
                    return;
                }
                send(
                    &sock,
                    &MavMessage::COMMAND_ACK(apm::COMMAND_ACK_DATA {
                        command: c.command,
                        result: apm::MavResult::MAV_RESULT_ACCEPTED,
                        ..Default::default()
                    }),
                );
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = FcLinkConfig::new(format!("udpin:127.0.0.1:{port}").parse().unwrap());
    cfg.telemetry.position_hz = 0.0; // nothing else on the wire while measuring
    cfg.telemetry.attitude_hz = 0.0;
    cfg.telemetry.battery_hz = 0.0;
    cfg.telemetry.gps_hz = 0.0;
    cfg.telemetry.status_hz = 0.0;
    cfg.telemetry.servo_hz = 0.0;
    let fc = MavlinkFc::start(cfg);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || autopilot(port, tx));
    fc.wait_for(Duration::from_secs(10), |s| s.link.is_connected())
        .await
        .expect("link");
    // let the connect-time requests (HOME_POSITION) finish
    fc.set_servo(5, 1500).await.unwrap();
    let _ = rx.recv();

    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls {
        let t0 = Instant::now();
        fc.set_servo(5, 1000 + (i % 1000) as u16).await.unwrap();
        let arrived = rx.recv().unwrap();
        lat.push(arrived.duration_since(t0));
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "hal call -> COMMAND_LONG at the peer over {calls} calls: median {:?}, p90 {:?}, p99 {:?}, max {:?} (target: median < 1 ms)",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[lat.len() - 1]
    );
}
