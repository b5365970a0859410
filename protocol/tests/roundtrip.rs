//! Round-trip property tests: every message type, serialised and parsed again, is the same value.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use protocol::broker::{BrokerDestination, DeliveryTask};
use protocol::lockboard::{
    BoardCommand, BoardErrorCode, BoardReply, BoltState, CellNumber, CellStatus, DoorState,
    ResetReason,
};
use protocol::locker_api::*;
use protocol::units::*;
use protocol::ws::*;
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000..2100, with sub-second precision down to the nanosecond
    (946_684_800i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| Utc.timestamp_opt(s, ns).single().unwrap_or_default())
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

macro_rules! unit {
    ($name:ident, $t:ty) => {
        fn $name() -> impl Strategy<Value = $t> {
            (<$t>::MIN..=<$t>::MAX).prop_map(|v| <$t>::new(v).unwrap())
        }
    };
}
unit!(percent, Percent);
unit!(latitude, Latitude);
unit!(longitude, Longitude);
unit!(metres, Metres);
unit!(degrees, Degrees);
unit!(speed, MetresPerSecond);
unit!(volts, Volts);

prop_compose! {
    fn position()(lat in latitude(), lon in longitude(), alt in metres()) -> Position {
        Position { lat, lon, alt }
    }
}

fn drone_state() -> impl Strategy<Value = DroneState> {
    prop::sample::select(DroneState::ALL.to_vec())
}

fn event_type() -> impl Strategy<Value = EventType> {
    use EventType::*;
    prop::sample::select(vec![
        TaskAssigned,
        Arrived,
        RetryNavigation,
        DropConfirmed,
        ReturnCommand,
        ArrivedBase,
        PreflightFailed,
        TookOff,
        Paused,
        Resumed,
        Aborted,
        DropTimeout,
        Completed,
        Ready,
        LandedElsewhere,
        Failsafe,
        BatteryLow,
        BatteryCritical,
        GpsLost,
        GpsRestored,
        FcLinkLost,
        FcLinkRestored,
        CloudLinkLost,
        AgentRestarted,
        AutopilotTookOver,
        PilotOverride,
        FlightOpRefused,
        CameraFault,
        CameraRestored,
        StorageFailed,
        StorageRestored,
        FlightLogReady,
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
    ])
}

prop_compose! {
    fn register()(drone_id in uuid(), model in text(), battery_level in percent(),
                  protocol_version in proptest::option::of(any::<u32>()), firmware_version in proptest::option::of(text()),
                  agent_version in proptest::option::of(text()), state in proptest::option::of(drone_state()),
                  delivery_id in proptest::option::of(uuid())) -> Register {
        Register { drone_id, model, battery_level, protocol_version, firmware_version, agent_version, state, delivery_id }
    }
}

prop_compose! {
    fn locker_register()(locker_id in uuid(), protocol_version in any::<u32>(), agent_version in proptest::option::of(text()), cells in any::<u16>()) -> LockerRegister {
        LockerRegister { locker_id, protocol_version, agent_version, cells }
    }
}

prop_compose! {
    fn telemetry()(battery_level in percent(), position in position(),
                   status in prop::sample::select(vec![FlightStatus::Idle, FlightStatus::Flying, FlightStatus::Hovering, FlightStatus::Landed, FlightStatus::Failsafe]),
                   battery_voltage in proptest::option::of(volts()), alt_msl in proptest::option::of(metres()),
                   heading in proptest::option::of(degrees()), ground_speed in proptest::option::of(speed()),
                   gps in proptest::option::of((prop::sample::select(vec![GpsFix::NoFix, GpsFix::Fix2d, GpsFix::Fix3d, GpsFix::Dgps, GpsFix::RtkFloat, GpsFix::RtkFixed]), any::<u8>())),
                   armed in proptest::option::of(any::<bool>()), flight_mode in proptest::option::of(text()),
                   state in proptest::option::of(drone_state()), delivery_id in proptest::option::of(uuid()),
                   storage in proptest::option::of(prop::sample::select(vec![StorageHealth::Ok, StorageHealth::Failed]))) -> Telemetry {
        Telemetry { battery_level, position, status, battery_voltage, alt_msl, heading, ground_speed,
                    gps: gps.map(|(fix, satellites)| GpsStatus { fix, satellites }), armed, flight_mode, state, delivery_id, storage }
    }
}

