//! Validated, resolved settings: what the rest of peercam codes against. Every value here has
//! passed its range check; absent keys hold the built-in defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use super::error::{ConfigError, Source};
use super::file::{
    RawAudio, RawConfig, RawIceServer, RawLimits, RawLog, RawServer, RawVideo, RawWebrtc, Value,
};
use crate::capture::formats::FourCc;
use crate::media::VideoCodec;

/// All settings of the daemon.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    /// `[server]`: the HTTP port.
    pub server: ServerSettings,
    /// `[video]`: source, size, codecs.
    pub video: VideoSettings,
    /// `[audio]`: source and Opus settings.
    pub audio: AudioSettings,
    /// `[webrtc]`: ICE servers, UDP ports, addresses.
    pub webrtc: WebrtcSettings,
    /// `[limits]`: viewers and message size.
    pub limits: LimitSettings,
    /// `[log]`: log level.
    pub log: LogSettings,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Address and port of the HTTP server (page, WebSocket). Default `0.0.0.0:7000`; port 0
    /// lets the OS choose (the log says which).
    pub listen: SocketAddr,
    /// The viewers' password; `None` (written `""`, the default) leaves the camera open to
    /// anyone who can reach the port, which the log and the page say loudly.
    pub password: Option<Password>,
    /// HTTPS or plain HTTP.
    pub tls: TlsMode,
    /// Where peercam keeps state (the self-signed certificate). `None`: `$STATE_DIRECTORY`
    /// (systemd's `StateDirectory=`), else `/var/lib/peercam`.
    pub state_dir: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7000),
            password: None,
            tls: TlsMode::Off,
            state_dir: None,
        }
    }
}

/// The viewers' password. Its `Debug` form is redacted so that printing settings never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl Password {
    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Shortest password accepted: a short one falls to guessing even with the login rate limit.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// `[server] tls`: how the HTTP port speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// `"off"`: plain HTTP.
    Off,
    /// `"self-signed"`: HTTPS with a certificate peercam generates once and keeps in the
    /// state directory (browsers warn about it once).
    SelfSigned,
    /// `{ cert = "...", key = "..." }`: HTTPS with these PEM files (a certificate chain and
    /// its private key).
    Files {
        /// The PEM certificate chain, leaf first.
        cert: PathBuf,
        /// The PEM private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsMode::Off => f.write_str("off"),
            TlsMode::SelfSigned => f.write_str("self-signed"),
            TlsMode::Files { cert, key } => {
                write!(f, "cert {}, key {}", cert.display(), key.display())
            }
        }
    }
}

/// Where video comes from (`video.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSource {
    /// `"auto"`: the first camera found; the test pattern when there is none.
    Auto,
    /// `"test"`: the built-in test pattern.
    Test,
    /// A V4L2 device path such as `/dev/video0`.
    Device(PathBuf),
}

impl fmt::Display for VideoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoSource::Auto => f.write_str("auto"),
            VideoSource::Test => f.write_str("test"),
            VideoSource::Device(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `[video]`
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSettings {
    /// Where frames come from.
    pub source: VideoSource,
    /// Camera pixel format to capture; `Auto` picks the cheapest the camera offers.
    pub format: VideoFormat,
    /// Frame width in pixels: even, 160..=3840.
    pub width: u32,
    /// Frame height in pixels: even, 120..=2160.
    pub height: u32,
    /// Frames per second: 1..=60.
    pub fps: u32,
    /// Codecs to offer, most preferred first; non-empty, no duplicates.
    pub codecs: Vec<VideoCodec>,
    /// Start (and no-viewer) video bitrate in kbit/s: 50..=20000, within
    /// `min_bitrate_kbps..=max_bitrate_kbps`.
    pub bitrate_kbps: u32,
    /// Lowest bitrate adaptive bitrate may set, in kbit/s (one viewer on a weak link).
    pub min_bitrate_kbps: u32,
    /// Highest bitrate adaptive bitrate may set, in kbit/s.
    pub max_bitrate_kbps: u32,
    /// With two or more viewers on one encoder, the target stays at or above this (kbit/s),
    /// so one weak viewer cannot take everyone's quality down to `min_bitrate_kbps`.
    pub multi_viewer_floor_kbps: u32,
    /// Seconds between forced keyframes: 1..=60.
    pub keyframe_interval_s: u32,
}

/// `[video] format`: the camera pixel format to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    /// The cheapest format the camera offers at the chosen size (H.264 passthrough when
    /// `h264` is the first codec, then YU12, NV12, YUYV, MJPEG).
    Auto,
    /// Packed 4:2:2.
    Yuyv,
    /// Semi-planar 4:2:0.
    Nv12,
    /// Planar 4:2:0.
    Yu12,
    /// Motion JPEG (decoded).
    Mjpeg,
    /// The camera's H.264, passed through. With `source = "test"`: the test pattern as a
    /// simulated H.264 camera (exercises the passthrough path).
    H264,
}

