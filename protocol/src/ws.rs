//! The WebSocket protocol between agents, the relay and the backend.
//!
//! Every frame is a JSON text message in the seed's envelope:
//!
//! ```json
//! {"type": "telemetry", "payload": { ... }, "timestamp": "2024-01-15T12:00:03Z"}
//! ```
//!
//! `timestamp` is optional on input and always written on output ([`Envelope::new`] stamps it).
//! Two optional routing fields are ours: `source` (written by the relay on what it forwards to the
//! backend: which agent said it) and `target` (written by the backend: which agent it is for).
//! Agents never write either; the relay ignores a `source` an agent claims and stamps its own.
//!
//! Parsing never panics: [`Envelope::from_json`] returns a [`ProtocolError`] that names the limit,
//! the message type or the field (`payload.destination.lat`) that was wrong.

use crate::error::ProtocolError;
use crate::locker_api::{
    ApiError, CellsCloseRequest, CellsCloseResponse, CellsOpenRequest, CellsOpenResponse,
    CellsSyncRequest, CellsSyncResponse, QrScanRequest, QrScanResponse,
};
use crate::units::{
    Degrees, Latitude, Longitude, Metres, MetresPerSecond, Percent, Position, Volts,
};
use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Version of this protocol, sent in `register` so the backend can tell agent builds apart.
/// Bump it when a message changes shape.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame any peer accepts, in bytes. A 640×480 JPEG video frame in base64 is
/// 50–150 KB; anything past this is a bug or an attack and is refused before parsing.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub message: Message,
    /// When the sender wrote the frame. Optional on input, always present on output.
    pub timestamp: Option<DateTime<Utc>>,
    /// Set by the relay on frames it forwards to the backend: the agent that sent it.
    pub source: Option<Peer>,
    /// Set by the backend on frames for an agent: the agent it is addressed to.
    pub target: Option<Peer>,
}

impl Envelope {
    /// A frame stamped with the current time.
    pub fn new(message: impl Into<Message>) -> Self {
        Self {
            message: message.into(),
            timestamp: Some(Utc::now()),
            source: None,
            target: None,
        }
    }

    pub fn with_target(mut self, target: Peer) -> Self {
        self.target = Some(target);
        self
    }

    pub fn with_source(mut self, source: Peer) -> Self {
        self.source = Some(source);
        self
    }

