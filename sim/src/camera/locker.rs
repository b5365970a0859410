//! What the locker's QR camera sees, seeded and reproducible: idle scenes (door panels with gaps
//! and numbers, signage, a keypad, shading, a customer's phone or a paper slip with no code on
//! it) and *presentations* (a customer holding one code up for 20 frames, each frame shaken,
//! blurred, noisy, small, low-resolution or JPEG-compressed in its own way).
//!
//! Used by the locker's QR bench and tests: a decoder that is cheap on [`IdleScene`] frames and
//! reads [`presentation`]s is one that works in front of a real locker. Same seed, same pixels
//! (own PRNG and own drawing: no dependency's version changes a frame).
//!
//! Drawing is in floating point on a [`Canvas`] (area-weighted edges, perspective pastes with
//! supersampling), then a camera model: optics blur, motion blur, sensor noise, quantisation,
//! optionally a 320×240 sensor scaled up, or JPEG.

use image::GrayImage;

/// The locker camera's frame.
pub const W: usize = 640;
pub const H: usize = 480;

/// splitmix64: small, fast, and stable forever (a frame is a function of its seed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f()
    }
    /// Uniform in `lo..=hi`.
    pub fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u64() % (hi - lo + 1).max(1) as u64) as i32
    }
    pub fn chance(&mut self, p: f32) -> bool {
        self.f() < p
    }
    /// Standard normal (Box-Muller).
    pub fn gauss(&mut self) -> f32 {
        let u = self.f().max(1e-7);
        let v = self.f();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// A grey picture in floating point (0 black, 255 white).
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    pub px: Vec<f32>,
}

impl Canvas {
    pub fn new(w: usize, h: usize, v: f32) -> Self {
        Self {
            w,
            h,
            px: vec![v; w * h],
        }
    }

    fn at(&self, x: i64, y: i64) -> f32 {
        let x = x.clamp(0, self.w as i64 - 1) as usize;
        let y = y.clamp(0, self.h as i64 - 1) as usize;
        self.px[y * self.w + x]
    }

