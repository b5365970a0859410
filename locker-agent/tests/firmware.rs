//! The lock board's own firmware (`locker-agent/firmware/`), as AVR machine code on an emulated
//! ATmega328P (simavr, through `lockboard-harness`), against: the wire protocol as `protocol`
//! documents it (raw lines on the pty), the field driver `hal::lockboard::SerialLockBoard`, and
//! the whole locker agent. The same flows run against `sim lockboard` in `locker.rs`.
//!
//! The firmware and harness are built by `make -C locker-agent/firmware` (`scripts/test` does it
//! first; a test runs it when they are missing). Without the AVR toolchain or simavr these tests
//! say so and pass locally, and fail in CI (`CI=true`).

use crate::common;

use common::*;
use hal::lockboard::{BoardError, BoardEvent, LockBoard, SerialLockBoard};
use protocol::lockboard::{
    BoardErrorCode, BoardReply, BoltState, CellNumber, DoorState, ResetReason,
};
use protocol::ws::EventType;
use sim::firmware_board::{Bolt, FirmwareBoard, FirmwareError, FirmwareSnapshot};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Split};
use uuid::Uuid;

/// Bolt travel in the harness's mechanics, emulated milliseconds.
const TRAVEL_MS: u32 = 300;
/// The firmware's limit on one movement (TRAVEL_MAX_MS in lockboard.cpp).
const TRAVEL_MAX_MS: u32 = 12_000;
/// The firmware's watchdog period (WDTO_500MS).
const WATCHDOG_MS: u32 = 500;
/// Upper bound for any wait on the emulated board: it runs faster than real time on an idle
/// machine, but a loaded CI machine can slow it below.
const FW_WAIT: Duration = Duration::from_secs(60);

