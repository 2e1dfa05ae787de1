//! USB webcam capture through V4L2 (memory-mapped streaming), with unplug recovery.
//!
//! [`list_devices`] reads every `/dev/video*` node and sorts cameras from codec, ISP, Camera
//! Module and metadata nodes ([`classify`]); [`find_camera`] picks the camera for
//! `source = "auto"`.
//!
//! [`V4l2Source`] opens the device, picks the closest mode ([`formats::choose_mode`]),
//! converts each buffer to I420 ([`convert`]) and stamps it with the driver's monotonic
//! buffer time. When the camera goes away (ENODEV, read errors, no frame for
//! [`FRAME_TIMEOUT`]) it yields a "camera disconnected" [`Placeholder`] at the configured frame
//! rate and tries to reopen the device every [`RETRY_INTERVAL`]; viewers stay connected.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use v4l::buffer::Type;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::classify::{self, cap, NodeInfo, NodeKind, NotCamera};
use super::convert;
use super::formats::{self, CameraMode, Capabilities, FourCc, Request};
use super::placeholder::Placeholder;
use super::recover::Reconnect;
use super::{CaptureError, VideoSource};
use crate::media::pool::BufferPool;
use crate::media::{CameraH264, PixelFormat, RawFrame, VideoFrame};

/// Buffers queued to the driver (more absorbs scheduling jitter; each costs a frame of memory).
pub const BUFFER_COUNT: u32 = 4;
/// No frame for this long means the camera is gone or hung.
pub const FRAME_TIMEOUT: Duration = Duration::from_millis(700);
/// How often a lost camera is looked for.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME` (button): the next frame is a keyframe.
const CID_FORCE_KEY_FRAME: u32 = 0x0099_0900 + 229;
/// `V4L2_CID_MPEG_VIDEO_H264_I_PERIOD`: frames between H.264 I-frames.
const CID_H264_I_PERIOD: u32 = 0x0099_0900 + 358;
/// `V4L2_CID_MPEG_VIDEO_GOP_SIZE`: frames between keyframes (codec-independent).
const CID_GOP_SIZE: u32 = 0x0099_0900 + 203;
/// `V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER`: SPS/PPS before every IDR.
const CID_REPEAT_SEQ_HEADER: u32 = 0x0099_0900 + 226;
/// Spare picture buffers kept: a frame is held by at most every output queue (4 deep) and
/// the encoders; more than this in flight are allocated and freed.
const FRAME_POOL_SPARE: usize = 8;
/// Most frame sizes listed per format for stepwise-size cameras.
const MAX_STEPWISE_SIZES: usize = 32;
/// Most formats read from one node (a guard against a driver that never ends its list).
const MAX_FORMATS: u32 = 256;

/// What `VIDIOC_QUERYCAP` reports for one node.
struct QueryCap {
    driver: String,
    card: String,
    bus_info: String,
    /// The node's own capabilities ([`cap::node_caps`]).
    caps: u32,
}

/// `VIDIOC_QUERYCAP`, read here rather than with the v4l crate's `query_caps`: that returns
/// `device_caps` without the device's `capabilities` (so whether the driver set
/// `V4L2_CAP_DEVICE_CAPS` cannot be told) and panics on a card name that is not UTF-8 (the
/// kernel cuts names at 31 bytes, possibly inside a character).
fn query_cap(dev: &Device) -> io::Result<QueryCap> {
    // SAFETY: v4l2_capability is plain data, for which all zeroes is a valid value.
    let mut raw: v4l::v4l_sys::v4l2_capability = unsafe { std::mem::zeroed() };
    // SAFETY: VIDIOC_QUERYCAP writes one v4l2_capability to the pointer, which points to
    // `raw` (owned here, of that type), on the device's open file descriptor.
    unsafe {
        v4l::v4l2::ioctl(
            dev.handle().fd(),
            v4l::v4l2::vidioc::VIDIOC_QUERYCAP,
            &mut raw as *mut v4l::v4l_sys::v4l2_capability as *mut std::os::raw::c_void,
        )?;
    }
    Ok(QueryCap {
        driver: c_string(&raw.driver),
        card: c_string(&raw.card),
        bus_info: c_string(&raw.bus_info),
        caps: cap::node_caps(raw.capabilities, raw.device_caps),
    })
}

