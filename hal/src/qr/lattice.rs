//! Reading a code that `rqrr` located but could not decode, on its module lattice.
//!
//! `rqrr` finds the three finders, the timing patterns and the perspective of a blurred code
//! well, then loses it by thresholding every pixel at its row's running mean: a lone dark module
//! blurred by half a module keeps under half its contrast at its centre, a lone light one the
//! same, and both flip. Here the grey level at every module's centre is sampled on `rqrr`'s grid
//! instead, and the blur is undone where it is simple, on the lattice of modules:
//! 1. every code has modules whose colour is known (finders, separators, timing patterns,
//!    alignment patterns, the dark module, the quiet zone); their samples against their known
//!    3×3 neighbourhoods give, by least squares, the paper level and how much a module's own
//!    colour and its edge and corner neighbours' colours move its centre (the blur, whatever it
//!    is: defocus, modules under two pixels, the resampling);
//! 2. the unknown modules are solved for in [0, 1] by a few Gauss-Seidel sweeps of that 3×3
//!    model, then cut at ½;
//! 3. `rqrr` decodes those bits (format, Reed-Solomon): a lattice that is wrong does not decode.
//!
//! Samples of one code from several frames can average into one lattice (each frame sampled on
//! its own grid: registration for free).
//!
//! The grid comes from the gate's finders, not from `rqrr` (whose grid is wrong on blurred
//! frames: its timing scan miscounts the size, its perspective is off by a fair part of a module;
//! session 6 in docs/notes/issue-15.md): [`fit_grids`] takes the three finder centres, tries the
//! versions their distance allows, places the fourth corner (a tilted card) and moves every
//! corner to where the known modules sampled on the grid separate best into dark and light
//! ([`score`]); [`track`] follows a grid into a frame where the gate misses the code. The
//! pipeline ([`super::QrDecoder`], [`super::stack::Stack::lattice`]) reads each frame's lattice
//! and the average of a presentation's.

use image::GrayImage;

/// Grey levels at the module centres of one located code (`n` × `n`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Lattice {
    pub n: usize,
    pub v: Vec<f32>,
    /// Frames averaged into it.
    pub frames: u32,
}

impl Lattice {
    /// Adds `other` (the same code in another frame) into the mean. Lattices of another size are
    /// not the same code.
    pub fn add(&mut self, other: &Lattice) -> bool {
        if other.n != self.n {
            return false;
        }
        let (a, b) = (self.frames as f32, other.frames as f32);
        for (x, y) in self.v.iter_mut().zip(&other.v) {
            *x = (*x * a + y * b) / (a + b);
        }
        self.frames += other.frames;
        true
    }
}

/// What one `rqrr` pass gave: the codes it decoded and the lattices of the grids it located but
/// could not decode.
#[derive(Debug, Default)]
pub struct Pass {
    pub codes: Vec<String>,
    pub grids: usize,
    pub lattices: Vec<Lattice>,
}

/// `rqrr` on `frame`; for each grid it cannot decode, the module lattice, and what reading that
/// lattice gives.
pub fn pass(frame: &GrayImage) -> Pass {
    let (w, h) = frame.dimensions();
    let raw = frame.as_raw();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
            raw[y * w as usize + x]
        });
    let grids = prepared.detect_grids();
    let mut out = Pass {
        grids: grids.len(),
        ..Pass::default()
    };
    for g in grids {
        match g.decode() {
            Ok((_, text)) => {
                if !out.codes.contains(&text) {
                    out.codes.push(text);
                }
            }
            Err(_) => {
                // rqrr's timing scan miscounts a blurred code's size (one version off): its
                // grid's finders stay where they are, so the neighbouring sizes are tried on it
                let found = rqrr::BitGrid::size(&g.grid);
                for n in [found, found + 4, found.saturating_sub(4)] {
                    let Some(l) = sample(frame, found, n, &g.bounds) else {
                        continue;
                    };
                    if let Some(text) = read(&l) {
                        if !out.codes.contains(&text) {
                            out.codes.push(text);
                        }
                        break;
                    }
                    if n == found {
                        out.lattices.push(l);
                    }
                }
            }
        }
    }
    out
}

