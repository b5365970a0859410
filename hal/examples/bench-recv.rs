//! Benchmark: MAVLink messages decoded per second through the hal's receive path (MavlinkFc: the
//! mavlink crate's connection, the link supervisor, and folding every message into the snapshot),
//! against the bare `mavlink` parser (AsyncMavlinkReader) reading the same byte stream from the same
//! kind of socket. Target: the hal within 2x of the bare parser.
//!
//! ```text
//! cargo run --release -p hal --example bench-recv            # 1,000,000 messages
//! cargo run --release -p hal --example bench-recv -- 200000
//! ```

use hal::flight::mavlink::MavlinkFc;
use hal::flight::FcLinkConfig;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::MavMessage;
use mavlink::MavHeader;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A telemetry mix like an autopilot's: position, attitude, status and GPS, with a HEARTBEAT
/// every 100 messages (an autopilot sends HEARTBEAT at 1 Hz beside ~100 telemetry messages).
fn stream(n: usize) -> Vec<u8> {
    let header = |seq: usize| MavHeader {
        system_id: 1,
        component_id: 1,
        sequence: seq as u8,
    };
    let msgs = [
        MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA {
            custom_mode: 4,
            mavtype: apm::MavType::MAV_TYPE_QUADROTOR,
            autopilot: apm::MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            base_mode: apm::MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
            system_status: apm::MavState::MAV_STATE_ACTIVE,
            mavlink_version: 3,
        }),
        MavMessage::GLOBAL_POSITION_INT(apm::GLOBAL_POSITION_INT_DATA {
            time_boot_ms: 1,
            lat: 473_977_420,
            lon: 85_455_940,
            alt: 500_000,
            relative_alt: 12_000,
            vx: 100,
            vy: -50,
            vz: 3,
            hdg: 9000,
        }),
        MavMessage::ATTITUDE(apm::ATTITUDE_DATA {
            time_boot_ms: 1,
            roll: 0.01,
            pitch: 0.02,
            yaw: 1.0,
            ..Default::default()
        }),
        MavMessage::SYS_STATUS(apm::SYS_STATUS_DATA {
            voltage_battery: 15_800,
            battery_remaining: 77,
            ..Default::default()
        }),
        MavMessage::GPS_RAW_INT(apm::GPS_RAW_INT_DATA {
            fix_type: apm::GpsFixType::GPS_FIX_TYPE_3D_FIX,
            satellites_visible: 12,
            ..Default::default()
        }),
    ];
    let mut out = Vec::new();
    for i in 0..n {
        let msg = if i % 100 == 0 {
            &msgs[0]
        } else {
            &msgs[1 + i % (msgs.len() - 1)]
        };
        mavlink::write_v2_msg(&mut out, header(i), msg).unwrap();
    }
    out
}

async fn serve(bytes: Vec<u8>) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(&bytes).await.unwrap();
        // keep the connection open until the reader is done
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
    (addr, h)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let bytes = stream(n);
    println!(
        "{n} messages, {} bytes; 5 rounds, each path in turn",
        bytes.len()
    );
    let mut ratios = Vec::new();
    for round in 1..=5 {
        let bare = bare(&bytes, n).await;
        let conn = crate_connection(&bytes, n).await;
        let hal = hal_path(&bytes, n).await;
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "round {round}: bare parser {:.2}M msg/s, mavlink connection {:.2}M msg/s, hal {:.2}M msg/s, hal/bare time {:.2}",
            rate(bare) / 1e6,
            rate(conn) / 1e6,
            rate(hal) / 1e6,
            hal.as_secs_f64() / bare.as_secs_f64()
        );
        ratios.push(hal.as_secs_f64() / bare.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median hal/bare time ratio: {:.2} (target: at most 2)",
        ratios[ratios.len() / 2]
    );
}

async fn bare(bytes: &[u8], n: usize) -> Duration {
    let (addr, server) = serve(bytes.to_vec()).await;
    let t = Instant::now();
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut reader = mavlink::AsyncMavlinkReader::new(s);
    for _ in 0..n {
        let _: (MavHeader, MavMessage) = reader.read_any_message().await.unwrap();
    }
    let d = t.elapsed();
    server.abort();
    d
}

/// The mavlink crate's own connection type (what the hal wraps), for reference.
async fn crate_connection(bytes: &[u8], n: usize) -> Duration {
    use mavlink::AsyncMavConnection;
    let (addr, server) = serve(bytes.to_vec()).await;
    let t = Instant::now();
    let conn = mavlink::connect_async::<MavMessage>(&format!("tcpout:{addr}"))
        .await
        .unwrap();
    for _ in 0..n {
        let _ = conn.recv().await.unwrap();
    }
    let d = t.elapsed();
    server.abort();
    d
}

async fn hal_path(bytes: &[u8], n: usize) -> Duration {
    let (addr, server) = serve(bytes.to_vec()).await;
    let t = Instant::now();
    let mut cfg = FcLinkConfig::new(format!("tcpout:{addr}").parse().unwrap());
    cfg.heartbeat_timeout_ms = 60_000;
    let fc = MavlinkFc::start(cfg);
    // polled, so the poll interval (1 ms) is included in the hal's time
    while fc.messages_received() < n as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let d = t.elapsed();
    server.abort();
    d
}
