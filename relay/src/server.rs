//! The HTTP side: routes, authentication at the upgrade, the locker HTTP bridge, `/health`,
//! `/metrics`, and [`Relay`], which binds, serves (plain or TLS) and shuts down in order.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /ws/drone`, `GET /ws/locker` | agents | WebSocket; `Authorization: Bearer <device token>` and `X-Skypost-Agent-Id: <uuid>` |
//! | `GET /ws/backend` | backend | WebSocket; `Authorization: Bearer <backend token>` |
//! | `POST /api/lockers/{id}/cells/open` (`/cells/close`, `/cells/sync`, `/qr/scan`) | backend | the locker's HTTP API, carried to the locker as `locker_request` |
//! | `GET /health` | anyone | liveness and connection counts |
//! | `GET /metrics` | anyone | Prometheus text |

use crate::auth::AgentKind;
use crate::config::{secs, Config};
use crate::conn::{run_agent, run_backend};
use crate::fleet::{Fleet, FleetError, Revocation};
use crate::gate::{Admission, Gate, GateLimits, GatedListener, Remote};
use crate::hub::{AgentKey, BridgeFailure, Hub};
use crate::metrics::{BridgeOutcome, Side};
use crate::tls::{self, TlsError, TlsListener};
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ConnectInfo;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use protocol::error::codes;
use protocol::locker_api::ApiErrorResponse;
use protocol::ws::{LockerOp, LockerOutcome, LockerResponse};
use serde::de::DeserializeOwned;
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, info_span, warn, Instrument as _};
use tungstenite::handshake::derive_accept_key;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("no fleet file is configured: the agents are inline in the relay's config")]
    NoFleetFile,
}

/// What a fleet reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetReload {
    pub drones: usize,
    pub lockers: usize,
    /// Agents closed with 4401 (removed, disabled, token changed) and why.
    pub revoked: Vec<(AgentKey, Revocation)>,
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    bridge_timeout: Duration,
    bridge_body_limit: usize,
    /// Every connection task holds a clone; shutdown waits until all are dropped.
    drain: mpsc::Sender<()>,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws/drone", get(ws_drone))
        .route("/ws/locker", get(ws_locker))
        .route("/ws/backend", get(ws_backend))
        .route("/api/lockers/{locker_id}/cells/open", post(cells_open))
        .route("/api/lockers/{locker_id}/cells/close", post(cells_close))
        .route("/api/lockers/{locker_id}/cells/sync", post(cells_sync))
        .route("/api/lockers/{locker_id}/qr/scan", post(qr_scan))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The seed's error body with a status.
fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(ApiErrorResponse::new(code, message))).into_response()
}