/// The grey level at each module's centre (the mean of 3×3 points ¼ module apart) of a code of
/// side `n`, on the grid `rqrr` located as a code of side `found`: its `bounds` are the images
/// of (0, 0), (found+1, 0), (found+1, found+1), (0, found+1) in its module units, in pixel
/// coordinates whose integers are pixel centres. The finders' outer corners anchor both sizes.
pub fn sample(
    frame: &GrayImage,
    found: usize,
    n: usize,
    bounds: &[rqrr::Point; 4],
) -> Option<Lattice> {
    if !(21..=177).contains(&n) || !(21..=177).contains(&found) {
        return None;
    }
    let scale = (found - 7) as f64 / (n - 7) as f64;
    let s = (found + 1) as f64;
    let from = [[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]];
    let to = bounds.map(|p| [f64::from(p.x) + 0.5, f64::from(p.y) + 0.5]);
    let m = homography(&from, &to)?;
    sample_modules(frame, n, |x, y| map(&m, x * scale, y * scale))
}

/// The mean grey of 3×3 points ¼ module apart about each module's centre, `to_pixel` taking
/// module coordinates to pixel coordinates; `None` if a module has no point inside the frame.
fn sample_modules(
    frame: &GrayImage,
    n: usize,
    to_pixel: impl Fn(f64, f64) -> (f64, f64),
) -> Option<Lattice> {
    let mut v = Vec::with_capacity(n * n);
    for y in 0..n {
        for x in 0..n {
            let mut acc = 0.0;
            let mut k = 0;
            for dy in [-0.25, 0.0, 0.25] {
                for dx in [-0.25, 0.0, 0.25] {
                    let (px, py) = to_pixel(x as f64 + 0.5 + dx, y as f64 + 0.5 + dy);
                    if let Some(g) = bilinear(frame, px as f32, py as f32) {
                        acc += g;
                        k += 1;
                    }
                }
            }
            if k == 0 {
                return None;
            }
            v.push(acc / k as f32);
        }
    }
    Some(Lattice { n, v, frames: 1 })
}

/// A code's module grid in one frame: where four points given in module coordinates (the
/// code's top-left corner at (0, 0), one module 1 × 1) lie in the frame (pixel coordinates,
/// pixel centres at half-integers, as the gate reports finders). The points are the three
/// finders' centres, (3.5, 3.5), (n − 3.5, 3.5), (3.5, n − 3.5), and (n − 3.5, n − 3.5): a
/// projective map, so a tilted card (keystone) is followed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub n: usize,
    pub pts: [[f64; 2]; 4],
    /// How well the known modules sampled on it separate into dark and light (see [`score`]).
    pub score: f32,
}

impl Grid {
    fn anchors(n: usize) -> [[f64; 2]; 4] {
        let f = n as f64 - 3.5;
        [[3.5, 3.5], [f, 3.5], [3.5, f], [f, f]]
    }

    /// The projective map from module coordinates to pixels.
    pub fn map(&self) -> Option<[f64; 8]> {
        homography(&Self::anchors(self.n), &self.pts)
    }

    /// Pixels per module along the top finders' line.
    pub fn module(&self) -> f64 {
        let [a, b, ..] = self.pts;
        (b[0] - a[0]).hypot(b[1] - a[1]) / (self.n as f64 - 7.0)
    }

    /// The same grid moved by (`dx`, `dy`) pixels.
    pub fn shifted(&self, dx: f64, dy: f64) -> Grid {
        let mut g = *self;
        for p in &mut g.pts {
            p[0] += dx;
            p[1] += dy;
        }
        g
    }
}

/// A module whose colour is known: its centre in module coordinates, and whether it is dark.
pub type KnownModule = (f64, f64, bool);

/// The modules a code of side `n` has whatever it says, with one ring of its quiet zone.
pub fn known_modules(n: usize) -> Vec<KnownModule> {
    let ni = n as i64;
    let mut out = Vec::new();
    for y in -1..=ni {
        for x in -1..=ni {
            if let Some(d) = known(n, x, y) {
                out.push((x as f64 + 0.5, y as f64 + 0.5, d));
            }
        }
    }
    out
}