    /// The wire name of this frame's type (`"telemetry"`, `"event"`, ...).
    pub fn kind(&self) -> &'static str {
        self.message.kind()
    }

    /// Parses one frame, refusing anything over [`MAX_MESSAGE_BYTES`] before reading it.
    pub fn from_json(text: &str) -> Result<Self, ProtocolError> {
        Self::from_slice(text.as_bytes())
    }

    /// As [`Envelope::from_json`], from bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge {
                size: bytes.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        // One pass when `type` comes before `payload`, as in every frame this crate writes: the
        // payload is typed by `type` straight from the bytes. Anything else (the payload first, a
        // frame with anything wrong in it) is read again in two steps, which name what was wrong.
        // UTF-8 checked once for the whole frame, rather than string by string (invalid UTF-8
        // is an error, which the two steps report)
        if let Ok(text) = std::str::from_utf8(bytes) {
            if let Ok(FastEnvelope(env)) = serde_json::from_str(text) {
                return Ok(env);
            }
        }
        Self::from_slice_in_two_steps(bytes)
    }

    /// The envelope with its payload as a `Value`, then the payload typed by `type` through
    /// `serde_path_to_error` (`payload.position.lat`). Every error [`Envelope::from_slice`]
    /// returns comes from here: a frame's errors read the same whichever path it took.
    fn from_slice_in_two_steps(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let raw: RawEnvelope = serde_json::from_slice(bytes).map_err(ProtocolError::from_json)?;
        raw.into_envelope()
    }

    /// Serialises to the wire form. Every type here serialises infallibly (string keys, finite
    /// numbers), so this returns a `String` rather than a `Result`.
    ///
    /// The payload's keys come out sorted, as they always have (it used to go through a
    /// `serde_json::Value`, a sorted map): the same bytes as the `Serialize` impl writes, without
    /// the `Value` (see `sorted_json`).
    pub fn to_json(&self) -> String {
        self.write_json()
            .unwrap_or_else(|_| self.to_json_via_value())
    }

    fn write_json(&self) -> Result<String, serde_json::Error> {
        // a drone's full telemetry with `source` is ~500 bytes
        let mut out = Vec::with_capacity(640);
        out.extend_from_slice(br#"{"type":"#);
        serde_json::to_writer(&mut out, self.kind())?;
        out.extend_from_slice(br#","payload":"#);
        self.message.write_payload(&mut out)?;
        if let Some(ts) = &self.timestamp {
            out.extend_from_slice(br#","timestamp":"#);
            if !crate::wire_time::write(&mut out, ts) {
                serde_json::to_writer(&mut out, ts)?;
            }
        }
        if let Some(source) = &self.source {
            out.extend_from_slice(br#","source":"#);
            serde_json::to_writer(&mut out, source)?;
        }
        if let Some(target) = &self.target {
            out.extend_from_slice(br#","target":"#);
            serde_json::to_writer(&mut out, target)?;
        }
        out.push(b'}');
        String::from_utf8(out).map_err(serde_json::Error::custom)
    }

    /// The `Serialize` impl's bytes (the payload through a `Value`): what [`Envelope::to_json`]
    /// falls back to if its own writer refuses a value.
    fn to_json_via_value(&self) -> String {
        // Serialising our own types to a String cannot fail: no non-string map keys, and every
        // float is range-checked finite on construction.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","payload":{{"code":"INTERNAL","message":"{e}"}}}}"#)
        })
    }
}

/// Who is at the other end: a drone or a locker, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub kind: PeerKind,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerKind {
    Drone,
    Locker,
    Backend,
    Relay,
}

/// Every message type, by its wire name.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// drone → cloud, first frame after connecting.
    Register(Register),
    /// locker → cloud, first frame after connecting.
    LockerRegister(LockerRegister),
    /// drone → cloud, periodic.
    Telemetry(Telemetry),
    /// drone or locker → cloud: something happened. Kept until acknowledged.
    Event(Event),
    /// cloud → agent: this event id reached the backend; drop it from the queue.
    EventAck(EventAck),
    /// cloud → drone: fly this delivery.
    Task(Task),
    /// cloud → drone: a command for the running delivery or a mission control.
    Command(Command),
    /// drone → cloud: the outcome of a command (or a task) carrying an id.
    Ack(Ack),
    /// drone → cloud: one camera frame.
    VideoFrame(VideoFrame),
    /// anyone → anyone: the frame you sent could not be acted on.
    Error(ErrorMessage),
    /// cloud → locker: one of the locker HTTP API's operations, through the relay.
    LockerRequest(LockerRequest),
    /// locker → cloud: the answer to a [`LockerRequest`], with the same id.
    LockerResponse(LockerResponse),
    /// locker → cloud: a customer showed this QR code; is it good, and for which cell?
    QrValidate(QrValidate),
    /// cloud → locker: the verdict on a [`QrValidate`].
    QrValidation(QrValidation),
    /// relay → backend: an agent came, went or fell silent.
    Presence(Presence),
}

macro_rules! message_kinds {
    ($($variant:ident($ty:ty) = $name:literal),* $(,)?) => {
        impl Message {
            /// Every wire type name, in declaration order.
            pub const KINDS: &'static [&'static str] = &[$($name),*];

            pub fn kind(&self) -> &'static str {
                match self { $(Message::$variant(_) => $name),* }
            }

            fn payload_value(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self { $(Message::$variant(p) => serde_json::to_value(p)),* }
            }

            /// Appends the payload as `payload_value` writes it (keys sorted), without the `Value`.
            fn write_payload(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
                match self { $(Message::$variant(p) => crate::sorted_json::write(out, p)),* }
            }

            /// `name` as the wire name of one of the types, if it is one.
            fn static_kind(name: &str) -> Option<&'static str> {
                match name {
                    $($name => Some($name),)*
                    _ => None,
                }
            }

            /// Types the map's next value as the payload of a `kind` frame, as it is read.
            fn next_payload<'de, A: serde::de::MapAccess<'de>>(
                kind: &str,
                map: &mut A,
            ) -> Result<Self, A::Error> {
                match kind {
                    $($name => map.next_value::<$ty>().map(Message::$variant),)*
                    other => Err(A::Error::custom(format_args!("unknown message type `{other}`"))),
                }
            }

            /// Parses `payload` as the type named `kind`; a wrong field is named by its path.
            pub fn from_parts(kind: &str, payload: serde_json::Value) -> Result<Self, ProtocolError> {
                match kind {
                    $($name => parse_payload::<$ty>(kind, payload).map(Message::$variant),)*
                    other => Err(ProtocolError::UnknownType(other.to_owned())),
                }
            }
        }

        $(impl From<$ty> for Message {
            fn from(p: $ty) -> Self { Message::$variant(p) }
        })*
    };
}

