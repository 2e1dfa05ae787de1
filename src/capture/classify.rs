//! Which `/dev/video*` nodes are cameras, decided without device access.
//!
//! A Raspberry Pi has many video nodes that are not cameras a program can read: the
//! `bcm2835-codec` encoders, decoders and converters (memory-to-memory), the `bcm2835-isp`
//! and `pispbe` ISP nodes (some of them capture nodes offering YUYV or YU12), the HEVC decoder,
//! the Camera Module's CSI-2 receiver (`unicam`, `rp1-cfe`: raw Bayer that only libcamera
//! turns into pictures) and metadata nodes (also next to every UVC webcam). [`classify`]
//! sorts one node from what `VIDIOC_QUERYCAP` and `VIDIOC_ENUM_FMT` report ([`NodeInfo`]);
//! [`pick_auto`] is the node `[video] source = "auto"` would use among them.
//!
//! Tested on the node lists of real boards in `tests/fixtures/v4l2-nodes/`.

use std::fmt;

use super::formats::FourCc;

/// The `V4L2_CAP_*` capability flags (linux/videodev2.h) the classification reads.
pub mod cap {
    /// `V4L2_CAP_VIDEO_CAPTURE`: single-planar video capture.
    pub const VIDEO_CAPTURE: u32 = 0x0000_0001;
    /// `V4L2_CAP_VIDEO_OUTPUT`: single-planar video output.
    pub const VIDEO_OUTPUT: u32 = 0x0000_0002;
    /// `V4L2_CAP_VIDEO_CAPTURE_MPLANE`: multi-planar video capture.
    pub const VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
    /// `V4L2_CAP_VIDEO_OUTPUT_MPLANE`: multi-planar video output.
    pub const VIDEO_OUTPUT_MPLANE: u32 = 0x0000_2000;
    /// `V4L2_CAP_VIDEO_M2M_MPLANE`: a multi-planar memory-to-memory device (codec, converter).
    pub const VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
    /// `V4L2_CAP_VIDEO_M2M`: a single-planar memory-to-memory device.
    pub const VIDEO_M2M: u32 = 0x0000_8000;
    /// `V4L2_CAP_META_CAPTURE`: metadata capture (UVC payload headers, sensor data, stats).
    pub const META_CAPTURE: u32 = 0x0080_0000;
    /// `V4L2_CAP_STREAMING`: streaming I/O (what peercam captures with).
    pub const STREAMING: u32 = 0x0400_0000;
    /// `V4L2_CAP_META_OUTPUT`: metadata output (ISP configuration).
    pub const META_OUTPUT: u32 = 0x0800_0000;
    /// `V4L2_CAP_DEVICE_CAPS`: the driver fills `device_caps` (the node's own capabilities).
    pub const DEVICE_CAPS: u32 = 0x8000_0000;

    /// Any video capture, single- or multi-planar.
    pub const ANY_VIDEO_CAPTURE: u32 = VIDEO_CAPTURE | VIDEO_CAPTURE_MPLANE;
    /// Any video output, single- or multi-planar.
    pub const ANY_VIDEO_OUTPUT: u32 = VIDEO_OUTPUT | VIDEO_OUTPUT_MPLANE;
    /// Any memory-to-memory flag.
    pub const ANY_M2M: u32 = VIDEO_M2M | VIDEO_M2M_MPLANE;

    /// The node's own capabilities from `VIDIOC_QUERYCAP`: `device_caps` when the driver
    /// sets `V4L2_CAP_DEVICE_CAPS` (every driver since Linux 3.x), else the device's
    /// `capabilities` (which are the union over all of a device's nodes).
    pub fn node_caps(capabilities: u32, device_caps: u32) -> u32 {
        if capabilities & DEVICE_CAPS != 0 {
            device_caps
        } else {
            capabilities
        }
    }
}

/// What peercam knows of one video node before opening it for capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Device path, e.g. `/dev/video0`.
    pub path: String,
    /// Driver name (`v4l2-ctl`'s "Driver name"), e.g. `uvcvideo`, `bcm2835-codec`.
    pub driver: String,
    /// Card name ("Card type"), e.g. `HD Webcam C270`, `bcm2835-codec-encode`.
    pub card: String,
    /// Bus info, e.g. `usb-0000:01:00.0-1.1`, `platform:bcm2835-codec`.
    pub bus_info: String,
    /// The node's own capability flags ([`cap`]; see [`cap::node_caps`]).
    pub device_caps: u32,
    /// The pixel formats the node captures (its `VIDIOC_ENUM_FMT` on the capture buffer
    /// type), e.g. `YUYV`, `pRAA`; empty for a node that captures no video.
    pub formats: Vec<String>,
}

impl NodeInfo {
    fn has(&self, flags: u32) -> bool {
        self.device_caps & flags != 0
    }
}

/// What a node is, for `auto` and `--list-devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A video capture node of a camera that peercam may read.
    Camera,
    /// Anything else, and why.
    NotCamera(NotCamera),
}

