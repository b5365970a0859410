//! Several relays through a real RabbitMQ on loopback (Debian's `rabbitmq-server`).
//!
//! One broker per test binary: started on first use, in a directory under the target dir, on
//! free ports, and killed when this process ends (PR_SET_PDEATHSIG on a thread that lives as
//! long as the process; `RUNNING_UNDER_SYSTEMD=1` makes the start script exec the Erlang VM, so
//! the signal reaches the broker itself). Tests share it without sharing anything else: each
//! uses its own exchange names and relay ids.

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::ws::{Message, PresenceStatus};
use protocol::Envelope;
use relay::{Config, Relay};
use std::process::Stdio;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;

use crate::common;
use crate::metrics;
use common::{
    broker, broker::free_port, config, config_text, dial, relay_pair, token, until, until_up, Ws,
    BACKEND_TOKEN,
};
use metrics::metric;

const WAIT: Duration = Duration::from_secs(15);

/// Lease of the relays in these tests (a killed relay's agents go within 1.2 s).
const LEASE_S: f64 = 1.0;

// -- clients -------------------------------------------------------------------------------------

async fn next(ws: &mut Ws) -> Envelope {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended")
            .expect("socket error");
        if let WsMessage::Text(t) = msg {
            return Envelope::from_json(&t).unwrap();
        }
    }
}

/// The next frame that is not presence about someone else... or the next matching `pred`.
async fn next_where(ws: &mut Ws, mut pred: impl FnMut(&Envelope) -> bool) -> Envelope {
    loop {
        let env = next(ws).await;
        if pred(&env) {
            return env;
        }
    }
}

fn is_presence(env: &Envelope, id: Uuid, status: PresenceStatus) -> bool {
    matches!(&env.message, Message::Presence(p) if p.peer.id == id.to_string() && p.status == status)
}

fn telemetry(battery: f64) -> String {
    format!(
        r#"{{"type":"telemetry","payload":{{"battery_level":{battery},"position":{{"lat":55.75,"lon":37.61,"alt":40.0}},"status":"flying"}}}}"#
    )
}

fn command_to(id: Uuid, cmd_id: Uuid) -> String {
    format!(
        r#"{{"type":"command","target":{{"kind":"drone","id":"{id}"}},"payload":{{"cmd_id":"{cmd_id}","command":"return_to_home"}}}}"#
    )
}

/// A backend on relay `a` and the drone on relay `b`: the drone's presence and telemetry (with
/// the drone as its source) cross the broker to the backend, and the backend's command reaches
/// the drone. Returns (backend, drone).
async fn backend_on_a_reaches_drone_on_b(a: &Relay, b: &Relay, drone: Uuid) -> (Ws, Ws) {
    let a_addr = a.local_addr().to_string();
    let b_addr = b.local_addr().to_string();
    let mut be = dial(&a_addr, "/ws/backend", BACKEND_TOKEN, None).await;
    let mut d = dial(&b_addr, "/ws/drone", &token(drone), Some(drone)).await;
    next_where(&mut be, |e| {
        is_presence(e, drone, PresenceStatus::Connected)
    })
    .await;
    d.send(WsMessage::text(telemetry(77.0))).await.unwrap();
    let t = next_where(&mut be, |e| matches!(e.message, Message::Telemetry(_))).await;
    assert_eq!(t.source.unwrap().id, drone.to_string());
    let cmd_id = Uuid::new_v4();
    be.send(WsMessage::text(command_to(drone, cmd_id)))
        .await
        .unwrap();
    let got = next_where(&mut d, |e| matches!(e.message, Message::Command(_))).await;
    match got.message {
        Message::Command(c) => assert_eq!(c.cmd_id, Some(cmd_id)),
        _ => unreachable!(),
    }
    (be, d)
}