async fn start_board(dir: &Path) -> Option<FirmwareBoard> {
    match FirmwareBoard::start(&dir.join("lockboard"), TRAVEL_MS).await {
        Ok(b) => Some(b),
        Err(e @ FirmwareError::Build(_)) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "SKIPPED (fails in CI): {e}\n  needs gcc-avr avr-libc arduino-core-avr simavr libsimavr-dev"
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Waits until the harness has reported `event` (its stdout is read beside the pty, so a reply
/// read from the pty can arrive before the events that led to it are parsed).
async fn seen(board: &FirmwareBoard, event: &str) -> FirmwareSnapshot {
    wait_fw(board, event, |s| s.log.iter().any(|e| e == event)).await;
    board.snapshot()
}

async fn wait_fw(board: &FirmwareBoard, what: &str, f: impl Fn(&FirmwareSnapshot) -> bool) {
    let mut rx = board.watch();
    if tokio::time::timeout(FW_WAIT, rx.wait_for(|s| f(s)))
        .await
        .is_err()
    {
        panic!(
            "board never reached: {what}; events: {:#?}",
            board.snapshot().log
        );
    }
}

/// The pty, opened as a host opens a serial port, line by line.
struct Raw {
    lines: Split<BufReader<tokio::fs::File>>,
    w: tokio::fs::File,
}

impl Raw {
    async fn open(path: &Path) -> Raw {
        // Two handles: tokio's File does one operation at a time, and a read is always pending.
        let r = tokio::fs::File::open(path).await.unwrap();
        let w = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .unwrap();
        Raw {
            lines: BufReader::new(r).split(b'\n'),
            w,
        }
    }

    async fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.w.flush().await.unwrap();
    }

    /// The next line from the board; it must be in the protocol.
    async fn next(&mut self) -> String {
        self.next_within(FW_WAIT)
            .await
            .expect("the board said nothing")
    }

    /// As [`Raw::next`], or `None` if the board says nothing for `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<String> {
        // cancel safe: a line half read stays buffered for the next call
        let line = tokio::time::timeout(wait, self.lines.next_segment())
            .await
            .ok()?
            .unwrap()
            .expect("the pty closed");
        let line = String::from_utf8(line).expect("the board sends ASCII");
        let Some(line) = line.strip_suffix('\r') else {
            panic!("the board ends lines with CRLF: {line:?}");
        };
        let line = line.to_owned();
        if let Err(e) = BoardReply::parse(&line) {
            panic!("the board sent a line outside the protocol: {e}");
        }
        Some(line)
    }

    async fn ask(&mut self, line: &str) -> String {
        self.send(line).await;
        self.next().await
    }
}

fn status_line(unlocked: &[u8]) -> String {
    let cells: Vec<String> = (1..=16)
        .map(|n| {
            let bolt = if unlocked.contains(&n) { 'U' } else { 'L' };
            format!("{n}:{bolt}C")
        })
        .collect();
    format!("STATUS {}", cells.join(","))
}

/// Every command and reply on the raw wire: two bolts at once, STATUS while they travel, doors
/// from the harness, refusals, and bad input of every kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firmware_speaks_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let Some(board) = start_board(dir.path()).await else {
        return;
    };
    let mut raw = Raw::open(board.path()).await;
    // It said READY at power-on, before anyone opened the port; the pty kept it for us.
    let ready = raw.next().await;
    assert!(
        ready.starts_with("READY skypost-lockboard/") && ready.ends_with(" reset=power-on"),
        "{ready}"
    );
    assert_eq!(raw.ask("STATUS").await, status_line(&[]));

    // Two cells at once, and STATUS answered while both bolts travel.
    raw.send("OPEN_1").await;
    raw.send("OPEN_2").await;
    raw.send("STATUS").await;
    // the STATUS reply comes first: it was answered while both bolts were on their way
    let during = raw.next().await;
    assert!(during.starts_with("STATUS 1:"), "{during}");
    assert_eq!(raw.next().await, "OK OPEN_1");
    assert_eq!(raw.next().await, "OK OPEN_2");
    let s = seen(&board, "tx OK OPEN_2").await;
    let (moving2, unlocked1) = (s.first("bolt 2 moving"), s.first("bolt 1 unlocked"));
    assert!(
        moving2.is_some() && moving2 < unlocked1,
        "both bolts travelled together: {:#?}",
        s.log
    );
    assert_eq!(raw.ask("STATUS").await, status_line(&[1, 2]));

    // Doors, moved by the harness, reported as they change (debounced, then at once).
    board.open_door(1).await.unwrap();
    assert_eq!(raw.next().await, "DOOR 1 OPEN");
    let locked = board.open_door(3).await.unwrap_err();
    assert!(matches!(locked, FirmwareError::Refused { .. }), "{locked}");
    assert_eq!(
        raw.ask("CLOSE_1").await,
        "ERR CLOSE_1 DOOR_OPEN close the door first"
    );
    assert!(raw.ask("STATUS").await.starts_with("STATUS 1:UO,2:UC,"));
    board.close_door(1).await.unwrap();
    assert_eq!(raw.next().await, "DOOR 1 CLOSED");
    assert_eq!(raw.ask("CLOSE_1").await, "OK CLOSE_1");
    assert_eq!(raw.ask("CLOSE_2").await, "OK CLOSE_2");
    assert_eq!(
        seen(&board, "tx OK CLOSE_2").await.bolt(1),
        Some(Bolt::Locked)
    );

    // A bolt on its way: the same command joins the movement (one OK for both), the opposite
    // one is refused; a bolt already there is acknowledged at once.
    raw.send("OPEN_3").await;
    raw.send("OPEN_3").await;
    raw.send("CLOSE_3").await;
    assert_eq!(
        raw.next().await,
        "ERR CLOSE_3 BUSY bolt is moving the other way"
    );
    assert_eq!(raw.next().await, "OK OPEN_3");
    assert_eq!(raw.ask("OPEN_3").await, "OK OPEN_3");

    // Refusals and bad input, each answered, none breaking the next command.
    assert_eq!(
        raw.ask("OPEN_17").await,
        "ERR OPEN_17 BAD_CELL board has 16 cells"
    );
    for bad in ["OPEN_0", "CLOSE_256", "OPEN_", "OPEN_01", "OPEN_1x"] {
        assert_eq!(
            raw.ask(bad).await,
            "ERR - BAD_COMMAND bad cell number",
            "{bad}"
        );
    }
    assert_eq!(raw.ask("HELLO").await, "ERR - BAD_COMMAND unknown command");
    // Overlong: far past the firmware's 16-byte line buffer and its 64-byte receive buffer.
    assert_eq!(
        raw.ask(&"OPEN_1".repeat(40)).await,
        "ERR - BAD_COMMAND line too long or not printable"
    );
    board.garble_next_line().await.unwrap();
    assert_eq!(
        raw.ask("STATUS").await,
        "ERR - BAD_COMMAND line too long or not printable"
    );
    assert_eq!(raw.ask("STATUS").await, status_line(&[3]));
    let s = seen(&board, &format!("tx {}", status_line(&[3]))).await;
    assert_eq!(s.unlocked, vec![1, 2, 3]);

    // A host that runs far ahead, against the protocol: 40 commands at once. The 64-byte receive
    // buffer overflows and lines are lost or garbled, but every line the board sends is in the
    // protocol, it never blocks long enough for its watchdog, and it answers once the host waits.
    raw.w
        .write_all("STATUS\n".repeat(40).as_bytes())
        .await
        .unwrap();
    let mut answered = false;
    for _ in 0..20 {
        raw.send("OPEN_3").await;
        while let Some(line) = raw.next_within(Duration::from_secs(2)).await {
            assert!(!line.starts_with("READY"), "restarted under the flood");
            if line == "OK OPEN_3" {
                answered = true;
                break;
            }
        }
        if answered {
            break;
        }
    }
    assert!(answered, "the board never answered after the flood");
    // No coil stayed on past its bolt's travel (plus a scan and the debounce), none shorted.
    assert!(s.shorts.is_empty(), "{:?}", s.shorts);
    for (cell, ms) in &s.energised {
        assert!(
            *ms <= TRAVEL_MS + 10,
            "cell {cell} energised {ms} ms for a {TRAVEL_MS} ms travel"
        );
    }
}

