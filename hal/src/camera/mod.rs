//! Cameras: where the locker's QR scanner gets its frames.
//!
//! [`Camera::grab`] blocks until the next frame and returns it in greyscale (QR decoding needs
//! nothing else, and a grey 640×480 frame is 300 KB instead of 900 KB). Cameras are blocking by
//! nature (V4L2, OpenCV), so the scanner runs them on a thread of their own.
//!
//! - [`DirectoryCamera`]: image files in a directory, in name order, round and round; an empty
//!   directory is a camera that sees nothing (a blank frame). Tests "show" a code by writing an
//!   image into the directory and take it away by deleting it.
//! - [`v4l2::V4l2Camera`]: a V4L2 device read directly (mmap streaming, luma from YUYV, GREY or
//!   MJPEG), no OpenCV: the field camera of both agents.
//! - [`OpenCvCamera`] (feature `opencv`): OpenCV `VideoCapture` on a device path or index, with
//!   the resolution asked for.
//!
//! [`CameraSource`] is how an agent's TOML names one of them; [`grab::GrabLoop`] is the thread
//! both agents run a camera on (fixed rate, reopen with backoff after a fault, health).

pub mod grab;
pub mod v4l2;

use image::GrayImage;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub type Frame = GrayImage;

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("camera {source_name}: {message}")]
    Device {
        source_name: String,
        message: String,
    },
    #[error("frame {path}: {message}")]
    BadFrame { path: PathBuf, message: String },
    #[error("camera {0} is closed")]
    Closed(String),
}

/// A source of frames.
pub trait Camera: Send {
    /// The next frame. Blocks at most about one frame time.
    fn grab(&mut self) -> Result<Frame, CameraError>;
    /// What this camera is, for logs and health (`/dev/video0 640x480`, a directory path).
    fn describe(&self) -> String;
}

/// Frames from image files in a directory.
pub struct DirectoryCamera {
    dir: PathBuf,
    next: usize,
    blank: (u32, u32),
    /// The last file decoded, by path, length and modification time: a file shown frame after
    /// frame is decoded once (a PNG costs milliseconds; a real camera's frame does not).
    cache: Option<(PathBuf, u64, SystemTime, Frame)>,
}

impl DirectoryCamera {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            next: 0,
            blank: (640, 480),
            cache: None,
        }
    }

    fn files(&self) -> Result<Vec<PathBuf>, CameraError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| CameraError::Device {
            source_name: self.dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "png" | "jpg" | "jpeg" | "pgm"
                    )
                })
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

