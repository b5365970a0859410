//! The link against a real WebSocket server on loopback: hello first, events until acked,
#![allow(clippy::result_large_err)] // tungstenite's handshake callback signature, not ours
//! re-sent after a reconnect, newest-wins telemetry, auth headers.

use cloud_link::{CloudConfig, CloudLink, LinkStatus};
use futures_util::{SinkExt, StreamExt};
use protocol::ws::{Event, EventAck, EventType, Message, PeerKind, Telemetry};
use protocol::Envelope;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message as Ws;

const WAIT: Duration = Duration::from_secs(10);

/// What the fake relay sees: per connection, the auth headers and a channel of frames; and a way to
/// send frames back or cut the connection.
struct Conn {
    auth: String,
    agent_id: String,
    frames: mpsc::UnboundedReceiver<Envelope>,
    to_agent: mpsc::UnboundedSender<Option<Envelope>>,
}

impl Conn {
    async fn next(&mut self) -> Envelope {
        tokio::time::timeout(WAIT, self.frames.recv())
            .await
            .expect("frame in time")
            .expect("connection open")
    }

    async fn next_event(&mut self) -> Event {
        loop {
            if let Message::Event(e) = self.next().await.message {
                return e;
            }
        }
    }

    fn send(&self, env: Envelope) {
        let _ = self.to_agent.send(Some(env));
    }

    fn cut(&self) {
        let _ = self.to_agent.send(None);
    }
}

async fn fake_relay() -> (String, mpsc::UnboundedReceiver<Conn>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/drone", listener.local_addr().unwrap());
    let (conn_tx, conn_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                let mut auth = String::new();
                let mut agent_id = String::new();
                let ws =
                    tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        auth = h("authorization");
                        agent_id = h("x-skypost-agent-id");
                        Ok(resp)
                    })
                    .await
                    .unwrap();
                let (frames_tx, frames) = mpsc::unbounded_channel();
                let (to_agent, mut to_agent_rx) = mpsc::unbounded_channel::<Option<Envelope>>();
                conn_tx
                    .send(Conn {
                        auth,
                        agent_id,
                        frames,
                        to_agent,
                    })
                    .unwrap();
                let (mut sink, mut stream) = ws.split();
                loop {
                    tokio::select! {
                        f = stream.next() => match f {
                            Some(Ok(Ws::Text(t))) => { let _ = frames_tx.send(Envelope::from_json(t.as_str()).unwrap()); }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                        out = to_agent_rx.recv() => match out {
                            Some(Some(env)) => { sink.send(Ws::text(env.to_json())).await.unwrap(); }
                            _ => return, // cut: drop the socket without a close frame
                        },
                    }
                }
            });
        }
    });
    (url, conn_rx)
}

fn fast_config(url: &str) -> CloudConfig {
    let mut c = CloudConfig::new(url, "secret-token");
    c.backoff_initial_s = 0.01;
    c.backoff_max_s = 0.05;
    c.event_resend_s = 30.0;
    c
}

fn hello() -> Envelope {
    Envelope::new(protocol::ws::EventAck {
        event_id: uuid::Uuid::nil(),
    })
}

async fn next_conn(rx: &mut mpsc::UnboundedReceiver<Conn>) -> Conn {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("agent connects in time")
        .unwrap()
}

#[tokio::test]
async fn hello_first_with_auth_then_events_until_acked() {
    let (url, mut conns) = fake_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (link, _incoming) = CloudLink::spawn(
        fast_config(&url),
        PeerKind::Drone,
        "drone-7".into(),
        dir.path(),
        hello(),
    )
    .unwrap();
    let mut c = next_conn(&mut conns).await;
    assert_eq!(c.auth, "Bearer secret-token");
    assert_eq!(c.agent_id, "drone-7");
    assert_eq!(
        c.next().await.kind(),
        "event_ack",
        "the hello frame comes first"
    );

    let sent = link
        .publish_event(Event::new(EventType::Arrived))
        .await
        .unwrap();
    let got = c.next_event().await;
    assert_eq!(got.event_id, sent.event_id);
    assert_eq!(got.seq, Some(1));
    assert_eq!(link.pending_events(), 1);

    // cut before acking: the event comes again on the next connection
    c.cut();
    let mut c2 = next_conn(&mut conns).await;
    c2.next().await; // hello
    assert_eq!(c2.next_event().await.event_id, sent.event_id);
    c2.send(Envelope::new(EventAck {
        event_id: sent.event_id.unwrap(),
    }));
    let mut status = link.status();
    tokio::time::timeout(WAIT, async {
        while link.pending_events() != 0 {
            tokio::task::yield_now().await;
            let _ = tokio::time::timeout(Duration::from_millis(20), status.changed()).await;
        }
    })
    .await
    .expect("ack empties the outbox");
    link.close().await;
}