message_kinds! {
    Register(Register) = "register",
    LockerRegister(LockerRegister) = "locker_register",
    Telemetry(Telemetry) = "telemetry",
    Event(Event) = "event",
    EventAck(EventAck) = "event_ack",
    Task(Task) = "task",
    Command(Command) = "command",
    Ack(Ack) = "ack",
    VideoFrame(VideoFrame) = "video_frame",
    Error(ErrorMessage) = "error",
    LockerRequest(LockerRequest) = "locker_request",
    LockerResponse(LockerResponse) = "locker_response",
    QrValidate(QrValidate) = "qr_validate",
    QrValidation(QrValidation) = "qr_validation",
    Presence(Presence) = "presence",
}

fn parse_payload<T: serde::de::DeserializeOwned>(
    kind: &str,
    payload: serde_json::Value,
) -> Result<T, ProtocolError> {
    serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "payload".to_owned()
        } else {
            format!("payload.{path}")
        };
        ProtocolError::Field {
            kind: kind.to_owned(),
            path,
            reason: e.into_inner().to_string(),
        }
    })
}

/// The envelope as it arrives, before the payload is typed by `type`.
#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    source: Option<serde_json::Value>,
    #[serde(default)]
    target: Option<serde_json::Value>,
}

impl RawEnvelope {
    fn into_envelope(self) -> Result<Envelope, ProtocolError> {
        let kind = self.kind.ok_or(ProtocolError::MissingField("type"))?;
        let payload = self.payload.ok_or(ProtocolError::MissingField("payload"))?;
        let message = Message::from_parts(&kind, payload)?;
        Ok(Envelope {
            timestamp: envelope_field(&kind, "timestamp", self.timestamp)?,
            source: envelope_field(&kind, "source", self.source)?,
            target: envelope_field(&kind, "target", self.target)?,
            message,
        })
    }
}

/// Types one optional envelope field; `null` counts as absent.
fn envelope_field<T: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    value: Option<serde_json::Value>,
) -> Result<Option<T>, ProtocolError> {
    value
        .filter(|v| !v.is_null())
        .map(|v| {
            serde_path_to_error::deserialize(v).map_err(|e| ProtocolError::Field {
                kind: kind.to_owned(),
                path: name.to_owned(),
                reason: e.into_inner().to_string(),
            })
        })
        .transpose()
}

/// The one-pass parse behind [`Envelope::from_slice`]: `type`, then the payload typed by it as it
/// is read (a `type` after the payload is refused here). It only ever has to succeed or give up:
/// on any error the frame is parsed again by [`RawEnvelope`], whose errors are the ones returned,
/// so the errors here say little.
struct FastEnvelope(Envelope);

impl<'de> Deserialize<'de> for FastEnvelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FastEnvelopeVisitor)
    }
}

struct FastEnvelopeVisitor;

impl<'de> serde::de::Visitor<'de> for FastEnvelopeVisitor {
    type Value = FastEnvelope;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an envelope with `type` before `payload`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FastEnvelope, A::Error> {
        let mut kind: Option<&'static str> = None;
        let mut message = None;
        // `Some(None)`: the field was there as `null` (absent, as in `RawEnvelope`)
        let mut timestamp: Option<Option<crate::wire_time::Timestamp>> = None;
        let mut source: Option<Option<Peer>> = None;
        let mut target: Option<Option<Peer>> = None;
        while let Some(field) = map.next_key::<EnvelopeField>()? {
            match field {
                EnvelopeField::Type if kind.is_none() => {
                    kind = Some(map.next_value::<KindName>()?.0);
                }
                EnvelopeField::Payload if message.is_none() => {
                    let Some(kind) = kind else {
                        return Err(A::Error::custom("payload before type"));
                    };
                    message = Some(Message::next_payload(kind, &mut map)?);
                }
                EnvelopeField::Timestamp if timestamp.is_none() => {
                    timestamp = Some(map.next_value()?);
                }
                EnvelopeField::Source if source.is_none() => source = Some(map.next_value()?),
                EnvelopeField::Target if target.is_none() => target = Some(map.next_value()?),
                EnvelopeField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                _ => return Err(A::Error::custom("duplicate field")),
            }
        }
        let message = message.ok_or_else(|| A::Error::custom("no payload"))?;
        Ok(FastEnvelope(Envelope {
            message,
            timestamp: timestamp.flatten().map(|t| t.0),
            source: source.flatten(),
            target: target.flatten(),
        }))
    }
}

