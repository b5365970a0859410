//! The fleet file reloads while the relay runs: new agents connect at once, removed or disabled
//! ones are closed with 4401 and a reason, everyone else is untouched, and a broken file is
//! refused (naming its line) with the old list kept.

use crate::metrics;
use futures_util::{SinkExt as _, StreamExt as _};
use relay::fleet::Revocation;

use metrics::metric;
use relay::{Config, Relay};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);
const BACKEND_TOKEN: &str = "backend-secret-0123456789";
const A: Uuid = Uuid::from_u128(0xa000_0000_0000_4000_8000_0000_0000_0001);
const B: Uuid = Uuid::from_u128(0xb000_0000_0000_4000_8000_0000_0000_0002);
const C: Uuid = Uuid::from_u128(0xc000_0000_0000_4000_8000_0000_0000_0003);

fn token(id: Uuid) -> String {
    format!("token-for-{id}")
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fleet file listing these drones (`true`: disabled).
fn write_fleet(path: &Path, drones: &[(Uuid, bool)]) {
    let mut text = String::from("# test fleet\n");
    for (id, disabled) in drones {
        text += &format!(
            "\n[[agents]]\nid = \"{id}\"\nkind = \"drone\"\ntoken_sha256 = \"{}\"\n",
            hex_sha256(&token(*id))
        );
        if *disabled {
            text += "disabled = true\n";
        }
    }
    // written whole and renamed, as an operator's tool would: never a half-written file
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(fleet: &Path, watch_interval_s: f64) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[backend]\ntoken = \"{BACKEND_TOKEN}\"\n\
         [fleet]\nfile = \"{}\"\nwatch_interval_s = {watch_interval_s}\n",
        fleet.display()
    );
    daemon::config::parse(&text, Path::new("test.toml")).unwrap()
}

async fn setup(drones: &[(Uuid, bool)], watch: f64) -> (tempfile::TempDir, PathBuf, Relay) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    write_fleet(&path, drones);
    let relay = Relay::start(&config(&path, watch)).await.unwrap();
    (dir, path, relay)
}

async fn dial(relay: &Relay, id: Uuid) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{}/ws/drone", relay.local_addr())
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(id))).unwrap(),
    );
    h.insert(
        "x-skypost-agent-id",
        HeaderValue::from_str(&id.to_string()).unwrap(),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

fn refused(r: Result<Ws, tokio_tungstenite::tungstenite::Error>) -> bool {
    matches!(r, Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status() == 401)
}

/// Reads until the relay closes; returns the close code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the connection was not closed")
        {
            Some(Ok(WsMessage::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(WsMessage::Close(None))) | None | Some(Err(_)) => {
                panic!("closed without a close frame")
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The connection is alive: a ping is answered.
async fn alive(ws: &mut Ws) {
    ws.send(WsMessage::Ping(b"x".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Pong(_))) => return,
            Some(Ok(WsMessage::Ping(_))) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_reload_adds_revokes_and_leaves_the_rest_alone() {
    let (_dir, path, relay) = setup(&[(A, false), (B, false)], 0.0).await;
    let mut a = dial(&relay, A).await.unwrap();
    let mut b = dial(&relay, B).await.unwrap();
    assert!(refused(dial(&relay, C).await), "C is not in the fleet yet");

    // B removed, C added
    write_fleet(&path, &[(A, false), (C, false)]);
    let r = relay.reload_fleet().unwrap();
    assert_eq!(
        r.revoked,
        vec![((relay::auth::AgentKind::Drone, B), Revocation::Removed)]
    );
    assert_eq!(
        closed(&mut b).await,
        (4401, "removed from the fleet".into())
    );
    let mut c = dial(&relay, C).await.unwrap();
    alive(&mut a).await;
    alive(&mut c).await;
    assert!(refused(dial(&relay, B).await));

    // A disabled
    write_fleet(&path, &[(A, true), (C, false)]);
    relay.reload_fleet().unwrap();
    assert_eq!(closed(&mut a).await, (4401, "disabled in the fleet".into()));
    assert!(refused(dial(&relay, A).await));
    alive(&mut c).await;
    let m = relay.hub().metrics.render();
    assert_eq!(metric(&m, "relay_agents_revoked_total "), 2, "{m}");
}

#[tokio::test]
async fn a_broken_fleet_file_is_refused_with_its_line_and_the_old_list_stays() {
    let (_dir, path, relay) = setup(&[(A, false)], 0.0).await;
    let mut a = dial(&relay, A).await.unwrap();
    // line 6: a second entry with a bad digest
    std::fs::write(
        &path,
        format!(
            "[[agents]]\nid = \"{A}\"\nkind = \"drone\"\ntoken_sha256 = \"{}\"\n\n[[agents]]\nid = \"{B}\"\nkind = \"drone\"\ntoken_sha256 = \"not-hex\"\n",
            hex_sha256(&token(A))
        ),
    )
    .unwrap();
    let e = relay.reload_fleet().unwrap_err();
    assert!(e.to_string().contains("line 6"), "{e}");
    // nothing changed: A still connected and allowed, B still unknown
    alive(&mut a).await;
    drop(a);
    dial(&relay, A).await.unwrap();
    assert!(refused(dial(&relay, B).await));
    let m = relay.hub().metrics.render();
    assert!(
        metric(&m, "relay_fleet_reloads_total{outcome=\"refused\"}") == 1,
        "{m}"
    );
}

#[tokio::test]
async fn a_change_to_the_file_is_picked_up_without_a_signal() {
    let (_dir, path, relay) = setup(&[(A, false)], 0.02).await;
    let relay = std::sync::Arc::new(relay);
    let mut systemd = daemon::systemd::Service::disabled();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let looping = tokio::spawn({
        let relay = relay.clone();
        async move {
            let _ = relay.supervise(&mut systemd, None, stopped).await;
        }
    });
    let mut a = dial(&relay, A).await.unwrap();
    write_fleet(&path, &[(B, false)]);
    assert_eq!(
        closed(&mut a).await,
        (4401, "removed from the fleet".into())
    );
    dial(&relay, B).await.unwrap();
    stop.send(()).unwrap();
    looping.await.unwrap();
}