impl VideoFormat {
    /// The V4L2 format this forces, `None` for `Auto`.
    pub fn fourcc(self) -> Option<FourCc> {
        Some(match self {
            VideoFormat::Auto => return None,
            VideoFormat::Yuyv => FourCc::Yuyv,
            VideoFormat::Nv12 => FourCc::Nv12,
            VideoFormat::Yu12 => FourCc::Yu12,
            VideoFormat::Mjpeg => FourCc::Mjpg,
            VideoFormat::H264 => FourCc::H264,
        })
    }
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            source: VideoSource::Auto,
            format: VideoFormat::Auto,
            width: 640,
            height: 480,
            fps: 30,
            codecs: vec![VideoCodec::H264, VideoCodec::Av1],
            bitrate_kbps: 1000,
            min_bitrate_kbps: 150,
            max_bitrate_kbps: 2500,
            multi_viewer_floor_kbps: 400,
            keyframe_interval_s: 2,
        }
    }
}

/// Where audio comes from (`audio.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// `"auto"`: the default microphone; the test tone when there is none.
    Auto,
    /// `"test"`: the built-in test tone.
    Test,
    /// An ALSA device name such as `hw:1,0` or `default`.
    Alsa(String),
    /// `"none"`: no audio track.
    None,
}

impl fmt::Display for AudioSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioSource::Auto => f.write_str("auto"),
            AudioSource::Test => f.write_str("test"),
            AudioSource::Alsa(name) => write!(f, "ALSA device {name}"),
            AudioSource::None => f.write_str("none"),
        }
    }
}

/// `[audio]`
#[derive(Debug, Clone, PartialEq)]
pub struct AudioSettings {
    /// Where samples come from.
    pub source: AudioSource,
    /// 1 (mono) or 2 (stereo).
    pub channels: u8,
    /// Opus bitrate in kbit/s: 6..=510.
    pub bitrate_kbps: u32,
}

impl Default for AudioSettings {
    fn default() -> Self {
        AudioSettings {
            source: AudioSource::Auto,
            channels: 1,
            bitrate_kbps: 32,
        }
    }
}

/// One STUN or TURN server, as in the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs; at least one.
    pub urls: Vec<String>,
    /// TURN user name (required with `turn:`/`turns:` URLs).
    pub username: Option<String>,
    /// TURN password (required with `turn:`/`turns:` URLs).
    pub credential: Option<String>,
}

/// `[webrtc]`
#[derive(Debug, Clone, PartialEq)]
pub struct WebrtcSettings {
    /// STUN/TURN servers; empty means host candidates only (fine on a LAN).
    pub ice_servers: Vec<IceServer>,
    /// Lowest local UDP port for ICE; 0 together with `udp_port_max = 0` means any port.
    pub udp_port_min: u16,
    /// Highest local UDP port for ICE (inclusive).
    pub udp_port_max: u16,
    /// Addresses to gather host candidates on; empty means every non-loopback address of the
    /// machine. Tests set `["127.0.0.1"]`.
    pub ip_addresses: Vec<IpAddr>,
    /// Addresses advertised in place of local ones in host candidates (1:1 NAT, port
    /// forwards, qemu user networking); empty means advertise the local addresses.
    pub nat_1to1_ips: Vec<NatMapping>,
}

