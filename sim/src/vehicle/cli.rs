//! `sim vehicle` command-line options and the process entry point.

use super::{control, spawn, Flavour, Transport, VehicleConfig};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct VehicleArgs {
    /// Which autopilot to imitate.
    #[arg(long, value_enum, default_value = "px4")]
    pub flavour: Flavour,
    /// World speed relative to real time (HEARTBEAT stays at least 2 Hz real time).
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Seed for the deterministic noise (GPS fix time, satellite count).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Home as LAT,LON[,ALT_MSL].
    #[arg(long, default_value = "47.397742,8.545594,488")]
    pub home: String,
    /// PX4: the UDP address to send from (PX4 SITL: 0.0.0.0:14580).
    #[arg(long, default_value = "0.0.0.0:14580")]
    pub bind: SocketAddr,
    /// PX4: where to send until someone sends to us (PX4 SITL's API link: 127.0.0.1:14540).
    #[arg(long, default_value = "127.0.0.1:14540")]
    pub peer: SocketAddr,
    /// ArduPilot: the TCP address to listen on (ArduPilot SITL: 0.0.0.0:5760).
    #[arg(long, default_value = "0.0.0.0:5760")]
    pub listen: SocketAddr,
    /// Serve the fault-injection/status control socket here (see `sim::vehicle::control`).
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// Seconds after boot until GPS has a 3D fix (flavour default if absent).
    #[arg(long)]
    pub gps_fix_s: Option<f64>,
    /// Seconds after the fix until the estimator navigates by GPS (ArduPilot's EKF "is using
    /// GPS"; flavour default if absent).
    #[arg(long)]
    pub position_after_fix_s: Option<f64>,
    /// An autopilot parameter the sim models, NAME=VALUE (repeatable), e.g. BATT_FS_LOW_ACT=2,
    /// NAV_DLL_ACT=2 (the control socket's `param` at start).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Render the downward camera into this directory (image files, newest wins), for a drone
    /// agent whose `[camera]` reads a directory. Needs `--marker`.
    #[arg(long, requires = "marker")]
    pub camera_dir: Option<std::path::PathBuf>,
    /// The locker's marker the camera sees: LAT,LON,ID (a DICT_4X4_50 id).
    #[arg(long)]
    pub marker: Option<String>,
    /// Printed side of the marker, metres.
    #[arg(long, default_value_t = 0.4)]
    pub marker_size_m: f64,
    /// GPS error, metres north,east: the autopilot believes it is this far off (what the
    /// precision approach corrects).
    #[arg(long, value_name = "N,E")]
    pub gps_offset_m: Option<String>,
}

/// Parses `LAT,LON,ID`.
fn parse_marker(s: &str) -> anyhow::Result<(f64, f64, u32)> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    anyhow::ensure!(parts.len() == 3, "--marker {s}: expected LAT,LON,ID");
    let lat = parts[0]
        .parse()
        .with_context(|| format!("--marker {s}: bad latitude"))?;
    let lon = parts[1]
        .parse()
        .with_context(|| format!("--marker {s}: bad longitude"))?;
    let id: u32 = parts[2]
        .parse()
        .with_context(|| format!("--marker {s}: bad id"))?;
    anyhow::ensure!(id < 50, "--marker {s}: DICT_4X4_50 ids are 0..50");
    Ok((lat, lon, id))
}

/// Parses `LAT,LON[,ALT]`.
pub fn parse_home(s: &str) -> anyhow::Result<(f64, f64, f64)> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let num = |i: usize| -> anyhow::Result<f64> {
        parts[i]
            .parse::<f64>()
            .with_context(|| format!("--home {s}: `{}` is not a number", parts[i]))
    };
    let (lat, lon, alt) = match parts.len() {
        2 => (num(0)?, num(1)?, 0.0),
        3 => (num(0)?, num(1)?, num(2)?),
        _ => anyhow::bail!("--home {s}: expected LAT,LON or LAT,LON,ALT_MSL"),
    };
    anyhow::ensure!(
        (-85.0..=85.0).contains(&lat) && (-180.0..=180.0).contains(&lon),
        "--home {s}: latitude must be within ±85° and longitude within ±180°"
    );
    Ok((lat, lon, alt))
}

pub async fn run(args: VehicleArgs) -> anyhow::Result<()> {
    let mut cfg = VehicleConfig::standard(args.flavour);
    cfg.home = parse_home(&args.home)?;
    cfg.speedup = args.speedup;
    cfg.seed = args.seed;
    if let Some(s) = args.gps_fix_s {
        anyhow::ensure!(s >= 0.0, "--gps-fix-s must be 0 or more");
        cfg.params.gps_fix_after_s = s;
    }
    if let Some(s) = args.position_after_fix_s {
        anyhow::ensure!(s >= 0.0, "--position-after-fix-s must be 0 or more");
        cfg.params.arm_ready_after_fix_s = s;
    }
    for p in &args.params {
        let (name, value) = p
            .split_once('=')
            .with_context(|| format!("--param {p}: expected NAME=VALUE"))?;
        let value: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("--param {p}: `{value}` is not a number"))?;
        cfg.params
            .set(name.trim(), value)
            .map_err(|e| anyhow::anyhow!("--param {p}: {e}"))?;
    }
    if let Some(o) = &args.gps_offset_m {
        let (n, e) = o
            .split_once(',')
            .and_then(|(n, e)| Some((n.trim().parse().ok()?, e.trim().parse().ok()?)))
            .with_context(|| format!("--gps-offset-m {o}: expected N,E in metres"))?;
        cfg.params.gps_offset_ne_m = (n, e);
    }
    cfg.transport = match args.flavour {
        Flavour::Px4 => Transport::Udp {
            bind: args.bind,
            peer: args.peer,
        },
        Flavour::ArduPilot => Transport::Tcp {
            listen: args.listen,
        },
    };
    let vehicle = Arc::new(spawn(cfg).await?);
    let mut ready = format!(
        "ready flavour={:?} mavlink={}",
        args.flavour,
        vehicle.local_addr()
    );
    if let Some(addr) = args.control {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind control socket {addr}"))?;
        ready.push_str(&format!(" control={}", listener.local_addr()?));
        tokio::spawn(control::serve(listener, vehicle.clone()));
    }
    // the camera lives as long as the vehicle: the handle is held to the end of `run`
    let _camera = match (&args.camera_dir, &args.marker) {
        (Some(dir), Some(m)) => {
            let (lat, lon, id) = parse_marker(m)?;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --camera-dir {}", dir.display()))?;
            ready.push_str(&format!(" camera={}", dir.display()));
            Some(crate::camera::spawn_feed(
                vehicle.view(),
                crate::camera::Scene {
                    marker_lat: lat,
                    marker_lon: lon,
                    marker_id: Some(id),
                    marker_size_m: args.marker_size_m,
                },
                crate::camera::CameraModel {
                    blur_sigma: 0.6,
                    noise: 6,
                    ..crate::camera::CameraModel::default()
                },
                dir.clone(),
                std::time::Duration::from_millis(80),
            ))
        }
        _ => None,
    };
    // one line on stdout that process-level tests wait for (logs go to stderr)
    println!("{ready}");
    let signal = daemon::shutdown::wait().await?;
    tracing::info!(?signal, "vehicle stopping");
    Ok(())
}
