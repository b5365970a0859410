//! The autopilot's own log, downloaded over the MAVLink log protocol: LOG_REQUEST_LIST →
//! LOG_ENTRY (one per log), LOG_REQUEST_DATA → LOG_DATA (90 bytes each, streamed),
//! LOG_REQUEST_END. Resumable: every piece that arrived is kept; the missing ranges are asked
//! for again, a bounded number of rounds. Only while disarmed: both autopilots stop serving logs
//! when armed, and a download must never load the link in flight, so an arming ends it at once.

use super::*;
use crate::flight::{DownloadedLog, LogFetchError};

/// Bytes per LOG_DATA.
const CHUNK: u32 = 90;
/// How long without an answer (a LOG_ENTRY, the next LOG_DATA) counts as silence.
const SILENCE: Duration = Duration::from_millis(600);
/// Requests of the list before giving up.
const LIST_TRIES: u32 = 3;
/// Rounds over the missing ranges (the first asks for the whole file).
const ROUNDS: u32 = 12;

impl Shared {
    fn log_target(&self) -> Result<(u8, u8), LogFetchError> {
        self.target().ok_or(LogFetchError::Link)
    }

    fn disarmed(&self) -> Result<(), LogFetchError> {
        if self.snapshot.borrow().armed {
            Err(LogFetchError::Armed)
        } else {
            Ok(())
        }
    }

    async fn log_send(&self, msg: MavMessage) -> Result<(), LogFetchError> {
        self.send("LOG_REQUEST", &msg)
            .await
            .map_err(|_| LogFetchError::Link)
    }

    /// The autopilot's newest log: its id and size.
    async fn newest_log(&self) -> Result<(u16, u32), LogFetchError> {
        let (sys, comp) = self.log_target()?;
        for _ in 0..LIST_TRIES {
            self.disarmed()?;
            let mut rx = self.replies.subscribe();
            self.log_send(MavMessage::LOG_REQUEST_LIST(apm::LOG_REQUEST_LIST_DATA {
                start: 0,
                end: 0xffff,
                target_system: sys,
                target_component: comp,
            }))
            .await?;
            let mut newest: Option<(u16, u32)> = None;
            loop {
                match tokio::time::timeout(SILENCE, rx.recv()).await {
                    Ok(Ok(reply)) => {
                        if let (_, MavMessage::LOG_ENTRY(e)) = &*reply {
                            if e.num_logs == 0 {
                                return Err(LogFetchError::NoLogs);
                            }
                            if newest.is_none_or(|(id, _)| e.id >= id) {
                                newest = Some((e.id, e.size));
                            }
                            if e.id == e.last_log_num {
                                return Ok((e.id, e.size));
                            }
                        }
                    }
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        return Err(LogFetchError::Link)
                    }
                    Err(_) => break,
                }
            }
            if let Some(found) = newest {
                return Ok(found);
            }
        }
        Err(LogFetchError::NoAnswer)
    }

    /// Downloads the newest log into memory, resuming over lost pieces.
    pub(super) async fn fetch_newest_log(&self) -> Result<(u16, Vec<u8>, u32), LogFetchError> {
        let (id, size) = self.newest_log().await?;
        let (sys, comp) = self.log_target()?;
        let mut data = vec![0u8; size as usize];
        let pieces = size.div_ceil(CHUNK) as usize;
        let mut have = vec![false; pieces];
        let mut rounds = 0;
        while rounds < ROUNDS {
            let missing = missing_ranges(&have);
            if missing.is_empty() {
                break;
            }
            rounds += 1;
            for (first, end) in missing {
                self.disarmed()?;
                let ofs = first as u32 * CHUNK;
                let count = (end as u32 * CHUNK).min(size) - ofs;
                let mut rx = self.replies.subscribe();
                self.log_send(MavMessage::LOG_REQUEST_DATA(apm::LOG_REQUEST_DATA_DATA {
                    ofs,
                    count,
                    id,
                    target_system: sys,
                    target_component: comp,
                }))
                .await?;
                // take what comes until the range's last piece arrives or the stream goes quiet
                loop {
                    let reply = match tokio::time::timeout(SILENCE, rx.recv()).await {
                        Ok(Ok(reply)) => reply,
                        // fell behind: those pieces are missing, asked for in the next round
                        Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                        Ok(Err(broadcast::error::RecvError::Closed)) => {
                            return Err(LogFetchError::Link)
                        }
                        Err(_) => break,
                    };
                    if self.snapshot.borrow().armed {
                        let _ = self.log_send(end_request(sys, comp)).await;
                        return Err(LogFetchError::Armed);
                    }
                    let (_, MavMessage::LOG_DATA(d)) = &*reply else {
                        continue;
                    };
                    if d.id != id || d.ofs % CHUNK != 0 || d.ofs >= size {
                        continue;
                    }
                    let n = usize::from(d.count).min(CHUNK as usize);
                    let at = d.ofs as usize;
                    let n = n.min(data.len() - at);
                    data[at..at + n].copy_from_slice(&d.data[..n]);
                    let piece = (d.ofs / CHUNK) as usize;
                    // a short piece is complete only at the end of the file
                    if n == CHUNK as usize || at + n == data.len() {
                        have[piece] = true;
                    }
                    if piece + 1 >= end {
                        break;
                    }
                }
            }
        }
        let _ = self.log_send(end_request(sys, comp)).await;
        let missing: usize = missing_ranges(&have).iter().map(|(a, b)| b - a).sum();
        if missing > 0 {
            return Err(LogFetchError::Incomplete {
                missing_bytes: missing as u64 * u64::from(CHUNK),
                rounds,
            });
        }
        Ok((id, data, rounds))
    }
}

