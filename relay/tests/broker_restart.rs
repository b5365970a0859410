//! The broker restarted under load (issue 14): a real RabbitMQ of this test binary's own
//! (`common`), stopped and started again (`rabbitmqctl stop_app` / `start_app`: every AMQP
//! connection is dropped and every queue goes) while drones on relay B send telemetry and one
//! drone sends events through the real `cloud-link` (its outbox on disk) to a backend on relay A.
//!
//! What must hold: every event the drone sent reaches the backend (once or more: de-duplicated by
//! its id), and the drone's outbox ends empty, each event acknowledged by the backend's
//! `event_ack` — no event that was acknowledged to its sender is missing, and none is left
//! unacknowledged. Both relays reconnect to the broker by themselves, rebind their agents, and
//! carry telemetry and commands again.

use cloud_link::{CloudConfig, CloudLink};
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::ws::{Event, EventAck, EventType, Message, PeerKind, PresenceStatus};
use protocol::Envelope;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;

mod common;
use common::{broker, dial, relay_pair, token, until, BACKEND_TOKEN};

/// Events the drone sends; the broker is stopped after the first third of them.
const EVENTS: usize = 150;
/// Drones on relay B that only send telemetry (the load), each every `LOAD_PERIOD`.
const LOAD_DRONES: usize = 20;
const LOAD_PERIOD: Duration = Duration::from_millis(20);

