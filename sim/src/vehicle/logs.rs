//! The autopilot's own log store: one file per flight (arming to disarming), answering the MAVLink
//! log protocol (LOG_REQUEST_LIST → LOG_ENTRY, LOG_REQUEST_DATA → LOG_DATA in 90-byte pieces,
//! LOG_REQUEST_END) the way ArduPilot and PX4 do: only while disarmed (both ignore log requests
//! in flight), ids from 1 (ArduPilot) or 0 (PX4), a LOG_DATA with count 0 past the end.
//!
//! The file is generated, not recorded: a plausible header per flavour (ArduPilot dataflash:
//! `FMT` records; PX4: the ULog magic, flag bits and an info message), then seeded records
//! sized by the flight's duration. Tests compare a download with [`LogStore::files`] byte for
//! byte. `drop` loses LOG_DATA packets (every third one until that many are lost) so a
//! downloader must re-request what is missing.

use super::Flavour;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::MavMessage;
use std::sync::Arc;

/// Bytes per LOG_DATA (the message's `data` field).
pub const CHUNK: usize = 90;

pub struct LogStore {
    flavour: Flavour,
    seed: u64,
    files: Vec<Arc<Vec<u8>>>,
    /// Sim time of the arming, while armed.
    armed_at: Option<f64>,
    /// The download being streamed: log index, next offset, end offset.
    stream: Option<(usize, usize, usize)>,
    drop_left: u32,
    drop_counter: u32,
}

impl LogStore {
    pub fn new(flavour: Flavour, seed: u64) -> Self {
        Self {
            flavour,
            seed,
            files: Vec::new(),
            armed_at: None,
            stream: None,
            drop_left: 0,
            drop_counter: 0,
        }
    }

    /// The stored logs, oldest first (index 0 is id 1 on ArduPilot, id 0 on PX4).
    pub fn files(&self) -> Vec<Arc<Vec<u8>>> {
        self.files.clone()
    }

    /// Lose the next `n` LOG_DATA packets (one in three, so the losses are spread out).
    pub fn drop_packets(&mut self, n: u32) {
        self.drop_left += n;
    }

    /// Follows the arming state: a flight's log is written when it disarms.
    pub fn observe(&mut self, t_s: f64, armed: bool) {
        match (self.armed_at, armed) {
            (None, true) => {
                self.armed_at = Some(t_s);
                // arming stops a download, as both autopilots do
                self.stream = None;
            }
            (Some(since), false) => {
                self.armed_at = None;
                let n = self.files.len() as u64;
                let file = generate(self.flavour, self.seed ^ (n + 1), t_s - since);
                self.files.push(Arc::new(file));
            }
            _ => {}
        }
    }

    fn first_id(&self) -> u16 {
        match self.flavour {
            Flavour::ArduPilot => 1,
            Flavour::Px4 => 0,
        }
    }

    /// One log-protocol message in; the immediate answers out. `None`: not a log message.
    pub fn handle(&mut self, msg: &MavMessage, time_utc: u32) -> Option<Vec<MavMessage>> {
        let armed = self.armed_at.is_some();
        match msg {
            MavMessage::LOG_REQUEST_LIST(r) => {
                if armed {
                    return Some(Vec::new());
                }
                let n = self.files.len() as u16;
                let first = self.first_id();
                let last = first + n.saturating_sub(1);
                let from = r.start.max(first);
                let to = r.end.min(last);
                let mut out = Vec::new();
                if n == 0 {
                    out.push(MavMessage::LOG_ENTRY(apm::LOG_ENTRY_DATA {
                        num_logs: 0,
                        ..Default::default()
                    }));
                }
                for id in from..=to.min(first + n.saturating_sub(1)) {
                    if n == 0 {
                        break;
                    }
                    let f = &self.files[usize::from(id - first)];
                    out.push(MavMessage::LOG_ENTRY(apm::LOG_ENTRY_DATA {
                        time_utc,
                        size: f.len() as u32,
                        id,
                        num_logs: n,
                        last_log_num: last,
                    }));
                }
                Some(out)
            }
            MavMessage::LOG_REQUEST_DATA(r) => {
                if armed {
                    return Some(Vec::new());
                }
                let first = self.first_id();
                let Some(index) =
                    r.id.checked_sub(first)
                        .map(usize::from)
                        .filter(|i| *i < self.files.len())
                else {
                    return Some(Vec::new());
                };
                let size = self.files[index].len();
                let ofs = r.ofs as usize;
                let end = ofs.saturating_add(r.count as usize).min(size);
                if ofs >= size {
                    // past the end: one empty piece says so
                    self.stream = None;
                    return Some(vec![MavMessage::LOG_DATA(apm::LOG_DATA_DATA {
                        ofs: r.ofs,
                        id: r.id,
                        count: 0,
                        data: [0; CHUNK],
                    })]);
                }
                self.stream = Some((index, ofs, end));
                Some(Vec::new())
            }
            MavMessage::LOG_REQUEST_END(_) => {
                self.stream = None;
                Some(Vec::new())
            }
            MavMessage::LOG_ERASE(_) => {
                if !armed {
                    self.files.clear();
                }
                Some(Vec::new())
            }
            _ => None,
        }
    }

    /// Up to `max` LOG_DATA packets of the download in progress (some lost, by `drop`).
    pub fn stream(&mut self, max: usize) -> Vec<MavMessage> {
        let mut out = Vec::new();
        let first = self.first_id();
        while out.len() < max {
            let Some((index, ofs, end)) = self.stream else {
                break;
            };
            if ofs >= end {
                self.stream = None;
                break;
            }
            let f = &self.files[index];
            let n = (end - ofs).min(CHUNK);
            let mut data = [0u8; CHUNK];
            data[..n].copy_from_slice(&f[ofs..ofs + n]);
            self.stream = Some((index, ofs + n, end));
            if self.drop_left > 0 {
                self.drop_counter += 1;
                if self.drop_counter.is_multiple_of(3) {
                    self.drop_left -= 1;
                    continue;
                }
            }
            out.push(MavMessage::LOG_DATA(apm::LOG_DATA_DATA {
                ofs: ofs as u32,
                id: first + index as u16,
                count: n as u8,
                data,
            }));
        }
        out
    }
}

