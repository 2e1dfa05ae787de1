//! From the file to the settings: the check of every config key. [`validate`] turns the
//! [`RawConfig`] that `file.rs` deserialized into [`Settings`], one function per table
//! (`server`, `video`, `audio`, `webrtc`, `limits`, `log_settings`, then the `[[publish]]`
//! targets in `publish_target`), and returns the first
//! problem as a [`ConfigError`] that names file, line, column, key and what was expected.
//!
//! To find where a key is checked, search this file for the key as its errors write it, e.g.
//! `"[video] width"` or `"[webrtc] udp_port_min"`. Number ranges go through `ranged`; the
//! checks between keys are `bitrates` (the four `[video]` bitrates) and `udp_ports` (the
//! `[webrtc]` port range). The tests below cover each rule through [`parse_str`](super::parse_str).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use super::error::{ConfigError, Source};
use super::file::{
    RawAudio, RawConfig, RawIceServer, RawLimits, RawLog, RawPublish, RawRelay, RawRpicam,
    RawServer, RawVideo, RawWebrtc, Value,
};
use super::settings::{
    AudioSettings, AudioSource, IceServer, LimitSettings, LogSettings, NatMapping, Password,
    PublishTarget, RelaySettings, RelayUrl, RpicamSettings, ServerSettings, Settings, TlsMode,
    VideoFormat, VideoSettings, VideoSource, WebrtcSettings, MAX_CAMERA_NAME, MAX_PUBLISH_TARGETS,
    MIN_PASSWORD_CHARS,
};
use crate::media::VideoCodec;

/// Turns the raw file into settings, checking every value; the first problem is returned.
pub(crate) fn validate(raw: RawConfig, src: Source<'_>) -> Result<Settings, ConfigError> {
    Settings {
        server: server(raw.server, src)?,
        video: video(raw.video, src)?,
        audio: audio(raw.audio, src)?,
        webrtc: webrtc(raw.webrtc, src)?,
        limits: limits(raw.limits, src)?,
        log: log_settings(raw.log, src)?,
        rpicam: rpicam(raw.rpicam, src)?,
        publish: Vec::new(),
        relay: relay(raw.relay, src)?,
    }
    .with_publish(raw.publish, src)
}

/// `[relay]`: off while `url` is unset or `""`; then `token` is required.
fn relay(raw: RawRelay, src: Source<'_>) -> Result<Option<RelaySettings>, ConfigError> {
    let Some(url) = raw.url.filter(|u| !u.get_ref().trim().is_empty()) else {
        return Ok(None);
    };
    let url_span = url.span();
    let url = relay_url(url.get_ref().trim())
        .map_err(|expected| src.bad_value(url_span.clone(), "[relay] url", &expected))?;
    let token = match raw.token {
        Some(t) if super::settings::is_relay_token(t.get_ref()) => t.into_inner(),
        Some(t) => {
            let expected = format!(
                "expected the token from the relay's [[relay_server.devices]]: at least {} \
                 printable characters without spaces",
                super::settings::MIN_RELAY_TOKEN
            );
            return Err(src.bad_value(t.span(), "[relay] token", &expected));
        }
        None => {
            let expected = "expected a token key beside it: [relay] url needs the device's \
                            token from the relay's [[relay_server.devices]]";
            return Err(src.bad_value(url_span, "[relay] url", expected));
        }
    };
    let name = match raw.name.filter(|n| !n.get_ref().is_empty()) {
        Some(n) if super::settings::is_device_name(n.get_ref()) => n.into_inner(),
        Some(n) => {
            let expected = device_name_expected();
            return Err(src.bad_value(n.span(), "[relay] name", &expected));
        }
        None => default_device_name(),
    };
    let ca_file = match raw.ca_file.filter(|f| !f.get_ref().is_empty()) {
        None => None,
        Some(f) if f.get_ref().starts_with('/') => Some(PathBuf::from(f.into_inner())),
        Some(f) => {
            let expected = "expected an absolute path to a PEM file, such as \
                            \"/etc/peercam/relay-ca.pem\", or \"\"";
            return Err(src.bad_value(f.span(), "[relay] ca_file", expected));
        }
    };
    Ok(Some(RelaySettings {
        url,
        token,
        name,
        ca_file,
    }))
}

/// What a device name must look like, for error messages.
pub(crate) fn device_name_expected() -> String {
    format!(
        "expected 1 to {} characters of a-z, 0-9 and '-' (not first or last), such as \"shop\"",
        super::settings::MAX_DEVICE_NAME
    )
}

/// The host name made into a device name: lower case, other characters as '-', cut to
/// [`MAX_DEVICE_NAME`](super::settings::MAX_DEVICE_NAME); `peercam` when nothing is left.
fn default_device_name() -> String {
    let host = crate::lan::host_name().unwrap_or_default();
    let host = host
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(super::settings::MAX_DEVICE_NAME)
        .collect();
    let name = name.trim_matches('-').to_owned();
    if super::settings::is_device_name(&name) {
        name
    } else {
        "peercam".to_owned()
    }
}

/// Takes `wss://host[:port][/path]` apart; `ws://` only to a loopback host (a relay on the
/// same machine), since the token would cross the network in clear text.
fn relay_url(text: &str) -> Result<RelayUrl, String> {
    const EXPECTED: &str = "expected a wss:// URL such as \"wss://relay.example.org:8443/\"";
    let (tls, rest) = if let Some(rest) = text.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(EXPECTED.to_owned());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (address, after) = v6.split_once(']').ok_or(EXPECTED)?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(EXPECTED.to_owned());
        }
        (address, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':');
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{EXPECTED} (the port is 1 to 65535)"))?,
    };
    if !host_ok || text.len() > 2048 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{EXPECTED} (no user info; put the secret in token)"
        ));
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !tls && !loopback {
        return Err(
            "expected wss://: ws:// would send the token and every viewer's \
                    signaling in clear text; it is allowed only to a loopback host \
                    (127.0.0.1, ::1, localhost)"
                .to_owned(),
        );
    }
    Ok(RelayUrl {
        text: text.to_owned(),
        tls,
        host: host.to_owned(),
        port,
    })
}

