//! The cheap gate in front of the decoders: finder patterns, and three of them laid out as a QR
//! code lays them out.
//!
//! A finder pattern is three concentric squares (dark 7×7, light 5×5, dark 3×3 modules), so every
//! line through its centre crosses dark:light:dark:light:dark in the ratio 1:1:3:1:1. Text, door
//! gaps, vents and barcodes produce that ratio along a row all the time, so a row hit alone means
//! little. Here a row hit must also hold down the column and along a diagonal through its centre
//! (a square ring, not a letter or a bar), hits on neighbouring rows merge into one candidate with
//! a module size, and a frame counts as "a code is here" only when three candidates of consistent
//! module size stand at a right angle with equal legs (the top-left, top-right and bottom-left
//! finders) at a distance a QR version allows (14 to 170 modules).
//!
//! At 1.3-2 px per module a finder's rings are too thin for the row-and-diagonal steps: row hits
//! that hold down the column but fail there are kept as *weak*, and where they cluster the region
//! is scanned again at twice the size ([`FinderScanner::scan`]; idle scenes rarely have them).
//!
//! Thresholds are local: the frame's 8×8-pixel block means, averaged over 5×5 blocks and
//! interpolated, minus a margin from the local contrast (flat areas have no dark pixels). Large
//! modules are found on the half- and quarter-size copies, where the same window is wider.

use image::GrayImage;

/// Side of the blocks the local statistics are taken over, pixels.
const B: usize = 8;
// `stats` sums a block row's pixels per column in a u16
const _: () = assert!(B * 255 <= u16::MAX as usize);
/// Blocks either side in the threshold window (5×5 blocks = 40 px).
const WIN: usize = 2;
/// Local contrast (grey levels) below which nothing counts as dark: a flat area with noise.
const MIN_CONTRAST: f32 = 14.0;
/// The threshold of a flat block: nothing is darker (finite, so it interpolates).
const FLAT: f32 = -1000.0;

/// One finder pattern candidate, in full-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finder {
    pub x: f32,
    pub y: f32,
    /// Estimated module size, pixels.
    pub module: f32,
    /// Rows whose hit confirmed it.
    pub hits: u32,
}

/// Three finders in a QR code's layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sighting {
    /// The finder at the right angle (the code's top-left), and the other two.
    pub corner: Finder,
    pub a: Finder,
    pub b: Finder,
    pub module: f32,
    /// The code with its quiet zone and a margin, clipped to the frame: `[x0, y0, x1, y1)`.
    pub bbox: [u32; 4],
}

impl Sighting {
    /// Modules between the corner's and the other finders' centres (14 for version 1, +4 per
    /// version).
    pub fn span_modules(&self) -> f32 {
        let d = |f: &Finder| (f.x - self.corner.x).hypot(f.y - self.corner.y);
        (d(&self.a) + d(&self.b)) / 2.0 / self.module
    }

    /// A copy of the frame around the code (`bbox`): what the crop decoders and the stack read.
    pub fn crop(&self, frame: &GrayImage) -> GrayImage {
        let [x0, y0, x1, y1] = self.bbox;
        image::imageops::crop_imm(frame, x0, y0, x1 - x0, y1 - y0).to_image()
    }
}

/// What the gate saw in one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateView {
    /// Confirmed finder candidates (row, column and diagonal), all scales.
    pub finders: Vec<Finder>,
    /// The best three-finder layout, if any.
    pub sighting: Option<Sighting>,
}