/// The safety limit: a bolt that never reaches its end stop is switched off at the travel time
/// and reported JAMMED, while the board goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jammed_bolt_is_switched_off_at_its_travel_limit() {
    let dir = tempfile::tempdir().unwrap();
    let Some(board) = start_board(dir.path()).await else {
        return;
    };
    let mut raw = Raw::open(board.path()).await;
    raw.next().await; // READY
    board.control("fault jam 5").await.unwrap();
    raw.send("OPEN_5").await;
    // still answering while the coil is on
    assert_eq!(raw.ask("STATUS").await, status_line(&[]));
    assert_eq!(
        raw.next().await,
        "ERR OPEN_5 JAMMED bolt did not reach its end stop"
    );
    wait_fw(&board, "coil 5 off", |s| {
        s.energised.iter().any(|(c, _)| *c == 5)
    })
    .await;
    let s = board.snapshot();
    let ms = s.energised.iter().find(|(c, _)| *c == 5).unwrap().1;
    assert!(
        (TRAVEL_MAX_MS - 5..=TRAVEL_MAX_MS + 10).contains(&ms),
        "energised {ms} ms, limit {TRAVEL_MAX_MS} (the harness samples every emulated ms)"
    );
    assert_eq!(s.bolt(5), Some(Bolt::Locked));
    assert_eq!(raw.ask("STATUS").await, status_line(&[]));
}

