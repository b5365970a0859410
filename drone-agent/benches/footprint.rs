//! Resident memory and CPU of the drone agent over a long simulated flight at 10 Hz telemetry.
//!
//! ```text
//! cargo bench -p drone-agent --bench footprint                 # 600 s, real time
//! FOOTPRINT_SECONDS=60 cargo bench -p drone-agent --bench footprint
//! ```
//!
//! The agent runs as its own (release) process against the sim vehicle at real speed (PX4
//! flavour, 10 Hz position stream) and a scripted backend on loopback that acknowledges events and
//! drives a delivery 2.5 km out and back. Reads the agent's `/proc/<pid>` every second: resident
//! memory now and at peak, and CPU time over the run as a share of one core.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use protocol::ws::{CommandKind, EventType};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in clock ticks (fields 14 and 15 of /proc/pid/stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn main() {
    let seconds: u64 = std::env::var("FOOTPRINT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let agent_port = free_udp_port();
        let vehicle = px4_vehicle_to(agent_port, 1.0).await;
        let mut backend = Backend::start().await;
        let dir = tempfile::tempdir().unwrap();
        let toml = config_toml(
            &backend.url,
            &format!("udpin:127.0.0.1:{agent_port}"),
            &dir.path().join("state"),
        )
        .replace("interval_s = 0.2", "interval_s = 0.1")
        .replace("drop_wait_s = 30.0", "drop_wait_s = 600.0");
        let cfg_path = dir.path().join("agent.toml");
        std::fs::write(&cfg_path, toml).unwrap();
        let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_drone-agent"))
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = agent.id().unwrap();
        backend.registered().await;
        arm_ready(&vehicle, sim::vehicle::Flavour::Px4).await;
        let t = task(north_of_home(sim::vehicle::Flavour::Px4, 2500.0));
        assert!(backend.send(protocol::Envelope::new(t)));

        let tick = 1_000_000_000 / 100u64; // USER_HZ is 100 on Linux
        let start = Instant::now();
        let cpu0 = cpu_ticks(pid).unwrap();
        let mut peak_rss = 0;
        let mut samples = vec![];
        let mut dropped = false;
        let mut returned = false;
        while start.elapsed() < Duration::from_secs(seconds) {
            let _ = tokio::time::timeout(Duration::from_secs(1), backend.next()).await;
            let rss = proc_status(pid, "VmRSS:").unwrap_or(0);
            peak_rss = peak_rss.max(rss);
            samples.push(rss);
            let seen = backend.event_types();
            if seen.contains(&EventType::Arrived) && !dropped {
                backend.command(CommandKind::DropCargo);
                dropped = true;
            }
            if seen.contains(&EventType::DropConfirmed) && !returned {
                backend.command(CommandKind::ReturnToBase);
                returned = true;
            }
        }
        let wall = start.elapsed();
        let cpu = (cpu_ticks(pid).unwrap() - cpu0) * tick;
        let hwm = proc_status(pid, "VmHWM:").unwrap_or(0);
        samples.sort_unstable();
        let median = samples[samples.len() / 2];
        let telemetry = backend
            .others
            .iter()
            .filter(|e| e.kind() == "telemetry")
            .count();
        println!(
            "drone-agent footprint over {:.0} s (10 Hz telemetry, PX4 sim at 1x):",
            wall.as_secs_f64()
        );
        println!(
            "  resident memory: median {:.1} MiB, peak {:.1} MiB (VmHWM {:.1} MiB)",
            median as f64 / 1024.0,
            peak_rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        println!(
            "  CPU: {:.2} % of one core ({:.2} s CPU)",
            cpu as f64 / wall.as_nanos() as f64 * 100.0,
            cpu as f64 / 1e9
        );
        println!(
            "  telemetry frames received: {telemetry} ({:.1}/s); events: {:?}",
            telemetry as f64 / wall.as_secs_f64(),
            backend.event_types()
        );
        let _ = agent.kill().await;
    });
}
