//! Generated QR codes on a 640×480 camera-like frame, and the ways a camera degrades them.
//! Shared by the QR tests and the `qr_decode` bench (`#[path]`-included there).

#![allow(dead_code)]

use image::{GrayImage, Luma};
use imageproc::geometric_transformations::{rotate_about_center, Interpolation};

pub const FRAME_W: u32 = 640;
pub const FRAME_H: u32 = 480;

/// A condition the camera might see a code in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Clean,
    Blur(f32),
    Noise(f64),
    Rotate(f32),
    LowContrast(u8, u8),
    /// Blur and noise and a tilt together: a phone screen held at arm's length.
    Combined,
}

impl Condition {
    pub const ALL: &'static [Condition] = &[
        Condition::Clean,
        Condition::Blur(1.0),
        Condition::Blur(2.0),
        Condition::Blur(3.0),
        Condition::Noise(20.0),
        Condition::Noise(45.0),
        Condition::Rotate(15.0),
        Condition::Rotate(45.0),
        Condition::LowContrast(100, 150),
        Condition::LowContrast(115, 135),
        Condition::Combined,
    ];

    pub fn name(&self) -> String {
        match self {
            Condition::Clean => "clean".into(),
            Condition::Blur(s) => format!("blur sigma {s}"),
            Condition::Noise(s) => format!("noise sd {s}"),
            Condition::Rotate(d) => format!("rotate {d} deg"),
            Condition::LowContrast(a, b) => format!("contrast {a}..{b}"),
            Condition::Combined => "blur 1.5 + noise 15 + rotate 20".into(),
        }
    }
}

/// A frame with `text` as a QR code of `module_px` pixels per module, centred on a grey
/// background with some texture (a locker camera never sees a flat field).
pub fn frame_with_code(text: &str, module_px: u32) -> GrayImage {
    let code = qrcode::QrCode::new(text.as_bytes()).expect("code fits");
    let w = code.width() as u32;
    let colors = code.to_colors();
    let quiet = 4;
    let side = (w + 2 * quiet) * module_px;
    let mut frame = background();
    let x0 = (FRAME_W.saturating_sub(side)) / 2;
    let y0 = (FRAME_H.saturating_sub(side)) / 2;
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (x / module_px, y / module_px);
            let dark = mx >= quiet
                && my >= quiet
                && mx < w + quiet
                && my < w + quiet
                && colors[((my - quiet) * w + (mx - quiet)) as usize] == qrcode::Color::Dark;
            let (fx, fy) = (x0 + x, y0 + y);
            if fx < FRAME_W && fy < FRAME_H {
                frame.put_pixel(fx, fy, Luma([if dark { 20 } else { 235 }]));
            }
        }
    }
    frame
}

/// The scene without a code: a soft gradient and a few shapes.
pub fn background() -> GrayImage {
    GrayImage::from_fn(FRAME_W, FRAME_H, |x, y| {
        let g = 90 + (x * 60 / FRAME_W) + (y * 40 / FRAME_H);
        let stripe = if (x / 40 + y / 60) % 7 == 0 { 25 } else { 0 };
        Luma([(g + stripe) as u8])
    })
}

pub fn degrade(frame: &GrayImage, c: Condition, seed: u64) -> GrayImage {
    match c {
        Condition::Clean => frame.clone(),
        Condition::Blur(s) => image::imageops::blur(frame, s),
        Condition::Noise(sd) => imageproc::noise::gaussian_noise(frame, 0.0, sd, seed),
        Condition::Rotate(deg) => rotate_about_center(
            frame,
            deg.to_radians(),
            Interpolation::Bilinear,
            Luma([128]),
        ),
        Condition::LowContrast(lo, hi) => {
            let mut out = frame.clone();
            for p in out.pixels_mut() {
                let v = f32::from(p.0[0]) / 255.0;
                p.0[0] = (f32::from(lo) + v * f32::from(hi - lo)) as u8;
            }
            out
        }
        Condition::Combined => {
            let r = rotate_about_center(
                frame,
                20f32.to_radians(),
                Interpolation::Bilinear,
                Luma([128]),
            );
            let b = image::imageops::blur(&r, 1.5);
            imageproc::noise::gaussian_noise(&b, 0.0, 15.0, seed)
        }
    }
}
