//! Resident memory and CPU of the locker agent binary with the camera loop running.
//!
//! ```text
//! cargo bench -p locker-agent --bench agent_rss                     # rqrr only
//! cargo bench -p locker-agent --bench agent_rss --features opencv   # with WeChat loaded
//! ```
//!
//! Starts the real `locker-agent run` (the bench-profile binary) against a simulated board on a
//! pty, with a directory camera at 10 fps on a 640×480 scene, first empty, then a realistic idle
//! scene (`sim::camera::locker::IdleScene`: door panels, signage, a phone; 20 frames that differ
//! by sensor noise and flicker, as PGM), then with a QR code in view, and reads `VmRSS`/`VmHWM`
//! and CPU time from `/proc/<pid>`.

#[path = "../tests/qrgen/mod.rs"]
mod qrgen;

use sim::lockboard::{SimBoard, SimBoardConfig};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the ")" of the command name: utime is the 12th, stime the 13th
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let p = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    p(11) + p(12)
}

fn main() {
    // Multi-threaded: the simulated board keeps answering while this thread samples /proc.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).expect("frames dir");
    let _board = rt
        .block_on(async {
            SimBoard::start(SimBoardConfig {
                cells: 16,
                travel: Duration::from_millis(100),
                link: dir.path().join("lockboard"),
            })
        })
        .expect("sim board");
    let cfg = dir.path().join("locker.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"locker_id = "7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f"
state_dir = "{state}"
[board]
path = "{board}"
cells = 16
[http]
listen = "127.0.0.1:0"
token = "bench-token-0123456789"
[camera]
fps = 10.0
debounce_s = 5.0
second_opinion = true
source = {{ kind = "directory", path = "{frames}" }}
"#,
            state = dir.path().join("state").display(),
            board = dir.path().join("lockboard").display(),
            frames = frames.display(),
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_locker-agent"))
        .args(["run", "--init", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("locker-agent");
    let pid = child.id();
    let hz = 100.0; // USER_HZ on Linux
    let measure = |label: &str| {
        let t0 = Instant::now();
        let c0 = cpu_ticks(pid);
        let mut peak_rss = 0;
        while t0.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(200));
            peak_rss = peak_rss.max(status_kib(pid, "VmRSS:"));
        }
        let cpu = (cpu_ticks(pid) - c0) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
        let mib = |k: u64| k as f64 / 1024.0;
        println!(
            "| {label} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {cpu:.1} % |",
            mib(peak_rss),
            mib(status_kib(pid, "VmHWM:")),
            mib(status_kib(pid, "RssAnon:")),
            mib(status_kib(pid, "RssFile:")),
        );
    };
    std::thread::sleep(Duration::from_secs(2));
    println!("# locker-agent resident memory, camera at 10 fps on 640x480 frames");
    println!("| scene | RSS (max sampled) | VmHWM (peak) | RssAnon (heap, stacks) | RssFile (mapped code, shared libraries) | CPU (one core = 100 %) |\n|---|---|---|---|---|---|");
    measure("empty scene");
    // an idle locker as its camera sees it: one scene, every frame a new sensor reading
    let scene = sim::camera::locker::IdleScene::new(1);
    let idle: Vec<_> = (0..20u64)
        .map(|i| {
            let f = scene.frame(i);
            let path = frames.join(format!("idle-{i:02}.pgm"));
            let mut pgm = format!("P5\n{} {}\n255\n", f.width(), f.height()).into_bytes();
            pgm.extend_from_slice(f.as_raw());
            std::fs::write(&path, pgm).expect("idle frame");
            path
        })
        .collect();
    measure("idle scene, sensor noise");
    for p in idle {
        std::fs::remove_file(p).expect("idle frame");
    }
    qrgen::frame_with_code("SKYPOST-ORDER-0001-7f3a9c", 4)
        .save(frames.join("code.png"))
        .expect("frame");
    measure("QR code in view");
    let _ = child.kill();
    let _ = child.wait();
}