#[tokio::test]
async fn events_survive_a_restart_of_the_agent() {
    let (url, mut conns) = fake_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let first_id;
    {
        // relay unreachable: events pile up on disk
        let (link, _rx) = CloudLink::spawn(
            fast_config("ws://127.0.0.1:9/ws/drone"),
            PeerKind::Drone,
            "d".into(),
            dir.path(),
            hello(),
        )
        .unwrap();
        first_id = link
            .publish_event(Event::new(EventType::TaskAssigned))
            .await
            .unwrap()
            .event_id;
        link.publish_event(Event::new(EventType::TookOff))
            .await
            .unwrap();
        link.close().await;
    }
    let (link, _rx) = CloudLink::spawn(
        fast_config(&url),
        PeerKind::Drone,
        "d".into(),
        dir.path(),
        hello(),
    )
    .unwrap();
    let mut c = next_conn(&mut conns).await;
    c.next().await;
    let a = c.next_event().await;
    let b = c.next_event().await;
    assert_eq!(a.event_id, first_id);
    assert_eq!((a.seq, b.seq), (Some(1), Some(2)), "in order, no gap");
    link.close().await;
}

#[tokio::test]
async fn telemetry_is_newest_wins_and_frames_flow_in() {
    let (url, mut conns) = fake_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (link, mut incoming) = CloudLink::spawn(
        fast_config(&url),
        PeerKind::Drone,
        "d".into(),
        dir.path(),
        hello(),
    )
    .unwrap();
    let tel = |pct: f64| {
        let mut t: Telemetry = serde_json::from_str(
            r#"{"battery_level":50,"position":{"lat":1,"lon":2,"alt":3},"status":"flying"}"#,
        )
        .unwrap();
        t.battery_level = protocol::units::Percent::new(pct).unwrap();
        Envelope::new(t)
    };
    // set before the connection exists: only the last one is sent
    link.set_telemetry(tel(90.0));
    link.set_telemetry(tel(80.0));
    let mut c = next_conn(&mut conns).await;
    c.next().await;
    let Message::Telemetry(t) = c.next().await.message else {
        panic!("telemetry expected")
    };
    assert_eq!(t.battery_level.get(), 80.0);

    let task = r#"{"type":"command","payload":{"command":"pause","cmd_id":"3c9e1f20-5a7b-4d8c-9e0f-112233445566"}}"#;
    c.send(Envelope::from_json(task).unwrap());
    let got = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.kind(), "command");
    assert!(matches!(
        *link.status().borrow(),
        LinkStatus::Connected { .. }
    ));
    link.close().await;
}

#[tokio::test]
async fn bad_url_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = CloudLink::spawn(
        fast_config("not a url"),
        PeerKind::Drone,
        "d".into(),
        dir.path(),
        hello(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("not a url"), "{err}");
}

