//! Configuration: the TOML file (`/etc/peercam/peercam.toml` by default, every key documented
//! in `config/peercam.toml`) and the validated [`Settings`] built from it.
//!
//! Two stages, as in ripgrep: [`file`] mirrors the file (serde, unknown keys rejected, every
//! value spanned), [`validate`] checks each value and resolves defaults into the types of
//! [`settings`]. Every error names the file, line, column, key and what was expected, e.g.
//! `peercam.toml:12:9: [video] width = 641: expected an even number from 160 to 3840`.
//!
//! Where to look:
//! - how a key is checked (its range, its message): `validate.rs`, one function per table;
//!   search it for the key as errors write it, e.g. `"[video] width"`;
//! - what a key means and its default: the field and `Default` impl in `settings.rs`, and
//!   `config/peercam.toml`;
//! - which keys exist: the `Raw*` structs and `SCHEMA` in `file.rs`;
//! - how errors point at the file: `error.rs`.
//!
//! A new key touches all of `file.rs`, `validate.rs`, `settings.rs` and
//! `config/peercam.toml` (a test checks that the sample lists every key). The tests of the
//! checks are in `validate.rs`; the tests here load whole files (defaults, the sample,
//! unknown keys, types, syntax).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod error;
mod file;
pub mod relay;
mod settings;
mod validate;

pub use error::{ConfigError, Invalid};
pub use settings::{
    is_device_name, is_relay_token, AudioSettings, AudioSource, IceServer, LimitSettings,
    LogSettings, NatMapping, Password, PublishTarget, RelaySettings, RelayUrl, RpicamSettings,
    ServerSettings, Settings, TlsMode, VideoFormat, VideoSettings, VideoSource, WebrtcSettings,
    MAX_CAMERA_NAME, MAX_DEVICE_NAME, MAX_PUBLISH_TARGETS, MIN_PASSWORD_CHARS, MIN_RELAY_TOKEN,
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
    let text = read_file(path)?;
    let settings = parse_str(&text, &path.display().to_string())?;
    Ok(Loaded {
        settings,
        origin: ConfigOrigin::File(path.to_path_buf()),
    })
}

/// The text of config file `path`; an error names the file and says what to do when
/// peercam may not read it.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
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
    validate::validate(raw, src)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../config/peercam.toml");

    /// Parses `text` and returns the error message (the test fails if it parses). Also used
    /// by the tests of `validate.rs`.
    pub(super) fn error_of(text: &str) -> String {
        match parse_str(text, "t.toml") {
            Ok(settings) => panic!("expected an error for {text:?}, got {settings:?}"),
            Err(e) => e.to_string(),
        }
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
            let fields = match &table.shape {
                file::Shape::Table(fields) => fields,
                // No entries by default: the sample shows one, commented out.
                file::Shape::TableArray(fields) => {
                    assert!(SAMPLE.contains(&format!("# [[{}]]\n", table.name)));
                    for field in *fields {
                        assert!(
                            SAMPLE.contains(&format!("# {} = ", field.name)),
                            "sample file lacks [[{}]] {}",
                            table.name,
                            field.name
                        );
                    }
                    continue;
                }
                file::Shape::Value => panic!("{} is not a table", table.name),
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
            "t.toml:4:1: unknown key [webrtc] ice_servers[0].user; expected one of: urls, username, credential, secret"
        );
    }

    #[test]
    fn unknown_key_at_top_level_lists_the_tables() {
        let expected = "unknown key colour; expected one of the tables: [server], [video], [audio], [webrtc], [limits], [log], [rpicam], [[publish]], [relay]";
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