/// One `[webrtc] nat_1to1_ips` entry: `"EXTERNAL"` (every local address of the same IP
/// family) or `"EXTERNAL/LOCAL"` (only that local address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatMapping {
    /// The address browsers should send to.
    pub external: IpAddr,
    /// The local address it stands for; `None` = any local address of the same family.
    pub local: Option<IpAddr>,
}

impl NatMapping {
    /// Parses `"EXTERNAL"` or `"EXTERNAL/LOCAL"`; both must be IP addresses of one family.
    pub fn parse(text: &str) -> Option<NatMapping> {
        let (external, local) = match text.trim().split_once('/') {
            Some((e, l)) => (e.trim(), Some(l.trim())),
            None => (text.trim(), None),
        };
        let external = IpAddr::from_str(external).ok()?;
        let local = match local {
            Some(l) => {
                let l = IpAddr::from_str(l).ok()?;
                if l.is_ipv4() != external.is_ipv4() {
                    return None;
                }
                Some(l)
            }
            None => None,
        };
        Some(NatMapping { external, local })
    }
}

impl Default for WebrtcSettings {
    fn default() -> Self {
        WebrtcSettings {
            ice_servers: Vec::new(),
            udp_port_min: 50000,
            udp_port_max: 50100,
            ip_addresses: Vec::new(),
            nat_1to1_ips: Vec::new(),
        }
    }
}

/// `[limits]`: what one client, or many, may cost the daemon. Each limit logs a line when
/// it is hit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Viewers streaming at once: 1..=64.
    pub max_viewers: usize,
    /// Largest signaling message accepted, in bytes: 1024..=1048576.
    pub max_message_bytes: usize,
    /// Open WebSocket connections (viewers, browsers that have not dialled, room peers):
    /// 1..=4096. All TCP connections together are capped at twice this plus 16.
    pub max_connections: usize,
    /// Dials in progress (offer received, ICE not yet connected): 1..=64.
    pub max_pending_dials: usize,
    /// Dials per minute from one IP address: 1..=600.
    pub dials_per_minute: u32,
    /// Failed logins per minute from one IP address before it must wait: 1..=100.
    pub login_failures_per_minute: u32,
    /// Seconds a dial may take to connect before its peer is closed: 5..=120.
    pub ice_timeout_s: u32,
    /// Seconds a WebSocket with no call may stay silent before it is closed: 10..=86400.
    pub idle_timeout_s: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_viewers: 8,
            max_message_bytes: 65536,
            max_connections: 64,
            max_pending_dials: 4,
            dials_per_minute: 30,
            login_failures_per_minute: 5,
            ice_timeout_s: 15,
            idle_timeout_s: 120,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Log level; `RUST_LOG`, when set, overrides it.
    pub level: log::LevelFilter,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: log::LevelFilter::Info,
        }
    }
}

/// Turns the raw file into settings, checking every value; the first problem is returned.
pub(crate) fn validate(raw: RawConfig, src: Source<'_>) -> Result<Settings, ConfigError> {
    Ok(Settings {
        server: server(raw.server, src)?,
        video: video(raw.video, src)?,
        audio: audio(raw.audio, src)?,
        webrtc: webrtc(raw.webrtc, src)?,
        limits: limits(raw.limits, src)?,
        log: log_settings(raw.log, src)?,
    })
}

/// An integer in `lo..=hi` (and even, when asked), converted to the settings' type.
fn ranged<T: TryFrom<i64>>(
    src: Source<'_>,
    value: Value<i64>,
    key: &str,
    (lo, hi): (i64, i64),
    even: bool,
    default: T,
) -> Result<T, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let n = *v.get_ref();
    let expected = if even {
        format!("expected an even number from {lo} to {hi}")
    } else {
        format!("expected a number from {lo} to {hi}")
    };
    if !(lo..=hi).contains(&n) || (even && n % 2 != 0) {
        return Err(src.bad_value(v.span(), key, &expected));
    }
    T::try_from(n).map_err(|_| src.bad_value(v.span(), key, &expected))
}

