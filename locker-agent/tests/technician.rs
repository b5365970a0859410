//! The technician's commands against the real `locker-agent` binary over its real Unix socket,
//! with the simulated lock board on a pty and an image-file camera: `status`, `cells`,
//! `open`/`close` (refused for a parcel cell without `--force`, logged as events), `test board`,
//! `test camera`, `events`, the socket's permissions, and the exit codes for an agent that is not
//! there (3), one that answers garbage (4) and a refusal (5); STOPPING=1 and a clean exit on
//! SIGTERM.

use crate::common;
use crate::qrgen;

use common::WAIT;
use locker_agent::cells::{CellStore, Purpose};
use protocol::lockboard::BoltState;
use protocol::locker_api::CellMapping;
use serde_json::Value;
use sim::lockboard::{SimBoard, SimBoardConfig};
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use test_support::{socket_mode, start_for_technician};
use uuid::Uuid;

const AGENT: &str = env!("CARGO_BIN_EXE_locker-agent");

fn cli(args: &[&str], socket: &Path) -> Output {
    test_support::cli(AGENT, args, socket)
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn technician_commands_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let board = SimBoard::start(SimBoardConfig {
        cells: 4,
        travel: Duration::from_millis(40),
        link: dir.path().join("lockboard"),
    })
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // Cells 1-3 synced; cell 2 holds a parcel from an earlier drop (written through the same
    // store the agent loads).
    let (c1, c2, c3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    {
        let mut store = CellStore::open(&state.join("cells.json"), 4, 100, true).unwrap();
        let m = |u, n| CellMapping {
            cell_uuid: u,
            cell_id: n,
            size: None,
        };
        store.sync(&[m(c1, 1), m(c2, 2), m(c3, 3)]).unwrap();
        store
            .begin(c2, Purpose::Drop { delivery_id: None })
            .unwrap();
        store.opened(2);
        store.door_opened(2);
        store.complete(2).unwrap();
    }
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    qrgen::frame_with_code("SKYPOST-TECH-1", 4)
        .save(frames.join("a.png"))
        .unwrap();
    let cfg_path = dir.path().join("locker-agent.toml");
    std::fs::write(
        &cfg_path,
        format!(
            r#"
locker_id = "7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f"
state_dir = "{state}"
[board]
path = "{board}"
cells = 4
travel_timeout_s = 2.0
status_timeout_s = 0.5
reopen_interval_s = 0.05
poll_interval_s = 0.1
[http]
listen = "127.0.0.1:0"
token = "test-token-0123456789abcdef"
[camera]
fps = 20.0
second_opinion = false
source = {{ kind = "directory", path = "{frames}" }}
"#,
            state = state.display(),
            board = board.path().display(),
            frames = frames.display(),
        ),
    )
    .unwrap();
    // No agent yet: exit code 3 and a hint, nothing on stdout. Then READY=1 on a stand-in for
    // systemd's socket says the board was reached.
    let mut agent = start_for_technician(AGENT, &cfg_path, dir.path(), WAIT).await;
    let (socket, log_path) = (agent.socket.clone(), agent.log.clone());
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(
        socket_mode(&socket),
        0o660,
        "group-only access to the socket"
    );

    // test camera: a frame saved where asked, and the code in it decoded
    let png = dir.path().join("frame.png");
    let out = cli(
        &["test", "camera", "--json", "--out", png.to_str().unwrap()],
        &socket,
    );
    let v = json(&out);
    assert_eq!(v["codes"], serde_json::json!(["SKYPOST-TECH-1"]), "{v}");
    assert_eq!(v["saved_to"], png.display().to_string());
    assert!(v.get("png_base64").is_none());
    let saved = image::open(&png).unwrap();
    assert_eq!((saved.width(), saved.height()), (640, 480));
    let out = cli(&["test", "camera"], &socket);
    let t = text(&out);
    assert!(t.contains("\"SKYPOST-TECH-1\" (by grid)"), "{t}");
    assert!(t.contains("saved to "), "{t}");

    // status: links, cells summary
    let v = json(&cli(&["status", "--json"], &socket));
    assert_eq!(v["links"]["lock_board"]["ok"], true, "{v}\n{}", log());
    assert_eq!(v["links"]["cloud"]["ok"], false, "no [cloud]: {v}");
    assert_eq!(v["links"]["camera"]["ok"], true, "{v}");
    assert!(v["links"]["camera"]["frames"].as_u64().unwrap() > 0);
    assert_eq!(v["cells"]["mapped"], 3);
    assert_eq!(v["cells"]["holding_parcel"], 1);
    assert_eq!(v["cells"]["open"], 0);
    let t = text(&cli(&["status"], &socket));
    assert!(t.contains("lock board    ok"), "{t}");
    assert!(t.contains("3 mapped: 2 empty, 1 with a parcel"), "{t}");
    assert!(!t.contains('\u{1b}'), "no colour codes off a terminal: {t}");

    // cells: the board's bolts and doors, the record's contents
    let v = json(&cli(&["cells", "--json"], &socket));
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4, "{v}");
    assert_eq!(cells[1]["contents"], "parcel");
    assert_eq!(cells[1]["cell_uuid"], serde_json::json!(c2));
    assert_eq!(cells[3]["contents"], "unmapped");
    assert!(cells
        .iter()
        .all(|c| c["bolt"] == "locked" && c["door"] == "closed"));
    let t = text(&cli(&["cells"], &socket));
    assert!(t.starts_with("cell  bolt"), "{t}");
    assert!(
        t.contains(&format!("2     locked    closed  parcel    -        {c2}")),
        "{t}"
    );

    // open/close: refused for the parcel cell without --force; nothing moved
    let out = cli(&["open", "2"], &socket);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds a parcel") && err.contains("--force"),
        "{err}"
    );
    assert!(board.snapshot().unlocked.is_empty());
    // an empty cell opens and locks again
    let out = cli(&["open", "1"], &socket);
    assert!(out.status.success(), "{out:?}\n{}", log());
    assert_eq!(text(&out), "cell 1 is open\n");
    assert_eq!(board.snapshot().bolt(1), Some(BoltState::Unlocked));
    let out = cli(&["close", "1"], &socket);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(board.snapshot().bolt(1), Some(BoltState::Locked));
    // forced, on the parcel cell
    let out = cli(&["open", "2", "--force"], &socket);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(board.snapshot().unlocked, vec![1, 2]);
    let out = cli(&["close", "2"], &socket);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let out = cli(&["close", "2", "--force"], &socket);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(board.snapshot().bolt(2), Some(BoltState::Locked));
    // a cell the board does not have
    let out = cli(&["open", "9"], &socket);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cells 1 to 4"));
    // service: puts a cell back in service (issue 18); this one never left it
    let t = text(&cli(&["service", "3"], &socket));
    assert!(t.contains("cell 3 was in service"), "{t}");
    let out = cli(&["service", "9"], &socket);
    assert_eq!(out.status.code(), Some(5), "{out:?}");

    // events: each technician action, the forced one marked so
    let v = json(&cli(&["events", "--json"], &socket));
    let actions: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "technician_action")
        .collect();
    let details: Vec<&str> = actions
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert!(
        details.contains(&"technician open (forced: the cell holds a parcel)"),
        "{details:?}"
    );
    assert!(details.contains(&"technician open"), "{details:?}");
    let t = text(&cli(&["events"], &socket));
    assert!(
        t.contains("technician_action  2    technician open (forced"),
        "{t}"
    );
    assert!(log().contains("technician action"), "tracing has them too");

    // test board: a timed round trip
    let out = cli(&["test", "board"], &socket);
    let t = text(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(t.contains("STATUS        answered in "), "{t}");
    assert!(t.contains("4 cells reported"), "{t}");
    let v = json(&cli(&["test", "board", "--json"], &socket));
    assert!(v["round_trip_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["connected"], true);

    // the board unplugged: test board fails with exit 5 and says why
    board.unplug().await.unwrap();
    let out = cli(&["test", "board"], &socket);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(text(&out).contains("STATUS        failed: "), "{out:?}");
    board.replug().await.unwrap();

    // SIGTERM: STOPPING=1 to systemd and a clean exit, as the drone's agent does.
    let pid = agent.child.id().expect("running");
    let status = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let stopping = agent.notify.until(|n| n.starts_with("STOPPING=1")).await;
    assert_eq!(stopping, "STOPPING=1");
    let exit = tokio::time::timeout(WAIT, agent.child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}\n{}", log());
}

/// Something on the socket that does not speak the protocol: exit code 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_reply_is_exit_code_4() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("technician.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut line = String::new();
        tokio::io::BufReader::new(r)
            .read_line(&mut line)
            .await
            .unwrap();
        w.write_all(b"HTTP/1.1 400 what\n").await.unwrap();
        line
    });
    let out = tokio::task::spawn_blocking(move || cli(&["cells"], &socket))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreadable"));
    assert_eq!(server.await.unwrap(), "cells\n");
}