// -- tests ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_on_one_relay_sees_and_reaches_a_drone_on_the_other() {
    let drone = Uuid::new_v4();
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let (a, b) = relay_pair(&ns, ("a1", "b1"), &[drone], &[], LEASE_S).await;
    backend_on_a_reaches_drone_on_b(&a, &b, drone).await;
    // a late backend on A gets the drone on B in its snapshot
    let mut late = dial(
        &a.local_addr().to_string(),
        "/ws/backend",
        BACKEND_TOKEN,
        None,
    )
    .await;
    next_where(&mut late, |e| {
        is_presence(e, drone, PresenceStatus::Connected)
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A relay with no backend of its own is bound to presence, not to every agent frame: the
/// broker does not deliver the fleet's telemetry to it only for it to be dropped. Its fleet view
/// stays whole, and a backend that connects later gets the snapshot and then the frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_a_backend_receives_presence_not_the_fleets_frames() {
    const BURST: u64 = 200;
    let (d1, d2) = (Uuid::new_v4(), Uuid::new_v4());
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let (a, b) = relay_pair(&ns, ("a6", "b6"), &[d1, d2], &[], LEASE_S).await;
    let (a_addr, b_addr) = (a.local_addr().to_string(), b.local_addr().to_string());
    let b_cluster = b.hub().cluster().unwrap().clone();
    let knows = |id: Uuid| {
        let hub = b.hub().clone();
        move || hub.held_by((relay::auth::AgentKind::Drone, id)).as_deref() == Some("a6")
    };
    let mut drone1 = dial(&a_addr, "/ws/drone", &token(d1), Some(d1)).await;
    until("B hears of drone 1", knows(d1)).await;
    let a_cluster = a.hub().cluster().unwrap().clone();
    let (before, published) = (b_cluster.received(), a_cluster.published());
    for i in 0..BURST {
        drone1
            .send(WsMessage::text(telemetry(50.0 + i as f64 / 100.0)))
            .await
            .unwrap();
    }
    until("A has published the burst", || {
        a_cluster.published() - published >= BURST
    })
    .await;
    // drone 2's presence is published by A after the burst was confirmed (routed to every
    // bound queue), so B has been offered the burst (were it bound to it) by the time it hears
    // of drone 2
    let _drone2 = dial(&a_addr, "/ws/drone", &token(d2), Some(d2)).await;
    until("B hears of drone 2", knows(d2)).await;
    // what B did take meanwhile: A's heartbeats (5 a second) and drone 2's presence
    let received = b_cluster.received() - before;
    assert!(
        received < BURST / 2,
        "B consumed {received} messages during a burst of {BURST} telemetry frames on A"
    );
    // a backend on B now: both drones in its snapshot, then drone 1's telemetry
    let mut be = dial(&b_addr, "/ws/backend", BACKEND_TOKEN, None).await;
    let mut snapshot = std::collections::HashSet::new();
    next_where(&mut be, |e| {
        for id in [d1, d2] {
            if is_presence(e, id, PresenceStatus::Connected) {
                snapshot.insert(id);
            }
        }
        snapshot.len() == 2 // in whatever order the snapshot lists them
    })
    .await;
    // B binds the fleet's frames once the backend is there; a frame sent before that is not
    // delivered to it (telemetry is lossy), so the drone keeps sending until one arrives
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            drone1.send(WsMessage::text(telemetry(42.0))).await.unwrap();
            if let Ok(env) = tokio::time::timeout(Duration::from_millis(200), async {
                next_where(&mut be, |e| matches!(e.message, Message::Telemetry(_))).await
            })
            .await
            {
                return env;
            }
        }
    })
    .await
    .expect("telemetry from a drone on A reaches a backend that connected to B later");
    assert_eq!(seen.source.unwrap().id, d1.to_string());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A relay with a backend takes the other relays' agents' frames from the broker, not its own