/// Block statistics and scan buffers, kept between frames (no allocation per frame).
#[derive(Debug, Default)]
pub struct FinderScanner {
    bw: usize,
    bh: usize,
    /// Block means of the image being scanned.
    means: Vec<f32>,
    /// The full-size frame's block means (what callers compare frames by).
    thumb: Vec<f32>,
    thumb_size: (usize, usize),
    /// `look` ran on the frame about to be scanned: its full-size statistics are ready.
    looked: bool,
    lo: Vec<u8>,
    hi: Vec<u8>,
    /// Per block: the grey level under which a pixel is dark ([`FLAT`] where flat).
    dark_below: Vec<f32>,
    tmp: Vec<f32>,
    /// Block minima and maxima over the window along the row (the first half of `thresholds`).
    lo_row: Vec<u8>,
    hi_row: Vec<u8>,
    row_thr: Vec<f32>,
    /// One row's dark mask (1 = dark), its threshold per pixel, and where its runs end.
    row_dark: Vec<u8>,
    row_level: Vec<u8>,
    row_ends: Vec<u32>,
    /// Per pixel column over one block row: sum, min and max (`stats`' accumulators).
    col_sum: Vec<u16>,
    col_lo: Vec<u8>,
    col_hi: Vec<u8>,
    half: Option<GrayImage>,
    quarter: Option<GrayImage>,
    /// Full-size row hits of a small ring (under [`WEAK_TOTAL`] px across) that held down the
    /// column but not along the row or the diagonal: at 1.3-2 px per module a finder's rings
    /// are too thin for those steps. Where they cluster, the gate looks again at twice the size.
    weak: Vec<[f32; 2]>,
}

/// A row hit narrower than this (pixels, the whole 1:1:3:1:1) is a small ring (modules under
/// about 2 px).
const WEAK_TOTAL: u32 = 16;
/// Side of the region (pixels) weak hits of one code can span: a code of 100 px and its finders.
const WEAK_SPAN: f32 = 140.0;
/// Regions looked at again per frame, at most.
const WEAK_REGIONS: usize = 2;

impl FinderScanner {
    /// Scans `frame` at full, half and quarter size (stopping at the first scale that shows a
    /// code), and returns the candidates and the best layout.
    pub fn scan(&mut self, frame: &GrayImage) -> GateView {
        let mut finders = Vec::new();
        if !std::mem::take(&mut self.looked) {
            self.look(frame);
        }
        self.weak.clear();
        self.scan_one(frame, 1.0, &mut finders);
        let mut sighting = layout(&finders, frame.dimensions());
        if sighting.is_none() && self.noisy() {
            // sensor noise breaks the runs: the same scan on a 3×3 box-smoothed copy
            let smooth = box3(frame);
            self.stats(&smooth);
            self.scan_one(&smooth, 1.0, &mut finders);
            sighting = layout(&finders, frame.dimensions());
        }
        if sighting.is_none() && frame.width() >= 64 && frame.height() >= 64 {
            let h = super::half(frame);
            self.scan_one(&h, 2.0, &mut finders);
            sighting = layout(&finders, frame.dimensions());
            if sighting.is_none() && h.width() >= 64 && h.height() >= 64 {
                let q = super::half(&h);
                self.scan_one(&q, 4.0, &mut finders);
                sighting = layout(&finders, frame.dimensions());
                self.quarter = Some(q);
            }
            self.half = Some(h);
        }
        if sighting.is_none() && !self.weak.is_empty() {
            sighting = self.rescan_weak(frame, &mut finders);
        }
        GateView { finders, sighting }
    }

    /// Takes `frame`'s 8×8-block means (its thumbnail, [`Self::thumbnail`]); a [`Self::scan`]
    /// of the same frame next reuses them.
    pub fn look(&mut self, frame: &GrayImage) {
        self.stats(frame);
        self.thumb.clear();
        self.thumb.extend_from_slice(&self.means);
        self.thumb_size = (self.bw, self.bh);
        self.looked = true;
    }

    /// Block means of the last frame looked at, at full size (`bw` × `bh`): its thumbnail.
    pub fn thumbnail(&self) -> (&[f32], usize, usize) {
        (&self.thumb, self.thumb_size.0, self.thumb_size.1)
    }

    /// Whether the frame is noisy: even its flattest blocks (the 10th percentile of max − min
    /// over 8×8) span more than a clean sensor's noise.
    fn noisy(&self) -> bool {
        if self.lo.is_empty() {
            return false;
        }
        let mut spans: Vec<u8> = self
            .lo
            .iter()
            .zip(&self.hi)
            .map(|(l, h)| h.saturating_sub(*l))
            .collect();
        let k = spans.len() / 10;
        let (_, p10, _) = spans.select_nth_unstable(k);
        *p10 > 48
    }