/// A NUL-terminated name from a fixed-size kernel field, invalid UTF-8 replaced.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// The pixel formats (raw fourcc codes) a node captures: `VIDIOC_ENUM_FMT` on its capture
/// buffer type, single-planar if it has one, else multi-planar; none for other nodes.
fn capture_formats(dev: &Device, caps: u32) -> Vec<u32> {
    let buf_type = if caps & cap::VIDEO_CAPTURE != 0 {
        Type::VideoCapture
    } else if caps & cap::VIDEO_CAPTURE_MPLANE != 0 {
        Type::VideoCaptureMplane
    } else {
        return Vec::new();
    };
    let mut codes = Vec::new();
    for index in 0..MAX_FORMATS {
        // SAFETY: v4l2_fmtdesc is plain data, for which all zeroes is a valid value.
        let mut desc: v4l::v4l_sys::v4l2_fmtdesc = unsafe { std::mem::zeroed() };
        desc.index = index;
        desc.type_ = buf_type as u32;
        // SAFETY: VIDIOC_ENUM_FMT reads `index` and `type` and fills the rest of the
        // v4l2_fmtdesc the pointer points to (`desc`, owned here, of that type).
        let listed = unsafe {
            v4l::v4l2::ioctl(
                dev.handle().fd(),
                v4l::v4l2::vidioc::VIDIOC_ENUM_FMT,
                &mut desc as *mut v4l::v4l_sys::v4l2_fmtdesc as *mut std::os::raw::c_void,
            )
        };
        // EINVAL past the last format ends the list.
        if listed.is_err() {
            break;
        }
        codes.push(desc.pixelformat);
    }
    codes
}