/// A key of the envelope object.
enum EnvelopeField {
    Type,
    Payload,
    Timestamp,
    Source,
    Target,
    /// Ignored, as `RawEnvelope` ignores it.
    Other,
}

impl<'de> Deserialize<'de> for EnvelopeField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = EnvelopeField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EnvelopeField, E> {
                Ok(match v {
                    "type" => EnvelopeField::Type,
                    "payload" => EnvelopeField::Payload,
                    "timestamp" => EnvelopeField::Timestamp,
                    "source" => EnvelopeField::Source,
                    "target" => EnvelopeField::Target,
                    _ => EnvelopeField::Other,
                })
            }
        }
        d.deserialize_identifier(Name)
    }
}

/// `type`'s value, one of [`Message::KINDS`].
struct KindName(&'static str);

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = KindName;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a message type")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KindName, E> {
                Message::static_kind(v)
                    .map(KindName)
                    .ok_or_else(|| E::custom("unknown message type"))
            }
        }
        d.deserialize_str(Name)
    }
}

/// The reference shape of the wire form: the payload through a `serde_json::Value`, whose object
/// keys come out sorted. [`Envelope::to_json`] writes the same bytes without the `Value`.
impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let payload = self.message.payload_value().map_err(S::Error::custom)?;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", self.kind())?;
        map.serialize_entry("payload", &payload)?;
        if let Some(ts) = &self.timestamp {
            map.serialize_entry("timestamp", ts)?;
        }
        if let Some(source) = &self.source {
            map.serialize_entry("source", source)?;
        }
        if let Some(target) = &self.target {
            map.serialize_entry("target", target)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawEnvelope::deserialize(d)?
            .into_envelope()
            .map_err(D::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// drone → cloud

/// The drone introduces itself. `protocol_version` and `firmware_version` are ours (optional on
/// input so the seed's message parses; our agents always send them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub drone_id: Uuid,
    pub model: String,
    /// State of charge, percent.
    pub battery_level: Percent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// The agent's software version (`drone-agent 0.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The state the drone is in right now (after a restart it may be mid-delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DroneState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
}

/// The locker introduces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockerRegister {
    pub locker_id: Uuid,
    pub protocol_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// How many cells the lock board drives.
    pub cells: u16,
}

/// Periodic telemetry. The seed's three fields come first; the rest are ours and optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// State of charge, percent (never volts: see `battery_voltage`).
    pub battery_level: Percent,
    /// WGS-84 position; `alt` is relative to home, metres.
    pub position: Position,
    pub status: FlightStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_voltage: Option<Volts>,
    /// Altitude above mean sea level, metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_msl: Option<Metres>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<Degrees>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground_speed: Option<MetresPerSecond>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gps: Option<GpsStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub armed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DroneState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
    /// Whether the agent can write its state and events (`failed`: it keeps them in memory and
    /// flies on). Absent from older agents and the seed: read as unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageHealth>,
}

/// The agent's own storage (state file, event outbox), as telemetry reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageHealth {
    Ok,
    /// A write failed (full or failing disk); retried, backing off, until it works again.
    Failed,
}

/// The seed's coarse `status` in telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlightStatus {
    Idle,
    Flying,
    Hovering,
    Landed,
    Failsafe,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpsStatus {
    pub fix: GpsFix,
    pub satellites: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpsFix {
    NoFix,
    Fix2d,
    Fix3d,
    Dgps,
    RtkFloat,
    RtkFixed,
}

/// The drone's state as the backend sees it. The seed's six keep their spelling; the rest are the
/// failure handling the seed lacks (see drone-agent's state machine for every transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DroneState {
    Idle,
    Preflight,
    Navigating,
    WaitingDrop,
    Dropped,
    Returning,
    Completed,
    Paused,
    /// Flying home with the parcel still on board (abort, drop timeout, cloud lost, battery low).
    Aborting,
    /// Landing where it is (battery critical, GPS lost too long).
    EmergencyLanding,
    /// The flight controller stopped answering; its own failsafe flies the drone.
    Failsafe,
    /// On the ground, disarmed, somewhere other than home.
    LandedElsewhere,
    /// The autopilot changed mode by itself (a failsafe, a fence, an RC pilot): the agent follows
    /// and commands nothing until the backend's `resume` (or its config) hands control back.
    AutopilotControl,
    /// A person took the controls (a ground station's mode change or flight command, an RC
    /// transmitter): the delivery is suspended, telemetry goes on, the agent commands nothing
    /// until `resume` (or the hand-back mode its config names) hands control back.
    PilotOverride,
}