    /// Block means, minima and maxima. The 8 rows of a block row are first folded column by
    /// column (element-wise over the row, which the compiler vectorises), then each block's 8
    /// columns: far fewer steps than block by block.
    fn stats(&mut self, img: &GrayImage) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (bw, bh) = (w / B, h / B);
        self.bw = bw;
        self.bh = bh;
        let n = bw * bh;
        self.means.clear();
        self.means.resize(n, 0.0);
        self.lo.clear();
        self.lo.resize(n, 255);
        self.hi.clear();
        self.hi.resize(n, 0);
        let raw = img.as_raw();
        let cols = bw * B;
        for v in [&mut self.col_lo, &mut self.col_hi] {
            v.resize(cols, 0);
        }
        self.col_sum.resize(cols, 0);
        let (sum, lo, hi) = (
            &mut self.col_sum[..cols],
            &mut self.col_lo[..cols],
            &mut self.col_hi[..cols],
        );
        for by in 0..bh {
            sum.fill(0);
            lo.fill(255);
            hi.fill(0);
            for y in by * B..(by + 1) * B {
                let row = &raw[y * w..y * w + cols];
                for ((s, &v), (l, u)) in sum
                    .iter_mut()
                    .zip(row)
                    .zip(lo.iter_mut().zip(hi.iter_mut()))
                {
                    *s += u16::from(v);
                    *l = (*l).min(v);
                    *u = (*u).max(v);
                }
            }
            let at = by * bw;
            for (bx, ((s, l), u)) in sum
                .chunks_exact(B)
                .zip(lo.chunks_exact(B))
                .zip(hi.chunks_exact(B))
                .enumerate()
            {
                let total: u32 = s.iter().map(|&v| u32::from(v)).sum();
                self.means[at + bx] = total as f32 / (B * B) as f32;
                self.lo[at + bx] = l.iter().copied().min().unwrap_or(255);
                self.hi[at + bx] = u.iter().copied().max().unwrap_or(0);
            }
        }
    }

    /// The dark threshold per block: local mean over 5×5 blocks less a margin from the local
    /// contrast (max − min over the same window).
    fn thresholds(&mut self) {
        let (bw, bh) = (self.bw, self.bh);
        let n = bw * bh;
        self.tmp.clear();
        self.tmp.resize(n, 0.0);
        self.dark_below.clear();
        self.dark_below.resize(n, 0.0);
        // box mean, separable
        for by in 0..bh {
            for bx in 0..bw {
                let (a, b) = (bx.saturating_sub(WIN), (bx + WIN + 1).min(bw));
                let s: f32 = self.means[by * bw + a..by * bw + b].iter().sum();
                self.tmp[by * bw + bx] = s / (b - a) as f32;
            }
        }
        // min and max over the window, separable too: along the row first
        self.lo_row.clear();
        self.hi_row.clear();
        for by in 0..bh {
            let (lo, hi) = (
                &self.lo[by * bw..(by + 1) * bw],
                &self.hi[by * bw..(by + 1) * bw],
            );
            for bx in 0..bw {
                let (a, b) = (bx.saturating_sub(WIN), (bx + WIN + 1).min(bw));
                self.lo_row
                    .push(lo[a..b].iter().copied().min().unwrap_or(255));
                self.hi_row
                    .push(hi[a..b].iter().copied().max().unwrap_or(0));
            }
        }
        for by in 0..bh {
            let (a, b) = (by.saturating_sub(WIN), (by + WIN + 1).min(bh));
            for bx in 0..bw {
                let mut s = 0.0;
                let (mut l, mut u) = (255u8, 0u8);
                for yy in a..b {
                    s += self.tmp[yy * bw + bx];
                    l = l.min(self.lo_row[yy * bw + bx]);
                    u = u.max(self.hi_row[yy * bw + bx]);
                }
                let mean = s / (b - a) as f32;
                let contrast = f32::from(u) - f32::from(l);
                self.dark_below[by * bw + bx] = if contrast < MIN_CONTRAST {
                    FLAT
                } else {
                    mean - (contrast / 12.0).clamp(1.5, 10.0)
                };
            }
        }
    }

    /// The dark threshold at a pixel (bilinear between block centres).
    fn thr_at(&self, x: f32, y: f32) -> f32 {
        let fx = ((x + 0.5) / B as f32 - 0.5).clamp(0.0, (self.bw - 1) as f32);
        let fy = ((y + 0.5) / B as f32 - 0.5).clamp(0.0, (self.bh - 1) as f32);
        let (x0, y0) = (fx as usize, fy as usize);
        let (x1, y1) = ((x0 + 1).min(self.bw - 1), (y0 + 1).min(self.bh - 1));
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let t = |xx: usize, yy: usize| self.dark_below[yy * self.bw + xx];
        let a = t(x0, y0) * (1.0 - tx) + t(x1, y0) * tx;
        let b = t(x0, y1) * (1.0 - tx) + t(x1, y1) * tx;
        a * (1.0 - ty) + b * ty
    }

    fn scan_one(&mut self, img: &GrayImage, scale: f32, out: &mut Vec<Finder>) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w < 3 * B || h < 3 * B {
            return;
        }
        if scale != 1.0 {
            self.stats(img);
        }
        self.thresholds();
        let raw = img.as_raw();
        let bw = self.bw;
        let mut row_thr = std::mem::take(&mut self.row_thr);
        row_thr.resize(bw, 0.0);
        let mut dark = std::mem::take(&mut self.row_dark);
        dark.resize(w, 0);
        let mut level = std::mem::take(&mut self.row_level);
        level.resize(w, 0);
        let mut ends = std::mem::take(&mut self.row_ends);
        let mut found: Vec<Finder> = Vec::new();
        // every other row: a finder's centre stripe is three modules high, so even 1.7 px
        // modules give two rows to confirm it
        for y in (0..h).step_by(2) {
            // this row's thresholds, one per block column, between two block rows
            let fy = ((y as f32 + 0.5) / B as f32 - 0.5).clamp(0.0, (self.bh - 1) as f32);
            let y0 = fy as usize;
            let y1 = (y0 + 1).min(self.bh - 1);
            let ty = fy - y0 as f32;
            let d = &self.dark_below;
            let mut flat = true;
            for (bx, v) in row_thr.iter_mut().enumerate() {
                *v = d[y0 * bw + bx] * (1.0 - ty) + d[y1 * bw + bx] * ty;
                flat &= *v < 0.0;
            }
            if flat {
                continue;
            }
            let row = &raw[y * w..(y + 1) * w];
            dark_mask(row, &row_thr, &mut level, &mut dark);
            // each run ends where the colour changes, the last at the row's end
            ends.clear();
            transitions(&dark, |x| ends.push(x as u32));
            ends.push(w as u32);
            // the last five completed runs (alternating colours), newest last
            let mut runs = [0u32; 5];
            let mut completed = 0usize;
            let mut cur_dark = dark[0];
            let mut start = 0usize;
            for &x in &ends {
                let x = x as usize;
                let cur = (x - start) as u32;
                runs.rotate_left(1);
                runs[4] = cur;
                completed += 1;
                if cur_dark == 1 && completed >= 5 && ratio(&runs).is_some() {
                    let end = x as f32;
                    let cx = end - runs[4] as f32 - runs[3] as f32 - runs[2] as f32 / 2.0;
                    let total: u32 = runs.iter().sum();
                    match self.confirm(img, cx, y as f32 + 0.5, total) {
                        Confirmed::Ring(f) => merge(&mut found, f),
                        Confirmed::Weak if scale == 1.0 && total < WEAK_TOTAL => {
                            self.weak.push([cx, y as f32 + 0.5]);
                        }
                        _ => {}
                    }
                }
                cur_dark ^= 1;
                start = x;
            }
        }
        self.row_dark = dark;
        self.row_level = level;
        self.row_ends = ends;
        self.row_thr = row_thr;
        out.extend(found.into_iter().filter(|f| f.hits >= 2).map(|f| Finder {
            x: f.x * scale,
            y: f.y * scale,
            module: f.module * scale,
            hits: f.hits,
        }));
    }

    fn dark(&self, img: &GrayImage, x: i64, y: i64) -> Option<bool> {
        if x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height()) {
            return None;
        }
        let v = img.as_raw()[y as usize * img.width() as usize + x as usize];
        Some(f32::from(v) < self.thr_at(x as f32, y as f32))
    }

    /// Runs along direction (`dx`, `dy`) through (`x`, `y`): `[outer, light, centre, light,
    /// outer]` and the centre's offset from (`x`, `y`) in steps, if the line crosses a whole ring.
    fn cross(
        &self,
        img: &GrayImage,
        x: i64,
        y: i64,
        dx: i64,
        dy: i64,
        limit: u32,
    ) -> Option<([u32; 5], f32)> {
        if self.dark(img, x, y) != Some(true) {
            return None;
        }
        let walk = |sign: i64| -> Option<[u32; 3]> {
            let mut n = [0u32; 3];
            let mut state = 0;
            let mut k = 1;
            loop {
                let d = self.dark(img, x + sign * k * dx, y + sign * k * dy);
                match (state, d) {
                    (_, None) => return (state == 2).then_some(n),
                    (0, Some(true)) => n[0] += 1,
                    (0, Some(false)) => {
                        state = 1;
                        n[1] = 1;
                    }
                    (1, Some(false)) => n[1] += 1,
                    (1, Some(true)) => {
                        state = 2;
                        n[2] = 1;
                    }
                    (_, Some(true)) => n[2] += 1,
                    (_, Some(false)) => return Some(n),
                }
                if n[0] + n[1] + n[2] > limit {
                    return None;
                }
                k += 1;
            }
        };
        let back = walk(-1)?;
        let fwd = walk(1)?;
        let runs = [back[2], back[1], back[0] + 1 + fwd[0], fwd[1], fwd[2]];
        ratio(&runs)?;
        Some((runs, (fwd[0] as f32 - back[0] as f32) / 2.0))
    }

    /// Checks a row hit down the column, along the row again and along a diagonal.
    fn confirm(&self, img: &GrayImage, cx: f32, cy: f32, total: u32) -> Confirmed {
        let limit = total * 2;
        let (x, y) = (cx as i64, cy as i64);
        let Some((vr, dy)) = self.cross(img, x, y, 0, 1, limit) else {
            return Confirmed::No;
        };
        let vt: u32 = vr.iter().sum();
        let y = (y as f32 + dy).round() as i64;
        let Some((hr, dx)) = self.cross(img, x, y, 1, 0, limit) else {
            return Confirmed::Weak;
        };
        let ht: u32 = hr.iter().sum();
        let x = (x as f32 + dx).round() as i64;
        let Some((dr, _)) = self.cross(img, x, y, 1, 1, limit) else {
            return Confirmed::Weak;
        };
        let dt: u32 = dr.iter().sum();
        let (ht, vt, dt) = (ht as f32, vt as f32, dt as f32);
        // a square ring: row and column agree; the diagonal (steps of √2 px) is between
        // 7/√2·m (a ring rotated 45°) and 7·m (square on)
        if vt < ht * 0.6 || vt > ht * 1.6 {
            return Confirmed::Weak;
        }
        let m = (ht + vt) / 14.0;
        if dt < 7.0 * m * 0.5 || dt > 7.0 * m * 1.3 {
            return Confirmed::Weak;
        }
        Confirmed::Ring(Finder {
            x: x as f32 + 0.5,
            y: y as f32 + 0.5,
            module: m,
            hits: 1,
        })
    }

    /// The regions where weak hits cluster (at most [`WEAK_REGIONS`], the most hits first),
    /// scanned again at twice the size: rings of 1.3-2 px modules are 3-4 px wide there. A
    /// triple found in one region is the sighting; its finders join `finders`.
    fn rescan_weak(&mut self, frame: &GrayImage, finders: &mut Vec<Finder>) -> Option<Sighting> {
        // greedy clusters: a hit joins the first cluster it keeps within WEAK_SPAN
        let mut boxes: Vec<([f32; 4], usize)> = Vec::new();
        for &[x, y] in &self.weak {
            let joined = boxes.iter_mut().find(|(b, _)| {
                x.max(b[2]) - x.min(b[0]) <= WEAK_SPAN && y.max(b[3]) - y.min(b[1]) <= WEAK_SPAN
            });
            match joined {
                Some((b, k)) => {
                    *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
                    *k += 1;
                }
                None => boxes.push(([x, y, x, y], 1)),
            }
        }
        boxes.sort_by_key(|(_, k)| std::cmp::Reverse(*k));
        let (w, h) = frame.dimensions();
        let mut sub = FinderScanner::default();
        // a lone weak hit is text or a vent as often as not (idle scenes have them): a code
        // shows at least two of its three finders
        for (b, _) in boxes
            .into_iter()
            .filter(|(_, k)| *k >= 2)
            .take(WEAK_REGIONS)
        {
            // the hits are finder centres: a box across two finders in both directions holds
            // all three; otherwise the third lies up to a leg beyond it
            let pad = if b[2] - b[0] < 40.0 || b[3] - b[1] < 40.0 {
                WEAK_SPAN * 0.5
            } else {
                16.0
            };
            let clip = |v: f32, max: u32| v.clamp(0.0, max as f32) as u32;
            let (x0, y0) = (clip(b[0] - pad, w), clip(b[1] - pad, h));
            let (x1, y1) = (clip(b[2] + pad, w), clip(b[3] + pad, h));
            if x1 < x0 + 16 || y1 < y0 + 16 {
                continue;
            }
            let crop = image::imageops::crop_imm(frame, x0, y0, x1 - x0, y1 - y0).to_image();
            let big = double(&crop);
            let mut found = Vec::new();
            sub.stats(&big);
            sub.scan_one(&big, 1.0, &mut found);
            let found: Vec<Finder> = found
                .into_iter()
                .map(|f| Finder {
                    x: f.x / 2.0 + x0 as f32,
                    y: f.y / 2.0 + y0 as f32,
                    module: f.module / 2.0,
                    hits: f.hits,
                })
                .collect();
            // (only a sighting's finders join the frame's: more candidates without one would
            // send an idle frame to the whole-frame rqrr pass)
            let sighting = layout(&found, (w, h));
            if sighting.is_some() {
                finders.extend(found);
                return sighting;
            }
        }
        None
    }
}