fn unauthorized() -> Response {
    let mut r = api_error(
        StatusCode::UNAUTHORIZED,
        codes::UNAUTHORIZED,
        "missing or wrong credentials",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

// -- WebSocket upgrades ----------------------------------------------------------------------

async fn ws_drone(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    req: Request,
) -> Response {
    agent_upgrade(s, AgentKind::Drone, &remote.admission, req).await
}

async fn ws_locker(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    req: Request,
) -> Response {
    agent_upgrade(s, AgentKind::Locker, &remote.admission, req).await
}

/// A WebSocket upgrade the request asks for, checked: the `Sec-WebSocket-Accept` to answer
/// with, and hyper's handle on the connection once the 101 has gone.
struct Upgrade {
    accept: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl Upgrade {
    /// The relay does the handshake itself rather than through axum's `on_upgrade`, which
    /// spawns its own block around the connection's future (keeping its captures, the socket
    /// config and the protocol header beside it in each of twenty thousand tasks). axum's
    /// extractor still checks the request (GET, `Connection`, `Upgrade`, version 13, a key, a
    /// connection hyper can upgrade) and answers a bad one as it always did; only its
    /// `on_upgrade` is not used. (No `Sec-WebSocket-Protocol`: the relay offers none.)
    async fn check(parts: &mut Parts) -> Result<Self, Response> {
        // a handle on the same upgrade: the extractor takes its own out of the extensions
        let on_upgrade = parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned();
        if let Err(rejection) =
            <WebSocketUpgrade as FromRequestParts<()>>::from_request_parts(parts, &()).await
        {
            return Err(rejection.into_response());
        }
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY);
        let (Some(on_upgrade), Some(key)) = (on_upgrade, key) else {
            // the extractor checked both: not reached
            return Err(StatusCode::UPGRADE_REQUIRED.into_response());
        };
        let Ok(accept) = HeaderValue::try_from(derive_accept_key(key.as_bytes())) else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        Ok(Self { accept, on_upgrade })
    }

    /// Starts `task` (which awaits `on_upgrade` itself) and answers 101.
    fn switch(
        accept: HeaderValue,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Response {
        tokio::spawn(task);
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        r
    }
}

/// Credentials are checked before the upgrade is even looked at: a wrong token gets 401 and
/// the socket never becomes a WebSocket, so not one frame from it is read.
async fn agent_upgrade(
    s: AppState,
    kind: AgentKind,
    admission: &Admission,
    req: Request,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    let side = crate::hub::agent_side(kind);
    let (id, mark) = match s.hub.auth.agent(kind, &parts.headers) {
        Ok(accepted) => {
            admission.authenticated();
            accepted
        }
        Err(why) => {
            s.hub.metrics.refused(side, why);
            warn!(
                kind = kind.as_str(),
                reason = why.as_str(),
                "agent refused at upgrade"
            );
            return unauthorized();
        }
    };
    let upgrade = match Upgrade::check(&mut parts).await {
        Ok(u) => u,
        Err(response) => return response,
    };
    drop(parts);
    let span = info_span!("agent", kind = kind.as_str(), agent_id = %id);
    // run_agent's future is the task itself: nothing around it but the span
    let task = run_agent(s.hub, upgrade.on_upgrade, kind, id, mark, s.drain).instrument(span);
    Upgrade::switch(upgrade.accept, task)
}

async fn ws_backend(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    req: Request,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    if let Err(why) = s.hub.auth.backend(&parts.headers) {
        s.hub.metrics.refused(Side::Backend, why);
        warn!(reason = why.as_str(), "backend refused at upgrade");
        return unauthorized();
    }
    remote.admission.authenticated();
    let upgrade = match Upgrade::check(&mut parts).await {
        Ok(u) => u,
        Err(response) => return response,
    };
    drop(parts);
    let task = run_backend(s.hub, upgrade.on_upgrade, s.drain).instrument(info_span!("backend"));
    Upgrade::switch(upgrade.accept, task)
}

// -- HTTP bridge -----------------------------------------------------------------------------

// The body is taken as a stream (`Body`), not `Bytes`: axum would read up to 2 MiB of it before
// the handler could look at the token.
async fn cells_open(
    s: State<AppState>,
    a: Admitted,
    p: Path<String>,
    h: HeaderMap,
    b: Body,
) -> Response {
    bridge(s, a, p, h, b, "cells/open", LockerOp::CellsOpen).await
}
async fn cells_close(
    s: State<AppState>,
    a: Admitted,
    p: Path<String>,
    h: HeaderMap,
    b: Body,
) -> Response {
    bridge(s, a, p, h, b, "cells/close", LockerOp::CellsClose).await
}
async fn cells_sync(
    s: State<AppState>,
    a: Admitted,
    p: Path<String>,
    h: HeaderMap,
    b: Body,
) -> Response {
    bridge(s, a, p, h, b, "cells/sync", LockerOp::CellsSync).await
}
async fn qr_scan(
    s: State<AppState>,
    a: Admitted,
    p: Path<String>,
    h: HeaderMap,
    b: Body,
) -> Response {
    bridge(s, a, p, h, b, "qr/scan", LockerOp::QrScan).await
}

type Admitted = ConnectInfo<Remote>;

/// One locker API call carried over the relay: authenticate, parse the seed's body, send it to
/// the locker as `locker_request`, and answer with the locker's status and body.
async fn bridge<T: DeserializeOwned>(
    State(s): State<AppState>,
    ConnectInfo(remote): Admitted,
    Path(locker): Path<String>,
    headers: HeaderMap,
    body: Body,
    route: &'static str,
    op: fn(T) -> LockerOp,
) -> Response {
    let m = &s.hub.metrics;
    if let Err(why) = s.hub.auth.backend(&headers) {
        m.refused(Side::Backend, why);
        m.bridge(BridgeOutcome::Unauthorized);
        return unauthorized();
    }
    remote.admission.authenticated();
    let Ok(locker_id) = Uuid::parse_str(&locker) else {
        m.bridge(BridgeOutcome::UnknownLocker);
        return api_error(
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_AGENT,
            format!("no locker `{locker}`: locker ids are UUIDs"),
        );
    };
    let too_large = || {
        m.bridge(BridgeOutcome::BadRequest);
        api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::MESSAGE_TOO_LARGE,
            format!("body is over {} bytes", s.bridge_body_limit),
        )
    };
    // a declared length over the limit is refused before a byte of the body is read
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.bridge_body_limit as u64) {
        return too_large();
    }
    let body = match axum::body::to_bytes(body, s.bridge_body_limit).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return too_large(),
        Err(e) => {
            m.bridge(BridgeOutcome::BadRequest);
            return api_error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_PAYLOAD,
                format!("body could not be read: {e}"),
            );
        }
    };
    let request: T = match serde_path_to_json(&body) {
        Ok(r) => r,
        Err(reason) => {
            m.bridge(BridgeOutcome::BadRequest);
            return api_error(StatusCode::BAD_REQUEST, codes::INVALID_PAYLOAD, reason);
        }
    };
    let span = info_span!("bridge", route, locker_id = %locker_id);
    let result = s
        .hub
        .locker_call(locker_id, op(request), s.bridge_timeout)
        .instrument(span)
        .await;
    match result {
        Ok(response) => {
            m.bridge(BridgeOutcome::Answered);
            locker_answer(response)
        }
        Err(BridgeFailure::UnknownLocker) => {
            m.bridge(BridgeOutcome::UnknownLocker);
            api_error(
                StatusCode::NOT_FOUND,
                codes::UNKNOWN_AGENT,
                format!("no locker {locker_id} in the relay's config"),
            )
        }
        Err(e @ (BridgeFailure::Offline | BridgeFailure::Disconnected)) => {
            m.bridge(BridgeOutcome::LockerOffline);
            api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::AGENT_OFFLINE,
                format!("locker {locker_id}: {e}"),
            )
        }
        Err(BridgeFailure::Timeout) => {
            m.bridge(BridgeOutcome::Timeout);
            api_error(
                StatusCode::GATEWAY_TIMEOUT,
                codes::TIMEOUT,
                format!(
                    "locker {locker_id} did not answer within {:.1} s",
                    s.bridge_timeout.as_secs_f64()
                ),
            )
        }
    }
}

