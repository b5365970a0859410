//! The locker agent over the simulated board on a real pty and its HTTP API on a real socket.

mod common;

use common::*;
use locker_agent::cells::Contents;
use protocol::lockboard::{BoltState, DoorState};
use protocol::ws::{EventType, LockerOp, LockerOutcome, LockerRequest};
use protocol::Envelope;
use sim::lockboard::Fault;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drone_drop_records_the_parcel() {
    let h = Harness::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    h.sync(&[(a, 1), (b, 2)]).await;
    let delivery = Uuid::new_v4();
    let (status, v) = h.open(a, Some(delivery)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["cell_id"], 1);
    assert!(v["opened_at"].is_string());
    // The answer came only after the board's OK: the bolt is pulled.
    assert_eq!(h.board.snapshot().bolt(1), Some(BoltState::Unlocked));

    h.board.open_door(1).await.unwrap();
    h.backend.wait_event(EventType::DoorOpened, 1).await;
    h.board.close_door(1).await.unwrap();
    let loaded = h.backend.wait_event(EventType::ParcelLoaded, 1).await;
    assert_eq!(loaded.delivery_id, Some(delivery));
    assert_eq!(loaded.cell_uuid, Some(a));
    h.wait_board("bolt 1 locked again", |s| {
        s.bolt(1) == Some(BoltState::Locked)
    })
    .await;
    let cell = h
        .locker
        .cells()
        .into_iter()
        .find(|c| c.cell_uuid == a)
        .unwrap();
    assert!(
        matches!(cell.contents, Contents::Parcel { delivery_id: Some(d), .. } if d == delivery)
    );
    assert!(cell.session.is_none());
    // and it is on disk
    let disk = std::fs::read_to_string(h.state_path()).unwrap();
    assert!(disk.contains(&delivery.to_string()), "{disk}");
    assert_eq!(h.board.snapshot().unlocked, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_pickup_over_http_then_reuse_is_refused() {
    let h = Harness::start().await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 3)]).await;
    h.drop_parcel(a, 3).await;
    let order = Uuid::new_v4();
    h.backend.allow("SKYPOST-ORDER-1", a, order);

    let (status, v) = h
        .post("/api/qr/scan", r#"{"qr_data":"SKYPOST-ORDER-1"}"#)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["cell_id"], 3);
    assert_eq!(v["order_id"], order.to_string());
    assert!(h.screen().contains("Cell 3 is open"), "{}", h.screen());

    h.board.open_door(3).await.unwrap();
    h.board.close_door(3).await.unwrap();
    let picked = h.backend.wait_event(EventType::PickedUp, 3).await;
    assert_eq!(picked.order_id, Some(order));
    h.wait_board("bolt 3 locked", |s| s.bolt(3) == Some(BoltState::Locked))
        .await;
    assert!(matches!(h.locker.cells()[0].contents, Contents::Empty));

    let (status, v) = h
        .post("/api/qr/scan", r#"{"qr_data":"SKYPOST-ORDER-1"}"#)
        .await;
    assert_eq!(status, 409, "{v}");
    assert_error(&v, "QR_ALREADY_USED");
    assert!(h.screen().contains("already used"), "{}", h.screen());
    // cell 3 was opened twice in all: the drop and the pickup, nothing else
    assert_eq!(h.board.snapshot().unlocked, vec![3, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_the_seed_error_body() {
    let h = Harness::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    h.sync(&[(a, 1), (b, 2)]).await;

    // no token, wrong token
    let body = format!(r#"{{"cell_uuid":"{a}"}}"#);
    let (s, v) = http(h.addr, "POST", "/api/cells/open", None, &body).await;
    assert_eq!(s, 401);
    assert_error(&v, "UNAUTHORIZED");
    let (s, v) = http(
        h.addr,
        "POST",
        "/api/cells/open",
        Some("wrong-token-wrong-token"),
        &body,
    )
    .await;
    assert_eq!(s, 401);
    assert_error(&v, "UNAUTHORIZED");
    // the scheme is case-insensitive, as at the relay (issue 18)
    let sync = format!(
        r#"{{"cells":[{{"cell_uuid":"{a}","cell_id":1}},{{"cell_uuid":"{b}","cell_id":2}}]}}"#
    );
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {TOKEN}");
        let (s, v) = http_auth(h.addr, "POST", "/api/cells/sync", Some(&auth), &sync).await;
        assert_eq!(s, 200, "{scheme}: {v}");
    }

    // malformed JSON, wrong shape
    let (s, v) = h.post("/api/cells/open", "{not json").await;
    assert_eq!(s, 400);
    assert_error(&v, "MALFORMED_JSON");
    let (s, v) = h.post("/api/cells/open", r#"{"cell_uuid": 5}"#).await;
    assert_eq!(s, 400);
    assert_error(&v, "INVALID_PAYLOAD");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cell_uuid"),
        "{v}"
    );

    // unknown cell
    let (s, v) = h.open(Uuid::new_v4(), None).await;
    assert_eq!(s, 404);
    assert_error(&v, "CELL_NOT_FOUND");

    // cell busy: open for a drop, then again before the door was used
    let (s, _) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 200);
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 409);
    assert_error(&v, "CELL_BUSY");

    // occupied: a drop into a cell that holds a parcel
    h.board.open_door(1).await.unwrap();
    h.board.close_door(1).await.unwrap();
    h.backend.wait_event(EventType::ParcelLoaded, 1).await;
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 409);
    assert_error(&v, "CELL_OCCUPIED");

    // sync that would orphan the parcel in cell 1
    let body = format!(r#"{{"cells":[{{"cell_uuid":"{b}","cell_id":2}}]}}"#);
    let (s, v) = h.post("/api/cells/sync", &body).await;
    assert_eq!(s, 409);
    assert_error(&v, "CELL_OCCUPIED");
    // a sync naming a cell the board does not have
    let body = format!(
        r#"{{"cells":[{{"cell_uuid":"{a}","cell_id":1}},{{"cell_uuid":"{b}","cell_id":9}}]}}"#
    );
    let (s, v) = h.post("/api/cells/sync", &body).await;
    assert_eq!(s, 400);
    assert_error(&v, "INVALID_PAYLOAD");

    // invalid QR: the backend's reason reaches the screen
    h.backend.reject("FAKE-CODE", "This code has expired");
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"FAKE-CODE"}"#).await;
    assert_eq!(s, 403);
    assert_error(&v, "QR_INVALID");
    assert!(
        h.screen().contains("This code has expired"),
        "{}",
        h.screen()
    );
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":""}"#).await;
    assert_eq!(s, 400);
    assert_error(&v, "INVALID_PAYLOAD");

    // close with the door open: the board refuses, we say why
    let (s, _) = h.open(b, None).await;
    assert_eq!(s, 200);
    h.board.open_door(2).await.unwrap();
    let (s, v) = h
        .post("/api/cells/close", &format!(r#"{{"cell_uuid":"{b}"}}"#))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_error(&v, "DOOR_OPEN");

    // unknown route, health needs no token
    let (s, v) = h.post("/api/nope", "{}").await;
    assert_eq!(s, 404);
    assert_error(&v, "NOT_FOUND");
    let (s, v) = http(h.addr, "GET", "/health", None, "").await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["cells"], 2);
    // the board was asked to open only cells 1 and 2, once each
    assert_eq!(h.board.snapshot().unlocked, vec![1, 2]);
}

/// A body over the 256 KiB limit: 413 with the seed's error body, not axum's plain text; the
/// agent goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_in_the_seed_error_body() {
    let h = Harness::start().await;
    let big = format!(r#"{{"qr_data":"{}"}}"#, "x".repeat(300 * 1024));
    let (s, v) = http(h.addr, "POST", "/api/qr/scan", Some(TOKEN), &big).await;
    assert_eq!(s, 413, "{v}");
    assert_error(&v, "MESSAGE_TOO_LARGE");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("256 KiB"),
        "{v}"
    );
    // just under the limit is read and judged on its content
    let fits = format!(r#"{{"qr_data":"{}"}}"#, "x".repeat(200 * 1024));
    let (s, v) = h.post("/api/qr/scan", &fits).await;
    assert_eq!(s, 400, "{v}");
    assert_error(&v, "INVALID_PAYLOAD");
}

/// Every fault the board can have: the open fails with the right status, nothing else opens, and
/// once the fault clears the same agent (no restart) opens the right cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_faults_are_reported_and_recovered() {
    let h = Harness::start().await;
    let cells: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    h.sync(&[(cells[0], 1), (cells[1], 2), (cells[2], 3), (cells[3], 4)])
        .await;

    // Noise before every reply: the driver skips it and the open succeeds.
    h.board.set_fault(Fault::Noise).await.unwrap();
    let (s, v) = h.open(cells[0], None).await;
    assert_eq!(s, 200, "{v}");
    h.board.set_fault(Fault::None).await.unwrap();
    let (s, v) = h
        .post(
            "/api/cells/close",
            &format!(r#"{{"cell_uuid":"{}"}}"#, cells[0]),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(h.locker.board().health_rx().borrow().garbage_lines > 0);

    // A jammed bolt: the board says so, we answer 502 BOARD_ERROR.
    h.board.set_fault(Fault::Jam(2)).await.unwrap();
    let (s, v) = h.open(cells[1], None).await;
    assert_eq!(s, 502, "{v}");
    assert_error(&v, "BOARD_ERROR");
    h.backend.wait_event(EventType::BoardFault, 2).await;
    // ...and the jam took cell 2 out of service until a technician looks (issue 18)
    h.board.set_fault(Fault::None).await.unwrap();
    let (s, v) = h.open(cells[1], None).await;
    assert_eq!(s, 409, "{v}");
    assert_error(&v, "CELL_OUT_OF_SERVICE");
    h.locker.service(2, false).await.unwrap();

    // Silence, and garbage instead of replies: 503 after the travel timeout.
    for fault in [Fault::Silence, Fault::Garbage] {
        h.board.set_fault(fault).await.unwrap();
        let (s, v) = h.open(cells[2], None).await;
        assert_eq!(s, 503, "{fault:?}: {v}");
        assert_error(&v, "BOARD_UNAVAILABLE");
        h.board.set_fault(Fault::None).await.unwrap();
        let mut health = h.locker.board().health_rx();
        tokio::time::timeout(WAIT, health.wait_for(|x| x.ok()))
            .await
            .expect("board health never recovered")
            .unwrap();
        // With garbage for replies the bolt did move, unacknowledged: the agent never reported
        // it open, and its monitor locks it again once the board talks sense.
        h.wait_board("bolt 3 locked", |s| s.bolt(3) == Some(BoltState::Locked))
            .await;
    }

    // A slow board within the travel timeout is just slow.
    h.board
        .set_fault(Fault::Delay(std::time::Duration::from_millis(200)))
        .await
        .unwrap();
    let (s, v) = h.open(cells[2], None).await;
    assert_eq!(s, 200, "{v}");
    h.board.set_fault(Fault::None).await.unwrap();
    let (s, _) = h
        .post(
            "/api/cells/close",
            &format!(r#"{{"cell_uuid":"{}"}}"#, cells[2]),
        )
        .await;
    assert_eq!(s, 200);

    // Unplugged: 503 at once while the port is gone, then back after the replug.
    h.board.unplug().await.unwrap();
    let mut health = h.locker.board().health_rx();
    tokio::time::timeout(WAIT, health.wait_for(|x| !x.connected))
        .await
        .expect("unplug never noticed")
        .unwrap();
    let (s, v) = h.open(cells[3], None).await;
    assert_eq!(s, 503, "{v}");
    assert_error(&v, "BOARD_UNAVAILABLE");
    assert!(h.locker.health().board.detail.is_some());
    h.board.replug().await.unwrap();
    tokio::time::timeout(WAIT, health.wait_for(|x| x.connected))
        .await
        .expect("replug never noticed")
        .unwrap();
    let (s, v) = h.open(cells[3], None).await;
    assert_eq!(s, 200, "{v}");

    // A reboot mid-command: the driver cannot know whether the board got the command, so it
    // sends it once more (bolt commands are idempotent) and the open completes on the board's OK.
    h.board
        .set_fault(Fault::Delay(std::time::Duration::from_millis(300)))
        .await
        .unwrap();
    let open = tokio::spawn({
        let addr = h.addr;
        let body = format!(r#"{{"cell_uuid":"{}"}}"#, cells[1]);
        async move { http(addr, "POST", "/api/cells/open", Some(TOKEN), &body).await }
    });
    h.wait_board("OPEN_2 received", |s| {
        s.received.iter().filter(|l| l.as_str() == "OPEN_2").count() == 2
    })
    .await;
    h.board.set_fault(Fault::None).await.unwrap();
    h.board.reset().await.unwrap();
    let (s, v) = open.await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.board.snapshot().bolt(2), Some(BoltState::Unlocked));
    assert_eq!(
        h.board
            .snapshot()
            .received
            .iter()
            .filter(|l| l.as_str() == "OPEN_2")
            .count(),
        3,
        "sent once more after the reboot"
    );

    // Through all of it, only the cells asked for ever opened (3 twice: once unacknowledged
    // under garbage, then re-locked; once with the slow board).
    assert_eq!(h.board.snapshot().unlocked, vec![1, 3, 3, 4, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_of_a_pickup() {
    let h = Harness::start().await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 2)]).await;
    h.drop_parcel(a, 2).await;
    let order = Uuid::new_v4();
    h.backend.allow("PICKUP-2", a, order);
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"PICKUP-2"}"#).await;
    assert_eq!(s, 200, "{v}");
    h.board.open_door(2).await.unwrap();
    // (the first DoorOpened was the drone's drop)
    h.backend.wait_events(EventType::DoorOpened, 2, 2).await;

    // The agent dies with the door open; the customer closes it while it is down.
    let (dir, board) = h.stop().await;
    board.close_door(2).await.unwrap();
    assert_eq!(board.snapshot().door(2), Some(DoorState::Closed));
    assert_eq!(board.snapshot().bolt(2), Some(BoltState::Unlocked));

    let h = Harness::start_on(dir, board).await;
    // It remembers the open pickup and that the door was opened: the pickup completes.
    let picked = h.backend.wait_event(EventType::PickedUp, 2).await;
    assert_eq!(picked.order_id, Some(order));
    h.wait_board("bolt 2 locked", |s| s.bolt(2) == Some(BoltState::Locked))
        .await;
    assert!(matches!(h.locker.cells()[0].contents, Contents::Empty));
    // and the code stays used across the restart
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"PICKUP-2"}"#).await;
    assert_eq!(s, 409, "{v}");
    assert_error(&v, "QR_ALREADY_USED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locker_requests_over_the_link_get_http_equivalent_answers() {
    let mut h = Harness::start().await;
    let a = Uuid::new_v4();
    let send = |op: LockerOp| {
        let id = Uuid::new_v4();
        (id, Envelope::new(LockerRequest { request_id: id, op }))
    };
    let (id, env) = send(LockerOp::CellsSync(
        protocol::locker_api::CellsSyncRequest {
            cells: vec![protocol::locker_api::CellMapping {
                cell_uuid: a,
                cell_id: 4,
                size: None,
            }],
        },
    ));
    h.inbound.send(env).await.unwrap();
    let r = tokio::time::timeout(WAIT, h.responses.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.request_id, r.status), (id, 200));

    let (id, env) = send(LockerOp::CellsOpen(
        protocol::locker_api::CellsOpenRequest {
            cell_uuid: a,
            delivery_id: Some(Uuid::new_v4()),
        },
    ));
    h.inbound.send(env).await.unwrap();
    let r = tokio::time::timeout(WAIT, h.responses.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.request_id, r.status), (id, 200));
    assert!(matches!(r.outcome, LockerOutcome::CellOpened(ref o) if o.cell_id == 4));

    let (id, env) = send(LockerOp::CellsOpen(
        protocol::locker_api::CellsOpenRequest {
            cell_uuid: Uuid::new_v4(),
            delivery_id: None,
        },
    ));
    h.inbound.send(env).await.unwrap();
    let r = tokio::time::timeout(WAIT, h.responses.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.request_id, r.status), (id, 404));
    assert!(matches!(r.outcome, LockerOutcome::Error(ref e) if e.code == "CELL_NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_nobody_opens_is_locked_again() {
    let dir = tempfile::tempdir().unwrap();
    let board = sim::lockboard::SimBoard::start(sim::lockboard::SimBoardConfig {
        cells: 4,
        travel: std::time::Duration::from_millis(10),
        link: dir.path().join("lockboard"),
    })
    .unwrap();
    let mut settings = common::settings();
    settings.open_timeout = std::time::Duration::from_millis(300);
    let h = Harness::start_with(dir, board, settings).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    h.sync(&[(a, 1), (b, 2)]).await;

    // Nobody comes: after the open timeout the bolt is locked again and the drop abandoned.
    let (s, _) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 200);
    let ev = h.backend.wait_event(EventType::CellClosed, 1).await;
    assert_eq!(ev.reason.as_deref(), Some("door was not opened in time"));
    h.wait_board("bolt 1 locked", |s| s.bolt(1) == Some(BoltState::Locked))
        .await;
    let c = h.locker.cells()[0].clone();
    assert!(c.session.is_none() && matches!(c.contents, Contents::Empty));

    // The backend may also close it itself: a session whose door never opened is abandoned.
    let (s, _) = h.open(b, Some(Uuid::new_v4())).await;
    assert_eq!(s, 200);
    let (s, v) = h
        .post("/api/cells/close", &format!(r#"{{"cell_uuid":"{b}"}}"#))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.board.snapshot().bolt(2), Some(BoltState::Locked));
    let c = h.locker.cells()[1].clone();
    assert!(c.session.is_none() && matches!(c.contents, Contents::Empty));
}

/// Issue 18: failed QR scans are limited per source. A client sending codes the backend
/// rejects is refused (429) after a few, without the backend being asked; the burst is
/// reported; other sources are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_qr_scans_are_rate_limited_per_source() {
    use std::sync::atomic::Ordering;
    let h = Harness::start().await;
    let free = FREE_FAILED_SCANS as usize;
    for i in 0..=free {
        let (s, v) = h
            .post("/api/qr/scan", &format!(r#"{{"qr_data":"RANDOM-{i}"}}"#))
            .await;
        assert_eq!(s, 403, "{v}");
        assert_error(&v, "QR_INVALID");
    }
    assert_eq!(h.backend.validations.load(Ordering::Relaxed), free + 1);
    let burst = h
        .backend
        .events
        .borrow()
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::QrRejected)
        .cloned()
        .unwrap();
    assert!(
        burst.reason.as_deref().unwrap_or("").contains("burst"),
        "{burst:?}"
    );
    for i in 0..20 {
        let (s, v) = h
            .post("/api/qr/scan", &format!(r#"{{"qr_data":"MORE-{i}"}}"#))
            .await;
        assert_eq!(s, 429, "{v}");
        assert_error(&v, "RATE_LIMITED");
    }
    assert_eq!(
        h.backend.validations.load(Ordering::Relaxed),
        free + 1,
        "nothing more reached the backend"
    );
    // Another source (the relay link) is still judged by the backend.
    let f = h.locker.qr_scan("LINK-CODE").await.unwrap_err();
    assert_eq!(f.status, 403);
    assert_eq!(h.backend.validations.load(Ordering::Relaxed), free + 2);
}
