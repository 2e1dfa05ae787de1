//! The settings types: what the rest of peercam codes against, with their built-in defaults
//! ([`Default`]) and how they print. Every value here has passed its check in
//! [`validate`](super::validate), which builds them from the file; absent keys hold the
//! defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

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
    /// `[rpicam]`: how rpicam-vid runs the Camera Module.
    pub rpicam: RpicamSettings,
    /// `[[publish]]`: WHIP servers the stream is sent to.
    pub publish: Vec<PublishTarget>,
    /// `[relay]`: the link out to a `peercam relay`; `None` when `url` is unset.
    pub relay: Option<RelaySettings>,
}

/// `[relay]`: the device connects out to `peercam relay` and browsers dial it there.
#[derive(Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Where the relay is: `wss://` (or `ws://` to a loopback host).
    pub url: RelayUrl,
    /// The device's token, as listed for its name in the relay's `[[relay_server.devices]]`.
    pub token: String,
    /// The name browsers dial (`[a-z0-9-]`, 1 to 32 characters); default: the host name.
    pub name: String,
    /// PEM certificates trusted for the relay besides the system's roots (a self-signed
    /// relay's own certificate).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret.
        f.debug_struct("RelaySettings")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// A relay's WebSocket URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    /// As written.
    pub text: String,
    /// `wss://` (else `ws://`, only to a loopback host).
    pub tls: bool,
    /// The host name or address (an IPv6 address without brackets).
    pub host: String,
    /// The port (443 or 80 when not written).
    pub port: u16,
}

/// Longest device name (`[relay] name`, `[[relay_server.devices]] name`).
pub const MAX_DEVICE_NAME: usize = 32;
/// Shortest relay token.
pub const MIN_RELAY_TOKEN: usize = 16;

/// Whether `name` is a device name: 1 to [`MAX_DEVICE_NAME`] of `a-z`, `0-9` and `-`, not
/// starting or ending with `-`.
pub fn is_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DEVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `token` is a relay token: at least [`MIN_RELAY_TOKEN`] printable ASCII characters
/// without spaces, at most 256.
pub fn is_relay_token(token: &str) -> bool {
    (MIN_RELAY_TOKEN..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// `[rpicam]`: the Camera Module through rpicam-vid (`video.source = "rpicam"`, or `"auto"`
/// when rpicam-vid lists a camera).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpicamSettings {
    /// `--camera N`: which camera of `rpicam-vid --list-cameras` (0..=7).
    pub camera: u32,
    /// `--rotation`: 0 or 180 (the Pi's pipeline flips; it cannot turn by 90).
    pub rotation: u32,
    /// `--hflip`: mirror left and right.
    pub hflip: bool,
    /// `--vflip`: upside down.
    pub vflip: bool,
    /// More arguments for rpicam-vid, e.g. `["--denoise", "cdn_off"]` (the escape hatch);
    /// the ones peercam sets itself are refused.
    pub extra_args: Vec<String>,
}

/// One `[[publish]]` entry: a WHIP endpoint (RFC 9725) the daemon publishes its stream to.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishTarget {
    /// The WHIP endpoint, `http://` or `https://`.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`; `None`: no `Authorization`.
    pub token: Option<String>,
    /// Video codecs to offer, in order (the first the daemon encodes is offered); defaults
    /// to `[video] codecs`.
    pub codecs: Vec<VideoCodec>,
}

impl std::fmt::Debug for PublishTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret.
        f.debug_struct("PublishTarget")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("codecs", &self.codecs)
            .finish()
    }
}

/// At most this many `[[publish]]` targets (each is an upload of the whole stream).
pub const MAX_PUBLISH_TARGETS: usize = 8;

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
    /// Host names the daemon is reached by besides its IP addresses, `localhost`, its host
    /// name and `<host name>.local` (e.g. a DNS name or a reverse proxy's), lower case.
    pub hosts: Vec<String>,
    /// Take the host from `X-Forwarded-Host` (set by a reverse proxy in front of peercam)
    /// rather than `Host`. Off: the header is ignored.
    pub trust_forwarded_host: bool,
    /// Origins (`scheme://host[:port]`, lower case) whose pages may use WHEP from the
    /// browser (CORS); empty: only tools and the daemon's own page.
    pub cors_origins: Vec<String>,
    /// The camera's name, shown in the page's title and header and sent in `hello`. `None`
    /// (written `""`, the default): the machine's host name ([`ServerSettings::camera_name`]).
    pub name: Option<String>,
}