impl DroneState {
    /// Every state, in declaration order; the test below fails when a new one is missing here.
    pub const ALL: [DroneState; 14] = [
        DroneState::Idle,
        DroneState::Preflight,
        DroneState::Navigating,
        DroneState::WaitingDrop,
        DroneState::Dropped,
        DroneState::Returning,
        DroneState::Completed,
        DroneState::Paused,
        DroneState::Aborting,
        DroneState::EmergencyLanding,
        DroneState::Failsafe,
        DroneState::LandedElsewhere,
        DroneState::AutopilotControl,
        DroneState::PilotOverride,
    ];

    /// The wire name (`NAVIGATING`), as serde writes it; the match makes a new variant name itself.
    pub fn as_str(self) -> &'static str {
        match self {
            DroneState::Idle => "IDLE",
            DroneState::Preflight => "PREFLIGHT",
            DroneState::Navigating => "NAVIGATING",
            DroneState::WaitingDrop => "WAITING_DROP",
            DroneState::Dropped => "DROPPED",
            DroneState::Returning => "RETURNING",
            DroneState::Completed => "COMPLETED",
            DroneState::Paused => "PAUSED",
            DroneState::Aborting => "ABORTING",
            DroneState::EmergencyLanding => "EMERGENCY_LANDING",
            DroneState::Failsafe => "FAILSAFE",
            DroneState::LandedElsewhere => "LANDED_ELSEWHERE",
            DroneState::AutopilotControl => "AUTOPILOT_CONTROL",
            DroneState::PilotOverride => "PILOT_OVERRIDE",
        }
    }
}

/// Something that happened, kept in the sender's on-disk queue until an [`EventAck`] names its id.
/// The seed's three fields come first; the rest are ours and optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_type: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
    pub timestamp: DateTime<Utc>,
    /// Unique per event; the backend de-duplicates by it (a re-sent event keeps its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Per-sender sequence number, increasing by one per event: a gap is visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_state: Option<DroneState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_state: Option<DroneState>,
    /// Why: every failsafe and every give-up says it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// Locker events: which cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_id: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
}

impl Event {
    /// A new event with a fresh id, stamped now.
    pub fn new(event_type: EventType) -> Self {
        Self {
            event_type,
            delivery_id: None,
            timestamp: Utc::now(),
            event_id: Some(Uuid::new_v4()),
            seq: None,
            from_state: None,
            to_state: None,
            reason: None,
            position: None,
            cell_id: None,
            cell_uuid: None,
            order_id: None,
        }
    }
}

/// Event names. The seed's six keep their spelling; the rest are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    // the seed's drone events
    TaskAssigned,
    Arrived,
    RetryNavigation,
    DropConfirmed,
    ReturnCommand,
    ArrivedBase,
    // drone: flight and mission controls
    PreflightFailed,
    TookOff,
    Paused,
    Resumed,
    Aborted,
    DropTimeout,
    Completed,
    Ready,
    LandedElsewhere,
    // drone: failsafes
    Failsafe,
    BatteryLow,
    BatteryCritical,
    GpsLost,
    GpsRestored,
    FcLinkLost,
    FcLinkRestored,
    CloudLinkLost,
    AgentRestarted,
    /// The autopilot changed mode by itself; the reason is its own words.
    AutopilotTookOver,
    /// A person took the controls; the reason says who and what (a mode change, arming, a
    /// flight command).
    PilotOverride,
    /// The autopilot refused a flight operation (reported once; retries are bounded).
    FlightOpRefused,
    // drone: the downward camera (precision approach, video)
    CameraFault,
    CameraRestored,
    // drone: its own storage (a full or failing disk; the flight goes on)
    StorageFailed,
    StorageRestored,
    /// The autopilot's own log of the flight is downloaded; the reason names the file, its
    /// size and SHA-256.
    FlightLogReady,
    // locker
    CellOpened,
    CellClosed,
    DoorOpened,
    DoorClosed,
    ParcelLoaded,
    PickedUp,
    QrRejected,
    BoardFault,
    BoardRecovered,
    TechnicianAction,
}

