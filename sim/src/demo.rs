//! `sim demo`: the whole delivery on this machine, every part a real process talking real
//! protocols — the relay, the sim vehicle (MAVLink over UDP or TCP), the sim lock board on a
//! pseudo-terminal, the drone agent, the locker agent (its camera a directory of frames), and the
//! scripted backend ([`crate::backend`]), which this process plays itself.
//!
//! By default the drone agent is built with the `opencv` feature and flies the precision approach:
//! the sim vehicle renders its downward camera into a frame directory the agent's `[camera]`
//! reads, and the locker wears an ArUco marker (`--no-camera`: the GPS approach, no OpenCV).
//!
//! It prints progress as it goes and a summary at the end, writes a picture of the flight (SVG:
//! the ground track, the altitude against time, the events), and exits non-zero if the delivery
//! did not complete. The whole-system tests (`tests/`) run it with each [`Variant`].

use crate::backend::{self, say, Hook, ReadyProbe, Report, Scenario, Variant};
use crate::vehicle::Flavour;
use anyhow::{bail, Context as _};
use protocol::geo::{LatLon, NorthEast};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Which autopilot the sim vehicle imitates.
    #[arg(long, value_enum, default_value = "px4")]
    pub flavour: Flavour,
    /// What goes differently (see the whole-system tests).
    #[arg(long, value_enum, default_value = "normal")]
    pub variant: Variant,
    /// How much faster than real time the vehicle flies (default: 20, or 5 with the camera: its
    /// frames are rendered and detected in real time, and the approach steers by each one).
    #[arg(long)]
    pub speedup: Option<f64>,
    /// Fly the GPS approach: the drone agent is built without OpenCV and has no camera.
    #[arg(long)]
    pub no_camera: bool,
    /// How far the locker is from the drone's home, metres (north).
    #[arg(long, default_value_t = 300.0)]
    pub distance_m: f64,
    /// Where `relay`, `drone-agent` and `locker-agent` are (default: beside this binary; built
    /// with cargo first if missing).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep configs and logs here (default: a temporary directory, kept only on failure).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Longest wait for any one step, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub step_timeout_s: f64,
    /// Also write the report as JSON here (for the whole-system tests).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Which lock board the locker talks to: `sim` (`sim lockboard`, Rust) or `firmware` (the
    /// board's own firmware on an emulated AVR: `locker-agent/firmware/`, built with make).
    #[arg(long, value_enum, default_value = "sim")]
    pub board: BoardKind,
    /// The RabbitMQ for `--variant relay-failover` (`amqp://…`): relays A and B form a cluster
    /// on it, with exchanges of this run's own.
    #[arg(long)]
    pub amqp_url: Option<String>,
}

impl DemoArgs {
    fn camera(&self) -> bool {
        !self.no_camera
    }

    fn speedup(&self) -> f64 {
        self.speedup
            .unwrap_or(if self.camera() { CAMERA_SPEEDUP } else { 20.0 })
    }
}

/// The sim's speed-up with the camera on (see [`DemoArgs::speedup`]).
const CAMERA_SPEEDUP: f64 = 5.0;
/// The locker's marker: DICT_4X4_50 id and printed side (large enough to be read from cruise
/// height by a 640-pixel camera).
const MARKER_ID: u32 = 23;
const MARKER_SIZE_M: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BoardKind {
    Sim,
    Firmware,
}

const HOME: (f64, f64, f64) = (47.397742, 8.545594, 488.0);

struct Procs {
    work: PathBuf,
    bins: PathBuf,
    relay_cfg: PathBuf,
    relay: Option<Child>,
    /// The second relay of `relay-failover` (the one that survives).
    relay_b: Option<Child>,
    others: Vec<Child>,
}

