//! QR decoding for the locker camera: a cheap gate, `rqrr` on the code's crop, OpenCV's WeChat
//! decoder as a second opinion (feature `opencv`), and reading across frames.
//!
//! Costs drive the order. A locker camera spends its life looking at no code, so a frame with no
//! code must cost about a millisecond:
//! 1. *unchanged*: the frame's 8×8-block means against those of the last frame judged idle; if
//!    no block moved (beyond sensor noise and a global change of light), the verdict stands and
//!    nothing else runs;
//! 2. *the finder gate* ([`finder`]): finder patterns confirmed along a row, a column and a
//!    diagonal, and three of them with one module size at a right angle. No such triple: idle.
//!
//! Only with a triple do the decoders run: the module [`lattice`] on a grid fitted to the gate's
//! finders (blur undone on the lattice; defocus, modules under 2 px), alone and averaged with the
//! presentation's earlier frames; `rqrr` on the crop around the code (a fraction of the frame);
//! WeChat; `rqrr` on cleaned-up crops (contrast stretched, smoothed, enlarged). The grid comes
//! first because it starts from finders the gate has already placed, where `rqrr` finds them
//! again and then fits its own grid by a blind search (most of its time on a code frame): it
//! reads the same frames for about two-thirds of the instructions. A code seen but
//! not read goes on the multi-frame [`stack`], which tries the sharpest recent frame enlarged,
//! then all recent frames registered and averaged on a finer grid, within the per-frame budget.
//! For a few frames after that the code's grid is followed where the gate misses it. Every result is Reed-Solomon checked by the decoder that read it and must
//! look like a payload ([`plausible_payload`]).

pub mod finder;
pub mod lattice;
pub mod stack;

use finder::{FinderScanner, Sighting};
use image::{GrayImage, Luma};
use stack::Stack;
use std::time::{Duration, Instant};

/// What one frame gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Every code read, de-duplicated, in the order found.
    pub codes: Vec<String>,
    /// Whether the gate saw a code (three finder patterns in a QR layout).
    pub hint: bool,
    /// Which stage read the code(s), when any did.
    pub stage: Option<Stage>,
    /// The frame matched the last idle frame and was not looked at further.
    pub unchanged: bool,
    /// Finder pattern candidates the gate confirmed (diagnostics).
    pub finders: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Rqrr,
    RqrrPreprocessed,
    /// The module grid fitted to the gate's finders, this frame alone.
    Grid,
    WeChat,
    /// Several frames registered and averaged (or the sharpest recent one, enlarged).
    MultiFrame,
}

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("OpenCV WeChat QR decoder: {0}")]
    OpenCv(String),
}

/// How long one frame may take by default: the heavy passes stop once it is spent (at 10 fps a
/// frame lasts 100 ms; this leaves most of it to the rest of the agent).
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(40);

/// A block of the thumbnail that moved more than this (grey levels, after removing the frame's
/// overall change of light) makes the frame "changed". Sensor noise moves an 8×8 mean by well
/// under one level; a code coming into view moves its blocks by tens.
const CHANGE_LEVELS: f32 = 6.0;

/// The decoder: its second opinion (loaded once), the last idle frame's thumbnail and the
/// multi-frame stack. One per camera.
pub struct QrDecoder {
    #[cfg(feature = "opencv")]
    wechat: Option<cv::WeChat>,
    gate: FinderScanner,
    idle: Option<Vec<f32>>,
    stack: Stack,
    budget: Duration,
    grid_fit: bool,
}

impl QrDecoder {
    /// `second_opinion` asks for WeChat; it is used only in a build with the `opencv` feature.
    pub fn new(second_opinion: bool) -> Result<Self, QrError> {
        #[cfg(feature = "opencv")]
        let wechat = if second_opinion {
            Some(cv::WeChat::new()?)
        } else {
            None
        };
        #[cfg(not(feature = "opencv"))]
        let _ = second_opinion;
        Ok(Self {
            #[cfg(feature = "opencv")]
            wechat,
            gate: FinderScanner::default(),
            idle: None,
            stack: Stack::default(),
            budget: DEFAULT_BUDGET,
            grid_fit: true,
        })
    }

