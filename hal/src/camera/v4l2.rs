//! A V4L2 camera without OpenCV: memory-mapped streaming, the luma plane taken straight from
//! YUYV (or a GREY frame as it is; MJPEG decoded by the `image` crate).
//!
//! Why it exists (in both agents' builds, the locker's by default): Debian's `libopencv_videoio` links GStreamer, FFmpeg, gphoto2 and, through
//! `imgcodecs`, GDAL, DICOM and PDF libraries — about 40 MiB of the locker agent's resident
//! memory for a 640×480 grey frame a few times a second. The QR decoders need only luma, which
//! YUYV carries in every other byte, so capture is a handful of ioctls.
//!
//! The structures are declared here from `linux/videodev2.h` (UAPI: stable by the kernel's
//! promise). Their sizes differ between 64- and 32-bit targets (pointers, `timeval`), and the
//! ioctl numbers encode those sizes, so the compile-time checks at the bottom hold the layouts
//! to the kernel's for both the Pi/Orange Pi targets (aarch64, armv7) and x86_64.

use super::{Camera, CameraError, Frame};
use nix::libc;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::ptr::NonNull;
use std::time::Duration;

const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const V4L2_MEMORY_MMAP: u32 = 1;
const V4L2_FIELD_NONE: u32 = 1;
const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;

const fn fourcc(s: &[u8; 4]) -> u32 {
    (s[0] as u32) | ((s[1] as u32) << 8) | ((s[2] as u32) << 16) | ((s[3] as u32) << 24)
}
const YUYV: u32 = fourcc(b"YUYV");
const GREY: u32 = fourcc(b"GREY");
const MJPG: u32 = fourcc(b"MJPG");

/// Buffers the driver cycles through: one being filled, one being read, one spare.
const BUFFERS: u32 = 3;
/// How long [`Camera::grab`] waits for a frame ("at most about one frame time", with margin for
/// a camera adjusting its exposure).
const GRAB_TIMEOUT: Duration = Duration::from_secs(2);

#[repr(C)]
#[derive(Clone, Copy)]
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    priv_: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

