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
use crate::conn::{run_agent, run_backend, ConnSettings};
use crate::gate::{Admission, Gate, GateLimits, GatedListener, Remote};
use crate::hub::{BridgeFailure, Hub};
use crate::metrics::{BridgeOutcome, Side};
use crate::tls::{self, TlsError, TlsListener};
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ConnectInfo;
use axum::extract::{Path, State};
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
}

/// Buffer sizes and limits handed to each WebSocket upgrade.
#[derive(Debug, Clone, Copy)]
struct SocketSizes {
    agent_read: usize,
    backend_read: usize,
    backend_write: usize,
    max_message: usize,
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    settings: ConnSettings,
    sizes: SocketSizes,
    bridge_timeout: Duration,
    bridge_body_limit: usize,
    shutdown: watch::Receiver<bool>,
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
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    agent_upgrade(s, AgentKind::Drone, &remote.admission, &headers, ws)
}

async fn ws_locker(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    agent_upgrade(s, AgentKind::Locker, &remote.admission, &headers, ws)
}

/// Credentials are checked before the upgrade is even looked at: a wrong token gets 401 and
/// the socket never becomes a WebSocket, so not one frame from it is read.
fn agent_upgrade(
    s: AppState,
    kind: AgentKind,
    admission: &Admission,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let side = crate::hub::agent_side(kind);
    let id = match s.hub.auth.agent(kind, headers) {
        Ok(id) => {
            admission.authenticated();
            id
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
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let sizes = s.sizes;
    let span = info_span!("agent", kind = kind.as_str(), agent_id = %id);
    ws.read_buffer_size(sizes.agent_read)
        // agents get few, small frames: write each through at once, keep no buffer around
        .write_buffer_size(0)
        .max_write_buffer_size(sizes.max_message.saturating_mul(2))
        .max_message_size(sizes.max_message)
        .max_frame_size(sizes.max_message)
        // The callback returns run_agent's future itself, not an async block around it: a
        // block would keep its own copy of every captured value (the socket included) beside
        // the future it awaits, in each of ten thousand tasks.
        .on_upgrade(move |socket| {
            run_agent(s.hub, socket, kind, id, s.settings, s.shutdown, s.drain).instrument(span)
        })
}

async fn ws_backend(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(why) = s.hub.auth.backend(&headers) {
        s.hub.metrics.refused(Side::Backend, why);
        warn!(reason = why.as_str(), "backend refused at upgrade");
        return unauthorized();
    }
    remote.admission.authenticated();
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let sizes = s.sizes;
    let span = info_span!("backend");
    ws.read_buffer_size(sizes.backend_read)
        .write_buffer_size(sizes.backend_write)
        .max_write_buffer_size(
            sizes
                .backend_write
                .saturating_add(sizes.max_message.saturating_mul(2)),
        )
        .max_message_size(sizes.max_message)
        .max_frame_size(sizes.max_message)
        .on_upgrade(move |socket| {
            run_backend(s.hub, socket, s.settings, s.shutdown, s.drain).instrument(span)
        })
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
    axum::Json(serde_json::json!({
        "status": "ok",
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
        s.hub.metrics.render(),
    )
        .into_response()
}

// -- the server ------------------------------------------------------------------------------

/// A running relay.
pub struct Relay {
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
        let hub = Arc::new(Hub::new(config));
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
            settings: ConnSettings::from_config(config),
            sizes: SocketSizes {
                agent_read: config.websocket.agent_read_buffer,
                backend_read: config.websocket.backend_read_buffer,
                backend_write: config.websocket.backend_write_buffer,
                max_message: config.websocket.max_message_bytes,
            },
            bridge_timeout: secs(config.bridge.timeout_s),
            bridge_body_limit: config.bridge.max_body_bytes,
            shutdown: shutdown_rx.clone(),
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
        info!(%addr, tls = config.server.tls.is_some(), drones = config.drones.len(), lockers = config.lockers.len(), "relay listening");
        Ok(Self {
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

    /// Stops accepting, closes every WebSocket with 1001 "going away", and waits (up to
    /// `server.drain_timeout_s`) for the connection tasks to finish.
    pub async fn shutdown(mut self) -> Result<(), RelayError> {
        let _ = self.shutdown.send(true);
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