    /// Sets the time one frame may take before the heavy passes stop.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Turns the lattice reader on fitted grids ([`lattice`]) off or on (on by default; off is
    /// the pipeline before it, for comparisons).
    pub fn with_grid_fit(mut self, on: bool) -> Self {
        self.grid_fit = on;
        self
    }

    /// Forgets what earlier frames showed (the next frame is judged on its own).
    pub fn forget(&mut self) {
        self.idle = None;
        self.stack.clear();
    }

    /// Whether the second opinion is loaded.
    pub fn has_second_opinion(&self) -> bool {
        #[cfg(feature = "opencv")]
        {
            self.wechat.is_some()
        }
        #[cfg(not(feature = "opencv"))]
        {
            false
        }
    }

    /// What the gate sees in `frame` (for benchmarks and tests: no decoding).
    pub fn gate(&mut self, frame: &GrayImage) -> finder::GateView {
        self.gate.scan(frame)
    }

    pub fn decode(&mut self, frame: &GrayImage) -> Decoded {
        let deadline = Instant::now() + self.budget;
        self.gate.look(frame);
        if let Some(idle) = &self.idle {
            if unchanged(idle, self.gate.thumbnail().0) {
                self.stack.no_sighting();
                return Decoded {
                    unchanged: true,
                    ..Decoded::default()
                };
            }
        }
        let view = self.gate.scan(frame);
        let finders = view.finders.len();
        let Some(s) = view.sighting else {
            // A code on a fitted grid a moment ago that the gate misses now (blur, modules
            // under 2 px): followed on its grid. Idle frames never get here.
            if self.grid_fit && self.stack.tracking() {
                let r = self.stack.lattice(frame, None, deadline);
                let codes = checked(r.codes);
                if !codes.is_empty() {
                    self.stack.clear();
                    return Decoded {
                        codes,
                        hint: true,
                        stage: Some(if r.multi {
                            Stage::MultiFrame
                        } else {
                            Stage::Grid
                        }),
                        unchanged: false,
                        finders,
                    };
                }
            }
            // Two or more rings but no triple: a finder may have been missed (blur, glare).
            // One plain rqrr pass over the frame decides; rare on idle scenes.
            if finders >= 2 {
                let codes = checked(rqrr_pass(frame).0);
                if !codes.is_empty() {
                    return Decoded {
                        codes,
                        hint: true,
                        stage: Some(Stage::Rqrr),
                        unchanged: false,
                        finders,
                    };
                }
            }
            self.idle = Some(self.gate.thumbnail().0.to_vec());
            self.stack.no_sighting();
            return Decoded {
                finders,
                ..Decoded::default()
            };
        };
        self.idle = None;
        let found = |codes, stage| Decoded {
            codes,
            hint: true,
            stage: Some(stage),
            unchanged: false,
            finders,
        };
        self.stack.push(frame, &s);
        if self.grid_fit {
            // the module grid fitted to the gate's finders, read on its own and averaged with
            // the presentation's earlier frames (defocus, small modules); first, as the cheapest
            // read of a sighted code (module docs)
            let r = self.stack.lattice(frame, Some(&s), deadline);
            let codes = checked(r.codes);
            if !codes.is_empty() {
                self.stack.clear();
                let stage = if r.multi {
                    Stage::MultiFrame
                } else {
                    Stage::Grid
                };
                return found(codes, stage);
            }
        }
        let crop = s.crop(frame);
        let codes = checked(rqrr_pass(&crop).0);
        if !codes.is_empty() {
            self.stack.clear();
            return found(codes, Stage::Rqrr);
        }
        #[cfg(feature = "opencv")]
        if let Some(codes) = self.wechat(&crop) {
            self.stack.clear();
            return found(codes, Stage::WeChat);
        }
        let (mut codes, mut stage) = self.cleaned_up(&crop, &s, deadline);
        if codes.is_empty() && Instant::now() < deadline {
            // the crop may have cut the code (a finder misplaced): the whole frame once
            codes = checked(rqrr_pass(frame).0);
            stage = Stage::Rqrr;
        }
        if !codes.is_empty() {
            self.stack.clear();
            return found(codes, stage);
        }
        if Instant::now() < deadline {
            let stack = &mut self.stack;
            #[cfg(feature = "opencv")]
            let wechat = &mut self.wechat;
            let codes = stack.attempt(deadline, &mut |img| {
                let codes = checked(rqrr_pass(img).0);
                #[cfg(feature = "opencv")]
                if codes.is_empty() {
                    if let Some(w) = wechat.as_mut() {
                        return checked(w.decode(img).unwrap_or_default());
                    }
                }
                codes
            });
            if !codes.is_empty() {
                self.stack.clear();
                return found(codes, Stage::MultiFrame);
            }
        }
        Decoded {
            codes: Vec::new(),
            hint: true,
            stage: None,
            unchanged: false,
            finders,
        }
    }

