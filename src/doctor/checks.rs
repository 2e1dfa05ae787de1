//! The doctor's judgements: pure functions from [`Facts`] to one [`Check`] each (config,
//! camera, microphone, permissions, ports). Nothing here touches the machine; the tests feed
//! them the node lists of real boards (`tests/fixtures/`).

use std::path::{Path, PathBuf};

use crate::capture::classify::NotCamera;
use crate::capture::rpicam::{self, Probe};
use crate::capture::v4l2::{self, Node};
use crate::config::{AudioSource, Settings, VideoFormat, VideoSettings, VideoSource};
use crate::hub;
use crate::media::VideoCodec;

use super::facts::{origin_text, Facts};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Fine.
    Pass,
    /// The daemon runs, but not as well as it could (comes with a fix).
    Warn,
    /// The daemon would not start (comes with a fix).
    Fail,
}

impl Status {
    /// `PASS`, `WARN`, `FAIL` (the text output) ; lower case in JSON.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the doctor's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `config`, `camera`, `microphone`, `permissions`, `ports`, `encode`.
    pub name: &'static str,
    /// Pass, warn or fail.
    pub status: Status,
    /// What was found, one line.
    pub summary: String,
    /// What to do about it (every warning and failure has one).
    pub fix: Option<String>,
}

