//! The real [`Uplink`]: the shared `cloud-link` crate (WebSocket to the relay, reconnect with
//! backoff, on-disk event outbox re-sent until `event_ack`).

use crate::uplink::{BoxFuture, Uplink, UplinkError};
use cloud_link::CloudLink;
use protocol::ws::{Envelope, Event};

/// The link, seen through the locker's [`Uplink`] trait.
pub struct CloudUplink(pub CloudLink);

impl Uplink for CloudUplink {
    fn publish_event(&self, event: Event) -> BoxFuture<'_, Result<(), UplinkError>> {
        Box::pin(async move {
            self.0
                .publish_event(event)
                .await
                .map(|_| ())
                .map_err(|e| UplinkError::Outbox(e.to_string()))
        })
    }

    fn send(&self, env: Envelope) -> bool {
        // Only on a live connection: a `qr_validate` queued while the link is down would reach
        // the backend long after the customer walked away.
        self.connected() && self.0.send(env)
    }

    fn connected(&self) -> bool {
        self.0.status().borrow().is_connected()
    }
}