fn end_request(sys: u8, comp: u8) -> MavMessage {
    MavMessage::LOG_REQUEST_END(apm::LOG_REQUEST_END_DATA {
        target_system: sys,
        target_component: comp,
    })
}

/// The runs of pieces not yet received, as `(first, end)` piece indices.
fn missing_ranges(have: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < have.len() {
        if have[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < have.len() && !have[i] {
            i += 1;
        }
        out.push((start, i));
    }
    out
}

impl MavlinkFc {
    /// Downloads the autopilot's newest log (its own log of the last flight) into `dir`, as
    /// `<prefix>.bin` (ArduPilot dataflash) or `<prefix>.ulg` (PX4), written atomically. Only
    /// while disarmed: an arming ends the download ([`LogFetchError::Armed`]).
    pub async fn download_newest_log(
        &self,
        dir: &std::path::Path,
        prefix: &str,
    ) -> Result<DownloadedLog, LogFetchError> {
        self.shared.disarmed()?;
        let ext = match self.shared.snapshot.borrow().autopilot {
            Autopilot::Px4 => "ulg",
            _ => "bin",
        };
        let (id, data, rounds) = self.shared.fetch_newest_log().await?;
        let path = dir.join(format!("{prefix}.{ext}"));
        let bytes = data.len() as u64;
        let sha256 = {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(&data);
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let write_path = path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(write_path.parent().unwrap_or(std::path::Path::new(".")))?;
            let tmp = write_path.with_extension("part");
            std::fs::write(&tmp, &data)?;
            std::fs::rename(&tmp, &write_path)
        })
        .await
        .map_err(|e| LogFetchError::Write(e.to_string()))?
        .map_err(|e| LogFetchError::Write(format!("{}: {e}", path.display())))?;
        Ok(DownloadedLog {
            path,
            id,
            bytes,
            sha256,
            rounds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::missing_ranges;

    #[test]
    fn missing_ranges_are_the_runs_of_absent_pieces() {
        assert_eq!(
            missing_ranges(&[true, false, false, true, false]),
            [(1, 3), (4, 5)]
        );
        assert!(missing_ranges(&[true, true]).is_empty());
    }
}
