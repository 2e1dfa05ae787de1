//! The relay's own config file (`peercam relay --config`, default
//! `/etc/peercam/relay.toml`; every key in `config/relay.toml`): `[relay_server]` (the
//! device's `[server]` keys that apply, and the devices allowed in), `[limits]` (the device's
//! keys that apply, plus `browsers_per_device`) and `[log]`. Read and checked like the
//! device's file: unknown keys refused, errors naming file, line, column and key.

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Source};
use super::file::{self, value, Field, RawLimits, RawLog, RawServer, Shape, Value};
use super::settings::{
    is_device_name, is_relay_token, LimitSettings, LogSettings, ServerSettings, MIN_RELAY_TOKEN,
};
use super::validate;

/// The file read when `peercam relay` gets no `--config`.
pub const DEFAULT_RELAY_PATH: &str = "/etc/peercam/relay.toml";
/// The relay's port when `[relay_server] listen` is not set.
pub const DEFAULT_RELAY_LISTEN: &str = "0.0.0.0:8443";
/// At most this many `[[relay_server.devices]]`.
pub const MAX_DEVICES: usize = 1024;

/// Everything `peercam relay` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayServerSettings {
    /// `listen`, `password`, `tls`, `state_dir`, `hosts` of `[relay_server]`, in the device's
    /// type so the login, TLS and host checks are the device's.
    pub server: ServerSettings,
    /// The devices that may register.
    pub devices: Vec<RelayDevice>,
    /// `[limits]`: the device's keys that apply to the relay.
    pub limits: LimitSettings,
    /// Browsers one device may have connected through the relay at once.
    pub browsers_per_device: usize,
    /// `[log]`.
    pub log: LogSettings,
}

/// One `[[relay_server.devices]]` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayDevice {
    /// The name browsers dial.
    pub name: String,
    /// The secret the device presents.
    pub token: String,
}

