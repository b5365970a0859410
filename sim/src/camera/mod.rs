//! What a downward-looking camera on the sim vehicle sees: a ground texture, the locker's roof as a
//! white plate, and the locker's ArUco marker (OpenCV `DICT_4X4_50`) at the destination, in
//! perspective from the vehicle's true position, altitude and heading, with optional blur and noise.
//!
//! - [`render`]: one greyscale frame for a [`Pose`] (pure: same inputs, same pixels);
//! - [`spawn_feed`]: renders from a running vehicle's [`View`] at a fixed rate and publishes each
//!   frame as `frame.png` in a directory (written aside, then renamed over, so a reader never sees
//!   half a file). The agent reads it with `hal::camera::DirectoryCamera`, the same camera type it
//!   would use for any directory of images: no sim code in the agent.
//!
//! Geometry (matches `hal::marker`): the camera looks straight down, the image top towards the
//! vehicle's nose. The marker lies with its top edge towards north. Bit patterns come from
//! `aruco_4x4_50.rs`, generated from OpenCV by `hal/examples/aruco-table.rs`.

mod aruco_4x4_50;
pub mod locker;

use crate::vehicle::model::View;
use image::GrayImage;
use protocol::geo::{LatLon, NorthEast};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// The ids the sim can draw.
pub const MARKER_IDS: std::ops::Range<u32> = 0..50;

/// The locker as seen from above.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Marker centre, degrees.
    pub marker_lat: f64,
    pub marker_lon: f64,
    /// `DICT_4X4_50` id (0..50); `None`: the locker without a marker (a hidden/missing marker).
    pub marker_id: Option<u32>,
    /// Side of the black square, metres.
    pub marker_size_m: f64,
}

/// The camera.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraModel {
    pub width: u32,
    pub height: u32,
    pub hfov_deg: f64,
    /// Gaussian blur sigma, pixels (0: sharp).
    pub blur_sigma: f32,
    /// Additive noise amplitude, grey levels (uniform ±; 0: none).
    pub noise: u8,
    pub seed: u64,
}

impl Default for CameraModel {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            hfov_deg: 70.0,
            blur_sigma: 0.0,
            noise: 0,
            seed: 1,
        }
    }
}

/// Where the camera is: true position (degrees), height above the marker (m), heading (degrees).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub lat: f64,
    pub lon: f64,
    pub height_m: f64,
    pub heading_deg: f64,
}

impl Pose {
    /// The pose of a vehicle whose home (altitude 0) is level with the marker.
    pub fn of_view(v: &View) -> Self {
        Self {
            lat: v.lat_deg,
            lon: v.lon_deg,
            height_m: v.alt_rel_m,
            heading_deg: v.heading_deg,
        }
    }
}

/// 1 (white) or 0 (black) for the cell at `row`, `col` (0..6, border included) of marker `id`.
fn marker_cell(id: u32, row: usize, col: usize) -> bool {
    if row == 0 || col == 0 || row == 5 || col == 5 {
        return false;
    }
    // an id outside the dictionary prints as a blank (all-black) marker no detector decodes
    let bits = aruco_4x4_50::DICT_4X4_50
        .get(id as usize)
        .copied()
        .unwrap_or(0);
    let bit = 15 - ((row - 1) * 4 + (col - 1));
    (bits >> bit) & 1 == 1
}