impl Settings {
    /// Adds the `[[publish]]` targets (their default codecs are `[video] codecs`, read
    /// first).
    fn with_publish(
        mut self,
        raw: Value<Vec<toml::Spanned<RawPublish>>>,
        src: Source<'_>,
    ) -> Result<Settings, ConfigError> {
        let Some(raw) = raw else {
            return Ok(self);
        };
        let span = raw.span();
        let entries = raw.into_inner();
        if entries.len() > MAX_PUBLISH_TARGETS {
            let expected = format!("expected at most {MAX_PUBLISH_TARGETS} [[publish]] targets");
            return Err(src.bad_value(span, "publish", &expected));
        }
        for (i, entry) in entries.into_iter().enumerate() {
            let target = publish_target(entry, i, &self.video.codecs, src)?;
            self.publish.push(target);
        }
        Ok(self)
    }
}

fn publish_target(
    entry: toml::Spanned<RawPublish>,
    i: usize,
    video_codecs: &[VideoCodec],
    src: Source<'_>,
) -> Result<PublishTarget, ConfigError> {
    let span = entry.span();
    let raw = entry.into_inner();
    let Some(url) = raw.url else {
        let expected = "expected a url key: the WHIP endpoint, such as \
                        url = \"https://sfu.example.org/whip/camera\"";
        return Err(src.bad_value(span, &format!("publish[{i}]"), expected));
    };
    let url_span = url.span();
    let url = url.into_inner().trim().to_owned();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let url_ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains('@')
    }) && url.len() <= 2048
        && url.bytes().all(|b| b.is_ascii_graphic());
    if !url_ok {
        let expected = "expected an http:// or https:// URL with a host and no user info \
                        (put the secret in token)";
        return Err(src.bad_value(url_span, &format!("publish[{i}].url"), expected));
    }
    let token = match raw.token {
        None => None,
        Some(t) => {
            let token_span = t.span();
            let token = t.into_inner();
            let ok = !token.is_empty()
                && token.len() <= 4096
                && token.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                && token.trim() == token;
            if !ok {
                let expected = "expected the bearer token as printable ASCII, without spaces \
                                at the start or end";
                return Err(src.bad_value(token_span, &format!("publish[{i}].token"), expected));
            }
            Some(token)
        }
    };
    let codecs = match raw.codecs {
        None => video_codecs.to_vec(),
        Some(list) => {
            let key = format!("publish[{i}].codecs");
            let list_span = list.span();
            let parsed = codec_list(list, &key, src)?;
            if let Some(missing) = parsed.iter().find(|c| !video_codecs.contains(c)) {
                let expected = format!(
                    "expected codecs that [video] codecs encodes; {} is not in it",
                    missing.config_name()
                );
                return Err(src.bad_value(list_span, &key, &expected));
            }
            parsed
        }
    };
    Ok(PublishTarget { url, token, codecs })
}

/// An integer in `lo..=hi` (and even, when asked), converted to the settings' type.
pub(crate) fn ranged<T: TryFrom<i64>>(
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
    server_table(raw, src, "[server]")
}

/// The keys of `[server]`, also those of the relay's `[relay_server]` (`table`, for the
/// error messages).
pub(crate) fn server_table(
    raw: RawServer,
    src: Source<'_>,
    table: &str,
) -> Result<ServerSettings, ConfigError> {
    let mut s = ServerSettings::default();
    if let Some(v) = raw.listen {
        s.listen = SocketAddr::from_str(v.get_ref().trim()).map_err(|_| {
            let expected =
                "expected an IP address and port such as \"0.0.0.0:7000\" or \"[::]:7000\"";
            src.bad_value(v.span(), &format!("{table} listen"), expected)
        })?;
    }
    if let Some(v) = raw.password {
        let password = v.get_ref();
        if password.trim() != password.as_str() {
            let expected = "expected no spaces at the start or end (they are easy to get wrong \
                            when typing it in)";
            return Err(src.bad_value(v.span(), &format!("{table} password"), expected));
        }
        if !password.is_empty() {
            if password.chars().count() < MIN_PASSWORD_CHARS {
                let expected = format!(
                    "expected at least {MIN_PASSWORD_CHARS} characters, or \"\" for no password"
                );
                return Err(src.bad_value(v.span(), &format!("{table} password"), &expected));
            }
            s.password = Some(Password(password.clone()));
        }
    }
    if let Some(v) = raw.tls {
        s.tls = tls_mode(v, src, &format!("{table} tls"))?;
    }
    if let Some(v) = raw.state_dir {
        let dir = v.get_ref().trim();
        if !dir.is_empty() {
            if !dir.starts_with('/') {
                let expected = "expected an absolute path such as \"/var/lib/peercam\", or \"\"";
                return Err(src.bad_value(v.span(), &format!("{table} state_dir"), expected));
            }
            s.state_dir = Some(PathBuf::from(dir));
        }
    }
    for (i, name) in raw
        .hosts
        .map(|v| v.into_inner())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let host = name.get_ref().trim().to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            let key = format!("{table} hosts[{i}]");
            let expected = "expected a host name such as \"camera.example.org\" (letters, \
                            digits, '-' and '.'; no scheme, port or path)";
            return Err(src.bad_value(name.span(), &key, expected));
        }
        s.hosts.push(host);
    }
    if let Some(v) = raw.trust_forwarded_host {
        s.trust_forwarded_host = v.into_inner();
    }
    for (i, origin) in raw
        .cors_origins
        .map(|v| v.into_inner())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(value) = cors_origin(origin.get_ref()) else {
            let key = format!("{table} cors_origins[{i}]");
            let expected = "expected an origin such as \"https://player.example.org\" or \
                            \"http://192.168.1.20:8080\" (scheme, host and port only; no path, \
                            no wildcard)";
            return Err(src.bad_value(origin.span(), &key, expected));
        };
        s.cors_origins.push(value);
    }
    if let Some(v) = raw.name {
        s.name = camera_name(v.get_ref())
            .map_err(|expected| src.bad_value(v.span(), &format!("{table} name"), expected))?;
    }
    Ok(s)
}