impl std::fmt::Debug for RelayDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayDevice")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRelayFile {
    relay_server: RawRelayServer,
    limits: RawRelayLimits,
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRelayServer {
    listen: Value<String>,
    password: Value<String>,
    tls: Value<toml::Value>,
    state_dir: Value<String>,
    hosts: Value<Vec<Spanned<String>>>,
    devices: Value<Vec<Spanned<RawDevice>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDevice {
    name: Value<String>,
    token: Value<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRelayLimits {
    max_message_bytes: Value<i64>,
    max_connections: Value<i64>,
    connections_per_address: Value<i64>,
    dials_per_minute: Value<i64>,
    login_failures_per_minute: Value<i64>,
    browsers_per_device: Value<i64>,
}

const DEVICE: &[Field] = &[value("name"), value("token")];
const RELAY_SERVER: &[Field] = &[
    value("listen"),
    value("password"),
    value("tls"),
    value("state_dir"),
    value("hosts"),
    Field {
        name: "devices",
        shape: Shape::TableArray(DEVICE),
    },
];
const LIMITS: &[Field] = &[
    value("max_message_bytes"),
    value("max_connections"),
    value("connections_per_address"),
    value("dials_per_minute"),
    value("login_failures_per_minute"),
    value("browsers_per_device"),
];
const LOG: &[Field] = &[value("level")];

/// Every table and key of the relay's file.
const SCHEMA: &[Field] = &[
    Field {
        name: "relay_server",
        shape: Shape::Table(RELAY_SERVER),
    },
    Field {
        name: "limits",
        shape: Shape::Table(LIMITS),
    },
    Field {
        name: "log",
        shape: Shape::Table(LOG),
    },
];

/// Reads and checks the relay's file at `path`.
pub fn load_relay(path: &std::path::Path) -> Result<RelayServerSettings, ConfigError> {
    let text = super::read_file(path)?;
    parse_relay_str(&text, &path.display().to_string())
}

/// Parses and checks the relay's config text; `file_name` is used in error messages.
pub fn parse_relay_str(text: &str, file_name: &str) -> Result<RelayServerSettings, ConfigError> {
    let src = Source {
        text,
        file: file_name,
    };
    let root = toml::de::DeTable::parse(text).map_err(|e| file::syntax_error(&e, src))?;
    let index = file::check_structure_of(root.get_ref(), SCHEMA, src)?;
    let raw = RawRelayFile::deserialize(toml::de::Deserializer::from(root))
        .map_err(|e| index.type_error(&e, src))?;
    validate_relay(raw, src)
}

fn validate_relay(raw: RawRelayFile, src: Source<'_>) -> Result<RelayServerSettings, ConfigError> {
    let r = raw.relay_server;
    let devices_raw = r.devices;
    let listen_given = r.listen.is_some();
    let mut server = validate::server_table(
        RawServer {
            listen: r.listen,
            password: r.password,
            tls: r.tls,
            state_dir: r.state_dir,
            hosts: r.hosts,
            ..RawServer::default()
        },
        src,
        "[relay_server]",
    )?;
    if !listen_given {
        // The device's default port is 7000; the relay's is its own.
        if let Ok(addr) = DEFAULT_RELAY_LISTEN.parse() {
            server.listen = addr;
        }
    }
    let devices = devices(devices_raw, src)?;
    let l = raw.limits;
    let browsers_per_device = validate::ranged(
        src,
        l.browsers_per_device,
        "[limits] browsers_per_device",
        (1, 256),
        false,
        16,
    )?;
    let relay_defaults = RawLimits {
        max_message_bytes: l.max_message_bytes,
        max_connections: l.max_connections.or_else(|| Some(Spanned::new(0..0, 256))),
        connections_per_address: l.connections_per_address,
        dials_per_minute: l.dials_per_minute,
        login_failures_per_minute: l.login_failures_per_minute,
        ..RawLimits::default()
    };
    Ok(RelayServerSettings {
        server,
        devices,
        limits: validate::limits(relay_defaults, src)?,
        browsers_per_device,
        log: validate::log_settings(raw.log, src)?,
    })
}

fn devices(
    raw: Value<Vec<Spanned<RawDevice>>>,
    src: Source<'_>,
) -> Result<Vec<RelayDevice>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let span = raw.span();
    let entries = raw.into_inner();
    if entries.len() > MAX_DEVICES {
        let expected = format!("expected at most {MAX_DEVICES} devices");
        return Err(src.bad_value(span, "[relay_server] devices", &expected));
    }
    let mut out: Vec<RelayDevice> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let entry_span = entry.span();
        let entry = entry.into_inner();
        let missing = |what: &str| {
            let expected = format!(
                "expected a {what} key: each device has a name = \"shop\" and a token of at \
                 least {MIN_RELAY_TOKEN} characters"
            );
            src.bad_value(
                entry_span.clone(),
                &format!("[relay_server] devices[{i}]"),
                &expected,
            )
        };
        let name = entry.name.ok_or_else(|| missing("name"))?;
        let token = entry.token.ok_or_else(|| missing("token"))?;
        let name_key = format!("[relay_server] devices[{i}].name");
        let token_key = format!("[relay_server] devices[{i}].token");
        if !is_device_name(name.get_ref()) {
            let expected = validate::device_name_expected();
            return Err(src.bad_value(name.span(), &name_key, &expected));
        }
        if !is_relay_token(token.get_ref()) {
            let expected = format!(
                "expected at least {MIN_RELAY_TOKEN} printable characters without spaces \
                 (e.g. from `head -c 18 /dev/urandom | base64`)"
            );
            return Err(src.bad_value(token.span(), &token_key, &expected));
        }
        if out.iter().any(|d| d.name == *name.get_ref()) {
            let expected = "expected a name no other device has";
            return Err(src.bad_value(name.span(), &name_key, expected));
        }
        if out.iter().any(|d| d.token == *token.get_ref()) {
            let expected = "expected a token no other device has (a token belongs to one name)";
            return Err(src.bad_value(token.span(), &token_key, expected));
        }
        out.push(RelayDevice {
            name: name.into_inner(),
            token: token.into_inner(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../config/relay.toml");

    fn error_of(text: &str) -> String {
        match parse_relay_str(text, "r.toml") {
            Ok(s) => panic!("expected an error for {text:?}, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    const SHOP: &str = "[[relay_server.devices]]\nname = \"shop\"\ntoken = \"0123456789abcdef\"\n";

    #[test]
    fn defaults_and_the_sample_file() {
        let s = parse_relay_str("", "r.toml").expect("empty file");
        assert_eq!(s.server.listen.to_string(), DEFAULT_RELAY_LISTEN);
        assert!(s.devices.is_empty());
        assert_eq!(s.limits.max_connections, 256);
        assert_eq!(s.browsers_per_device, 16);
        let sample = parse_relay_str(SAMPLE, "config/relay.toml").expect("sample parses");
        assert_eq!(sample.devices.len(), 1);
        assert_eq!(sample.server.listen.to_string(), DEFAULT_RELAY_LISTEN);
    }

    #[test]
    fn every_value_can_be_set() {
        let text = format!(
            "[relay_server]\nlisten = \"127.0.0.1:0\"\npassword = \"correct horse\"\n\
             tls = \"self-signed\"\nstate_dir = \"/tmp/r\"\nhosts = [\"relay.example.org\"]\n\
             {SHOP}[limits]\nmax_message_bytes = 2048\nmax_connections = 10\n\
             connections_per_address = 3\ndials_per_minute = 7\nlogin_failures_per_minute = 2\n\
             browsers_per_device = 4\n[log]\nlevel = \"debug\"\n"
        );
        let s = parse_relay_str(&text, "r.toml").expect("valid");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:0");
        assert!(s.server.password.is_some());
        assert_eq!(s.server.tls, crate::config::TlsMode::SelfSigned);
        assert_eq!(s.server.hosts, ["relay.example.org"]);
        assert_eq!(
            s.devices,
            [RelayDevice {
                name: "shop".into(),
                token: "0123456789abcdef".into()
            }]
        );
        assert_eq!(
            (
                s.limits.max_message_bytes,
                s.limits.max_connections,
                s.limits.connections_per_address,
                s.limits.dials_per_minute,
                s.limits.login_failures_per_minute,
                s.browsers_per_device
            ),
            (2048, 10, 3, 7, 2, 4)
        );
        assert_eq!(s.log.level, log::LevelFilter::Debug);
    }

    #[test]
    fn errors_name_the_place_and_the_key() {
        assert_eq!(
            error_of("[relay_server]\npassword = \"short\"\n"),
            "r.toml:2:12: [relay_server] password = \"short\": expected at least 8 characters, \
             or \"\" for no password"
        );
        assert_eq!(
            error_of("[relay_server]\nport = 1\n"),
            "r.toml:2:1: unknown key [relay_server] port; expected one of: listen, password, \
             tls, state_dir, hosts, devices"
        );
        assert_eq!(
            error_of("[limits]\nmax_viewers = 3\n"),
            "r.toml:2:1: unknown key [limits] max_viewers; expected one of: max_message_bytes, \
             max_connections, connections_per_address, dials_per_minute, \
             login_failures_per_minute, browsers_per_device"
        );
        assert!(error_of("[server]\n").starts_with("r.toml:1:2: unknown key server"));
        assert_eq!(
            error_of("[[relay_server.devices]]\nname = \"Shop 1\"\ntoken = \"0123456789abcdef\"\n"),
            "r.toml:2:8: [relay_server] devices[0].name = \"Shop 1\": expected 1 to 32 characters \
             of a-z, 0-9 and '-' (not first or last), such as \"shop\""
        );
        let short = error_of("[[relay_server.devices]]\nname = \"shop\"\ntoken = \"abc\"\n");
        assert!(
            short.starts_with(
                "r.toml:3:9: [relay_server] devices[0].token = \"abc\": expected at least 16"
            ),
            "{short}"
        );
        let missing = error_of("[[relay_server.devices]]\nname = \"shop\"\n");
        assert!(
            missing.contains("[relay_server] devices[0]") && missing.contains("token key"),
            "{missing}"
        );
        let twice = error_of(&format!(
            "{SHOP}[[relay_server.devices]]\nname = \"shop\"\ntoken = \"fedcba9876543210\"\n"
        ));
        assert!(
            twice.starts_with("r.toml:5:8: [relay_server] devices[1].name")
                && twice.contains("no other device"),
            "{twice}"
        );
        let same_token = error_of(&format!(
            "{SHOP}[[relay_server.devices]]\nname = \"door\"\ntoken = \"0123456789abcdef\"\n"
        ));
        assert!(
            same_token.contains("devices[1].token") && same_token.contains("one name"),
            "{same_token}"
        );
        assert!(error_of("[limits]\nbrowsers_per_device = 0\n")
            .contains("[limits] browsers_per_device = 0: expected a number from 1 to 256"));
        assert!(error_of("[relay_server]\ntls = \"on\"\n").contains("[relay_server] tls = \"on\""));
    }
}
