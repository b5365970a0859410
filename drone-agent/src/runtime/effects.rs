//! Executes one [`Effect`]: nothing here decides what comes next.

use super::{Agent, Cloud, Internal};
use crate::machine::{Effect, Event, FlightOp, Fly, Outcome, PayloadReading};
use crate::report;
use crate::technician::{CheckLine, ChecksReply};
use hal::flight::{FcError, FlightController, GeoPoint};
use hal::payload::{PayloadRelease, PayloadState};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

/// How long `test release` holds the release open before closing it again.
pub const RELEASE_HOLD: Duration = Duration::from_secs(2);

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    pub(super) async fn run_effect(
        &mut self,
        effect: Effect,
        outcome: &Outcome,
        delivery_before: Option<uuid::Uuid>,
    ) {
        match effect {
            Effect::Report { event, reason } => {
                let facts = report::EventFacts {
                    event,
                    reason,
                    delivery_id: self
                        .machine
                        .delivery()
                        .map(|d| d.delivery_id)
                        .or(delivery_before),
                    transition: outcome.transition,
                };
                let ev = report::event(facts, &self.snap);
                self.store_event(ev).await;
            }
            Effect::RunPreflight => {
                let plan = self.fence_plan();
                tokio::spawn(super::fence::preflight(
                    self.fc.clone(),
                    self.cfg.battery.min_takeoff_percent,
                    plan,
                    self.internal.clone(),
                ));
            }
            Effect::Fly(fly) => self.fly(fly),
            Effect::Disarm => {
                let fc = self.fc.clone();
                tokio::spawn(async move {
                    // the autopilot disarms an idle vehicle by itself too: a refusal is logged only
                    if let Err(e) = fc.disarm().await {
                        warn!(error = %e, "disarm after a refused take-off failed");
                    }
                });
            }
            Effect::ReleasePayload => {
                let payload = self.payload.clone();
                let tx = self.internal.clone();
                if let Some(h) = self.release_op.take() {
                    h.abort();
                }
                self.release_op = Some(tokio::spawn(
                    async move {
                        let event = match payload.release().await {
                            Ok(()) => Event::ReleaseDone,
                            Err(e) => Event::ReleaseFailed(e.to_string()),
                        };
                        let _ = tx.send(Internal::Event(event));
                    }
                    .instrument(info_span!("payload_release")),
                ));
            }
            Effect::ReadPayload => {
                let payload = self.payload.clone();
                let tx = self.internal.clone();
                tokio::spawn(async move {
                    // what the autopilot last reported (servo output, gripper report): no movement
                    let reading = match payload.state().await {
                        Ok(PayloadState::Released) => PayloadReading::Released,
                        Ok(PayloadState::Closed) => PayloadReading::Closed,
                        Ok(PayloadState::Unknown) => PayloadReading::Unknown,
                        Err(e) => {
                            warn!(error = %e, "payload state not readable");
                            PayloadReading::Unknown
                        }
                    };
                    info!(?reading, "payload read after a restart mid-release");
                    let _ = tx.send(Internal::Event(Event::PayloadRead(reading)));
                });
            }
            Effect::TestRelease => {
                let payload = self.payload.clone();
                let tx = self.internal.clone();
                tokio::spawn(
                    async move {
                        info!("technician action: opening the payload release");
                        let mut checks = Vec::new();
                        let opened = payload.release().await;
                        checks.push(CheckLine {
                            name: "release".into(),
                            passed: opened.is_ok(),
                            detail: opened
                                .map_or_else(|e| e.to_string(), |()| "opened (confirmed)".into()),
                        });
                        // the hardware stays open this long so the technician sees it move
                        tokio::time::sleep(RELEASE_HOLD).await;
                        let closed = payload.close().await;
                        checks.push(CheckLine {
                            name: "close".into(),
                            passed: closed.is_ok(),
                            detail: closed
                                .map_or_else(|e| e.to_string(), |()| "closed again".into()),
                        });
                        let _ = tx.send(Internal::TestDone(ChecksReply::new(checks)));
                    }
                    .instrument(info_span!("test_release")),
                );
            }
            Effect::StartTimer(timer, after) => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Effect::CancelTimer(timer) => {
                self.timers.remove(&timer);
            }
        }
    }

    /// Starts a flight operation, superseding the one in progress.
    fn fly(&mut self, fly: Fly) {
        let fc = self.fc.clone();
        match fly {
            Fly::Takeoff { alt_m } => self.spawn_flight(FlightOp::Takeoff, async move {
                fc.arm().await?;
                fc.takeoff(alt_m).await
            }),
            Fly::Goto { lat, lon, alt_m } => match self.goto_refusal(lat, lon, alt_m) {
                // refused like an autopilot refusal: the machine's bounded retries, then home
                Some(error) => self.spawn_flight(FlightOp::Goto, async move { Err(error) }),
                None => self.spawn_flight(FlightOp::Goto, async move {
                    fc.goto(GeoPoint::new(lat, lon, alt_m)).await
                }),
            },
            // here: over the current position, whatever the delivery's destination
            Fly::HoverAt { alt_m } => {
                self.spawn_flight(FlightOp::HoverAt, async move { fc.hover_at(alt_m).await })
            }
            Fly::Hold => self.spawn_flight(FlightOp::Hold, async move { fc.hold().await }),
            Fly::ReturnHome => {
                self.spawn_flight(
                    FlightOp::ReturnHome,
                    async move { fc.return_to_launch().await },
                )
            }
            Fly::LandNow => self.spawn_flight(FlightOp::LandNow, async move { fc.land().await }),
        }
    }

    /// Runs `op` as flight operation number `seq + 1`, aborting the one in progress: only the
    /// newest operation's refusal is fed to the machine.
    pub(super) fn spawn_flight(
        &mut self,
        op: FlightOp,
        run: impl Future<Output = Result<(), FcError>> + Send + 'static,
    ) {
        if let Some(previous) = self.flight_op.take() {
            previous.abort();
        }
        self.flight_seq += 1;
        let seq = self.flight_seq;
        let tx = self.internal.clone();
        self.flight_op = Some(tokio::spawn(
            async move {
                match run.await {
                    Ok(()) => debug!("accepted by the autopilot"),
                    Err(error) => {
                        warn!(%error, "flight controller operation refused");
                        let _ = tx.send(Internal::FlightFailed { seq, op, error });
                    }
                }
            }
            .instrument(info_span!("flight_op", op = op.name(), seq)),
        ));
    }
}