/// Most characters in `[server] name`.
pub const MAX_CAMERA_NAME: usize = 64;

impl ServerSettings {
    /// `[server] name`, or else the machine's host name, or else `peercam`.
    pub fn camera_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let host = crate::lan::host_name().unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_CAMERA_NAME)
            .collect();
        if host.is_empty() {
            "peercam".to_owned()
        } else {
            host
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7000),
            password: None,
            tls: TlsMode::Off,
            state_dir: None,
            hosts: Vec::new(),
            trust_forwarded_host: false,
            cors_origins: Vec::new(),
            name: None,
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
    /// `"rpicam"`: the Raspberry Pi Camera Module through `rpicam-vid` (`[rpicam]`).
    Rpicam,
}

impl fmt::Display for VideoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoSource::Auto => f.write_str("auto"),
            VideoSource::Test => f.write_str("test"),
            VideoSource::Device(path) => write!(f, "{}", path.display()),
            VideoSource::Rpicam => f.write_str("rpicam"),
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
    /// TURN user name (`turn:`/`turns:` URLs need it, or a `secret`). With a `secret`, the
    /// name part of the time-limited user names.
    pub username: Option<String>,
    /// TURN password (`turn:`/`turns:` URLs need it, or a `secret`).
    pub credential: Option<String>,
    /// The TURN server's shared secret (coturn's `use-auth-secret` and
    /// `static-auth-secret`): peercam makes time-limited credentials from it for itself and
    /// for each viewer ([`IceServer::credentials_at`]), and never hands the secret out.
    pub secret: Option<String>,
}

/// How long the credentials made from a TURN `secret` stay valid: a day, as coturn's TURN
/// REST API suggests. A page gets new ones each time it connects.
pub const TURN_CREDENTIAL_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl IceServer {
    /// The server as a client uses it at `now`. Without a `secret`, as configured. With one,
    /// the TURN REST API's credentials (coturn `use-auth-secret`): the user name
    /// `<expiry>:<username>` (`expiry` in Unix seconds, [`TURN_CREDENTIAL_TTL`] from `now`;
    /// `username` defaults to `peercam`), and the password base64(HMAC-SHA1(secret, user
    /// name)).
    pub fn credentials_at(&self, now: std::time::SystemTime) -> IceServer {
        let Some(secret) = &self.secret else {
            return self.clone();
        };
        use base64::Engine as _;
        let expiry = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(TURN_CREDENTIAL_TTL)
            .as_secs();
        let name = self.username.as_deref().unwrap_or("peercam");
        let username = format!("{expiry}:{name}");
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        let tag = ring::hmac::sign(&key, username.as_bytes());
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(base64::engine::general_purpose::STANDARD.encode(tag.as_ref())),
            secret: None,
        }
    }
}

