//! Where a MAVLink message goes when the agent shares the autopilot's link with ground stations
//! (issue 13): the routing rules of the MAVLink specification ("Message routing"), and what a
//! read-only endpoint may send. This file is pure (systems seen and messages in, destinations
//! out); `run` carries the frames ([`Router`]), `endpoint` is the config, `signing` MAVLink 2
//! signing per endpoint.
//!
//! The rules:
//! - A message is never sent back to the link it came from.
//! - A broadcast (no target, or target system 0) goes to every other link.
//! - A message for a system goes only to the links that system was seen on (and for a component,
//!   where that component was seen, unless the target component is 0: any of that system's). A
//!   target nobody has been seen as is dropped, and counted by the caller.
//! - Links learn who sits behind them from every message they bring (its sender's ids).
//!
//! Read-only endpoints may watch: an allow-list of requests for streams, parameters, the mission
//! and logs, and the commands that only ask for messages. Everything else they send (commands,
//! mode changes, parameter and mission writes, RC overrides, file transfer) is dropped, without a
//! reply: the ground station sees no COMMAND_ACK and times out, as with a lost message.

use std::collections::{HashMap, HashSet};

pub mod endpoint;
mod run;
pub mod signing;

pub use endpoint::{EndpointConfig, EndpointMode};
pub use run::{EndpointStats, RoutedCommand, Router, RouterError, Steering, AGENT, AUTOPILOT};

/// A link of the router: the autopilot's, the agent's own, or one configured endpoint.
pub type LinkId = usize;

/// What the router knows of who sits behind which link.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    components: HashMap<(u8, u8), HashSet<LinkId>>,
    systems: HashMap<u8, HashSet<LinkId>>,
}

impl RoutingTable {
    /// A message from `sysid`/`compid` arrived on `link`.
    pub fn learn(&mut self, link: LinkId, sysid: u8, compid: u8) {
        self.components
            .entry((sysid, compid))
            .or_default()
            .insert(link);
        self.systems.entry(sysid).or_default().insert(link);
    }

    /// `link` is gone (a TCP client left): nobody is behind it any more.
    pub fn forget(&mut self, link: LinkId) {
        for links in self
            .components
            .values_mut()
            .chain(self.systems.values_mut())
        {
            links.remove(&link);
        }
        self.components.retain(|_, l| !l.is_empty());
        self.systems.retain(|_, l| !l.is_empty());
    }

    /// The links a message from `from` goes to, among `links` (every link of the router), given
    /// its target (`None`: the message type has no target fields).
    pub fn destinations(
        &self,
        from: LinkId,
        target: Option<(u8, u8)>,
        links: &[LinkId],
    ) -> Vec<LinkId> {
        let seen = match target {
            None | Some((0, _)) => return links.iter().copied().filter(|&l| l != from).collect(),
            Some((system, 0)) => self.systems.get(&system),
            Some(component) => self.components.get(&component),
        };
        let Some(seen) = seen else { return Vec::new() };
        let mut out: Vec<LinkId> = links
            .iter()
            .copied()
            .filter(|l| *l != from && seen.contains(l))
            .collect();
        out.sort_unstable();
        out
    }
}

/// MAVLink message ids a read-only endpoint may send.
mod id {
    pub const HEARTBEAT: u32 = 0;
    pub const SYSTEM_TIME: u32 = 2;
    pub const PING: u32 = 4;
    pub const PARAM_REQUEST_READ: u32 = 20;
    pub const PARAM_REQUEST_LIST: u32 = 21;
    pub const MISSION_REQUEST: u32 = 40;
    pub const MISSION_REQUEST_LIST: u32 = 43;
    pub const MISSION_ACK: u32 = 47;
    pub const MISSION_REQUEST_INT: u32 = 51;
    pub const REQUEST_DATA_STREAM: u32 = 66;
    pub const COMMAND_INT: u32 = 75;
    pub const COMMAND_LONG: u32 = 76;
    pub const TIMESYNC: u32 = 111;
    pub const LOG_REQUEST_LIST: u32 = 117;
    pub const LOG_REQUEST_DATA: u32 = 119;
    pub const LOG_REQUEST_END: u32 = 122;
    pub const PARAM_EXT_REQUEST_READ: u32 = 320;
    pub const PARAM_EXT_REQUEST_LIST: u32 = 321;
}

/// Commands that only ask the autopilot to send something.
const ASKING_COMMANDS: [u16; 5] = [
    511, // MAV_CMD_SET_MESSAGE_INTERVAL
    512, // MAV_CMD_REQUEST_MESSAGE
    519, // MAV_CMD_REQUEST_PROTOCOL_VERSION
    520, // MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES
    410, // MAV_CMD_GET_HOME_POSITION
];

