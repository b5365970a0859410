//! Multi-frame reading: a customer holds a code up for a second or more, and the frames a single
//! decoder cannot read (noise, blur, modules under 2 px, a low-resolution stream, JPEG) together
//! hold more than any one of them.
//!
//! The stack keeps the last [`DEPTH`] crops around a sighted code with their three finder
//! centres. On a frame where the code is seen but not read it:
//! 1. tries the sharpest crop in the stack alone, enlarged and sharpened;
//! 2. registers every crop onto the sharpest one by the affine map between their finder
//!    centres (hand shake is translation and a little rotation; the tilt is the same in every
//!    frame), and averages them on a grid twice as fine (registration and averaging against noise
//!    and JPEG blocks; sub-pixel shifts between frames fill in the finer grid — shift-and-add
//!    super-resolution for small modules);
//! 3. decodes the average, then the average sharpened (a blur's edges come back once the noise
//!    is averaged away).
//!
//! Every step checks the clock against the caller's budget. A result is only what `rqrr` or
//! WeChat decoded (Reed-Solomon checked) and what passes the payload check: averaging never
//! invents a code.

use super::finder::Sighting;
use super::lattice::{self, Grid, Lattice};
use image::GrayImage;
use std::time::Instant;

/// Crops kept: 1 s at 10 fps.
pub const DEPTH: usize = 10;
/// Frames without a sighting after which the presentation is over.
const FORGET_AFTER: u32 = 10;
/// Frames without a sighting over which the code's grid is still followed from frame to frame.
const TRACK_FOR: u32 = 3;
/// Grids fitted and read per sighted frame (the best versions by score).
pub const GRIDS_PER_FRAME: usize = 2;

/// A crop of one frame around a sighted code.
#[derive(Debug, Clone)]
pub struct Entry {
    pub crop: GrayImage,
    /// Where the crop's top-left pixel is in the frame.
    pub origin: [f32; 2],
    /// Finder centres in crop pixels: the corner, then the other two in a fixed winding.
    pub pts: [[f32; 2]; 3],
    pub module: f32,
    pub sharpness: f32,
}

/// The presentation being watched.
#[derive(Debug, Default)]
pub struct Stack {
    entries: Vec<Entry>,
    since_sighting: u32,
    /// Whether the entries changed since the last merged attempt.
    dirty: bool,
    /// Module lattices of this presentation's frames, each sampled on its frame's own fitted
    /// grid, with the grid's score (newest last).
    lattices: Vec<(Lattice, f32)>,
    /// The last frame's best grid (its score that of the last sighted frame's): where to look
    /// when the gate misses the code.
    grid: Option<Grid>,
    /// Frames since the code was last on a grid (sighted or followed).
    since_grid: u32,
}

/// What a lattice attempt read.
#[derive(Debug, Default)]
pub struct LatticeRead {
    pub codes: Vec<String>,
    /// Read from the average of several frames' lattices.
    pub multi: bool,
}

impl Stack {
    pub fn clear(&mut self) {
        self.entries.clear();
        self.since_sighting = 0;
        self.dirty = false;
        self.lattices.clear();
        self.grid = None;
        self.since_grid = 0;
    }

    /// Whether a code was on a fitted grid a moment ago (a frame where the gate misses it is
    /// then worth a look on that grid).
    pub fn tracking(&self) -> bool {
        self.grid.is_some() && self.since_grid < TRACK_FOR
    }

    /// Reads the code on grids fitted to `frame`: from the sighting's finders (the versions
    /// their distance allows), or, without a sighting, the last frame's grid followed. Each
    /// grid's lattice is read alone, added to the presentation's, and the average of the
    /// presentation's lattices of that size is read. Nothing is read unless `rqrr` decodes it
    /// (format and Reed-Solomon checks).
    pub fn lattice(
        &mut self,
        frame: &GrayImage,
        s: Option<&Sighting>,
        deadline: Instant,
    ) -> LatticeRead {
        let mut out = LatticeRead::default();
        let grids = match (s, &self.grid) {
            (Some(s), _) => lattice::fit_grids(
                frame,
                [s.corner.x, s.corner.y],
                [s.a.x, s.a.y],
                [s.b.x, s.b.y],
                s.module,
                GRIDS_PER_FRAME,
            ),
            (None, Some(last)) if self.tracking() => {
                let known = lattice::known_modules(last.n);
                let g = lattice::track(frame, last, &known, 6.0 + 2.0 * last.module());
                // the code must still be there: about as clear as where it was last seen
                if g.score < last.score * 0.6 {
                    return out;
                }
                vec![g]
            }
            _ => return out,
        };
        if let Some(best) = grids.first() {
            // a followed grid keeps the sighted one's score as the bar
            let bar = match (s, &self.grid) {
                (None, Some(last)) => last.score,
                _ => best.score,
            };
            self.grid = Some(Grid {
                score: bar,
                ..*best
            });
            self.since_grid = 0;
        }
        let mut sizes = Vec::new();
        for g in &grids {
            let Some(l) = lattice::sample_grid(frame, g) else {
                continue;
            };
            if let Some(text) = lattice::read(&l) {
                out.codes.push(text);
                return out;
            }
            self.lattices.push((l, g.score));
            if !sizes.contains(&g.n) {
                sizes.push(g.n);
            }
        }
        let keep = DEPTH * GRIDS_PER_FRAME;
        if self.lattices.len() > keep {
            self.lattices.drain(..self.lattices.len() - keep);
        }
        for n in sizes {
            if Instant::now() >= deadline {
                break;
            }
            if let Some(avg) = self.average(n) {
                if let Some(text) = lattice::read(&avg) {
                    out.codes.push(text);
                    out.multi = true;
                    return out;
                }
            }
        }
        out
    }

