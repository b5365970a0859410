//! The locker agent's TOML config (see `locker-agent.example.toml` for every field, documented).

use daemon::config::{Validate, Validator};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub locker_id: Uuid,
    /// Where the cell state file lives (`cells.json`).
    pub state_dir: PathBuf,
    pub board: BoardConfig,
    #[serde(default)]
    pub cells: CellsConfig,
    pub http: HttpConfig,
    #[serde(default)]
    pub camera: Option<CameraConfig>,
    #[serde(default)]
    pub display: DisplayConfig,
    #[serde(default)]
    pub qr: QrConfig,
    /// The link to the relay. Without it the locker serves only its HTTP API, logs its events,
    /// and cannot validate QR codes.
    #[serde(default)]
    pub cloud: Option<cloud_link::CloudConfig>,
    /// QR validation over HTTP to the orchestrator (the seed's way). When present it is used
    /// instead of the relay link for validation; events still go over the link.
    #[serde(default)]
    pub orchestrator: Option<OrchestratorConfig>,
    #[serde(default)]
    pub technician: TechnicianConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TechnicianConfig {
    /// The technician socket. Default: `$RUNTIME_DIRECTORY/technician.sock` (systemd), else
    /// `technician.sock` in `state_dir`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// The full URL of the validation endpoint (`http://` or `https://`).
    pub url: String,
    /// Bearer token for the orchestrator. Give it here or in `token_file` (one of the two).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How long one validation may take, connection included.
    #[serde(default = "d::orchestrator_timeout_s")]
    pub timeout_s: f64,
}

/// The validation endpoint as the validator uses it: the URI, host, port and whether it is HTTPS.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub uri: hyper::Uri,
    pub host: String,
    pub port: u16,
    pub https: bool,
}

impl OrchestratorConfig {
    /// Parses `url` the way the validator will use it (validation checks it at start-up).
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        parse_endpoint(&self.url)
    }
}

fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => return Err(format!("scheme {other:?}: use http or https")),
        None => return Err("no scheme: write http://… or https://…".into()),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Endpoint {
        uri,
        host,
        port,
        https,
    })
}