prop_compose! {
    fn event()(event_type in event_type(), delivery_id in proptest::option::of(uuid()), timestamp in time(),
               event_id in proptest::option::of(uuid()), seq in proptest::option::of(any::<u64>()),
               from_state in proptest::option::of(drone_state()), to_state in proptest::option::of(drone_state()),
               reason in proptest::option::of(text()), position in proptest::option::of(position()),
               cell_id in proptest::option::of(any::<u16>()), cell_uuid in proptest::option::of(uuid()),
               order_id in proptest::option::of(uuid())) -> Event {
        Event { event_type, delivery_id, timestamp, event_id, seq, from_state, to_state, reason, position, cell_id, cell_uuid, order_id }
    }
}

prop_compose! {
    fn task()(delivery_id in uuid(), lat in latitude(), lon in longitude(), aruco_id in any::<u32>(),
              priority in prop::sample::select(vec![Priority::Normal, Priority::Priority])) -> Task {
        Task { delivery_id, destination: Destination { lat, lon, aruco_id }, priority, volume: None }
    }
}

prop_compose! {
    fn command()(command in prop::sample::select(vec![CommandKind::DropCargo, CommandKind::ReturnToBase, CommandKind::Pause, CommandKind::Resume, CommandKind::Abort, CommandKind::ReturnToHome]),
                 cmd_id in proptest::option::of(uuid()), delivery_id in proptest::option::of(uuid())) -> Command {
        Command { command, cmd_id, delivery_id }
    }
}

prop_compose! {
    fn ack()(cmd_id in uuid(), executed in any::<bool>(), reason in proptest::option::of(text())) -> Ack {
        Ack { cmd_id, status: if executed { AckStatus::Executed } else { AckStatus::Rejected }, reason }
    }
}

prop_compose! {
    fn video_frame()(bytes in proptest::collection::vec(any::<u8>(), 0..64), width in any::<u32>(), height in any::<u32>(), seq in any::<u64>(), dropped in proptest::option::of(any::<u64>())) -> VideoFrame {
        use base64::Engine as _;
        VideoFrame { frame: base64::engine::general_purpose::STANDARD.encode(bytes), width, height, seq, dropped }
    }
}

prop_compose! {
    fn error_message()(code in "[A-Z_]{1,20}", message in text(), in_reply_to in proptest::option::of(text())) -> ErrorMessage {
        ErrorMessage { code, message, in_reply_to }
    }
}

prop_compose! {
    fn api_error()(code in "[A-Z_]{1,20}", message in text()) -> ApiError {
        ApiError { code, message }
    }
}

fn cell_size() -> impl Strategy<Value = Option<CellSize>> {
    proptest::option::of(prop::sample::select(vec![
        CellSize::Small,
        CellSize::Medium,
        CellSize::Large,
    ]))
}

fn locker_op() -> impl Strategy<Value = LockerOp> {
    prop_oneof![
        proptest::collection::vec((uuid(), any::<u16>(), cell_size()), 0..5).prop_map(|cells| {
            LockerOp::CellsSync(CellsSyncRequest {
                cells: cells
                    .into_iter()
                    .map(|(cell_uuid, cell_id, size)| CellMapping {
                        cell_uuid,
                        cell_id,
                        size,
                    })
                    .collect(),
            })
        }),
        (uuid(), proptest::option::of(uuid())).prop_map(|(cell_uuid, delivery_id)| {
            LockerOp::CellsOpen(CellsOpenRequest {
                cell_uuid,
                delivery_id,
            })
        }),
        uuid().prop_map(|cell_uuid| LockerOp::CellsClose(CellsCloseRequest { cell_uuid })),
        text().prop_map(|qr_data| LockerOp::QrScan(QrScanRequest { qr_data })),
    ]
}