impl EventType {
    /// The wire name (what serde writes), without a serde round trip. An exhaustive match: a new
    /// variant does not compile until it has its name here, and the test below checks each
    /// name against serde.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TaskAssigned => "task_assigned",
            EventType::Arrived => "arrived",
            EventType::RetryNavigation => "retry_navigation",
            EventType::DropConfirmed => "drop_confirmed",
            EventType::ReturnCommand => "return_command",
            EventType::ArrivedBase => "arrived_base",
            EventType::PreflightFailed => "preflight_failed",
            EventType::TookOff => "took_off",
            EventType::Paused => "paused",
            EventType::Resumed => "resumed",
            EventType::Aborted => "aborted",
            EventType::DropTimeout => "drop_timeout",
            EventType::Completed => "completed",
            EventType::Ready => "ready",
            EventType::LandedElsewhere => "landed_elsewhere",
            EventType::Failsafe => "failsafe",
            EventType::BatteryLow => "battery_low",
            EventType::BatteryCritical => "battery_critical",
            EventType::GpsLost => "gps_lost",
            EventType::GpsRestored => "gps_restored",
            EventType::FcLinkLost => "fc_link_lost",
            EventType::FcLinkRestored => "fc_link_restored",
            EventType::CloudLinkLost => "cloud_link_lost",
            EventType::AgentRestarted => "agent_restarted",
            EventType::AutopilotTookOver => "autopilot_took_over",
            EventType::PilotOverride => "pilot_override",
            EventType::FlightOpRefused => "flight_op_refused",
            EventType::CameraFault => "camera_fault",
            EventType::CameraRestored => "camera_restored",
            EventType::StorageFailed => "storage_failed",
            EventType::StorageRestored => "storage_restored",
            EventType::FlightLogReady => "flight_log_ready",
            EventType::CellOpened => "cell_opened",
            EventType::CellClosed => "cell_closed",
            EventType::DoorOpened => "door_opened",
            EventType::DoorClosed => "door_closed",
            EventType::ParcelLoaded => "parcel_loaded",
            EventType::PickedUp => "picked_up",
            EventType::QrRejected => "qr_rejected",
            EventType::BoardFault => "board_fault",
            EventType::BoardRecovered => "board_recovered",
            EventType::TechnicianAction => "technician_action",
        }
    }
}

/// Acknowledges one event by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    pub event_id: Uuid,
}

// ---------------------------------------------------------------------------------------------
// cloud → drone

/// A delivery to fly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub delivery_id: Uuid,
    pub destination: Destination,
    pub priority: Priority,
    /// The airspace the delivery may use (ours, optional: the seed's tasks have none, and the
    /// agent then uses its `[geofence]` config). See [`crate::volume`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<crate::volume::OperationalVolume>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub lat: Latitude,
    pub lon: Longitude,
    /// The ArUco marker on the destination locker.
    pub aruco_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Normal,
    /// The seed's broker spells high priority `priority`.
    #[serde(alias = "high")]
    Priority,
}

/// A command. `cmd_id` is what makes it acknowledgeable and idempotent; the seed's own
/// `drop_cargo` and `return_to_base` come without one and are still obeyed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The mission-management seed calls this field `action`; both are accepted.
    #[serde(alias = "action")]
    pub command: CommandKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    DropCargo,
    ReturnToBase,
    Pause,
    Resume,
    /// Give up the delivery and fly home with the parcel.
    Abort,
    /// Fly home now (same as the seed's `return_to_base`, available at any point in flight).
    ReturnToHome,
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub cmd_id: Uuid,
    pub status: AckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Executed,
    Rejected,
}

/// One camera frame, base64-encoded JPEG as in the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoFrame {
    /// Base64 (standard alphabet, padded) of a JPEG image; checked on the way in.
    #[serde(deserialize_with = "base64_text")]
    pub frame: String,
    pub width: u32,
    pub height: u32,
    /// Per-stream frame counter: gaps show dropped frames.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

fn base64_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use base64::Engine as _;
    let s = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(&s)
        .map_err(|e| D::Error::custom(format!("frame is not valid base64: {e}")))?;
    Ok(s)
}

/// A frame could not be acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Machine-readable, SCREAMING_SNAKE_CASE (see [`crate::error::codes`]).
    pub code: String,
    pub message: String,
    /// The id of the command, request or event this error answers, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// cloud ↔ locker

/// One locker API operation carried over the relay, answered by a [`LockerResponse`] with the same
/// `request_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockerRequest {
    pub request_id: Uuid,
    #[serde(flatten)]
    pub op: LockerOp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "body", rename_all = "snake_case")]