    /// Bilinear sample, pixel centres at +0.5.
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let (x, y) = (x - 0.5, y - 0.5);
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let a = self.at(x0, y0) * (1.0 - fx) + self.at(x0 + 1, y0) * fx;
        let b = self.at(x0, y0 + 1) * (1.0 - fx) + self.at(x0 + 1, y0 + 1) * fx;
        a * (1.0 - fy) + b * fy
    }

    /// An axis-aligned rectangle, its edges weighted by the area they cover.
    pub fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, v: f32) {
        let (x0, x1) = (x0.max(0.0), x1.min(self.w as f32));
        let (y0, y1) = (y0.max(0.0), y1.min(self.h as f32));
        if x1 <= x0 || y1 <= y0 {
            return;
        }
        for iy in y0.floor() as usize..(y1.ceil() as usize).min(self.h) {
            let cy = (y1.min(iy as f32 + 1.0) - y0.max(iy as f32)).clamp(0.0, 1.0);
            for ix in x0.floor() as usize..(x1.ceil() as usize).min(self.w) {
                let cx = (x1.min(ix as f32 + 1.0) - x0.max(ix as f32)).clamp(0.0, 1.0);
                let a = cx * cy;
                let p = &mut self.px[iy * self.w + ix];
                *p = *p * (1.0 - a) + v * a;
            }
        }
    }

    /// A filled ellipse (soft edge one pixel wide).
    pub fn ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, v: f32) {
        let (x0, x1) = ((cx - rx - 1.0).max(0.0), (cx + rx + 1.0).min(self.w as f32));
        let (y0, y1) = ((cy - ry - 1.0).max(0.0), (cy + ry + 1.0).min(self.h as f32));
        for iy in y0 as usize..y1 as usize {
            for ix in x0 as usize..x1 as usize {
                let dx = (ix as f32 + 0.5 - cx) / rx;
                let dy = (iy as f32 + 0.5 - cy) / ry;
                let d = (dx * dx + dy * dy).sqrt();
                let a = ((1.0 - d) * rx.min(ry)).clamp(0.0, 1.0);
                let p = &mut self.px[iy * self.w + ix];
                *p = *p * (1.0 - a) + v * a;
            }
        }
    }

    /// Text in the 5×7 font, `cell` pixels per font dot; returns the width drawn.
    pub fn text(&mut self, s: &str, x: f32, y: f32, cell: f32, v: f32) -> f32 {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch);
            for (r, bits) in g.iter().enumerate() {
                for c in 0..5 {
                    if bits & (0x10 >> c) != 0 {
                        let gx = cx + c as f32 * cell;
                        let gy = y + r as f32 * cell;
                        self.rect(gx, gy, gx + cell, gy + cell, v);
                    }
                }
            }
            cx += 6.0 * cell;
        }
        cx - x
    }

    /// Pastes `src` into the quadrilateral `quad` (corners of `src` top-left, top-right,
    /// bottom-right, bottom-left), in perspective, `ss`×`ss` samples per pixel. `nearest` samples
    /// `src` without interpolation (a QR code drawn one pixel per module).
    pub fn paste(&mut self, src: &Canvas, quad: [[f32; 2]; 4], ss: usize, nearest: bool) {
        let Some(inv) = square_to_quad(quad).and_then(invert) else {
            return;
        };
        let xs = quad.iter().map(|p| p[0]);
        let ys = quad.iter().map(|p| p[1]);
        let x0 = xs.clone().fold(f32::MAX, f32::min).floor().max(0.0) as usize;
        let x1 = (xs.fold(f32::MIN, f32::max).ceil().max(0.0) as usize).min(self.w);
        let y0 = ys.clone().fold(f32::MAX, f32::min).floor().max(0.0) as usize;
        let y1 = (ys.fold(f32::MIN, f32::max).ceil().max(0.0) as usize).min(self.h);
        let n = (ss * ss) as f32;
        for iy in y0..y1 {
            for ix in x0..x1 {
                let (mut acc, mut cov) = (0.0, 0.0);
                for sy in 0..ss {
                    for sx in 0..ss {
                        let x = ix as f32 + (sx as f32 + 0.5) / ss as f32;
                        let y = iy as f32 + (sy as f32 + 0.5) / ss as f32;
                        let (u, v) = apply(&inv, x, y);
                        if (0.0..1.0).contains(&u) && (0.0..1.0).contains(&v) {
                            let (sx, sy) = (u * src.w as f32, v * src.h as f32);
                            acc += if nearest {
                                src.px[(sy as usize).min(src.h - 1) * src.w
                                    + (sx as usize).min(src.w - 1)]
                            } else {
                                src.sample(sx, sy)
                            };
                            cov += 1.0;
                        }
                    }
                }
                if cov > 0.0 {
                    let a = cov / n;
                    let p = &mut self.px[iy * self.w + ix];
                    *p = *p * (1.0 - a) + acc / cov * a;
                }
            }
        }
    }

    /// Gaussian blur (separable, edges clamped).
    pub fn blur(&mut self, sigma: f32) {
        if sigma < 0.05 {
            return;
        }
        let r = (sigma * 3.0).ceil() as i64;
        let k: Vec<f32> = (-r..=r)
            .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let sum: f32 = k.iter().sum();
        let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
        let mut tmp = vec![0.0; self.px.len()];
        for y in 0..self.h {
            for x in 0..self.w {
                let mut a = 0.0;
                for (i, kv) in k.iter().enumerate() {
                    a += kv * self.at(x as i64 + i as i64 - r, y as i64);
                }
                tmp[y * self.w + x] = a;
            }
        }
        let src = Canvas {
            w: self.w,
            h: self.h,
            px: tmp,
        };
        for y in 0..self.h {
            for x in 0..self.w {
                let mut a = 0.0;
                for (i, kv) in k.iter().enumerate() {
                    a += kv * src.at(x as i64, y as i64 + i as i64 - r);
                }
                self.px[y * self.w + x] = a;
            }
        }
    }

    /// Linear motion blur: each pixel the mean along a line `len` pixels long at `angle`.
    pub fn motion_blur(&mut self, len: f32, angle: f32) {
        if len < 0.5 {
            return;
        }
        let n = (len.ceil() as usize * 2).max(2);
        let (dx, dy) = (angle.cos() * len, angle.sin() * len);
        let src = self.clone();
        for y in 0..self.h {
            for x in 0..self.w {
                let mut a = 0.0;
                for i in 0..n {
                    let t = (i as f32 + 0.5) / n as f32 - 0.5;
                    a += src.sample(x as f32 + 0.5 + t * dx, y as f32 + 0.5 + t * dy);
                }
                self.px[y * self.w + x] = a / n as f32;
            }
        }
    }

    /// Adds Gaussian sensor noise.
    pub fn noise(&mut self, sd: f32, rng: &mut Rng) {
        if sd <= 0.0 {
            return;
        }
        for p in &mut self.px {
            *p += rng.gauss() * sd;
        }
    }

    /// Each pixel the mean of a 2×2 block: the same scene on a sensor of half the resolution.
    pub fn half(&self) -> Canvas {
        let (w, h) = (self.w / 2, self.h / 2);
        let mut out = Canvas::new(w, h, 0.0);
        for y in 0..h {
            for x in 0..w {
                let i = 2 * y * self.w + 2 * x;
                out.px[y * w + x] =
                    (self.px[i] + self.px[i + 1] + self.px[i + self.w] + self.px[i + self.w + 1])
                        / 4.0;
            }
        }
        out
    }

    pub fn to_gray(&self) -> GrayImage {
        let raw = self
            .px
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        GrayImage::from_raw(self.w as u32, self.h as u32, raw)
            .unwrap_or_else(|| GrayImage::new(self.w as u32, self.h as u32))
    }

    pub fn from_gray(img: &GrayImage) -> Canvas {
        Canvas {
            w: img.width() as usize,
            h: img.height() as usize,
            px: img.as_raw().iter().map(|&v| f32::from(v)).collect(),
        }
    }
}

