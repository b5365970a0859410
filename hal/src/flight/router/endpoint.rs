//! `[[flight_controller.endpoints]]`: the ground stations that share the autopilot's link.
//!
//! ```toml
//! [[flight_controller.endpoints]]
//! name = "qgc"                        # in logs, `drone-agent status` and pilot_override's "who"
//! connection = "udpout:10.8.0.1:14550" # a GCS over the VPN; or udpin:ADDR:PORT, tcpin:ADDR:PORT
//! mode = "full"                       # or "read_only": streams and parameters, no commands
//! signing_key_file = "/etc/skypost/gcs.key"  # optional: MAVLink 2 signing (32 bytes, or 64 hex)
//! queue = 256                         # frames waiting for this endpoint; more are dropped
//! ```

use super::super::connection::ConnectionString;
use daemon::config::Validator;
use std::path::{Path, PathBuf};

/// One ground-station endpoint of the router.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Letters, digits, `-` and `_` (it names the signing state file).
    pub name: String,
    /// `udpout:HOST:PORT` (we send to a GCS), `udpin:ADDR:PORT` (a GCS sends to us first; we
    /// answer the latest sender), `tcpin:ADDR:PORT` (GCSes connect; several at once).
    pub connection: ConnectionString,
    pub mode: EndpointMode,
    /// The MAVLink 2 signing key (never in the TOML): 32 raw bytes, or 64 hex digits.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    #[serde(default = "default_queue")]
    pub queue: usize,
}

/// What an endpoint may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointMode {
    /// Everything a GCS sends is routed, commands included.
    Full,
    /// Watch only: [`super::read_only_allows`]; the rest is dropped with a logged refusal and no
    /// reply (no COMMAND_ACK, no STATUSTEXT: the GCS times out as on a lost message).
    ReadOnly,
}

fn default_queue() -> usize {
    256
}

/// A signing key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: expected 32 bytes or 64 hex digits, found {len} bytes")]
    Format { path: PathBuf, len: usize },
}

/// Reads a signing key: exactly 32 bytes, or 64 hex digits (surrounding whitespace ignored).
/// MAVProxy's `signing setup PASSPHRASE` key is `printf %s PASSPHRASE | sha256sum | cut -c1-64`.
pub fn read_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = || KeyError::Format {
        path: path.to_owned(),
        len: bytes.len(),
    };
    if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?.trim();
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

/// Validates the endpoints under `endpoints.N.` (inside the caller's nesting).
pub fn validate(endpoints: &[EndpointConfig], v: &mut Validator) {
    let mut names = std::collections::HashSet::new();
    let mut listens = std::collections::HashSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let at = |f: &str| format!("endpoints.{i}.{f}");
        v.check(
            !e.name.is_empty()
                && e.name.len() <= 32
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            &at("name"),
            format!(
                "`{}`: 1 to 32 letters, digits, `-` or `_` (it names a state file)",
                e.name
            ),
        );
        v.check(
            names.insert(e.name.clone()),
            &at("name"),
            format!("`{}` is used by two endpoints", e.name),
        );
        match &e.connection {
            ConnectionString::UdpOut { .. } => {}
            ConnectionString::UdpIn { host, port } | ConnectionString::TcpIn { host, port } => {
                let udp = matches!(e.connection, ConnectionString::UdpIn { .. });
                v.check(
                    listens.insert((udp, host.clone(), *port)),
                    &at("connection"),
                    format!("{} is listened on by two endpoints", e.connection),
                );
            }
            other => v.fail(
                &at("connection"),
                format!(
                    "{other}: an endpoint is udpout:HOST:PORT, udpin:ADDR:PORT or tcpin:ADDR:PORT"
                ),
            ),
        }
        v.range(&at("queue"), e.queue, 8, 65_536);
        if let Some(path) = &e.signing_key_file {
            if let Err(error) = read_key(path) {
                v.fail(&at("signing_key_file"), error);
            }
        }
    }
}