/// A fourcc code as `v4l2-ctl` prints it, e.g. `YUYV`, `pRAA`, `Y10` (padding dropped).
fn fourcc_text(code: u32) -> String {
    String::from_utf8_lossy(&code.to_le_bytes())
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

/// Reads what [`classify::classify`] needs of the open node `path`: names, the node's
/// capabilities and the formats it captures.
fn inspect(dev: &Device, path: &Path) -> Result<NodeInfo, String> {
    let q = query_cap(dev)
        .map_err(|e| format!("{}: cannot query capabilities: {e}", path.display()))?;
    let formats = capture_formats(dev, q.caps)
        .into_iter()
        .map(fourcc_text)
        .collect();
    Ok(NodeInfo {
        path: path.display().to_string(),
        driver: q.driver,
        card: q.card,
        bus_info: q.bus_info,
        device_caps: q.caps,
        formats,
    })
}

/// Reads the capture modes of `path`: formats, sizes and frame rates.
pub fn probe(path: &Path) -> Result<Capabilities, String> {
    let dev = Device::with_path(path).map_err(|e| open_error(path, &e))?;
    let info = inspect(&dev, path)?;
    probe_open(&dev, path, &info)
}

/// The modes of a camera already opened and inspected.
fn probe_open(dev: &Device, path: &Path, info: &NodeInfo) -> Result<Capabilities, String> {
    let caps = info.device_caps;
    if caps & cap::VIDEO_CAPTURE == 0 {
        return Err(if caps & cap::VIDEO_CAPTURE_MPLANE != 0 {
            format!(
                "{} ({}) captures multi-planar video only, which peercam does not read",
                path.display(),
                info.card
            )
        } else {
            format!(
                "{} ({}) is not a video capture device (a metadata or output node?)",
                path.display(),
                info.card
            )
        });
    }
    if caps & cap::STREAMING == 0 {
        return Err(format!(
            "{} ({}) does not support streaming I/O",
            path.display(),
            info.card
        ));
    }
    let mut modes = Vec::new();
    for code in capture_formats(dev, cap::VIDEO_CAPTURE) {
        let fourcc = FourCc::parse(&fourcc_text(code));
        let v4l_code = FourCC::from(code);
        let sizes = dev.enum_framesizes(v4l_code).unwrap_or_default();
        for size in sizes {
            for d in size.size.to_discrete().into_iter().take(MAX_STEPWISE_SIZES) {
                let fps = frame_rates(dev, v4l_code, d.width, d.height);
                modes.push(CameraMode {
                    fourcc: fourcc.clone(),
                    width: d.width,
                    height: d.height,
                    fps,
                });
            }
        }
    }
    Ok(Capabilities {
        device: path.display().to_string(),
        card: info.card.clone(),
        modes,
    })
}

/// Discrete frame rates of one mode, highest first (stepwise ranges give their ends).
fn frame_rates(dev: &Device, fourcc: FourCC, width: u32, height: u32) -> Vec<f32> {
    let rate = |f: &v4l::Fraction| {
        if f.numerator == 0 {
            0.0
        } else {
            f.denominator as f32 / f.numerator as f32
        }
    };
    let mut fps: Vec<f32> = dev
        .enum_frameintervals(fourcc, width, height)
        .unwrap_or_default()
        .iter()
        .flat_map(|i| match &i.interval {
            FrameIntervalEnum::Discrete(f) => vec![rate(f)],
            // min interval = max rate.
            FrameIntervalEnum::Stepwise(s) => formats::stepwise_rates(rate(&s.max), rate(&s.min)),
        })
        .filter(|f| *f > 0.0)
        .collect();
    fps.sort_by(|a, b| b.total_cmp(a));
    fps.dedup();
    fps
}

fn v4l_fourcc(f: &FourCc) -> Option<FourCC> {
    Some(FourCC::new(match f {
        FourCc::Yuyv => b"YUYV",
        FourCc::Nv12 => b"NV12",
        FourCc::Yu12 => b"YU12",
        FourCc::Mjpg => b"MJPG",
        FourCc::H264 => b"H264",
        FourCc::Other(_) => return None,
    }))
}

/// A message naming the device and what to do, for an OS error on open.
fn open_error(path: &Path, e: &io::Error) -> String {
    let p = path.display();
    match e.raw_os_error() {
        Some(libc::ENOENT) => {
            format!("camera {p} does not exist (plugged in? see `peercam --list-devices`)")
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("camera {p}: permission denied; run peercam as a member of the `video` group")
        }
        Some(libc::EBUSY) => format!("camera {p} is busy: another program is using it"),
        _ => format!("camera {p} cannot be opened: {e}"),
    }
}

/// One `/dev/video*` node, as `--list-devices` reports it and `source = "auto"` chooses
/// among them.
#[derive(Debug, Clone)]
pub enum Node {
    /// A camera ([`classify::classify`]), with its modes or why they could not be read.
    Camera {
        /// What the node reported.
        info: NodeInfo,
        /// Its modes ([`probe`]), or why not.
        caps: Result<Capabilities, String>,
    },
    /// Not a camera, and why.
    NotCamera {
        /// What the node reported.
        info: NodeInfo,
        /// Why it is not a camera.
        reason: NotCamera,
    },
    /// Could not be opened or queried (permissions, unplugged meanwhile).
    Unreadable {
        /// Device path.
        path: PathBuf,
        /// Why, naming the path.
        error: String,
    },
}

impl Node {
    /// Opens, inspects, classifies and (for a camera) probes `path`.
    pub fn read(path: &Path) -> Node {
        let unreadable = |error| Node::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let dev = match Device::with_path(path) {
            Ok(dev) => dev,
            Err(e) => return unreadable(open_error(path, &e)),
        };
        let info = match inspect(&dev, path) {
            Ok(info) => info,
            Err(e) => return unreadable(e),
        };
        match classify::classify(&info) {
            NodeKind::Camera => {
                let caps = probe_open(&dev, path, &info);
                Node::Camera { info, caps }
            }
            NodeKind::NotCamera(reason) => Node::NotCamera { info, reason },
        }
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        match self {
            Node::Camera { info, .. } | Node::NotCamera { info, .. } => Path::new(&info.path),
            Node::Unreadable { path, .. } => path,
        }
    }
}

/// `/dev/videoN` sorts by N (video2 before video10); other names after, by name.
fn node_order(path: &Path) -> (u32, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let number = name
        .strip_prefix("video")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX);
    (number, name)
}

/// Every `/dev/video*` node in number order: cameras with their modes, the other nodes with
/// why they are not cameras.
pub fn list_devices() -> Vec<Node> {
    let mut paths: Vec<PathBuf> = v4l::context::enum_devices()
        .iter()
        .map(|n| n.path().to_path_buf())
        .collect();
    paths.sort_by_key(|p| node_order(p));
    paths.iter().map(|p| Node::read(p)).collect()
}

