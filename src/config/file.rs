//! The config file as written: serde structs that mirror the TOML (every value optional and
//! spanned, so validation can point at it), and a structural check of the parsed document
//! that rejects unknown keys and lists the known ones.
//!
//! The order of work is: parse the TOML into a spanned document ([`DeTable`]), check its
//! shape against [`SCHEMA`] (unknown keys, tables where tables belong), deserialize the same
//! document into [`RawConfig`] (type errors), then validate values in `validate.rs`.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, Source};

/// A value that may be absent from the file (then the built-in default applies), with the
/// byte span of the value as written.
pub(crate) type Value<T> = Option<Spanned<T>>;

/// The whole file. Absent tables and keys take the built-in defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub server: RawServer,
    pub video: RawVideo,
    pub audio: RawAudio,
    pub webrtc: RawWebrtc,
    pub limits: RawLimits,
    pub log: RawLog,
    pub rpicam: RawRpicam,
    pub publish: Value<Vec<Spanned<RawPublish>>>,
    pub relay: RawRelay,
}

/// `[relay]`: the device's link to `peercam relay`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRelay {
    pub url: Value<String>,
    pub token: Value<String>,
    pub name: Value<String>,
    pub ca_file: Value<String>,
}

/// One `[[publish]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPublish {
    pub url: Value<String>,
    pub token: Value<String>,
    pub codecs: Value<Vec<Spanned<String>>>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub listen: Value<String>,
    pub password: Value<String>,
    /// `"off"`, `"self-signed"` or a table `{ cert, key }`: read as any TOML value and
    /// checked in `validate.rs`, so each wrong shape gets its own message.
    pub tls: Value<toml::Value>,
    pub state_dir: Value<String>,
    pub hosts: Value<Vec<Spanned<String>>>,
    pub trust_forwarded_host: Value<bool>,
    pub cors_origins: Value<Vec<Spanned<String>>>,
    pub name: Value<String>,
}

/// `[video]`. Integers are read as `i64` so that a negative or huge number gets a range
/// message naming the allowed range rather than a type error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawVideo {
    pub source: Value<String>,
    pub format: Value<String>,
    pub width: Value<i64>,
    pub height: Value<i64>,
    pub fps: Value<i64>,
    pub codecs: Value<Vec<Spanned<String>>>,
    pub bitrate_kbps: Value<i64>,
    pub min_bitrate_kbps: Value<i64>,
    pub max_bitrate_kbps: Value<i64>,
    pub multi_viewer_floor_kbps: Value<i64>,
    pub keyframe_interval_s: Value<i64>,
}

/// `[rpicam]`: the Camera Module through rpicam-vid.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRpicam {
    pub camera: Value<i64>,
    pub rotation: Value<i64>,
    pub hflip: Value<bool>,
    pub vflip: Value<bool>,
    pub extra_args: Value<Vec<Spanned<String>>>,
}

/// `[audio]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAudio {
    pub source: Value<String>,
    pub channels: Value<i64>,
    pub bitrate_kbps: Value<i64>,
}

/// `[webrtc]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawWebrtc {
    pub ice_servers: Value<Vec<Spanned<RawIceServer>>>,
    pub udp_port: Value<i64>,
    pub tcp_port: Value<i64>,
    pub udp_port_min: Value<i64>,
    pub udp_port_max: Value<i64>,
    pub ip_addresses: Value<Vec<Spanned<String>>>,
    pub nat_1to1_ips: Value<Vec<Spanned<String>>>,
    pub resolve_mdns: Value<bool>,
}

/// One `[[webrtc.ice_servers]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawIceServer {
    pub urls: Value<Vec<Spanned<String>>>,
    pub username: Value<String>,
    pub credential: Value<String>,
    pub secret: Value<String>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    pub max_viewers: Value<i64>,
    pub max_message_bytes: Value<i64>,
    pub max_connections: Value<i64>,
    pub max_pending_dials: Value<i64>,
    pub pending_dials_per_address: Value<i64>,
    pub connections_per_address: Value<i64>,
    pub dials_per_minute: Value<i64>,
    pub login_failures_per_minute: Value<i64>,
    pub ice_timeout_s: Value<i64>,
    pub idle_timeout_s: Value<i64>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub level: Value<String>,
}