/// What the backend on relay A has seen.
#[derive(Default)]
struct Seen {
    /// event id -> seq, first arrival
    events: Mutex<HashMap<Uuid, u64>>,
    duplicates: AtomicU64,
    telemetry: AtomicU64,
    connected: Mutex<HashSet<String>>,
    commands_acked: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_when_the_broker_restarts_under_load() {
    let sender = Uuid::new_v4();
    let load: Vec<Uuid> = (0..LOAD_DRONES).map(|_| Uuid::new_v4()).collect();
    let mut all = load.clone();
    all.push(sender);
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let (a, b) = relay_pair(&ns, ("ra", "rb"), &all, &[], 2.0).await;
    let (ca, cb) = (
        a.hub().cluster().unwrap().clone(),
        b.hub().cluster().unwrap().clone(),
    );
    let b_addr = b.local_addr().to_string();

    // the backend on A: acknowledges every event it sees, as a backend does
    let seen = Arc::new(Seen::default());
    let (be_tx, mut be_rx) = dial(
        &a.local_addr().to_string(),
        "/ws/backend",
        BACKEND_TOKEN,
        None,
    )
    .await
    .split();
    let be_tx = Arc::new(tokio::sync::Mutex::new(be_tx));
    let backend = tokio::spawn({
        let (seen, be_tx) = (seen.clone(), be_tx.clone());
        async move {
            while let Some(Ok(msg)) = be_rx.next().await {
                let WsMessage::Text(t) = msg else { continue };
                let env = Envelope::from_json(&t).unwrap();
                let from = env.source.as_ref().map(|s| s.id.clone());
                match env.message {
                    Message::Event(e) => {
                        let id = e.event_id.unwrap();
                        let first = seen
                            .events
                            .lock()
                            .unwrap()
                            .insert(id, e.seq.unwrap())
                            .is_none();
                        if !first {
                            seen.duplicates.fetch_add(1, Relaxed);
                        }
                        let mut ack = Envelope::new(EventAck { event_id: id });
                        ack.target = Some(protocol::ws::Peer {
                            kind: PeerKind::Drone,
                            id: from.unwrap(),
                        });
                        // an ack that finds relay A cut off is answered AGENT_OFFLINE; the
                        // drone sends the event again and it is acknowledged then
                        let _ = be_tx
                            .lock()
                            .await
                            .send(WsMessage::text(ack.to_json()))
                            .await;
                    }
                    Message::Telemetry(_) => {
                        seen.telemetry.fetch_add(1, Relaxed);
                    }
                    Message::Presence(p) if p.status == PresenceStatus::Connected => {
                        seen.connected.lock().unwrap().insert(p.peer.id);
                    }
                    Message::Ack(_) => seen.commands_acked.store(true, Relaxed),
                    _ => {}
                }
            }
        }
    });

    // the load: drones on B sending telemetry until the end
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaders = Vec::new();
    for id in &load {
        let mut ws = dial(&b_addr, "/ws/drone", &token(*id), Some(*id)).await;
        let stop = stop.clone();
        loaders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOAD_PERIOD);
            let mut battery = 100.0;
            while !stop.load(Relaxed) {
                tick.tick().await;
                battery -= 0.001;
                let t = format!(
                    r#"{{"type":"telemetry","payload":{{"battery_level":{battery},"position":{{"lat":55.75,"lon":37.61,"alt":40.0}},"status":"flying"}}}}"#
                );
                if ws.send(WsMessage::text(t)).await.is_err() {
                    break;
                }
                // commands to the load drones: answered with an `ack`, as an agent does
                while let Ok(Some(Ok(WsMessage::Text(t)))) =
                    tokio::time::timeout(Duration::ZERO, ws.next()).await
                {
                    if let Ok(Envelope {
                        message: Message::Command(c),
                        ..
                    }) = Envelope::from_json(&t)
                    {
                        let ack = format!(
                            r#"{{"type":"ack","payload":{{"cmd_id":"{}","status":"executed"}}}}"#,
                            c.cmd_id.unwrap()
                        );
                        let _ = ws.send(WsMessage::text(ack)).await;
                    }
                }
            }
        }));
    }

    // the sender: the real cloud link, its outbox on disk, events re-sent until acknowledged
    let outbox = tempfile::tempdir().unwrap();
    let mut cfg = CloudConfig::new(format!("ws://{b_addr}/ws/drone"), token(sender));
    cfg.backoff_initial_s = 0.05;
    cfg.backoff_max_s = 0.3;
    cfg.event_resend_s = 0.5;
    let hello = Envelope::new(EventAck {
        event_id: Uuid::nil(),
    });
    let (link, _incoming) = CloudLink::spawn(
        cfg,
        PeerKind::Drone,
        sender.to_string(),
        outbox.path(),
        hello,
    )
    .unwrap();
    let everyone: HashSet<String> = all.iter().map(Uuid::to_string).collect();
    until("the backend on A sees every drone on B", || {
        seen.connected.lock().unwrap().is_superset(&everyone)
    })
    .await;

    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..EVENTS {
        tick.tick().await;
        if n == EVENTS / 3 {
            // the restart, mid-stream: both relays lose the broker and every queue with it
            tokio::task::spawn_blocking(|| broker().ctl(&["stop_app"]))
                .await
                .unwrap();
            until("both relays see the broker gone", || {
                !ca.is_up() && !cb.is_up()
            })
            .await;
        }
        if n == EVENTS / 2 {
            tokio::task::spawn_blocking(|| broker().ctl(&["start_app"]))
                .await
                .unwrap();
        }
        let e = link
            .publish_event(Event::new(EventType::Failsafe))
            .await
            .unwrap();
        sent.push((e.event_id.unwrap(), e.seq.unwrap()));
    }
    until("both relays are back on the broker", || {
        ca.is_up() && cb.is_up()
    })
    .await;
    until("every event is acknowledged to the drone", || {
        link.pending_events() == 0
    })
    .await;

    // every event the drone sent reached the backend, with the id and seq it was sent with
    let events = seen.events.lock().unwrap().clone();
    for (id, seq) in &sent {
        assert_eq!(
            events.get(id),
            Some(seq),
            "event seq {seq} acknowledged to the drone but never seen by the backend"
        );
    }
    assert_eq!(events.len(), EVENTS, "only the drone's events");
    // de-duplicated by id, the backend holds one run of seq with no gap
    let mut seqs: Vec<u64> = events.values().copied().collect();
    seqs.sort_unstable();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq with no gap: {seqs:?}"
    );
    // the broker did restart under load: both relays reconnected, telemetry flowed across it
    let mut m = String::new();
    cb.render(&mut m);
    assert!(
        m.lines()
            .any(|l| l.starts_with("relay_cluster_connects_total ")
                && l.split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= 2),
        "{m}"
    );
    let telemetry_before = seen.telemetry.load(Relaxed);
    until("telemetry crosses the broker again", || {
        seen.telemetry.load(Relaxed) > telemetry_before + LOAD_DRONES as u64
    })
    .await;
    // and a command from the backend on A reaches a drone on B (its key bound again)
    let cmd = format!(
        r#"{{"type":"command","target":{{"kind":"drone","id":"{}"}},"payload":{{"cmd_id":"{}","command":"return_to_home"}}}}"#,
        load[0],
        Uuid::new_v4()
    );
    be_tx.lock().await.send(WsMessage::text(cmd)).await.unwrap();
    until(
        "the drone on B acknowledges a command sent after the restart",
        || seen.commands_acked.load(Relaxed),
    )
    .await;
    eprintln!(
        "events {EVENTS}, duplicates at the backend {}, telemetry frames {}",
        seen.duplicates.load(Relaxed),
        seen.telemetry.load(Relaxed)
    );

    stop.store(true, Relaxed);
    for l in loaders {
        let _ = l.await;
    }
    link.close().await;
    backend.abort();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
