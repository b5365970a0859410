//! The locker behind the real relay: the backend reaches it through the relay's HTTP bridge
//! (`locker_request` / `locker_response` over the locker's outbound WebSocket), QR codes are
//! validated by a backend on `/ws/backend` (`qr_validate` / `qr_validation`), and the locker's
//! events reach that backend with ids it acknowledges.

use crate::common;

use common::{assert_error, WAIT};
use futures_util::{SinkExt, StreamExt};
use hal::display::NoDisplay;
use hal::lockboard::{LockBoard, SerialLockBoard};
use locker_agent::cells::CellStore;
use locker_agent::cloud::CloudUplink;
use locker_agent::locker::Locker;
use locker_agent::uplink::{CloudValidator, QrValidator, Uplink};
use protocol::lockboard::BoltState;
use protocol::ws::{
    Envelope, Event, EventAck, EventType, LockerRegister, Message, Peer, PeerKind, QrValidation,
};
use serde_json::Value;
use sim::lockboard::{SimBoard, SimBoardConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;

const BACKEND_TOKEN: &str = "backend-secret-0123456789";
const LOCKER_TOKEN: &str = "locker-secret-0123456789";

async fn bridge(relay: SocketAddr, locker: Uuid, route: &str, body: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(relay).await.unwrap();
    let req = format!(
        "POST /api/lockers/{locker}/{route} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer {BACKEND_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A scripted backend on `/ws/backend`: answers `qr_validate` from a table, acknowledges every
/// event and passes it on.
async fn backend(
    relay: SocketAddr,
    locker: Uuid,
    good_code: String,
    cell: Uuid,
    order: Uuid,
) -> mpsc::UnboundedReceiver<Event> {
    let mut req = format!("ws://{relay}/ws/backend")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {BACKEND_TOKEN}")).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let target = Peer {
        kind: PeerKind::Locker,
        id: locker.to_string(),
    };
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            let WsMessage::Text(t) = msg else { continue };
            let Ok(env) = Envelope::from_json(&t) else {
                continue;
            };
            let reply = match env.message {
                Message::QrValidate(q) => {
                    let ok = q.qr_data == good_code;
                    Some(Message::QrValidation(QrValidation {
                        request_id: q.request_id,
                        valid: ok,
                        cell_uuid: ok.then_some(cell),
                        order_id: ok.then_some(order),
                        reason: (!ok).then(|| "Unknown code".to_owned()),
                    }))
                }
                Message::Event(e) => {
                    let ack = e
                        .event_id
                        .map(|id| Message::EventAck(EventAck { event_id: id }));
                    let _ = tx.send(e);
                    ack
                }
                _ => None,
            };
            if let Some(m) = reply {
                let env = Envelope {
                    message: m,
                    timestamp: None,
                    source: None,
                    target: Some(target.clone()),
                };
                if ws.send(WsMessage::text(env.to_json())).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn wait_event(rx: &mut mpsc::UnboundedReceiver<Event>, kind: EventType) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = rx.recv().await.expect("backend gone");
            if e.event_type == kind {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("backend never got a {kind:?} event"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reaches_the_locker_through_the_relay() {
    let locker_id = Uuid::new_v4();
    let cfg_text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[backend]\ntoken = \"{BACKEND_TOKEN}\"\n[[lockers]]\nid = \"{locker_id}\"\ntoken = \"{LOCKER_TOKEN}\"\n"
    );
    let cfg: relay::Config =
        daemon::config::parse(&cfg_text, std::path::Path::new("relay.toml")).unwrap();
    let relay = relay::Relay::start(&cfg).await.unwrap();
    let addr = relay.local_addr();

    let (cell, order) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = backend(addr, locker_id, "GOOD-CODE".into(), cell, order).await;

    let dir = tempfile::tempdir().unwrap();
    let board = SimBoard::start(SimBoardConfig {
        cells: 4,
        travel: Duration::from_millis(20),
        link: dir.path().join("lockboard"),
    })
    .unwrap();
    let hello = Envelope::new(LockerRegister {
        locker_id,
        protocol_version: protocol::PROTOCOL_VERSION,
        agent_version: Some("test".into()),
        cells: 4,
    });
    let mut cloud = cloud_link::CloudConfig::new(format!("ws://{addr}/ws/locker"), LOCKER_TOKEN);
    cloud.backoff_initial_s = 0.05;
    let (link, inbound) = cloud_link::CloudLink::spawn(
        cloud,
        PeerKind::Locker,
        locker_id.to_string(),
        &dir.path().join("outbox"),
        hello,
    )
    .unwrap();
    let mut status = link.status();
    let uplink: Arc<dyn Uplink> = Arc::new(CloudUplink(link));
    let validator = Arc::new(CloudValidator::new(
        uplink.clone(),
        locker_id,
        Duration::from_secs(5),
    ));
    let serial = SerialLockBoard::spawn(common::board_cfg(board.path()));
    let mut settings = common::settings();
    settings.locker_id = locker_id;
    let locker = Arc::new(Locker::new(
        serial,
        CellStore::open(&dir.path().join("cells.json"), 4, 100, true).unwrap(),
        settings,
        uplink.clone(),
        Some(validator.clone() as Arc<dyn QrValidator>),
        Arc::new(NoDisplay),
    ));
    tokio::spawn(locker.clone().run_monitor());
    tokio::spawn(locker_agent::inbound::dispatch(
        locker.clone(),
        uplink.clone(),
        Some(validator),
        inbound,
    ));
    tokio::time::timeout(WAIT, status.wait_for(|s| s.is_connected()))
        .await
        .expect("locker never connected to the relay")
        .unwrap();
    let mut health = locker.board().health();
    tokio::time::timeout(WAIT, health.wait_for(|h| h.connected))
        .await
        .unwrap()
        .unwrap();

    // The backend's calls, through the relay's HTTP bridge, get the locker's own answers.
    let (s, v) = bridge(
        addr,
        locker_id,
        "cells/sync",
        &format!(r#"{{"cells":[{{"cell_uuid":"{cell}","cell_id":3}}]}}"#),
    )
    .await;
    assert_eq!((s, &v["synced"]), (200, &Value::from(1)), "{v}");
    let (s, v) = bridge(
        addr,
        locker_id,
        "cells/open",
        &format!(r#"{{"cell_uuid":"{}"}}"#, Uuid::new_v4()),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_error(&v, "CELL_NOT_FOUND");
    let delivery = Uuid::new_v4();
    let (s, v) = bridge(
        addr,
        locker_id,
        "cells/open",
        &format!(r#"{{"cell_uuid":"{cell}","delivery_id":"{delivery}"}}"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["cell_id"], 3);
    let e = wait_event(&mut events, EventType::CellOpened).await;
    assert_eq!((e.cell_id, e.delivery_id), (Some(3), Some(delivery)));
    assert!(e.event_id.is_some() && e.seq.is_some(), "{e:?}");

    // The drone drops the parcel; the backend hears about it.
    board.open_door(3).await.unwrap();
    board.close_door(3).await.unwrap();
    let e = wait_event(&mut events, EventType::ParcelLoaded).await;
    assert_eq!(e.delivery_id, Some(delivery));

    // A customer's code: the locker asks the backend through the relay, then opens the cell.
    let (s, v) = bridge(addr, locker_id, "qr/scan", r#"{"qr_data":"BAD-CODE"}"#).await;
    assert_eq!(s, 403, "{v}");
    assert_error(&v, "QR_INVALID");
    let (s, v) = bridge(addr, locker_id, "qr/scan", r#"{"qr_data":"GOOD-CODE"}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["cell_id"].clone(), v["order_id"].clone()),
        (Value::from(3), Value::from(order.to_string()))
    );
    board.open_door(3).await.unwrap();
    board.close_door(3).await.unwrap();
    let e = wait_event(&mut events, EventType::PickedUp).await;
    assert_eq!(e.order_id, Some(order));
    let mut b = board.watch();
    tokio::time::timeout(WAIT, b.wait_for(|s| s.bolt(3) == Some(BoltState::Locked)))
        .await
        .unwrap()
        .unwrap();
    let _ = relay.shutdown().await;
}