/// How well `grid` lies on a code: the grey levels at the known modules' centres, light minus
/// dark over their pooled spread (a Fisher ratio). A grid off by a module, or of the wrong
/// version, mixes the two.
pub fn score(frame: &GrayImage, grid: &Grid, known: &[KnownModule]) -> f32 {
    let Some(h) = grid.map() else {
        return f32::MIN;
    };
    let (mut sd, mut sd2, mut nd) = (0f64, 0f64, 0u32);
    let (mut sl, mut sl2, mut nl) = (0f64, 0f64, 0u32);
    for &(x, y, dark) in known {
        let (px, py) = map(&h, x, y);
        let Some(v) = bilinear(frame, px as f32, py as f32) else {
            continue;
        };
        let v = f64::from(v);
        if dark {
            sd += v;
            sd2 += v * v;
            nd += 1;
        } else {
            sl += v;
            sl2 += v * v;
            nl += 1;
        }
    }
    // most of the code must be in the frame
    if ((nd + nl) as usize) < known.len() * 3 / 4 || nd < 10 || nl < 10 {
        return f32::MIN;
    }
    let (nd, nl) = (f64::from(nd), f64::from(nl));
    let (md, ml) = (sd / nd, sl / nl);
    let var = (sd2 - sd * md + sl2 - sl * ml) / (nd + nl);
    ((ml - md) / (var.max(0.0) + 4.0).sqrt()) as f32
}

/// `last` (the code's grid in an earlier frame) found again in `frame`: moved as a whole in
/// half-module steps up to `reach` pixels either way (hand shake), then every point refined.
pub fn track(frame: &GrayImage, last: &Grid, known: &[KnownModule], reach: f64) -> Grid {
    let m = last.module();
    let mut best = *last;
    best.score = score(frame, &best, known);
    let k = (reach / (0.5 * m)).ceil().min(12.0) as i32;
    for iy in -k..=k {
        for ix in -k..=k {
            if ix == 0 && iy == 0 {
                continue;
            }
            let mut g = last.shifted(f64::from(ix) * 0.5 * m, f64::from(iy) * 0.5 * m);
            g.score = score(frame, &g, known);
            if g.score > best.score {
                best = g;
            }
        }
    }
    descend(frame, best, known, &[0.5, 0.25, 0.125])
}