/// Did reading the body stop at the size limit (rather than fail on the socket)?
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Parses a JSON body, naming the field that was wrong.
fn serde_path_to_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("body: {}", e.into_inner())
        } else {
            format!("body.{path}: {}", e.into_inner())
        }
    })
}

/// The locker's answer as the locker's own HTTP API would have given it.
fn locker_answer(r: LockerResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match r.outcome {
        LockerOutcome::CellsSynced(b) => serde_json::to_value(b),
        LockerOutcome::CellOpened(b) => serde_json::to_value(b),
        LockerOutcome::CellClosed(b) => serde_json::to_value(b),
        LockerOutcome::QrScanned(b) => serde_json::to_value(b),
        LockerOutcome::Error(error) => serde_json::to_value(ApiErrorResponse {
            success: false,
            data: None,
            error,
        }),
    };
    match body {
        Ok(body) => (status, axum::Json(body)).into_response(),
        Err(e) => api_error(StatusCode::BAD_GATEWAY, codes::INTERNAL, e.to_string()),
    }
}

// -- health and metrics ----------------------------------------------------------------------

async fn health(State(s): State<AppState>) -> Response {
    let m = &s.hub.metrics;
    let cluster = s.hub.cluster();
    // a relay cut off from the broker still serves its own agents: degraded, not down
    let status = match cluster {
        Some(c) if !c.is_up() => "degraded",
        _ => "ok",
    };
    axum::Json(serde_json::json!({
        "status": status,
        "cluster": cluster.map(|c| c.health()),
        "version": env!("CARGO_PKG_VERSION"),
        "connections": {
            "drones": m.open_connections(Side::Drone),
            "lockers": m.open_connections(Side::Locker),
            "backends": m.open_connections(Side::Backend),
        }
    }))
    .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        {
            let mut text = s.hub.metrics.render();
            if let Some(c) = s.hub.cluster() {
                c.render(&mut text);
            }
            text
        },
    )
        .into_response()
}