pub enum LockerOp {
    CellsSync(CellsSyncRequest),
    CellsOpen(CellsOpenRequest),
    CellsClose(CellsCloseRequest),
    QrScan(QrScanRequest),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockerResponse {
    pub request_id: Uuid,
    /// The HTTP status the same operation would have had over the locker's HTTP API.
    pub status: u16,
    #[serde(flatten)]
    pub outcome: LockerOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", content = "body", rename_all = "snake_case")]
pub enum LockerOutcome {
    CellsSynced(CellsSyncResponse),
    CellOpened(CellsOpenResponse),
    CellClosed(CellsCloseResponse),
    QrScanned(QrScanResponse),
    Error(ApiError),
}

/// The locker asks whether a scanned code is good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrValidate {
    pub request_id: Uuid,
    pub locker_id: Uuid,
    pub qr_data: String,
}

/// The backend's verdict. When `valid`, `cell_uuid` says which cell to open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrValidation {
    pub request_id: Uuid,
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// Why not, in words a customer can read on the locker's screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// relay → backend

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub peer: Peer,
    pub status: PresenceStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Connected,
    Disconnected,
    /// Connected, but missed its pongs: probably a dead 4G link not yet noticed by TCP.
    Silent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_are_serde_s_for_every_variant() {
        // serde lists every variant's name when refusing an unknown one: no hand-kept list here
        // for a new variant to escape
        let err = serde_json::from_str::<EventType>("\"no_such_event\"").unwrap_err();
        let msg = err.to_string();
        let names: Vec<&str> = msg
            .split('`')
            .skip(3) // "unknown variant `no_such_event`, expected one of `a`, `b`, ..."
            .step_by(2)
            .collect();
        assert!(names.len() >= 40, "{msg}");
        for name in names {
            let e: EventType = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(e.as_str(), name);
            assert_eq!(serde_json::to_value(e).unwrap(), name);
        }
    }

    #[test]
    fn drone_state_names_and_all_are_serde_s_for_every_variant() {
        // the variant names from serde's own refusal, as for EventType above
        let err = serde_json::from_str::<DroneState>("\"NO_SUCH_STATE\"").unwrap_err();
        let msg = err.to_string();
        let names: Vec<&str> = msg.split('`').skip(3).step_by(2).collect();
        let all: Vec<&str> = DroneState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(all, names, "DroneState::ALL against serde's list: {msg}");
        for name in names {
            let s: DroneState = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(s.as_str(), name);
            assert_eq!(serde_json::to_value(s).unwrap(), name);
        }
    }

    #[test]
    fn kinds_are_unique() {
        let mut k = Message::KINDS.to_vec();
        k.sort_unstable();
        k.dedup();
        assert_eq!(k.len(), Message::KINDS.len());
    }

    fn one_pass(text: &str) -> Option<Envelope> {
        serde_json::from_str::<FastEnvelope>(text).ok().map(|f| f.0)
    }

    /// Both parses of `text`: the one pass must give up or agree with the two steps.
    fn parses_alike(text: &str) -> Option<Envelope> {
        let two_steps = Envelope::from_slice_in_two_steps(text.as_bytes());
        let fast = one_pass(text);
        if let Some(fast) = &fast {
            assert_eq!(Ok(fast), two_steps.as_ref(), "{text}");
        }
        assert_eq!(Envelope::from_json(text), two_steps, "{text}");
        fast
    }

    const TELEMETRY: &str = r#"{"battery_level":85.3,"position":{"lat":55.7558,"lon":37.6173,"alt":10.5},"status":"flying"}"#;