/// Why a node is not a camera; [`fmt::Display`] gives the reason for `--list-devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCamera {
    /// A hardware video decoder (memory-to-memory or stateless), e.g. `bcm2835-codec-decode`,
    /// `rpivid`, `rpi-hevc-dec`.
    Decoder,
    /// A hardware video encoder, e.g. `bcm2835-codec-encode`.
    Encoder,
    /// A hardware JPEG encoder, e.g. `bcm2835-codec-encode_image`.
    JpegEncoder,
    /// A hardware image converter (scaler, format converter, effects), e.g.
    /// `bcm2835-codec-isp`, `bcm2835-codec-image_fx`.
    Converter,
    /// Another memory-to-memory device.
    MemoryToMemory,
    /// A node that both captures and outputs video without saying it is memory-to-memory
    /// (a loopback or processing device).
    CaptureAndOutput,
    /// A node of an ISP that libcamera drives (`bcm2835-isp`, `pispbe`): its capture nodes
    /// give pictures only of frames fed to its input node.
    Isp,
    /// The image node of a Camera Module's CSI-2 receiver (`unicam`, `rp1-cfe`): raw sensor
    /// data that needs libcamera's ISP pipeline.
    CameraModuleRaw,
    /// Another node of a Camera Module's CSI-2 receiver (embedded data, statistics, ISP
    /// front-end configuration).
    CameraModuleOther,
    /// A node that captures only raw Bayer (or packed raw mono) frames: a sensor behind an
    /// ISP, not something a browser can be sent.
    RawBayer,
    /// A metadata node, e.g. a UVC webcam's second node (payload headers).
    Metadata,
    /// A video output node (display, or an encoder's or ISP's input).
    Output,
    /// Captures no video at all (radio, VBI, touch, metadata output).
    NoVideoCapture,
}

impl fmt::Display for NotCamera {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotCamera::Decoder => "a hardware video decoder (memory-to-memory), not a camera",
            NotCamera::Encoder => "a hardware encoder (memory-to-memory), not a camera",
            NotCamera::JpegEncoder => "a hardware JPEG encoder (memory-to-memory), not a camera",
            NotCamera::Converter => "a hardware image converter (memory-to-memory), not a camera",
            NotCamera::MemoryToMemory => {
                "a memory-to-memory device (codec or converter), not a camera"
            }
            NotCamera::CaptureAndOutput => {
                "both captures and outputs video (a loopback or processing device), not a camera"
            }
            NotCamera::Isp => {
                "an ISP node (image signal processor, driven by libcamera), not a camera"
            }
            NotCamera::CameraModuleRaw => {
                "the Camera Module's raw sensor node: use [video] source = \"rpicam\""
            }
            NotCamera::CameraModuleOther => {
                "a metadata node of the Camera Module's receiver: use [video] source = \"rpicam\""
            }
            NotCamera::RawBayer => {
                "captures raw Bayer frames only (a sensor that needs an ISP), not a camera"
            }
            NotCamera::Metadata => "a metadata node (per-frame data of a camera), not a camera",
            NotCamera::Output => "a video output, not a camera",
            NotCamera::NoVideoCapture => "captures no video",
        })
    }
}

/// Drivers of ISPs whose nodes are driven by libcamera (matched against driver and card).
const ISP_DRIVERS: &[&str] = &["bcm2835-isp", "pispbe"];
/// Drivers of the Camera Module's CSI-2 receivers (Pi 0–4: `unicam`; Pi 5: `rp1-cfe`).
const CAMERA_MODULE_RECEIVERS: &[&str] = &["unicam", "rp1-cfe"];
/// Drivers of hardware codecs, in case a node does not say it is memory-to-memory.
const CODEC_DRIVERS: &[&str] = &["bcm2835-codec", "rpivid", "rpi-hevc-dec"];

/// Decides what `info` is. In order:
/// 1. memory-to-memory devices (`V4L2_CAP_VIDEO_M2M*`, or capture and output on one node):
///    decoder, encoder, JPEG encoder or converter by the card name;
/// 2. the ISPs' nodes (`bcm2835-isp`, `pispbe`, by driver or card), capture nodes included;
/// 3. codec drivers (`bcm2835-codec`, `rpivid`, `rpi-hevc-dec`) however they are flagged;
/// 4. the Camera Module's receivers (`unicam`, `rp1-cfe`): its image node and the others;
/// 5. nodes without video capture: metadata, output, or nothing;
/// 6. capture nodes whose formats are all raw Bayer;
/// 7. everything else is a camera.
pub fn classify(info: &NodeInfo) -> NodeKind {
    let capture = info.has(cap::ANY_VIDEO_CAPTURE);
    let output = info.has(cap::ANY_VIDEO_OUTPUT);
    if info.has(cap::ANY_M2M) || (capture && output) {
        let fallback = if info.has(cap::ANY_M2M) {
            NotCamera::MemoryToMemory
        } else {
            NotCamera::CaptureAndOutput
        };
        return NodeKind::NotCamera(codec_role(info).unwrap_or(fallback));
    }
    if is_one_of(info, ISP_DRIVERS) {
        return NodeKind::NotCamera(NotCamera::Isp);
    }
    if is_one_of(info, CODEC_DRIVERS) {
        return NodeKind::NotCamera(codec_role(info).unwrap_or(NotCamera::MemoryToMemory));
    }
    if is_one_of(info, CAMERA_MODULE_RECEIVERS) {
        return NodeKind::NotCamera(if capture {
            NotCamera::CameraModuleRaw
        } else {
            NotCamera::CameraModuleOther
        });
    }
    if !capture {
        return NodeKind::NotCamera(if info.has(cap::META_CAPTURE) {
            NotCamera::Metadata
        } else if output {
            NotCamera::Output
        } else {
            NotCamera::NoVideoCapture
        });
    }
    if !info.formats.is_empty() && info.formats.iter().all(|f| is_raw_bayer(f)) {
        return NodeKind::NotCamera(NotCamera::RawBayer);
    }
    NodeKind::Camera
}