fn server(raw: RawServer, src: Source<'_>) -> Result<ServerSettings, ConfigError> {
    let mut s = ServerSettings::default();
    if let Some(v) = raw.listen {
        s.listen = SocketAddr::from_str(v.get_ref().trim()).map_err(|_| {
            let expected =
                "expected an IP address and port such as \"0.0.0.0:7000\" or \"[::]:7000\"";
            src.bad_value(v.span(), "[server] listen", expected)
        })?;
    }
    if let Some(v) = raw.password {
        let password = v.get_ref();
        if password.trim() != password.as_str() {
            let expected = "expected no spaces at the start or end (they are easy to get wrong \
                            when typing it in)";
            return Err(src.bad_value(v.span(), "[server] password", expected));
        }
        if !password.is_empty() {
            if password.chars().count() < MIN_PASSWORD_CHARS {
                let expected = format!(
                    "expected at least {MIN_PASSWORD_CHARS} characters, or \"\" for no password"
                );
                return Err(src.bad_value(v.span(), "[server] password", &expected));
            }
            s.password = Some(Password(password.clone()));
        }
    }
    if let Some(v) = raw.tls {
        s.tls = tls_mode(v, src)?;
    }
    if let Some(v) = raw.state_dir {
        let dir = v.get_ref().trim();
        if !dir.is_empty() {
            if !dir.starts_with('/') {
                let expected = "expected an absolute path such as \"/var/lib/peercam\", or \"\"";
                return Err(src.bad_value(v.span(), "[server] state_dir", expected));
            }
            s.state_dir = Some(PathBuf::from(dir));
        }
    }
    Ok(s)
}

/// `[server] tls`: `"off"`, `"self-signed"` or `{ cert = "/path", key = "/path" }`.
fn tls_mode(v: toml::Spanned<toml::Value>, src: Source<'_>) -> Result<TlsMode, ConfigError> {
    const KEY: &str = "[server] tls";
    const EXPECTED: &str = "expected \"off\", \"self-signed\" or { cert = \"/path/cert.pem\", \
                            key = \"/path/key.pem\" }";
    let span = v.span();
    match v.into_inner() {
        toml::Value::String(mode) => match mode.trim() {
            "off" => Ok(TlsMode::Off),
            "self-signed" => Ok(TlsMode::SelfSigned),
            _ => Err(src.bad_value(span, KEY, EXPECTED)),
        },
        toml::Value::Table(table) => {
            let path = |name: &str| -> Result<PathBuf, ConfigError> {
                match table.get(name) {
                    Some(toml::Value::String(p)) if p.starts_with('/') => Ok(PathBuf::from(p)),
                    Some(_) => {
                        let expected = format!("expected {name} to be an absolute path in quotes");
                        Err(src.bad_value(span.clone(), KEY, &expected))
                    }
                    None => {
                        let expected = format!("expected a {name} key: {EXPECTED}");
                        Err(src.bad_value(span.clone(), KEY, &expected))
                    }
                }
            };
            let mode = TlsMode::Files {
                cert: path("cert")?,
                key: path("key")?,
            };
            if let Some(other) = table
                .keys()
                .find(|k| !["cert", "key"].contains(&k.as_str()))
            {
                let expected = format!("unknown key {other}; expected only cert and key");
                return Err(src.bad_value(span, KEY, &expected));
            }
            Ok(mode)
        }
        _ => Err(src.bad_value(span, KEY, EXPECTED)),
    }
}