/// A relay that accepts and then reads nothing until told: the agent's writes back up in the
/// socket buffers like they do on a slow 4G uplink.
#[tokio::test]
async fn video_on_a_slow_link_is_dropped_counted_and_never_ahead_of_events() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/drone", listener.local_addr().unwrap());
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (frames_tx, mut frames) = mpsc::unbounded_channel::<Envelope>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (_sink, mut stream) = ws.split();
        let _ = go_rx.await;
        while let Some(Ok(f)) = stream.next().await {
            if let Ws::Text(t) = f {
                let _ = frames_tx.send(Envelope::from_json(t.as_str()).unwrap());
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (link, _incoming) = CloudLink::spawn(
        fast_config(&url),
        PeerKind::Drone,
        "d".into(),
        dir.path(),
        hello(),
    )
    .unwrap();
    let mut status = link.status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.is_connected()))
        .await
        .unwrap()
        .unwrap();
    // 256 KiB of base64 per frame: a few fill the loopback socket buffers
    let picture = "A".repeat(256 * 1024);
    let mut queued = 0;
    for seq in 0..200 {
        let frame = protocol::ws::VideoFrame {
            frame: picture.clone(),
            width: 640,
            height: 480,
            seq,
            dropped: None,
        };
        if link.send_video(Envelope::new(frame)) {
            queued += 1;
        }
        tokio::task::yield_now().await;
    }
    assert!(queued < 200, "a stalled link cannot take every frame");
    assert_eq!(link.video_dropped(), 200 - queued);
    let event = link
        .publish_event(Event::new(EventType::Arrived))
        .await
        .unwrap();
    go_tx.send(()).unwrap();
    let mut video_after_event = 0;
    let mut saw_event = false;
    let mut video_total = 0;
    while video_total < queued {
        let env = tokio::time::timeout(WAIT, frames.recv())
            .await
            .expect("frames flow once the relay reads")
            .unwrap();
        match env.message {
            Message::Event(e) => {
                assert_eq!(e.event_id, event.event_id);
                saw_event = true;
            }
            Message::VideoFrame(_) => {
                video_total += 1;
                if saw_event {
                    video_after_event += 1;
                }
            }
            _ => {}
        }
    }
    assert!(saw_event, "the event went out");
    assert!(
        video_after_event >= 1,
        "the event overtook the video frames still queued"
    );
    link.close().await;
}

#[tokio::test]
async fn a_lost_connection_moves_on_to_the_next_relay_and_events_follow() {
    let (url_a, mut conns_a) = fake_relay().await;
    let (url_b, mut conns_b) = fake_relay().await;
    let mut cfg = fast_config(&url_a);
    cfg.url = None;
    cfg.urls = vec![url_a, url_b];
    let dir = tempfile::tempdir().unwrap();
    let (link, _incoming) =
        CloudLink::spawn(cfg, PeerKind::Drone, "drone-7".into(), dir.path(), hello()).unwrap();
    let mut a = next_conn(&mut conns_a).await;
    a.next().await; // hello
    let ev = link
        .publish_event(Event::new(EventType::Arrived))
        .await
        .unwrap();
    assert_eq!(a.next_event().await.event_id, ev.event_id);
    // relay A goes away without a word: the next dial is to relay B, where the unacknowledged
    // event is sent again after the hello
    a.cut();
    let mut b = next_conn(&mut conns_b).await;
    assert_eq!(b.agent_id, "drone-7");
    assert!(
        matches!(b.next().await.message, Message::EventAck(_)),
        "hello first"
    );
    assert_eq!(b.next_event().await.event_id, ev.event_id);
    // and B lost: back to A, round the list
    b.cut();
    let mut a2 = next_conn(&mut conns_a).await;
    a2.next().await;
    assert_eq!(a2.next_event().await.event_id, ev.event_id);
}

#[test]
fn url_and_urls_are_one_or_the_other() {
    let parse =
        |t: &str| daemon::config::parse::<CloudConfig>(t, std::path::Path::new("cloud.toml"));
    let ok = parse("urls = [\"ws://a/ws/drone\", \"wss://b/ws/drone\"]\ntoken = \"t\"\n").unwrap();
    assert_eq!(ok.relays(), ["ws://a/ws/drone", "wss://b/ws/drone"]);
    let ok = parse("url = \"ws://a/ws/drone\"\ntoken = \"t\"\n").unwrap();
    assert_eq!(ok.relays(), ["ws://a/ws/drone"]);
    let e = parse("url = \"ws://a/x\"\nurls = [\"ws://b/x\"]\ntoken = \"t\"\n").unwrap_err();
    assert_eq!(e.fields(), ["cloud.urls"]);
    let e = parse("urls = [\"ws://a/x\", \"http://b/x\"]\ntoken = \"t\"\n").unwrap_err();
    assert_eq!(e.fields(), ["cloud.urls[1]"]);
    let e = parse("token = \"t\"\n").unwrap_err();
    assert_eq!(e.fields(), ["cloud.url"]);
}