/// The camera `source = "auto"` uses among `nodes`: the first camera with a mode in a
/// format peercam captures ([`classify::is_usable_format`]; with `h264_ok` a camera
/// offering only H.264 counts too: it will be passed through). `None`: no V4L2 camera.
pub fn auto_choice(nodes: &[Node], h264_ok: bool) -> Option<(PathBuf, Capabilities)> {
    nodes.iter().find_map(|node| match node {
        Node::Camera {
            info,
            caps: Ok(caps),
        } if caps
            .modes
            .iter()
            .any(|m| classify::is_usable_format(&m.fourcc, h264_ok)) =>
        {
            Some((PathBuf::from(&info.path), caps.clone()))
        }
        _ => None,
    })
}

/// The camera for `source = "auto"` ([`auto_choice`] over [`list_devices`]): codec, ISP,
/// Camera Module and metadata nodes are never chosen. `None`: no V4L2 camera here.
pub fn find_camera(h264_ok: bool) -> Option<(PathBuf, Capabilities)> {
    auto_choice(&list_devices(), h264_ok)
}

/// An open, streaming camera.
struct Camera {
    /// Kept for controls (H.264 keyframe requests); the stream shares its handle.
    dev: Device,
    /// The camera has `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME` (H.264 mode only).
    keyframe_control: bool,
    stream: MmapStream<'static>,
    fourcc: FourCc,
    width: u32,
    height: u32,
    stride: usize,
    mjpeg: convert::MjpegDecoder,
    /// Monotonic-clock offset: `Instant` at the moment the kernel clock read `base_mono`.
    clock: MonotonicClock,
    /// Where converted pictures go (shared with the placeholder; buffers come back).
    pool: Arc<BufferPool>,
}

/// The mode a camera was last opened in, tried first when it comes back.
#[derive(Debug, Clone)]
struct KnownMode {
    card: String,
    chosen: formats::Chosen,
}

/// Why a read failed.
enum ReadError {
    /// One bad frame (corrupt JPEG, short buffer); the camera is fine.
    Frame(String),
    /// The camera is gone or stuck.
    Lost(String),
}

