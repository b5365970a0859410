//! Bad input yields an error that names the field or the limit, never a panic.

use proptest::prelude::*;
use protocol::error::ProtocolError;
use protocol::lockboard::{BoardCommand, BoardReply};
use protocol::Envelope;

fn err(text: &str) -> ProtocolError {
    Envelope::from_json(text).expect_err(text)
}

#[test]
fn wrong_type_names_the_field() {
    let e = err(
        r#"{"type":"telemetry","payload":{"battery_level":"full","position":{"lat":1,"lon":2,"alt":3},"status":"flying"}}"#,
    );
    assert!(
        matches!(&e, ProtocolError::Field { path, .. } if path == "payload.battery_level"),
        "{e}"
    );
    assert!(e.to_string().contains("payload.battery_level"), "{e}");
}

#[test]
fn missing_field_names_it() {
    let e = err(
        r#"{"type":"task","payload":{"delivery_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d","priority":"normal"}}"#,
    );
    assert!(e.to_string().contains("destination"), "{e}");
    let e = err(r#"{"payload":{}}"#);
    assert_eq!(e, ProtocolError::MissingField("type"));
    let e = err(r#"{"type":"task"}"#);
    assert_eq!(e, ProtocolError::MissingField("payload"));
}

#[test]
fn out_of_range_names_the_field_and_the_rule() {
    let e = err(
        r#"{"type":"task","payload":{"delivery_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d","destination":{"lat":91.0,"lon":37.6,"aruco_id":1},"priority":"normal"}}"#,
    );
    let text = e.to_string();
    assert!(
        text.contains("payload.destination.lat") && text.contains("-90 and 90"),
        "{text}"
    );
    let e = err(
        r#"{"type":"register","payload":{"drone_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d","model":"x","battery_level":12.6e3}}"#,
    );
    assert!(e.to_string().contains("payload.battery_level"), "{e}");
}

#[test]
fn bad_uuid_and_bad_enum_are_named() {
    let e = err(r#"{"type":"command","payload":{"command":"drop_cargo","cmd_id":"not-a-uuid"}}"#);
    assert!(e.to_string().contains("payload.cmd_id"), "{e}");
    let e = err(r#"{"type":"command","payload":{"command":"self_destruct"}}"#);
    assert!(
        e.to_string().contains("payload.command") && e.to_string().contains("self_destruct"),
        "{e}"
    );
}

#[test]
fn unknown_type_is_named() {
    assert_eq!(
        err(r#"{"type":"teleport","payload":{}}"#),
        ProtocolError::UnknownType("teleport".into())
    );
}

#[test]
fn bad_timestamp_is_named() {
    let e = err(
        r#"{"type":"event_ack","payload":{"event_id":"9b2f6d1e-7c4a-4f3b-8a2d-0e1f2a3b4c5d"},"timestamp":"yesterday"}"#,
    );
    assert!(
        matches!(&e, ProtocolError::Field { path, .. } if path == "timestamp"),
        "{e}"
    );
}

#[test]
fn truncated_json_says_where() {
    let full = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cloud_task.json"
    ))
    .unwrap();
    for cut in 1..full.len() {
        let Some(prefix) = full.get(..cut) else {
            continue;
        };
        if let Err(e) = Envelope::from_json(prefix) {
            assert!(!e.to_string().is_empty());
        }
    }
    let e = err(&full[..full.len() / 2]);
    assert!(matches!(e, ProtocolError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("line"), "{e}");
}

#[test]
fn ten_megabyte_payload_hits_the_limit() {
    let big = format!(
        r#"{{"type":"video_frame","payload":{{"frame":"{}","width":1,"height":1,"seq":0}}}}"#,
        "A".repeat(10 * 1024 * 1024)
    );
    let e = err(&big);
    assert!(
        matches!(
            e,
            ProtocolError::TooLarge {
                limit: protocol::MAX_MESSAGE_BYTES,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn bad_base64_video_is_named() {
    let e = err(r#"{"type":"video_frame","payload":{"frame":"!!!","width":1,"height":1,"seq":0}}"#);
    assert!(
        e.to_string().contains("payload.frame") && e.to_string().contains("base64"),
        "{e}"
    );
}

#[test]
fn error_codes_are_distinct_per_failure() {
    assert_eq!(err("{").code(), "MALFORMED_JSON");
    assert_eq!(
        err(r#"{"type":"x","payload":{}}"#).code(),
        "UNKNOWN_MESSAGE_TYPE"
    );
    assert_eq!(
        err(r#"{"type":"ack","payload":{}}"#).code(),
        "INVALID_PAYLOAD"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::from_slice(&bytes);
    }

    #[test]
    fn arbitrary_json_shapes_never_panic(kind in prop::sample::select(protocol::Message::KINDS), payload in arb_json()) {
        let text = serde_json::json!({"type": kind, "payload": payload}).to_string();
        let _ = Envelope::from_json(&text);
    }

    /// The one-pass parse (`type` first) never accepts what the two steps (the `Deserialize`
    /// impl) refuse, nor reads it differently.
    #[test]
    fn arbitrary_json_shapes_parse_alike_in_one_pass_and_two(kind in prop::sample::select(protocol::Message::KINDS), payload in arb_json(), timestamp in arb_json()) {
        // by hand: `json!` would sort `payload` before `type`
        let text = format!(r#"{{"type":"{kind}","payload":{payload},"timestamp":{timestamp}}}"#);
        let two_steps = serde_json::from_str::<Envelope>(&text).ok();
        prop_assert_eq!(Envelope::from_json(&text).ok(), two_steps);
    }

    #[test]
    fn board_lines_never_panic(line in "\\PC{0,80}") {
        let _ = BoardReply::parse(&line);
        let _ = BoardCommand::parse(&line);
    }

    #[test]
    fn board_lines_from_the_alphabet_never_panic(line in "(OK|ERR|STATUS|DOOR|READY|OPEN_|CLOSE_)?[ 0-9A-Z_:,\\-]{0,40}") {
        let _ = BoardReply::parse(&line);
        let _ = BoardCommand::parse(&line);
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e6f64..1e6).prop_map(serde_json::Value::from),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "lat",
                    "lon",
                    "alt",
                    "command",
                    "cmd_id",
                    "event_type",
                    "delivery_id",
                    "position",
                    "battery_level",
                    "status",
                    "op",
                    "body",
                    "request_id"
                ])
                .prop_map(String::from),
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