    /// rqrr on cleaned-up copies of the crop around the sighting.
    fn cleaned_up(
        &mut self,
        crop: &GrayImage,
        s: &Sighting,
        deadline: Instant,
    ) -> (Vec<String>, Stage) {
        // rqrr again on cleaned-up copies, cheapest first: contrast stretched (dim or washed-out
        // print), smoothed (sensor noise breaks its thresholding), sharpened (defocus), enlarged
        // (modules of 2-3 px).
        let stretched = stretch_contrast(crop);
        let (w, h) = crop.dimensions();
        let variants: [&dyn Fn() -> GrayImage; 4] = [
            &|| stretched.clone(),
            &|| image::imageops::blur(&stretched, 1.2),
            // out of focus: edges steepened back by about a module
            &|| stack::unsharp(&stretched, s.module.max(1.0), 1.5),
            &|| {
                let f = if s.module < 2.5 { 3 } else { 2 };
                image::imageops::resize(
                    &stretched,
                    w * f,
                    h * f,
                    image::imageops::FilterType::Triangle,
                )
            },
        ];
        for v in variants {
            if Instant::now() >= deadline {
                break;
            }
            let codes = checked(rqrr_pass(&v()).0);
            if !codes.is_empty() {
                return (codes, Stage::RqrrPreprocessed);
            }
        }
        (Vec::new(), Stage::Rqrr)
    }

    #[cfg(feature = "opencv")]
    fn wechat(&mut self, frame: &GrayImage) -> Option<Vec<String>> {
        let w = self.wechat.as_mut()?;
        match w.decode(frame) {
            Ok(codes) => Some(checked(codes)).filter(|c| !c.is_empty()),
            Err(e) => {
                tracing::warn!(error = %e, "WeChat decoder failed");
                None
            }
        }
    }

    /// WeChat alone on a frame, with no gate (for benchmarks and detection-rate reports).
    #[cfg(feature = "opencv")]
    pub fn wechat_only(&mut self, frame: &GrayImage) -> Result<Vec<String>, QrError> {
        match &mut self.wechat {
            Some(w) => w.decode(frame),
            None => Ok(Vec::new()),
        }
    }
}

/// Whether two thumbnails show the same scene: no block moved by more than [`CHANGE_LEVELS`]
/// once the overall change of light is taken out.
fn unchanged(a: &[f32], b: &[f32]) -> bool {
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    let shift = a.iter().zip(b).map(|(x, y)| y - x).sum::<f32>() / a.len() as f32;
    a.iter()
        .zip(b)
        .all(|(x, y)| (y - x - shift).abs() <= CHANGE_LEVELS)
}

/// What a pickup code can be: 1 to 2048 characters once trimmed, none of them a control
/// character (the locker's own limit on `qr_data`; a garbled read is refused here, before
/// anyone is asked to validate it).
pub fn plausible_payload(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty() && t.len() <= 2048 && !t.chars().any(char::is_control)
}