type Mat3 = [[f32; 3]; 3];

/// The homography taking the unit square to `q` (Heckbert's closed form).
fn square_to_quad(q: [[f32; 2]; 4]) -> Option<Mat3> {
    let [[x0, y0], [x1, y1], [x2, y2], [x3, y3]] = q;
    let (dx1, dx2, dx3) = (x1 - x2, x3 - x2, x0 - x1 + x2 - x3);
    let (dy1, dy2, dy3) = (y1 - y2, y3 - y2, y0 - y1 + y2 - y3);
    let den = dx1 * dy2 - dx2 * dy1;
    if den.abs() < 1e-9 {
        return None;
    }
    let g = (dx3 * dy2 - dx2 * dy3) / den;
    let h = (dx1 * dy3 - dx3 * dy1) / den;
    Some([
        [x1 - x0 + g * x1, x3 - x0 + h * x3, x0],
        [y1 - y0 + g * y1, y3 - y0 + h * y3, y0],
        [g, h, 1.0],
    ])
}

fn invert(m: Mat3) -> Option<Mat3> {
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let a = [
        [c(1, 1, 2, 2), -c(0, 1, 2, 2), c(0, 1, 1, 2)],
        [-c(1, 0, 2, 2), c(0, 0, 2, 2), -c(0, 0, 1, 2)],
        [c(1, 0, 2, 1), -c(0, 0, 2, 1), c(0, 0, 1, 1)],
    ];
    let det = m[0][0] * a[0][0] + m[0][1] * a[1][0] + m[0][2] * a[2][0];
    if det.abs() < 1e-12 {
        return None;
    }
    Some(a.map(|r| r.map(|v| v / det)))
}

fn apply(m: &Mat3, x: f32, y: f32) -> (f32, f32) {
    let w = m[2][0] * x + m[2][1] * y + m[2][2];
    (
        (m[0][0] * x + m[0][1] * y + m[0][2]) / w,
        (m[1][0] * x + m[1][1] * y + m[1][2]) / w,
    )
}

/// A rectangle of `w`×`h` centred on `c`, rotated by `angle` (radians), its top edge narrowed and
/// its bottom widened by `keystone` (a fraction: a card tilted towards the camera).
pub fn quad(c: [f32; 2], w: f32, h: f32, angle: f32, keystone: f32) -> [[f32; 2]; 4] {
    let (s, co) = angle.sin_cos();
    let corner = |u: f32, v: f32| {
        let k = 1.0 + keystone * v;
        let (x, y) = (u * w / 2.0 * k, v * h / 2.0);
        [c[0] + x * co - y * s, c[1] + x * s + y * co]
    };
    [
        corner(-1.0, -1.0),
        corner(1.0, -1.0),
        corner(1.0, 1.0),
        corner(-1.0, 1.0),
    ]
}

/// The 5×7 font: rows top to bottom, bit 4 the leftmost dot. Lower case prints as upper case.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        _ => [0; 7],
    }
}