    #[test]
    fn frames_with_type_first_take_the_one_pass() {
        for text in [
            format!(r#"{{"type":"telemetry","payload":{TELEMETRY}}}"#),
            format!(
                r#"{{"type":"telemetry","payload":{TELEMETRY},"timestamp":"2024-01-15T12:00:03Z"}}"#
            ),
            // null is absent, as before
            format!(
                r#"{{"type":"telemetry","payload":{TELEMETRY},"timestamp":null,"source":null,"target":null}}"#
            ),
            // the routing fields and unknown ones, anywhere
            format!(
                r#"{{"source":{{"kind":"drone","id":"d1"}},"x":[1,{{"y":null}}],"type":"telemetry","target":{{"kind":"backend","id":"b"}},"payload":{TELEMETRY},"z":1e400}}"#
            ),
            // an escaped type name
            format!(r#"{{"type":"tele\u006detry","payload":{TELEMETRY}}}"#),
            format!(" \n{{ \"type\" : \"telemetry\" ,\n \"payload\" : {TELEMETRY} }} \n"),
        ] {
            let env = parses_alike(&text).unwrap_or_else(|| panic!("not in one pass: {text}"));
            assert_eq!(env.kind(), "telemetry");
        }
        // what this crate writes, every type (one of each that parses)
        let env = Envelope::new(EventAck {
            event_id: Uuid::nil(),
        })
        .with_source(Peer {
            kind: PeerKind::Drone,
            id: "d".into(),
        });
        assert_eq!(one_pass(&env.to_json()), Some(env));
    }

    #[test]
    fn the_rest_takes_two_steps_with_the_same_result() {
        for text in [
            // payload before type: the two steps handle it
            format!(r#"{{"payload":{TELEMETRY},"type":"telemetry"}}"#),
            // a repeated key in the payload: the last one, as a `Value` has it
            r#"{"type":"event_ack","payload":{"event_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d","event_id":"00000000-0000-0000-0000-000000000000"}}"#.to_owned(),
        ] {
            assert!(one_pass(&text).is_none(), "{text}");
            assert!(Envelope::from_json(&text).is_ok(), "{text}");
            parses_alike(&text);
        }
        // errors: all from the two steps, whatever the one pass made of the frame
        for text in [
            "",
            "{",
            "[]",
            r#"["telemetry",{}]"#,
            r#"{"payload":{}}"#,
            r#"{"type":"telemetry"}"#,
            r#"{"type":null,"payload":{}}"#,
            r#"{"type":5,"payload":{}}"#,
            r#"{"type":"teleport","payload":{}}"#,
            r#"{"type":"telemetry","type":"telemetry","payload":{}}"#,
            r#"{"type":"event_ack","payload":{"event_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d"},"payload":{}}"#,
            r#"{"type":"event_ack","payload":{"event_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d"},"timestamp":"x"}"#,
            r#"{"type":"event_ack","payload":{"event_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d"},"source":{"kind":"x","id":"y"}}"#,
            r#"{"type":"event_ack","payload":{"event_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d"}} x"#,
            r#"{"type":"telemetry","payload":{"battery_level":85.3,"position":{"lat":95,"lon":37.6173,"alt":10.5},"status":"flying"}}"#,
            r#"{"type":"telemetry","payload":{"battery_level":85.3,"position":{"lat":5,"lon":37.6173,"alt":10.5},"status":5}}"#,
            r#"{"type":"telemetry","payload":{"battery_level":1e400,"position":{"lat":5,"lon":37.6173,"alt":10.5},"status":"flying"}}"#,
        ] {
            assert!(one_pass(text).is_none(), "{text}");
            let e = Envelope::from_json(text).expect_err(text);
            assert_eq!(Err(e), Envelope::from_slice_in_two_steps(text.as_bytes()));
        }
    }

    /// The one difference, on purpose: a field the types do not know is skipped without being
    /// read into a `Value`, so a number out of f64's range (or a lone UTF-16 surrogate) in it no
    /// longer refuses the frame. The top level's unknown fields were always skipped that way.
    #[test]
    fn unknown_fields_inside_the_payload_are_skipped_unread() {
        let text = r#"{"type":"telemetry","payload":{"battery_level":85.3,"position":{"lat":55.7558,"lon":37.6173,"alt":10.5,"junk":1e400},"status":"flying","note":"\ud800"}}"#;
        assert!(matches!(
            Envelope::from_slice_in_two_steps(text.as_bytes()),
            Err(ProtocolError::Malformed { .. })
        ));
        assert_eq!(one_pass(text).map(|e| e.kind()), Some("telemetry"));
        assert!(Envelope::from_json(text).is_ok());
    }

    #[test]
    fn to_json_writes_the_serialize_impls_bytes() {
        let mut env = Envelope::new(EventAck {
            event_id: Uuid::nil(),
        });
        assert_eq!(env.to_json(), env.to_json_via_value());
        env.timestamp = None;
        env.source = Some(Peer {
            kind: PeerKind::Locker,
            id: "l\"1".into(),
        });
        env.target = Some(Peer {
            kind: PeerKind::Backend,
            id: "b".into(),
        });
        assert_eq!(env.to_json(), env.to_json_via_value());
    }

    #[test]
    fn to_json_always_stamps_new_envelopes() {
        let env = Envelope::new(EventAck {
            event_id: Uuid::nil(),
        });
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        assert!(v["timestamp"].is_string());
        assert_eq!(v["type"], "event_ack");
    }
}