/// `[webrtc]`
#[derive(Debug, Clone, PartialEq)]
pub struct WebrtcSettings {
    /// STUN/TURN servers; empty means host candidates only (fine on a LAN).
    pub ice_servers: Vec<IceServer>,
    /// The one UDP port every call uses (ICE UDP mux; default 8555); 0: each call gets a
    /// port of its own from `udp_port_min..=udp_port_max`.
    pub udp_port: u16,
    /// The one TCP port for ICE over TCP (passive; for viewers whose network blocks UDP;
    /// default 8555); 0: no ICE-TCP. Needs `udp_port` (it shares its mux).
    pub tcp_port: u16,
    /// With `udp_port = 0`: lowest local UDP port for ICE; 0 together with
    /// `udp_port_max = 0` means any port.
    pub udp_port_min: u16,
    /// Highest local UDP port for ICE (inclusive).
    pub udp_port_max: u16,
    /// Addresses to gather host candidates on; empty means every non-loopback address of the
    /// machine. Tests set `["127.0.0.1"]`.
    pub ip_addresses: Vec<IpAddr>,
    /// Addresses advertised in place of local ones in host candidates (1:1 NAT, port
    /// forwards, qemu user networking); empty means advertise the local addresses.
    pub nat_1to1_ips: Vec<NatMapping>,
    /// Resolve browsers' `<uuid>.local` candidates by mDNS queries (query only; the daemon
    /// announces nothing).
    pub resolve_mdns: bool,
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

/// `[webrtc] udp_port` by default (go2rtc's WebRTC port, so one router rule serves both).
pub const DEFAULT_UDP_PORT: u16 = 8555;

/// `[webrtc] tcp_port` by default (go2rtc's too: TCP and UDP 8555 are one router rule pair).
pub const DEFAULT_TCP_PORT: u16 = 8555;

impl Default for WebrtcSettings {
    fn default() -> Self {
        WebrtcSettings {
            ice_servers: Vec::new(),
            udp_port: DEFAULT_UDP_PORT,
            tcp_port: DEFAULT_TCP_PORT,
            udp_port_min: 50000,
            udp_port_max: 50100,
            ip_addresses: Vec::new(),
            nat_1to1_ips: Vec::new(),
            resolve_mdns: true,
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
    /// Dials in progress from one IP address (IPv6: one /64): 1..=64.
    pub pending_dials_per_address: usize,
    /// TCP connections (page, login, WebSockets, TLS handshakes) open from one IP address
    /// (IPv6: one /64): 1..=4096.
    pub connections_per_address: usize,
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
            pending_dials_per_address: 2,
            connections_per_address: 16,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_secret_gives_the_rest_apis_time_limited_credentials() {
        // Expected values from Python's hmac module (an implementation peercam does not
        // share): base64(HMAC-SHA1(b"north-secret", b"1700086400:peercam")).
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let server = IceServer {
            urls: vec![
                "turn:t.example.org:3478".into(),
                "turns:t.example.org:5349".into(),
            ],
            username: None,
            credential: None,
            secret: Some("north-secret".into()),
        };
        let made = server.credentials_at(now);
        assert_eq!(made.urls, server.urls);
        assert_eq!(made.username.as_deref(), Some("1700086400:peercam"));
        assert_eq!(
            made.credential.as_deref(),
            Some("SFQfnXPj9TUv3KPRMRu1avH3AXY=")
        );
        assert_eq!(made.secret, None, "the secret is never handed out");
        let named = IceServer {
            username: Some("lab".into()),
            ..server
        };
        let made = named.credentials_at(now);
        assert_eq!(made.username.as_deref(), Some("1700086400:lab"));
        assert_eq!(
            made.credential.as_deref(),
            Some("W/MgpzNlexAma03erPgB+FeINZg=")
        );
        let fixed = IceServer {
            urls: vec!["turn:t.example.org".into()],
            username: Some("u".into()),
            credential: Some("p".into()),
            secret: None,
        };
        assert_eq!(fixed.credentials_at(now), fixed);
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let s = Settings::default();
        assert_eq!(
            s.server.listen,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7000)
        );
        assert_eq!(s.video.source, VideoSource::Auto);
        assert_eq!((s.video.width, s.video.height, s.video.fps), (640, 480, 30));
        assert_eq!(s.video.codecs, vec![VideoCodec::H264, VideoCodec::Av1]);
        assert_eq!(
            (s.video.bitrate_kbps, s.video.keyframe_interval_s),
            (1000, 2)
        );
        assert_eq!(
            s.audio,
            AudioSettings {
                source: AudioSource::Auto,
                channels: 1,
                bitrate_kbps: 32
            }
        );
        assert!(s.webrtc.ice_servers.is_empty() && s.webrtc.ip_addresses.is_empty());
        assert_eq!(
            (s.webrtc.udp_port_min, s.webrtc.udp_port_max),
            (50000, 50100)
        );
        assert_eq!(
            (s.limits.max_viewers, s.limits.max_message_bytes),
            (8, 65536)
        );
        assert_eq!(s.log.level, log::LevelFilter::Info);
    }
}