/// `[server] name`: `None` for `""` (the host name), else the trimmed name; refused when too
/// long or holding control characters (or bidirectional overrides, which would reorder the
/// page's title).
fn camera_name(text: &str) -> Result<Option<String>, &'static str> {
    let name = text.trim();
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if name.chars().count() > MAX_CAMERA_NAME {
        return Err("expected at most 64 characters, or \"\" for the host name");
    }
    if name.chars().any(|c| c.is_control() || bidi(c)) {
        return Err("expected no control characters (tabs, line breaks, escapes, bidi overrides)");
    }
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

/// An origin as browsers send it in `Origin`: `http` or `https`, `://`, a host name, IPv4
/// address or bracketed IPv6 address, and an optional port; lower case.
fn cors_origin(text: &str) -> Option<String> {
    let origin = text.trim().to_ascii_lowercase();
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))?;
    let (host_ok, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (address, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (address.parse::<std::net::Ipv6Addr>().is_ok(), port)
        }
        None => {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            let name_ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            (name_ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    (host_ok && port_ok).then_some(origin)
}

/// `[server] tls`: `"off"`, `"self-signed"` or `{ cert = "/path", key = "/path" }`.
fn tls_mode(
    v: toml::Spanned<toml::Value>,
    src: Source<'_>,
    key: &str,
) -> Result<TlsMode, ConfigError> {
    const EXPECTED: &str = "expected \"off\", \"self-signed\" or { cert = \"/path/cert.pem\", \
                            key = \"/path/key.pem\" }";
    let span = v.span();
    match v.into_inner() {
        toml::Value::String(mode) => match mode.trim() {
            "off" => Ok(TlsMode::Off),
            "self-signed" => Ok(TlsMode::SelfSigned),
            _ => Err(src.bad_value(span, key, EXPECTED)),
        },
        toml::Value::Table(table) => {
            let path = |name: &str| -> Result<PathBuf, ConfigError> {
                match table.get(name) {
                    Some(toml::Value::String(p)) if p.starts_with('/') => Ok(PathBuf::from(p)),
                    Some(_) => {
                        let expected = format!("expected {name} to be an absolute path in quotes");
                        Err(src.bad_value(span.clone(), key, &expected))
                    }
                    None => {
                        let expected = format!("expected a {name} key: {EXPECTED}");
                        Err(src.bad_value(span.clone(), key, &expected))
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
                return Err(src.bad_value(span, key, &expected));
            }
            Ok(mode)
        }
        _ => Err(src.bad_value(span, key, EXPECTED)),
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
            "rpicam" => VideoSource::Rpicam,
            path if path.starts_with('/') => VideoSource::Device(PathBuf::from(path)),
            _ => {
                let expected = "expected \"auto\", \"test\", \"rpicam\" or a device path starting with / such as \"/dev/video0\"";
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
        if source == VideoSource::Rpicam
            && !matches!(
                format,
                VideoFormat::Auto | VideoFormat::H264 | VideoFormat::Yu12
            )
        {
            return Err(src.error(
                span,
                Some(key.to_owned()),
                format!(
                    "{key} = {written} is not something rpicam-vid gives: with source = \"rpicam\" \
                     use \"auto\", \"h264\" (the Pi's hardware encoder, passed through) or \
                     \"yu12\" (raw frames peercam encodes)"
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

/// The arguments `[rpicam] extra_args` may not repeat: peercam sets them from the config.
const RPICAM_OWN_ARGS: &[&str] = &[
    "-t",
    "--timeout",
    "-n",
    "--nopreview",
    "--camera",
    "--width",
    "--height",
    "--framerate",
    "--codec",
    "--inline",
    "--intra",
    "-g",
    "--profile",
    "-b",
    "--bitrate",
    "--flush",
    "-o",
    "--output",
    "--rotation",
    "--hflip",
    "--vflip",
    "--list-cameras",
];

/// Most entries in `[rpicam] extra_args`.
const MAX_RPICAM_EXTRA_ARGS: usize = 32;

fn rpicam(raw: RawRpicam, src: Source<'_>) -> Result<RpicamSettings, ConfigError> {
    let mut s = RpicamSettings {
        camera: ranged(src, raw.camera, "[rpicam] camera", (0, 7), false, 0)?,
        rotation: 0,
        hflip: raw.hflip.is_some_and(|v| v.into_inner()),
        vflip: raw.vflip.is_some_and(|v| v.into_inner()),
        extra_args: Vec::new(),
    };
    if let Some(v) = raw.rotation {
        match *v.get_ref() {
            0 => {}
            180 => s.rotation = 180,
            _ => {
                let expected = "expected 0 or 180 (the Pi's camera pipeline flips but cannot \
                                turn by 90 degrees)";
                return Err(src.bad_value(v.span(), "[rpicam] rotation", expected));
            }
        }
    }
    if let Some(args) = raw.extra_args {
        let span = args.span();
        let args = args.into_inner();
        if args.len() > MAX_RPICAM_EXTRA_ARGS {
            let expected = format!("expected at most {MAX_RPICAM_EXTRA_ARGS} arguments");
            return Err(src.bad_value(span, "[rpicam] extra_args", &expected));
        }
        for (i, arg) in args.into_iter().enumerate() {
            let key = format!("[rpicam] extra_args[{i}]");
            let text = arg.get_ref();
            if text.is_empty() || text.len() > 256 || text.chars().any(char::is_control) {
                let expected = "expected an argument of 1 to 256 characters without control \
                                characters, such as \"--denoise\"";
                return Err(src.bad_value(arg.span(), &key, expected));
            }
            let flag = text.split('=').next().unwrap_or_default();
            if RPICAM_OWN_ARGS.contains(&flag) {
                let expected = format!(
                    "{flag} is set by peercam from [video] and [rpicam] (size, rate, codec, \
                     camera, flips); set it there instead"
                );
                return Err(src.bad_value(arg.span(), &key, &expected));
            }
            s.extra_args.push(text.clone());
        }
    }
    Ok(s)
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
    codec_list(value, "[video] codecs", src)
}

/// A list of codec names under `key`: at least one, each known, none twice.
fn codec_list(
    value: toml::Spanned<Vec<toml::Spanned<String>>>,
    key: &str,
    src: Source<'_>,
) -> Result<Vec<VideoCodec>, ConfigError> {
    let span = value.span();
    let names = value.into_inner();
    if names.is_empty() {
        return Err(src.bad_value(span, key, "expected at least one codec: \"h264\", \"av1\""));
    }
    let mut codecs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let codec = match name.get_ref().as_str() {
            "h264" => VideoCodec::H264,
            "av1" => VideoCodec::Av1,
            _ => {
                let key = format!("{key}[{i}]");
                return Err(src.bad_value(name.span(), &key, "expected \"h264\" or \"av1\""));
            }
        };
        if codecs.contains(&codec) {
            let key = format!("{key}[{i}]");
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
    let udp_port = match raw.udp_port {
        None => d.udp_port,
        Some(v) => match u16::try_from(*v.get_ref()) {
            Ok(port) if port == 0 || port >= 1024 => port,
            _ => {
                let expected = "expected a port from 1024 to 65535 (every call on that one UDP \
                                port), or 0 (a port per call from udp_port_min..udp_port_max)";
                return Err(src.bad_value(v.span(), "[webrtc] udp_port", expected));
            }
        },
    };
    let tcp_port = match raw.tcp_port {
        None => d.tcp_port,
        Some(v) => match u16::try_from(*v.get_ref()) {
            Ok(port) if port == 0 || port >= 1024 => port,
            _ => {
                let expected = "expected a port from 1024 to 65535 (ICE over TCP for every \
                                call on that port), or 0 (no ICE over TCP)";
                return Err(src.bad_value(v.span(), "[webrtc] tcp_port", expected));
            }
        },
    };
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
        udp_port,
        tcp_port,
        udp_port_min: min,
        udp_port_max: max,
        ip_addresses,
        nat_1to1_ips,
        resolve_mdns: raw.resolve_mdns.map_or(d.resolve_mdns, |v| v.into_inner()),
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
    let secret = match raw.secret {
        None => None,
        Some(v) => {
            // Named, never quoted: the secret is not for logs.
            let key = format!("[webrtc] ice_servers[{i}].secret");
            let refuse =
                |why: &str| src.error(v.span(), Some(key.clone()), format!("{key}: {why}"));
            if credential.is_some() {
                return Err(refuse(
                    "expected either a secret (time-limited credentials, coturn's \
                     use-auth-secret) or a credential (a fixed password), not both",
                ));
            }
            if !needs_credentials {
                return Err(refuse(
                    "a secret is for TURN servers: expected a turn: or turns: URL in urls",
                ));
            }
            if v.get_ref().is_empty() {
                return Err(refuse(
                    "expected the TURN server's static-auth-secret, not an empty string",
                ));
            }
            Some(v.into_inner())
        }
    };
    if needs_credentials && secret.is_none() && (username.is_none() || credential.is_none()) {
        let key = format!("[webrtc] ice_servers[{i}]");
        return Err(src.bad_value(
            span,
            &key,
            "expected username and credential, or a secret (coturn's static-auth-secret), \
             with a turn: or turns: URL",
        ));
    }
    Ok(IceServer {
        urls: urls
            .into_iter()
            .map(|u| u.into_inner().trim().to_owned())
            .collect(),
        username,
        credential,
        secret,
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

pub(crate) fn limits(raw: RawLimits, src: Source<'_>) -> Result<LimitSettings, ConfigError> {
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
        pending_dials_per_address: ranged(
            src,
            raw.pending_dials_per_address,
            "[limits] pending_dials_per_address",
            (1, 64),
            false,
            d.pending_dials_per_address,
        )?,
        connections_per_address: ranged(
            src,
            raw.connections_per_address,
            "[limits] connections_per_address",
            (1, 4096),
            false,
            d.connections_per_address,
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

pub(crate) fn log_settings(raw: RawLog, src: Source<'_>) -> Result<LogSettings, ConfigError> {
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::*;
    use crate::config::parse_str;
    use crate::config::tests::error_of;

    #[test]
    fn every_value_can_be_set() {
        let text = r#"
[server]
listen = "127.0.0.1:0"
[video]
source = "/dev/video2"
width = 1280
height = 720
fps = 15
codecs = ["av1"]
bitrate_kbps = 2500
min_bitrate_kbps = 300
max_bitrate_kbps = 4000
multi_viewer_floor_kbps = 800
keyframe_interval_s = 5
[audio]
source = "hw:1,0"
channels = 2
bitrate_kbps = 64
[webrtc]
udp_port_min = 0
udp_port_max = 0
ip_addresses = ["127.0.0.1", "::1"]
nat_1to1_ips = ["203.0.113.7", "127.0.0.1/10.0.2.15"]
[[webrtc.ice_servers]]
urls = ["stun:stun.example.org:3478"]
[[webrtc.ice_servers]]
urls = ["turn:turn.example.org", "turns:turn.example.org:5349"]
username = "u"
credential = "p"
[limits]
max_viewers = 64
max_message_bytes = 1024
[log]
level = "DEBUG"
"#;
        let s = parse_str(text, "t.toml").expect("valid config");
        assert_eq!(
            s.server.listen,
            "127.0.0.1:0".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(s.video.source, VideoSource::Device("/dev/video2".into()));
        assert_eq!(
            (s.video.width, s.video.height, s.video.fps),
            (1280, 720, 15)
        );
        assert_eq!(s.video.codecs, vec![VideoCodec::Av1]);
        assert_eq!(
            (s.video.bitrate_kbps, s.video.keyframe_interval_s),
            (2500, 5)
        );
        assert_eq!(
            (
                s.video.min_bitrate_kbps,
                s.video.max_bitrate_kbps,
                s.video.multi_viewer_floor_kbps
            ),
            (300, 4000, 800)
        );
        assert_eq!(
            s.audio,
            AudioSettings {
                source: AudioSource::Alsa("hw:1,0".into()),
                channels: 2,
                bitrate_kbps: 64
            }
        );
        assert_eq!((s.webrtc.udp_port_min, s.webrtc.udp_port_max), (0, 0));
        assert_eq!(
            s.webrtc.ip_addresses,
            vec![
                IpAddr::from([127, 0, 0, 1]),
                "::1".parse::<IpAddr>().expect("ip")
            ]
        );
        assert_eq!(
            s.webrtc.nat_1to1_ips,
            vec![
                NatMapping {
                    external: IpAddr::from([203, 0, 113, 7]),
                    local: None
                },
                NatMapping {
                    external: IpAddr::from([127, 0, 0, 1]),
                    local: Some(IpAddr::from([10, 0, 2, 15]))
                },
            ]
        );
        assert_eq!(s.webrtc.ice_servers.len(), 2);
        assert_eq!(
            s.webrtc.ice_servers[0].urls,
            vec!["stun:stun.example.org:3478".to_owned()]
        );
        assert_eq!(s.webrtc.ice_servers[1].username.as_deref(), Some("u"));
        assert_eq!(s.webrtc.ice_servers[1].credential.as_deref(), Some("p"));
        assert_eq!(
            (s.limits.max_viewers, s.limits.max_message_bytes),
            (64, 1024)
        );
        assert_eq!(s.log.level, log::LevelFilter::Debug);
        let sources = parse_str(
            "[video]\nsource = \"test\"\n[audio]\nsource = \"none\"\n",
            "t.toml",
        )
        .expect("sources");
        assert_eq!(
            (sources.video.source, sources.audio.source),
            (VideoSource::Test, AudioSource::None)
        );
    }

    #[test]
    fn range_errors_name_file_line_column_key_and_range() {
        assert_eq!(
            error_of("[video]\n\nwidth = 641\n"),
            "t.toml:3:9: [video] width = 641: expected an even number from 160 to 3840"
        );
        let cases: &[(&str, &str)] = &[
            (
                "[video]\nwidth = 100",
                "[video] width = 100: expected an even number from 160 to 3840",
            ),
            (
                "[video]\nheight = 2162",
                "[video] height = 2162: expected an even number from 120 to 2160",
            ),
            (
                "[video]\nheight = 241",
                "[video] height = 241: expected an even number from 120 to 2160",
            ),
            (
                "[video]\nfps = 0",
                "[video] fps = 0: expected a number from 1 to 60",
            ),
            (
                "[video]\nfps = 61",
                "[video] fps = 61: expected a number from 1 to 60",
            ),
            (
                "[video]\nbitrate_kbps = 49",
                "[video] bitrate_kbps = 49: expected a number from 50 to 20000",
            ),
            (
                "[video]\nkeyframe_interval_s = 61",
                "[video] keyframe_interval_s = 61: expected a number from 1 to 60",
            ),
            (
                "[audio]\nchannels = 3",
                "[audio] channels = 3: expected a number from 1 to 2",
            ),
            (
                "[audio]\nbitrate_kbps = 511",
                "[audio] bitrate_kbps = 511: expected a number from 6 to 510",
            ),
            (
                "[limits]\nmax_viewers = 0",
                "[limits] max_viewers = 0: expected a number from 1 to 64",
            ),
            (
                "[limits]\nmax_viewers = 65",
                "[limits] max_viewers = 65: expected a number from 1 to 64",
            ),
            (
                "[limits]\nmax_message_bytes = 1023",
                "[limits] max_message_bytes = 1023: expected a number from 1024 to 1048576",
            ),
            (
                "[video]\nwidth = -640",
                "[video] width = -640: expected an even number from 160 to 3840",
            ),
        ];
        for (text, expected) in cases {
            // The value sits on line 2, after "key = ".
            let column = text
                .lines()
                .nth(1)
                .and_then(|line| line.find('='))
                .map_or(0, |eq| eq + 3);
            assert_eq!(error_of(text), format!("t.toml:2:{column}: {expected}"));
        }
    }

    #[test]
    fn bitrate_bounds_are_ordered_and_the_written_key_is_blamed() {
        assert_eq!(
            error_of("[video]\nbitrate_kbps = 3000\nmax_bitrate_kbps = 2500\n"),
            "t.toml:2:16: [video] bitrate_kbps = 3000: expected min_bitrate_kbps (150) <= \
             bitrate_kbps (3000) <= max_bitrate_kbps (2500)"
        );
        // Unwritten bounds and floor make room for a written start bitrate (files from before
        // these keys keep loading).
        let s = parse_str("[video]\nbitrate_kbps = 4000\n", "t.toml").expect("max follows");
        assert_eq!(
            (s.video.min_bitrate_kbps, s.video.max_bitrate_kbps),
            (150, 4000)
        );
        let s = parse_str("[video]\nbitrate_kbps = 100\n", "t.toml").expect("min follows");
        assert_eq!(
            (s.video.min_bitrate_kbps, s.video.max_bitrate_kbps),
            (100, 2500)
        );
        let s = parse_str("[video]\nmin_bitrate_kbps = 600\n", "t.toml").expect("floor follows");
        assert_eq!(s.video.multi_viewer_floor_kbps, 600);
        assert_eq!(
            error_of("[video]\nmax_bitrate_kbps = 800\n"),
            "t.toml:2:20: [video] max_bitrate_kbps = 800: expected min_bitrate_kbps (150) <= \
             bitrate_kbps (1000) <= max_bitrate_kbps (800)"
        );
        assert_eq!(
            error_of("[video]\nmin_bitrate_kbps = 3000\n"),
            "t.toml:2:20: [video] min_bitrate_kbps = 3000: expected min_bitrate_kbps (3000) <= \
             max_bitrate_kbps (2500)"
        );
        assert_eq!(
            error_of("[video]\nmulti_viewer_floor_kbps = 100\n"),
            "t.toml:2:27: [video] multi_viewer_floor_kbps = 100: expected min_bitrate_kbps (150) \
             <= multi_viewer_floor_kbps (100) <= max_bitrate_kbps (2500)"
        );
        assert!(error_of("[video]\nmin_bitrate_kbps = 10\n")
            .starts_with("t.toml:2:20: [video] min_bitrate_kbps = 10: expected a number from 50"));
        let s = parse_str(
            "[video]\nbitrate_kbps = 3000\nmax_bitrate_kbps = 3000\n",
            "t.toml",
        )
        .expect("start at the maximum");
        assert_eq!(
            (s.video.bitrate_kbps, s.video.max_bitrate_kbps),
            (3000, 3000)
        );
    }

    #[test]
    fn udp_port_range_is_checked() {
        assert!(error_of("[webrtc]\nudp_port_min = 80\nudp_port_max = 90\n")
            .starts_with("t.toml:2:16: [webrtc] udp_port_min = 80: expected a port number from 1024 to 65535"));
        // Only one of the pair set to 0: the other keeps its default, which is not 0.
        assert!(error_of("[webrtc]\nudp_port_min = 0\n")
            .starts_with("t.toml:2:16: [webrtc] udp_port_min = 0:"));
        assert_eq!(
            error_of("[webrtc]\nudp_port_min = 60000\n"),
            "t.toml:2:16: [webrtc] udp_port_min = 60000: expected udp_port_min (60000) <= udp_port_max (50100)"
        );
        assert!(error_of("[webrtc]\nudp_port_max = 70000\n").starts_with(
            "t.toml:2:16: [webrtc] udp_port_max = 70000: expected a number from 0 to 65535"
        ));
        let s = parse_str(
            "[webrtc]\nudp_port_min = 40000\nudp_port_max = 40000\n",
            "t.toml",
        )
        .expect("one port");
        assert_eq!(
            (s.webrtc.udp_port_min, s.webrtc.udp_port_max),
            (40000, 40000)
        );
    }

    #[test]
    fn bad_listen_address() {
        assert_eq!(
            error_of("[server]\nlisten = \"localhost:7000\"\n"),
            "t.toml:2:10: [server] listen = \"localhost:7000\": expected an IP address and port such as \
             \"0.0.0.0:7000\" or \"[::]:7000\""
        );
        assert!(error_of("[server]\nlisten = \"0.0.0.0\"\n").contains("[server] listen"));
    }

    #[test]
    fn publish_targets_are_checked_and_default_to_the_video_codecs() {
        let text = "[video]\ncodecs = [\"h264\", \"av1\"]\n\
                    [[publish]]\nurl = \"https://sfu.example.org/whip/cam\"\ntoken = \"s3cret\"\n\
                    [[publish]]\nurl = \"http://192.168.1.9:8889/cam/whip\"\ncodecs = [\"av1\"]\n";
        let s = crate::config::parse_str(text, "t.toml").expect("valid");
        assert_eq!(s.publish.len(), 2);
        assert_eq!(s.publish[0].token.as_deref(), Some("s3cret"));
        assert_eq!(s.publish[0].codecs, [VideoCodec::H264, VideoCodec::Av1]);
        assert_eq!(s.publish[1].codecs, [VideoCodec::Av1]);
        assert!(
            !format!("{:?}", s.publish[0]).contains("s3cret"),
            "the token is not logged"
        );
        for (bad, key) in [
            ("[[publish]]\ntoken = \"x\"\n", "publish[0]"),
            ("[[publish]]\nurl = \"rtsp://x/y\"\n", "publish[0].url"),
            (
                "[[publish]]\nurl = \"https://user:pw@x/y\"\n",
                "publish[0].url",
            ),
            ("[[publish]]\nurl = \"https:///whip\"\n", "publish[0].url"),
            ("[[publish]]\nurl = \"http://x/a b\"\n", "publish[0].url"),
            (
                "[[publish]]\nurl = \"http://x/\"\ntoken = \" x\"\n",
                "publish[0].token",
            ),
            (
                "[[publish]]\nurl = \"http://x/\"\ncodecs = [\"vp8\"]\n",
                "publish[0].codecs[0]",
            ),
            (
                "[[publish]]\nurl = \"http://x/\"\nurls = 1\n",
                "publish[0].urls",
            ),
        ] {
            let error = error_of(bad);
            assert!(error.contains(key), "{bad}: {error}");
        }
        let not_encoded =
            "[video]\ncodecs = [\"h264\"]\n[[publish]]\nurl = \"http://x/\"\ncodecs = [\"av1\"]\n";
        assert!(
            error_of(not_encoded).contains("av1 is not in it"),
            "{}",
            error_of(not_encoded)
        );
        let many = "[[publish]]\nurl = \"http://x/\"\n".repeat(MAX_PUBLISH_TARGETS + 1);
        assert!(error_of(&many).contains("at most 8"), "{}", error_of(&many));
    }

    #[test]
    fn the_shared_ports_are_checked() {
        let d = crate::config::parse_str("", "t.toml").expect("defaults");
        assert_eq!((d.webrtc.udp_port, d.webrtc.tcp_port), (8555, 8555));
        let s = crate::config::parse_str("[webrtc]\nudp_port = 0\ntcp_port = 0\n", "t.toml")
            .expect("valid");
        assert_eq!((s.webrtc.udp_port, s.webrtc.tcp_port), (0, 0));
        for (bad, key) in [
            ("[webrtc]\nudp_port = 80\n", "[webrtc] udp_port"),
            ("[webrtc]\nudp_port = 70000\n", "[webrtc] udp_port"),
            ("[webrtc]\ntcp_port = -1\n", "[webrtc] tcp_port"),
            ("[webrtc]\ntcp_port = 1023\n", "[webrtc] tcp_port"),
        ] {
            let error = error_of(bad);
            assert!(
                error.contains(key) && error.contains("1024 to 65535"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_camera_module_keys_are_checked() {
        let text = "[video]\nsource = \"rpicam\"\nformat = \"h264\"\n\
                    [rpicam]\ncamera = 1\nrotation = 180\nvflip = true\n\
                    extra_args = [\"--denoise\", \"cdn_off\", \"--awb=indoor\"]\n";
        let s = crate::config::parse_str(text, "t.toml").expect("valid");
        assert_eq!(s.video.source, VideoSource::Rpicam);
        assert_eq!(
            s.rpicam,
            RpicamSettings {
                camera: 1,
                rotation: 180,
                hflip: false,
                vflip: true,
                extra_args: vec!["--denoise".into(), "cdn_off".into(), "--awb=indoor".into()],
            }
        );
        assert_eq!(
            crate::config::parse_str("", "t.toml")
                .expect("defaults")
                .rpicam,
            RpicamSettings::default()
        );
        for (bad, says) in [
            (
                "[video]\nsource = \"rpicam\"\nformat = \"mjpeg\"\n",
                "is not something rpicam-vid gives",
            ),
            ("[rpicam]\ncamera = 8\n", "[rpicam] camera"),
            ("[rpicam]\nrotation = 90\n", "cannot turn by 90 degrees"),
            ("[rpicam]\nhflip = 1\n", "[rpicam] hflip"),
            (
                "[rpicam]\nextra_args = [\"--width\", \"100\"]\n",
                "--width is set by peercam",
            ),
            (
                "[rpicam]\nextra_args = [\"-o=/tmp/x\"]\n",
                "-o is set by peercam",
            ),
            ("[rpicam]\nextra_args = [\"\"]\n", "[rpicam] extra_args[0]"),
            (
                "[rpicam]\nextra_args = [\"a\\nb\"]\n",
                "without control characters",
            ),
            ("[rpicam]\ncolour = 1\n", "colour"),
        ] {
            let error = error_of(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
        let many = format!(
            "[rpicam]\nextra_args = [{}]\n",
            vec!["\"--x\""; MAX_RPICAM_EXTRA_ARGS + 1].join(", ")
        );
        assert!(
            error_of(&many).contains("at most 32"),
            "{}",
            error_of(&many)
        );
    }

    #[test]
    fn cors_origins_are_origins() {
        let text = "[server]\ncors_origins = [\"https://Player.example.org\", \
                    \"http://192.168.1.20:8080\", \"http://[fd00::1]:80\"]\n";
        let s = crate::config::parse_str(text, "t.toml").expect("valid");
        assert_eq!(
            s.server.cors_origins,
            [
                "https://player.example.org",
                "http://192.168.1.20:8080",
                "http://[fd00::1]:80"
            ]
        );
        for bad in [
            "*",
            "player.example.org",
            "https://player.example.org/",
            "https://player.example.org:0",
            "https://player.example.org:99999",
            "ftp://x",
            "https://[fd00::1",
            "https://a b",
        ] {
            let text = format!("[server]\ncors_origins = [\"{bad}\"]\n");
            assert!(
                error_of(&text).contains("[server] cors_origins[0]"),
                "{bad}: {}",
                error_of(&text)
            );
        }
    }

    #[test]
    fn camera_name_is_checked() {
        let s =
            crate::config::parse_str("[server]\nname = \"  Küche 2 \"\n", "t.toml").expect("valid");
        assert_eq!(s.server.name.as_deref(), Some("Küche 2"));
        assert_eq!(s.server.camera_name(), "Küche 2");
        let s = crate::config::parse_str("[server]\nname = \"\"\n", "t.toml").expect("valid");
        assert_eq!(s.server.name, None);
        assert!(!s.server.camera_name().is_empty());
        let long = format!("[server]\nname = \"{}\"\n", "x".repeat(MAX_CAMERA_NAME + 1));
        assert!(
            error_of(&long).contains("[server] name"),
            "{}",
            error_of(&long)
        );
        assert!(
            error_of(&long).contains("at most 64"),
            "{}",
            error_of(&long)
        );
        for bad in ["a\\tb", "a\\u001b[31m", "\\u202eevil"] {
            let text = format!("[server]\nname = \"{bad}\"\n");
            assert!(
                error_of(&text).contains("no control characters"),
                "{bad}: {}",
                error_of(&text)
            );
        }
    }

    #[test]
    fn bad_ice_servers() {
        assert_eq!(
            error_of("[[webrtc.ice_servers]]\nurls = [\"http://stun.example.org\"]\n"),
            "t.toml:2:9: [webrtc] ice_servers[0].urls[0] = \"http://stun.example.org\": expected a URL \
             starting with stun:, stuns:, turn: or turns:"
        );
        assert!(error_of("[[webrtc.ice_servers]]\nurls = []\n").starts_with(
            "t.toml:2:8: [webrtc] ice_servers[0].urls = []: expected at least one URL"
        ));
        assert!(error_of("[webrtc]\nice_servers = [{ username = \"u\" }]\n")
            .contains("[webrtc] ice_servers[0] = { username = \"u\" }: expected a urls key"));
        assert!(
            error_of("[[webrtc.ice_servers]]\nurls = [\"turn:t.example.org\"]\n")
                .contains("expected username and credential, or a secret")
        );
        assert!(error_of("[webrtc]\nice_servers = [\"stun:x\"]\n")
            .contains("[webrtc] ice_servers[0] = \"stun:x\""));
    }

    #[test]
    fn a_turn_secret_is_checked_and_never_quoted() {
        let both = error_of(
            "[[webrtc.ice_servers]]\nurls = [\"turn:t.example.org\"]\nusername = \"u\"\n\
             credential = \"p\"\nsecret = \"hunter2-hunter2\"\n",
        );
        assert!(
            both.starts_with(
                "t.toml:5:10: [webrtc] ice_servers[0].secret: expected either a secret"
            ),
            "{both}"
        );
        let stun = error_of(
            "[[webrtc.ice_servers]]\nurls = [\"stun:s.example.org\"]\nsecret = \"hunter2\"\n",
        );
        assert!(stun.contains("a secret is for TURN servers"), "{stun}");
        let empty =
            error_of("[[webrtc.ice_servers]]\nurls = [\"turn:t.example.org\"]\nsecret = \"\"\n");
        assert!(
            empty.contains("static-auth-secret, not an empty string"),
            "{empty}"
        );
        for message in [both, stun, empty] {
            assert!(!message.contains("hunter2"), "{message}");
        }
        let s = parse_str(
            "[[webrtc.ice_servers]]\nurls = [\"turns:t.example.org:5349\"]\nsecret = \"north-secret\"\n",
            "t.toml",
        )
        .expect("valid config");
        assert_eq!(
            s.webrtc.ice_servers[0].secret.as_deref(),
            Some("north-secret")
        );
        assert_eq!(s.webrtc.ice_servers[0].username, None);
    }

    #[test]
    fn codec_list_errors() {
        assert_eq!(
            error_of("[video]\ncodecs = [\"h264\", \"av1\", \"h264\"]\n"),
            "t.toml:2:26: [video] codecs[2] = \"h264\": duplicate codec; list each codec once"
        );
        assert_eq!(
            error_of("[video]\ncodecs = [\"vp8\"]\n"),
            "t.toml:2:11: [video] codecs[0] = \"vp8\": expected \"h264\" or \"av1\""
        );
        assert!(error_of("[video]\ncodecs = []\n")
            .starts_with("t.toml:2:10: [video] codecs = []: expected at least one codec"));
    }

    #[test]
    fn bad_sources_addresses_and_level() {
        assert!(error_of("[video]\nsource = \"video0\"\n")
            .starts_with("t.toml:2:10: [video] source = \"video0\": expected"));
        assert!(error_of("[audio]\nsource = \"\"\n")
            .starts_with("t.toml:2:10: [audio] source = \"\": expected"));
        assert!(
            error_of("[webrtc]\nip_addresses = [\"127.0.0.1\", \"lan\"]\n").starts_with(
                "t.toml:2:30: [webrtc] ip_addresses[1] = \"lan\": expected an IP address"
            )
        );
        assert!(
            error_of("[webrtc]\nnat_1to1_ips = [\"1.2.3.4/::1\"]\n").starts_with(
                "t.toml:2:17: [webrtc] nat_1to1_ips[0] = \"1.2.3.4/::1\": expected \"EXTERNAL\""
            )
        );
        assert!(error_of("[webrtc]\nnat_1to1_ips = [\"router\"]\n")
            .starts_with("t.toml:2:17: [webrtc] nat_1to1_ips[0] = \"router\": expected"));
        assert!(error_of("[log]\nlevel = \"loud\"\n")
            .starts_with("t.toml:2:9: [log] level = \"loud\": expected one of"));
    }

    #[test]
    fn relay_link_keys() {
        assert_eq!(
            parse_str("[relay]\nurl = \"\"\n", "t.toml")
                .expect("off")
                .relay,
            None
        );
        let s = parse_str(
            "[relay]\nurl = \"wss://relay.example.org:8443/link\"\n\
             token = \"0123456789abcdef\"\nname = \"shop\"\nca_file = \"/etc/peercam/ca.pem\"\n",
            "t.toml",
        )
        .expect("valid")
        .relay
        .expect("on");
        assert_eq!(
            (s.url.tls, s.url.host.as_str(), s.url.port, s.name.as_str()),
            (true, "relay.example.org", 8443, "shop")
        );
        assert_eq!(
            s.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/peercam/ca.pem"))
        );
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "the token is secret"
        );
        // Default port and name; ws:// to loopback only.
        let s = parse_str(
            "[relay]\nurl = \"ws://[::1]/link\"\ntoken = \"0123456789abcdef\"\n",
            "t.toml",
        )
        .expect("loopback ws")
        .relay
        .expect("on");
        assert_eq!((s.url.host.as_str(), s.url.port), ("::1", 80));
        assert!(crate::config::is_device_name(&s.name), "{}", s.name);
        let message =
            error_of("[relay]\nurl = \"ws://relay.example.org/\"\ntoken = \"0123456789abcdef\"\n");
        assert!(
            message.starts_with("t.toml:2:7: [relay] url = \"ws://relay.example.org/\": expected wss://: ws:// would send the token")
                && message.contains("only to a loopback host"),
            "{message}"
        );
        for bad in [
            "https://relay/",
            "wss://",
            "wss://user:pw@relay/",
            "wss://relay:0/",
        ] {
            let message = error_of(&format!(
                "[relay]\nurl = \"{bad}\"\ntoken = \"0123456789abcdef\"\n"
            ));
            assert!(
                message.starts_with("t.toml:2:7: [relay] url = "),
                "{bad}: {message}"
            );
        }
        let message = error_of("[relay]\nurl = \"wss://relay/\"\n");
        assert!(message.contains("token"), "{message}");
        let message = error_of("[relay]\nurl = \"wss://relay/\"\ntoken = \"short\"\n");
        assert!(
            message.starts_with("t.toml:3:9: [relay] token = \"short\": expected")
                && message.contains("at least 16"),
            "{message}"
        );
        let message = error_of(
            "[relay]\nurl = \"wss://relay/\"\ntoken = \"0123456789abcdef\"\nname = \"-Shop\"\n",
        );
        assert!(
            message.starts_with("t.toml:4:8: [relay] name = \"-Shop\": expected 1 to 32"),
            "{message}"
        );
        let message = error_of(
            "[relay]\nurl = \"wss://relay/\"\ntoken = \"0123456789abcdef\"\nca_file = \"ca.pem\"\n",
        );
        assert!(
            message.starts_with("t.toml:4:11: [relay] ca_file"),
            "{message}"
        );
        assert!(error_of("[relay]\nport = 1\n").contains("unknown key [relay] port"));
    }
}