fn video(raw: RawVideo, src: Source<'_>) -> Result<VideoSettings, ConfigError> {
    let d = VideoSettings::default();
    let rates = bitrates(&raw, src, &d)?;
    let source = match raw.source {
        None => d.source,
        Some(v) => match v.get_ref().as_str() {
            "auto" => VideoSource::Auto,
            "test" => VideoSource::Test,
            path if path.starts_with('/') => VideoSource::Device(PathBuf::from(path)),
            _ => {
                let expected = "expected \"auto\", \"test\" or a device path starting with / such as \"/dev/video0\"";
                return Err(src.bad_value(v.span(), "[video] source", expected));
            }
        },
    };
    let format_span = raw.format.as_ref().map(|v| v.span());
    let format = match raw.format {
        None => d.format,
        Some(v) => match v.get_ref().to_ascii_lowercase().as_str() {
            "auto" => VideoFormat::Auto,
            "yuyv" => VideoFormat::Yuyv,
            "nv12" => VideoFormat::Nv12,
            "yu12" | "i420" => VideoFormat::Yu12,
            "mjpeg" | "mjpg" => VideoFormat::Mjpeg,
            "h264" => VideoFormat::H264,
            _ => {
                let expected =
                    "expected \"auto\", \"yuyv\", \"nv12\", \"yu12\", \"mjpeg\" or \"h264\"";
                return Err(src.bad_value(v.span(), "[video] format", expected));
            }
        },
    };
    let codecs = match raw.codecs {
        None => d.codecs,
        Some(v) => codecs(v, src)?,
    };
    if let Some(span) = format_span {
        let written = src.quote(span.clone());
        let key = "[video] format";
        if format == VideoFormat::H264 && codecs.first() != Some(&VideoCodec::H264) {
            return Err(src.error(
                span,
                Some(key.to_owned()),
                format!(
                    "{key} = {written} passes the camera's H.264 through: put \"h264\" first in \
                     [video] codecs"
                ),
            ));
        }
        if source == VideoSource::Test && !matches!(format, VideoFormat::Auto | VideoFormat::H264) {
            return Err(src.error(
                span,
                Some(key.to_owned()),
                format!(
                    "{key} = {written} applies to cameras; with source = \"test\" only \"auto\" \
                     or \"h264\" (the test pattern as a simulated H.264 camera) are possible"
                ),
            ));
        }
    }
    Ok(VideoSettings {
        source,
        format,
        width: ranged(src, raw.width, "[video] width", (160, 3840), true, d.width)?,
        height: ranged(
            src,
            raw.height,
            "[video] height",
            (120, 2160),
            true,
            d.height,
        )?,
        fps: ranged(src, raw.fps, "[video] fps", (1, 60), false, d.fps)?,
        codecs,
        bitrate_kbps: rates.start,
        min_bitrate_kbps: rates.min,
        max_bitrate_kbps: rates.max,
        multi_viewer_floor_kbps: rates.floor,
        keyframe_interval_s: ranged(
            src,
            raw.keyframe_interval_s,
            "[video] keyframe_interval_s",
            (1, 60),
            false,
            d.keyframe_interval_s,
        )?,
    })
}

/// The four `[video]` bitrates, each in 50..=20000 kbit/s.
struct Bitrates {
    start: u32,
    min: u32,
    max: u32,
    floor: u32,
}