/// What a key holds, for the structural check.
#[derive(Debug)]
pub(crate) enum Shape {
    /// A plain value (string, number, array of plain values); its type is checked by serde.
    Value,
    /// A table with these keys.
    Table(&'static [Field]),
    /// An array of tables (`[[a.b]]` sections or an inline array of inline tables).
    TableArray(&'static [Field]),
}

/// A known key and what it holds. Must match the field names of the `Raw*` structs (the
/// sample-file test checks that every one is accepted).
#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub shape: Shape,
}

pub(crate) const fn value(name: &'static str) -> Field {
    Field {
        name,
        shape: Shape::Value,
    }
}

const SERVER: &[Field] = &[
    value("listen"),
    value("password"),
    value("tls"),
    value("state_dir"),
    value("hosts"),
    value("trust_forwarded_host"),
    value("cors_origins"),
    value("name"),
];
const VIDEO: &[Field] = &[
    value("source"),
    value("format"),
    value("width"),
    value("height"),
    value("fps"),
    value("codecs"),
    value("bitrate_kbps"),
    value("min_bitrate_kbps"),
    value("max_bitrate_kbps"),
    value("multi_viewer_floor_kbps"),
    value("keyframe_interval_s"),
];
const AUDIO: &[Field] = &[value("source"), value("channels"), value("bitrate_kbps")];
const ICE_SERVER: &[Field] = &[
    value("urls"),
    value("username"),
    value("credential"),
    value("secret"),
];
const WEBRTC: &[Field] = &[
    Field {
        name: "ice_servers",
        shape: Shape::TableArray(ICE_SERVER),
    },
    value("udp_port"),
    value("tcp_port"),
    value("udp_port_min"),
    value("udp_port_max"),
    value("ip_addresses"),
    value("nat_1to1_ips"),
    value("resolve_mdns"),
];
const LIMITS: &[Field] = &[
    value("max_viewers"),
    value("max_message_bytes"),
    value("max_connections"),
    value("max_pending_dials"),
    value("pending_dials_per_address"),
    value("connections_per_address"),
    value("dials_per_minute"),
    value("login_failures_per_minute"),
    value("ice_timeout_s"),
    value("idle_timeout_s"),
];
const LOG: &[Field] = &[value("level")];
const RPICAM: &[Field] = &[
    value("camera"),
    value("rotation"),
    value("hflip"),
    value("vflip"),
    value("extra_args"),
];
const PUBLISH: &[Field] = &[value("url"), value("token"), value("codecs")];
const RELAY: &[Field] = &[
    value("url"),
    value("token"),
    value("name"),
    value("ca_file"),
];

/// Every table and key the file may contain.
pub(crate) const SCHEMA: &[Field] = &[
    Field {
        name: "server",
        shape: Shape::Table(SERVER),
    },
    Field {
        name: "video",
        shape: Shape::Table(VIDEO),
    },
    Field {
        name: "audio",
        shape: Shape::Table(AUDIO),
    },
    Field {
        name: "webrtc",
        shape: Shape::Table(WEBRTC),
    },
    Field {
        name: "limits",
        shape: Shape::Table(LIMITS),
    },
    Field {
        name: "log",
        shape: Shape::Table(LOG),
    },
    Field {
        name: "rpicam",
        shape: Shape::Table(RPICAM),
    },
    Field {
        name: "publish",
        shape: Shape::TableArray(PUBLISH),
    },
    Field {
        name: "relay",
        shape: Shape::Table(RELAY),
    },
];

/// One step in a key path: a key or an array index.
#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Renders a key path as users see it: `[video] width`, `[webrtc] ice_servers[0].urls[1]`,
/// or a bare top-level name such as `video`.
fn render_key(path: &[Segment]) -> String {
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        match (i, segment) {
            // An array of tables at the top (`[[publish]]`): `publish[0].url`.
            (0, Segment::Key(k)) if matches!(path.get(1), Some(Segment::Index(_))) => {
                out.push_str(k)
            }
            (0, Segment::Key(k)) if path.len() > 1 => out.push_str(&format!("[{k}] ")),
            (1, Segment::Key(k)) | (0, Segment::Key(k)) => out.push_str(k),
            (_, Segment::Key(k)) => out.push_str(&format!(".{k}")),
            (_, Segment::Index(n)) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// Where each key of the document is, so that a serde error (which only has a byte span)
/// can name the key it concerns.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_span: Option<Range<usize>>,
    value_span: Range<usize>,
}

impl KeyIndex {
    /// The innermost key whose key or value covers byte `at`, and its value span.
    fn key_at(&self, at: usize) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                e.value_span.contains(&at) || e.key_span.as_ref().is_some_and(|k| k.contains(&at))
            })
            .min_by_key(|e| e.value_span.len())
    }

    /// Turns a deserialization (type) error into a located error naming the key.
    pub(crate) fn type_error(&self, err: &toml::de::Error, src: Source<'_>) -> ConfigError {
        let span = err.span().unwrap_or(0..0);
        let message = readable_serde_message(err.message());
        match self.key_at(span.start) {
            Some(entry) => {
                let written = src.quote(entry.value_span.clone());
                let text = format!("{} = {written}: {message}", entry.key);
                src.error(span, Some(entry.key.clone()), text)
            }
            None => src.error(span, None, message),
        }
    }
}

/// Replaces Rust type names in serde's messages with words a user knows.
fn readable_serde_message(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    [
        ("expected i64", "expected an integer"),
        ("expected a string", "expected a string in quotes"),
        (
            "expected a sequence",
            "expected an array such as [\"a\", \"b\"]",
        ),
    ]
    .iter()
    .fold(message, |m, (from, to)| m.replace(from, to))
}