/// Whether a read-only endpoint may send this message (`command`: the command number of a
/// COMMAND_LONG or COMMAND_INT).
pub fn read_only_allows(message_id: u32, command: Option<u16>) -> bool {
    use id::*;
    match message_id {
        HEARTBEAT | SYSTEM_TIME | PING | TIMESYNC => true,
        PARAM_REQUEST_READ
        | PARAM_REQUEST_LIST
        | PARAM_EXT_REQUEST_READ
        | PARAM_EXT_REQUEST_LIST => true,
        MISSION_REQUEST_LIST | MISSION_REQUEST | MISSION_REQUEST_INT | MISSION_ACK => true,
        REQUEST_DATA_STREAM => true,
        LOG_REQUEST_LIST | LOG_REQUEST_DATA | LOG_REQUEST_END => true,
        COMMAND_LONG | COMMAND_INT => command.is_some_and(|c| ASKING_COMMANDS.contains(&c)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTOPILOT: LinkId = 0;
    const AGENT: LinkId = 1;
    const GCS_A: LinkId = 2;
    const GCS_B: LinkId = 3;
    const LINKS: [LinkId; 4] = [AUTOPILOT, AGENT, GCS_A, GCS_B];

    fn table() -> RoutingTable {
        let mut t = RoutingTable::default();
        t.learn(AUTOPILOT, 1, 1); // the vehicle
        t.learn(AUTOPILOT, 1, 100); // its camera, behind the autopilot
        t.learn(AGENT, 1, 191); // the agent, same system id as the vehicle
        t.learn(GCS_A, 255, 190); // QGroundControl
        t.learn(GCS_B, 254, 190); // MAVProxy
        t
    }

    #[test]
    fn broadcast_goes_everywhere_but_back() {
        let t = table();
        assert_eq!(
            t.destinations(AUTOPILOT, None, &LINKS),
            vec![AGENT, GCS_A, GCS_B]
        );
        assert_eq!(
            t.destinations(GCS_A, Some((0, 0)), &LINKS),
            vec![AUTOPILOT, AGENT, GCS_B]
        );
    }

    #[test]
    fn addressed_messages_go_only_where_the_target_was_seen() {
        let t = table();
        // a GCS's command for the autopilot: to the autopilot only (the agent is component 191)
        assert_eq!(t.destinations(GCS_A, Some((1, 1)), &LINKS), vec![AUTOPILOT]);
        // for any component of system 1: the autopilot's link and the agent
        assert_eq!(
            t.destinations(GCS_A, Some((1, 0)), &LINKS),
            vec![AUTOPILOT, AGENT]
        );
        // the autopilot's COMMAND_ACK to QGroundControl never reaches MAVProxy or the agent
        assert_eq!(
            t.destinations(AUTOPILOT, Some((255, 190)), &LINKS),
            vec![GCS_A]
        );
        // nobody has been seen as system 42: dropped
        assert!(t.destinations(AUTOPILOT, Some((42, 1)), &LINKS).is_empty());
        // never back to where it came from, even if the target sits there
        assert!(t.destinations(GCS_A, Some((255, 190)), &LINKS).is_empty());
    }

    #[test]
    fn read_only_endpoints_watch_but_do_not_steer() {
        assert!(read_only_allows(id::HEARTBEAT, None));
        assert!(read_only_allows(id::PARAM_REQUEST_LIST, None));
        assert!(read_only_allows(id::REQUEST_DATA_STREAM, None));
        assert!(read_only_allows(id::COMMAND_LONG, Some(512)));
        assert!(read_only_allows(id::COMMAND_INT, Some(511)));
        assert!(!read_only_allows(id::COMMAND_LONG, Some(400)), "arm/disarm");
        assert!(
            !read_only_allows(id::COMMAND_LONG, Some(176)),
            "DO_SET_MODE"
        );
        assert!(!read_only_allows(id::COMMAND_LONG, None));
        assert!(!read_only_allows(11, None), "SET_MODE");
        assert!(!read_only_allows(23, None), "PARAM_SET");
        assert!(
            !read_only_allows(44, None),
            "MISSION_COUNT (a mission write)"
        );
        assert!(!read_only_allows(70, None), "RC_CHANNELS_OVERRIDE");
        assert!(!read_only_allows(110, None), "FILE_TRANSFER_PROTOCOL");
        assert!(!read_only_allows(121, None), "LOG_ERASE");
    }
}