const SIGNS: &[&str] = &[
    "SKYPOST PARCEL LOCKER",
    "SCAN YOUR CODE HERE",
    "HOLD PHONE 20 CM FROM CAMERA",
    "PICKUP 24/7",
    "SERVICE +41 44 555 01 23",
    "NO SMOKING",
    "EMERGENCY EXIT >",
    "CCTV IN OPERATION",
    "MAX LOAD 25 KG",
    "LOCKER 0042 - BAHNHOFSTRASSE 12",
];

const WORDS: &[&str] = &[
    "ORDER",
    "PARCEL",
    "DELIVERED",
    "TODAY",
    "12:45",
    "YOUR",
    "CODE",
    "WILL",
    "ARRIVE",
    "SOON",
    "THANK",
    "YOU",
    "TOTAL",
    "CHF",
    "19.90",
    "RECEIPT",
    "#4471",
    "CARD",
    "VISA",
    "MESSAGES",
];

/// A static locker scene; [`IdleScene::frame`] adds each frame's sensor noise and flicker.
#[derive(Debug, Clone)]
pub struct IdleScene {
    /// The scene through the lens, before the sensor.
    lit: Canvas,
    noise_sd: f32,
    seed: u64,
}

impl IdleScene {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut c = Canvas::new(W, H, rng.range(80.0, 170.0));
        draw_locker_front(&mut c, &mut rng);
        if rng.chance(0.45) {
            draw_phone(&mut c, &mut rng, None);
        } else if rng.chance(0.55) {
            draw_slip(&mut c, &mut rng);
        }
        shade(&mut c, &mut rng);
        c.blur(rng.range(0.5, 1.0));
        Self {
            lit: c,
            noise_sd: rng.range(1.5, 5.0),
            seed,
        }
    }

    /// Frame `i` of this scene: the same picture with its own noise and a little flicker.
    pub fn frame(&self, i: u64) -> GrayImage {
        let mut rng = Rng::new(self.seed.rotate_left(17) ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut c = self.lit.clone();
        let gain = 1.0 + rng.gauss() * 0.01;
        for p in &mut c.px {
            *p *= gain;
        }
        c.noise(self.noise_sd, &mut rng);
        c.to_gray()
    }
}

/// One idle frame: `IdleScene::new(seed).frame(0)`.
pub fn idle_frame(seed: u64) -> GrayImage {
    IdleScene::new(seed).frame(0)
}