/// What a row hit turned out to be.
enum Confirmed {
    /// A square ring.
    Ring(Finder),
    /// It held down the column, then not along the row or the diagonal.
    Weak,
    No,
}

/// A copy twice the size, bilinear (each new pixel ¾ of its nearest old one and ¼ of the next,
/// along each axis; edges repeated).
fn double(img: &GrayImage) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    // rows doubled along x, in quarters
    let mut wide = vec![0u16; 2 * w * h];
    for y in 0..h {
        let r = &src[y * w..(y + 1) * w];
        let out = &mut wide[2 * w * y..2 * w * (y + 1)];
        for x in 0..w {
            let c = 3 * u16::from(r[x]);
            out[2 * x] = c + u16::from(r[x.saturating_sub(1)]);
            out[2 * x + 1] = c + u16::from(r[(x + 1).min(w - 1)]);
        }
    }
    let mut out = vec![0u8; 4 * w * h];
    for y in 0..h {
        let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..2 * w {
            let c = 3 * wide[2 * w * y + x];
            out[2 * w * (2 * y) + x] = ((c + wide[2 * w * up + x] + 8) / 16) as u8;
            out[2 * w * (2 * y + 1) + x] = ((c + wide[2 * w * down + x] + 8) / 16) as u8;
        }
    }
    GrayImage::from_raw(2 * w as u32, 2 * h as u32, out).unwrap_or_else(|| img.clone())
}