impl Check {
    /// A passing check.
    pub fn pass(name: &'static str, summary: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            summary: summary.into(),
            fix: None,
        }
    }

    /// A warning with its fix.
    pub fn warn(name: &'static str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure with its fix.
    pub fn fail(name: &'static str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            summary: summary.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The groups the service runs with (`SupplementaryGroups=` in deploy/peercam.service; the
/// user itself is a `DynamicUser`, so it owns no file).
pub const SERVICE_GROUPS: [&str; 3] = ["video", "audio", "peercam-config"];

/// Every check but the encode benchmark, in output order.
pub fn judge(facts: &Facts) -> Vec<Check> {
    let settings = facts.settings();
    let video = resolve_video(
        &settings.video,
        settings.rpicam.camera,
        &facts.rpicam,
        facts.board_model.as_deref(),
        &facts.nodes,
    );
    vec![
        config(facts),
        camera(&settings.video, &video, facts),
        microphone(&settings, facts),
        super::permissions::permissions(&settings, &video, facts),
        ports(&settings, facts),
    ]
}

/// `[config]`: loads and validates; a missing default file is fine (built-in defaults).
pub fn config(facts: &Facts) -> Check {
    match &facts.config {
        Ok(loaded) => Check::pass("config", origin_text(&loaded.origin)),
        Err(e) => Check::fail(
            "config",
            format!("{e} (the checks below use the built-in defaults)"),
            "correct that key in the file; `peercam check-config PATH` checks it again",
        ),
    }
}

/// What video the daemon would stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoChoice {
    /// A Raspberry Pi Camera Module through `rpicam-vid`.
    CameraModule {
        /// `rpicam-vid`, or `libcamera-vid` on older systems.
        program: &'static str,
        /// `--camera` index.
        index: u32,
        /// e.g. `imx708`.
        sensor: String,
        /// H.264 from rpicam-vid (passed through), or raw frames encoded by peercam, as
        /// [`hub::rpicam_output`] decides.
        output: rpicam::Output,
    },
    /// A V4L2 camera.
    V4l2 {
        /// Its node.
        path: PathBuf,
        /// Its name, e.g. `HD Webcam C270`.
        card: String,
        /// It offers H.264 and H.264 is first in `[video] codecs`: passed through.
        h264_passthrough: bool,
    },
    /// A configured device path that is not (yet) a usable camera: the daemon shows a
    /// placeholder and retries.
    Missing {
        /// The configured path.
        path: PathBuf,
        /// Why it is not used now.
        reason: String,
    },
    /// `source = "rpicam"`, but rpicam-vid is missing or does not list the camera: the
    /// daemon streams a placeholder and starts rpicam-vid again and again.
    CameraModuleMissing {
        /// Why.
        reason: String,
    },
    /// The built-in test pattern.
    TestPattern,
}

/// Whether camera H.264 would be passed through (as `hub::video_source` decides it).
fn passthrough_ok(video: &VideoSettings) -> bool {
    video.codecs.first() == Some(&VideoCodec::H264)
        && matches!(video.format, VideoFormat::Auto | VideoFormat::H264)
}

/// What `video.source` resolves to. `auto`: the Camera Module when `rpicam-vid` lists one,
/// else the first V4L2 camera ([`v4l2::auto_choice`]), else the test pattern.
pub fn resolve_video(
    video: &VideoSettings,
    rpicam_camera: u32,
    probe: &Probe,
    board_model: Option<&str>,
    nodes: &[Node],
) -> VideoChoice {
    let passthrough = passthrough_ok(video);
    match &video.source {
        VideoSource::Test => VideoChoice::TestPattern,
        VideoSource::Rpicam => match probe {
            Probe::Listed { program, cameras } => {
                match cameras.iter().find(|c| c.index == rpicam_camera) {
                    Some(camera) => VideoChoice::CameraModule {
                        program,
                        index: camera.index,
                        sensor: camera.sensor.clone(),
                        output: hub::rpicam_output(video, board_model),
                    },
                    None => VideoChoice::CameraModuleMissing {
                        reason: format!(
                            "{program} --list-cameras does not list camera {rpicam_camera}{}",
                            if cameras.is_empty() {
                                " (it lists none)".to_owned()
                            } else {
                                format!(
                                    " (it lists {})",
                                    cameras
                                        .iter()
                                        .map(|c| format!("{} {}", c.index, c.sensor))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            }
                        ),
                    },
                }
            }
            Probe::NotInstalled => VideoChoice::CameraModuleMissing {
                reason: "rpicam-vid is not installed (nor libcamera-vid)".to_owned(),
            },
            Probe::Failed { reason, .. } => VideoChoice::CameraModuleMissing {
                reason: reason.clone(),
            },
        },
        VideoSource::Auto => {
            if let Probe::Listed { program, cameras } = probe {
                if let Some(camera) = rpicam::pick(cameras, rpicam_camera) {
                    return VideoChoice::CameraModule {
                        program,
                        index: camera.index,
                        sensor: camera.sensor.clone(),
                        output: hub::rpicam_output(video, board_model),
                    };
                }
            }
            match v4l2::auto_choice(nodes, passthrough) {
                Some((path, caps)) => VideoChoice::V4l2 {
                    path,
                    h264_passthrough: passthrough
                        && caps
                            .modes
                            .iter()
                            .any(|m| m.fourcc == crate::capture::formats::FourCc::H264),
                    card: caps.card,
                },
                None => VideoChoice::TestPattern,
            }
        }
        VideoSource::Device(path) => device_choice(path, nodes, passthrough),
    }
}

fn device_choice(path: &Path, nodes: &[Node], passthrough: bool) -> VideoChoice {
    let missing = |reason: String| VideoChoice::Missing {
        path: path.to_path_buf(),
        reason,
    };
    match nodes.iter().find(|n| n.path() == path) {
        None => missing(format!("{} does not exist", path.display())),
        Some(Node::NotCamera { reason, .. }) => {
            missing(format!("{} is not a camera: {reason}", path.display()))
        }
        Some(Node::Unreadable { error, .. }) => missing(error.clone()),
        Some(Node::Camera { caps: Err(e), .. }) => missing(e.clone()),
        Some(Node::Camera { caps: Ok(caps), .. }) => VideoChoice::V4l2 {
            path: path.to_path_buf(),
            card: caps.card.clone(),
            h264_passthrough: passthrough
                && caps
                    .modes
                    .iter()
                    .any(|m| m.fourcc == crate::capture::formats::FourCc::H264),
        },
    }
}

/// The camera line: what `video.source` resolves to and how many nodes are not cameras.
pub fn camera(video: &VideoSettings, choice: &VideoChoice, facts: &Facts) -> Check {
    let source = format!("video.source = \"{}\"", video.source);
    let others = other_nodes(&facts.nodes);
    let with_others = |text: String| match &others {
        Some(o) => format!("{text}; {o}"),
        None => text,
    };
    match choice {
        VideoChoice::CameraModule {
            program,
            index,
            sensor,
            output,
        } => {
            let hardware = facts
                .board_model
                .as_deref()
                .is_some_and(rpicam::has_hardware_h264);
            let how = match (output, hardware) {
                (rpicam::Output::H264, true) => {
                    "H.264 from the Pi's hardware encoder, passed through".to_owned()
                }
                (rpicam::Output::H264, false) => "H.264 from rpicam-vid's software encoder \
                                                  (format = \"h264\"; this board has no H.264 \
                                                  encoder), passed through"
                    .to_owned(),
                (rpicam::Output::Yuv420, _) => {
                    let why = match facts.board_model.as_deref() {
                        Some(m) if !rpicam::has_hardware_h264(m) => {
                            " (this board has no H.264 encoder)"
                        }
                        _ => "",
                    };
                    format!("raw frames, encoded by peercam{why}")
                }
            };
            Check::pass(
                "camera",
                with_others(format!(
                    "{source} uses the Camera Module ({sensor}, camera {index}) through {program}: {how}"
                )),
            )
        }
        VideoChoice::V4l2 {
            path,
            card,
            h264_passthrough,
        } => {
            let how = if *h264_passthrough {
                ", its H.264 passed through"
            } else {
                ""
            };
            Check::pass(
                "camera",
                with_others(format!(
                    "{source} uses {} ({card}) through V4L2{how}",
                    path.display()
                )),
            )
        }
        VideoChoice::Missing { path, reason } => Check::warn(
            "camera",
            format!("{source}: {reason}; the daemon streams a placeholder and retries"),
            format!(
                "plug in the camera at {}, or set [video] source to a camera `peercam \
                 --list-devices` lists (or \"auto\")",
                path.display()
            ),
        ),
        VideoChoice::CameraModuleMissing { reason } => Check::warn(
            "camera",
            format!("{source}: {reason}; the daemon streams a placeholder and keeps trying"),
            "connect the Camera Module and install rpicam-apps (`rpicam-hello --list-cameras` \
             lists it), or set [video] source = \"auto\"",
        ),
        VideoChoice::TestPattern if video.source == VideoSource::Test => {
            Check::pass("camera", with_others(format!("{source}: the test pattern")))
        }
        VideoChoice::TestPattern => {
            let (why, fix) = no_camera_hint(facts);
            Check::warn(
                "camera",
                with_others(format!(
                    "no camera found{why}: {source} streams the test pattern"
                )),
                fix,
            )
        }
    }
}

/// Why `auto` found no camera beyond "none is plugged in", and the fix.
fn no_camera_hint(facts: &Facts) -> (String, String) {
    let unreadable = facts
        .nodes
        .iter()
        .filter(|n| matches!(n, Node::Unreadable { .. }))
        .count();
    let camera_module = facts.nodes.iter().any(|n| {
        matches!(
            n,
            Node::NotCamera {
                reason: NotCamera::CameraModuleRaw,
                ..
            }
        )
    });
    match &facts.rpicam {
        Probe::Failed { program, reason } => (
            format!(" ({program} --list-cameras failed: {reason})"),
            format!(
                "check the Camera Module's cable and `{program} --list-cameras`; `peercam \
                 --list-devices` lists what is there"
            ),
        ),
        Probe::NotInstalled if camera_module => (
            " (a Camera Module is attached, but rpicam-vid is not installed)".to_owned(),
            "install rpicam-apps (`apt install rpicam-apps`) so peercam can use the Camera Module"
                .to_owned(),
        ),
        _ if unreadable > 0 => (
            format!(" ({unreadable} /dev/video node(s) could not be opened)"),
            "run the doctor as root or as a member of group video; `peercam --list-devices` \
             says why each node failed"
                .to_owned(),
        ),
        _ => (
            String::new(),
            "plug in a camera; `peercam --list-devices` lists what is there".to_owned(),
        ),
    }
}

/// "3 other /dev/video nodes are not cameras (codec, ISP)", or `None` when there are none.
fn other_nodes(nodes: &[Node]) -> Option<String> {
    let mut kinds: Vec<&str> = Vec::new();
    let mut count = 0;
    for node in nodes {
        if let Node::NotCamera { reason, .. } = node {
            count += 1;
            let kind = match reason {
                NotCamera::Decoder
                | NotCamera::Encoder
                | NotCamera::JpegEncoder
                | NotCamera::Converter
                | NotCamera::MemoryToMemory => "codec",
                NotCamera::Isp => "ISP",
                NotCamera::CameraModuleRaw | NotCamera::CameraModuleOther => {
                    "Camera Module receiver"
                }
                NotCamera::Metadata => "metadata",
                NotCamera::CaptureAndOutput
                | NotCamera::RawBayer
                | NotCamera::Output
                | NotCamera::NoVideoCapture => "other",
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    (count > 0).then(|| {
        let what = if count == 1 {
            "node is not a camera"
        } else {
            "nodes are not cameras"
        };
        format!("{count} other /dev/video {what} ({})", kinds.join(", "))
    })
}

/// The microphone line: ALSA capture devices and what `audio.source` resolves to.
pub fn microphone(settings: &Settings, facts: &Facts) -> Check {
    let a = &settings.audio;
    let listed = match facts.microphones.len() {
        0 => "no ALSA capture devices".to_owned(),
        n => {
            let names: Vec<&str> = facts
                .microphones
                .iter()
                .take(3)
                .map(|m| m.name.as_str())
                .collect();
            let more = if n > 3 { ", ..." } else { "" };
            format!("{n} ALSA capture device(s): {}{more}", names.join(", "))
        }
    };
    match (&a.source, &facts.microphone_open) {
        (AudioSource::None, _) => Check::pass("microphone", "audio.source = \"none\": no audio"),
        (AudioSource::Test, _) => Check::pass(
            "microphone",
            format!("audio.source = \"test\": the test tone; {listed}"),
        ),
        (AudioSource::Auto, Some(Ok(()))) => Check::pass(
            "microphone",
            format!("audio.source = \"auto\" uses ALSA's default capture device; {listed}"),
        ),
        (AudioSource::Auto, _) => Check::warn(
            "microphone",
            format!("no microphone: audio.source = \"auto\" streams the test tone; {listed}"),
            "plug in a microphone (`peercam --list-devices` lists ALSA capture devices), or set \
             [audio] source = \"none\"",
        ),
        (AudioSource::Alsa(name), Some(Ok(()))) => Check::pass(
            "microphone",
            format!("audio.source = \"{name}\" opens; {listed}"),
        ),
        (AudioSource::Alsa(name), Some(Err(e))) => Check::warn(
            "microphone",
            format!("audio.source = \"{name}\" does not open ({e}); the daemon retries"),
            "plug it in, or set [audio] source to a device `peercam --list-devices` lists",
        ),
        (AudioSource::Alsa(name), None) => Check::pass(
            "microphone",
            format!("audio.source = \"{name}\" (not opened)"),
        ),
    }
}

/// The ports line: `[server] listen` (TCP) and the `[webrtc]` UDP range can be bound now.
/// Never a failure: a port in use may be this very daemon, running.
pub fn ports(settings: &Settings, facts: &Facts) -> Check {
    let p = &facts.ports;
    let mut parts: Vec<String> = Vec::new();
    let mut fixes: Vec<String> = Vec::new();
    let running = match facts.peercam_pids.first() {
        Some(pid) => format!("a running peercam, pid {pid}"),
        None => "another program".to_owned(),
    };
    match &p.tcp {
        Ok(()) => parts.push(format!("TCP {} is free", p.listen)),
        Err(e) if e.contains("in use") => {
            parts.push(format!("TCP {} is in use (by {running})", p.listen));
            if facts.peercam_pids.is_empty() {
                fixes.push(format!(
                    "stop the program on port {} (`ss -ltnp` names it) or set [server] listen \
                     to a free port",
                    p.listen.port()
                ));
            } else {
                fixes.push("expected while peercam runs; stop it to start another".to_owned());
            }
        }
        Err(e) => {
            parts.push(format!("TCP {} cannot be bound: {e}", p.listen));
            fixes.push("set [server] listen to an address of this machine".to_owned());
        }
    }
    let start = p.unprivileged_port_start.unwrap_or(1024);
    if p.listen.port() != 0 && p.listen.port() < start {
        parts.push(format!(
            "port {} is below {start}: the service (no capabilities) cannot bind it",
            p.listen.port()
        ));
        fixes.push("use a port from 1024 up (put a reverse proxy on 80/443)".to_owned());
    }
    if let Some((port, bound)) = &p.udp_port {
        match bound {
            Ok(()) => parts.push(format!("UDP {port} (every call) is free")),
            Err(e) if e.contains("in use") => {
                parts.push(format!("UDP {port} (every call) is in use (by {running})"));
                if facts.peercam_pids.is_empty() {
                    fixes.push(format!(
                        "stop the program on UDP port {port} (`ss -lunp` names it) or set \
                         [webrtc] udp_port to a free port"
                    ));
                }
            }
            Err(e) => {
                parts.push(format!("UDP {port} cannot be bound: {e}"));
                fixes.push("set [webrtc] udp_port to a free port from 1024 up".to_owned());
            }
        }
        if let Some((tcp, bound)) = &p.ice_tcp_port {
            match bound {
                Ok(()) => parts.push(format!("TCP {tcp} (ICE over TCP) is free")),
                Err(e) => {
                    parts.push(format!("TCP {tcp} (ICE over TCP) cannot be bound: {e}"));
                    if facts.peercam_pids.is_empty() {
                        fixes.push(format!(
                            "free TCP port {tcp} or set [webrtc] tcp_port to a free port (0: \
                             no ICE over TCP)"
                        ));
                    }
                }
            }
        }
    } else if let Some((min, max)) = p.udp_range {
        let total = usize::from(max - min) + 1;
        parts.push(format!("UDP {min}-{max}: {} of {total} free", p.udp_free));
        if p.udp_free < settings.limits.max_viewers.min(total) && facts.peercam_pids.is_empty() {
            fixes.push(format!(
                "fewer free UDP ports than [limits] max_viewers ({}): widen [webrtc] \
                 udp_port_min..udp_port_max",
                settings.limits.max_viewers
            ));
        }
    } else {
        parts.push("UDP: any port".to_owned());
    }
    let summary = parts.join("; ");
    if fixes.is_empty() {
        Check::pass("ports", summary)
    } else {
        Check::warn("ports", summary, fixes.join("; "))
    }
}