impl Camera {
    /// Opens `path` in the mode [`formats::choose_mode`] picks, or straight in `known` (the
    /// mode it picked last time, with the card name) to skip enumerating every format, size
    /// and rate again when a camera comes back (thousands of ioctls on some drivers).
    fn open(
        path: &Path,
        request: &Request,
        pool: Arc<BufferPool>,
        known: Option<&KnownMode>,
    ) -> Result<(Camera, KnownMode), String> {
        let (card, chosen) = match known {
            Some(k) => (k.card.clone(), k.chosen.clone()),
            None => {
                let caps = probe(path)?;
                let chosen = formats::choose_mode(&caps, request).map_err(|e| e.to_string())?;
                (caps.card, chosen)
            }
        };
        let fourcc = v4l_fourcc(&chosen.fourcc)
            .ok_or_else(|| format!("{}: cannot capture {:?}", path.display(), chosen.fourcc))?;
        let dev = Device::with_path(path).map_err(|e| open_error(path, &e))?;
        let set = dev
            .set_format(&Format::new(chosen.width, chosen.height, fourcc))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => open_error(path, &e),
                _ => format!(
                    "{}: cannot set format {}: {e}",
                    path.display(),
                    chosen.reason
                ),
            })?;
        if set.fourcc != fourcc || set.width != chosen.width || set.height != chosen.height {
            return Err(format!(
                "{} refused {:?} {}x{}; it set {} {}x{}",
                path.display(),
                chosen.fourcc,
                chosen.width,
                chosen.height,
                set.fourcc,
                set.width,
                set.height
            ));
        }
        let fps = chosen.fps.round().max(1.0) as u32;
        if let Err(e) = dev.set_params(&v4l::video::capture::Parameters::with_fps(fps)) {
            warn!("{}: cannot set {fps} fps: {e}", path.display());
        }
        let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, BUFFER_COUNT).map_err(
            |e| match e.raw_os_error() {
                Some(libc::EBUSY) => open_error(path, &e),
                _ => format!("{}: cannot start streaming: {e}", path.display()),
            },
        )?;
        stream.set_timeout(FRAME_TIMEOUT);
        let keyframe_control =
            chosen.fourcc == FourCc::H264 && setup_h264_controls(&dev, path, &card, request, fps);
        info!(
            "camera {} ({}): asked {}x{}@{}, picked {:?} {}x{}@{} ({})",
            path.display(),
            card,
            request.width,
            request.height,
            request.fps,
            chosen.fourcc,
            chosen.width,
            chosen.height,
            chosen.fps,
            chosen.reason
        );
        let camera = Camera {
            dev,
            keyframe_control,
            stream,
            fourcc: chosen.fourcc.clone(),
            width: set.width,
            height: set.height,
            stride: set.stride as usize,
            mjpeg: convert::MjpegDecoder::default(),
            clock: MonotonicClock::new(),
            pool,
        };
        Ok((camera, KnownMode { card, chosen }))
    }

    fn read(&mut self, sequence: u64) -> Result<VideoFrame, ReadError> {
        let (buf, meta) = match self.stream.next() {
            Ok(x) => x,
            Err(e) => return Err(ReadError::Lost(e.to_string())),
        };
        let used = (meta.bytesused as usize).min(buf.len());
        let data = &buf[..used];
        let (w, h) = (self.width, self.height);
        // time_t/suseconds_t are 32 bits on armv7: the casts are needed there.
        #[allow(clippy::unnecessary_cast)]
        let capture_instant = self
            .clock
            .instant(meta.timestamp.sec as i64, meta.timestamp.usec as i64);
        if self.fourcc == FourCc::H264 {
            if data.is_empty() {
                return Err(ReadError::Frame("empty H.264 buffer".to_owned()));
            }
            return Ok(VideoFrame::H264(CameraH264 {
                width: w,
                height: h,
                data: bytes::Bytes::copy_from_slice(data),
                capture_instant,
                sequence,
            }));
        }
        let mut out = self.pool.take(RawFrame::i420_len(w, h));
        let converted = match self.fourcc {
            FourCc::Yuyv => convert::yuyv_to_i420(data, self.stride, w, h, &mut out),
            FourCc::Nv12 => convert::nv12_to_i420(data, self.stride, w, h, &mut out),
            FourCc::Yu12 => convert::yu12_to_i420(data, self.stride, w, h, &mut out),
            FourCc::Mjpg => convert::mjpeg_to_i420(data, w, h, &mut out, &mut self.mjpeg),
            FourCc::H264 | FourCc::Other(_) => {
                return Err(ReadError::Lost(format!(
                    "{:?} is not converted",
                    self.fourcc
                )))
            }
        };
        converted.map_err(|e| ReadError::Frame(e.to_string()))?;
        Ok(VideoFrame::Raw(RawFrame {
            width: w,
            height: h,
            format: PixelFormat::I420,
            data: out,
            capture_instant,
            sequence,
        }))
    }

    /// Asks an H.264 camera for a keyframe (no-op without the control; see
    /// [`setup_h264_controls`]).
    fn request_keyframe(&self, path: &Path) {
        if !self.keyframe_control {
            return;
        }
        let control = v4l::control::Control {
            id: CID_FORCE_KEY_FRAME,
            value: v4l::control::Value::None,
        };
        if let Err(e) = self.dev.set_control(control) {
            debug!("camera {}: force key frame failed: {e}", path.display());
        }
    }
}

