//! Issue 18: a locker whose disk fails (full, read-only, a write that fails) and a bolt that
//! jams. Over the simulated board on a real pty and the HTTP API on a real socket; the disk
//! "fills" by putting a directory where the state file's temporary copy goes (so every save of
//! the cells fails the way a full disk makes it fail: at the write), and the outbox refuses events.

use crate::common;

use common::*;
use locker_agent::cells::Contents;
use protocol::lockboard::BoltState;
use protocol::ws::EventType;
use uuid::Uuid;

/// Defect 2: cell 4 opened for a drone, the disk fills, the door opens and closes. The bolt must
/// still lock (the board is kept safe), the locker says `degraded` and refuses new opens, and once
/// writing works again the parcel is recorded and every event reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_forgets_a_parcel() {
    let h = Harness::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    h.sync(&[(a, 4), (b, 2)]).await;
    let delivery = Uuid::new_v4();
    let (s, v) = h.open(a, Some(delivery)).await;
    assert_eq!(s, 200, "{v}");

    h.disk_full(true);
    h.board.open_door(4).await.unwrap();
    h.board.close_door(4).await.unwrap();
    // The board is kept safe whatever the disk does: the parcel is locked in.
    h.wait_board("bolt 4 locked on the parcel", |s| {
        s.bolt(4) == Some(BoltState::Locked)
    })
    .await;
    let health = h.wait_health("degraded").await;
    assert_eq!(health["storage"]["ok"], false, "{health}");
    // Fail closed: nothing new opens while nothing can be recorded.
    let (s, v) = h.open(b, Some(Uuid::new_v4())).await;
    assert_eq!(s, 503, "{v}");
    assert_error(&v, "STORAGE_FAILED");
    assert_eq!(h.board.snapshot().bolt(2), Some(BoltState::Locked));

    // The disk is back: what happened at the board is recorded and reported.
    h.disk_full(false);
    let loaded = h.backend.wait_event(EventType::ParcelLoaded, 4).await;
    assert_eq!(loaded.delivery_id, Some(delivery));
    h.backend.wait_event(EventType::DoorOpened, 4).await;
    h.backend.wait_event(EventType::DoorClosed, 4).await;
    h.wait_health("ok").await;
    let disk = std::fs::read_to_string(h.state_path()).unwrap();
    assert!(disk.contains(&delivery.to_string()), "{disk}");

    // And a restart (kill -9) still knows the parcel: no second parcel goes into cell 4.
    let (dir, board) = h.stop().await;
    let h = Harness::start_on(dir, board).await;
    assert!(matches!(
        h.locker.cells().iter().find(|c| c.number == 4).unwrap().contents,
        Contents::Parcel { delivery_id: Some(d), .. } if d == delivery
    ));
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 409, "{v}");
    assert_error(&v, "CELL_OCCUPIED");
    assert_eq!(h.board.snapshot().unlocked, vec![4]);
}

/// Defect 2, the issue's exact path: the agent is killed while the disk is still full, so the
/// file on disk says "drop open, door never seen open" while the parcel is locked in. After the
/// restart the agent cannot know whether the parcel went in: it must never offer the cell empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_unrecorded_door_use_never_offers_the_cell_empty() {
    let h = Harness::start().await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 4)]).await;
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 200, "{v}");
    h.disk_full(true);
    h.board.open_door(4).await.unwrap();
    h.board.close_door(4).await.unwrap();
    h.wait_board("bolt 4 locked", |s| s.bolt(4) == Some(BoltState::Locked))
        .await;
    let (dir, board) = h.stop().await;
    std::fs::remove_dir(dir.path().join("cells.tmp")).unwrap();

    let h = Harness::start_on(dir, board).await;
    let fault = h.backend.wait_event(EventType::BoardFault, 4).await;
    assert!(
        fault.reason.as_deref().unwrap_or("").contains("parcel"),
        "{fault:?}"
    );
    let cell = h
        .locker
        .cells()
        .into_iter()
        .find(|c| c.number == 4)
        .unwrap();
    assert!(cell.out_of_service.is_some(), "{cell:?}");
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 409, "{v}");
    assert_error(&v, "CELL_OUT_OF_SERVICE");
    assert_eq!(h.board.snapshot().unlocked, vec![4]);
    h.wait_health("degraded").await;
}