    /// The mean of the presentation's lattices of side `n` whose grid scored at least half the
    /// best of them (a frame whose grid slipped would blur the rest); `None` for fewer than two.
    fn average(&self, n: usize) -> Option<Lattice> {
        let best = self
            .lattices
            .iter()
            .filter(|(l, _)| l.n == n)
            .map(|(_, s)| *s)
            .fold(f32::MIN, f32::max);
        let mut avg: Option<Lattice> = None;
        for (l, s) in &self.lattices {
            if l.n != n || *s < best * 0.5 {
                continue;
            }
            match &mut avg {
                None => avg = Some(l.clone()),
                Some(a) => {
                    a.add(l);
                }
            }
        }
        avg.filter(|a| a.frames >= 2)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A frame without a sighting: the presentation ends after a run of them.
    pub fn no_sighting(&mut self) {
        self.since_sighting += 1;
        self.since_grid += 1;
        if self.since_sighting >= FORGET_AFTER {
            self.clear();
        }
    }

    /// Adds the crop of `frame` around `s`. A code of another size or elsewhere starts a new
    /// presentation.
    pub fn push(&mut self, frame: &GrayImage, s: &Sighting) {
        self.since_sighting = 0;
        let [x0, y0, x1, y1] = s.bbox;
        if x1 <= x0 + 8 || y1 <= y0 + 8 {
            return;
        }
        let crop = s.crop(frame);
        let (ox, oy) = (x0 as f32, y0 as f32);
        let c = [s.corner.x - ox, s.corner.y - oy];
        let mut a = [s.a.x - ox, s.a.y - oy];
        let mut b = [s.b.x - ox, s.b.y - oy];
        // a fixed winding, so that "a" is the same finder in every frame
        if (a[0] - c[0]) * (b[1] - c[1]) - (a[1] - c[1]) * (b[0] - c[0]) < 0.0 {
            std::mem::swap(&mut a, &mut b);
        }
        if let Some(last) = self.entries.last() {
            // where the corner finder was, in frame pixels, against where it is now
            let moved = (last.origin[0] + last.pts[0][0] - s.corner.x)
                .hypot(last.origin[1] + last.pts[0][1] - s.corner.y);
            let size_changed = last.module.max(s.module) > last.module.min(s.module) * 1.4;
            if size_changed || moved > s.span_modules() * s.module * 0.5 {
                self.entries.clear();
                self.lattices.clear();
                self.grid = None;
            }
        }
        let sharpness = sharpness(&crop);
        self.entries.push(Entry {
            crop,
            origin: [ox, oy],
            pts: [c, a, b],
            module: s.module,
            sharpness,
        });
        if self.entries.len() > DEPTH {
            self.entries.remove(0);
        }
        self.dirty = true;
    }

    /// Tries what the stack allows, cheapest first, until `deadline`. `decode` reads one image
    /// (rqrr, WeChat) and returns checked payloads.
    pub fn attempt(
        &mut self,
        deadline: Instant,
        decode: &mut dyn FnMut(&GrayImage) -> Vec<String>,
    ) -> Vec<String> {
        if self.entries.is_empty() || !self.dirty {
            return Vec::new();
        }
        self.dirty = false;
        let Some(best) = self
            .entries
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.sharpness.total_cmp(&b.1.sharpness))
            .map(|(i, _)| i)
        else {
            return Vec::new();
        };
        let reference = &self.entries[best];
        // 1. the sharpest frame alone, enlarged so small modules span several pixels
        let factor = if reference.module < 3.0 { 3 } else { 2 };
        let big = enlarge(&reference.crop, factor);
        let codes = decode(&big);
        if !codes.is_empty() || Instant::now() >= deadline {
            return codes;
        }
        if self.entries.len() < 3 {
            return Vec::new();
        }
        // 2. every frame registered onto the sharpest and averaged on a finer grid
        let merged = merge(&self.entries, best, factor as f32);
        let codes = decode(&merged);
        if !codes.is_empty() || Instant::now() >= deadline {
            return codes;
        }
        // 3. the average sharpened
        decode(&unsharp(&merged, 1.0 * factor as f32, 1.5))
    }
}