/// `hal::lockboard::SerialLockBoard`, the agent's driver, on the firmware: every operation,
/// door events, a garbled line, a watchdog reset mid-open, and the cable pulled and plugged back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_on_the_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let Some(board) = start_board(dir.path()).await else {
        return;
    };
    let serial = SerialLockBoard::spawn(firmware_board_cfg(board.path()));
    let mut events = serial.events();
    let mut health = serial.health();
    tokio::time::timeout(FW_WAIT, health.wait_for(|h| h.connected))
        .await
        .unwrap()
        .unwrap();
    let cell = |n| CellNumber::new(n).unwrap();

    let status = serial.status().await.unwrap();
    assert_eq!(status.len(), 16);
    assert!(status
        .iter()
        .all(|c| c.bolt == BoltState::Locked && c.door == DoorState::Closed));

    serial.open(cell(1)).await.unwrap();
    assert_eq!(
        seen(&board, "tx OK OPEN_1").await.bolt(1),
        Some(Bolt::Unlocked)
    );
    board.open_door(1).await.unwrap();
    wait_event(&mut events, |e| {
        *e == BoardEvent::Door {
            cell: cell(1),
            door: DoorState::Open,
        }
    })
    .await;
    let refused = serial.close(cell(1)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            BoardError::Refused {
                code: BoardErrorCode::DoorOpen,
                ..
            }
        ),
        "{refused}"
    );
    board.close_door(1).await.unwrap();
    wait_event(&mut events, |e| {
        *e == BoardEvent::Door {
            cell: cell(1),
            door: DoorState::Closed,
        }
    })
    .await;
    serial.close(cell(1)).await.unwrap();
    assert_eq!(
        seen(&board, "tx OK CLOSE_1").await.bolt(1),
        Some(Bolt::Locked)
    );
    let refused = serial.open(cell(17)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            BoardError::Refused {
                code: BoardErrorCode::BadCell,
                ..
            }
        ),
        "{refused}"
    );

    // A garbled line: the board says it could not parse it, the driver sends it once more.
    board.garble_next_line().await.unwrap();
    serial.open(cell(2)).await.unwrap();
    let s = seen(&board, "tx OK OPEN_2").await;
    assert_eq!(s.received_count("OPEN_2"), 1, "{:?}", s.received);
    assert!(
        s.received.contains(&"??????".to_owned()),
        "{:?}",
        s.received
    );
    assert_eq!(s.bolt(2), Some(Bolt::Unlocked));

    // The firmware hangs while bolt 4 travels: the watchdog restarts it, it says why, and the
    // driver sends the open again; the bolt goes on from where it stopped.
    board.control("fault hang 4").await.unwrap();
    serial.open(cell(4)).await.unwrap();
    wait_event(&mut events, |e| {
        matches!(
            e,
            BoardEvent::Ready {
                reason: Some(ResetReason::Watchdog),
                ..
            }
        )
    })
    .await;
    assert_eq!(health.borrow().last_reset, Some(ResetReason::Watchdog));
    let s = seen(&board, "tx OK OPEN_4").await;
    assert!(s.resets.iter().any(|r| r == "hang"), "{:?}", s.resets);
    assert_eq!(
        s.received_count("OPEN_4"),
        2,
        "sent once more after the restart"
    );
    assert_eq!(s.bolt(4), Some(Bolt::Unlocked));
    // While the MCU hung, its pins (and so the coil) stayed as they were, until the watchdog.
    for (c, ms) in s.energised.iter().filter(|(c, _)| *c == 4) {
        assert!(*ms <= TRAVEL_MS + WATCHDOG_MS + 20, "cell {c}: {ms} ms");
    }
    assert!(s.shorts.is_empty());

    // Unplugged: the driver notices, refuses at once, and is back after the replug.
    board.unplug().await.unwrap();
    tokio::time::timeout(FW_WAIT, health.wait_for(|h| !h.connected))
        .await
        .expect("unplug never noticed")
        .unwrap();
    let err = serial.open(cell(5)).await.unwrap_err();
    assert!(matches!(err, BoardError::Unavailable(_)), "{err}");
    board.replug().await.unwrap();
    tokio::time::timeout(FW_WAIT, health.wait_for(|h| h.connected))
        .await
        .expect("replug never noticed")
        .unwrap();
    serial.open(cell(5)).await.unwrap();
    assert_eq!(
        seen(&board, "tx OK OPEN_5").await.unlocked,
        vec![1, 2, 4, 5]
    );
    assert_eq!(health.borrow().last_reset, Some(ResetReason::External));
}

async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<BoardEvent>,
    f: impl Fn(&BoardEvent) -> bool,
) {
    tokio::time::timeout(FW_WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if f(&e) => return,
                Ok(_) => {}
                Err(e) => panic!("board events: {e}"),
            }
        }
    })
    .await
    .expect("the event never came");
}