/// A 3×3 box-smoothed copy (edges kept as they are).
fn box3(img: &GrayImage) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    // rows first (the first and last column stay as they are), then columns (the first and
    // last row stay as the row pass left them); slices and zips, so both passes vectorise
    let mut tmp = src.clone();
    if w >= 3 {
        for (t, r) in tmp.chunks_exact_mut(w).zip(src.chunks_exact(w)) {
            for (o, win) in t[1..w - 1].iter_mut().zip(r.windows(3)) {
                *o = ((u16::from(win[0]) + u16::from(win[1]) + u16::from(win[2])) / 3) as u8;
            }
        }
    }
    let mut out = tmp.clone();
    for y in 1..h.saturating_sub(1) {
        let (a, b, c) = (
            &tmp[(y - 1) * w..y * w],
            &tmp[y * w..(y + 1) * w],
            &tmp[(y + 1) * w..(y + 2) * w],
        );
        for (o, ((&a, &b), &c)) in out[y * w..(y + 1) * w]
            .iter_mut()
            .zip(a.iter().zip(b).zip(c))
        {
            *o = ((u16::from(a) + u16::from(b) + u16::from(c)) / 3) as u8;
        }
    }
    GrayImage::from_raw(w as u32, h as u32, out).unwrap_or_else(|| img.clone())
}

