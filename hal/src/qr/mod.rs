//! QR decoding for the locker camera: `rqrr` first, pre-processing when it struggles, and OpenCV's
//! WeChat decoder as a second opinion (feature `opencv`).
//!
//! Costs drive the order. A locker camera mostly sees no code, so the idle path must be cheap: one
//! `rqrr` pass plus a finder-pattern scan ([`finder_hint`]) over every fourth row. Only when there
//! is a sign of a code (rqrr found a grid it could not read, or the scan saw finder patterns) do
//! the expensive steps run: `rqrr` again on a contrast-stretched, a smoothed and an enlarged copy,
//! then WeChat, which reads more degraded codes than anything else but takes ~100 ms on a frame
//! with no code in it (and ~3 ms on one with a code).

use image::{GrayImage, Luma};

/// What one frame gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Every code read, de-duplicated, in the order found.
    pub codes: Vec<String>,
    /// Whether there was a sign of a code (grid or finder patterns).
    pub hint: bool,
    /// Which stage read the code(s), when any did.
    pub stage: Option<Stage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Rqrr,
    RqrrPreprocessed,
    WeChat,
}

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("OpenCV WeChat QR decoder: {0}")]
    OpenCv(String),
}

/// The decoder, with its (optional) second opinion loaded once.
pub struct QrDecoder {
    #[cfg(feature = "opencv")]
    wechat: Option<cv::WeChat>,
}

impl QrDecoder {
    /// `second_opinion` asks for WeChat; it is used only in a build with the `opencv` feature.
    pub fn new(second_opinion: bool) -> Result<Self, QrError> {
        #[cfg(feature = "opencv")]
        {
            let wechat = if second_opinion {
                Some(cv::WeChat::new()?)
            } else {
                None
            };
            Ok(Self { wechat })
        }
        #[cfg(not(feature = "opencv"))]
        {
            let _ = second_opinion;
            Ok(Self {})
        }
    }

    /// Forgets what earlier frames showed (the next frame is judged on its own).
    pub fn forget(&mut self) {}

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

    pub fn decode(&mut self, frame: &GrayImage) -> Decoded {
        let found = |codes, stage| Decoded {
            codes,
            hint: true,
            stage: Some(stage),
        };
        // With WeChat loaded, the finder-pattern hint (well under a millisecond) goes first: a
        // frame with a code goes straight to WeChat, which reads it in about a millisecond.
        #[cfg(feature = "opencv")]
        let mut wechat_tried = false;
        #[cfg(feature = "opencv")]
        let mut finders = None;
        #[cfg(feature = "opencv")]
        if self.wechat.is_some() {
            let h = finder_hint(frame);
            finders = Some(h);
            if h {
                wechat_tried = true;
                if let Some(codes) = self.wechat(frame) {
                    return found(codes, Stage::WeChat);
                }
            }
        }
        #[cfg(not(feature = "opencv"))]
        let finders: Option<bool> = None;

        // A pass on a half-size copy costs a quarter of a full one and reads any code that is
        // large in the frame (a phone held close). Small codes are caught by the hint.
        let small =
            (frame.width() >= 2 * MIN_SIDE && frame.height() >= 2 * MIN_SIDE).then(|| half(frame));
        let mut grids = 0;
        if let Some(small) = &small {
            let (codes, g) = rqrr_pass(small);
            if !codes.is_empty() {
                return found(codes, Stage::Rqrr);
            }
            grids = g;
        }
        let hint = grids > 0 || hinted(finders, frame);
        if !hint {
            return Decoded::default();
        }
        #[cfg(feature = "opencv")]
        if !wechat_tried {
            if let Some(codes) = self.wechat(frame) {
                return found(codes, Stage::WeChat);
            }
        }
        let (codes, _) = if small.is_some() {
            rqrr_pass(frame)
        } else {
            (Vec::new(), 0)
        };
        if !codes.is_empty() {
            return found(codes, Stage::Rqrr);
        }
        // rqrr again on cleaned-up copies, cheapest first: contrast stretched (dim or washed-out
        // print), smoothed (sensor noise breaks its thresholding), enlarged (modules of 2-3 px).
        let stretched = stretch_contrast(frame);
        let (w, h) = frame.dimensions();
        let variants: [&dyn Fn() -> GrayImage; 3] = [
            &|| stretched.clone(),
            &|| image::imageops::blur(&stretched, 1.2),
            &|| {
                if w <= 1280 {
                    image::imageops::resize(
                        &stretched,
                        w * 2,
                        h * 2,
                        image::imageops::FilterType::Triangle,
                    )
                } else {
                    image::imageops::resize(
                        &stretched,
                        w / 2,
                        h / 2,
                        image::imageops::FilterType::Triangle,
                    )
                }
            },
        ];
        for v in variants {
            let (codes, _) = rqrr_pass(&v());
            if !codes.is_empty() {
                return Decoded {
                    codes,
                    hint,
                    stage: Some(Stage::RqrrPreprocessed),
                };
            }
        }
        Decoded {
            codes: Vec::new(),
            hint,
            stage: None,
        }
    }

