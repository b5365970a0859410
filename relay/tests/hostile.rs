//! The relay against a hostile network (issue 18): raw TCP sockets on loopback that never finish
//! their request, floods of unauthenticated connections from one address and from several,
//! oversized and invalid frames written by hand, and bridge calls with huge bodies and no token.
//!
//! Loopback is all of 127.0.0.0/8 on Linux, so "another host" is a socket bound to 127.0.0.2.
//! Nothing sleeps: every wait is for a socket event, bounded by a timeout.

use crate::metrics;

use metrics::metric;
use relay::{Config, Relay};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use uuid::Uuid;

const BACKEND_TOKEN: &str = "backend-secret-0123456789";
const DRONE: Uuid = Uuid::from_u128(0xa000_0000_0000_4000_8000_0000_0000_0001);
const WAIT: Duration = Duration::from_secs(10);

fn token(id: Uuid) -> String {
    format!("token-for-{id}")
}

fn config(server_extra: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n[backend]\ntoken = \"{BACKEND_TOKEN}\"\n\
         [[drones]]\nid = \"{DRONE}\"\ntoken = \"{}\"\n",
        token(DRONE)
    );
    daemon::config::parse(&text, std::path::Path::new("test.toml")).unwrap()
}

async fn start(server_extra: &str) -> Relay {
    Relay::start(&config(server_extra)).await.unwrap()
}

/// A TCP connection to the relay from a chosen loopback address.
async fn connect_from(relay: &Relay, from: [u8; 4]) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    sock.connect(relay.local_addr()).await.unwrap()
}

/// Reads until the relay closes the socket; returns what it sent. Panics if it stays open.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the relay kept the socket open")
        {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// An agent upgrade by hand; returns the socket after the 101.
async fn upgrade_by_hand(relay: &Relay) -> TcpStream {
    let mut s = connect_from(relay, [127, 0, 0, 1]).await;
    let req = format!(
        "GET /ws/drone HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {}\r\nX-Skypost-Agent-Id: {DRONE}\r\n\r\n",
        token(DRONE)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed during the handshake");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame header: FIN + opcode, the given payload length.
fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]); // mask of zeros: the payload goes as it is
    h
}

/// The close frame the relay sent: its code and reason.
async fn close_frame(s: &mut TcpStream) -> (u16, String) {
    let bytes = read_until_closed(s).await;
    assert!(
        bytes.len() >= 4 && bytes[0] == 0x88,
        "expected a close frame, got {bytes:?}"
    );
    let len = usize::from(bytes[1] & 0x7f);
    let code = u16::from_be_bytes([bytes[2], bytes[3]]);
    let reason = String::from_utf8_lossy(&bytes[4..2 + len]).into_owned();
    (code, reason)
}

// -- defect 4: half-finished requests ---------------------------------------------------------

#[tokio::test]
async fn a_request_that_never_finishes_is_closed_at_the_header_timeout() {
    let relay = start("header_timeout_s = 0.3").await;
    let mut s = connect_from(&relay, [127, 0, 0, 1]).await;
    // the start of an upgrade, and then nothing
    s.write_all(b"GET /ws/drone HTTP/1.1\r\nHost: relay\r\n")
        .await
        .unwrap();
    read_until_closed(&mut s).await;
    let m = relay.hub().metrics.render();
    assert_eq!(
        metric(
            &m,
            "relay_unauthenticated_closed_total{reason=\"header_timeout\"}"
        ),
        1
    );
    assert_eq!(metric(&m, "relay_unauthenticated_connections"), 0);
}

#[tokio::test]
async fn an_authenticated_agent_outlives_the_header_timeout() {
    let relay = start("header_timeout_s = 0.2").await;
    let mut s = upgrade_by_hand(&relay).await;
    // the clock: a socket accepted after the agent's, with the same deadline; once the relay
    // has closed it, the agent's deadline has passed too
    let mut clock = connect_from(&relay, [127, 0, 0, 2]).await;
    read_until_closed(&mut clock).await;
    let mut ping = frame_header(0x9, 2);
    ping.extend_from_slice(b"hi");
    s.write_all(&ping).await.unwrap();
    let mut pong = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong, [0x8a, 2, b'h', b'i']);
    let m = relay.hub().metrics.render();
    assert_eq!(
        metric(
            &m,
            "relay_unauthenticated_closed_total{reason=\"header_timeout\"}"
        ),
        1,
        "only the clock was cut"
    );
}

#[tokio::test]
async fn one_source_cannot_hold_more_than_its_cap_and_others_still_connect() {
    let relay = start("max_unauthenticated_per_source = 3\nmax_unauthenticated = 100").await;
    // three idle sockets from 127.0.0.2 are allowed (the relay keeps them open)...
    let mut _idle = Vec::new();
    for _ in 0..3 {
        _idle.push(connect_from(&relay, [127, 0, 0, 2]).await);
    }
    // ...the fourth is closed as soon as it is accepted, with nothing said
    let mut over = connect_from(&relay, [127, 0, 0, 2]).await;
    assert!(read_until_closed(&mut over).await.is_empty());
    // another address is not affected: an agent upgrades and /health answers
    let _agent = upgrade_by_hand(&relay).await;
    let mut h = connect_from(&relay, [127, 0, 0, 3]).await;
    h.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = read_until_closed(&mut h).await;
    assert!(resp.starts_with(b"HTTP/1.1 200"));
    let m = relay.hub().metrics.render();
    assert_eq!(
        metric(
            &m,
            "relay_unauthenticated_closed_total{reason=\"over_source_cap\"}"
        ),
        1
    );
    assert_eq!(metric(&m, "relay_unauthenticated_connections"), 3);
}