/// Whether the driver or the card name is (or starts with) one of `names`, ignoring case.
fn is_one_of(info: &NodeInfo, names: &[&str]) -> bool {
    let driver = info.driver.to_ascii_lowercase();
    let card = info.card.to_ascii_lowercase();
    names
        .iter()
        .any(|n| driver.starts_with(n) || card.starts_with(n))
}

/// What a codec node does, from the words of its card and driver names:
/// `bcm2835-codec-decode`, `-encode`, `-encode_image`, `-isp`, `-image_fx`; `rpivid`,
/// `rpi-hevc-dec`.
fn codec_role(info: &NodeInfo) -> Option<NotCamera> {
    let names = format!("{} {}", info.card, info.driver).to_ascii_lowercase();
    let words: Vec<&str> = names.split(['-', ' ', ':', '.']).collect();
    let any = |options: &[&str]| words.iter().any(|w| options.contains(w));
    if any(&["encode_image", "jpeg", "jpegenc"]) {
        Some(NotCamera::JpegEncoder)
    } else if any(&["encode", "enc", "encoder"]) {
        Some(NotCamera::Encoder)
    } else if any(&["decode", "dec", "decoder", "rpivid"]) {
        Some(NotCamera::Decoder)
    } else if any(&["isp", "image_fx", "convert", "scaler"]) {
        Some(NotCamera::Converter)
    } else {
        None
    }
}

/// Raw formats that only a CSI-2 receiver delivers: Bayer at 8–16 bits (plain, MIPI-packed,
/// A-law, DPCM, IPU3-packed), the PiSP compressed Bayer and mono formats, and MIPI-packed
/// mono (linux/videodev2.h).
const RAW_BAYER: &[&str] = &[
    // 8-bit
    "BA81", "GBRG", "GRBG", "RGGB", //
    // 10-bit: plain, MIPI-packed, A-law, DPCM
    "BG10", "GB10", "BA10", "RG10", "pBAA", "pGAA", "pgAA", "pRAA", "aBA8", "aGA8", "agA8", "aRA8",
    "bBA8", "bGA8", "BD10", "bRA8", //
    // 12-bit
    "BG12", "GB12", "BA12", "RG12", "pBCC", "pGCC", "pgCC", "pRCC", //
    // 14-bit
    "BG14", "GB14", "GR14", "RG14", "pBEE", "pGEE", "pgEE", "pREE", //
    // 16-bit
    "BYR2", "GB16", "GR16", "RG16", //
    // IPU3 packed
    "ip3b", "ip3g", "ip3G", "ip3r", //
    // Raspberry Pi PiSP compressed
    "PC1B", "PC1G", "PC1g", "PC1R", "PC2B", "PC2G", "PC2g", "PC2R", "PC1M", "PC2M", //
    // MIPI-packed mono (raw sensor data)
    "Y10P", "Y12P", "Y14P",
];

/// Whether `fourcc` (as `VIDIOC_ENUM_FMT` spells it, case-sensitive) is a raw Bayer or
/// packed raw format ([`RAW_BAYER`]).
pub fn is_raw_bayer(fourcc: &str) -> bool {
    RAW_BAYER.contains(&fourcc.trim())
}

/// Whether peercam captures `fourcc`: one it converts, or H.264 when it may be passed
/// through.
pub fn is_usable_format(fourcc: &FourCc, h264_ok: bool) -> bool {
    fourcc.is_convertible() || (h264_ok && *fourcc == FourCc::H264)
}

/// The node `source = "auto"` uses among `nodes` (in the order given): the first camera
/// ([`classify`]) that offers a format peercam captures ([`is_usable_format`]). `None`
/// means no V4L2 camera here: the caller falls back to another source.
pub fn pick_auto(nodes: &[NodeInfo], h264_ok: bool) -> Option<&NodeInfo> {
    nodes.iter().find(|n| {
        classify(n) == NodeKind::Camera
            && n.formats
                .iter()
                .any(|f| is_usable_format(&FourCc::parse(f), h264_ok))
    })
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