// -- the server ------------------------------------------------------------------------------

/// The fleet file and what was last seen of it.
struct FleetFile {
    path: std::path::PathBuf,
    watch: Option<Duration>,
    seen: std::sync::Mutex<Option<FileStamp>>,
}

/// Inode, size and change times: what the watch compares. The inode catches a file replaced by
/// rename (how editors and config tools write) even within the file system's timestamp
/// granularity (a few ms), where the times and the size can all be the same.
type FileStamp = (u64, u64, i64, i64, i64, i64);

fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// A running relay.
pub struct Relay {
    fleet_file: Option<FleetFile>,
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), RelayError>>,
    drained: mpsc::Receiver<()>,
    drain_timeout: Duration,
}

impl Relay {
    /// Binds the listener (and loads TLS material) and starts serving.
    pub async fn start(config: &Config) -> Result<Self, RelayError> {
        let tls = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let listen = config.server.listen;
        let tcp = TcpListener::bind(listen)
            .await
            .map_err(|source| RelayError::Bind {
                addr: listen,
                source,
            })?;
        let addr = tcp.local_addr().map_err(|source| RelayError::Bind {
            addr: listen,
            source,
        })?;
        let fleet = match &config.fleet {
            Some(f) => Some(Fleet::load(&f.file)?),
            None => None,
        };
        let fleet_file = config.fleet.as_ref().map(|f| FleetFile {
            path: f.file.clone(),
            watch: (f.watch_interval_s > 0.0).then(|| secs(f.watch_interval_s)),
            seen: std::sync::Mutex::new(file_stamp(&f.file)),
        });
        let hub = Arc::new(Hub::new(config, fleet.as_ref()));
        if let Some(c) = &config.cluster {
            hub.set_cluster(crate::cluster::start(c, &hub));
        }
        let gate = Gate::new(
            GateLimits {
                header_timeout: secs(config.server.header_timeout_s),
                max_total: config.server.max_unauthenticated,
                max_per_source: config.server.max_unauthenticated_per_source,
            },
            hub.metrics.clone(),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (drain, drained) = mpsc::channel(1);
        let state = AppState {
            hub: hub.clone(),
            bridge_timeout: secs(config.bridge.timeout_s),
            bridge_body_limit: config.bridge.max_body_bytes,
            drain,
        };
        let app = router(state).into_make_service_with_connect_info::<Remote>();
        let mut stop = shutdown_rx;
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let server = match tls {
            None => {
                let listener = GatedListener::new(tcp, gate);
                let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                tokio::spawn(async move { serve.into_future().await.map_err(RelayError::Serve) })
            }
            Some(acceptor) => {
                let listener =
                    TlsListener::new(tcp, gate, acceptor, secs(config.server.handshake_timeout_s));
                let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                tokio::spawn(async move { serve.into_future().await.map_err(RelayError::Serve) })
            }
        };
        let (drones, lockers) = hub.auth.counts();
        info!(%addr, tls = config.server.tls.is_some(), drones, lockers, fleet_file = ?fleet_file.as_ref().map(|f| &f.path), "relay listening");
        Ok(Self {
            fleet_file,
            addr,
            hub,
            shutdown,
            server,
            drained,
            drain_timeout: secs(config.server.drain_timeout_s),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub, for in-process inspection (tests read its metrics).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Reads the fleet file again and puts it in force: new agents may connect at once, removed
    /// or disabled ones (or whose token changed) are closed with 4401 and the reason, every other
    /// connection is untouched. A file that does not parse or validate is refused (the error
    /// names its line) and the list in force stays.
    pub fn reload_fleet(&self) -> Result<FleetReload, RelayError> {
        let file = self.fleet_file.as_ref().ok_or(RelayError::NoFleetFile)?;
        let stamp = file_stamp(&file.path);
        *file
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stamp;
        let m = &self.hub.metrics;
        let fleet = match Fleet::load(&file.path) {
            Ok(f) => f,
            Err(e) => {
                m.fleet_reload(false);
                warn!(error = %e, "fleet file refused: the list in force is kept");
                return Err(e.into());
            }
        };
        let revoked = self.hub.replace_fleet(&fleet);
        m.fleet_reload(true);
        m.revoked(revoked.len());
        for (key, why) in &revoked {
            info!(kind = key.0.as_str(), agent_id = %key.1, reason = why.reason(), "agent revoked: closing");
        }
        let (drones, lockers) = self.hub.auth.counts();
        info!(drones, lockers, revoked = revoked.len(), "fleet reloaded");
        Ok(FleetReload {
            drones,
            lockers,
            revoked,
        })
    }

    /// Has the fleet file changed (size or modification time) since it was last read?
    fn fleet_file_changed(&self) -> bool {
        let Some(file) = &self.fleet_file else {
            return false;
        };
        let now = file_stamp(&file.path);
        let seen = file
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        now != *seen
    }

    /// Is the relay doing its job? The HTTP server is still running and the hub answers (each
    /// of its locks can be taken; see [`Hub::probe`]).
    pub async fn healthy(&self) -> bool {
        !self.server.is_finished() && self.hub.probe().await
    }

    /// The relay's own loop, until `stop` resolves: tells systemd it is ready, then feeds the
    /// watchdog from here, and only while [`Relay::healthy`] says so. A free-running timer task
    /// would keep feeding a relay whose hub is deadlocked; this loop stops turning with it, and
    /// systemd restarts the unit (`WatchdogSec=`, `Restart=on-failure`).
    ///
    /// It also reloads the fleet file on SIGHUP (`systemctl reload`) and, with
    /// `fleet.watch_interval_s`, when the file changes.
    /// `hangup` is SIGHUP's stream, installed by the caller before the relay listens (a SIGHUP
    /// before its handler exists would end the process).
    pub async fn supervise<F: std::future::Future>(
        &self,
        systemd: &mut daemon::systemd::Service,
        mut hangup: Option<tokio::signal::unix::Signal>,
        stop: F,
    ) -> F::Output {
        systemd.ready(&format!("listening on {}", self.addr));
        let mut stop = std::pin::pin!(stop);
        let mut watch = self.fleet_file.as_ref().and_then(|f| f.watch).map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            tokio::select! {
                out = &mut stop => return out,
                Some(()) = async {
                    match &mut hangup {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    info!("SIGHUP: reloading the fleet file");
                    if let Err(RelayError::NoFleetFile) = self.reload_fleet() {
                        info!("no fleet file configured: nothing to reload");
                    }
                }
                _ = async {
                    match &mut watch {
                        Some(w) => { w.tick().await; }
                        None => std::future::pending().await,
                    }
                } => {
                    if self.fleet_file_changed() {
                        info!("fleet file changed: reloading");
                        let _ = self.reload_fleet();
                    }
                }
                _ = systemd.watchdog_due() => {
                    if self.healthy().await {
                        systemd.alive();
                    } else {
                        warn!("the relay is wedged (HTTP server stopped or hub locked): not feeding the watchdog");
                    }
                }
            }
        }
    }

    /// Stops accepting, closes every WebSocket with 1001 "going away", and waits (up to
    /// `server.drain_timeout_s`) for the connection tasks to finish.
    pub async fn shutdown(mut self) -> Result<(), RelayError> {
        let _ = self.shutdown.send(true);
        // every open WebSocket is told "going away" through its queue (see `Hub::shutdown`)
        self.hub.shutdown();
        let drain_timeout = self.drain_timeout;
        let waited = tokio::time::timeout(drain_timeout, async {
            let served = (&mut self.server).await;
            // every connection task holds a drain sender; recv() ends when the last is gone
            let _ = self.drained.recv().await;
            served
        })
        .await;
        match waited {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(RelayError::Serve(std::io::Error::other(join))),
            Err(_) => {
                warn!(
                    timeout_s = drain_timeout.as_secs_f64(),
                    "connections still open at shutdown"
                );
                self.server.abort();
                Ok(())
            }
        }
    }
}
