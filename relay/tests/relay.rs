//! The relay over real sockets: a relay on 127.0.0.1 (ephemeral port), agents and backends as
//! tokio-tungstenite clients, the HTTP bridge through a plain HTTP/1.1 client on a TcpStream.
//! Nothing waits on a clock: every wait is for a frame or an event, bounded by a timeout.

use crate::metrics;
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::error::codes;
use protocol::locker_api::{ApiError, CellsOpenResponse};
use protocol::ws::{
    Ack, AckStatus, Command, CommandKind, Event, EventAck, EventType, LockerOp, LockerOutcome,
    LockerResponse, Message, Peer, PeerKind, PresenceStatus, Register,
};
use protocol::Envelope;

use metrics::metric;
use relay::{Config, Relay};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const BACKEND_TOKEN: &str = "backend-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

const DRONE_A: Uuid = Uuid::from_u128(0xa000_0000_0000_4000_8000_0000_0000_0001);
const DRONE_B: Uuid = Uuid::from_u128(0xb000_0000_0000_4000_8000_0000_0000_0002);
const LOCKER: Uuid = Uuid::from_u128(0xc000_0000_0000_4000_8000_0000_0000_0003);
/// In the config, never connected.
const LOCKER_OFF: Uuid = Uuid::from_u128(0xd000_0000_0000_4000_8000_0000_0000_0004);

fn token(id: Uuid) -> String {
    format!("token-for-{id}")
}

/// A relay config for these agents; `extra` is appended (more tables).
fn config(extra: &str) -> Config {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout_s = 5.0\n{extra}\n[backend]\ntoken = \"{BACKEND_TOKEN}\"\n"
    );
    for id in [DRONE_A, DRONE_B] {
        text += &format!("[[drones]]\nid = \"{id}\"\ntoken = \"{}\"\n", token(id));
    }
    for id in [LOCKER, LOCKER_OFF] {
        text += &format!("[[lockers]]\nid = \"{id}\"\ntoken = \"{}\"\n", token(id));
    }
    daemon::config::parse(&text, std::path::Path::new("test.toml")).unwrap()
}

async fn start(extra: &str) -> Relay {
    Relay::start(&config(extra)).await.unwrap()
}

fn ws_url(relay: &Relay, path: &str) -> String {
    format!("ws://{}{path}", relay.local_addr())
}

