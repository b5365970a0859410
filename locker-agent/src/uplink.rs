//! The locker's side of the cloud link, behind a small trait.
//!
//! [`Uplink`] is everything the locker needs from its link to the relay: events that must not be
//! lost (persisted before `publish_event` returns, re-sent until the backend acknowledges them)
//! and best-effort replies on the live connection. The `cloud-link` crate provides the real one
//! ([`crate::cloud`]); [`LogUplink`] is what runs when no `[cloud]` section is configured (events
//! are logged only, and QR codes cannot be validated).
//!
//! The inbound half (`locker_request`, `qr_validation`) is [`crate::inbound`]: it needs the
//! locker, and the locker needs this module, so it lives apart.

use protocol::ws::{Envelope, Event, QrValidate, QrValidation};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::info;
use uuid::Uuid;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UplinkError {
    #[error("event could not be queued: {0}")]
    Outbox(String),
    #[error("no cloud link is configured")]
    NotConfigured,
}

/// What the locker needs from its link to the relay.
pub trait Uplink: Send + Sync + 'static {
    /// Queues an event; once this returns `Ok` the event survives a restart and is re-sent
    /// until the backend acknowledges its id.
    fn publish_event(&self, event: Event) -> BoxFuture<'_, Result<(), UplinkError>>;
    /// Sends on the live connection if there is one; false if it was not sent.
    fn send(&self, env: Envelope) -> bool;
    /// Whether the link is up right now (for `/health`).
    fn connected(&self) -> bool;
}

/// No cloud configured: events go to the log only.
pub struct LogUplink;

impl Uplink for LogUplink {
    fn publish_event(&self, event: Event) -> BoxFuture<'_, Result<(), UplinkError>> {
        info!(event_type = ?event.event_type, cell_id = ?event.cell_id, reason = ?event.reason, "locker event (no cloud link configured)");
        Box::pin(async { Ok(()) })
    }
    fn send(&self, _env: Envelope) -> bool {
        false
    }
    fn connected(&self) -> bool {
        false
    }
}

/// The backend's verdict on a QR code.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub valid: bool,
    pub cell_uuid: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ValidateError {
    #[error("cannot reach the backend to check the code: {0}")]
    Unreachable(String),
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    /// Reached, but no verdict came back (an error status, an unreadable body).
    #[error("the backend could not check the code: {0}")]
    Failed(String),
}

/// Asks the backend whether a scanned code is good.
pub trait QrValidator: Send + Sync + 'static {
    fn validate<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Verdict, ValidateError>>;
}

/// Validates codes over the cloud link: `qr_validate` out, `qr_validation` back (matched by
/// `request_id`, delivered by [`crate::inbound::dispatch`]).
pub struct CloudValidator {
    uplink: Arc<dyn Uplink>,
    locker_id: Uuid,
    timeout: Duration,
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<QrValidation>>>,
}

impl CloudValidator {
    pub fn new(uplink: Arc<dyn Uplink>, locker_id: Uuid, timeout: Duration) -> Self {
        Self {
            uplink,
            locker_id,
            timeout,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Hands a verdict to whoever asked; false if nobody is waiting for it (late or unknown).
    pub fn deliver(&self, v: QrValidation) -> bool {
        let tx = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&v.request_id));
        match tx {
            Some(tx) => tx.send(v).is_ok(),
            None => false,
        }
    }
}

impl QrValidator for CloudValidator {
    fn validate<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Verdict, ValidateError>> {
        Box::pin(async move {
            let request_id = Uuid::new_v4();
            let (tx, rx) = oneshot::channel();
            if let Ok(mut w) = self.waiting.lock() {
                w.insert(request_id, tx);
            }
            let sent = self.uplink.send(Envelope::new(QrValidate {
                request_id,
                locker_id: self.locker_id,
                qr_data: code.to_owned(),
            }));
            let forget = || {
                if let Ok(mut w) = self.waiting.lock() {
                    w.remove(&request_id);
                }
            };
            if !sent {
                forget();
                return Err(ValidateError::Unreachable("the cloud link is down".into()));
            }
            match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(v)) => Ok(Verdict {
                    valid: v.valid,
                    cell_uuid: v.cell_uuid,
                    order_id: v.order_id,
                    reason: v.reason,
                }),
                Ok(Err(_)) => Err(ValidateError::Unreachable("validator dropped".into())),
                Err(_) => {
                    forget();
                    Err(ValidateError::Timeout(self.timeout))
                }
            }
        })
    }
}
