//! QR pickups: a scanned code validated, its cell opened, and failed scans limited per source.

use super::*;

use crate::cells::{CellError, Purpose};
use crate::screen::{self, Message};
use crate::uplink::ValidateError;
use hal::lockboard::LockBoard;
use protocol::error::codes;
use protocol::locker_api::QrScanResponse;
use protocol::ws::{Event, EventType};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Where a scanned code came from: failed scans are limited per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanSource {
    /// The locker's own camera.
    Camera,
    /// `POST /api/qr/scan`, by the peer's address (`None`: not known).
    Api(Option<std::net::IpAddr>),
    /// A `locker_request` over the relay link (the backend).
    Link,
}

impl std::fmt::Display for ScanSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanSource::Camera => write!(f, "the camera"),
            ScanSource::Api(Some(ip)) => write!(f, "API client {ip}"),
            ScanSource::Api(None) => write!(f, "an API client"),
            ScanSource::Link => write!(f, "the relay link"),
        }
    }
}

/// How failed QR scans are limited: `free` failures per source within `window` are answered
/// as usual; past that the source is refused without asking the backend for `backoff`,
/// doubling with each further burst up to `backoff_max`. A scan that opens a cell resets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanLimit {
    pub free: u32,
    pub window: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for ScanLimit {
    fn default() -> Self {
        Self {
            free: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// One source's recent failed scans.
#[derive(Debug, Default)]
pub(crate) struct ScanGate {
    failures: VecDeque<tokio::time::Instant>,
    blocked_until: Option<tokio::time::Instant>,
    /// Bursts in a row (the backoff doubles with each).
    level: u32,
    /// Scans refused while backing off, since the burst was reported.
    refused: u64,
}

/// Sources remembered at most (an attacker with many addresses cannot grow memory).
const SCAN_SOURCES: usize = 1024;

/// A scan refused for the code itself (not for the backend or the board being down).
fn counts_as_failed_scan(f: &ApiFailure) -> bool {
    f.code == codes::QR_INVALID
        || f.code == codes::QR_ALREADY_USED
        || f.code == codes::INVALID_PAYLOAD
}

impl<B: LockBoard> Locker<B> {
    /// A customer's code over the relay link (`locker_request`).
    pub async fn qr_scan(&self, code: &str) -> Result<QrScanResponse, ApiFailure> {
        self.qr_scan_from(code, ScanSource::Link).await
    }

    /// A customer's code from `source`. Failed scans are limited per source
    /// ([`ScanLimit`]): a source that keeps failing is refused (429 `RATE_LIMITED`) without the
    /// backend being asked, and each burst is reported as a `qr_rejected` event.
    pub async fn qr_scan_from(
        &self,
        code: &str,
        source: ScanSource,
    ) -> Result<QrScanResponse, ApiFailure> {
        if let Some(wait) = self.scan_blocked(source) {
            self.show(&Message::Unavailable);
            return Err(ApiFailure::new(
                429,
                extra_codes::RATE_LIMITED,
                format!(
                    "too many failed scans from {source}: try again in {:.0} s",
                    wait.as_secs_f64().ceil()
                ),
            ));
        }
        let r = self.qr_scan_checked(code).await;
        match &r {
            Ok(_) => self.scan_succeeded(source),
            Err(f) if counts_as_failed_scan(f) => self.scan_failed(source, f).await,
            Err(_) => {}
        }
        r
    }

    /// How long `source` must still wait, if it is backing off.
    fn scan_blocked(&self, source: ScanSource) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        let mut scans = self.scans.lock().unwrap_or_else(|p| p.into_inner());
        let gate = scans.get_mut(&source)?;
        let until = gate.blocked_until.filter(|u| *u > now)?;
        gate.refused += 1;
        Some(until - now)
    }

    fn scan_succeeded(&self, source: ScanSource) {
        self.scans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source);
    }

    async fn scan_failed(&self, source: ScanSource, f: &ApiFailure) {
        let limit = self.settings.scan_limit;
        let now = tokio::time::Instant::now();
        let burst = {
            let mut scans = self.scans.lock().unwrap_or_else(|p| p.into_inner());
            if scans.len() >= SCAN_SOURCES && !scans.contains_key(&source) {
                // Forget the quietest sources first: those with nothing in the window.
                scans.retain(|_, g| {
                    g.failures
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < limit.window)
                });
                if scans.len() >= SCAN_SOURCES {
                    return; // all busy: the newcomer is not tracked (bounded memory first)
                }
            }
            let gate = scans.entry(source).or_default();
            while gate
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limit.window)
            {
                gate.failures.pop_front();
            }
            if gate.failures.is_empty() && gate.blocked_until.is_none_or(|u| u <= now) {
                gate.level = 0; // a quiet window: start over
            }
            gate.failures.push_back(now);
            if gate.failures.len() > limit.free as usize {
                gate.level += 1;
                let backoff = limit
                    .backoff
                    .saturating_mul(1 << (gate.level - 1).min(16))
                    .min(limit.backoff_max);
                gate.blocked_until = Some(now + backoff);
                let n = gate.failures.len();
                gate.failures.clear();
                let refused = std::mem::take(&mut gate.refused);
                Some((n, backoff, gate.level, refused))
            } else {
                None
            }
        };
        if let Some((n, backoff, level, refused)) = burst {
            warn!(%source, failed = n, backoff_s = backoff.as_secs_f64(), level, refused_meanwhile = refused,
                last = %f.message, "burst of failed QR scans: backing off");
            let mut ev = Event::new(EventType::QrRejected);
            ev.reason = Some(format!(
                "burst of failed scans from {source}: {n} within {:.0} s (last: {}); refusing scans from it for {:.0} s",
                limit.window.as_secs_f64(),
                f.message,
                backoff.as_secs_f64()
            ));
            self.emit(ev).await;
        }
    }

    async fn qr_scan_checked(&self, code: &str) -> Result<QrScanResponse, ApiFailure> {
        let code = code.trim();
        if code.is_empty() || code.len() > 2048 {
            return Err(ApiFailure::new(
                400,
                codes::INVALID_PAYLOAD,
                "qr_data must be 1 to 2048 characters",
            ));
        }
        if self.store().code_used(code) {
            self.show(&Message::AlreadyUsed);
            return Err(CellError::CodeUsed.into());
        }
        let Some(validator) = &self.validator else {
            self.show(&Message::Unavailable);
            return Err(ApiFailure::new(
                503,
                extra_codes::VALIDATION_UNAVAILABLE,
                "no QR validation is configured (cloud link)",
            ));
        };
        self.show(&Message::Checking);
        let verdict = match validator.validate(code).await {
            Ok(v) => v,
            Err(e) => {
                // The customer is told to try again; the backend hears that a code could not
                // be checked (as a rejection whose reason says so: the protocol has no event
                // for "not checked"), and nothing opens.
                error!(error = %e, "QR code could not be validated");
                self.show(&Message::Unavailable);
                let mut ev = Event::new(EventType::QrRejected);
                ev.reason = Some(format!("not checked: {e}"));
                self.emit(ev).await;
                let status = if matches!(e, ValidateError::Timeout(_)) {
                    504
                } else {
                    503
                };
                return Err(ApiFailure::new(
                    status,
                    extra_codes::VALIDATION_UNAVAILABLE,
                    e.to_string(),
                ));
            }
        };
        let cell_uuid = match (verdict.valid, verdict.cell_uuid) {
            (true, Some(c)) => c,
            (valid, _) => {
                let reason = verdict
                    .reason
                    .clone()
                    .unwrap_or_else(|| screen::DEFAULT_REJECTION.to_owned());
                self.show(&Message::Rejected {
                    reason: reason.clone(),
                });
                let mut ev = Event::new(EventType::QrRejected);
                ev.order_id = verdict.order_id;
                ev.reason = Some(reason.clone());
                self.emit(ev).await;
                let msg = if valid {
                    "the backend accepted the code but named no cell".to_owned()
                } else {
                    reason
                };
                return Err(ApiFailure::new(403, codes::QR_INVALID, msg));
            }
        };
        let purpose = Purpose::Pickup {
            order_id: verdict.order_id,
            code: code.to_owned(),
        };
        match self.open_cell(cell_uuid, purpose).await {
            Ok((number, opened_at)) => {
                self.show(&Message::CellOpen { cell: number });
                Ok(QrScanResponse {
                    success: true,
                    cell_id: number,
                    order_id: verdict.order_id,
                    opened_at,
                })
            }
            Err(f) => {
                if f.code == codes::QR_ALREADY_USED {
                    self.show(&Message::AlreadyUsed);
                } else {
                    self.show(&Message::OutOfOrder {
                        detail: f.message.clone(),
                    });
                }
                Err(f)
            }
        }
    }
}

/// Turns each fresh code into a pickup attempt, one at a time (a customer is in front of one
/// locker; a second code while the first is being checked waits).
pub async fn run_pickups<B: LockBoard>(locker: Arc<Locker<B>>, mut codes: mpsc::Receiver<String>) {
    while let Some(code) = codes.recv().await {
        match locker.qr_scan_from(&code, ScanSource::Camera).await {
            Ok(r) => info!(cell = r.cell_id, order_id = ?r.order_id, "pickup: cell opened"),
            Err(f) => info!(code = f.code, reason = %f.message, "pickup refused"),
        }
    }
}