/// Reads the `[video]` bitrates and checks `min <= bitrate <= max` and `min <= floor <= max`,
/// blaming a key the user wrote (a default alone is never wrong: the defaults of the bounds
/// and the floor move to make room for a written `bitrate_kbps`).
fn bitrates(raw: &RawVideo, src: Source<'_>, d: &VideoSettings) -> Result<Bitrates, ConfigError> {
    const RANGE: (i64, i64) = (50, 20000);
    const START: &str = "[video] bitrate_kbps";
    const MIN: &str = "[video] min_bitrate_kbps";
    const MAX: &str = "[video] max_bitrate_kbps";
    const FLOOR: &str = "[video] multi_viewer_floor_kbps";
    // Each is a number in RANGE when written, else `default`.
    let read = |value: &Value<i64>, key: &str, default: u32| {
        ranged(src, value.clone(), key, RANGE, false, default)
    };
    let start = read(&raw.bitrate_kbps, START, d.bitrate_kbps)?;
    // Unwritten bounds make room for a written start bitrate (a file from before these keys
    // with bitrate_kbps = 4000 keeps working: max becomes 4000).
    let min = read(&raw.min_bitrate_kbps, MIN, d.min_bitrate_kbps.min(start))?;
    let max = read(&raw.max_bitrate_kbps, MAX, d.max_bitrate_kbps.max(start))?;
    let floor_default = d.multi_viewer_floor_kbps.max(min).min(max);
    let floor = read(&raw.multi_viewer_floor_kbps, FLOOR, floor_default)?;
    let rates = Bitrates {
        start,
        min,
        max,
        floor,
    };
    // The key to blame for `value` being outside min..=max: the value's own key when written,
    // else the bound's.
    let blame = |own: (&Value<i64>, &'static str)| -> (std::ops::Range<usize>, &'static str) {
        [
            own,
            (&raw.min_bitrate_kbps, MIN),
            (&raw.max_bitrate_kbps, MAX),
        ]
        .into_iter()
        .find_map(|(v, key)| v.as_ref().map(|v| (v.span(), key)))
        .unwrap_or((0..0, own.1))
    };
    if min > max {
        let (span, key) = blame((&raw.max_bitrate_kbps, MAX));
        let expected = format!("expected min_bitrate_kbps ({min}) <= max_bitrate_kbps ({max})");
        return Err(src.bad_value(span, key, &expected));
    }
    for (value, own, name) in [
        (rates.start, (&raw.bitrate_kbps, START), "bitrate_kbps"),
        (
            rates.floor,
            (&raw.multi_viewer_floor_kbps, FLOOR),
            "multi_viewer_floor_kbps",
        ),
    ] {
        if !(min..=max).contains(&value) {
            let (span, key) = blame(own);
            let expected = format!(
                "expected min_bitrate_kbps ({min}) <= {name} ({value}) <= max_bitrate_kbps ({max})"
            );
            return Err(src.bad_value(span, key, &expected));
        }
    }
    Ok(rates)
}

fn codecs(
    value: toml::Spanned<Vec<toml::Spanned<String>>>,
    src: Source<'_>,
) -> Result<Vec<VideoCodec>, ConfigError> {
    let span = value.span();
    let names = value.into_inner();
    if names.is_empty() {
        return Err(src.bad_value(
            span,
            "[video] codecs",
            "expected at least one codec: \"h264\", \"av1\"",
        ));
    }
    let mut codecs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let codec = match name.get_ref().as_str() {
            "h264" => VideoCodec::H264,
            "av1" => VideoCodec::Av1,
            _ => {
                let key = format!("[video] codecs[{i}]");
                return Err(src.bad_value(name.span(), &key, "expected \"h264\" or \"av1\""));
            }
        };
        if codecs.contains(&codec) {
            let key = format!("[video] codecs[{i}]");
            return Err(src.bad_value(name.span(), &key, "duplicate codec; list each codec once"));
        }
        codecs.push(codec);
    }
    Ok(codecs)
}

fn audio(raw: RawAudio, src: Source<'_>) -> Result<AudioSettings, ConfigError> {
    let d = AudioSettings::default();
    let source = match raw.source {
        None => d.source,
        Some(v) => match v.get_ref().trim() {
            "auto" => AudioSource::Auto,
            "test" => AudioSource::Test,
            "none" => AudioSource::None,
            "" => {
                let expected = "expected \"auto\", \"test\", \"none\" or an ALSA device name such as \"hw:1,0\"";
                return Err(src.bad_value(v.span(), "[audio] source", expected));
            }
            name => AudioSource::Alsa(name.to_owned()),
        },
    };
    Ok(AudioSettings {
        source,
        channels: ranged(
            src,
            raw.channels,
            "[audio] channels",
            (1, 2),
            false,
            d.channels,
        )?,
        bitrate_kbps: ranged(
            src,
            raw.bitrate_kbps,
            "[audio] bitrate_kbps",
            (6, 510),
            false,
            d.bitrate_kbps,
        )?,
    })
}