/// Prepares a camera streaming H.264 for passthrough: SPS/PPS before every IDR where it
/// can, keyframes every `video.keyframe_interval_s`, and finds out whether keyframes can be
/// requested. Logs what the camera could not do. Returns whether the force-key-frame
/// control exists.
fn setup_h264_controls(dev: &Device, path: &Path, card: &str, request: &Request, fps: u32) -> bool {
    let ids: Vec<u32> = dev
        .query_controls()
        .map(|list| list.iter().map(|d| d.id).collect())
        .unwrap_or_default();
    let has = |id| ids.contains(&id);
    let p = path.display();
    let period = i64::from(request.keyframe_interval_s.max(1) * fps);
    let set = |id, value| {
        dev.set_control(v4l::control::Control {
            id,
            value: v4l::control::Value::Integer(value),
        })
    };
    let mut gop = None;
    for id in [CID_H264_I_PERIOD, CID_GOP_SIZE] {
        if has(id) {
            match set(id, period) {
                Ok(()) => {
                    gop = Some(period);
                    break;
                }
                Err(e) => warn!("camera {p}: cannot set the keyframe period to {period}: {e}"),
            }
        }
    }
    if has(CID_REPEAT_SEQ_HEADER) {
        if let Err(e) = set(CID_REPEAT_SEQ_HEADER, 1) {
            debug!("camera {p}: cannot enable repeated SPS/PPS: {e} (peercam inserts them)");
        }
    }
    let keyframes = has(CID_FORCE_KEY_FRAME);
    match (keyframes, gop) {
        (true, _) => {
            info!("camera {p} ({card}): H.264 keyframes on request (force-key-frame control)")
        }
        (false, Some(n)) => warn!(
            "camera {p} ({card}) cannot make a keyframe on request (no force-key-frame \
             control): new viewers wait for its periodic keyframe, every {n} frames"
        ),
        (false, None) => warn!(
            "camera {p} ({card}) cannot make a keyframe on request and has no keyframe-period \
             control: new viewers wait for the camera's own periodic keyframe; if the picture \
             takes long to appear, use another [video] format"
        ),
    }
    keyframes
}

/// Maps V4L2 buffer timestamps (CLOCK_MONOTONIC) to `Instant`s.
struct MonotonicClock {
    instant: Instant,
    mono_us: i64,
}

// time_t is 32 bits on armv7: the casts are needed there.
#[allow(clippy::unnecessary_cast)]
fn monotonic_now_us() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i64 * 1_000_000 + ts.tv_nsec as i64 / 1_000
}

impl MonotonicClock {
    fn new() -> Self {
        MonotonicClock {
            instant: Instant::now(),
            mono_us: monotonic_now_us(),
        }
    }

    /// The `Instant` of a buffer timestamp; now if the timestamp is absent or implausible.
    fn instant(&self, sec: i64, usec: i64) -> Instant {
        let ts = sec * 1_000_000 + usec;
        let age = self.mono_us - ts; // > 0: the buffer is older than our reference point
        if ts <= 0 || age.abs() > 10_000_000 {
            return Instant::now();
        }
        if age >= 0 {
            self.instant
                .checked_sub(Duration::from_micros(age as u64))
                .unwrap_or(self.instant)
        } else {
            self.instant + Duration::from_micros((-age) as u64)
        }
    }
}

/// A V4L2 camera that survives being unplugged.
pub struct V4l2Source {
    path: PathBuf,
    request: Request,
    camera: Option<Camera>,
    placeholder: Placeholder,
    frame_interval: Duration,
    next_placeholder: Instant,
    /// When to reopen a lost camera; the outage's error, logged once.
    reconnect: Reconnect,
    sequence: u64,
    bad_frames: u64,
    /// Picture buffers for camera and placeholder frames, reused once the encoders are done.
    pool: Arc<BufferPool>,
    /// The mode of the last successful open (reopened directly after an unplug).
    known: Option<KnownMode>,
    /// Whether the device node existed at the last failed open: a node that appears is
    /// opened at once instead of at the next [`RETRY_INTERVAL`].
    node_present: bool,
}

impl V4l2Source {
    /// Opens `path` for `request`. A camera that is missing or busy at start is not fatal:
    /// the source shows the placeholder and keeps looking (the warning says why).
    pub fn new(path: PathBuf, request: Request) -> Self {
        let now = Instant::now();
        let mut source = V4l2Source {
            placeholder: Placeholder::new(request.width, request.height),
            frame_interval: Duration::from_secs(1) / request.fps.max(1),
            path,
            request,
            camera: None,
            next_placeholder: now,
            reconnect: Reconnect::new(RETRY_INTERVAL, now),
            sequence: 0,
            bad_frames: 0,
            pool: BufferPool::new(FRAME_POOL_SPARE),
            known: None,
            node_present: false,
        };
        source.try_open(now);
        source
    }

    /// Whether the camera is streaming now (false while the placeholder is shown).
    pub fn is_connected(&self) -> bool {
        self.camera.is_some()
    }

