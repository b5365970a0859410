//! QR validation over HTTP to the orchestrator, as the seed's locker did ("Validates QR with
//! Orchestrator" in Scenario 1, step 9), used instead of the relay link when `[orchestrator]` is
//! configured.
//!
//! The seed names the call (`OrchestratorAPIClient.ValidateQR()`) but not its route or body, so
//! this is our choice, written down in `locker-agent.example.toml` and docs/locker.md:
//!
//! ```text
//! POST <orchestrator.url>            (default route /api/v1/qr/validate)
//! Authorization: Bearer <token>
//! {"locker_id": "<uuid>", "qr_data": "<what the camera read>"}
//!
//! 200 {"success": true, "data": {"valid": true, "cell_uuid": "…", "order_id": "…"}, "error": null}
//! 200 {"success": true, "data": {"valid": false, "reason": "This code has expired"}, "error": null}
//! 4xx {"success": false, "data": null, "error": {"code": "ORDER_NOT_FOUND", "message": "…"}}
//! ```
//!
//! The bodies follow the seed's standard response format. A verdict (`valid: false`, or a 4xx
//! with the standard error body, e.g. an unknown order) is the customer's answer and its words
//! go on the screen. Anything that is not a verdict — no connection, a timeout, 401 (our token is
//! wrong: the locker's problem, not the customer's), 5xx, a body we cannot read — is
//! [`ValidateError`], and nothing opens.
//!
//! One connection per request (HTTP/1.1 through hyper, TLS through rustls with the webpki
//! roots): a code is scanned a few times an hour, so a pool would only hold sockets open.

use crate::config::{secs, OrchestratorConfig};
use crate::uplink::{BoxFuture, QrValidator, ValidateError, Verdict};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info_span, warn, Instrument as _};
use uuid::Uuid;

/// Largest answer read from the orchestrator (a verdict is a few hundred bytes).
const MAX_REPLY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("orchestrator.url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("orchestrator token: {0}")]
    Token(std::io::Error),
}

pub use protocol::orchestrator::{ValidateData, ValidateRequest, ValidateResponse};

/// Where to connect, worked out once from the URL.
#[derive(Clone)]
struct Target {
    uri: Uri,
    host: String,
    port: u16,
    /// `Some` for https.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Validates codes with `POST <url>`.
pub struct HttpValidator {
    target: Target,
    token: String,
    locker_id: Uuid,
    timeout: Duration,
}

impl HttpValidator {
    pub fn new(cfg: &OrchestratorConfig, locker_id: Uuid) -> Result<Self, OrchestratorError> {
        let crate::config::Endpoint {
            uri,
            host,
            port,
            https,
        } = cfg.endpoint().map_err(|reason| OrchestratorError::Url {
            url: cfg.url.clone(),
            reason,
        })?;
        let tls = https.then(|| {
            // Same provider as the cloud link (ring: no aws-lc to cross-compile).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        Ok(Self {
            target: Target {
                uri,
                host,
                port,
                tls,
            },
            token: cfg.token().map_err(OrchestratorError::Token)?,
            locker_id,
            timeout: secs(cfg.timeout_s),
        })
    }

    /// One exchange: connect, POST, read the answer. No timeout here (the caller has it).
    async fn exchange(&self, code: &str) -> Result<(u16, Bytes), String> {
        let t = &self.target;
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", t.host, t.port))?;
        let _ = tcp.set_nodelay(true);
        let body = serde_json::to_vec(&ValidateRequest {
            locker_id: self.locker_id,
            qr_data: code.to_owned(),
        })
        .map_err(|e| e.to_string())?;
        let authority = t
            .uri
            .authority()
            .map_or_else(|| t.host.clone(), |a| a.to_string());
        let path = t
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let req = hyper::Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(
                header::USER_AGENT,
                concat!("skypost-locker-agent/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        match &t.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| format!("TLS name {}: {e}", t.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", t.host))?;
                send(TokioIo::new(stream), req).await
            }
            None => send(TokioIo::new(tcp), req).await,
        }
    }
}

async fn send<IO>(io: IO, req: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    // The connection future drives the socket; it ends with the exchange (or when dropped on a
    // timeout, with the caller's future).
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "orchestrator connection ended");
        }
    });
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP request: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

/// What an answer means.
fn verdict(status: u16, body: &[u8]) -> Result<Verdict, ValidateError> {
    let parsed: Result<ValidateResponse, _> = serde_json::from_slice(body);
    let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    match (status, parsed) {
        (
            200,
            Ok(ValidateResponse {
                success: true,
                data: Some(d),
                ..
            }),
        ) => Ok(Verdict {
            valid: d.valid,
            cell_uuid: d.cell_uuid,
            order_id: d.order_id,
            reason: d.reason,
        }),
        (401, _) => Err(ValidateError::Failed(
            "the orchestrator refused the locker's token (401): check orchestrator.token".into(),
        )),
        // A client error with the standard error body: the orchestrator's verdict on this code
        // (an unknown order, a code for another locker), in its words.
        (
            400..=499,
            Ok(ValidateResponse {
                success: false,
                error: Some(e),
                ..
            }),
        ) => Ok(Verdict {
            valid: false,
            cell_uuid: None,
            order_id: None,
            reason: Some(e.message),
        }),
        (200, Err(e)) => Err(ValidateError::Failed(format!(
            "unreadable answer from the orchestrator: {e}: {}",
            snippet()
        ))),
        (s, _) => Err(ValidateError::Failed(format!(
            "the orchestrator answered {s}: {}",
            snippet()
        ))),
    }
}

impl QrValidator for HttpValidator {
    fn validate<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Verdict, ValidateError>> {
        let span = info_span!("orchestrator_validate", url = %self.target.uri);
        Box::pin(
            async move {
                match tokio::time::timeout(self.timeout, self.exchange(code)).await {
                    Err(_) => {
                        warn!(timeout = ?self.timeout, "orchestrator did not answer in time");
                        Err(ValidateError::Timeout(self.timeout))
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "cannot reach the orchestrator");
                        Err(ValidateError::Unreachable(e))
                    }
                    Ok(Ok((status, body))) => {
                        let v = verdict(status, &body);
                        debug!(status, verdict = ?v, "orchestrator answered");
                        v
                    }
                }
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let ok = br#"{"success":true,"data":{"valid":true,"cell_uuid":"7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f"},"error":null}"#;
        assert!(verdict(200, ok).unwrap().valid);
        let no = br#"{"success":false,"data":null,"error":{"code":"ORDER_NOT_FOUND","message":"no such order"}}"#;
        let v = verdict(404, no).unwrap();
        assert!(!v.valid);
        assert_eq!(v.reason.as_deref(), Some("no such order"));
        assert!(matches!(verdict(401, no), Err(ValidateError::Failed(_))));
        assert!(matches!(
            verdict(500, b"oops"),
            Err(ValidateError::Failed(_))
        ));
        assert!(matches!(
            verdict(200, b"<html>"),
            Err(ValidateError::Failed(_))
        ));
    }
}
