//! What the ground-station router costs the agent (issue 13).
//!
//! ```text
//! cargo bench -p drone-agent --bench router
//! ROUTER_CPU_S=30 cargo bench -p drone-agent --bench router
//! ```
//!
//! 1. **Latency added to the agent's own commands.** The agent's link calls the router once per
//!    frame it sends (`from_agent`, before the frame goes to the autopilot) and once per frame it
//!    receives (`from_autopilot`, before the receive path sees it): a command's round trip pays
//!    one of each (the COMMAND_LONG out, its COMMAND_ACK back). Both are timed directly, 20 000
//!    times each, with two ground stations attached (a tcpin client and a udpout peer, both
//!    reading) while the PX4-flavoured sim streams full-rate telemetry (50 Hz position and
//!    attitude, requested by the link as the agent does) through the same router.
//! 2. **CPU of the agent** (the `drone-agent` binary as its own process, idle on the ground,
//!    10 Hz position and attitude telemetry): utime + stime from /proc over `ROUTER_CPU_S`
//!    (default 20) seconds, with two reading ground stations, then with none, for comparison.
//!
//! The load average is printed with each figure: the machine is shared.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use hal::flight::mavlink::MavlinkFc;
use hal::flight::router::{EndpointConfig, EndpointMode, Router};
use hal::flight::FcLinkConfig;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::MavHeader;
use std::io::Read;
use std::time::{Duration, Instant};

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A ground station that reads everything: a tcpin client thread.
fn tcp_reader(port: u16) {
    let mut s = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
}

/// A ground station that reads everything: a UDP socket a udpout endpoint sends to.
fn udp_reader() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while s.recv(&mut buf).is_ok() {}
    });
    port
}

fn endpoints(tcp_port: u16, udp_port: u16) -> Vec<EndpointConfig> {
    let e = |name: &str, connection: String| EndpointConfig {
        name: name.into(),
        connection: connection.parse().unwrap(),
        mode: EndpointMode::Full,
        signing_key_file: None,
        queue: 256,
    };
    vec![
        e("qgc", format!("tcpin:127.0.0.1:{tcp_port}")),
        e("mavproxy", format!("udpout:127.0.0.1:{udp_port}")),
    ]
}

fn percentiles(mut ns: Vec<u64>) -> String {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
    format!(
        "p50 {} ns  p90 {} ns  p99 {} ns  max {} ns",
        p(0.5),
        p(0.9),
        p(0.99),
        ns[ns.len() - 1]
    )
}