    fn try_open(&mut self, now: Instant) {
        self.reconnect.attempt(now);
        let opened = match Camera::open(
            &self.path,
            &self.request,
            self.pool.clone(),
            self.known.as_ref(),
        ) {
            // The device is there but the remembered mode did not work (another camera, or a
            // changed one): pick anew. A missing node keeps the mode for the replug.
            Err(_) if self.known.is_some() && self.path.exists() => {
                self.known = None;
                Camera::open(&self.path, &self.request, self.pool.clone(), None)
            }
            other => other,
        };
        match opened {
            Ok((camera, known)) => {
                self.known = Some(known);
                if self.reconnect.succeeded() {
                    info!("camera {} is back", self.path.display());
                }
                // Placeholders keep the camera's size so the encoders are not rebuilt.
                if self.placeholder.size() != (camera.width, camera.height) {
                    self.placeholder = Placeholder::new(camera.width, camera.height);
                }
                self.camera = Some(camera);
            }
            Err(e) => {
                self.node_present = self.path.exists();
                self.lose(e);
            }
        }
    }

    fn lose(&mut self, reason: String) {
        self.camera = None;
        if self.reconnect.failed(&reason) {
            warn!(
                "{reason}; showing \"camera disconnected\" and retrying every {} ms",
                RETRY_INTERVAL.as_millis()
            );
        }
    }
}

impl VideoSource for V4l2Source {
    fn describe(&self) -> String {
        format!(
            "camera {} ({}x{}@{} requested)",
            self.path.display(),
            self.request.width,
            self.request.height,
            self.request.fps
        )
    }

    fn request_keyframe(&mut self) {
        if let Some(camera) = &self.camera {
            camera.request_keyframe(&self.path);
        }
    }

    fn next_frame(&mut self) -> Result<VideoFrame, CaptureError> {
        loop {
            if let Some(camera) = self.camera.as_mut() {
                match camera.read(self.sequence) {
                    Ok(frame) => {
                        self.sequence += 1;
                        return Ok(frame);
                    }
                    Err(ReadError::Frame(e)) => {
                        self.bad_frames += 1;
                        if self.bad_frames.is_power_of_two() {
                            warn!(
                                "camera {}: dropped a bad frame ({e}); {} so far",
                                self.path.display(),
                                self.bad_frames
                            );
                        }
                        continue;
                    }
                    Err(ReadError::Lost(e)) => {
                        let reason = format!("camera {} lost: {e}", self.path.display());
                        self.lose(reason);
                        self.next_placeholder = Instant::now();
                    }
                }
            }
            let now = Instant::now();
            // A stat per placeholder frame: a replugged camera is opened as soon as its node
            // appears, not up to RETRY_INTERVAL later.
            let appeared = !self.node_present && self.path.exists();
            if self.reconnect.is_due(now) || appeared {
                self.try_open(now);
                if self.camera.is_some() {
                    continue;
                }
            }
            // Paced placeholder frames until the camera returns.
            let due = self.next_placeholder;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let now = Instant::now();
            self.next_placeholder = (due + self.frame_interval).max(now);
            let frame = self.placeholder.frame(&self.pool, self.sequence, now);
            self.sequence += 1;
            return Ok(VideoFrame::Raw(frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            width: 320,
            height: 240,
            fps: 50,
            h264_passthrough_ok: false,
            forced_format: None,
            keyframe_interval_s: 2,
        }
    }

    #[test]
    fn a_missing_device_yields_placeholders_at_the_frame_rate() {
        let mut s = V4l2Source::new(PathBuf::from("/dev/video-peercam-missing"), request());
        assert!(!s.is_connected());
        let start = Instant::now();
        let frames: Vec<RawFrame> = (0..10)
            .map(|_| match s.next_frame().expect("frame") {
                VideoFrame::Raw(f) => f,
                VideoFrame::H264(_) => panic!("placeholder frames are raw"),
            })
            .collect();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(150), "paced, took {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(frames.iter().all(|f| (f.width, f.height) == (320, 240)));
        assert_eq!(frames[9].sequence, 9);
        // Steady state allocates nothing: dropped frames give their buffers back.
        drop(frames);
        let before = s.pool.allocations();
        for _ in 0..10 {
            drop(s.next_frame().expect("frame"));
        }
        assert_eq!(s.pool.allocations(), before);
        assert!(s
            .reconnect
            .outage()
            .is_some_and(|o| o.contains("does not exist")));
    }

    #[test]
    fn monotonic_timestamps_map_to_instants() {
        let clock = MonotonicClock::new();
        let now_us = monotonic_now_us();
        let t = clock.instant(now_us / 1_000_000, now_us % 1_000_000);
        let d = if t > Instant::now() {
            t - Instant::now()
        } else {
            Instant::now() - t
        };
        assert!(d < Duration::from_millis(50), "{d:?}");
        let earlier = clock.instant(
            (now_us - 100_000) / 1_000_000,
            (now_us - 100_000) % 1_000_000,
        );
        let gap = t.saturating_duration_since(earlier);
        assert!(
            gap > Duration::from_millis(95) && gap < Duration::from_millis(105),
            "{gap:?}"
        );
        assert!(
            clock.instant(0, 0) <= Instant::now(),
            "absent timestamp: now"
        );
    }

    #[test]
    fn a_non_camera_path_is_a_clear_error() {
        let e = probe(Path::new("/dev/null")).expect_err("not a camera");
        assert!(e.contains("/dev/null"), "{e}");
        match Node::read(Path::new("/dev/null")) {
            Node::Unreadable { path, error } => {
                assert_eq!(path, Path::new("/dev/null"));
                assert!(error.contains("cannot query capabilities"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nodes_sort_by_number() {
        let mut paths: Vec<PathBuf> = ["/dev/video10", "/dev/video2", "/dev/video0", "/dev/videox"]
            .iter()
            .map(PathBuf::from)
            .collect();
        paths.sort_by_key(|p| node_order(p));
        let names: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            ["/dev/video0", "/dev/video2", "/dev/video10", "/dev/videox"]
        );
    }

    #[test]
    fn kernel_names_and_fourccs_become_text() {
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"YUYV")), "YUYV");
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"Y10 ")), "Y10");
        assert_eq!(fourcc_text(u32::from_le_bytes(*b"pRAA")), "pRAA");
        assert_eq!(c_string(b"uvcvideo\0\0\0\0\0\0\0\0"), "uvcvideo");
        // A card name cut by the kernel inside a UTF-8 character: replaced, not a panic.
        assert_eq!(c_string(b"Kamera \xc3\0"), "Kamera \u{fffd}");
        assert_eq!(c_string(b"no terminator"), "no terminator");
    }