    #[cfg(feature = "opencv")]
    fn wechat(&mut self, frame: &GrayImage) -> Option<Vec<String>> {
        let w = self.wechat.as_mut()?;
        match w.decode(frame) {
            Ok(codes) if !codes.is_empty() => Some(codes),
            Ok(_) => None,
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

/// The finder-pattern hint, unless it was already computed.
fn hinted(known: Option<bool>, frame: &GrayImage) -> bool {
    known.unwrap_or_else(|| finder_hint(frame))
}

/// Frames smaller than twice this are not halved for the idle pass.
const MIN_SIDE: u32 = 160;

/// A half-size copy, each pixel the mean of a 2×2 block (cheaper than a filtered resize, and a
/// box filter is all a QR binariser needs).
pub fn half(frame: &GrayImage) -> GrayImage {
    let (w, h) = (frame.width() / 2, frame.height() / 2);
    let src = frame.as_raw();
    let stride = frame.width() as usize;
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h as usize {
        let r0 = &src[2 * y * stride..];
        let r1 = &src[(2 * y + 1) * stride..];
        for x in 0..w as usize {
            let s = u16::from(r0[2 * x])
                + u16::from(r0[2 * x + 1])
                + u16::from(r1[2 * x])
                + u16::from(r1[2 * x + 1]);
            out.push((s / 4) as u8);
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

/// A cheap sign that a QR code is in the frame: rows crossing a finder pattern show runs of
/// dark:light:dark:light:dark in the ratio 1:1:3:1:1. Scans every fourth row against a local
/// mean threshold; true when several rows agree.
pub fn finder_hint(frame: &GrayImage) -> bool {
    let (w, h) = frame.dimensions();
    let (w, h) = (w as usize, h as usize);
    if w < 21 || h < 21 {
        return false;
    }
    let raw = frame.as_raw();
    let mut hits = 0;
    let mut runs: Vec<(bool, usize)> = Vec::with_capacity(64);
    let win = (w / 16).clamp(8, 64);
    // How much darker than its surroundings a pixel must be to count as dark: a fraction of the
    // frame's own contrast, so a washed-out print (grey on grey) still shows its finders.
    let (lo, hi) = percentiles(frame);
    let margin = (u32::from(hi.saturating_sub(lo)) / 16).clamp(2, 8);
    for y in (0..h).step_by(4) {
        let row = &raw[y * w..(y + 1) * w];
        // local mean by a running sum over `win` pixels either side
        let mut prefix = Vec::with_capacity(w + 1);
        prefix.push(0u32);
        for &v in row {
            let last = prefix.last().copied().unwrap_or(0);
            prefix.push(last + u32::from(v));
        }
        runs.clear();
        for (x, &v) in row.iter().enumerate() {
            let a = x.saturating_sub(win);
            let b = (x + win + 1).min(w);
            let mean = (prefix[b] - prefix[a]) / (b - a) as u32;
            let dark = u32::from(v) + margin < mean || (u32::from(v) < mean && mean < 40);
            match runs.last_mut() {
                Some((d, n)) if *d == dark => *n += 1,
                _ => runs.push((dark, 1)),
            }
        }
        for win5 in runs.windows(5) {
            if !win5[0].0 {
                continue;
            }
            let total: usize = win5.iter().map(|r| r.1).sum();
            if total < 7 {
                continue;
            }
            let unit = total as f32 / 7.0;
            let ok =
                |n: usize, want: f32| (n as f32 - want * unit).abs() <= unit * want.max(1.0) * 0.6;
            if ok(win5[0].1, 1.0)
                && ok(win5[1].1, 1.0)
                && ok(win5[2].1, 3.0)
                && ok(win5[3].1, 1.0)
                && ok(win5[4].1, 1.0)
            {
                hits += 1;
            }
        }
    }
    hits >= 3
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