fn checked(codes: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in codes {
        if plausible_payload(&c) && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Whether the gate sees a code in `frame` (three finder patterns in a QR layout).
pub fn finder_hint(frame: &GrayImage) -> bool {
    FinderScanner::default().scan(frame).sighting.is_some()
}

/// A half-size copy, each pixel the mean of a 2×2 block (cheaper than a filtered resize, and a
/// box filter is all a QR binariser needs).
pub fn half(frame: &GrayImage) -> GrayImage {
    let (w, h) = (frame.width() / 2, frame.height() / 2);
    let src = frame.as_raw();
    let stride = frame.width() as usize;
    let mut out = vec![0u8; (w * h) as usize];
    if w > 0 {
        for (y, o) in out.chunks_exact_mut(w as usize).enumerate() {
            let r0 = &src[2 * y * stride..][..2 * w as usize];
            let r1 = &src[(2 * y + 1) * stride..][..2 * w as usize];
            for (o, (a, b)) in o.iter_mut().zip(r0.chunks_exact(2).zip(r1.chunks_exact(2))) {
                let s = u16::from(a[0]) + u16::from(a[1]) + u16::from(b[0]) + u16::from(b[1]);
                *o = (s / 4) as u8;
            }
        }
    }
    GrayImage::from_raw(w, h, out).unwrap_or_else(|| frame.clone())
}

/// One `rqrr` pass: decoded strings and how many grids it found.
pub fn rqrr_pass(frame: &GrayImage) -> (Vec<String>, usize) {
    let (w, h) = frame.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
            frame.get_pixel(x as u32, y as u32).0[0]
        });
    let grids = prepared.detect_grids();
    let n = grids.len();
    let mut codes = Vec::new();
    for g in grids {
        if let Ok((_, text)) = g.decode() {
            if !codes.contains(&text) {
                codes.push(text);
            }
        }
    }
    (codes, n)
}

/// Stretches the 2nd..98th percentile of grey levels to the full range (low-contrast print,
/// dim light).
pub fn stretch_contrast(frame: &GrayImage) -> GrayImage {
    let (lo, hi) = percentiles(frame);
    let (lo, hi) = (usize::from(lo), usize::from(hi));
    if hi <= lo + 1 {
        return frame.clone();
    }
    let span = (hi - lo) as f32;
    let mut lut = [0u8; 256];
    for (i, v) in lut.iter_mut().enumerate() {
        let x = (i as f32 - lo as f32) / span * 255.0;
        *v = x.clamp(0.0, 255.0) as u8;
    }
    let mut out = frame.clone();
    for p in out.pixels_mut() {
        *p = Luma([lut[usize::from(p.0[0])]]);
    }
    out
}

/// The 2nd and 98th percentile grey levels (sampling every fourth pixel: plenty for a histogram).
fn percentiles(frame: &GrayImage) -> (u8, u8) {
    let mut hist = [0u32; 256];
    for v in frame.as_raw().iter().step_by(4) {
        hist[usize::from(*v)] += 1;
    }
    let total: u32 = hist.iter().sum();
    let cut = total / 50;
    let (mut lo, mut hi) = (0u8, 255u8);
    let mut acc = 0;
    for (i, c) in hist.iter().enumerate() {
        acc += c;
        if acc > cut {
            lo = i as u8;
            break;
        }
    }
    acc = 0;
    for (i, c) in hist.iter().enumerate().rev() {
        acc += c;
        if acc > cut {
            hi = i as u8;
            break;
        }
    }
    (lo, hi)
}

#[cfg(feature = "opencv")]
mod cv {
    use super::QrError;
    use image::GrayImage;
    use opencv::core::Mat;
    use opencv::prelude::*;
    use opencv::wechat_qrcode::WeChatQRCode;

    pub struct WeChat(WeChatQRCode);

    impl WeChat {
        pub fn new() -> Result<Self, QrError> {
            // new_def(): no CNN model files; the traditional detector and ZXing-derived decoder.
            WeChatQRCode::new_def()
                .map(WeChat)
                .map_err(|e| QrError::OpenCv(e.to_string()))
        }

        pub fn decode(&mut self, frame: &GrayImage) -> Result<Vec<String>, QrError> {
            let (w, h) = frame.dimensions();
            let err = |e: opencv::Error| QrError::OpenCv(e.to_string());
            let mat = Mat::new_rows_cols_with_data(h as i32, w as i32, frame.as_raw().as_slice())
                .map_err(err)?;
            let found = self.0.detect_and_decode_def(&mat).map_err(err)?;
            let mut out: Vec<String> = Vec::new();
            for s in found.iter() {
                if !s.is_empty() && !out.contains(&s) {
                    out.push(s);
                }
            }
            Ok(out)
        }
    }
}