/// `fmt` is a union in the kernel whose members include pointers: the pointer member here gives
/// it the same alignment (8 on 64-bit, 4 on 32-bit), hence the same offset and size.
#[repr(C)]
#[derive(Clone, Copy)]
union FormatUnion {
    pix: PixFormat,
    raw: [u8; 200],
    _align: *mut libc::c_void,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Format {
    type_: u32,
    fmt: FormatUnion,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RequestBuffers {
    count: u32,
    type_: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Timecode {
    type_: u32,
    flags: u32,
    frames: u8,
    seconds: u8,
    minutes: u8,
    hours: u8,
    userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
union BufferM {
    offset: u32,
    userptr: libc::c_ulong,
    planes: *mut libc::c_void,
    fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Buffer {
    index: u32,
    type_: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: libc::timeval,
    timecode: Timecode,
    sequence: u32,
    memory: u32,
    m: BufferM,
    length: u32,
    reserved2: u32,
    request_fd: i32,
}

impl Buffer {
    fn mmap(index: u32) -> Self {
        Buffer {
            index,
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            timecode: Timecode::default(),
            sequence: 0,
            memory: V4L2_MEMORY_MMAP,
            m: BufferM { offset: 0 },
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }
}

nix::ioctl_read!(vidioc_querycap, b'V', 0, Capability);
nix::ioctl_readwrite!(vidioc_s_fmt, b'V', 5, Format);
nix::ioctl_readwrite!(vidioc_reqbufs, b'V', 8, RequestBuffers);
nix::ioctl_readwrite!(vidioc_querybuf, b'V', 9, Buffer);
nix::ioctl_readwrite!(vidioc_qbuf, b'V', 15, Buffer);
nix::ioctl_readwrite!(vidioc_dqbuf, b'V', 17, Buffer);
nix::ioctl_write_ptr!(vidioc_streamon, b'V', 18, libc::c_int);
nix::ioctl_write_ptr!(vidioc_streamoff, b'V', 19, libc::c_int);

/// One driver buffer mapped into our memory.
struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

/// A V4L2 capture device, streaming.
pub struct V4l2Camera {
    file: File,
    name: String,
    maps: Vec<Mapping>,
    width: u32,
    height: u32,
    bytesperline: u32,
    pixelformat: u32,
}

// SAFETY: the mappings are owned by this value alone (no aliases are handed out beyond a
// borrow inside `grab`), so moving it to the camera thread is sound.
unsafe impl Send for V4l2Camera {}

fn fail(device: &str, what: &str, e: impl std::fmt::Display) -> CameraError {
    CameraError::Device {
        source_name: device.to_owned(),
        message: format!("{what}: {e}"),
    }
}

fn fourcc_name(f: u32) -> String {
    f.to_le_bytes().iter().map(|&b| b as char).collect()
}

impl V4l2Camera {
    /// Opens `device` (`/dev/video0`, or a `/dev/v4l/by-id/…` name), asks for `width`×`height`
    /// in YUYV (the driver may choose GREY or MJPEG, or another size: we take what it says),
    /// maps its buffers and starts streaming.
    pub fn open(device: &str, width: u32, height: u32) -> Result<Self, CameraError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(device)
            .map_err(|e| fail(device, "open", e))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY (every ioctl below): `fd` is open for the call, and each argument is the
        // `#[repr(C)]` structure the request number was built from (size checked at the end of
        // this file), valid for reads and writes for the duration of the call.
        let mut cap: Capability = unsafe { std::mem::zeroed() };
        unsafe { vidioc_querycap(fd, &mut cap) }
            .map_err(|e| fail(device, "not a V4L2 device (VIDIOC_QUERYCAP)", e))?;
        let caps = if cap.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        if caps & V4L2_CAP_VIDEO_CAPTURE == 0 || caps & V4L2_CAP_STREAMING == 0 {
            return Err(fail(
                device,
                "capabilities",
                "not a streaming video capture device (a metadata node? try the other /dev/video)",
            ));
        }
        let mut fmt = Format {
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            fmt: FormatUnion { raw: [0; 200] },
        };
        fmt.fmt.pix = PixFormat {
            width,
            height,
            pixelformat: YUYV,
            field: V4L2_FIELD_NONE,
            ..PixFormat::default()
        };
        unsafe { vidioc_s_fmt(fd, &mut fmt) }.map_err(|e| fail(device, "VIDIOC_S_FMT", e))?;
        // SAFETY: the driver filled the `pix` member for a capture type.
        let pix = unsafe { fmt.fmt.pix };
        if ![YUYV, GREY, MJPG].contains(&pix.pixelformat) {
            return Err(fail(
                device,
                "format",
                format!(
                    "the camera offers {} instead of YUYV, GREY or MJPG",
                    fourcc_name(pix.pixelformat)
                ),
            ));
        }
        let mut req = RequestBuffers {
            count: BUFFERS,
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            memory: V4L2_MEMORY_MMAP,
            ..RequestBuffers::default()
        };
        unsafe { vidioc_reqbufs(fd, &mut req) }.map_err(|e| fail(device, "VIDIOC_REQBUFS", e))?;
        let mut cam = V4l2Camera {
            name: format!(
                "{device} {}x{} {} (V4L2)",
                pix.width,
                pix.height,
                fourcc_name(pix.pixelformat)
            ),
            file,
            maps: Vec::new(),
            width: pix.width,
            height: pix.height,
            bytesperline: pix.bytesperline,
            pixelformat: pix.pixelformat,
        };
        for index in 0..req.count {
            let mut buf = Buffer::mmap(index);
            unsafe { vidioc_querybuf(fd, &mut buf) }
                .map_err(|e| fail(device, "VIDIOC_QUERYBUF", e))?;
            let len = NonZeroUsize::new(buf.length as usize)
                .ok_or_else(|| fail(device, "VIDIOC_QUERYBUF", "empty buffer"))?;
            // SAFETY: a fresh shared read-only mapping of the driver's buffer at the offset it
            // gave; unmapped in Drop, read only between DQBUF and QBUF.
            let ptr = unsafe {
                nix::sys::mman::mmap(
                    None,
                    len,
                    nix::sys::mman::ProtFlags::PROT_READ,
                    nix::sys::mman::MapFlags::MAP_SHARED,
                    cam.file.as_fd(),
                    libc::off_t::from(buf.m.offset),
                )
            }
            .map_err(|e| fail(device, "mmap", e))?;
            cam.maps.push(Mapping {
                ptr,
                len: len.get(),
            });
            unsafe { vidioc_qbuf(fd, &mut buf) }.map_err(|e| fail(device, "VIDIOC_QBUF", e))?;
        }
        let kind = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        unsafe { vidioc_streamon(fd, &kind) }.map_err(|e| fail(device, "VIDIOC_STREAMON", e))?;
        Ok(cam)
    }

    fn device_err(&self, what: &str, e: impl std::fmt::Display) -> CameraError {
        fail(&self.name, what, e)
    }
}

impl Camera for V4l2Camera {
    fn grab(&mut self) -> Result<Frame, CameraError> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        let mut pfd = [nix::poll::PollFd::new(
            self.file.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(GRAB_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
        let ready = nix::poll::poll(&mut pfd, ms).map_err(|e| self.device_err("poll", e))?;
        if ready == 0 {
            return Err(self.device_err("no frame", format!("within {GRAB_TIMEOUT:?}")));
        }
        let mut buf = Buffer::mmap(0);
        // SAFETY: as in `open`.
        unsafe { vidioc_dqbuf(fd, &mut buf) }.map_err(|e| self.device_err("VIDIOC_DQBUF", e))?;
        let frame = match self.maps.get(buf.index as usize) {
            Some(m) => {
                let used = (buf.bytesused as usize).min(m.len);
                // SAFETY: the mapping is `m.len` bytes long, and the driver does not write
                // this buffer until we queue it again below.
                let data = unsafe { std::slice::from_raw_parts(m.ptr.as_ptr() as *const u8, used) };
                luma(
                    self.pixelformat,
                    data,
                    self.width,
                    self.height,
                    self.bytesperline,
                )
                .map_err(|e| self.device_err("frame", e))
            }
            None => Err(self.device_err("VIDIOC_DQBUF", "unknown buffer index")),
        };
        // Back to the driver whatever the frame was.
        unsafe { vidioc_qbuf(fd, &mut buf) }.map_err(|e| self.device_err("VIDIOC_QBUF", e))?;
        frame
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        let kind = V4L2_BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        // SAFETY: as in `open`; then each mapping is unmapped once, with its own length.
        let _ = unsafe { vidioc_streamoff(fd, &kind) };
        for m in self.maps.drain(..) {
            let _ = unsafe { nix::sys::mman::munmap(m.ptr, m.len) };
        }
    }
}

/// The grey frame from one captured buffer.
pub fn luma(
    pixelformat: u32,
    data: &[u8],
    width: u32,
    height: u32,
    bytesperline: u32,
) -> Result<Frame, String> {
    let (w, h) = (width as usize, height as usize);
    match pixelformat {
        YUYV | GREY => {
            let bpp = if pixelformat == YUYV { 2 } else { 1 };
            let stride = (bytesperline as usize).max(w * bpp);
            if data.len() < stride * (h.saturating_sub(1)) + w * bpp {
                return Err(format!(
                    "short frame: {} bytes for {width}x{height}",
                    data.len()
                ));
            }
            let mut out = Vec::with_capacity(w * h);
            for row in data.chunks(stride).take(h) {
                // Y0 U Y1 V: the luma is every other byte
                out.extend(row.iter().step_by(bpp).take(w));
            }
            Frame::from_raw(width, height, out).ok_or_else(|| "frame size mismatch".to_owned())
        }
        MJPG => image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
            .map(|i| i.to_luma8())
            .map_err(|e| format!("MJPEG frame: {e}")),
        other => Err(format!("unsupported pixel format {}", fourcc_name(other))),
    }
}

// The kernel's sizes (linux/videodev2.h), which the ioctl numbers encode.
const _: () = assert!(std::mem::size_of::<Capability>() == 104);
const _: () = assert!(std::mem::size_of::<PixFormat>() == 48);
const _: () = assert!(std::mem::size_of::<RequestBuffers>() == 20);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Format>() == 208);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Buffer>() == 88);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(std::mem::size_of::<Format>() == 204);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(std::mem::size_of::<Buffer>() == 68);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_gives_every_other_byte_with_the_stride() {
        // 2x2 YUYV with 2 bytes of padding per row
        let data = [10, 1, 20, 2, 0, 0, 30, 3, 40, 4, 0, 0];
        let f = luma(YUYV, &data, 2, 2, 6).unwrap();
        assert_eq!(f.into_raw(), vec![10, 20, 30, 40]);
        assert!(luma(YUYV, &data[..7], 2, 2, 6).is_err());
    }

    #[test]
    fn mjpeg_frames_are_decoded() {
        let img = image::GrayImage::from_pixel(32, 16, image::Luma([200]));
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let f = luma(MJPG, jpeg.get_ref(), 32, 16, 0).unwrap();
        assert_eq!(f.dimensions(), (32, 16));
        assert!(f.get_pixel(5, 5).0[0].abs_diff(200) < 4);
    }

    #[test]
    fn a_file_that_is_not_a_camera_is_refused_by_name() {
        let Err(e) = V4l2Camera::open("/dev/null", 640, 480) else {
            panic!("/dev/null is not a camera");
        };
        let text = e.to_string();
        assert!(
            text.contains("/dev/null") && text.contains("VIDIOC_QUERYCAP"),
            "{text}"
        );
    }
}