/// Cheap integer hash for the ground texture and the noise (stable across crate upgrades).
fn hash(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Ground brightness at a point `n`, `e` metres from the marker centre.
fn ground(scene: &Scene, n: f64, e: f64) -> f32 {
    let s = scene.marker_size_m;
    // 6 cells across `s` (4 data + the black border), on a white plate twice the marker's side
    let c = s / 6.0;
    if let Some(id) = scene.marker_id {
        let col = (e + s / 2.0) / c;
        let row = (s / 2.0 - n) / c;
        if (0.0..6.0).contains(&col) && (0.0..6.0).contains(&row) {
            return if marker_cell(id, row as usize, col as usize) {
                235.0
            } else {
                25.0
            };
        }
    }
    if n.abs() <= s && e.abs() <= s {
        return 225.0;
    }
    // gravel/grass: 0.25 m patches of mid grey, gently varying, low contrast
    let (pn, pe) = ((n / 0.25).floor() as i64, (e / 0.25).floor() as i64);
    let h = hash((pn as u64).wrapping_mul(0x1_0000_0001) ^ pe as u64);
    95.0 + (h % 50) as f32
}

/// One frame from `pose`.
pub fn render(scene: &Scene, cam: &CameraModel, pose: &Pose) -> GrayImage {
    let (w, h) = (cam.width, cam.height);
    let f = f64::from(w) / 2.0 / (cam.hfov_deg.to_radians() / 2.0).tan();
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let z = pose.height_m.max(0.05);
    // the camera's ground point relative to the marker
    let NorthEast {
        north_m: cam_n,
        east_m: cam_e,
    } = LatLon::new(scene.marker_lat, scene.marker_lon)
        .north_east_to(LatLon::new(pose.lat, pose.lon));
    let (sin_h, cos_h) = pose.heading_deg.to_radians().sin_cos();
    // 2x2 supersampling: edges the detector can locate to a fraction of a pixel
    const SUB: [f64; 2] = [0.25, 0.75];
    let mut img = GrayImage::new(w, h);
    for (px, py, out) in img.enumerate_pixels_mut() {
        let mut acc = 0.0f32;
        for sy in SUB {
            for sx in SUB {
                let fwd = (cy - (f64::from(py) + sy)) * z / f;
                let right = (f64::from(px) + sx - cx) * z / f;
                let n = cam_n + fwd * cos_h - right * sin_h;
                let e = cam_e + fwd * sin_h + right * cos_h;
                acc += ground(scene, n, e);
            }
        }
        out.0[0] = (acc / 4.0).round().clamp(0.0, 255.0) as u8;
    }
    if cam.blur_sigma > 0.0 {
        img = image::imageops::blur(&img, cam.blur_sigma);
    }
    if cam.noise > 0 {
        let span = u64::from(cam.noise) * 2 + 1;
        let frame_seed = hash(cam.seed ^ pose.lat.to_bits() ^ pose.lon.to_bits().rotate_left(17));
        for (i, p) in img.pixels_mut().enumerate() {
            let d = (hash(frame_seed ^ i as u64) % span) as i32 - i32::from(cam.noise);
            p.0[0] = (i32::from(p.0[0]) + d).clamp(0, 255) as u8;
        }
    }
    img
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("camera feed {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("camera feed {path}: {message}")]
    Encode { path: PathBuf, message: String },
}

/// Writes `img` as `dir/frame.png`, atomically (aside, then rename).
pub fn publish_frame(dir: &Path, img: &GrayImage) -> Result<(), FeedError> {
    let tmp = dir.join(".frame.png.tmp");
    let dst = dir.join("frame.png");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| FeedError::Encode {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
    std::fs::rename(&tmp, &dst).map_err(|source| FeedError::Io { path: dst, source })
}

/// A running feed; dropping it stops the feed.
pub struct FeedHandle {
    task: tokio::task::JoinHandle<()>,
    frames: watch::Receiver<u64>,
}

impl FeedHandle {
    /// Frames published so far (a watch: tests wait on it instead of sleeping).
    pub fn frames(&self) -> watch::Receiver<u64> {
        self.frames.clone()
    }
}

impl Drop for FeedHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renders from `view` every `period` (real time) into `dir/frame.png`. Rendering runs on the
/// blocking pool so the vehicle's loop is never held up by it.
pub fn spawn_feed(
    view: watch::Receiver<View>,
    scene: Scene,
    cam: CameraModel,
    dir: PathBuf,
    period: Duration,
) -> FeedHandle {
    let (tx, frames) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n = 0u64;
        loop {
            tick.tick().await;
            let pose = Pose::of_view(&view.borrow());
            let (scene, cam, dir) = (scene.clone(), cam.clone(), dir.clone());
            let res = tokio::task::spawn_blocking(move || {
                publish_frame(&dir, &render(&scene, &cam, &pose))
            })
            .await;
            match res {
                Ok(Ok(())) => {
                    n += 1;
                    let _ = tx.send(n);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "camera feed frame not written"),
                Err(e) => tracing::warn!(error = %e, "camera feed render task failed"),
            }
        }
    });
    FeedHandle { task, frames }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene() -> Scene {
        Scene {
            marker_lat: 47.0,
            marker_lon: 8.0,
            marker_id: Some(7),
            marker_size_m: 0.4,
        }
    }

    fn dark_bbox(img: &GrayImage) -> (u32, u32, u32, u32) {
        let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
        for (x, y, p) in img.enumerate_pixels() {
            if p.0[0] < 60 {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
        (x0, y0, x1, y1)
    }

    #[test]
    fn marker_straight_below_is_centred_and_sized_by_height() {
        let cam = CameraModel {
            hfov_deg: 90.0,
            ..CameraModel::default()
        };
        let pose = Pose {
            lat: 47.0,
            lon: 8.0,
            height_m: 2.0,
            heading_deg: 0.0,
        };
        let img = render(&scene(), &cam, &pose);
        let (x0, y0, x1, y1) = dark_bbox(&img);
        // f = 320 px: 0.4 m at 2 m is 64 px, centred on (320, 240)
        assert!((i64::from(x1 - x0) - 63).abs() <= 1, "{x0}..{x1}");
        assert!((i64::from(y1 - y0) - 63).abs() <= 1, "{y0}..{y1}");
        assert!((i64::from(x0 + x1) - 639).abs() <= 2);
        assert!((i64::from(y0 + y1) - 479).abs() <= 2);
    }

    #[test]
    fn marker_east_of_a_north_facing_vehicle_appears_right() {
        let cam = CameraModel {
            hfov_deg: 90.0,
            ..CameraModel::default()
        };
        // vehicle 1 m west of the marker at 2 m: marker 1 m to its right = 160 px right of centre
        let at = LatLon::new(47.0, 8.0).offset(NorthEast::new(0.0, -1.0));
        let pose = Pose {
            lat: at.lat_deg,
            lon: at.lon_deg,
            height_m: 2.0,
            heading_deg: 0.0,
        };
        let (x0, _, x1, _) = dark_bbox(&render(&scene(), &cam, &pose));
        assert!((i64::from(x0 + x1) / 2 - 480).abs() <= 2, "{x0}..{x1}");
        // facing east, the same marker is straight ahead: above the centre
        let pose = Pose {
            heading_deg: 90.0,
            ..pose
        };
        let (x0, y0, x1, y1) = dark_bbox(&render(&scene(), &cam, &pose));
        assert!((i64::from(x0 + x1) / 2 - 320).abs() <= 2, "{x0}..{x1}");
        assert!((i64::from(y0 + y1) / 2 - 80).abs() <= 2, "{y0}..{y1}");
    }

    #[test]
    fn no_marker_means_no_black() {
        let s = Scene {
            marker_id: None,
            ..scene()
        };
        let img = render(
            &s,
            &CameraModel::default(),
            &Pose {
                lat: 47.0,
                lon: 8.0,
                height_m: 3.0,
                heading_deg: 0.0,
            },
        );
        assert_eq!(dark_bbox(&img).0, u32::MAX);
    }

    #[test]
    fn noise_is_seeded() {
        let cam = CameraModel {
            noise: 20,
            blur_sigma: 1.0,
            ..CameraModel::default()
        };
        let pose = Pose {
            lat: 47.0,
            lon: 8.0,
            height_m: 3.0,
            heading_deg: 30.0,
        };
        assert_eq!(render(&scene(), &cam, &pose), render(&scene(), &cam, &pose));
    }

    #[test]
    fn table_cells_match_the_dictionary() {
        // id 0 is 0xb532: first data row 1011
        assert!(marker_cell(0, 1, 1));
        assert!(!marker_cell(0, 1, 2));
        assert!(marker_cell(0, 1, 3));
        assert!(marker_cell(0, 1, 4));
        assert!(!marker_cell(0, 0, 3));
    }
}