impl Camera for DirectoryCamera {
    fn grab(&mut self) -> Result<Frame, CameraError> {
        let files = self.files()?;
        if files.is_empty() {
            return Ok(GrayImage::from_pixel(
                self.blank.0,
                self.blank.1,
                image::Luma([128]),
            ));
        }
        let path = &files[self.next % files.len()];
        self.next = self.next.wrapping_add(1);
        let bad = |message: String| CameraError::BadFrame {
            path: path.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        let modified = meta.modified().map_err(|e| bad(e.to_string()))?;
        if let Some((p, len, m, frame)) = &self.cache {
            if p == path && *len == meta.len() && *m == modified {
                return Ok(frame.clone());
            }
        }
        let is_pgm = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pgm"));
        let grey = if is_pgm {
            let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            read_pgm(&bytes).map_err(bad)?
        } else {
            image::open(path)
                .map_err(|e| bad(e.to_string()))?
                .to_luma8()
        };
        self.blank = grey.dimensions();
        self.cache = Some((path.clone(), meta.len(), modified, grey.clone()));
        Ok(grey)
    }

    fn describe(&self) -> String {
        format!("image files in {}", self.dir.display())
    }
}

/// A binary PGM (`P5`, 8-bit): raw grey frames, the cheapest file a camera stand-in can read.
pub fn read_pgm(bytes: &[u8]) -> Result<Frame, String> {
    // header: magic, width, height, maxval, separated by whitespace (and `#` comments)
    let mut fields = Vec::with_capacity(4);
    let mut i = 0;
    while fields.len() < 4 {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'#') {
            if bytes[i] == b'#' {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            i += 1;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err("PGM header cut short".into());
        }
        fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
    }
    // exactly one whitespace byte after maxval, then the pixels
    i += 1;
    if fields[0] != "P5" {
        return Err(format!("not a binary PGM (magic {:?})", fields[0]));
    }
    let num = |s: &str| {
        s.parse::<u32>()
            .map_err(|e| format!("PGM header {s:?}: {e}"))
    };
    let (w, h, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max != 255 {
        return Err(format!("PGM maxval {max}: only 8-bit frames"));
    }
    let n = (w as usize) * (h as usize);
    let data = bytes
        .get(i..i + n)
        .ok_or_else(|| format!("PGM {w}x{h} needs {n} bytes of pixels"))?;
    Frame::from_raw(w, h, data.to_vec()).ok_or_else(|| "PGM size mismatch".into())
}

/// `frame` as a binary PGM file's bytes (what [`read_pgm`] reads).
pub fn pgm_bytes(frame: &Frame) -> Vec<u8> {
    let mut out = format!("P5\n{} {}\n255\n", frame.width(), frame.height()).into_bytes();
    out.extend_from_slice(frame.as_raw());
    out
}

/// Where an agent's frames come from, as its TOML says it:
/// `{ kind = "v4l2", device = "/dev/video0", width = 640, height = 480 }`,
/// `{ kind = "device", device = "/dev/video0" }` (OpenCV) or
/// `{ kind = "directory", path = "/var/lib/…/frames" }`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CameraSource {
    /// Image files in a directory ([`DirectoryCamera`]): the sim's frames, or a bench's.
    Directory { path: PathBuf },
    /// A V4L2 camera read directly ([`v4l2::V4l2Camera`]): no OpenCV, small in memory.
    V4l2 {
        /// `/dev/video0`, or better a stable `/dev/v4l/by-id/…` name.
        device: PathBuf,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
    },
    /// A V4L2 device path or index through OpenCV's `VideoCapture` (feature `opencv-capture`).
    Device {
        device: String,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
    },
}

fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}

/// Whether `CameraSource::Device` can be opened in this build (hal's `opencv-capture` feature;
/// a binary that uses it needs libopencv_videoio).
pub const OPENCV_CAPTURE: bool = cfg!(feature = "opencv-capture");

impl CameraSource {
    /// Opens the camera. A device in a build without OpenCV is an error, never a stand-in.
    pub fn open(&self) -> Result<Box<dyn Camera>, CameraError> {
        match self {
            CameraSource::Directory { path } => Ok(Box::new(DirectoryCamera::new(path))),
            CameraSource::V4l2 {
                device,
                width,
                height,
            } => Ok(Box::new(v4l2::V4l2Camera::open(
                &device.to_string_lossy(),
                *width,
                *height,
            )?)),
            #[cfg(feature = "opencv-capture")]
            CameraSource::Device {
                device,
                width,
                height,
            } => Ok(Box::new(OpenCvCamera::open(device, *width, *height)?)),
            #[cfg(not(feature = "opencv-capture"))]
            CameraSource::Device { device, .. } => Err(CameraError::Device {
                source_name: device.clone(),
                message:
                    "this build has no OpenCV capture (built without the `opencv-capture` feature)"
                        .into(),
            }),
        }
    }

    /// True when this build can open the source (for config checks).
    pub fn supported(&self) -> bool {
        !matches!(self, CameraSource::Device { .. }) || OPENCV_CAPTURE
    }

    /// What the source is, before it is opened (logs, health while it cannot be opened).
    pub fn describe(&self) -> String {
        match self {
            CameraSource::Directory { path } => format!("image files in {}", path.display()),
            CameraSource::V4l2 {
                device,
                width,
                height,
            } => format!("{} {width}x{height} (V4L2)", device.display()),
            CameraSource::Device {
                device,
                width,
                height,
            } => format!("{device} {width}x{height} (OpenCV)"),
        }
    }