/// One row's dark mask: 1 where the pixel is under its block column's threshold (`thr`, one
/// per 8-pixel block; pixels past the last whole block use the last one). `level` is scratch
/// (one threshold per pixel).
///
/// The comparison is made on whole grey levels: for a pixel value `v` and a threshold `t`,
/// `v < t` exactly when `v < ceil(t)`, so one `u8` per block gives the same mask as comparing
/// in floats, and the per-pixel loop is a byte compare the compiler vectorises.
fn dark_mask(row: &[u8], thr: &[f32], level: &mut [u8], dark: &mut [u8]) {
    // ceil(t) in 0..=255: thresholds are at most 255 - 1.5 (a mean less a margin), and under 0
    // nothing is dark. (Truncation and a step up, not `f32::ceil`, which is a libm call on
    // x86-64 without SSE4.1.)
    let grey = |t: f32| -> u8 {
        let c = t.clamp(0.0, 255.0) as i32;
        (c + i32::from((c as f32) < t)).min(255) as u8
    };
    let whole = thr.len() * B;
    for (l, &t) in level[..whole].chunks_exact_mut(B).zip(thr) {
        l.fill(grey(t));
    }
    if let Some(&t) = thr.last() {
        level[whole..].fill(grey(t));
    }
    for ((d, &p), &t) in dark.iter_mut().zip(row).zip(level.iter()) {
        *d = u8::from(p < t);
    }
}