impl OrchestratorConfig {
    /// The token, read from `token_file` if that is how it was given.
    pub fn token(&self) -> std::io::Result<String> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(p)) => Ok(std::fs::read_to_string(p)?.trim().to_owned()),
            (None, None) => Err(std::io::Error::other(
                "no orchestrator.token or orchestrator.token_file",
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    pub path: PathBuf,
    #[serde(default = "d::baud")]
    pub baud: u32,
    /// How many cells the board drives (numbers 1..=cells).
    pub cells: u16,
    #[serde(default = "d::travel_timeout_s")]
    pub travel_timeout_s: f64,
    #[serde(default = "d::status_timeout_s")]
    pub status_timeout_s: f64,
    #[serde(default = "d::reopen_interval_s")]
    pub reopen_interval_s: f64,
    #[serde(default = "d::max_timeouts")]
    pub max_timeouts: u32,
    #[serde(default = "d::poll_interval_s")]
    pub poll_interval_s: f64,
    /// A bolt the board refuses to lock is tried again after this, doubling...
    #[serde(default = "d::lock_retry_s")]
    pub lock_retry_s: f64,
    /// ...up to this...
    #[serde(default = "d::lock_retry_max_s")]
    pub lock_retry_max_s: f64,
    /// ...this many times in all; then only a technician's `service N` brings it back.
    #[serde(default = "d::lock_attempts")]
    pub lock_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellsConfig {
    #[serde(default = "d::open_timeout_s")]
    pub open_timeout_s: f64,
    #[serde(default = "d::used_codes_kept")]
    pub used_codes_kept: usize,
}

impl Default for CellsConfig {
    fn default() -> Self {
        Self {
            open_timeout_s: d::open_timeout_s(),
            used_codes_kept: d::used_codes_kept(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token the backend presents. Give it here or in `token_file` (one of the two).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl HttpConfig {
    /// The token, read from `token_file` if that is how it was given.
    pub fn token(&self) -> std::io::Result<String> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(p)) => Ok(std::fs::read_to_string(p)?.trim().to_owned()),
            (None, None) => Err(std::io::Error::other("no http.token or http.token_file")),
        }
    }
}

/// Where frames come from: one type for both agents (`hal::camera::CameraSource`: `v4l2`,
/// `device` through OpenCV, `directory`).
pub use hal::camera::CameraSource;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub source: CameraSource,
    #[serde(default = "d::fps")]
    pub fps: f64,
    /// The same code seen again within this long is the same scan.
    #[serde(default = "d::debounce_s")]
    pub debounce_s: f64,
    /// Ask OpenCV's WeChat decoder when rqrr saw a code but could not read it (`opencv` feature).
    #[serde(default = "d::yes")]
    pub second_opinion: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum DisplayConfig {
    #[default]
    None,
    /// A text terminal: `/dev/tty1` (console), any tty, or a file.
    Terminal {
        path: Option<PathBuf>,
        #[serde(default = "d::yes")]
        ansi: bool,
    },
    /// A character display behind a serial port.
    Serial {
        path: PathBuf,
        #[serde(default = "d::baud")]
        baud: u32,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrConfig {
    /// How long to wait for the backend's verdict on a code.
    #[serde(default = "d::validate_timeout_s")]
    pub validate_timeout_s: f64,
    /// Failed scans one source (the camera, one API client, the link) may make within
    /// `failed_scans_window_s` before it is refused without asking the backend...
    #[serde(default = "d::failed_scans_free")]
    pub failed_scans_free: u32,
    #[serde(default = "d::failed_scans_window_s")]
    pub failed_scans_window_s: f64,
    /// ...for this long, doubling with each further burst up to `scan_backoff_max_s`.
    #[serde(default = "d::scan_backoff_s")]
    pub scan_backoff_s: f64,
    #[serde(default = "d::scan_backoff_max_s")]
    pub scan_backoff_max_s: f64,
}

impl Default for QrConfig {
    fn default() -> Self {
        Self {
            validate_timeout_s: d::validate_timeout_s(),
            failed_scans_free: d::failed_scans_free(),
            failed_scans_window_s: d::failed_scans_window_s(),
            scan_backoff_s: d::scan_backoff_s(),
            scan_backoff_max_s: d::scan_backoff_max_s(),
        }
    }
}

mod d {
    pub fn baud() -> u32 {
        9600
    }
    pub fn travel_timeout_s() -> f64 {
        15.0
    }
    pub fn status_timeout_s() -> f64 {
        2.0
    }
    pub fn reopen_interval_s() -> f64 {
        2.0
    }
    pub fn max_timeouts() -> u32 {
        3
    }
    pub fn poll_interval_s() -> f64 {
        1.0
    }
    pub fn lock_retry_s() -> f64 {
        1.0
    }
    pub fn lock_retry_max_s() -> f64 {
        30.0
    }
    pub fn lock_attempts() -> u32 {
        6
    }
    pub fn open_timeout_s() -> f64 {
        120.0
    }
    pub fn used_codes_kept() -> usize {
        10_000
    }
    pub fn fps() -> f64 {
        10.0
    }
    pub fn debounce_s() -> f64 {
        5.0
    }
    pub fn yes() -> bool {
        true
    }
    pub fn validate_timeout_s() -> f64 {
        10.0
    }
    pub fn failed_scans_free() -> u32 {
        5
    }
    pub fn failed_scans_window_s() -> f64 {
        60.0
    }
    pub fn scan_backoff_s() -> f64 {
        2.0
    }
    pub fn scan_backoff_max_s() -> f64 {
        300.0
    }
    pub fn orchestrator_timeout_s() -> f64 {
        5.0
    }
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        let b = &self.board;
        v.nested("board", |v| {
            v.range("cells", b.cells, 1, 255);
            v.range("baud", b.baud, 300, 4_000_000);
            v.range("travel_timeout_s", b.travel_timeout_s, 0.01, 120.0);
            v.range("status_timeout_s", b.status_timeout_s, 0.01, 60.0);
            v.range("reopen_interval_s", b.reopen_interval_s, 0.01, 300.0);
            v.range("max_timeouts", b.max_timeouts, 1, 100);
            v.range("poll_interval_s", b.poll_interval_s, 0.01, 60.0);
            v.range("lock_retry_s", b.lock_retry_s, 0.01, 600.0);
            v.range("lock_retry_max_s", b.lock_retry_max_s, 0.01, 3600.0);
            v.check(
                b.lock_retry_max_s >= b.lock_retry_s,
                "lock_retry_max_s",
                "must be at least board.lock_retry_s",
            );
            v.range("lock_attempts", b.lock_attempts, 1, 1000);
            v.check(
                !b.path.as_os_str().is_empty(),
                "path",
                "must name the serial port",
            );
        });
        v.range(
            "cells.open_timeout_s",
            self.cells.open_timeout_s,
            1.0,
            3600.0,
        );
        v.range(
            "cells.used_codes_kept",
            self.cells.used_codes_kept,
            1,
            10_000_000,
        );
        match (&self.http.token, &self.http.token_file) {
            (Some(t), None) => v.check(
                t.len() >= 16,
                "http.token",
                "must be at least 16 characters",
            ),
            (None, Some(_)) => {}
            _ => v.fail(
                "http.token",
                "give exactly one of http.token or http.token_file",
            ),
        }
        if let Some(c) = &self.camera {
            v.range("camera.fps", c.fps, 0.1, 120.0);
            v.range("camera.debounce_s", c.debounce_s, 0.0, 600.0);
            c.source.validate("camera.source", v);
            if let CameraSource::Device { .. } = &c.source {
                v.check(
                    cfg!(feature = "opencv-capture"),
                    "camera.source",
                    "a camera device needs the agent built with the `opencv-capture` feature",
                );
            }
        }
        v.range(
            "qr.validate_timeout_s",
            self.qr.validate_timeout_s,
            0.1,
            120.0,
        );
        let q = &self.qr;
        v.range("qr.failed_scans_free", q.failed_scans_free, 1, 10_000);
        v.range(
            "qr.failed_scans_window_s",
            q.failed_scans_window_s,
            1.0,
            86_400.0,
        );
        v.range("qr.scan_backoff_s", q.scan_backoff_s, 0.1, 3600.0);
        v.range("qr.scan_backoff_max_s", q.scan_backoff_max_s, 0.1, 86_400.0);
        v.check(
            q.scan_backoff_max_s >= q.scan_backoff_s,
            "qr.scan_backoff_max_s",
            "must be at least qr.scan_backoff_s",
        );
        if let Some(o) = &self.orchestrator {
            if let Err(reason) = o.endpoint() {
                v.fail("orchestrator.url", reason);
            }
            match (&o.token, &o.token_file) {
                (Some(t), None) => v.check(
                    !t.trim().is_empty(),
                    "orchestrator.token",
                    "must not be empty",
                ),
                (None, Some(_)) => {}
                _ => v.fail(
                    "orchestrator.token",
                    "give exactly one of orchestrator.token or orchestrator.token_file",
                ),
            }
            v.range("orchestrator.timeout_s", o.timeout_s, 0.1, 60.0);
        }
        if let Some(p) = &self.technician.socket {
            // sun_path holds 108 bytes with its NUL
            v.check(
                p.is_absolute() && p.as_os_str().len() < 108,
                "technician.socket",
                "must be an absolute path shorter than 108 bytes",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_endpoint("http://127.0.0.1:9/api/v1/qr/validate").is_ok());
        assert!(parse_endpoint("https://orchestrator.example/api/v1/qr/validate").is_ok());
        assert!(parse_endpoint("ftp://x/").unwrap_err().contains("scheme"));
        assert!(parse_endpoint("orchestrator/api").is_err());
        assert!(parse_endpoint("").is_err());
    }
    use std::path::Path;

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../locker-agent.example.toml");
        let c: Config =
            daemon::config::parse(text, Path::new("locker-agent.example.toml")).unwrap();
        assert_eq!(c.board.cells, 16);
    }

    #[test]
    fn problems_are_named() {
        let text = r#"
locker_id = "7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f"
state_dir = "/tmp/x"
[board]
path = "/dev/ttyUSB0"
cells = 0
[http]
listen = "127.0.0.1:8080"
token = "short"
"#;
        let e = daemon::config::parse::<Config>(text, Path::new("t.toml")).unwrap_err();
        assert_eq!(e.fields(), ["board.cells", "http.token"]);
    }

    /// The commented-out `[orchestrator]` example, switched on, is valid too.
    #[test]
    fn example_orchestrator_section_is_valid() {
        let text: String = include_str!("../locker-agent.example.toml")
            .lines()
            .map(|l| {
                let on = ["# [orchestrator]", "# url =", "# token =", "# timeout_s ="];
                if on.iter().any(|p| l.starts_with(p)) {
                    &l[2..]
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c: Config = daemon::config::parse(&text, Path::new("example")).unwrap();
        let o = c.orchestrator.unwrap();
        assert!(o.url.starts_with("https://"));
        assert_eq!(o.timeout_s, 5.0);
    }

    #[test]
    fn a_v4l2_camera_needs_no_feature() {
        let text = r#"
locker_id = "7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f"
state_dir = "/tmp/x"
[board]
path = "/dev/ttyUSB0"
cells = 4
[http]
listen = "127.0.0.1:8080"
token = "0123456789abcdef0123"
[camera]
source = { kind = "v4l2", device = "/dev/v4l/by-id/usb-cam-video-index0", width = 8 }
"#;
        let e = daemon::config::parse::<Config>(text, Path::new("t.toml")).unwrap_err();
        assert_eq!(e.fields(), ["camera.source.width"]);
        let ok = text.replace("width = 8", "width = 640");
        let c: Config = daemon::config::parse(&ok, Path::new("t.toml")).unwrap();
        assert!(matches!(
            c.camera.unwrap().source,
            CameraSource::V4l2 { height: 480, .. }
        ));
    }

    #[test]
    fn orchestrator_problems_are_named() {
        let text = r#"
locker_id = "7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f"
state_dir = "/tmp/x"
[board]
path = "/dev/ttyUSB0"
cells = 4
[http]
listen = "127.0.0.1:8080"
token = "0123456789abcdef0123"
[orchestrator]
url = "orchestrator:8080/api/v1/qr/validate"
timeout_s = 0
"#;
        let e = daemon::config::parse::<Config>(text, Path::new("t.toml")).unwrap_err();
        assert_eq!(
            e.fields(),
            [
                "orchestrator.url",
                "orchestrator.token",
                "orchestrator.timeout_s"
            ]
        );
    }
}