/// Door panels with gaps, numbers, locks and vents; a sign; sometimes a keypad.
fn draw_locker_front(c: &mut Canvas, rng: &mut Rng) {
    let gap = rng.range(2.0, 6.0);
    let gap_v = rng.range(20.0, 60.0);
    let dw = rng.range(140.0, 260.0);
    let dh = rng.range(90.0, 200.0);
    let ox = -rng.range(0.0, dw);
    let oy = -rng.range(0.0, dh);
    let panel = rng.range(140.0, 215.0);
    c.rect(0.0, 0.0, W as f32, H as f32, gap_v);
    let mut number = rng.int(1, 40);
    let mut y = oy;
    while y < H as f32 {
        let mut x = ox;
        while x < W as f32 {
            let v = panel + rng.range(-10.0, 10.0);
            c.rect(
                x + gap / 2.0,
                y + gap / 2.0,
                x + dw - gap / 2.0,
                y + dh - gap / 2.0,
                v,
            );
            // the number, on a plate or straight on the panel
            let cell = rng.range(2.0, 5.0);
            let (nx, ny) = (x + rng.range(10.0, 30.0), y + rng.range(8.0, 20.0));
            let label = format!("{number:02}");
            if rng.chance(0.5) {
                let plate = rng.range(200.0, 240.0);
                c.rect(
                    nx - cell,
                    ny - cell,
                    nx + 12.0 * cell,
                    ny + 8.0 * cell,
                    plate,
                );
            }
            c.text(&label, nx, ny, cell, rng.range(20.0, 70.0));
            number += 1;
            // the lock: a keyhole or a handle
            let (lx, ly) = (x + dw - rng.range(20.0, 40.0), y + dh / 2.0);
            if rng.chance(0.5) {
                c.ellipse(lx, ly, 6.0, 6.0, rng.range(30.0, 90.0));
                c.rect(lx - 1.5, ly, lx + 1.5, ly + 8.0, 20.0);
            } else {
                c.rect(
                    lx - 4.0,
                    ly - 25.0,
                    lx + 4.0,
                    ly + 25.0,
                    rng.range(40.0, 110.0),
                );
            }
            // vents: rows of slits, or a grid of holes
            if rng.chance(0.3) {
                let (sw, sh, sg) = (
                    rng.range(25.0, 60.0),
                    rng.range(2.0, 5.0),
                    rng.range(3.0, 7.0),
                );
                let (vx, vy) = (x + dw / 2.0 - sw / 2.0, y + dh - rng.range(40.0, 70.0));
                for k in 0..rng.int(4, 8) {
                    let sy = vy + k as f32 * (sh + sg);
                    c.rect(vx, sy, vx + sw, sy + sh, rng.range(20.0, 60.0));
                }
            } else if rng.chance(0.2) {
                let pitch = rng.range(4.0, 9.0);
                let (vx, vy) = (x + 20.0, y + dh - 50.0);
                for j in 0..5 {
                    for i in 0..((dw - 60.0) / pitch) as i32 {
                        let (hx, hy) = (vx + i as f32 * pitch, vy + j as f32 * pitch);
                        c.rect(hx, hy, hx + pitch * 0.45, hy + pitch * 0.45, 40.0);
                    }
                }
            }
            x += dw;
        }
        y += dh;
    }
    // a sign across the top or bottom: dark text on light, or light on dark
    let cell = rng.range(2.0, 6.0);
    let lines = rng.int(1, 3);
    let band_h = lines as f32 * 10.0 * cell + 2.0 * cell;
    let by = if rng.chance(0.5) {
        rng.range(0.0, 40.0)
    } else {
        H as f32 - band_h - rng.range(0.0, 40.0)
    };
    let dark_band = rng.chance(0.5);
    let (band, ink) = if dark_band {
        (rng.range(20.0, 60.0), rng.range(200.0, 245.0))
    } else {
        (rng.range(200.0, 245.0), rng.range(10.0, 50.0))
    };
    c.rect(0.0, by, W as f32, by + band_h, band);
    for l in 0..lines {
        let text = rng.pick(SIGNS);
        c.text(
            text,
            rng.range(4.0, 60.0),
            by + cell + l as f32 * 10.0 * cell,
            cell,
            ink,
        );
    }
    // a keypad: a grid of square keys with digits
    if rng.chance(0.35) {
        let key = rng.range(22.0, 40.0);
        let (kx, ky) = (
            rng.range(20.0, W as f32 - 4.0 * key),
            rng.range(60.0, H as f32 - 5.0 * key),
        );
        c.rect(
            kx - 8.0,
            ky - 8.0,
            kx + 3.2 * key + 8.0,
            ky + 4.3 * key + 8.0,
            60.0,
        );
        let keys = "123456789*0#";
        for (i, ch) in keys.chars().enumerate() {
            let (col, row) = ((i % 3) as f32, (i / 3) as f32);
            let (x, y) = (kx + col * 1.1 * key, ky + row * 1.1 * key);
            c.rect(x, y, x + key, y + key, 190.0);
            let cell = key / 12.0;
            c.text(
                &ch.to_string(),
                x + key / 2.0 - 2.5 * cell,
                y + key / 2.0 - 3.5 * cell,
                cell,
                30.0,
            );
        }
    }
}