/// A flight's log: the flavour's header, then seeded records, 32 kB plus 2 kB per second flown
/// (at most 512 kB).
fn generate(flavour: Flavour, seed: u64, flown_s: f64) -> Vec<u8> {
    let size = (32_768.0 + 2048.0 * flown_s.max(0.0)).min(524_288.0) as usize;
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut f = Vec::with_capacity(size);
    match flavour {
        Flavour::ArduPilot => {
            // dataflash: the FMT record that describes FMT itself, then one for the records below
            fmt_record(
                &mut f,
                128,
                89,
                "FMT",
                "BBnNZ",
                "Type,Length,Name,Format,Columns",
            );
            fmt_record(&mut f, 200, 3 + 8 + 16, "SIM", "QQQ", "TimeUS,A,B");
            let mut t_us = 0u64;
            while f.len() + 27 <= size {
                f.extend_from_slice(&[0xA3, 0x95, 200]);
                f.extend_from_slice(&t_us.to_le_bytes());
                f.extend_from_slice(&next().to_le_bytes());
                f.extend_from_slice(&next().to_le_bytes());
                t_us += 2500;
            }
        }
        Flavour::Px4 => {
            // ULog: magic, version 1, the start time in microseconds
            f.extend_from_slice(b"ULog\x01\x12\x35\x01");
            f.extend_from_slice(&0u64.to_le_bytes());
            // flag bits ('B'): 40 bytes of compat/incompat flags and appended offsets, all zero
            f.extend_from_slice(&40u16.to_le_bytes());
            f.push(b'B');
            f.extend_from_slice(&[0u8; 40]);
            // an info message ('I'): key "char[8] sys_name" = "PX4_SITL"
            let key = b"char[8] sys_name";
            let value = b"PX4_SITL";
            f.extend_from_slice(&((1 + key.len() + value.len()) as u16).to_le_bytes());
            f.push(b'I');
            f.push(key.len() as u8);
            f.extend_from_slice(key);
            f.extend_from_slice(value);
            // logged data ('D': 16 seeded bytes each)
            while f.len() + 19 <= size {
                f.extend_from_slice(&16u16.to_le_bytes());
                f.push(b'D');
                f.extend_from_slice(&next().to_le_bytes());
                f.extend_from_slice(&next().to_le_bytes());
            }
        }
    }
    f
}

fn fmt_record(f: &mut Vec<u8>, kind: u8, len: u8, name: &str, format: &str, columns: &str) {
    f.extend_from_slice(&[0xA3, 0x95, 128, kind, len]);
    let mut field = |s: &str, n: usize| {
        let mut b = s.as_bytes().to_vec();
        b.resize(n, 0);
        f.extend_from_slice(&b);
    };
    field(name, 4);
    field(format, 16);
    field(columns, 64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flown(flavour: Flavour) -> LogStore {
        let mut s = LogStore::new(flavour, 7);
        s.observe(0.0, false);
        s.observe(1.0, true);
        s.observe(21.0, false);
        s
    }

    #[test]
    fn a_flight_makes_one_log_with_the_flavours_header() {
        let s = flown(Flavour::ArduPilot);
        let f = s.files();
        assert_eq!(f.len(), 1);
        assert_eq!(&f[0][..3], &[0xA3, 0x95, 0x80]);
        assert_eq!(f[0].len() / 1000, (32_768 + 2048 * 20) / 1000);
        let p = flown(Flavour::Px4).files();
        assert_eq!(&p[0][..7], b"ULog\x01\x12\x35");
    }

    #[test]
    fn lists_and_streams_the_log_and_refuses_while_armed() {
        let mut s = flown(Flavour::Px4);
        let list = s
            .handle(
                &MavMessage::LOG_REQUEST_LIST(apm::LOG_REQUEST_LIST_DATA {
                    start: 0,
                    end: 0xffff,
                    ..Default::default()
                }),
                0,
            )
            .unwrap();
        let MavMessage::LOG_ENTRY(e) = &list[0] else {
            panic!("{list:?}")
        };
        assert_eq!(
            (e.id, e.num_logs, e.size as usize),
            (0, 1, s.files()[0].len())
        );
        s.handle(
            &MavMessage::LOG_REQUEST_DATA(apm::LOG_REQUEST_DATA_DATA {
                id: 0,
                ofs: 0,
                count: u32::MAX,
                ..Default::default()
            }),
            0,
        );
        s.drop_packets(5);
        let mut got = vec![0u8; s.files()[0].len()];
        let mut seen = 0;
        loop {
            let batch = s.stream(100);
            if batch.is_empty() {
                break;
            }
            for m in batch {
                let MavMessage::LOG_DATA(d) = m else { panic!() };
                let (o, n) = (d.ofs as usize, usize::from(d.count));
                got[o..o + n].copy_from_slice(&d.data[..n]);
                seen += n;
            }
        }
        assert_eq!(seen, s.files()[0].len() - 5 * CHUNK, "five packets lost");
        // armed: no answer at all
        s.observe(100.0, true);
        let r = s.handle(
            &MavMessage::LOG_REQUEST_LIST(apm::LOG_REQUEST_LIST_DATA::default()),
            0,
        );
        assert_eq!(r, Some(Vec::new()));
    }
}
