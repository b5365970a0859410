//! Serial round trip to the pty lock board: how long from `status()`/`open()` on the driver to
//! the board's reply, through a real pseudo-terminal (the path every command from the relay takes
//! after the agent has it).
//!
//! ```text
//! cargo bench -p locker-agent --bench board_rtt
//! ```
//!
//! `STATUS`: the board answers at once, so this is the driver + pty + line parsing cost.
//! `OPEN`/`CLOSE`: the simulated bolt travel is set to zero, so the same cost for a bolt command.

use hal::lockboard::{LockBoard, SerialLockBoard, SerialLockBoardConfig};
use protocol::lockboard::CellNumber;
use sim::lockboard::{SimBoard, SimBoardConfig};
use std::time::{Duration, Instant};

const ITER: usize = 2000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let board = SimBoard::start(SimBoardConfig {
            cells: 16,
            travel: Duration::ZERO,
            link: dir.path().join("lockboard"),
        })
        .expect("sim board");
        let driver = SerialLockBoard::spawn(SerialLockBoardConfig::new(board.path()));
        let mut health = driver.health();
        health.wait_for(|h| h.connected).await.expect("driver");
        // the READY line and the first exchange warm the path up
        for _ in 0..20 {
            driver.status().await.expect("status");
        }
        println!("# lock board round trip over a pty ({ITER} commands each)");
        println!("| command | median | p90 | p99 |\n|---|---|---|---|");
        let mut t = Vec::with_capacity(ITER);
        for _ in 0..ITER {
            let s = Instant::now();
            driver.status().await.expect("status");
            t.push(s.elapsed());
        }
        row("STATUS (16 cells)", &mut t);
        t.clear();
        let cell = CellNumber::new(5).expect("cell");
        for i in 0..ITER {
            let s = Instant::now();
            if i % 2 == 0 {
                driver.open(cell).await.expect("open");
            } else {
                driver.close(cell).await.expect("close");
            }
            t.push(s.elapsed());
        }
        row("OPEN_5 / CLOSE_5 (zero travel)", &mut t);
    });
}

fn row(name: &str, t: &mut [Duration]) {
    t.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {name} | {:.0} µs | {:.0} µs | {:.0} µs |",
        us(t[t.len() / 2]),
        us(t[t.len() * 9 / 10]),
        us(t[t.len() * 99 / 100])
    );
}
