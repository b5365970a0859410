//! Driving the pure vehicle model (no sockets, no clocks): sim time advances only when a test
//! steps it, so an autopilot timing (0.5 s to the gripper report, 10 s under the low voltage) is
//! exact and a minute of flight takes milliseconds.
#![allow(dead_code)]

use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};
use sim::vehicle::model::{Model, Out, Params, View};
use sim::vehicle::Flavour;

pub const STEP_S: f64 = 0.02;

pub struct Sim {
    pub m: Model,
    /// Everything the model sent unasked or in reply, with the sim time it was sent.
    pub log: Vec<(f64, MavMessage)>,
    outs: Vec<Out>,
}

impl Sim {
    pub fn new(flavour: Flavour) -> Sim {
        Self::with(flavour, |_| {})
    }

    pub fn with(flavour: Flavour, tweak: impl FnOnce(&mut Params)) -> Sim {
        let mut p = Params::for_flavour(flavour);
        tweak(&mut p);
        Sim {
            m: Model::new(flavour, p, (47.397_742, 8.545_594, 488.0), 42),
            log: Vec::new(),
            outs: Vec::new(),
        }
    }

    fn collect(&mut self) {
        let t = self.m.t;
        self.log.extend(self.outs.drain(..).map(|o| (t, o.msg)));
    }

    /// Advances `secs` of sim time.
    pub fn run(&mut self, secs: f64) {
        let n = (secs / STEP_S).round() as usize;
        for _ in 0..n {
            self.m.step(STEP_S, &mut self.outs);
            self.collect();
        }
    }

    /// Steps until `pred` holds (at most `max_s` sim seconds); the sim time it took.
    pub fn run_until(&mut self, max_s: f64, mut pred: impl FnMut(&View) -> bool) -> f64 {
        let start = self.m.t;
        while !pred(&self.m.view()) {
            assert!(
                self.m.t - start < max_s,
                "not within {max_s} s: {:?}",
                self.m.view()
            );
            self.m.step(STEP_S, &mut self.outs);
            self.collect();
        }
        self.m.t - start
    }

    pub fn send(&mut self, msg: MavMessage) {
        self.m.handle(&msg, &mut self.outs);
        self.collect();
    }

    /// A COMMAND_LONG; returns the COMMAND_ACK result it got at once.
    pub fn command(&mut self, command: MavCmd, p: [f32; 7]) -> MavResult {
        let before = self.log.len();
        self.send(MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
            param1: p[0],
            param2: p[1],
            param3: p[2],
            param4: p[3],
            param5: p[4],
            param6: p[5],
            param7: p[6],
            command,
            target_system: 1,
            target_component: 1,
            confirmation: 0,
        }));
        self.log[before..]
            .iter()
            .find_map(|(_, m)| match m {
                MavMessage::COMMAND_ACK(a) if a.command == command => Some(a.result),
                _ => None,
            })
            .expect("a COMMAND_ACK")
    }

    /// DO_SET_MODE with the autopilot's own mode numbers (ArduCopter number; PX4 main, sub).
    pub fn set_mode(&mut self, p2: f32, p3: f32) -> MavResult {
        self.command(
            MavCmd::MAV_CMD_DO_SET_MODE,
            [1.0, p2, p3, 0.0, 0.0, 0.0, 0.0],
        )
    }

    pub fn arm(&mut self) -> MavResult {
        self.command(
            MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        )
    }

    /// Every STATUSTEXT sent from log index `from` on.
    pub fn texts_from(&self, from: usize) -> Vec<String> {
        self.log[from..]
            .iter()
            .filter_map(|(_, m)| match m {
                MavMessage::STATUSTEXT(t) => Some(t.text.to_str().unwrap_or("").to_owned()),
                _ => None,
            })
            .collect()
    }

    /// When a STATUSTEXT was sent (the first one from `from` on).
    pub fn text_at(&self, from: usize, text: &str) -> Option<f64> {
        self.log[from..].iter().find_map(|(t, m)| match m {
            MavMessage::STATUSTEXT(s) if s.text.to_str().unwrap_or("") == text => Some(*t),
            _ => None,
        })
    }

    pub fn telemetry(&mut self, id: u32) -> Option<MavMessage> {
        self.m.telemetry_message(id)
    }

    pub fn heartbeat_mode(&self) -> (u32, apm::MavState, apm::MavModeFlag) {
        match self.m.heartbeat() {
            MavMessage::HEARTBEAT(h) => (h.custom_mode, h.system_status, h.base_mode),
            _ => unreachable!(),
        }
    }
}

pub fn id<T: mavlink::MessageData>() -> u32 {
    T::ID
}

// ArduCopter mode numbers, written here again on purpose: the sim is a check on the hal, so the
// tests do not borrow the hal's table
pub const STABILIZE: f32 = 0.0;
pub const AUTO: f32 = 3.0;
pub const GUIDED: f32 = 4.0;
pub const LOITER: f32 = 5.0;
pub const RTL: f32 = 6.0;
pub const BRAKE: f32 = 17.0;