/// A TOML syntax error (from parsing, before any key is known).
pub(crate) fn syntax_error(err: &toml::de::Error, src: Source<'_>) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let message = err.message().trim().replace('\n', "; ");
    src.error(span, None, format!("invalid TOML: {message}"))
}

/// Checks the document against [`SCHEMA`]: every key known, tables where tables belong.
/// Returns where every key is, for naming keys in later errors.
pub(crate) fn check_structure(
    root: &DeTable<'_>,
    src: Source<'_>,
) -> Result<KeyIndex, ConfigError> {
    check_structure_of(root, SCHEMA, src)
}

/// [`check_structure`] against another file's `schema` (the relay's).
pub(crate) fn check_structure_of(
    root: &DeTable<'_>,
    schema: &[Field],
    src: Source<'_>,
) -> Result<KeyIndex, ConfigError> {
    let mut index = KeyIndex::default();
    walk_table(root, schema, &mut Vec::new(), src, &mut index)?;
    Ok(index)
}

fn walk_table(
    table: &DeTable<'_>,
    fields: &[Field],
    path: &mut Vec<Segment>,
    src: Source<'_>,
    index: &mut KeyIndex,
) -> Result<(), ConfigError> {
    // Report problems in the order they appear in the file.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let name: &str = key.get_ref();
        path.push(Segment::Key(name.to_owned()));
        let Some(field) = fields.iter().find(|f| f.name == name) else {
            return Err(unknown_key(key.span(), path, fields, src));
        };
        let rendered = render_key(path);
        index.entries.push(Entry {
            key: rendered.clone(),
            key_span: Some(key.span()),
            value_span: value.span(),
        });
        match (&field.shape, value.get_ref()) {
            (Shape::Value, DeValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Segment::Index(i));
                    index.entries.push(Entry {
                        key: render_key(path),
                        key_span: None,
                        value_span: item.span(),
                    });
                    path.pop();
                }
            }
            (Shape::Value, _) => {}
            (Shape::Table(sub), DeValue::Table(t)) => walk_table(t, sub, path, src, index)?,
            (Shape::Table(_), _) => {
                let expected = format!("expected a table (a [{rendered}] section)");
                return Err(src.bad_value(value.span(), &rendered, &expected));
            }
            (Shape::TableArray(sub), DeValue::Array(items)) => {
                walk_table_array(items, sub, path, src, index)?
            }
            (Shape::TableArray(_), _) => {
                let expected =
                    "expected an array of tables, such as [[webrtc.ice_servers]] sections";
                return Err(src.bad_value(value.span(), &rendered, expected));
            }
        }
        path.pop();
    }
    Ok(())
}

fn walk_table_array(
    items: &[Spanned<DeValue<'_>>],
    fields: &[Field],
    path: &mut Vec<Segment>,
    src: Source<'_>,
    index: &mut KeyIndex,
) -> Result<(), ConfigError> {
    for (i, item) in items.iter().enumerate() {
        path.push(Segment::Index(i));
        let rendered = render_key(path);
        index.entries.push(Entry {
            key: rendered.clone(),
            key_span: None,
            value_span: item.span(),
        });
        match item.get_ref() {
            DeValue::Table(t) => walk_table(t, fields, path, src, index)?,
            _ => {
                let names: Vec<_> = fields.iter().map(|f| f.name).collect();
                let expected = format!("expected a table with the keys {}", names.join(", "));
                return Err(src.bad_value(item.span(), &rendered, &expected));
            }
        }
        path.pop();
    }
    Ok(())
}

fn unknown_key(
    span: Range<usize>,
    path: &[Segment],
    fields: &[Field],
    src: Source<'_>,
) -> ConfigError {
    let key = render_key(path);
    let message = if path.len() == 1 {
        let tables: Vec<_> = fields
            .iter()
            .map(|f| match f.shape {
                Shape::TableArray(_) => format!("[[{}]]", f.name),
                _ => format!("[{}]", f.name),
            })
            .collect();
        format!(
            "unknown key {key}; expected one of the tables: {}",
            tables.join(", ")
        )
    } else {
        let names: Vec<_> = fields.iter().map(|f| f.name).collect();
        format!("unknown key {key}; expected one of: {}", names.join(", "))
    };
    src.error(span, Some(key), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&str]) -> Vec<Segment> {
        parts
            .iter()
            .map(|p| {
                p.parse::<usize>()
                    .map_or_else(|_| Segment::Key((*p).to_owned()), Segment::Index)
            })
            .collect()
    }

    #[test]
    fn keys_render_as_table_and_name() {
        assert_eq!(render_key(&key(&["video"])), "video");
        assert_eq!(render_key(&key(&["video", "width"])), "[video] width");
        assert_eq!(
            render_key(&key(&["video", "codecs", "1"])),
            "[video] codecs[1]"
        );
        assert_eq!(
            render_key(&key(&["webrtc", "ice_servers", "0", "urls", "2"])),
            "[webrtc] ice_servers[0].urls[2]"
        );
    }
}