/// The whole locker agent on the firmware: a drone drop, the pickup, and a watchdog reset
/// while a cell opens, after which the agent re-reads the board and the open completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_on_the_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let Some(board) = start_board(dir.path()).await else {
        return;
    };
    let h = Harness::start_any(dir, board, settings(), None).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    h.sync(&[(a, 1), (b, 2)]).await;

    // the drop
    let (s, v) = h.open(a, Some(Uuid::new_v4())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        seen(&h.board, "tx OK OPEN_1").await.bolt(1),
        Some(Bolt::Unlocked)
    );
    h.board.open_door(1).await.unwrap();
    h.board.close_door(1).await.unwrap();
    h.backend.wait_event(EventType::ParcelLoaded, 1).await;
    wait_fw(&h.board, "bolt 1 locked after the drop", |s| {
        s.bolt(1) == Some(Bolt::Locked)
    })
    .await;

    // the pickup
    let order = Uuid::new_v4();
    h.backend.allow("PICKUP-1", a, order);
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"PICKUP-1"}"#).await;
    assert_eq!(s, 200, "{v}");
    h.board.open_door(1).await.unwrap();
    h.board.close_door(1).await.unwrap();
    let picked = h.backend.wait_event(EventType::PickedUp, 1).await;
    assert_eq!(picked.order_id, Some(order));
    wait_fw(&h.board, "bolt 1 locked after the pickup", |s| {
        s.bolt(1) == Some(Bolt::Locked)
    })
    .await;

    // a watchdog reset while cell 2 opens: the firmware hangs as its bolt starts to move
    h.board.control("fault hang 2").await.unwrap();
    let (s, v) = h.open(b, None).await;
    assert_eq!(s, 200, "{v}");
    let snap = seen(&h.board, "hang").await;
    let moving = snap.first("bolt 2 moving");
    assert!(
        moving.is_some() && snap.first("hang") > moving,
        "hung mid-open: {:#?}",
        snap.log
    );
    // the board said why it restarted, and the agent passed it on
    h.backend
        .wait_event_where(EventType::BoardRecovered, |e| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.contains("(watchdog reset)"))
        })
        .await;
    let snap = seen(&h.board, "tx OK OPEN_2").await;
    assert_eq!(snap.bolt(2), Some(Bolt::Unlocked));
    // after the restart the agent read every cell again
    let ready = snap
        .log
        .iter()
        .position(|e| e.starts_with("tx READY") && e.ends_with("reset=watchdog"))
        .unwrap();
    wait_fw(&h.board, "a STATUS after the restart", |s| {
        s.log[ready..].iter().any(|e| e == "rx STATUS")
    })
    .await;

    // The cable pulled: the locker answers at once that the board is unavailable, and opens
    // again once it is plugged back (the board resets on the replug, as an Uno does).
    h.board.unplug().await.unwrap();
    let mut health = h.locker.board().health_rx();
    tokio::time::timeout(FW_WAIT, health.wait_for(|x| !x.connected))
        .await
        .expect("unplug never noticed")
        .unwrap();
    let (s, v) = h.open(a, None).await;
    assert_eq!(s, 503, "{v}");
    assert_error(&v, "BOARD_UNAVAILABLE");
    h.board.replug().await.unwrap();
    tokio::time::timeout(FW_WAIT, health.wait_for(|x| x.connected))
        .await
        .expect("replug never noticed")
        .unwrap();
    let (s, v) = h.open(a, None).await;
    assert_eq!(s, 200, "{v}");

    // only the cells asked for ever opened: 1 for the drop, the pickup and the last open; 2 once
    wait_fw(&h.board, "bolt 1 unlocked a third time", |s| {
        s.unlocked.iter().filter(|c| **c == 1).count() == 3
    })
    .await;
    assert_eq!(h.board.snapshot().unlocked, vec![1, 1, 2, 1]);
    assert!(h.locker.health().board.ok, "{:?}", h.locker.health().board);
}