/// agents' back (its backend got them when they were read): each frame reaches the backend once,
/// and the relay's queue does not carry the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_does_not_take_its_own_agents_frames_back_from_the_broker() {
    const BURST: u64 = 200;
    let (d1, d2) = (Uuid::new_v4(), Uuid::new_v4());
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let (a, b) = relay_pair(&ns, ("a9", "b9"), &[d1, d2], &[], LEASE_S).await;
    // the backend on A sees a drone on B (so A is bound to B's frames), and a drone on A
    let (mut be, on_b) = backend_on_a_reaches_drone_on_b(&a, &b, d2).await;
    let a_addr = a.local_addr().to_string();
    let mut drone1 = dial(&a_addr, "/ws/drone", &token(d1), Some(d1)).await;
    next_where(&mut be, |e| is_presence(e, d1, PresenceStatus::Connected)).await;
    let a_cluster = a.hub().cluster().unwrap().clone();
    let (before, published) = (a_cluster.received(), a_cluster.published());
    for i in 0..BURST {
        drone1
            .send(WsMessage::text(telemetry(i as f64 / 4.0)))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < BURST as usize {
        let env = next_where(&mut be, |e| matches!(e.message, Message::Telemetry(_))).await;
        let (Some(src), Message::Telemetry(t)) = (env.source, env.message) else {
            unreachable!()
        };
        assert_eq!(src.id, d1.to_string());
        seen.push(t.battery_level.get());
    }
    let sent: Vec<f64> = (0..BURST).map(|i| i as f64 / 4.0).collect();
    assert_eq!(seen, sent, "each frame once, in order");
    // the burst went to the broker (an AMQP backend sees it) and was confirmed, i.e. routed
    until("A has published the burst", || {
        a_cluster.published() - published >= BURST
    })
    .await;
    // a frame from B's drone after the burst: once A has it, A's queue has given A everything
    // routed to it before
    on_b_send_and_wait(&mut be, on_b).await;
    let received = a_cluster.received() - before;
    assert!(
        received < BURST / 2,
        "A consumed {received} messages from the broker during a burst of {BURST} frames of its own drone"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Sends telemetry from the drone on the other relay until the backend has it.
async fn on_b_send_and_wait(be: &mut Ws, mut drone: Ws) {
    drone.send(WsMessage::text(telemetry(99.5))).await.unwrap();
    next_where(
        be,
        |e| matches!(&e.message, Message::Telemetry(t) if t.battery_level.get() == 99.5),
    )
    .await;
}

/// `amqps://` with rustls (ring): a relay on the broker's TLS listener, trusting the broker's
/// certificate through `ca_file`, is in one cluster with a relay on plain AMQP; without
/// `ca_file` the same certificate is refused (the web PKI roots do not know it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_amqps_joins_the_cluster_and_checks_the_brokers_certificate() {
    let drone = Uuid::new_v4();
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let tls_config = |relay_id: &str, ca: bool| {
        let mut text = config_text(&ns, relay_id, &broker().amqps_url, &[drone], &[], LEASE_S);
        if ca {
            let ca =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/localhost.crt");
            text = text.replace(
                "[cluster]\n",
                &format!("[cluster]\nca_file = \"{}\"\n", ca.display()),
            );
        }
        let c: Config = daemon::config::parse(&text, std::path::Path::new("tls.toml")).unwrap();
        c
    };
    let a = Relay::start(&config(&ns, "a7", &[drone], &[], LEASE_S))
        .await
        .unwrap();
    let b = Relay::start(&tls_config("b7", true)).await.unwrap();
    let untrusting = Relay::start(&tls_config("c7", false)).await.unwrap();
    until_up(&a).await;
    until_up(&b).await;
    backend_on_a_reaches_drone_on_b(&a, &b, drone).await;
    // the relay that does not trust the certificate never gets on the broker, and says why
    let c = untrusting.hub().cluster().unwrap().clone();
    until("the untrusting relay reports its connect error", || {
        !c.health()["last_error"].is_null()
    })
    .await;
    assert!(!c.is_up(), "{}", c.health());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    untrusting.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drone_that_connects_to_a_second_relay_is_closed_on_the_first() {
    let drone = Uuid::new_v4();
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let (a, b) = relay_pair(&ns, ("a2", "b2"), &[drone], &[], LEASE_S).await;
    let mut be = dial(
        &a.local_addr().to_string(),
        "/ws/backend",
        BACKEND_TOKEN,
        None,
    )
    .await;
    let mut old = dial(
        &a.local_addr().to_string(),
        "/ws/drone",
        &token(drone),
        Some(drone),
    )
    .await;
    next_where(&mut be, |e| {
        is_presence(e, drone, PresenceStatus::Connected)
    })
    .await;
    let mut new = dial(
        &b.local_addr().to_string(),
        "/ws/drone",
        &token(drone),
        Some(drone),
    )
    .await;
    // the older connection is closed with a reason, and no `disconnected` is reported for it
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            match old.next().await {
                Some(Ok(WsMessage::Close(Some(f)))) => return f.reason.to_string(),
                Some(Ok(_)) => {}
                other => panic!("closed without a reason: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(reason.contains("another relay"), "{reason}");
    // commands from the backend on A now reach the drone once, on B
    let cmd_id = Uuid::new_v4();
    be.send(WsMessage::text(command_to(drone, cmd_id)))
        .await
        .unwrap();
    next_where(&mut new, |e| matches!(e.message, Message::Command(_))).await;
    new.send(WsMessage::text(telemetry(50.0))).await.unwrap();
    // the backend sees the drone's telemetry from B with no `disconnected` before it
    let e = next_where(&mut be, |e| {
        matches!(e.message, Message::Telemetry(_))
            || is_presence(e, drone, PresenceStatus::Disconnected)
    })
    .await;
    assert!(matches!(e.message, Message::Telemetry(_)), "{e:?}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relays_drones_go_disconnected_within_the_lease_and_reconnect_elsewhere() {
    let drone = Uuid::new_v4();
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let a = Relay::start(&config(&ns, "a3", &[drone], &[], LEASE_S))
        .await
        .unwrap();
    until_up(&a).await;
    // relay B is a process of its own, to be killed with SIGKILL
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.toml");
    std::fs::write(
        &path,
        config_text(&ns, "b3", &broker().amqp_url, &[drone], &[], LEASE_S),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["run", "--config"])
        .arg(&path)
        .env("SKYPOST_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let b_addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["fields"]["message"] == "relay listening" {
                return v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("relay B exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut be = dial(
        &a.local_addr().to_string(),
        "/ws/backend",
        BACKEND_TOKEN,
        None,
    )
    .await;
    let mut d = dial(&b_addr, "/ws/drone", &token(drone), Some(drone)).await;
    next_where(&mut be, |e| {
        is_presence(e, drone, PresenceStatus::Connected)
    })
    .await;

    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let seen = tokio::time::Instant::now();
    next_where(&mut be, |e| {
        is_presence(e, drone, PresenceStatus::Disconnected)
    })
    .await;
    // the bound: lease (1 s) + one heartbeat interval (0.2 s), with slack for a loaded machine
    assert!(
        seen.elapsed() < Duration::from_secs(5),
        "{:?}",
        seen.elapsed()
    );
    // the drone's socket died with B; it dials A and is seen connected again
    let _ = d.close(None).await;
    let _d2 = dial(
        &a.local_addr().to_string(),
        "/ws/drone",
        &token(drone),
        Some(drone),
    )
    .await;
    next_where(&mut be, |e| {
        is_presence(e, drone, PresenceStatus::Connected)
    })
    .await;
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_on_amqp_sees_telemetry_and_reaches_the_drone() {
    use lapin::options::{
        BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    let drone = Uuid::new_v4();
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let a = Relay::start(&config(&ns, "a4", &[drone], &[], LEASE_S))
        .await
        .unwrap();
    until_up(&a).await;
    let conn = lapin::Connection::connect(&broker().amqp_url, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // all telemetry of all drones
    ch.queue_bind(
        q.name().clone(),
        format!("{ns}.agents").as_str().into(),
        "drone.*.telemetry".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut d = dial(
        &a.local_addr().to_string(),
        "/ws/drone",
        &token(drone),
        Some(drone),
    )
    .await;
    d.send(WsMessage::text(telemetry(66.0))).await.unwrap();
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        delivery.routing_key.as_str(),
        format!("drone.{drone}.telemetry")
    );
    let env = Envelope::from_json(std::str::from_utf8(&delivery.data).unwrap()).unwrap();
    assert_eq!(env.source.unwrap().id, drone.to_string());
    // a command published to the to-agents exchange reaches the drone
    let cmd_id = Uuid::new_v4();
    let body = format!(
        r#"{{"type":"command","payload":{{"cmd_id":"{cmd_id}","command":"return_to_home"}}}}"#
    );
    ch.basic_publish(
        format!("{ns}.to-agents").as_str().into(),
        format!("drone.{drone}").as_str().into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        Default::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let got = next_where(&mut d, |e| matches!(e.message, Message::Command(_))).await;
    match got.message {
        Message::Command(c) => assert_eq!(c.cmd_id, Some(cmd_id)),
        _ => unreachable!(),
    }
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_its_broker_a_relay_serves_its_own_agents_and_says_degraded() {
    let drone = Uuid::new_v4();
    // nobody listens on this port
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let text = config_text("t-down", "down1", &url, &[drone], &[], LEASE_S);
    let c: Config = daemon::config::parse(&text, std::path::Path::new("c.toml")).unwrap();
    let a = Relay::start(&c).await.unwrap();
    let addr = a.local_addr().to_string();
    let mut be = dial(&addr, "/ws/backend", BACKEND_TOKEN, None).await;
    let mut d = dial(&addr, "/ws/drone", &token(drone), Some(drone)).await;
    next_where(&mut be, |e| {
        is_presence(e, drone, PresenceStatus::Connected)
    })
    .await;
    d.send(WsMessage::text(telemetry(40.0))).await.unwrap();
    next_where(&mut be, |e| matches!(e.message, Message::Telemetry(_))).await;
    // /health says so
    let mut s = TcpStream::connect(&addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(b"GET /health HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(resp.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["cluster"]["broker"], "down", "{body}");
    let m = a.hub().metrics.render();
    assert_eq!(
        metric(&m, "relay_dropped_frames_total{reason=\"cluster_down\"}"),
        1,
        "{m}"
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_bridge_on_one_relay_reaches_a_locker_on_the_other() {
    use protocol::locker_api::CellsOpenResponse;
    use protocol::ws::{LockerOutcome, LockerResponse};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let locker = Uuid::new_v4();
    let ns = format!("t-{}", Uuid::new_v4().simple());
    let (a, b) = relay_pair(&ns, ("a5", "b5"), &[], &[locker], LEASE_S).await;
    let a_addr = a.local_addr().to_string();
    // a backend on A learns the locker on B is connected: A knows where it is
    let mut be = dial(&a_addr, "/ws/backend", BACKEND_TOKEN, None).await;
    let mut l = dial(
        &b.local_addr().to_string(),
        "/ws/locker",
        &token(locker),
        Some(locker),
    )
    .await;
    next_where(&mut be, |e| {
        is_presence(e, locker, PresenceStatus::Connected)
    })
    .await;

    let body = format!(r#"{{"cell_uuid":"{}"}}"#, Uuid::new_v4());
    let call = tokio::spawn({
        let a_addr = a_addr.clone();
        async move {
            let mut s = TcpStream::connect(&a_addr).await.unwrap();
            let req = format!(
                "POST /api/lockers/{locker}/cells/open HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {BACKEND_TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut resp = String::new();
            tokio::time::timeout(WAIT, s.read_to_string(&mut resp))
                .await
                .unwrap()
                .unwrap();
            resp
        }
    });
    let req = next_where(&mut l, |e| matches!(e.message, Message::LockerRequest(_))).await;
    let Message::LockerRequest(req) = req.message else {
        unreachable!()
    };
    let answer = Envelope::new(LockerResponse {
        request_id: req.request_id,
        status: 200,
        outcome: LockerOutcome::CellOpened(CellsOpenResponse {
            success: true,
            cell_id: 2,
            opened_at: chrono::Utc::now(),
        }),
    });
    l.send(WsMessage::text(answer.to_json())).await.unwrap();
    let resp = call.await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let v: serde_json::Value =
        serde_json::from_str(resp.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(v["cell_id"], 2);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
