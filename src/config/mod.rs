//! Configuration: the TOML file (`/etc/peercam/peercam.toml` by default, every key documented
//! in `config/peercam.toml`) and the validated [`Settings`] built from it.
//!
//! Two stages, as in ripgrep: [`file`] mirrors the file (serde, unknown keys rejected, every
//! value spanned), [`settings`] checks ranges and resolves defaults. Every error names the
//! file, line, column, key and what was expected, e.g.
//! `peercam.toml:12:9: [video] width = 641: expected an even number from 160 to 3840`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod error;
mod file;
mod settings;

pub use error::{ConfigError, Invalid};
pub use settings::{
    AudioSettings, AudioSource, IceServer, LimitSettings, LogSettings, NatMapping, Password,
    ServerSettings, Settings, TlsMode, VideoFormat, VideoSettings, VideoSource, WebrtcSettings,
    MIN_PASSWORD_CHARS,
};

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/peercam/peercam.toml";

/// Where the settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// Read from this file.
    File(PathBuf),
    /// No file: the built-in defaults ([`Settings::default`]).
    BuiltInDefaults,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(path) => write!(f, "{}", path.display()),
            ConfigOrigin::BuiltInDefaults => f.write_str("built-in defaults"),
        }
    }
}

/// Settings and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The validated settings.
    pub settings: Settings,
    /// The file they were read from, or the built-in defaults.
    pub origin: ConfigOrigin,
}

/// Loads the settings. `Some(path)`: that file, which must exist. `None`: [`DEFAULT_PATH`]
/// when it exists, else the built-in defaults.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_with_default(path, Path::new(DEFAULT_PATH))
}