/// Coordinate descent on the eight point coordinates, one step size (modules) after another.
pub fn descend(frame: &GrayImage, grid: Grid, known: &[KnownModule], steps: &[f64]) -> Grid {
    let m = grid.module();
    let mut best = grid;
    for &step in steps {
        let d = step * m;
        for _sweep in 0..4 {
            let mut moved = false;
            for p in 0..4 {
                for c in 0..2 {
                    for sign in [-1.0, 1.0] {
                        let mut g = best;
                        g.pts[p][c] += sign * d;
                        g.score = score(frame, &g, known);
                        if g.score > best.score {
                            best = g;
                            moved = true;
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    best
}

/// The module lattice of `frame` on `grid` (each module the mean of 3×3 points ¼ module apart
/// about its centre).
pub fn sample_grid(frame: &GrayImage, grid: &Grid) -> Option<Lattice> {
    let h = grid.map()?;
    sample_modules(frame, grid.n, |x, y| map(&h, x, y))
}

/// The side of a code of `version`.
pub fn side(version: usize) -> usize {
    17 + 4 * version
}

/// Grids for a code whose finders' centres are `corner` (top-left), `a` and `b` (the other
/// two, either order) with modules of about `module` pixels: the versions the finders' distance
/// allows (the estimate and its neighbours; two either side for small modules, whose size the
/// gate knows less well), each with the fourth point placed by a coarse search and every point
/// moved to where the known modules fit best, and the best `keep` of them refined further. Best
/// first.
pub fn fit_grids(
    frame: &GrayImage,
    corner: [f32; 2],
    a: [f32; 2],
    b: [f32; 2],
    module: f32,
    keep: usize,
) -> Vec<Grid> {
    let c = corner.map(f64::from);
    let (mut tr, mut bl) = (a.map(f64::from), b.map(f64::from));
    // y grows downwards: top-right × bottom-left about the corner is positive
    if (tr[0] - c[0]) * (bl[1] - c[1]) - (tr[1] - c[1]) * (bl[0] - c[0]) < 0.0 {
        std::mem::swap(&mut tr, &mut bl);
    }
    let leg = ((tr[0] - c[0]).hypot(tr[1] - c[1]) + (bl[0] - c[0]).hypot(bl[1] - c[1])) / 2.0;
    if module <= 0.0 || leg <= 0.0 {
        return Vec::new();
    }
    let span = leg / f64::from(module);
    let v = ((span + 7.0 - 17.0) / 4.0).round() as i64;
    let k = if module < 2.5 { 2 } else { 1 };
    let br = [tr[0] + bl[0] - c[0], tr[1] + bl[1] - c[1]];
    let mut coarse: Vec<(Grid, Vec<KnownModule>)> = Vec::new();
    for version in (v - k).max(1)..=(v + k).min(10) {
        let n = side(version as usize);
        let known = known_modules(n);
        let g = Grid {
            n,
            pts: [c, tr, bl, br],
            score: f32::MIN,
        };
        let m = g.module();
        // the fourth point alone first, then every point. A keystone of ±12 % moves the fourth
        // point from where the finders' parallelogram puts it by up to ~2(n − 7)²/(n + 8) × 0.12
        // modules (2.4 at version 2, 9 at version 10): whole-module steps that far (capped),
        // then half a module about the best.
        let reach = ((2.5 * (n as f64 - 7.0) / 18.0).round() as i32).clamp(2, 7);
        let mut best = g;
        best.score = score(frame, &best, &known);
        for (reach, step) in [(reach, 1.0), (1, 0.5)] {
            let base = best;
            for iy in -reach..=reach {
                for ix in -reach..=reach {
                    if ix == 0 && iy == 0 {
                        continue;
                    }
                    let mut t = base;
                    t.pts[3][0] += f64::from(ix) * step * m;
                    t.pts[3][1] += f64::from(iy) * step * m;
                    t.score = score(frame, &t, &known);
                    if t.score > best.score {
                        best = t;
                    }
                }
            }
        }
        coarse.push((descend(frame, best, &known, &[0.5, 0.25]), known));
    }
    // versions compare only once each grid sits where it fits best
    coarse.sort_by(|x, y| y.0.score.total_cmp(&x.0.score));
    let mut out: Vec<Grid> = coarse
        .into_iter()
        .take(keep)
        .map(|(g, known)| descend(frame, g, &known, &[0.125]))
        .collect();
    out.sort_by(|x, y| y.score.total_cmp(&x.score));
    out
}

/// The colour a module of every code of side `n` has (true = dark), if it is a function
/// module; outside the code, the quiet zone (light).
pub fn known(n: usize, x: i64, y: i64) -> Option<bool> {
    let ni = n as i64;
    if x < 0 || y < 0 || x >= ni || y >= ni {
        return Some(false);
    }
    // finders and their separators
    for (fx, fy) in [(0, 0), (ni - 7, 0), (0, ni - 7)] {
        if (fx - 1..fx + 8).contains(&x) && (fy - 1..fy + 8).contains(&y) {
            let d = (x - fx - 3).abs().max((y - fy - 3).abs());
            return Some(d != 2 && d != 4);
        }
    }
    // the dark module beside the bottom-left separator
    if x == 8 && y == ni - 8 {
        return Some(true);
    }
    let version = (n - 17) / 4;
    let centres = alignment_centres(version);
    for &cy in centres {
        for &cx in centres {
            // none where a finder is
            if [(6, 6), (6, ni - 7), (ni - 7, 6)].contains(&(cx, cy)) {
                continue;
            }
            let d = (x - cx).abs().max((y - cy).abs());
            if d <= 2 {
                return Some(d != 1);
            }
        }
    }
    if y == 6 && (8..ni - 8).contains(&x) {
        return Some(x % 2 == 0);
    }
    if x == 6 && (8..ni - 8).contains(&y) {
        return Some(y % 2 == 0);
    }
    None
}

/// Alignment pattern centre coordinates for versions 2–10 (the codes a locker sees; larger
/// versions are read without their alignment patterns as known modules).
fn alignment_centres(version: usize) -> &'static [i64] {
    match version {
        2 => &[6, 18],
        3 => &[6, 22],
        4 => &[6, 26],
        5 => &[6, 30],
        6 => &[6, 34],
        7 => &[6, 22, 38],
        8 => &[6, 24, 42],
        9 => &[6, 26, 46],
        10 => &[6, 28, 50],
        _ => &[],
    }
}

/// The 3×3 blur model on the lattice: sample = p0 + p1·centre + p2·Σ edge neighbours + p3·Σ
/// corner neighbours (1 = dark). Fitted on the modules whose 3×3 neighbourhood is all known.
fn fit(l: &Lattice) -> Option<[f32; 4]> {
    let n = l.n as i64;
    let mut ata = [[0f64; 4]; 4];
    let mut atb = [0f64; 4];
    let mut count = 0;
    for y in 0..n {
        for x in 0..n {
            let Some(c) = known(l.n, x, y) else { continue };
            let mut edge = 0.0;
            let mut corner = 0.0;
            let mut all = true;
            for (dx, dy) in NEIGHBOURS {
                match known(l.n, x + dx, y + dy) {
                    Some(d) => {
                        let d = f64::from(u8::from(d));
                        if dx == 0 || dy == 0 {
                            edge += d;
                        } else {
                            corner += d;
                        }
                    }
                    None => all = false,
                }
            }
            if !all {
                continue;
            }
            let row = [1.0, f64::from(u8::from(c)), edge, corner];
            let s = f64::from(l.v[(y * n + x) as usize]);
            for i in 0..4 {
                for j in 0..4 {
                    ata[i][j] += row[i] * row[j];
                }
                atb[i] += row[i] * s;
            }
            count += 1;
        }
    }
    if count < 40 {
        return None;
    }
    let p = solve4(ata, atb)?;
    Some(p.map(|v| v as f32))
}

const NEIGHBOURS: [(i64, i64); 8] = [
    (-1, 0),
    (1, 0),
    (0, -1),
    (0, 1),
    (-1, -1),
    (1, -1),
    (-1, 1),
    (1, 1),
];

/// Reads the lattice: the blur model fitted, the unknown modules solved for, `rqrr` decoding the
/// bits. `None` when the model makes no sense (the grid is not on a code) or the bits do not
/// decode.
pub fn read(l: &Lattice) -> Option<String> {
    let bits = Bits {
        n: l.n,
        dark: solve(l)?,
    };
    let (_, text) = rqrr::Grid::new(bits).decode().ok()?;
    Some(text)
}

/// The modules' colours (true = dark) under the fitted blur model.
pub fn solve(l: &Lattice) -> Option<Vec<bool>> {
    let [p0, p1, p2, p3] = fit(l)?;
    // dark must be darker, and the module's own colour must matter more than a neighbour's
    // (a grid off by half a module does not)
    if p1 > -8.0 || p2 < p1 || p3 < p1 {
        return None;
    }
    let n = l.n;
    let ni = n as i64;
    let mut b: Vec<f32> = Vec::with_capacity(n * n);
    let fixed: Vec<Option<bool>> = (0..ni * ni).map(|i| known(n, i % ni, i / ni)).collect();
    let flat = p1 + 4.0 * p2 + 4.0 * p3;
    for (i, k) in fixed.iter().enumerate() {
        b.push(match k {
            Some(d) => f32::from(u8::from(*d)),
            None => ((l.v[i] - p0) / flat).clamp(0.0, 1.0),
        });
    }
    let at = |b: &[f32], x: i64, y: i64| {
        if x < 0 || y < 0 || x >= ni || y >= ni {
            0.0
        } else {
            b[(y * ni + x) as usize]
        }
    };
    for _ in 0..12 {
        for y in 0..ni {
            for x in 0..ni {
                let i = (y * ni + x) as usize;
                if fixed[i].is_some() {
                    continue;
                }
                let edge =
                    at(&b, x - 1, y) + at(&b, x + 1, y) + at(&b, x, y - 1) + at(&b, x, y + 1);
                let corner = at(&b, x - 1, y - 1)
                    + at(&b, x + 1, y - 1)
                    + at(&b, x - 1, y + 1)
                    + at(&b, x + 1, y + 1);
                b[i] = ((l.v[i] - p0 - p2 * edge - p3 * corner) / p1).clamp(0.0, 1.0);
            }
        }
    }
    Some(b.iter().map(|v| *v > 0.5).collect())
}

struct Bits {
    n: usize,
    dark: Vec<bool>,
}

impl rqrr::BitGrid for Bits {
    fn size(&self) -> usize {
        self.n
    }

    fn bit(&self, y: usize, x: usize) -> bool {
        self.dark[y * self.n + x]
    }
}

/// Gaussian elimination with partial pivoting.
fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> Option<[f64; 4]> {
    for c in 0..4 {
        let p = (c..4).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-9 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..4 {
            let pivot = a[c];
            let f = a[r][c] / pivot[c];
            for (v, p) in a[r].iter_mut().zip(pivot).skip(c) {
                *v -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0f64; 4];
    for c in (0..4).rev() {
        let s: f64 = (c + 1..4).map(|k| a[c][k] * x[k]).sum();
        x[c] = (b[c] - s) / a[c][c];
    }
    Some(x)
}

/// The projective map taking the four points `from` to `to`.
fn homography(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Option<[f64; 8]> {
    // 8 unknowns, two equations per point
    let mut a = [[0f64; 9]; 8];
    for (k, (p, q)) in from.iter().zip(to).enumerate() {
        let [x, y] = *p;
        let [u, v] = *q;
        a[2 * k] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * k + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    for c in 0..8 {
        let p = (c..8).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        for r in 0..8 {
            if r != c {
                let pivot = a[c];
                let f = a[r][c] / pivot[c];
                for (v, p) in a[r].iter_mut().zip(pivot).skip(c) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut h = [0f64; 8];
    for (c, v) in h.iter_mut().enumerate() {
        *v = a[c][8] / a[c][c];
    }
    Some(h)
}

fn map(h: &[f64; 8], x: f64, y: f64) -> (f64, f64) {
    let d = h[6] * x + h[7] * y + 1.0;
    (
        (h[0] * x + h[1] * y + h[2]) / d,
        (h[3] * x + h[4] * y + h[5]) / d,
    )
}

/// Bilinear sample at (`x`, `y`), pixel centres at half-integers.
fn bilinear(img: &GrayImage, x: f32, y: f32) -> Option<f32> {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_modules_of_a_version_2_code() {
        let n = 25;
        // finder ring, its light ring, its centre, the separator
        assert_eq!(known(n, 0, 0), Some(true));
        assert_eq!(known(n, 1, 1), Some(false));
        assert_eq!(known(n, 3, 3), Some(true));
        assert_eq!(known(n, 7, 3), Some(false));
        assert_eq!(known(n, 24, 0), Some(true));
        assert_eq!(known(n, 17, 0), Some(false));
        // timing, the dark module, the alignment pattern at (18, 18), the quiet zone
        assert_eq!(known(n, 8, 6), Some(true));
        assert_eq!(known(n, 9, 6), Some(false));
        assert_eq!(known(n, 8, 17), Some(true));
        assert_eq!(known(n, 18, 18), Some(true));
        assert_eq!(known(n, 17, 18), Some(false));
        assert_eq!(known(n, 16, 18), Some(true));
        assert_eq!(known(n, -1, 5), Some(false));
        // data
        assert_eq!(known(n, 12, 12), None);
    }

    #[test]
    fn a_located_code_reads_from_its_lattice_and_a_wrong_size_does_not() {
        let p = sim::camera::locker::presentation(sim::camera::locker::Hardness::Easy, 3, 1);
        let f = &p.frames[0];
        let (w, h) = f.dimensions();
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
                f.get_pixel(x as u32, y as u32).0[0]
            });
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1);
        let n = rqrr::BitGrid::size(&grids[0].grid);
        let l = sample(f, n, n, &grids[0].bounds).unwrap();
        assert_eq!(read(&l), Some(p.text.clone()));
        // the same grid read as the next version: no code, and certainly no other one
        let off = sample(f, n, n + 4, &grids[0].bounds).unwrap();
        assert_eq!(read(&off), None);
    }

    #[test]
    fn a_grid_fitted_to_the_gates_finders_reads_the_code() {
        for seed in [3, 4] {
            let p = sim::camera::locker::presentation(sim::camera::locker::Hardness::Easy, seed, 1);
            let f = &p.frames[0];
            let s = crate::qr::finder::FinderScanner::default()
                .scan(f)
                .sighting
                .unwrap();
            let grids = fit_grids(
                f,
                [s.corner.x, s.corner.y],
                [s.a.x, s.a.y],
                [s.b.x, s.b.y],
                s.module,
                2,
            );
            let l = sample_grid(f, &grids[0]).unwrap();
            assert_eq!(read(&l), Some(p.text.clone()), "seed {seed}");
            // the runner-up is another version: it reads nothing
            assert_ne!(grids[1].n, grids[0].n);
            let other = sample_grid(f, &grids[1]).unwrap();
            assert_eq!(read(&other), None);
        }
    }

    #[test]
    fn homography_maps_the_four_points() {
        let from = [[0.0, 0.0], [26.0, 0.0], [26.0, 26.0], [0.0, 26.0]];
        let to = [[10.0, 12.0], [110.0, 20.0], [105.0, 118.0], [4.0, 113.0]];
        let h = homography(&from, &to).unwrap();
        for (p, q) in from.iter().zip(&to) {
            let (u, v) = map(&h, p[0], p[1]);
            assert!((u - q[0]).abs() < 1e-6 && (v - q[1]).abs() < 1e-6);
        }
    }
}