/// A customer's phone, held at an angle; `screen` replaces its app screen (a code on it).
fn draw_phone(c: &mut Canvas, rng: &mut Rng, screen: Option<&Canvas>) {
    let pw = rng.range(110.0, 190.0);
    let ph = pw * rng.range(1.9, 2.1);
    let (sw, sh) = (pw.round() as usize, ph.round() as usize);
    let mut p = Canvas::new(sw, sh, rng.range(10.0, 35.0));
    let m = pw * 0.06;
    let bright = rng.range(180.0, 245.0);
    p.rect(m, m * 1.6, pw - m, ph - m * 1.6, bright);
    match screen {
        Some(s) => {
            let side = pw - 2.0 * m;
            let top = ph / 2.0 - side / 2.0;
            p.paste(
                s,
                [
                    [m, top],
                    [m + side, top],
                    [m + side, top + side],
                    [m, top + side],
                ],
                2,
                false,
            );
        }
        None => {
            let ink = rng.range(10.0, 60.0);
            let cell = (pw / 110.0).max(1.0);
            p.text("12:45", m + 4.0, m * 1.6 + 3.0, cell, ink);
            p.rect(
                pw - m - 16.0 * cell,
                m * 1.6 + 3.0,
                pw - m - 4.0,
                m * 1.6 + 3.0 + 6.0 * cell,
                ink,
            );
            if rng.chance(0.5) {
                // app icons
                let icon = (pw - 2.0 * m) / 5.0;
                for r in 0..5 {
                    for col in 0..4 {
                        let x = m + icon * 0.3 + col as f32 * icon * 1.2;
                        let y = m * 1.6 + 20.0 * cell + r as f32 * icon * 1.4;
                        let v = rng.range(30.0, 220.0);
                        p.rect(x, y, x + icon, y + icon, v);
                        let gv = if v > 128.0 { 20.0 } else { 240.0 };
                        let ch = *rng.pick(&['M', 'C', 'A', 'P', '8', 'O', 'S']);
                        p.text(
                            &ch.to_string(),
                            x + icon * 0.3,
                            y + icon * 0.2,
                            icon / 12.0,
                            gv,
                        );
                    }
                }
            } else {
                // a message thread
                let mut y = m * 1.6 + 18.0 * cell;
                while y < ph - m * 2.0 - 10.0 * cell {
                    let bubble = rng.range(150.0, 225.0);
                    let left = rng.chance(0.5);
                    let bw = rng.range(0.4, 0.75) * (pw - 2.0 * m);
                    let x = if left { m + 3.0 } else { pw - m - 3.0 - bw };
                    let lines = rng.int(1, 3) as f32;
                    p.rect(x, y, x + bw, y + lines * 9.0 * cell + 4.0, bubble);
                    for l in 0..lines as i32 {
                        let word = format!("{} {}", rng.pick(WORDS), rng.pick(WORDS));
                        p.text(&word, x + 3.0, y + 3.0 + l as f32 * 9.0 * cell, cell, ink);
                    }
                    y += lines * 9.0 * cell + 10.0;
                }
            }
        }
    }
    let cx = rng.range(pw, W as f32 - pw);
    let cy = rng.range(ph * 0.45, H as f32 - ph * 0.3);
    // the hand holding it
    c.ellipse(
        cx,
        cy + ph * 0.35,
        pw * 0.7,
        ph * 0.3,
        rng.range(110.0, 170.0),
    );
    let q = quad(
        [cx, cy],
        pw,
        ph,
        rng.range(-0.45, 0.45),
        rng.range(-0.1, 0.1),
    );
    c.paste(&p, q, 2, false);
}

/// A paper slip: print, sometimes a 1D barcode (bars in every ratio a finder test could want).
fn draw_slip(c: &mut Canvas, rng: &mut Rng) {
    let (pw, ph) = (rng.range(120.0, 220.0), rng.range(160.0, 300.0));
    let mut p = Canvas::new(pw as usize, ph as usize, rng.range(215.0, 245.0));
    let ink = rng.range(10.0, 50.0);
    let cell = rng.range(1.2, 2.2);
    let mut y = 8.0;
    p.rect(6.0, y, 6.0 + 40.0 * cell, y + 10.0 * cell, ink);
    p.text("SKYPOST", 8.0, y + 1.5 * cell, cell, 235.0);
    y += 14.0 * cell;
    while y < ph * 0.6 {
        let word = format!(
            "{} {} {}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(WORDS)
        );
        p.text(&word, 6.0, y, cell, ink);
        y += 9.0 * cell;
    }
    if rng.chance(0.6) {
        let unit = rng.range(1.2, 2.5);
        let mut x = 10.0;
        let (y0, y1) = (ph * 0.66, ph * 0.66 + rng.range(25.0, 50.0));
        let mut dark = true;
        while x < pw - 10.0 {
            let wdt = unit * rng.int(1, 4) as f32;
            if dark {
                p.rect(x, y0, x + wdt, y1, ink);
            }
            dark = !dark;
            x += wdt;
        }
    }
    let cx = rng.range(pw * 0.6, W as f32 - pw * 0.6);
    let cy = rng.range(ph * 0.5, H as f32 - ph * 0.5);
    let q = quad(
        [cx, cy],
        pw,
        ph,
        rng.range(-0.6, 0.6),
        rng.range(-0.12, 0.12),
    );
    c.paste(&p, q, 2, false);
}