/// Mean squared gradient: blur and motion lower it.
pub fn sharpness(img: &GrayImage) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let raw = img.as_raw();
    let mut acc = 0u64;
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let v = i32::from(raw[y * w + x]);
            let dx = i32::from(raw[y * w + x + 1]) - v;
            let dy = i32::from(raw[(y + 1) * w + x]) - v;
            acc += (dx * dx + dy * dy) as u64;
        }
    }
    acc as f32 / ((w - 1) * (h - 1)) as f32
}

pub fn enlarge(img: &GrayImage, factor: u32) -> GrayImage {
    image::imageops::resize(
        img,
        img.width() * factor,
        img.height() * factor,
        image::imageops::FilterType::CatmullRom,
    )
}

/// The affine map taking the three points `from` to `to`: `[a, b, c, d, e, f]` with
/// `x' = a x + b y + c`, `y' = d x + e y + f`.
fn affine(from: &[[f32; 2]; 3], to: &[[f32; 2]; 3]) -> Option<[f32; 6]> {
    let [[x0, y0], [x1, y1], [x2, y2]] = *from;
    let det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0);
    if det.abs() < 1e-6 {
        return None;
    }
    let solve = |u0: f32, u1: f32, u2: f32| {
        let a = ((u1 - u0) * (y2 - y0) - (u2 - u0) * (y1 - y0)) / det;
        let b = ((x1 - x0) * (u2 - u0) - (x2 - x0) * (u1 - u0)) / det;
        let c = u0 - a * x0 - b * y0;
        (a, b, c)
    };
    let (a, b, c) = solve(to[0][0], to[1][0], to[2][0]);
    let (d, e, f) = solve(to[0][1], to[1][1], to[2][1]);
    Some([a, b, c, d, e, f])
}

fn bilinear(img: &GrayImage, x: f32, y: f32) -> Option<f32> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x, y) = (x - 0.5, y - 0.5);
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    if x0 < 0 || y0 < 0 || x0 + 1 >= w || y0 + 1 >= h {
        return None;
    }
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let raw = img.as_raw();
    let p = |xx: i64, yy: i64| f32::from(raw[(yy * w + xx) as usize]);
    let a = p(x0, y0) * (1.0 - fx) + p(x0 + 1, y0) * fx;
    let b = p(x0, y0 + 1) * (1.0 - fx) + p(x0 + 1, y0 + 1) * fx;
    Some(a * (1.0 - fy) + b * fy)
}

/// Every entry resampled into the reference entry's crop, `factor` times finer, and averaged.
pub fn merge(entries: &[Entry], reference: usize, factor: f32) -> GrayImage {
    let r = &entries[reference];
    let (w, h) = (
        (r.crop.width() as f32 * factor) as u32,
        (r.crop.height() as f32 * factor) as u32,
    );
    let mut sum = vec![0f32; (w * h) as usize];
    let mut n = vec![0u16; (w * h) as usize];
    for e in entries {
        let Some(m) = affine(&r.pts, &e.pts) else {
            continue;
        };
        for y in 0..h {
            let ry = (y as f32 + 0.5) / factor;
            for x in 0..w {
                let rx = (x as f32 + 0.5) / factor;
                let sx = m[0] * rx + m[1] * ry + m[2];
                let sy = m[3] * rx + m[4] * ry + m[5];
                if let Some(v) = bilinear(&e.crop, sx, sy) {
                    let i = (y * w + x) as usize;
                    sum[i] += v;
                    n[i] += 1;
                }
            }
        }
    }
    let fallback = 128.0;
    let raw = sum
        .iter()
        .zip(&n)
        .map(|(s, &k)| {
            if k == 0 {
                fallback as u8
            } else {
                (s / f32::from(k)).round().clamp(0.0, 255.0) as u8
            }
        })
        .collect();
    GrayImage::from_raw(w, h, raw).unwrap_or_else(|| r.crop.clone())
}

/// Unsharp mask: `img + amount × (img − blur(img, sigma))`.
pub fn unsharp(img: &GrayImage, sigma: f32, amount: f32) -> GrayImage {
    let blurred = image::imageops::blur(img, sigma);
    let raw = img
        .as_raw()
        .iter()
        .zip(blurred.as_raw())
        .map(|(&v, &b)| {
            let (v, b) = (f32::from(v), f32::from(b));
            (v + amount * (v - b)).round().clamp(0.0, 255.0) as u8
        })
        .collect();
    GrayImage::from_raw(img.width(), img.height(), raw).unwrap_or_else(|| img.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_maps_the_three_points() {
        let from = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let to = [[5.0, 7.0], [15.0, 8.0], [4.0, 17.0]];
        let m = affine(&from, &to).unwrap();
        for (p, q) in from.iter().zip(&to) {
            let x = m[0] * p[0] + m[1] * p[1] + m[2];
            let y = m[3] * p[0] + m[4] * p[1] + m[5];
            assert!((x - q[0]).abs() < 1e-4 && (y - q[1]).abs() < 1e-4);
        }
    }
}