fn webrtc(raw: RawWebrtc, src: Source<'_>) -> Result<WebrtcSettings, ConfigError> {
    let d = WebrtcSettings::default();
    let mut ice_servers = Vec::new();
    for (i, server) in raw
        .ice_servers
        .map(|v| v.into_inner())
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        ice_servers.push(ice_server(server, i, src)?);
    }
    let (min, max) = udp_ports(
        &raw.udp_port_min,
        &raw.udp_port_max,
        (d.udp_port_min, d.udp_port_max),
        src,
    )?;
    let mut ip_addresses = Vec::new();
    for (i, addr) in raw
        .ip_addresses
        .map(|v| v.into_inner())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ip = IpAddr::from_str(addr.get_ref().trim()).map_err(|_| {
            let key = format!("[webrtc] ip_addresses[{i}]");
            src.bad_value(
                addr.span(),
                &key,
                "expected an IP address such as \"192.168.1.20\" or \"fe80::1\"",
            )
        })?;
        ip_addresses.push(ip);
    }
    let mut nat_1to1_ips = Vec::new();
    for (i, entry) in raw
        .nat_1to1_ips
        .map(|v| v.into_inner())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let mapping = NatMapping::parse(entry.get_ref()).ok_or_else(|| {
            let key = format!("[webrtc] nat_1to1_ips[{i}]");
            src.bad_value(
                entry.span(),
                &key,
                "expected \"EXTERNAL\" or \"EXTERNAL/LOCAL\" IP addresses of one family, \
                 such as \"203.0.113.7\" or \"127.0.0.1/10.0.2.15\"",
            )
        })?;
        nat_1to1_ips.push(mapping);
    }
    Ok(WebrtcSettings {
        ice_servers,
        udp_port_min: min,
        udp_port_max: max,
        ip_addresses,
        nat_1to1_ips,
    })
}

const ICE_SCHEMES: [&str; 4] = ["stun:", "stuns:", "turn:", "turns:"];

fn ice_server(
    raw: toml::Spanned<RawIceServer>,
    i: usize,
    src: Source<'_>,
) -> Result<IceServer, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let Some(urls) = raw.urls else {
        let key = format!("[webrtc] ice_servers[{i}]");
        return Err(src.bad_value(
            span,
            &key,
            "expected a urls key, such as urls = [\"stun:stun.example.org:3478\"]",
        ));
    };
    let urls_span = urls.span();
    let urls = urls.into_inner();
    if urls.is_empty() {
        let key = format!("[webrtc] ice_servers[{i}].urls");
        return Err(src.bad_value(
            urls_span,
            &key,
            "expected at least one URL such as \"stun:stun.example.org:3478\"",
        ));
    }
    let mut needs_credentials = false;
    for (j, url) in urls.iter().enumerate() {
        let text = url.get_ref().trim();
        let Some(scheme) = ICE_SCHEMES.iter().find(|s| text.starts_with(**s)) else {
            let key = format!("[webrtc] ice_servers[{i}].urls[{j}]");
            return Err(src.bad_value(
                url.span(),
                &key,
                "expected a URL starting with stun:, stuns:, turn: or turns:",
            ));
        };
        if text.len() == scheme.len() {
            let key = format!("[webrtc] ice_servers[{i}].urls[{j}]");
            return Err(src.bad_value(
                url.span(),
                &key,
                "expected a host after the scheme, such as \"stun:stun.example.org:3478\"",
            ));
        }
        needs_credentials |= scheme.starts_with("turn");
    }
    let username = raw.username.map(|v| v.into_inner());
    let credential = raw.credential.map(|v| v.into_inner());
    if needs_credentials && (username.is_none() || credential.is_none()) {
        let key = format!("[webrtc] ice_servers[{i}]");
        return Err(src.bad_value(
            span,
            &key,
            "expected username and credential with a turn: or turns: URL",
        ));
    }
    Ok(IceServer {
        urls: urls
            .into_iter()
            .map(|u| u.into_inner().trim().to_owned())
            .collect(),
        username,
        credential,
    })
}