async fn dial(
    url: &str,
    auth: Option<&str>,
    agent_id: Option<Uuid>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = auth {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    if let Some(id) = agent_id {
        req.headers_mut().insert(
            "x-skypost-agent-id",
            HeaderValue::from_str(&id.to_string()).unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn drone(relay: &Relay, id: Uuid) -> Ws {
    dial(&ws_url(relay, "/ws/drone"), Some(&token(id)), Some(id))
        .await
        .unwrap()
}

async fn locker(relay: &Relay, id: Uuid) -> Ws {
    dial(&ws_url(relay, "/ws/locker"), Some(&token(id)), Some(id))
        .await
        .unwrap()
}

/// A backend connection, after the presence snapshot of `already` connected agents.
async fn backend(relay: &Relay, already: usize) -> Ws {
    let mut ws = dial(&ws_url(relay, "/ws/backend"), Some(BACKEND_TOKEN), None)
        .await
        .unwrap();
    for _ in 0..already {
        let env = next(&mut ws).await;
        assert!(matches!(env.message, Message::Presence(_)), "{env:?}");
    }
    ws
}

/// The next data frame, parsed (pings and pongs skipped).
async fn next(ws: &mut Ws) -> Envelope {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended")
            .expect("socket error");
        match msg {
            WsMessage::Text(t) => return Envelope::from_json(&t).unwrap(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, env: &Envelope) {
    ws.send(WsMessage::text(env.to_json())).await.unwrap();
}

async fn send_raw(ws: &mut Ws, text: &str) {
    ws.send(WsMessage::text(text.to_owned())).await.unwrap();
}

fn peer(kind: PeerKind, id: Uuid) -> Peer {
    Peer {
        kind,
        id: id.to_string(),
    }
}

fn telemetry(battery: f64) -> Envelope {
    let v = json!({
        "type": "telemetry",
        "payload": {
            "battery_level": battery,
            "position": {"lat": 55.75, "lon": 37.61, "alt": 40.0},
            "status": "flying"
        }
    });
    Envelope::from_json(&v.to_string()).unwrap()
}

fn presence_of(env: &Envelope) -> (Peer, PresenceStatus) {
    match &env.message {
        Message::Presence(p) => (p.peer.clone(), p.status),
        other => panic!("expected presence, got {other:?}"),
    }
}

fn error_of(env: &Envelope) -> (String, Option<String>) {
    match &env.message {
        Message::Error(e) => (e.code.clone(), e.in_reply_to.clone()),
        other => panic!("expected error, got {other:?}"),
    }
}

/// Reads frames until the connection ends; returns the close code if there was a close frame.
async fn until_closed(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("connection did not end")
        {
            Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

// -- authentication --------------------------------------------------------------------------

fn status_of(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_at_the_upgrade() {
    let relay = start("").await;
    let drone_url = ws_url(&relay, "/ws/drone");
    let locker_url = ws_url(&relay, "/ws/locker");
    // wrong token, someone else's token, unknown id, no id, no token, wrong kind
    let cases: [(&str, Option<String>, Option<Uuid>); 6] = [
        (
            &drone_url,
            Some("not-the-token-at-all".into()),
            Some(DRONE_A),
        ),
        (&drone_url, Some(token(DRONE_B)), Some(DRONE_A)),
        (&drone_url, Some(token(DRONE_A)), Some(Uuid::new_v4())),
        (&drone_url, Some(token(DRONE_A)), None),
        (&drone_url, None, Some(DRONE_A)),
        (&locker_url, Some(token(DRONE_A)), Some(DRONE_A)),
    ];
    for (url, auth, id) in cases {
        let e = dial(url, auth.as_deref(), id).await.unwrap_err();
        assert_eq!(status_of(e), 401, "{url} {auth:?} {id:?}");
    }
    let e = dial(&ws_url(&relay, "/ws/backend"), Some(&token(DRONE_A)), None)
        .await
        .unwrap_err();
    assert_eq!(status_of(e), 401);
    // the right credentials still work
    drone(&relay, DRONE_A).await;
    let metrics = relay.hub().metrics.render();
    assert!(
        metric(
            &metrics,
            "relay_auth_refused_total{peer=\"drone\",reason=\"bad_token\"}"
        ) == 2,
        "{metrics}"
    );
}

// -- routing ---------------------------------------------------------------------------------

#[tokio::test]
async fn agent_frames_reach_the_backend_stamped_with_their_true_source() {
    let relay = start("").await;
    let mut be = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    assert_eq!(
        presence_of(&next(&mut be).await),
        (peer(PeerKind::Drone, DRONE_A), PresenceStatus::Connected)
    );

    // A claims to be B in the envelope: the relay overwrites it
    let mut t = telemetry(80.0).with_source(peer(PeerKind::Drone, DRONE_B));
    t.target = Some(peer(PeerKind::Drone, DRONE_B));
    send(&mut a, &t).await;
    let got = next(&mut be).await;
    assert_eq!(got.source, Some(peer(PeerKind::Drone, DRONE_A)));
    assert_eq!(got.target, None);
    assert!(matches!(got.message, Message::Telemetry(_)));

    // A registers with B's id in the body: refused, not forwarded
    let reg = Envelope::new(Register {
        drone_id: DRONE_B,
        model: "X4".into(),
        battery_level: 90.0.try_into().unwrap(),
        protocol_version: Some(1),
        firmware_version: None,
        agent_version: None,
        state: None,
        delivery_id: None,
    });
    send(&mut a, &reg).await;
    let (code, _) = error_of(&next(&mut a).await);
    assert_eq!(code, codes::UNAUTHORIZED);
    // the backend's next frame is the one after, not the spoofed register
    send(&mut a, &telemetry(79.0)).await;
    let got = next(&mut be).await;
    assert!(matches!(got.message, Message::Telemetry(_)), "{got:?}");
}

#[tokio::test]
async fn backend_frames_reach_the_addressed_agent_and_answers_come_back() {
    let relay = start("").await;
    let mut be = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    let mut b = drone(&relay, DRONE_B).await;
    let mut l = locker(&relay, LOCKER).await;
    for _ in 0..3 {
        presence_of(&next(&mut be).await);
    }

    let cmd_id = Uuid::new_v4();
    let cmd = Envelope::new(Command {
        command: CommandKind::Pause,
        cmd_id: Some(cmd_id),
        delivery_id: None,
    })
    .with_target(peer(PeerKind::Drone, DRONE_B));
    send(&mut be, &cmd).await;
    let got = next(&mut b).await;
    assert_eq!(got.target, None, "target is consumed by the relay");
    assert!(matches!(got.message, Message::Command(ref c) if c.cmd_id == Some(cmd_id)));

    send(
        &mut b,
        &Envelope::new(Ack {
            cmd_id,
            status: AckStatus::Executed,
            reason: None,
        }),
    )
    .await;
    let ack = next(&mut be).await;
    assert_eq!(ack.source, Some(peer(PeerKind::Drone, DRONE_B)));
    assert!(matches!(ack.message, Message::Ack(ref a) if a.cmd_id == cmd_id));

    // an event from the locker, and its ack back through the relay
    let event = Event::new(EventType::DoorClosed);
    let event_id = event.event_id.unwrap();
    send(&mut l, &Envelope::new(event)).await;
    let got = next(&mut be).await;
    assert_eq!(got.source, Some(peer(PeerKind::Locker, LOCKER)));
    send(
        &mut be,
        &Envelope::new(EventAck { event_id }).with_target(peer(PeerKind::Locker, LOCKER)),
    )
    .await;
    assert!(
        matches!(next(&mut l).await.message, Message::EventAck(ref e) if e.event_id == event_id)
    );

    // A got nothing of all that: its next frame is the one we address to it now
    send(
        &mut be,
        &Envelope::new(EventAck { event_id }).with_target(peer(PeerKind::Drone, DRONE_A)),
    )
    .await;
    assert!(matches!(next(&mut a).await.message, Message::EventAck(_)));
}

#[tokio::test]
async fn every_backend_gets_every_agent_frame() {
    let relay = start("").await;
    let mut be1 = backend(&relay, 0).await;
    let mut be2 = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    for be in [&mut be1, &mut be2] {
        presence_of(&next(be).await);
    }
    send(&mut a, &telemetry(50.0)).await;
    for be in [&mut be1, &mut be2] {
        assert!(matches!(next(be).await.message, Message::Telemetry(_)));
    }
}

#[tokio::test]
async fn undeliverable_frames_get_an_error_naming_the_frame() {
    let relay = start("").await;
    let mut be = backend(&relay, 0).await;
    let cmd_id = Uuid::new_v4();
    let cmd = |target: Peer| {
        Envelope::new(Command {
            command: CommandKind::Abort,
            cmd_id: Some(cmd_id),
            delivery_id: None,
        })
        .with_target(target)
    };
    send(&mut be, &cmd(peer(PeerKind::Drone, DRONE_A))).await;
    let reply = next(&mut be).await;
    assert_eq!(
        error_of(&reply),
        (codes::AGENT_OFFLINE.to_owned(), Some(cmd_id.to_string()))
    );
    assert_eq!(reply.source.map(|s| s.kind), Some(PeerKind::Relay));

    send(&mut be, &cmd(peer(PeerKind::Drone, Uuid::new_v4()))).await;
    assert_eq!(error_of(&next(&mut be).await).0, codes::UNKNOWN_AGENT);
    send(&mut be, &cmd(peer(PeerKind::Backend, DRONE_A))).await;
    assert_eq!(error_of(&next(&mut be).await).0, codes::UNKNOWN_AGENT);
    // a drone id addressed as a locker is unknown as a locker
    send(&mut be, &cmd(peer(PeerKind::Locker, DRONE_A))).await;
    assert_eq!(error_of(&next(&mut be).await).0, codes::UNKNOWN_AGENT);

    let mut untargeted = cmd(peer(PeerKind::Drone, DRONE_A));
    untargeted.target = None;
    send(&mut be, &untargeted).await;
    assert_eq!(
        error_of(&next(&mut be).await),
        (
            codes::MALFORMED_MESSAGE.to_owned(),
            Some(cmd_id.to_string())
        )
    );
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_connection_stays_up() {
    let relay = start("").await;
    let mut be = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    presence_of(&next(&mut be).await);

    for (text, code) in [
        ("this is not json", codes::MALFORMED_JSON),
        (
            r#"{"type":"teleportation","payload":{}}"#,
            codes::UNKNOWN_MESSAGE_TYPE,
        ),
        (r#"{"payload":{}}"#, codes::MALFORMED_MESSAGE),
        (
            r#"{"type":"telemetry","payload":{"battery_level":"full"}}"#,
            codes::INVALID_PAYLOAD,
        ),
        (
            r#"{"type":"presence","payload":{"peer":{"kind":"drone","id":"x"},"status":"connected"}}"#,
            codes::UNEXPECTED_MESSAGE,
        ),
    ] {
        send_raw(&mut a, text).await;
        let reply = next(&mut a).await;
        assert_eq!(error_of(&reply).0, code, "{text}");
        // the same from the backend; an untargeted presence is refused for having no target
        send_raw(&mut be, text).await;
        let expected = if code == codes::UNEXPECTED_MESSAGE {
            codes::MALFORMED_MESSAGE
        } else {
            code
        };
        assert_eq!(error_of(&next(&mut be).await).0, expected, "{text}");
    }
    // still up, both ways
    send(&mut a, &telemetry(10.0)).await;
    assert!(matches!(next(&mut be).await.message, Message::Telemetry(_)));
}

// -- presence --------------------------------------------------------------------------------

#[tokio::test]
async fn backend_is_told_of_connects_disconnects_and_replacements() {
    let relay = start("").await;
    let a = drone(&relay, DRONE_A).await;
    // a backend that connects later gets a snapshot of who is there
    let mut be = dial(&ws_url(&relay, "/ws/backend"), Some(BACKEND_TOKEN), None)
        .await
        .unwrap();
    assert_eq!(
        presence_of(&next(&mut be).await),
        (peer(PeerKind::Drone, DRONE_A), PresenceStatus::Connected)
    );

    // the same drone again: the old connection is closed as replaced, no `disconnected` for it
    let mut a2 = drone(&relay, DRONE_A).await;
    assert_eq!(
        presence_of(&next(&mut be).await),
        (peer(PeerKind::Drone, DRONE_A), PresenceStatus::Connected)
    );
    let mut a = a;
    assert_eq!(until_closed(&mut a).await, Some(CloseCode::Policy));

    a2.close(None).await.unwrap();
    assert_eq!(
        presence_of(&next(&mut be).await),
        (peer(PeerKind::Drone, DRONE_A), PresenceStatus::Disconnected)
    );
}

#[tokio::test]
async fn an_agent_that_stops_answering_pings_goes_silent_then_is_dropped() {
    let relay = start(
        "[presence]\nping_interval_s = 0.05\nsilent_after_missed_pongs = 2\nclose_after_missed_pongs = 4\n",
    )
    .await;
    let mut be = backend(&relay, 0).await;
    // a client that is never polled never answers a ping: a dead 4G link
    let _stuck = drone(&relay, DRONE_A).await;
    let who = peer(PeerKind::Drone, DRONE_A);
    assert_eq!(
        presence_of(&next(&mut be).await),
        (who.clone(), PresenceStatus::Connected)
    );
    assert_eq!(
        presence_of(&next(&mut be).await),
        (who.clone(), PresenceStatus::Silent)
    );
    assert_eq!(
        presence_of(&next(&mut be).await),
        (who, PresenceStatus::Disconnected)
    );
    // the backend answers its pings (the client polls), so it is still here
    send(&mut be, &telemetry(1.0)).await;
    assert_eq!(error_of(&next(&mut be).await).0, codes::MALFORMED_MESSAGE);
}

#[tokio::test]
async fn a_silent_agent_that_answers_again_is_reported_connected() {
    let relay = start(
        "[presence]\nping_interval_s = 0.05\nsilent_after_missed_pongs = 2\nclose_after_missed_pongs = 100\n",
    )
    .await;
    let mut be = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    let who = peer(PeerKind::Drone, DRONE_A);
    assert_eq!(
        presence_of(&next(&mut be).await),
        (who.clone(), PresenceStatus::Connected)
    );
    assert_eq!(
        presence_of(&next(&mut be).await),
        (who.clone(), PresenceStatus::Silent)
    );
    // reading again makes tungstenite answer the queued pings
    tokio::spawn(async move { while let Some(Ok(_)) = a.next().await {} });
    assert_eq!(
        presence_of(&next(&mut be).await),
        (who, PresenceStatus::Connected)
    );
}

// -- HTTP bridge -----------------------------------------------------------------------------

/// A minimal HTTP/1.1 client: one request, `Connection: close`, status and JSON body back.
async fn http_post(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Answers the next `locker_request` with `outcome`, returning the op it asked for.
async fn answer_locker_request(l: &mut Ws, status: u16, outcome: LockerOutcome) -> LockerOp {
    let env = next(l).await;
    let Message::LockerRequest(req) = env.message else {
        panic!("expected locker_request, got {env:?}");
    };
    let resp = LockerResponse {
        request_id: req.request_id,
        status,
        outcome,
    };
    send(l, &Envelope::new(resp)).await;
    req.op
}

#[tokio::test]
async fn http_bridge_carries_a_cell_open_to_the_locker_and_back() {
    let relay = start("").await;
    let addr = relay.local_addr();
    let mut be = backend(&relay, 0).await;
    let mut l = locker(&relay, LOCKER).await;
    presence_of(&next(&mut be).await);
    let cell = Uuid::new_v4();
    let body = json!({"cell_uuid": cell}).to_string();
    let path = format!("/api/lockers/{LOCKER}/cells/open");

    let opened_at = chrono::Utc::now();
    let call = tokio::spawn({
        let (path, body) = (path.clone(), body.clone());
        async move { http_post(addr, &path, Some(BACKEND_TOKEN), &body).await }
    });
    let op = answer_locker_request(
        &mut l,
        200,
        LockerOutcome::CellOpened(CellsOpenResponse {
            success: true,
            cell_id: 3,
            opened_at,
        }),
    )
    .await;
    assert!(
        matches!(op, LockerOp::CellsOpen(ref r) if r.cell_uuid == cell),
        "{op:?}"
    );
    let (status, body_back) = call.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body_back["success"], true);
    assert_eq!(body_back["cell_id"], 3);

    // the locker's own error comes back in the seed's error format with its status
    let call = tokio::spawn({
        let (path, body) = (path.clone(), body.clone());
        async move { http_post(addr, &path, Some(BACKEND_TOKEN), &body).await }
    });
    answer_locker_request(
        &mut l,
        409,
        LockerOutcome::Error(ApiError {
            code: codes::CELL_BUSY.into(),
            message: "cell 3 is open".into(),
        }),
    )
    .await;
    let (status, body_back) = call.await.unwrap();
    assert_eq!(status, 409);
    assert_eq!(
        body_back,
        json!({"success": false, "data": null, "error": {"code": "CELL_BUSY", "message": "cell 3 is open"}})
    );

    // none of that went to the backend: its next frame is this telemetry's
    let mut a = drone(&relay, DRONE_A).await;
    presence_of(&next(&mut be).await);
    send(&mut a, &telemetry(5.0)).await;
    assert!(matches!(next(&mut be).await.message, Message::Telemetry(_)));
}

#[tokio::test]
async fn http_bridge_errors_are_in_the_seed_format() {
    let relay = start("[bridge]\ntimeout_s = 0.2\n").await;
    let addr = relay.local_addr();
    let body = json!({"cell_uuid": Uuid::new_v4()}).to_string();
    let open = |id: &str| format!("/api/lockers/{id}/cells/open");

    let (status, b) = http_post(addr, &open(&LOCKER.to_string()), None, &body).await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (status, b) = http_post(
        addr,
        &open(&Uuid::new_v4().to_string()),
        Some(BACKEND_TOKEN),
        &body,
    )
    .await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (404, Some("UNKNOWN_AGENT"))
    );
    assert_eq!(b["success"], false);
    let (status, _) = http_post(addr, &open("cabinet-7"), Some(BACKEND_TOKEN), &body).await;
    assert_eq!(status, 404);
    let (status, b) = http_post(
        addr,
        &open(&LOCKER_OFF.to_string()),
        Some(BACKEND_TOKEN),
        &body,
    )
    .await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (503, Some("AGENT_OFFLINE"))
    );
    let (status, b) = http_post(
        addr,
        &open(&LOCKER.to_string()),
        Some(BACKEND_TOKEN),
        r#"{"cell":1}"#,
    )
    .await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (400, Some("INVALID_PAYLOAD"))
    );

    // connected, but never answers: 504 after the configured timeout
    let mut l = locker(&relay, LOCKER).await;
    let path = format!("/api/lockers/{LOCKER}/qr/scan");
    let call = tokio::spawn(async move {
        http_post(addr, &path, Some(BACKEND_TOKEN), r#"{"qr_data":"abc"}"#).await
    });
    // the request did reach the locker
    assert!(matches!(
        next(&mut l).await.message,
        Message::LockerRequest(_)
    ));
    let (status, b) = call.await.unwrap();
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (504, Some("TIMEOUT"))
    );
}

#[tokio::test]
async fn http_bridge_answers_503_at_once_when_the_locker_drops_mid_call() {
    // a timeout far longer than the wait below: only the disconnect can answer in time
    let relay = start("[bridge]\ntimeout_s = 300.0\n").await;
    let addr = relay.local_addr();
    let mut l = locker(&relay, LOCKER).await;
    let path = format!("/api/lockers/{LOCKER}/cells/close");
    let body = json!({"cell_uuid": Uuid::new_v4()}).to_string();
    let call =
        tokio::spawn(async move { http_post(addr, &path, Some(BACKEND_TOKEN), &body).await });
    assert!(matches!(
        next(&mut l).await.message,
        Message::LockerRequest(_)
    ));
    drop(l);
    let (status, b) = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (503, Some("AGENT_OFFLINE"))
    );
}

// -- queues ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_backend_that_stops_reading_is_cut_off_without_stalling_the_others() {
    // small queues; a long write timeout, so only the full-queue rule can cut the slow one off
    let relay = start("[queues]\nbackend_frames = 64\nwrite_timeout_s = 120.0\n").await;
    let mut slow = backend(&relay, 0).await;
    let mut fast = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    presence_of(&next(&mut fast).await);

    // ~16 MB of video fills the slow backend's socket buffers; the queue behind them fills with
    // what the relay cannot write
    let frame = json!({
        "type": "video_frame",
        "payload": {"frame": "A".repeat(64 * 1024), "width": 640, "height": 480, "seq": 0}
    })
    .to_string();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // the fast backend reads everything and reports each event it sees
        loop {
            let env = next(&mut fast).await;
            if let Message::Event(e) = env.message {
                if seen_tx.send(e.seq.unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    for _ in 0..400 {
        send_raw(&mut a, &frame).await;
    }
    // Events one at a time, each seen by the fast backend before the next is sent: the fast
    // one keeps up while the slow one's queue fills with them (video stops at half) and it is
    // closed. A stalled relay would fail the wait here.
    for seq in 0..200 {
        let mut e = Event::new(EventType::DoorOpened);
        e.seq = Some(seq);
        send(&mut a, &Envelope::new(e)).await;
        let got = tokio::time::timeout(WAIT, seen.recv())
            .await
            .expect("the fast backend was stalled")
            .expect("the fast backend's connection ended");
        assert_eq!(got, seq);
    }
    // the slow one was closed (its socket ends after whatever was already in flight)
    until_closed(&mut slow).await;
    let m = relay.hub().metrics.render();
    assert!(
        metric(
            &m,
            "relay_dropped_frames_total{reason=\"queue_full_closed\"}"
        ) > 0,
        "{m}"
    );
    assert!(
        metric(&m, "relay_queue_full_total{peer=\"backend\"}") > 0,
        "{m}"
    );
}

#[tokio::test]
async fn agent_frames_with_no_backend_are_dropped_and_counted() {
    let relay = start("").await;
    let mut a = drone(&relay, DRONE_A).await;
    send(&mut a, &telemetry(3.0)).await;
    // nothing comes back to the agent for it; the next reply it gets is for this bad frame
    send_raw(&mut a, "{").await;
    assert_eq!(error_of(&next(&mut a).await).0, codes::MALFORMED_JSON);
    let m = relay.hub().metrics.render();
    assert!(
        metric(&m, "relay_dropped_frames_total{reason=\"no_backend\"}") == 1,
        "{m}"
    );
}

/// A GET over a plain HTTP/1.1 connection; status and body text.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    (status, resp.split_once("\r\n\r\n").unwrap().1.to_owned())
}

#[tokio::test]
async fn health_and_metrics_are_served_over_http() {
    let relay = start("").await;
    let mut be = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    presence_of(&next(&mut be).await);
    send(&mut a, &telemetry(42.0)).await;
    next(&mut be).await;

    let (status, body) = http_get(relay.local_addr(), "/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connections"]["drones"], 1);
    assert_eq!(health["connections"]["backends"], 1);

    let (status, text) = http_get(relay.local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "relay_connections{peer=\"drone\"} 1",
        "relay_frames_in_total{peer=\"drone\",type=\"telemetry\"} 1",
        "relay_frames_out_total{peer=\"backend\",type=\"telemetry\"} 1",
        "relay_frames_out_total{peer=\"backend\",type=\"presence\"} 1",
        "# TYPE relay_forward_latency_seconds histogram",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

// -- shutdown and TLS ------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_closes_every_connection_going_away() {
    let relay = start("").await;
    let mut be = backend(&relay, 0).await;
    let mut a = drone(&relay, DRONE_A).await;
    presence_of(&next(&mut be).await);
    relay.shutdown().await.unwrap();
    assert_eq!(until_closed(&mut a).await, Some(CloseCode::Away));
    // the backend may see the drone's `disconnected` before its own close
    assert_eq!(until_closed(&mut be).await, Some(CloseCode::Away));
}

#[tokio::test]
async fn tls_serves_wss_with_the_configured_certificate() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let relay = start(&format!(
        "[server.tls]\ncert = \"{data}/localhost.crt\"\nkey = \"{data}/localhost.key\"\n"
    ))
    .await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(format!("{data}/localhost.crt")).unwrap();
    use rustls::pki_types::pem::PemObject as _;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/ws/drone", relay.local_addr().port());
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(DRONE_A))).unwrap(),
    );
    req.headers_mut().insert(
        "x-skypost-agent-id",
        HeaderValue::from_str(&DRONE_A.to_string()).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(client))),
    )
    .await
    .unwrap();
    send_raw(&mut ws, "nope").await;
    assert_eq!(error_of(&next(&mut ws).await).0, codes::MALFORMED_JSON);
}
