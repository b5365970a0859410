//! The seed's locker HTTP API, with a bearer token (the seed had none).
//!
//! | route | body in | body out |
//! |---|---|---|
//! | `POST /api/cells/sync` | `CellsSyncRequest` | `CellsSyncResponse` |
//! | `POST /api/cells/open` | `CellsOpenRequest` | `CellsOpenResponse` |
//! | `POST /api/cells/close` | `CellsCloseRequest` | `CellsCloseResponse` |
//! | `POST /api/qr/scan` | `QrScanRequest` | `QrScanResponse` (429 `RATE_LIMITED` while a client that keeps sending bad codes backs off) |
//! | `GET /health` | — | `HealthResponse` (no token needed: it says nothing secret, and a load balancer or a technician's `curl` must reach it) |
//!
//! Every failure, including a missing token and JSON that does not parse, answers with the seed's
//! error body `{"success": false, "data": null, "error": {"code", "message"}}`. Bodies are parsed
//! here rather than by axum's `Json` extractor so that those failures use that body too and name
//! the field that was wrong.

use crate::failure::ApiFailure;
use crate::locker::{Locker, ScanSource};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hal::lockboard::LockBoard;
use protocol::error::codes;
use protocol::locker_api::{
    ApiErrorResponse, CellsCloseRequest, CellsOpenRequest, CellsSyncRequest, QrScanRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request body accepted (a sync of a few hundred cells is a few tens of KB).
const MAX_BODY: usize = 256 * 1024;

struct AppState<B> {
    locker: Arc<Locker<B>>,
    token: String,
}

/// The router, ready for `axum::serve` (serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so failed QR scans are limited per client).
pub fn router<B: LockBoard>(locker: Arc<Locker<B>>, token: String) -> Router {
    let state = Arc::new(AppState { locker, token });
    Router::new()
        .route("/api/cells/sync", post(sync::<B>))
        .route("/api/cells/open", post(open::<B>))
        .route("/api/cells/close", post(close::<B>))
        .route("/api/qr/scan", post(qr_scan::<B>))
        .route("/health", get(health::<B>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ApiErrorResponse::new(self.code, self.message))).into_response()
    }
}

fn ok<T: Serialize>(r: Result<T, ApiFailure>) -> Response {
    match r {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(f) => f.into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive
/// (RFC 9110 §11.1: `bearer`, `BEARER` are the same scheme, and the relay accepts them too).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares the bearer token in constant time (a timing side channel would leak it byte by byte).
fn authorised(headers: &HeaderMap, token: &str) -> Result<(), ApiFailure> {
    let given = bearer(headers);
    let Some(given) = given else {
        return Err(ApiFailure::new(
            401,
            codes::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>` header",
        ));
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ x);
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(ApiFailure::new(401, codes::UNAUTHORIZED, "bad token"))
    }
}

/// The raw request body, read under [`MAX_BODY`]. Axum's own `Bytes` extractor answers a body
/// that is too large (or cut off mid-read) with a plain-text 413/400 before the handler runs;
/// this one turns those rejections into the seed's error body like every other failure.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rejection) => {
                let status = rejection.status();
                Err(if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiFailure::new(
                        413,
                        codes::MESSAGE_TOO_LARGE,
                        format!("request body is over the {} KiB limit", MAX_BODY / 1024),
                    )
                } else {
                    ApiFailure::new(
                        status.as_u16(),
                        codes::MALFORMED_JSON,
                        format!("cannot read the request body: {}", rejection.body_text()),
                    )
                })
            }
        }
    }
}

/// A request body as the handlers read it: JSON, then the type with the failing field named.
/// Public for the fuzz crate (every body the API accepts goes through here).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiFailure> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: serde_json::Value = serde::Deserialize::deserialize(&mut de).map_err(|e| {
        ApiFailure::new(400, codes::MALFORMED_JSON, format!("body is not JSON: {e}"))
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiFailure::new(
            400,
            codes::INVALID_PAYLOAD,
            format!("{path}: {}", e.into_inner()),
        )
    })
}

/// An authenticated request body: the bearer token checked, then the body parsed as `T`. Every
/// route but `/health` takes its body through this, so none can forget the token. The body is
/// read before the token is checked, as it always was (an oversized body is a 413 either way).
struct Authed<T>(T);

impl<B: LockBoard, T: DeserializeOwned> FromRequest<Arc<AppState<B>>> for Authed<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &Arc<AppState<B>>) -> Result<Self, ApiFailure> {
        let headers = req.headers().clone();
        let Body(body) = Body::from_request(req, state).await?;
        authorised(&headers, &state.token)?;
        parse(&body).map(Authed)
    }
}

async fn sync<B: LockBoard>(
    State(s): State<Arc<AppState<B>>>,
    Authed(req): Authed<CellsSyncRequest>,
) -> Response {
    ok(s.locker.sync(req).await)
}

async fn open<B: LockBoard>(
    State(s): State<Arc<AppState<B>>>,
    Authed(req): Authed<CellsOpenRequest>,
) -> Response {
    ok(s.locker.open(req).await)
}

async fn close<B: LockBoard>(
    State(s): State<Arc<AppState<B>>>,
    Authed(req): Authed<CellsCloseRequest>,
) -> Response {
    ok(s.locker.close(req).await)
}

async fn qr_scan<B: LockBoard>(
    State(s): State<Arc<AppState<B>>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Authed(req): Authed<QrScanRequest>,
) -> Response {
    // Failed scans are limited per client address (served with connect info, as the agent does).
    let source = ScanSource::Api(peer.map(|Extension(ConnectInfo(a))| a.ip()));
    ok(s.locker.qr_scan_from(&req.qr_data, source).await)
}

async fn health<B: LockBoard>(State(s): State<Arc<AppState<B>>>) -> Response {
    (StatusCode::OK, Json(s.locker.health())).into_response()
}

async fn not_found() -> Response {
    ApiFailure::new(404, "NOT_FOUND", "no such route").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR   tok "] {
            assert_eq!(bearer(&with(v)), Some("tok"), "{v}");
            assert!(authorised(&with(v), "tok").is_ok(), "{v}");
        }
        for v in ["Basic tok", "Bearertok", "tok", "Bearer"] {
            assert!(authorised(&with(v), "tok").is_err(), "{v}");
        }
    }
}
