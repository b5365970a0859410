//! After a restart mid-delivery: wait for the autopilot — its link, its position and its home
//! first (no flight command goes out before the home is known) — then tell the machine what the
//! vehicle is doing. The machine decides what that means.

use super::{Agent, Cloud};
use crate::machine::{Event, Vehicle};
use hal::flight::{FcSnapshot, FlightController};
use hal::payload::PayloadRelease;
use tokio::sync::watch;
use tracing::{info, warn};

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    pub(super) async fn reattach(&mut self, snaps: &mut watch::Receiver<FcSnapshot>) {
        let state = self.machine.state();
        let wait = self.cfg.fc_reattach();
        info!(
            ?state,
            wait_s = wait.as_secs_f64(),
            "restarted with saved state; waiting for the flight controller and its home"
        );
        let found = tokio::time::timeout(wait, async {
            loop {
                {
                    let s = snaps.borrow_and_update();
                    if s.link.is_connected() && s.position.is_some() && s.home.is_some() {
                        return s.clone();
                    }
                }
                if snaps.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        let vehicle = match found {
            Ok(snap) => {
                self.snap = snap;
                self.monitor.vehicle(&self.snap)
            }
            Err(_) => {
                let s = snaps.borrow().clone();
                if s.link.is_connected() {
                    // linked but no home yet: what it is doing is known, where home is is not
                    warn!("flight controller reached but no home position after restart");
                    self.snap = s;
                    self.monitor.vehicle(&self.snap)
                } else {
                    warn!("flight controller not reachable after restart");
                    Vehicle::Unreachable
                }
            }
        };
        info!(?vehicle, "re-attached");
        self.feed(Event::Restarted(vehicle)).await;
    }
}
