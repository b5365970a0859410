//! After each flight, the autopilot's own log (`[logs] fetch_autopilot_log`): once the vehicle
//! has disarmed, download its newest log into the logs folder and report `flight_log_ready` with
//! the file, its size and SHA-256. Only while disarmed (the hal stops at an arming); a failed
//! download is tried again a bounded number of times, backing off, then given up (logged).

use crate::machine::Event;
use hal::flight::mavlink::MavlinkFc;
use hal::flight::{FlightController, LogFetchError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// Wait after the disarm before asking: the autopilot closes its log first.
const SETTLE: Duration = Duration::from_secs(2);
/// Downloads tried per flight, the wait doubling from the first.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_secs(2);

/// Runs for the agent's life: one download after each flight.
pub async fn fetch_after_flights(fc: Arc<MavlinkFc>, dir: PathBuf, report: impl Fn(Event)) {
    let mut snap = fc.snapshot();
    loop {
        // a flight: armed, then disarmed
        if snap.wait_for(|s| s.armed).await.is_err() {
            return;
        }
        if snap.wait_for(|s| !s.armed).await.is_err() {
            return;
        }
        let landed_at: chrono::DateTime<chrono::Utc> = SystemTime::now().into();
        let prefix = format!("autopilot-{}", landed_at.format("%Y%m%dT%H%M%SZ"));
        tokio::time::sleep(SETTLE).await;
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match fc.download_newest_log(&dir, &prefix).await {
                Ok(log) => {
                    let name = log.path.display().to_string();
                    info!(path = %name, bytes = log.bytes, sha256 = %log.sha256, rounds = log.rounds, "autopilot log downloaded");
                    report(Event::FlightLogReady(format!(
                        "{name}: {} bytes, sha256 {}",
                        log.bytes, log.sha256
                    )));
                    break;
                }
                // armed again: this flight's log waits for the next landing
                Err(LogFetchError::Armed) => {
                    info!("autopilot log download stopped: the vehicle armed");
                    break;
                }
                Err(error) if attempt < ATTEMPTS => {
                    warn!(%error, attempt, retry_in = ?wait, "autopilot log download failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(error) => {
                    warn!(%error, attempts = ATTEMPTS, "autopilot log not downloaded; given up for this flight");
                }
            }
        }
    }
}