/// Weaker spot: a close that locked the bolt but could not be recorded says what happened at
/// the board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_cannot_be_recorded_says_the_bolt_is_locked() {
    let h = Harness::start().await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 3)]).await;
    let (s, v) = h.open(a, None).await;
    assert_eq!(s, 200, "{v}");
    h.disk_full(true);
    let (s, v) = h
        .post("/api/cells/close", &format!(r#"{{"cell_uuid":"{a}"}}"#))
        .await;
    assert_eq!(h.board.snapshot().bolt(3), Some(BoltState::Locked));
    assert_eq!(s, 503, "{v}");
    assert_error(&v, "STORAGE_FAILED");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("locked"), "{msg}");
}

/// Defect 3: a drone drop into cell 1, the door opened, the bolt jams, the door closes. The
/// parcel is behind an unlocked door: the backend hears it with the board's words, `/health`
/// is degraded, the cell is out of service, and the agent retries a bounded number of times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_that_will_not_lock_on_a_loaded_cell_is_reported() {
    let h = Harness::start().await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 1)]).await;
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 200, "{v}");
    h.board.open_door(1).await.unwrap();
    h.backend.wait_event(EventType::DoorOpened, 1).await;
    h.board
        .set_fault(sim::lockboard::Fault::Jam(1))
        .await
        .unwrap();
    h.board.close_door(1).await.unwrap();

    let fault = h.backend.wait_event(EventType::BoardFault, 1).await;
    let reason = fault.reason.unwrap_or_default();
    assert!(reason.contains("JAMMED"), "the board's words: {reason}");
    // the parcel is in, whatever the bolt does
    h.backend.wait_event(EventType::ParcelLoaded, 1).await;
    let health = h.wait_health("degraded").await;
    assert!(health.to_string().contains("out of service"), "{health}");
    let cell = h.locker.cells()[0].clone();
    assert!(cell.out_of_service.is_some(), "{cell:?}");
    assert!(cell.contents.holds_parcel());

    // Bounded: after the last attempt it says it gave up, and sends no more CLOSE_1.
    let gave_up = h.backend.wait_events(EventType::BoardFault, 1, 2).await;
    assert!(
        gave_up.reason.as_deref().unwrap_or("").contains("gave up"),
        "{gave_up:?}"
    );
    let closes = |h: &Harness| {
        h.board
            .snapshot()
            .received
            .iter()
            .filter(|l| l.as_str() == "CLOSE_1")
            .count()
    };
    assert_eq!(closes(&h), LOCK_ATTEMPTS);
    // several polls later, still no more
    for _ in 0..3 {
        h.locker.poll().await;
    }
    assert_eq!(closes(&h), LOCK_ATTEMPTS);
    let views = h.locker.cell_views().await.unwrap();
    assert!(
        views[0].out_of_service.is_some(),
        "`locker-agent cells` shows it"
    );

    // A technician frees the bolt and puts the cell back: it locks at once and health is ok.
    h.board
        .set_fault(sim::lockboard::Fault::None)
        .await
        .unwrap();
    h.locker.service(1, false).await.unwrap();
    h.wait_board("bolt 1 locked", |s| s.bolt(1) == Some(BoltState::Locked))
        .await;
    h.wait_health("ok").await;
    assert!(h.locker.cells()[0].out_of_service.is_none());
}

/// Defect 3: a jam on open takes the cell out of service until a technician's `service N`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jam_on_open_takes_the_cell_out_of_service() {
    let h = Harness::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    h.sync(&[(a, 2), (b, 3)]).await;
    h.board
        .set_fault(sim::lockboard::Fault::Jam(2))
        .await
        .unwrap();
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 502, "{v}");
    assert_error(&v, "BOARD_ERROR");
    let fault = h.backend.wait_event(EventType::BoardFault, 2).await;
    assert!(
        fault.reason.as_deref().unwrap_or("").contains("JAMMED"),
        "{fault:?}"
    );
    h.wait_health("degraded").await;
    h.board
        .set_fault(sim::lockboard::Fault::None)
        .await
        .unwrap();
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 409, "{v}");
    assert_error(&v, "CELL_OUT_OF_SERVICE");
    // the other cells work
    let (s, v) = h.open(b, None).await;
    assert_eq!(s, 200, "{v}");

    h.locker.service(2, false).await.unwrap();
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 200, "{v}");
}