async fn latency() {
    let agent_port = free_udp_port();
    let vehicle = px4_vehicle_to(agent_port, 1.0).await;
    let tcp_port = free_udp_port();
    let udp_port = udp_reader();
    let router = Router::start(&endpoints(tcp_port, udp_port), None)
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || tcp_reader(tcp_port))
        .await
        .unwrap();
    let mut cfg = FcLinkConfig::new(format!("udpin:127.0.0.1:{agent_port}").parse().unwrap());
    cfg.telemetry.position_hz = 50.0;
    cfg.telemetry.attitude_hz = 50.0;
    let fc = MavlinkFc::start_with(cfg, None, Some(router.clone()));
    fc.wait_for(WAIT, |s| s.link.is_connected())
        .await
        .expect("link up");
    // the telemetry requests answered, the streams at full rate
    let start = fc.messages_received();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = (fc.messages_received() - start) / 2;

    let command = apm::MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
        target_system: 1,
        target_component: 1,
        command: apm::MavCmd::MAV_CMD_DO_REPOSITION,
        param5: 47.39,
        param6: 8.54,
        param7: 30.0,
        ..Default::default()
    });
    let ack = apm::MavMessage::COMMAND_ACK(apm::COMMAND_ACK_DATA {
        command: apm::MavCmd::MAV_CMD_DO_REPOSITION,
        result: apm::MavResult::MAV_RESULT_ACCEPTED,
        target_system: 1,
        target_component: 191,
        ..Default::default()
    });
    let (ours, theirs) = (
        MavHeader {
            system_id: 1,
            component_id: 191,
            sequence: 0,
        },
        MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 0,
        },
    );
    let n = 20_000;
    // a broadcast (our HEARTBEAT) goes to both ground stations: encoded and queued twice
    let heartbeat = apm::MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA::default());
    let mut broadcast = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        router.from_agent(&ours, &heartbeat);
        broadcast.push(t0.elapsed().as_nanos() as u64);
        // let the writers drain (queue 256): a dropped frame costs less than a sent one
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (mut out, mut back, mut round) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n {
        let t0 = Instant::now();
        router.from_agent(&ours, &command);
        let t1 = Instant::now();
        router.from_autopilot(&theirs, &ack);
        let t2 = Instant::now();
        out.push((t1 - t0).as_nanos() as u64);
        back.push((t2 - t1).as_nanos() as u64);
        round.push((t2 - t0).as_nanos() as u64);
        // interleave with the real telemetry (the router's lock is shared with it)
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    println!("router latency, two reading ground stations, {rate} msg/s telemetry through the router (load {}):", loadavg());
    println!("  from_agent (our COMMAND_LONG):    {}", percentiles(out));
    println!("  from_autopilot (its COMMAND_ACK): {}", percentiles(back));
    println!("  both (a command's round trip):    {}", percentiles(round));
    println!(
        "  from_agent, a broadcast to both GCSes (our HEARTBEAT): {}",
        percentiles(broadcast)
    );
    let stats = router.stats();
    for s in &stats {
        println!("  {}: sent {} dropped {}", s.name, s.sent, s.dropped);
    }
    drop(fc);
    drop(vehicle);
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // after the command name in parentheses: field 14 utime, 15 stime (1-based)
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

async fn cpu(with_endpoints: bool, seconds: u64) {
    let (vehicle, connection) = vehicle_with(sim::vehicle::Flavour::Px4, |c| c.speedup = 1.0).await;
    let mut backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut toml = config_toml(&backend.url, &connection, dir.path());
    toml = toml.replace("interval_s = 0.2", "interval_s = 1.0");
    let tcp_port = free_udp_port();
    if with_endpoints {
        let udp_port = udp_reader();
        toml.push_str(&format!(
            "\n[[flight_controller.endpoints]]\nname = \"qgc\"\nconnection = \"tcpin:127.0.0.1:{tcp_port}\"\nmode = \"full\"\n\n[[flight_controller.endpoints]]\nname = \"mavproxy\"\nconnection = \"udpout:127.0.0.1:{udp_port}\"\nmode = \"read_only\"\n"
        ));
    }
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_drone-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    backend.registered().await;
    if with_endpoints {
        tokio::task::spawn_blocking(move || tcp_reader(tcp_port))
            .await
            .unwrap();
    }
    vehicle
        .wait_for(WAIT, |v| v.heartbeats_received > 0)
        .await
        .expect("agent on the link");
    // settle: the telemetry requests made
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hz = 100.0; // USER_HZ on Linux
    let c0 = cpu_ticks(pid);
    let t0 = Instant::now();
    // the backend must keep reading or the agent's socket backs up
    let _ = tokio::time::timeout(Duration::from_secs(seconds), async {
        loop {
            backend.next().await;
        }
    })
    .await;
    let used = (cpu_ticks(pid) - c0) as f64 / hz;
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "agent CPU at 10 Hz telemetry, {}: {:.2} % of one core ({used:.2} s CPU in {wall:.1} s; load {})",
        if with_endpoints { "two ground stations" } else { "no ground stations" },
        100.0 * used / wall,
        loadavg()
    );
    let _ = child.kill().await;
    drop(vehicle);
}

fn main() {
    let seconds: u64 = std::env::var("ROUTER_CPU_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        latency().await;
        cpu(true, seconds).await;
        cpu(false, seconds).await;
    });
}
