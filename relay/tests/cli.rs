//! The `relay` binary itself: `config check`, and `run` until SIGTERM.

use futures_util::StreamExt as _;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const BIN: &str = env!("CARGO_BIN_EXE_relay");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.example.toml");
const DRONE: &str = "6f1d3c1e-2a4b-4c5d-8e9f-0a1b2c3d4e5f";

#[test]
fn config_check_accepts_the_example_and_names_a_bad_field() {
    let out = std::process::Command::new(BIN)
        .args(["config", "check", EXAMPLE])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("ping_interval_s = 30.0", "ping_interval_s = -1.0");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("presence.ping_interval_s"), "{err}");
}

#[tokio::test]
async fn run_serves_until_sigterm_then_closes_connections_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("0.0.0.0:8443", "127.0.0.1:0");
    std::fs::write(&config, text).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("SKYPOST_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // the relay logs the address it bound (port 0 picks a free one)
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["fields"]["message"] == "relay listening" {
                return v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("relay exited before listening");
    })
    .await
    .unwrap();
    // keep draining its log so it never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut req = format!("ws://{addr}/ws/drone")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_static("Bearer change-me-drone-token-0123456789"),
    );
    req.headers_mut()
        .insert("x-skypost-agent-id", HeaderValue::from_static(DRONE));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(f))) => return f.map(|f| f.code),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some(CloseCode::Away));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sighup_reloads_the_fleet_file_named_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    // any other digest: the one the file changes to
    let drone_hash = "0e5a1bd5e1e7d1bd1fd42b1ce8bdd8b8b75d2bb5f4e5e4c8f3bb10d6c0bd4a43";
    let fleet = |hash: &str| {
        format!("[[agents]]\nid = \"{DRONE}\"\nkind = \"drone\"\ntoken_sha256 = \"{hash}\"\n")
    };
    let token = "fleet-drone-token-0123456789";
    let real_hash: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_ne!(real_hash, drone_hash);
    std::fs::write(dir.path().join("fleet.toml"), fleet(&real_hash)).unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[backend]\ntoken = \"backend-secret-0123456789\"\n\
         [fleet]\nfile = \"fleet.toml\"\nwatch_interval_s = 0.0\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("SKYPOST_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["fields"]["message"] == "relay listening" {
                return v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("relay exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut req = format!("ws://{addr}/ws/drone")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    req.headers_mut()
        .insert("x-skypost-agent-id", HeaderValue::from_static(DRONE));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    // the token changes in the file; nothing happens until SIGHUP
    std::fs::write(dir.path().join("fleet.toml"), fleet(drone_hash)).unwrap();
    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(f))) => {
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some((4401, "token changed in the fleet".to_owned())));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