fn locker_outcome() -> impl Strategy<Value = LockerOutcome> {
    prop_oneof![
        (any::<bool>(), any::<u32>()).prop_map(|(success, synced)| LockerOutcome::CellsSynced(
            CellsSyncResponse { success, synced }
        )),
        (any::<u16>(), time()).prop_map(|(cell_id, opened_at)| LockerOutcome::CellOpened(
            CellsOpenResponse {
                success: true,
                cell_id,
                opened_at
            }
        )),
        (any::<u16>(), time()).prop_map(|(cell_id, closed_at)| LockerOutcome::CellClosed(
            CellsCloseResponse {
                success: true,
                cell_id,
                closed_at
            }
        )),
        (any::<u16>(), proptest::option::of(uuid()), time()).prop_map(
            |(cell_id, order_id, opened_at)| LockerOutcome::QrScanned(QrScanResponse {
                success: true,
                cell_id,
                order_id,
                opened_at
            })
        ),
        api_error().prop_map(LockerOutcome::Error),
    ]
}

fn peer() -> impl Strategy<Value = Peer> {
    (
        prop::sample::select(vec![
            PeerKind::Drone,
            PeerKind::Locker,
            PeerKind::Backend,
            PeerKind::Relay,
        ]),
        text(),
    )
        .prop_map(|(kind, id)| Peer { kind, id })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        register().prop_map(Message::from),
        locker_register().prop_map(Message::from),
        telemetry().prop_map(Message::from),
        event().prop_map(Message::from),
        uuid().prop_map(|event_id| Message::from(EventAck { event_id })),
        task().prop_map(Message::from),
        command().prop_map(Message::from),
        ack().prop_map(Message::from),
        video_frame().prop_map(Message::from),
        error_message().prop_map(Message::from),
        (uuid(), locker_op())
            .prop_map(|(request_id, op)| Message::from(LockerRequest { request_id, op })),
        (uuid(), 100u16..600, locker_outcome()).prop_map(|(request_id, status, outcome)| {
            Message::from(LockerResponse {
                request_id,
                status,
                outcome,
            })
        }),
        (uuid(), uuid(), text()).prop_map(|(request_id, locker_id, qr_data)| Message::from(
            QrValidate {
                request_id,
                locker_id,
                qr_data
            }
        )),
        (
            uuid(),
            any::<bool>(),
            proptest::option::of(uuid()),
            proptest::option::of(uuid()),
            proptest::option::of(text())
        )
            .prop_map(
                |(request_id, valid, cell_uuid, order_id, reason)| Message::from(QrValidation {
                    request_id,
                    valid,
                    cell_uuid,
                    order_id,
                    reason
                })
            ),
        (
            peer(),
            prop::sample::select(vec![
                PresenceStatus::Connected,
                PresenceStatus::Disconnected,
                PresenceStatus::Silent
            ])
        )
            .prop_map(|(peer, status)| Message::from(Presence { peer, status })),
    ]
}

prop_compose! {
    fn envelope()(message in message(), timestamp in proptest::option::of(time()),
                  source in proptest::option::of(peer()), target in proptest::option::of(peer())) -> Envelope {
        Envelope { message, timestamp, source, target }
    }
}

fn cell() -> impl Strategy<Value = CellNumber> {
    (1u16..=255).prop_map(|n| CellNumber::new(n).unwrap())
}

fn board_command() -> impl Strategy<Value = BoardCommand> {
    prop_oneof![
        cell().prop_map(BoardCommand::Open),
        cell().prop_map(BoardCommand::Close),
        Just(BoardCommand::Status)
    ]
}