impl Procs {
    fn log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(format!("{name}.log")))?)
    }

    fn spawn(&self, bin: &str, args: &[&str], log: &str) -> anyhow::Result<Child> {
        let path = self.bins.join(bin);
        Command::new(&path)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(self.log(log)?)
            // the agents' technician sockets go in their state directories
            .env_remove("RUNTIME_DIRECTORY")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))
    }

    async fn start_relay(&mut self, addr: SocketAddr, cluster: bool) -> anyhow::Result<()> {
        let cfg = self.relay_cfg.clone();
        self.relay = Some(self.start_relay_with(&cfg, addr, "relay", cluster).await?);
        Ok(())
    }

    /// Starts `relay run --config cfg` and waits until `/health` answers 200 (and, in a cluster,
    /// says its broker connection is up, so agents never dial a relay cut off from the fleet).
    async fn start_relay_with(
        &self,
        cfg: &Path,
        addr: SocketAddr,
        log: &str,
        cluster: bool,
    ) -> anyhow::Result<Child> {
        let cfg = cfg.to_string_lossy().into_owned();
        let child = self.spawn("relay", &["run", "--config", &cfg], log)?;
        for _ in 0..400 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = s
                    .write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
                    .await;
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                let up = !cluster || String::from_utf8_lossy(&buf).contains("\"broker\":\"up\"");
                if buf.starts_with(b"HTTP/1.1 200") && up {
                    return Ok(child);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "relay did not come up; see {}",
            self.work.join(format!("{log}.log")).display()
        )
    }
}

