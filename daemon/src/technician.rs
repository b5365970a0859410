//! The technician's Unix socket, shared by both agents: where it lives, how it is bound, the
//! exchange on it, and the client side with its exit codes.
//!
//! **Access control is the socket file's permissions.** It is created mode 0660 in the service's
//! runtime directory (`RuntimeDirectory=`, mode 0750, owned by the service user): root and the
//! service's group may use it, nobody else.
//!
//! **Exchange.** The client sends one request line (a few words, at most 256 bytes, within 5 s);
//! the agent answers one line of JSON and closes. A refusal is `{"error": "..."}`. What the words
//! mean is each agent's business (its `technician` module); this one only moves lines.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn, Instrument as _};

/// The socket's file name inside the runtime (or state) directory.
pub const SOCKET_NAME: &str = "technician.sock";
/// The longest request line accepted; a technician's client sends a few words.
const MAX_REQUEST: u64 = 256;
/// A client that does not send its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the running agent listens: the configured path, else `$RUNTIME_DIRECTORY` (set by
/// systemd from the unit's `RuntimeDirectory=`), else the state directory (started by hand).
pub fn socket_path(configured: Option<&Path>, state_dir: &Path) -> PathBuf {
    if let Some(p) = configured {
        return p.to_owned();
    }
    match std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several directories separated by ':'; ours is the first
        Some(dirs) if !dirs.is_empty() => {
            let dirs = dirs.to_string_lossy().into_owned();
            PathBuf::from(dirs.split(':').next().unwrap_or_default()).join(SOCKET_NAME)
        }
        _ => state_dir.join(SOCKET_NAME),
    }
}

/// Binds the socket (replacing a stale one from a previous run) with mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => debug!(path = %path.display(), "removed a stale technician socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves technicians until the task is dropped: each connection is its own task, its request
/// line goes to `handler`, whose JSON goes back as the reply.
pub async fn serve<H, Fut>(listener: UnixListener, handler: H)
where
    H: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = serde_json::Value> + Send,
{
    if let Ok(addr) = listener.local_addr() {
        info!(socket = ?addr.as_pathname(), "technician socket listening");
    }
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, handler).await {
                        debug!(error = %e, "technician connection ended early");
                    }
                });
            }
            Err(e) => {
                // EMFILE and the like: log, wait a little, go on (never a hot loop)
                warn!(error = %e, "technician socket accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn answer<H, Fut>(stream: UnixStream, handler: H) -> std::io::Result<()>
where
    H: Fn(String) -> Fut,
    Fut: Future<Output = serde_json::Value>,
{
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let request = line.trim().to_owned();
    let span = tracing::info_span!("technician", request = %request);
    let reply = async {
        info!("technician request");
        handler(request).await
    }
    .instrument(span)
    .await;
    write.write_all(reply.to_string().as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// The reply for a refusal.
pub fn refusal(why: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({ "error": why.to_string() })
}

/// Client-side errors, each with its exit code ([`ClientError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path}: {source} (is the agent's service running? are you root or in its group?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent answered something unreadable: {0}")]
    Reply(#[from] serde_json::Error),
    /// The agent said no (or a check failed), with its reason.
    #[error("{0}")]
    Refused(String),
    /// The client itself could not finish (e.g. writing a file it was asked for).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// 3: agent not reachable (not running, or no permission on the socket); 4: a garbled
    /// exchange; 5: refused or failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connect { .. } => crate::exit::UNREACHABLE,
            ClientError::Io(_) | ClientError::Reply(_) => crate::exit::GARBLED,
            ClientError::Refused(_) | ClientError::Local(_) => crate::exit::REFUSED,
        }
    }
}

/// Sends one request line and returns the JSON reply (an `{"error"}` reply is
/// [`ClientError::Refused`]). `reply_within` covers what the request makes the agent do.
pub async fn request(
    path: &Path,
    line: &str,
    reply_within: Duration,
) -> Result<serde_json::Value, ClientError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{line}\n").as_bytes()).await?;
    let mut reply = String::new();
    let mut reader = BufReader::new(read);
    tokio::time::timeout(reply_within, reader.read_line(&mut reply))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))??;
    let value: serde_json::Value = serde_json::from_str(reply.trim())?;
    if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
        return Err(ClientError::Refused(e.to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_line_in_one_json_line_out_and_refusals_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let listener = bind(&path).unwrap();
        let server = tokio::spawn(serve(listener, |line: String| async move {
            match line.as_str() {
                "ping" => serde_json::json!({ "pong": true }),
                other => refusal(format!("unknown {other:?}")),
            }
        }));
        let v = request(&path, "ping", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(v["pong"], true);
        let e = request(&path, "nope", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("unknown \"nope\""), "{e}");
        server.abort();
        let e = request(
            &dir.path().join("absent.sock"),
            "ping",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn configured_path_wins() {
        let p = socket_path(Some(Path::new("/x/t.sock")), Path::new("/var/lib/s"));
        assert_eq!(p, Path::new("/x/t.sock"));
    }
}