fn load_with_default(path: Option<&Path>, default_path: &Path) -> Result<Loaded, ConfigError> {
    let path = match path {
        Some(path) => path,
        // A default file that exists but cannot be read is an error, not a silent fallback.
        None if default_path.exists() => default_path,
        None => {
            return Ok(Loaded {
                settings: Settings::default(),
                origin: ConfigOrigin::BuiltInDefaults,
            })
        }
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let settings = parse_str(&text, &path.display().to_string())?;
    Ok(Loaded {
        settings,
        origin: ConfigOrigin::File(path.to_path_buf()),
    })
}

/// Parses and validates config text; `file_name` is used in error messages.
pub fn parse_str(text: &str, file_name: &str) -> Result<Settings, ConfigError> {
    let src = error::Source {
        text,
        file: file_name,
    };
    let root = toml::de::DeTable::parse(text).map_err(|e| file::syntax_error(&e, src))?;
    let index = file::check_structure(root.get_ref(), src)?;
    let raw = file::RawConfig::deserialize(toml::de::Deserializer::from(root))
        .map_err(|e| index.type_error(&e, src))?;
    settings::validate(raw, src)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use super::*;
    use crate::media::VideoCodec;

    const SAMPLE: &str = include_str!("../../config/peercam.toml");

    /// Parses `text` and returns the error message (the test fails if it parses).
    fn error_of(text: &str) -> String {
        match parse_str(text, "t.toml") {
            Ok(settings) => panic!("expected an error for {text:?}, got {settings:?}"),
            Err(e) => e.to_string(),
        }
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

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(
            parse_str("", "t.toml").expect("empty file"),
            Settings::default()
        );
        assert_eq!(
            parse_str("[video]\n[audio]\n", "t.toml").expect("empty tables"),
            Settings::default()
        );
    }

    #[test]
    fn sample_file_equals_defaults() {
        let parsed = parse_str(SAMPLE, "config/peercam.toml").expect("sample config parses");
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn sample_file_lists_every_known_key() {
        let root = toml::de::DeTable::parse(SAMPLE).expect("sample parses");
        for table in file::SCHEMA {
            let file::Shape::Table(fields) = &table.shape else {
                panic!("{} is not a table", table.name)
            };
            let Some(toml::de::DeValue::Table(section)) =
                root.get_ref().get(table.name).map(|v| v.get_ref())
            else {
                panic!("sample file has no [{}]", table.name)
            };
            for field in *fields {
                assert!(
                    section.get(field.name).is_some(),
                    "sample file lacks [{}] {}",
                    table.name,
                    field.name
                );
            }
        }
    }

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
    fn unknown_key_in_a_table_lists_the_known_keys() {
        assert_eq!(
            error_of("[server]\n[video]\ncolour = \"red\"\n"),
            "t.toml:3:1: unknown key [video] colour; expected one of: source, format, width, height, fps, codecs, \
             bitrate_kbps, min_bitrate_kbps, max_bitrate_kbps, multi_viewer_floor_kbps, \
             keyframe_interval_s"
        );
        let message =
            error_of("[webrtc]\n[[webrtc.ice_servers]]\nurls = [\"stun:a\"]\nuser = \"x\"\n");
        assert_eq!(
            message,
            "t.toml:4:1: unknown key [webrtc] ice_servers[0].user; expected one of: urls, username, credential"
        );
    }

    #[test]
    fn unknown_key_at_top_level_lists_the_tables() {
        let expected = "unknown key colour; expected one of the tables: [server], [video], [audio], [webrtc], [limits], [log]";
        assert_eq!(error_of("colour = 1\n"), format!("t.toml:1:1: {expected}"));
        assert_eq!(
            error_of("[log]\nlevel = \"info\"\n[colour]\n"),
            format!("t.toml:3:2: {expected}")
        );
    }

    #[test]
    fn wrong_type_names_key_and_type() {
        let message = error_of("[video]\nwidth = \"640\"\n");
        assert!(
            message.starts_with("t.toml:2:9: [video] width = \"640\": invalid type: string"),
            "{message}"
        );
        assert!(message.contains("expected an integer"), "{message}");
        let message = error_of("[video]\ncodecs = \"h264\"\n");
        assert!(
            message.starts_with("t.toml:2:10: [video] codecs = \"h264\": invalid type"),
            "{message}"
        );
        let message = error_of("video = 5\n");
        assert_eq!(
            message,
            "t.toml:1:9: video = 5: expected a table (a [video] section)"
        );
        let message = error_of("[video]\ncodecs = [\"h264\", 5]\n");
        assert!(message.starts_with("t.toml:2:"), "{message}");
        assert!(message.contains("[video] codecs"), "{message}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let message = error_of("[video]\nwidth = 640\nheight = \n");
        assert!(
            message.starts_with("t.toml:3:10: invalid TOML: "),
            "{message}"
        );
        let message = error_of("[video\n");
        assert!(
            message.starts_with("t.toml:1:7: invalid TOML: "),
            "{message}"
        );
        let message = error_of("[video]\nwidth = 640\nwidth = 320\n");
        assert!(
            message.starts_with("t.toml:3:1: invalid TOML: "),
            "{message}"
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
                .contains("expected username and credential with a turn: or turns: URL")
        );
        assert!(error_of("[webrtc]\nice_servers = [\"stun:x\"]\n")
            .contains("[webrtc] ice_servers[0] = \"stun:x\""));
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
    fn load_uses_the_default_path_only_when_it_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default_path = dir.path().join("peercam.toml");
        let loaded = load_with_default(None, &default_path).expect("no file: defaults");
        assert_eq!(
            loaded,
            Loaded {
                settings: Settings::default(),
                origin: ConfigOrigin::BuiltInDefaults
            }
        );
        assert_eq!(loaded.origin.to_string(), "built-in defaults");

        std::fs::write(&default_path, "[video]\nfps = 10\n").expect("write");
        let loaded = load_with_default(None, &default_path).expect("default file");
        assert_eq!(loaded.settings.video.fps, 10);
        assert_eq!(loaded.origin, ConfigOrigin::File(default_path.clone()));
        assert_eq!(
            loaded.origin.to_string(),
            default_path.display().to_string()
        );

        let missing = dir.path().join("missing.toml");
        let err = load_with_default(Some(&missing), &default_path)
            .expect_err("an explicit path must exist");
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err
            .to_string()
            .starts_with(&format!("cannot read config file {}:", missing.display())));

        std::fs::write(&default_path, "[video]\nfps = 100\n").expect("write");
        let err = load_with_default(None, &default_path).expect_err("bad default file");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2:7: [video] fps = 100: expected a number from 1 to 60",
                default_path.display()
            )
        );
    }
}