/// The UDP port range: both 0 (the OS chooses), or `1024 <= min <= max <= 65535`.
fn udp_ports(
    min: &Value<i64>,
    max: &Value<i64>,
    defaults: (u16, u16),
    src: Source<'_>,
) -> Result<(u16, u16), ConfigError> {
    const MIN_KEY: &str = "[webrtc] udp_port_min";
    const MAX_KEY: &str = "[webrtc] udp_port_max";
    const RANGE: &str = "expected a port number from 1024 to 65535, or 0 in both udp_port_min and udp_port_max to let the OS choose";
    let lo = ranged(src, min.clone(), MIN_KEY, (0, 65535), false, defaults.0)?;
    let hi = ranged(src, max.clone(), MAX_KEY, (0, 65535), false, defaults.1)?;
    if lo == 0 && hi == 0 {
        return Ok((0, 0));
    }
    // Blame a value the user wrote (a default alone is never wrong): the first of the pair
    // that is present.
    let written = |first: (&Value<i64>, &'static str), second: (&Value<i64>, &'static str)| match (
        first, second,
    ) {
        ((Some(v), key), _) | ((None, _), (Some(v), key)) => (v.span(), key),
        ((None, key), (None, _)) => (0..0, key),
    };
    let (min_first, max_first) = (
        written((min, MIN_KEY), (max, MAX_KEY)),
        written((max, MAX_KEY), (min, MIN_KEY)),
    );
    if lo < 1024 {
        return Err(src.bad_value(min_first.0, min_first.1, RANGE));
    }
    if hi < 1024 {
        return Err(src.bad_value(max_first.0, max_first.1, RANGE));
    }
    if lo > hi {
        let expected = format!("expected udp_port_min ({lo}) <= udp_port_max ({hi})");
        return Err(src.bad_value(max_first.0, max_first.1, &expected));
    }
    Ok((lo, hi))
}

fn limits(raw: RawLimits, src: Source<'_>) -> Result<LimitSettings, ConfigError> {
    let d = LimitSettings::default();
    Ok(LimitSettings {
        max_viewers: ranged(
            src,
            raw.max_viewers,
            "[limits] max_viewers",
            (1, 64),
            false,
            d.max_viewers,
        )?,
        max_message_bytes: ranged(
            src,
            raw.max_message_bytes,
            "[limits] max_message_bytes",
            (1024, 1_048_576),
            false,
            d.max_message_bytes,
        )?,
        max_connections: ranged(
            src,
            raw.max_connections,
            "[limits] max_connections",
            (1, 4096),
            false,
            d.max_connections,
        )?,
        max_pending_dials: ranged(
            src,
            raw.max_pending_dials,
            "[limits] max_pending_dials",
            (1, 64),
            false,
            d.max_pending_dials,
        )?,
        dials_per_minute: ranged(
            src,
            raw.dials_per_minute,
            "[limits] dials_per_minute",
            (1, 600),
            false,
            d.dials_per_minute,
        )?,
        login_failures_per_minute: ranged(
            src,
            raw.login_failures_per_minute,
            "[limits] login_failures_per_minute",
            (1, 100),
            false,
            d.login_failures_per_minute,
        )?,
        ice_timeout_s: ranged(
            src,
            raw.ice_timeout_s,
            "[limits] ice_timeout_s",
            (5, 120),
            false,
            d.ice_timeout_s,
        )?,
        idle_timeout_s: ranged(
            src,
            raw.idle_timeout_s,
            "[limits] idle_timeout_s",
            (10, 86_400),
            false,
            d.idle_timeout_s,
        )?,
    })
}

fn log_settings(raw: RawLog, src: Source<'_>) -> Result<LogSettings, ConfigError> {
    let mut s = LogSettings::default();
    if let Some(v) = raw.level {
        s.level = log::LevelFilter::from_str(v.get_ref().trim()).map_err(|_| {
            let expected =
                "expected one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", \"off\"";
            src.bad_value(v.span(), "[log] level", expected)
        })?;
    }
    Ok(s)
}