/// Reads a child's stdout until a line starting with `prefix`; returns the rest of that line.
async fn line_from(child: &mut Child, prefix: &str) -> anyhow::Result<String> {
    let out = child.stdout.take().context("child has no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    // keep draining so the child never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found.with_context(|| format!("no `{prefix}` line"))
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What to say when the drone agent cannot have its camera.
const NO_OPENCV: &str =
    "the precision approach needs the drone agent built with the `opencv` feature \
     (OpenCV installed: see the README's set-up); run `sim demo --no-camera` for the GPS approach";

/// Finds the other binaries, building them if they are not there yet. Run by cargo (`cargo run
/// -p sim -- demo`), it always asks cargo for them (nothing to do when they are up to date), so
/// the drone agent is the one the camera needs: built with or without `opencv`.
fn binaries(args: &DemoArgs) -> anyhow::Result<PathBuf> {
    let dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .to_owned(),
    };
    let missing: Vec<&str> = ["relay", "drone-agent", "locker-agent"]
        .into_iter()
        .filter(|b| !dir.join(b).exists())
        .collect();
    let under_cargo = args.bin_dir.is_none() && std::env::var_os("CARGO").is_some();
    if !missing.is_empty() || under_cargo {
        let release = dir.ends_with("release");
        if missing.is_empty() {
            println!(
                "checking the agents are built{} ...",
                if args.camera() {
                    " (drone agent with opencv)"
                } else {
                    ""
                }
            );
        } else {
            println!("building {} (first run only) ...", missing.join(", "));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Two builds: the drone agent's `opencv` feature reaches hal, and built together the
        // relay and the locker would get it too (cargo unifies features across one build).
        let drone: &[&str] = if args.camera() {
            &["-p", "drone-agent", "--features", "drone-agent/opencv"]
        } else {
            &["-p", "drone-agent"]
        };
        for packages in [&["-p", "relay", "-p", "locker-agent"][..], drone] {
            let mut cmd = std::process::Command::new(&cargo);
            cmd.args(["build", "--bins"]).args(packages);
            if release {
                cmd.arg("--release");
            }
            let status = cmd
                .status()
                .context("cannot run cargo to build the agents")?;
            if !status.success() {
                if packages == drone && args.camera() {
                    bail!("building the drone agent failed; {NO_OPENCV}");
                }
                bail!("building the agents failed");
            }
        }
    }
    Ok(dir)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<bool> {
    let bins = binaries(&args)?;
    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile_dir()?),
    };
    let work = args
        .work_dir
        .clone()
        .or_else(|| temp.clone())
        .context("no work directory")?;
    std::fs::create_dir_all(work.join("camera"))?;
    let relay_port = free_tcp_port()?;
    let relay_addr: SocketAddr = ([127, 0, 0, 1], relay_port).into();
    let (drone_id, locker_id) = (Uuid::new_v4(), Uuid::new_v4());
    let (backend_token, drone_token, locker_token) = (token(), token(), token());

    let failover = args.variant == Variant::RelayFailover;
    let amqp_url = match (&args.amqp_url, failover) {
        (Some(u), true) => Some(u.clone()),
        (None, true) => bail!("--variant relay-failover needs --amqp-url (a RabbitMQ)"),
        _ => None,
    };
    // relay-failover: relay B beside A, both in one cluster; the backend is on B, the agents
    // dial A first and B next
    let relay_b_addr: SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
    let run_ns = format!("skypost-demo-{}", Uuid::new_v4().simple());
    let relay_text = |addr: SocketAddr, relay_id: &str| {
        let mut text = format!(
            "[server]\nlisten = \"{addr}\"\n\n[presence]\nping_interval_s = 2.0\n\n[backend]\ntoken = \"{backend_token}\"\n\n\
             [[drones]]\nid = \"{drone_id}\"\ntoken = \"{drone_token}\"\n\n[[lockers]]\nid = \"{locker_id}\"\ntoken = \"{locker_token}\"\n"
        );
        if let Some(url) = &amqp_url {
            // a short lease: relay A's agents are reported gone within 1.2 s of its death
            text += &format!(
                "\n[cluster]\nurl = \"{url}\"\nrelay_id = \"{run_ns}-{relay_id}\"\n\
                 agents_exchange = \"{run_ns}.agents\"\nto_agents_exchange = \"{run_ns}.to-agents\"\n\
                 heartbeat_interval_s = 0.2\nlease_s = 1.0\n"
            );
        }
        text
    };
    let relay_cfg = work.join("relay.toml");
    std::fs::write(&relay_cfg, relay_text(relay_addr, "a"))?;
    let relay_b_cfg = work.join("relay-b.toml");
    if failover {
        std::fs::write(&relay_b_cfg, relay_text(relay_b_addr, "b"))?;
    }
    let cloud_urls = |path: &str| {
        if failover {
            format!("urls = [\"ws://{relay_addr}{path}\", \"ws://{relay_b_addr}{path}\"]")
        } else {
            format!("url = \"ws://{relay_addr}{path}\"")
        }
    };
    let mut procs = Procs {
        work: work.clone(),
        bins: bins.clone(),
        relay_cfg,
        relay: None,
        relay_b: None,
        others: vec![],
    };
    say!(
        "demo: work directory {} ({:?} flavour, {:?}, {}x)",
        work.display(),
        args.flavour,
        args.variant,
        args.speedup()
    );
    procs.start_relay(relay_addr, failover).await?;
    say!("relay : listening on {relay_addr}");
    if failover {
        procs.relay_b = Some(
            procs
                .start_relay_with(&relay_b_cfg, relay_b_addr, "relay-b", true)
                .await?,
        );
        say!("relay : B listening on {relay_b_addr}, both on the broker");
    }

    // the vehicle: this same binary
    let me = std::env::current_exe()?;
    let home = format!("{},{},{}", HOME.0, HOME.1, HOME.2);
    let speed = args.speedup().to_string();
    let destination = {
        let d = LatLon::new(HOME.0, HOME.1).offset(NorthEast::new(args.distance_m, 0.0));
        (d.lat_deg, d.lon_deg)
    };
    let drone_camera = work.join("drone-camera");
    let marker = format!("{},{},{MARKER_ID}", destination.0, destination.1);
    let marker_size = MARKER_SIZE_M.to_string();
    let camera_dir = drone_camera.to_string_lossy().into_owned();
    let agent_udp = free_udp_port()?;
    let peer = format!("127.0.0.1:{agent_udp}");
    let mut vargs = vec![
        "vehicle",
        "--flavour",
        if args.flavour == Flavour::Px4 {
            "px4"
        } else {
            "ardupilot"
        },
        "--speedup",
        &speed,
        "--home",
        &home,
    ];
    match args.flavour {
        Flavour::Px4 => vargs.extend(["--bind", "127.0.0.1:0", "--peer", &peer]),
        Flavour::ArduPilot => vargs.extend(["--listen", "127.0.0.1:0"]),
    }
    if args.camera() {
        // a GPS that is 1.5 m off: the camera, not the GPS, puts the parcel on the marker
        vargs.extend([
            "--marker",
            &marker,
            "--marker-size-m",
            &marker_size,
            "--gps-offset-m",
            "1.0,-1.1",
            "--camera-dir",
            &camera_dir,
        ]);
    }
    let mut vehicle = Command::new(&me)
        .args(&vargs)
        .stdout(Stdio::piped())
        .stderr(procs.log("vehicle")?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the sim vehicle")?;
    let ready = line_from(&mut vehicle, "ready ").await?;
    let mavlink = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mavlink="))
        .context("vehicle address")?
        .to_owned();
    let connection = match args.flavour {
        Flavour::Px4 => format!("udpin:{peer}"),
        Flavour::ArduPilot => format!("tcpout:{mavlink}"),
    };
    say!("sim   : vehicle up ({ready})");
    procs.others.push(vehicle);

    let link = work.join("lockboard");
    let ctl = work.join("lockboard.ctl");
    let mut board = match args.board {
        BoardKind::Sim => {
            let mut c = Command::new(&me);
            c.args(["lockboard", "--cells", "4", "--travel-ms", "300"]);
            c
        }
        BoardKind::Firmware => {
            let (elf, harness) = crate::firmware_board::ensure_built()?;
            let mut c = Command::new(harness);
            c.arg("--elf").arg(elf).args(["--travel-ms", "300"]);
            c
        }
    };
    let mut board = board
        .arg("--link")
        .arg(&link)
        .arg("--control")
        .arg(&ctl)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(procs.log("lockboard")?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the sim lock board")?;
    line_from(&mut board, "LOCKBOARD_PATH=").await?;
    say!(
        "sim   : lock board ({:?}) on {}",
        args.board,
        link.display()
    );
    procs.others.push(board);

    let drone_cfg = work.join("drone-agent.toml");
    std::fs::write(
        &drone_cfg,
        drone_config(
            drone_id,
            &drone_token,
            &cloud_urls("/ws/drone"),
            &connection,
            &work.join("drone-state"),
            args.camera().then_some(drone_camera.as_path()),
        ),
    )?;
    if args.camera() {
        // a drone agent built without OpenCV refuses a [precision] section: say so plainly
        let check = std::process::Command::new(bins.join("drone-agent"))
            .args(["config", "check"])
            .arg(&drone_cfg)
            .output()
            .context("cannot run drone-agent config check")?;
        if !check.status.success() {
            let why = String::from_utf8_lossy(&check.stderr).into_owned()
                + &String::from_utf8_lossy(&check.stdout);
            if why.contains("opencv") {
                bail!("{NO_OPENCV}");
            }
            bail!("the demo's drone config does not check: {}", why.trim());
        }
    }
    let locker_cfg = work.join("locker-agent.toml");
    let http_port = free_tcp_port()?;
    std::fs::write(
        &locker_cfg,
        locker_config(
            locker_id,
            &locker_token,
            &cloud_urls("/ws/locker"),
            &link,
            http_port,
            &work,
        ),
    )?;
    let drone = procs.spawn(
        "drone-agent",
        &["run", "--config", &drone_cfg.to_string_lossy()],
        "drone-agent",
    )?;
    procs.others.push(drone);
    let locker = procs.spawn(
        "locker-agent",
        // --init: the demo's state directory is new (a restart finds the file and ignores it)
        &["run", "--init", "--config", &locker_cfg.to_string_lossy()],
        "locker-agent",
    )?;
    let locker_slot = procs.others.len();
    procs.others.push(locker);

    let scenario = Scenario {
        relay: if failover { relay_b_addr } else { relay_addr },
        backend_token,
        drone_id,
        locker_id,
        destination,
        aruco_id: MARKER_ID,
        camera_dir: work.join("camera"),
        lockboard_control: ctl,
        variant: args.variant,
        step_timeout: Duration::from_secs_f64(args.step_timeout_s),
        drone_ready: Some(ReadyProbe {
            program: bins.join("drone-agent"),
            args: vec![
                "preflight".into(),
                "--socket".into(),
                work.join("drone-state")
                    .join("technician.sock")
                    .to_string_lossy()
                    .into_owned(),
            ],
        }),
    };
    // the variants' disturbances run beside the script
    let (hooks_tx, mut hooks) = tokio::sync::mpsc::unbounded_channel();
    let variant = args.variant;
    let script = tokio::spawn(backend::run(scenario, move |h| {
        let _ = hooks_tx.send(h);
    }));
    tokio::pin!(script);
    let report: Report = loop {
        tokio::select! {
            r = &mut script => break r.context("backend script panicked")?,
            Some(h) = hooks.recv() => match (variant, h) {
                (Variant::CloudDrop, Hook::DroneTookOff) => {
                    say!("demo  : the relay goes down (cloud link lost mid-flight)");
                    if let Some(mut r) = procs.relay.take() {
                        let _ = r.kill().await;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    procs.start_relay(relay_addr, false).await?;
                    say!("demo  : the relay is back");
                }
                (Variant::RelayFailover, Hook::DroneTookOff) => {
                    // SIGKILL (tokio's kill): no close frames, no goodbye on the broker
                    say!("demo  : relay A is killed (SIGKILL) mid-flight");
                    if let Some(mut r) = procs.relay.take() {
                        let _ = r.kill().await;
                    }
                }
                (Variant::LockerOffline, Hook::DroneCruising) => {
                    say!("demo  : the locker loses power");
                    let _ = procs.others[locker_slot].kill().await;
                }
                _ => {}
            },
        }
    };

    let picture = picture_path(&args, &work);
    let picture = match crate::flight_svg::write(&report, HOME, destination, &picture) {
        Ok(()) => Some(picture),
        Err(e) => {
            println!("(no flight picture: {e})");
            None
        }
    };
    summary(&report, &args, picture.as_deref());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report.to_json())?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    for mut c in procs.others.drain(..) {
        let _ = c.kill().await;
    }
    for mut r in [procs.relay.take(), procs.relay_b.take()]
        .into_iter()
        .flatten()
    {
        let _ = r.kill().await;
    }
    if report.ok {
        if let Some(t) = temp {
            let _ = std::fs::remove_dir_all(t);
        }
    } else {
        println!("logs and configs kept in {}", work.display());
    }
    Ok(report.ok)
}

/// Where the flight picture goes: the work directory if one was given, else beside the temporary
/// one (which is removed after a good run).
fn picture_path(args: &DemoArgs, work: &Path) -> PathBuf {
    match &args.work_dir {
        Some(_) => work.join("flight.svg"),
        None => std::env::temp_dir().join(format!(
            "skypost-demo-flight-{}.svg",
            &Uuid::new_v4().simple().to_string()[..8]
        )),
    }
}

fn summary(r: &Report, args: &DemoArgs, picture: Option<&Path>) {
    println!();
    println!("──────── summary ────────");
    let outcome = match args.variant {
        Variant::LockerOffline => {
            "as designed: the locker was offline, the drone flew the parcel home"
        }
        Variant::WrongQr => "delivered; the wrong code opened nothing",
        Variant::QrTwice => "delivered; the code opened nothing the second time",
        Variant::CloudDrop => "delivered through a relay outage",
        Variant::RelayFailover => "delivered; relay A was killed mid-flight, the agents moved to B",
        Variant::Normal => "delivered and picked up",
    };
    println!(
        "result      : {}",
        if r.ok {
            outcome.to_owned()
        } else {
            format!("FAILED — {}", r.failure.clone().unwrap_or_default())
        }
    );
    println!(
        "variant     : {:?} ({:?} flavour, sim {}x real time, {})",
        args.variant,
        args.flavour,
        args.speedup(),
        if args.camera() {
            "precision approach on the camera"
        } else {
            "GPS approach"
        }
    );
    println!("wall time   : {:.1} s", r.duration.as_secs_f64());
    println!("flown       : {:.0} m (telemetry track)", r.distance_m);
    if let Some(b) = r.min_battery {
        println!("battery min : {b:.1} %");
    }
    if let Some(c) = r.cell_id {
        println!("cell        : {c}");
    }
    let drone: Vec<String> = r
        .events
        .iter()
        .filter(|e| e.source == protocol::ws::PeerKind::Drone)
        .map(|e| format!("{:?}", e.event))
        .collect();
    let locker: Vec<String> = r
        .events
        .iter()
        .filter(|e| e.source == protocol::ws::PeerKind::Locker)
        .map(|e| format!("{:?}", e.event))
        .collect();
    println!("drone events: {}", drone.join(" → "));
    println!("locker      : {}", locker.join(" → "));
    if let Some(p) = picture {
        println!("flight      : {}", p.display());
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("skypost-demo-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn drone_config(
    id: Uuid,
    token: &str,
    cloud_urls: &str,
    connection: &str,
    state: &Path,
    camera: Option<&Path>,
) -> String {
    let camera = camera
        .map(|dir| {
            format!(
                r#"
[camera]
source = {{ kind = "directory", path = "{dir}" }}
fps = 12.0
hfov_deg = {hfov}

[precision]
marker_size_m = {MARKER_SIZE_M}
acquire_timeout_s = 15.0
"#,
                dir = dir.display(),
                hfov = crate::camera::CameraModel::default().hfov_deg,
            )
        })
        .unwrap_or_default();
    format!(
        r#"[drone]
id = "{id}"
model = "SkyPost Q1 (sim)"
state_dir = "{state}"

[cloud]
{cloud_urls}
token = "{token}"
backoff_initial_s = 0.2
backoff_max_s = 1.0
event_resend_s = 2.0
ping_interval_s = 2.0

[flight_controller]
connection = "{connection}"
heartbeat_timeout_ms = 2000
command_timeout_ms = 300

[flight]
cruise_alt_m = 20.0
drop_alt_m = 4.0
arrive_radius_m = 1.5

[timeouts]
drop_wait_s = 8.0
auto_return_after_drop_s = 0
approach_s = 30.0

[telemetry]
interval_s = 0.2

[payload]
kind = "gripper"
{camera}"#,
        state = state.display()
    )
}

fn locker_config(
    id: Uuid,
    device_token: &str,
    cloud_urls: &str,
    board: &Path,
    http_port: u16,
    work: &Path,
) -> String {
    format!(
        r#"locker_id = "{id}"
state_dir = "{state}"

[board]
path = "{board}"
cells = 4
travel_timeout_s = 5.0
poll_interval_s = 0.5

[http]
listen = "127.0.0.1:{http_port}"
token = "{http_token}"

[camera]
fps = 10.0
debounce_s = 2.0
source = {{ kind = "directory", path = "{camera}" }}

[display]
kind = "terminal"
path = "{screen}"
ansi = false

[cloud]
{cloud_urls}
token = "{device_token}"
backoff_initial_s = 0.2
backoff_max_s = 1.0
event_resend_s = 2.0
ping_interval_s = 2.0
"#,
        state = work.join("locker-state").display(),
        board = board.display(),
        http_token = token(),
        camera = work.join("camera").display(),
        screen = work.join("screen.txt").display(),
    )
}
