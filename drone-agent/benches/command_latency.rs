//! Time from a `command` frame leaving the backend's socket to the MAVLink command it causes
//! leaving the agent for the autopilot.
//!
//! ```text
//! cargo bench -p drone-agent --bench command_latency            # 400 commands
//! LATENCY_COMMANDS=1000 cargo bench -p drone-agent --bench command_latency
//! ```
//!
//! The agent runs in this process (the same code as the binary) against the PX4-flavoured sim
//! vehicle. Between them sits a UDP tap that timestamps every datagram from the agent and parses
//! it as MAVLink: the first `COMMAND_LONG`/`COMMAND_INT` after a `pause` or `resume` frame was
//! written to the WebSocket marks the end of that command's trip. The drone cruises to a point
//! 20 km away while `pause` and `resume` alternate.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use protocol::ws::{CommandKind, EventType};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Arrival times of MAVLink commands from the agent.
type Seen = Arc<Mutex<Vec<Instant>>>;

/// agent (udpin A) <-> tap: `to_agent` socket sends to A; `to_sim` socket is the sim's peer.
async fn tap(agent_port: u16) -> (u16, Seen) {
    let to_sim = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let to_agent = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sim_peer: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
    let seen: Seen = Arc::default();
    let port = to_sim.local_addr().unwrap().port();
    let (a, b, p) = (to_sim.clone(), to_agent.clone(), sim_peer.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, from)) = a.recv_from(&mut buf).await else {
                return;
            };
            *p.lock().unwrap() = Some(from);
            let _ = b.send_to(&buf[..n], ("127.0.0.1", agent_port)).await;
        }
    });
    let (a, b, p, s) = (to_sim, to_agent, sim_peer, seen.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, _)) = b.recv_from(&mut buf).await else {
                return;
            };
            let at = Instant::now();
            if is_command(&buf[..n]) {
                s.lock().unwrap().push(at);
            }
            let peer = *p.lock().unwrap();
            if let Some(peer) = peer {
                let _ = a.send_to(&buf[..n], peer).await;
            }
        }
    });
    (port, seen)
}

/// COMMAND_INT (75) or COMMAND_LONG (76), read from the MAVLink 2 header (STX 0xFD, 24-bit
/// message id at bytes 7..10) or the MAVLink 1 one (STX 0xFE, id at byte 5).
fn is_command(datagram: &[u8]) -> bool {
    let id = match datagram {
        [0xFD, _, _, _, _, _, _, a, b, c, ..] => u32::from_le_bytes([*a, *b, *c, 0]),
        [0xFE, _, _, _, _, id, ..] => u32::from(*id),
        _ => return false,
    };
    id == 75 || id == 76
}

fn main() {
    let n: usize = std::env::var("LATENCY_COMMANDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let agent_port = free_udp_port();
        let (tap_port, seen) = tap(agent_port).await;
        let vehicle = px4_vehicle_to(tap_port, 5.0).await;
        let mut backend = Backend::start().await;
        let dir = tempfile::tempdir().unwrap();
        let toml = config_toml(
            &backend.url,
            &format!("udpin:127.0.0.1:{agent_port}"),
            dir.path(),
        );
        let agent = InProcessAgent::start(parse_config(&toml));
        backend.registered().await;
        arm_ready(&vehicle, sim::vehicle::Flavour::Px4).await;
        assert!(backend.send(protocol::Envelope::new(task(north_of_home(
            sim::vehicle::Flavour::Px4,
            20_000.0
        )))));
        backend.event(EventType::TookOff).await;
        vehicle
            .wait_for(WAIT, |v| v.alt_rel_m > 19.0)
            .await
            .expect("at cruise");

        let mut lat = Vec::with_capacity(n);
        let mut acks = Vec::with_capacity(n);
        for i in 0..n {
            let kind = if i % 2 == 0 {
                CommandKind::Pause
            } else {
                CommandKind::Resume
            };
            let before = seen.lock().unwrap().len();
            let t0 = Instant::now();
            let id = backend.command(kind);
            let ack = backend.ack_for(id).await;
            acks.push(t0.elapsed());
            assert_eq!(ack.status, protocol::ws::AckStatus::Executed, "{ack:?}");
            // the command has left by the time it is acked (or very soon after): wait for it
            let deadline = Instant::now() + Duration::from_secs(5);
            let t1 = loop {
                if let Some(t) = seen.lock().unwrap().get(before).copied() {
                    break t;
                }
                assert!(
                    Instant::now() < deadline,
                    "no MAVLink command after {kind:?}"
                );
                tokio::task::yield_now().await;
            };
            lat.push(t1.saturating_duration_since(t0));
            // let the autopilot's answers (and the second command of a PX4 hold) settle
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "command frame on the WebSocket -> MAVLink command on the UDP link ({n} pause/resume):"
        );
        println!(
            "  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            lat[lat.len() - 1]
        );
        acks.sort_unstable();
        println!(
            "  (the ack back at the backend: p50 {:?}  p99 {:?})",
            acks[acks.len() / 2],
            acks[acks.len() * 99 / 100]
        );
        agent.stop().await;
    });
}