    fn camera(path: &str, fourcc: FourCc) -> Node {
        Node::Camera {
            info: NodeInfo {
                path: path.into(),
                driver: "uvcvideo".into(),
                card: "cam".into(),
                bus_info: "usb-1".into(),
                device_caps: cap::VIDEO_CAPTURE | cap::STREAMING,
                formats: vec![fourcc.code().to_owned()],
            },
            caps: Ok(Capabilities {
                device: path.into(),
                card: "cam".into(),
                modes: vec![CameraMode {
                    fourcc,
                    width: 640,
                    height: 480,
                    fps: vec![30.0],
                }],
            }),
        }
    }

    #[test]
    fn auto_takes_the_first_camera_with_a_usable_mode() {
        let isp = Node::NotCamera {
            info: NodeInfo {
                path: "/dev/video14".into(),
                driver: "bcm2835-isp".into(),
                card: "bcm2835-isp".into(),
                bus_info: "platform:bcm2835-isp".into(),
                device_caps: cap::VIDEO_CAPTURE | cap::STREAMING,
                formats: vec!["YUYV".into()],
            },
            reason: NotCamera::Isp,
        };
        let broken = Node::Camera {
            info: NodeInfo {
                path: "/dev/video1".into(),
                driver: "uvcvideo".into(),
                card: "cam".into(),
                bus_info: "usb-1".into(),
                device_caps: cap::VIDEO_CAPTURE,
                formats: vec!["YUYV".into()],
            },
            caps: Err("/dev/video1 (cam) does not support streaming I/O".into()),
        };
        let nodes = [
            isp,
            broken,
            camera("/dev/video2", FourCc::H264),
            camera("/dev/video3", FourCc::Other("GREY".into())),
            camera("/dev/video4", FourCc::Mjpg),
        ];
        let path = |h264_ok| auto_choice(&nodes, h264_ok).map(|(p, _)| p);
        assert_eq!(path(false), Some(PathBuf::from("/dev/video4")));
        assert_eq!(path(true), Some(PathBuf::from("/dev/video2")));
        assert_eq!(auto_choice(&nodes[..2], true).map(|(p, _)| p), None);
    }
}
