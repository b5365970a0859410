//! What comes in from outside the vehicle: the cloud's frames (tasks and commands, each acted
//! on once per id) and the technician's acting requests. Both go through the machine.

use super::{Agent, Cloud, TechRequest};
use crate::machine::{state_name, Delivery, Event};
use hal::flight::{FlightController, LandedState};
use hal::payload::PayloadRelease;
use protocol::error::codes;
use protocol::ws::{ErrorMessage, Message};
use protocol::Envelope;
use tracing::{debug, info, info_span, warn, Instrument};

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    pub(super) async fn on_frame(&mut self, env: Envelope) {
        match env.message {
            Message::Task(task) => {
                // A backend re-sends a task it saw no ack for: while the drone is flying that very
                // delivery it is acknowledged again, never refused as "busy" nor flown twice. Once
                // the drone is idle again (the pre-flight refused it, or a kill lost it before it
                // was saved) the same task is a new attempt.
                let flying_it = self
                    .machine
                    .delivery()
                    .is_some_and(|d| d.delivery_id == task.delivery_id);
                if flying_it {
                    debug!(delivery_id = %task.delivery_id, "task already being flown: acknowledging again");
                    let ack = match self.commands.seen(task.delivery_id) {
                        Some(prev) => prev.clone(),
                        None => self.commands.record(task.delivery_id, None),
                    };
                    self.link.send(Envelope::new(ack));
                    return;
                }
                if self.storage.failed() {
                    // a freed disk takes the task at once; a full one refuses it (the machine)
                    self.retry_storage().await;
                    if let Some(news) = self.storage.take_news() {
                        self.feed(news).await;
                    }
                }
                if self.machine.delivery().is_none() {
                    // only a task the drone may take replaces the volume being flown
                    self.task_volume = Some((task.delivery_id, task.volume.clone()));
                }
                let span = info_span!("task", delivery_id = %task.delivery_id);
                let delivery = Delivery {
                    delivery_id: task.delivery_id,
                    lat: task.destination.lat.get(),
                    lon: task.destination.lon.get(),
                    aruco_id: task.destination.aruco_id,
                    priority: task.priority,
                };
                let outcome = self.feed(Event::Task(delivery)).instrument(span).await;
                // A task has no cmd_id: its delivery id stands in for one in the ack.
                let ack = self
                    .commands
                    .record(task.delivery_id, outcome.rejected.clone());
                if let Some(why) = outcome.rejected {
                    self.link.send(Envelope::new(ErrorMessage {
                        code: codes::TASK_REJECTED.into(),
                        message: why,
                        in_reply_to: Some(task.delivery_id.to_string()),
                    }));
                }
                self.link.send(Envelope::new(ack));
            }
            Message::Command(cmd) => {
                if let Some(prev) = cmd.cmd_id.and_then(|id| self.commands.seen(id)) {
                    debug!(cmd_id = %prev.cmd_id, "command id seen before: acknowledging again, not acting");
                    self.link.send(Envelope::new(prev.clone()));
                    return;
                }
                let active = self.machine.delivery().map(|d| d.delivery_id);
                let rejected = match (cmd.delivery_id, active) {
                    (Some(asked), Some(flying)) if asked != flying => Some(format!(
                        "command is for delivery {asked}, the drone is flying {flying}"
                    )),
                    _ => self.feed(Event::Command(cmd.command)).await.rejected,
                };
                match cmd.cmd_id {
                    Some(id) => {
                        let ack = self.commands.record(id, rejected);
                        self.save();
                        self.link.send(Envelope::new(ack));
                    }
                    None => {
                        if let Some(why) = rejected {
                            self.link.send(Envelope::new(ErrorMessage {
                                code: codes::COMMAND_REJECTED.into(),
                                message: why,
                                in_reply_to: cmd.delivery_id.map(|d| d.to_string()),
                            }));
                        }
                    }
                }
            }
            Message::Error(e) => {
                warn!(code = %e.code, message = %e.message, "the cloud reports an error")
            }
            Message::Presence(_) => {}
            other => {
                let kind = Envelope::new(other).kind();
                self.link.send(Envelope::new(ErrorMessage {
                    code: codes::UNEXPECTED_MESSAGE.into(),
                    message: format!("a drone does not accept `{kind}` messages"),
                    in_reply_to: None,
                }));
            }
        }
    }

    /// A technician's acting request: the machine decides, as for everything else.
    pub(super) async fn on_technician(&mut self, request: TechRequest) {
        match request {
            TechRequest::Ready(reply) => {
                let in_air = matches!(
                    self.snap.landed,
                    LandedState::InAir | LandedState::TakingOff | LandedState::Landing
                );
                let event = Event::TechnicianReady {
                    armed: self.snap.armed,
                    in_air,
                };
                info!(action = "ready", "technician action");
                let outcome = self.feed(event).await;
                let _ = reply.send(match outcome.rejected {
                    Some(why) => Err(why),
                    None => Ok(state_name(self.machine.state()).to_owned()),
                });
            }
            TechRequest::TestRelease(reply) => {
                if self.snap.armed {
                    let _ = reply.send(Err("the drone is armed: disarm it first".into()));
                    return;
                }
                let outcome = self.feed(Event::TestRelease).await;
                match outcome.rejected {
                    Some(why) => {
                        let _ = reply.send(Err(why));
                    }
                    // answered when the test is done (`Internal::TestDone`)
                    None => self.pending_test = Some(reply),
                }
            }
        }
    }
}
