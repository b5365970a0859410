//! The link's inbound half: `locker_request` messages become the same operations as the HTTP API
//! and are answered with `locker_response` carrying the HTTP-equivalent status; `qr_validation`
//! verdicts are handed to the waiting [`CloudValidator`].

use crate::failure::ApiFailure;
use crate::locker::Locker;
use crate::uplink::{CloudValidator, Uplink};
use hal::lockboard::LockBoard;
use protocol::locker_api::ApiError;
use protocol::ws::{Envelope, LockerOp, LockerOutcome, LockerRequest, LockerResponse, Message};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Serves inbound messages from the link until the channel closes.
pub async fn dispatch<B: LockBoard>(
    locker: Arc<Locker<B>>,
    uplink: Arc<dyn Uplink>,
    validator: Option<Arc<CloudValidator>>,
    mut inbound: mpsc::Receiver<Envelope>,
) {
    while let Some(env) = inbound.recv().await {
        match env.message {
            Message::LockerRequest(req) => {
                // Each request on its own task: an OPEN waits for the bolt (seconds), and a
                // sync or a second open must not queue behind it here (the board queues them).
                let locker = locker.clone();
                let uplink = uplink.clone();
                tokio::spawn(async move {
                    let resp = answer(&locker, req).await;
                    if !uplink.send(Envelope::new(resp)) {
                        warn!("locker_response not sent: cloud link down (the backend will retry)");
                    }
                });
            }
            Message::QrValidation(v) => {
                let delivered = validator.as_ref().is_some_and(|val| val.deliver(v.clone()));
                if !delivered {
                    debug!(request_id = %v.request_id, "qr_validation nobody is waiting for");
                }
            }
            other => debug!(kind = other.kind(), "message not for the locker; ignored"),
        }
    }
}

/// One `locker_request`, answered exactly as the HTTP API would answer it.
pub async fn answer<B: LockBoard>(locker: &Locker<B>, req: LockerRequest) -> LockerResponse {
    let request_id = req.request_id;
    let result: Result<LockerOutcome, ApiFailure> = match req.op {
        LockerOp::CellsSync(r) => locker.sync(r).await.map(LockerOutcome::CellsSynced),
        LockerOp::CellsOpen(r) => locker.open(r).await.map(LockerOutcome::CellOpened),
        LockerOp::CellsClose(r) => locker.close(r).await.map(LockerOutcome::CellClosed),
        LockerOp::QrScan(r) => locker
            .qr_scan(&r.qr_data)
            .await
            .map(LockerOutcome::QrScanned),
    };
    match result {
        Ok(outcome) => LockerResponse {
            request_id,
            status: 200,
            outcome,
        },
        Err(f) => LockerResponse {
            request_id,
            status: f.status,
            outcome: LockerOutcome::Error(ApiError {
                code: f.code.to_owned(),
                message: f.message,
            }),
        },
    }
}