fn board_reply() -> impl Strategy<Value = BoardReply> {
    let code = prop::sample::select(vec![
        BoardErrorCode::BadCommand,
        BoardErrorCode::BadCell,
        BoardErrorCode::Jammed,
        BoardErrorCode::DoorOpen,
        BoardErrorCode::Busy,
    ]);
    let door = prop::sample::select(vec![DoorState::Open, DoorState::Closed]);
    prop_oneof![
        (
            "[ -~]{0,20}",
            proptest::option::of(prop::sample::select(vec![
                ResetReason::PowerOn,
                ResetReason::External,
                ResetReason::Watchdog,
                ResetReason::BrownOut,
                ResetReason::Unknown,
            ]))
        )
            .prop_map(|(f, reason)| BoardReply::Ready {
                firmware: f.trim().to_owned(),
                reason
            }),
        board_command().prop_map(BoardReply::Ok),
        (proptest::option::of(board_command()), code, "[ -~]{0,30}").prop_map(
            |(command, code, m)| BoardReply::Err {
                command,
                code,
                message: m.trim().to_owned()
            }
        ),
        proptest::collection::btree_map(cell(), (any::<bool>(), door.clone()), 0..10).prop_map(
            |cells| BoardReply::Status(
                cells
                    .into_iter()
                    .map(|(cell, (locked, door))| CellStatus {
                        cell,
                        bolt: if locked {
                            BoltState::Locked
                        } else {
                            BoltState::Unlocked
                        },
                        door
                    })
                    .collect()
            )
        ),
        (cell(), door).prop_map(|(cell, door)| BoardReply::Door { cell, door }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn envelopes_round_trip(env in envelope()) {
        let text = env.to_json();
        let back = Envelope::from_json(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back, env);
    }

    /// `to_json` writes the payload without a `serde_json::Value`; the `Serialize` impl still goes
    /// through one (sorted keys): the bytes must be the same, with and without routing fields.
    #[test]
    fn to_json_writes_the_serialize_impls_bytes(env in envelope(), source in any::<bool>()) {
        let mut env = env;
        if source {
            env.source = Some(Peer { kind: PeerKind::Drone, id: "9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d".into() });
        }
        let text = env.to_json();
        prop_assert_eq!(&text, &serde_json::to_string(&env).unwrap());
        // and the one-pass parse agrees with the two-step one (the `Deserialize` impl)
        let two_steps: Envelope = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(Envelope::from_json(&text).unwrap(), two_steps);
    }

    #[test]
    fn envelopes_round_trip_through_serde(env in envelope()) {
        let value = serde_json::to_value(&env).unwrap();
        let back: Envelope = serde_json::from_value(value).unwrap();
        prop_assert_eq!(back, env);
    }

    #[test]
    fn broker_tasks_round_trip(delivery_id in uuid(), order_id in uuid(), drone_id in uuid(), parcel_automat_id in uuid(),
                               latitude in latitude(), longitude in longitude(), aruco_id in any::<u32>(), created_at in time()) {
        let t = DeliveryTask { delivery_id, order_id, drone_id, priority: Priority::Normal, created_at,
            destination: BrokerDestination { parcel_automat_id, latitude, longitude, aruco_id } };
        let back: DeliveryTask = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn api_bodies_round_trip(op in locker_op(), err in api_error(), cells in any::<u32>(), ok in any::<bool>(), detail in proptest::option::of(text())) {
        fn rt<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) -> Result<(), TestCaseError> {
            let back: T = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            prop_assert_eq!(back, v);
            Ok(())
        }
        match op {
            LockerOp::CellsSync(b) => rt(b)?,
            LockerOp::CellsOpen(b) => rt(b)?,
            LockerOp::CellsClose(b) => rt(b)?,
            LockerOp::QrScan(b) => rt(b)?,
        }
        rt(ApiErrorResponse { success: false, data: None, error: err })?;
        rt(HealthResponse { status: if ok { HealthStatus::Ok } else { HealthStatus::Degraded }, version: "1".into(),
            board: ComponentHealth { ok, detail: detail.clone() }, camera: None, cloud: ComponentHealth { ok: !ok, detail: detail.clone() }, cells,
            storage: Some(ComponentHealth { ok, detail: detail.clone() }),
            out_of_service: if ok { Vec::new() } else { vec![CellOutOfService { cell_id: 1, reason: detail.unwrap_or_default() }] } })?;
    }

    #[test]
    fn board_commands_round_trip(cmd in board_command()) {
        prop_assert_eq!(BoardCommand::parse(&cmd.encode()).unwrap(), cmd);
    }

    #[test]
    fn board_replies_round_trip(reply in board_reply()) {
        let line = reply.encode();
        prop_assert_eq!(BoardReply::parse(&line).map_err(|e| TestCaseError::fail(format!("{e}: {line:?}")))?, reply);
    }
}