/// Light: vignetting, a gradient across the front, sometimes a soft shadow.
fn shade(c: &mut Canvas, rng: &mut Rng) {
    let gain = rng.range(0.7, 1.15);
    let vig = rng.range(0.1, 0.45);
    let (gx, gy) = (rng.range(-0.35, 0.35), rng.range(-0.35, 0.35));
    let shadow = rng.chance(0.4).then(|| {
        (
            rng.range(0.0, W as f32),
            rng.range(0.0, H as f32),
            rng.range(80.0, 300.0),
            rng.range(0.55, 0.85),
        )
    });
    let (cx, cy) = (W as f32 / 2.0, H as f32 / 2.0);
    for y in 0..c.h {
        for x in 0..c.w {
            let (u, v) = ((x as f32 - cx) / cx, (y as f32 - cy) / cy);
            let mut l = gain * (1.0 - vig * (u * u + v * v) / 2.0) * (1.0 + gx * u + gy * v);
            if let Some((sx, sy, r, depth)) = shadow {
                let d = ((x as f32 - sx).hypot(y as f32 - sy) / r).min(1.5);
                let t = ((1.2 - d) / 0.4).clamp(0.0, 1.0);
                l *= 1.0 - (1.0 - depth) * t;
            }
            c.px[y * c.w + x] *= l.max(0.05);
        }
    }
}

/// How a presentation is hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardness {
    /// Hand shake only, 4 px modules: every decoder reads it (the control).
    Easy,
    /// Motion blur of 1–2 modules per frame (the hand moving), direction drifting.
    MotionBlur,
    /// Out of focus: Gaussian blur of about half a module.
    Defocus,
    /// Heavy sensor noise (dim light, high gain).
    Noise,
    /// Versions 6–10 at 70–100 px: under 2 px per module.
    Small,
    /// A 320×240 sensor stream scaled up to 640×480.
    LowRes,
    /// Strong JPEG compression (quality 12–25).
    Jpeg,
}

impl Hardness {
    pub const ALL: &'static [Hardness] = &[
        Hardness::Easy,
        Hardness::MotionBlur,
        Hardness::Defocus,
        Hardness::Noise,
        Hardness::Small,
        Hardness::LowRes,
        Hardness::Jpeg,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Hardness::Easy => "easy (shake only)",
            Hardness::MotionBlur => "motion blur 1-2 modules",
            Hardness::Defocus => "defocus ~0.5 module",
            Hardness::Noise => "noise sd 30-45",
            Hardness::Small => "v6-10 at 70-100 px",
            Hardness::LowRes => "320x240 upscaled",
            Hardness::Jpeg => "JPEG q 12-25",
        }
    }
}

/// One customer holding one code up: the frames and what the code says.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub text: String,
    pub hardness: Hardness,
    /// Pixels per module, in the 640×480 frame.
    pub module_px: f32,
    pub frames: Vec<GrayImage>,
}

/// A pickup code's payload as the backend issues them (`SKP1-` and 20 base-32 characters).
pub fn payload(rng: &mut Rng) -> String {
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let s: String = (0..20)
        .map(|_| A[rng.int(0, 31) as usize] as char)
        .collect();
    format!("SKP1-{s}")
}