#[tokio::test]
async fn the_total_cap_holds_across_sources() {
    let relay = start("max_unauthenticated_per_source = 2\nmax_unauthenticated = 3").await;
    let _a = connect_from(&relay, [127, 0, 0, 2]).await;
    let _b = connect_from(&relay, [127, 0, 0, 2]).await;
    let _c = connect_from(&relay, [127, 0, 0, 3]).await;
    let mut over = connect_from(&relay, [127, 0, 0, 4]).await;
    assert!(read_until_closed(&mut over).await.is_empty());
    let m = relay.hub().metrics.render();
    assert_eq!(
        metric(
            &m,
            "relay_unauthenticated_closed_total{reason=\"over_total_cap\"}"
        ),
        1
    );
}

// -- weaker spots: frames ---------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_frame_is_closed_with_1009_and_a_reason() {
    let relay = start("").await;
    let mut s = upgrade_by_hand(&relay).await;
    // announce one byte over the protocol's limit; send only a little of it
    let mut f = frame_header(0x1, protocol::MAX_MESSAGE_BYTES as u64 + 1);
    f.extend_from_slice(b"{\"type\":");
    s.write_all(&f).await.unwrap();
    let (code, reason) = close_frame(&mut s).await;
    assert_eq!(code, 1009);
    assert!(reason.contains("too big"), "{reason}");
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_is_closed_with_1007_and_a_reason() {
    let relay = start("").await;
    let mut s = upgrade_by_hand(&relay).await;
    let payload = [b'{', 0xff, 0xfe, b'}'];
    let mut f = frame_header(0x1, payload.len() as u64);
    f.extend_from_slice(&payload);
    s.write_all(&f).await.unwrap();
    let (code, reason) = close_frame(&mut s).await;
    assert_eq!(code, 1007);
    assert!(reason.contains("UTF-8"), "{reason}");
}

// -- weaker spots: the bridge -----------------------------------------------------------------

async fn http_post_raw(relay: &Relay, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = connect_from(relay, [127, 0, 0, 1]).await;
    s.write_all(head.as_bytes()).await.unwrap();
    // the relay may answer (and close) before the whole body is written: that is the point
    let _ = s.write_all(body).await;
    let resp = read_until_closed(&mut s).await;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_bridge_checks_the_token_before_reading_the_body() {
    let relay = start("").await;
    // no token and a body far over any limit: 401 at once, the body never read
    let head = format!(
        "POST /api/lockers/{DRONE}/cells/open HTTP/1.1\r\nHost: relay\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        64 << 20
    );
    let (status, body) = http_post_raw(&relay, &head, b"{").await;
    assert_eq!(status, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["code"], protocol::error::codes::UNAUTHORIZED);
}

#[tokio::test]
async fn an_oversized_bridge_body_gets_413_in_the_seed_format() {
    let relay = start("").await;
    let limit = 65_536;
    // declared too large
    let head = format!(
        "POST /api/lockers/{DRONE}/cells/open HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {BACKEND_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        limit + 1
    );
    let (status, body) = http_post_raw(&relay, &head, b"{").await;
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(
        v["error"]["code"],
        protocol::error::codes::MESSAGE_TOO_LARGE
    );
    // chunked, so no length is declared: found out while reading
    let head = format!(
        "POST /api/lockers/{DRONE}/cells/open HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {BACKEND_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![b' '; limit + 10];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, body) = http_post_raw(&relay, &head, &body).await;
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"]["code"],
        protocol::error::codes::MESSAGE_TOO_LARGE
    );
}

/// The next server frame (unmasked) as (opcode, payload).
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut h))
        .await
        .unwrap()
        .unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.unwrap();
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.unwrap();
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0f, payload)
}

#[tokio::test]
async fn a_frame_at_the_limit_is_refused_when_stamping_would_take_it_over() {
    let relay = start("").await;
    let mut s = upgrade_by_hand(&relay).await;
    // telemetry of exactly the protocol's limit, padded in a free-text field
    let shell = r#"{"type":"telemetry","payload":{"battery_level":80.0,"position":{"lat":55.75,"lon":37.61,"alt":40.0},"status":"flying","flight_mode":""}}"#;
    let pad = protocol::MAX_MESSAGE_BYTES - shell.len();
    let text = shell.replace(
        r#""flight_mode":"""#,
        &format!(r#""flight_mode":"{}""#, "A".repeat(pad)),
    );
    assert_eq!(text.len(), protocol::MAX_MESSAGE_BYTES);
    let mut f = frame_header(0x1, text.len() as u64);
    f.extend_from_slice(text.as_bytes());
    s.write_all(&f).await.unwrap();
    let (opcode, payload) = read_frame(&mut s).await;
    assert_eq!(opcode, 0x1);
    let env = protocol::Envelope::from_json(std::str::from_utf8(&payload).unwrap()).unwrap();
    match env.message {
        protocol::Message::Error(e) => {
            assert_eq!(e.code, protocol::error::codes::MESSAGE_TOO_LARGE, "{e:?}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let m = relay.hub().metrics.render();
    assert_eq!(
        metric(&m, "relay_dropped_frames_total{reason=\"refused\"}"),
        1
    );
    assert_eq!(
        metric(&m, "relay_dropped_frames_total{reason=\"no_backend\"}"),
        0,
        "it was never offered to the backends"
    );
}