/// Where the colour changes in a row's dark mask: each `x` with `dark[x] != dark[x - 1]`, in
/// order, eight pixels at a time (a flat stretch is skipped a word at a time).
fn transitions(dark: &[u8], mut each: impl FnMut(usize)) {
    let n = dark.len();
    let mut x = 1;
    while x + 8 <= n {
        let here = u64::from_le_bytes(dark[x..x + 8].try_into().unwrap_or_default());
        let prev = u64::from_le_bytes(dark[x - 1..x + 7].try_into().unwrap_or_default());
        let mut diff = here ^ prev;
        while diff != 0 {
            each(x + diff.trailing_zeros() as usize / 8);
            diff &= diff - 1;
        }
        x += 8;
    }
    for x in x..n {
        if dark[x] != dark[x - 1] {
            each(x);
        }
    }
}

/// The unit (module) when `runs` is dark:light:dark:light:dark in 1:1:3:1:1, loosely (blurred
/// small modules), but with the centre clearly wider than every other run (a row of evenly
/// spaced dots or bars is not a finder).
fn ratio(runs: &[u32; 5]) -> Option<f32> {
    let total: u32 = runs.iter().sum();
    if total < 7 {
        return None;
    }
    let u = total as f32 / 7.0;
    let single = |n: u32| (n as f32 - u).abs() <= u * 0.6 + 0.5;
    let c = runs[2] as f32;
    let widest_other = runs[0].max(runs[1]).max(runs[3]).max(runs[4]) as f32;
    (single(runs[0])
        && single(runs[1])
        && single(runs[3])
        && single(runs[4])
        && (c - 3.0 * u).abs() <= u * 1.5 + 0.5
        && c >= 1.6 * widest_other)
        .then_some(u)
}

/// Adds `f` to the candidate it repeats (the same ring seen from the next row), or as new.
fn merge(found: &mut Vec<Finder>, f: Finder) {
    for g in found.iter_mut() {
        let near = (g.x - f.x).hypot(g.y - f.y) <= g.module.max(f.module) * 1.5;
        let like = g.module.max(f.module) <= g.module.min(f.module) * 1.6;
        if near && like {
            let n = g.hits as f32;
            g.x = (g.x * n + f.x) / (n + 1.0);
            g.y = (g.y * n + f.y) / (n + 1.0);
            g.module = (g.module * n + f.module) / (n + 1.0);
            g.hits += 1;
            return;
        }
    }
    found.push(f);
}