/// `frames` frames of one code presented under `hardness`, reproducible from `seed`.
pub fn presentation(hardness: Hardness, seed: u64, frames: usize) -> Presentation {
    let mut rng = Rng::new(seed ^ 0xC0DE_0000 ^ (hardness as u64) << 40);
    let text = payload(&mut rng);
    let (version, module_px) = match hardness {
        Hardness::Small => {
            let v = rng.int(6, 10);
            let n = 17 + 4 * v;
            (Some(v), rng.range(70.0, 100.0) / n as f32)
        }
        Hardness::LowRes => (None, rng.range(3.0, 4.0)),
        Hardness::Easy => (None, 4.0),
        _ => (None, rng.range(3.0, 4.5)),
    };
    let code = match version {
        Some(v) => qrcode::QrCode::with_version(
            text.as_bytes(),
            qrcode::Version::Normal(v as i16),
            qrcode::EcLevel::M,
        ),
        None => qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M),
    };
    let Ok(code) = code else {
        // never: the payload fits every version used here
        return Presentation {
            text,
            hardness,
            module_px,
            frames: Vec::new(),
        };
    };
    let n = code.width();
    let quiet = 4;
    let side = n + 2 * quiet;
    let (ink, paper) = (rng.range(10.0, 40.0), rng.range(200.0, 240.0));
    let mut card = Canvas::new(side, side, paper);
    for (i, col) in code.to_colors().iter().enumerate() {
        if *col == qrcode::Color::Dark {
            let (x, y) = ((i % n + quiet) as f32, (i / n + quiet) as f32);
            card.rect(x, y, x + 1.0, y + 1.0, ink);
        }
    }
    let scene = IdleScene::new(rng.next_u64());
    let card_px = side as f32 * module_px;
    let c0 = [
        rng.range(W as f32 * 0.3, W as f32 * 0.7),
        rng.range(H as f32 * 0.3, H as f32 * 0.7),
    ];
    let angle0 = rng.range(-0.5, 0.5);
    let keystone = rng.range(-0.12, 0.12);
    let blur_dir = rng.range(0.0, std::f32::consts::PI);
    let mut shake = [0.0f32; 3];
    let mut out = Vec::with_capacity(frames);
    for i in 0..frames {
        // hand shake: a damped random walk in position and angle
        shake[0] = 0.7 * shake[0] + rng.gauss() * 2.5;
        shake[1] = 0.7 * shake[1] + rng.gauss() * 2.5;
        shake[2] = 0.7 * shake[2] + rng.gauss() * 0.01;
        let mut c = scene.lit.clone();
        // the phone or card around the code, then the code
        let holder = quad(
            [c0[0] + shake[0], c0[1] + shake[1]],
            card_px * 1.25,
            card_px * 1.6,
            angle0 + shake[2],
            keystone,
        );
        c.paste(&Canvas::new(4, 4, rng.range(15.0, 30.0)), holder, 1, true);
        let q = quad(
            [c0[0] + shake[0], c0[1] + shake[1]],
            card_px,
            card_px,
            angle0 + shake[2],
            keystone,
        );
        c.paste(&card, q, 4, true);
        let mut frame_rng = Rng::new(seed.wrapping_mul(31).wrapping_add(i as u64) ^ 0xF00D);
        let r = &mut frame_rng;
        c.blur(0.6);
        let mut noise = r.range(2.0, 4.0);
        match hardness {
            Hardness::MotionBlur => {
                c.motion_blur(module_px * r.range(1.0, 2.0), blur_dir + r.range(-0.3, 0.3))
            }
            Hardness::Defocus => c.blur(module_px * r.range(0.42, 0.58)),
            Hardness::Noise => noise = r.range(30.0, 45.0),
            _ => {}
        }
        let frame = match hardness {
            Hardness::LowRes => {
                let mut low = c.half();
                low.noise(noise, r);
                image::imageops::resize(
                    &low.to_gray(),
                    W as u32,
                    H as u32,
                    image::imageops::FilterType::Triangle,
                )
            }
            Hardness::Jpeg => {
                c.noise(noise, r);
                jpeg(&c.to_gray(), r.int(12, 25) as u8)
            }
            _ => {
                c.noise(noise, r);
                c.to_gray()
            }
        };
        out.push(frame);
    }
    Presentation {
        text,
        hardness,
        module_px,
        frames: out,
    }
}

/// The frame after a JPEG round trip at `quality`.
pub fn jpeg(img: &GrayImage, quality: u8) -> GrayImage {
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality);
    if img.write_with_encoder(enc).is_err() {
        return img.clone();
    }
    image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .map(|i| i.to_luma8())
        .unwrap_or_else(|_| img.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_pixels_other_seed_other_scene() {
        assert_eq!(idle_frame(7), idle_frame(7));
        assert_ne!(idle_frame(7), idle_frame(8));
        let s = IdleScene::new(3);
        assert_ne!(s.frame(0), s.frame(1), "each frame has its own noise");
    }

    #[test]
    fn presentations_are_reproducible_and_shaken() {
        let a = presentation(Hardness::Easy, 5, 3);
        let b = presentation(Hardness::Easy, 5, 3);
        assert_eq!(a.text, b.text);
        assert_eq!(a.frames, b.frames);
        assert_ne!(a.frames[0], a.frames[1]);
        assert!(a.text.starts_with("SKP1-"));
    }

    #[test]
    fn homography_maps_corners() {
        let q = [[10.0, 20.0], [110.0, 25.0], [120.0, 140.0], [5.0, 130.0]];
        let m = square_to_quad(q).unwrap();
        for (uv, p) in [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
            .iter()
            .zip(q)
        {
            let (x, y) = apply(&m, uv.0, uv.1);
            assert!((x - p[0]).abs() < 1e-3 && (y - p[1]).abs() < 1e-3);
        }
        let inv = invert(m).unwrap();
        let (u, v) = apply(&inv, 120.0, 140.0);
        assert!((u - 1.0).abs() < 1e-4 && (v - 1.0).abs() < 1e-4);
    }
}