    /// Config checks under `field` (`camera.source`): frame sizes a camera can have.
    pub fn validate(&self, field: &str, v: &mut daemon::config::Validator) {
        if let CameraSource::V4l2 { width, height, .. }
        | CameraSource::Device { width, height, .. } = self
        {
            v.range(&format!("{field}.width"), *width, 16, 7680);
            v.range(&format!("{field}.height"), *height, 16, 4320);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgm_round_trip_and_bad_headers() {
        let f = Frame::from_fn(5, 3, |x, y| image::Luma([(x * 10 + y) as u8]));
        assert_eq!(read_pgm(&pgm_bytes(&f)).unwrap(), f);
        let commented = b"P5 # a comment\n5 3\n255\n"
            .iter()
            .copied()
            .chain(f.as_raw().iter().copied())
            .collect::<Vec<u8>>();
        assert_eq!(read_pgm(&commented).unwrap(), f);
        assert!(read_pgm(b"P2\n5 3\n255\n").is_err());
        assert!(read_pgm(b"P5\n5 3\n255\n123").is_err());
        assert!(read_pgm(b"P5\n5").is_err());
    }
}

#[cfg(feature = "opencv")]
pub use self::cv::OpenCvCamera;

#[cfg(feature = "opencv")]
mod cv {
    use super::{Camera, CameraError, Frame};
    use opencv::core::{Mat, MatTraitConst, MatTraitConstManual};
    use opencv::imgproc;
    use opencv::videoio::{self, VideoCapture, VideoCaptureTrait, VideoCaptureTraitConst};

    /// A V4L2 (or any OpenCV-supported) camera.
    pub struct OpenCvCamera {
        cap: VideoCapture,
        name: String,
        frame: Mat,
        grey: Mat,
    }

    impl OpenCvCamera {
        /// `device` is a path (`/dev/video0`) or an index (`0`).
        pub fn open(device: &str, width: u32, height: u32) -> Result<Self, CameraError> {
            let err = |e: opencv::Error| CameraError::Device {
                source_name: device.to_owned(),
                message: e.to_string(),
            };
            let mut cap = match device.parse::<i32>() {
                Ok(i) => VideoCapture::new(i, videoio::CAP_ANY).map_err(err)?,
                Err(_) => VideoCapture::from_file(device, videoio::CAP_ANY).map_err(err)?,
            };
            if !cap.is_opened().map_err(err)? {
                return Err(CameraError::Device {
                    source_name: device.to_owned(),
                    message: "cannot open".into(),
                });
            }
            cap.set(videoio::CAP_PROP_FRAME_WIDTH, f64::from(width))
                .map_err(err)?;
            cap.set(videoio::CAP_PROP_FRAME_HEIGHT, f64::from(height))
                .map_err(err)?;
            Ok(Self {
                cap,
                name: format!("{device} {width}x{height}"),
                frame: Mat::default(),
                grey: Mat::default(),
            })
        }
    }

    impl Camera for OpenCvCamera {
        fn grab(&mut self) -> Result<Frame, CameraError> {
            let name = self.name.clone();
            let err = move |e: opencv::Error| CameraError::Device {
                source_name: name.clone(),
                message: e.to_string(),
            };
            if !self.cap.read(&mut self.frame).map_err(err.clone())? {
                return Err(CameraError::Closed(self.name.clone()));
            }
            if self.frame.channels() == 1 {
                self.frame.copy_to(&mut self.grey).map_err(err.clone())?;
            } else {
                imgproc::cvt_color_def(&self.frame, &mut self.grey, imgproc::COLOR_BGR2GRAY)
                    .map_err(err.clone())?;
            }
            let (w, h) = (self.grey.cols(), self.grey.rows());
            let bytes = self.grey.data_bytes().map_err(err)?.to_vec();
            Frame::from_raw(w as u32, h as u32, bytes).ok_or_else(|| CameraError::Device {
                source_name: self.name.clone(),
                message: "frame size mismatch".into(),
            })
        }

        fn describe(&self) -> String {
            self.name.clone()
        }
    }
}