/// The best right-angled, equal-legged triple of consistent module size.
pub fn layout(finders: &[Finder], (w, h): (u32, u32)) -> Option<Sighting> {
    let mut best: Option<(f32, Sighting)> = None;
    let mut cands: Vec<&Finder> = finders.iter().collect();
    cands.sort_by_key(|c| std::cmp::Reverse(c.hits));
    cands.truncate(24);
    let n = cands.len();
    for i in 0..n {
        for j in i + 1..n {
            for k in j + 1..n {
                let t = [cands[i], cands[j], cands[k]];
                let ms = t.map(|f| f.module);
                let (lo, hi) = (
                    ms.iter().copied().fold(f32::MAX, f32::min),
                    ms.iter().copied().fold(0.0, f32::max),
                );
                if hi > lo * 1.5 {
                    continue;
                }
                let m = (ms[0] + ms[1] + ms[2]) / 3.0;
                for c in 0..3 {
                    let (b, a, cc) = (t[c], t[(c + 1) % 3], t[(c + 2) % 3]);
                    let (ax, ay) = (a.x - b.x, a.y - b.y);
                    let (cx, cy) = (cc.x - b.x, cc.y - b.y);
                    let (la, lc) = (ax.hypot(ay), cx.hypot(cy));
                    if la.max(lc) > la.min(lc) * 1.35 {
                        continue;
                    }
                    let cos = (ax * cx + ay * cy) / (la * lc);
                    if cos.abs() > 0.3 {
                        continue;
                    }
                    let span = (la + lc) / 2.0 / m;
                    // version 1 has 14 modules between centres; a code turned 45° reads as
                    // 14/√2 with row-and-column module estimates
                    if !(9.0..=180.0).contains(&span) {
                        continue;
                    }
                    let score = cos.abs() + (la / lc - 1.0).abs() + (hi / lo - 1.0);
                    if best.as_ref().is_some_and(|(s, _)| *s <= score) {
                        continue;
                    }
                    // the fourth corner, and the box around all four with quiet zone and slack
                    let (dx4, dy4) = (a.x + cc.x - b.x, a.y + cc.y - b.y);
                    let xs = [b.x, a.x, cc.x, dx4];
                    let ys = [b.y, a.y, cc.y, dy4];
                    let pad = 10.0 * m;
                    let x0 = xs.iter().copied().fold(f32::MAX, f32::min) - pad;
                    let x1 = xs.iter().copied().fold(f32::MIN, f32::max) + pad;
                    let y0 = ys.iter().copied().fold(f32::MAX, f32::min) - pad;
                    let y1 = ys.iter().copied().fold(f32::MIN, f32::max) + pad;
                    let clip = |v: f32, max: u32| v.clamp(0.0, max as f32) as u32;
                    best = Some((
                        score,
                        Sighting {
                            corner: *b,
                            a: *a,
                            b: *cc,
                            module: m,
                            bbox: [clip(x0, w), clip(y0, h), clip(x1, w), clip(y1, h)],
                        },
                    ));
                }
            }
        }
    }
    best.map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_accepts_finders_and_refuses_even_dots() {
        assert!(ratio(&[4, 4, 12, 4, 4]).is_some());
        assert!(ratio(&[2, 2, 5, 2, 2]).is_some());
        assert!(ratio(&[1, 2, 5, 2, 2]).is_some());
        assert!(ratio(&[2, 2, 2, 2, 2]).is_none());
        assert!(ratio(&[4, 4, 4, 4, 4]).is_none());
        assert!(ratio(&[4, 12, 4, 4, 4]).is_none());
    }

    #[test]
    fn three_finders_at_a_right_angle_are_a_code_two_are_not() {
        let f = |x, y| Finder {
            x,
            y,
            module: 4.0,
            hits: 3,
        };
        let two = [f(100.0, 100.0), f(200.0, 100.0)];
        assert!(layout(&two, (640, 480)).is_none());
        let three = [f(100.0, 100.0), f(200.0, 100.0), f(100.0, 200.0)];
        let s = layout(&three, (640, 480)).unwrap();
        assert_eq!((s.corner.x, s.corner.y), (100.0, 100.0));
        assert!((s.span_modules() - 25.0).abs() < 0.1);
        // in a line: no
        let line = [f(100.0, 100.0), f(200.0, 100.0), f(300.0, 100.0)];
        assert!(layout(&line, (640, 480)).is_none());
        // one finder of another size: no
        let mut odd = three;
        odd[2].module = 9.0;
        assert!(layout(&odd, (640, 480)).is_none());
    }
}
