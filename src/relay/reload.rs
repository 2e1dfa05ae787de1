//! SIGHUP (`systemctl reload peercam-relay`): the relay's file is read again. What applies at
//! once: `[[relay_server.devices]]` (a new device can register; a removed device's link is
//! closed, and with it its browsers' sockets; a changed token applies to the device's next
//! registration, the link up now stays) and `[log] level`. The other keys (`listen`,
//! `password`, `tls`, `state_dir`, `hosts`, `[limits]`) need a restart: one warning names those
//! that changed, and they keep their running values. A file that does not load keeps the
//! running configuration, with one error line.

use std::net::SocketAddr;
use std::path::PathBuf;

use log::{error, info, warn};

use super::RelayState;
use crate::config::relay::{load_relay, RelayDevice, RelayServerSettings};
use crate::config::ConfigError;

/// Where the relay's configuration comes from, so a reload reads it the way the start did.
#[derive(Debug, Clone)]
pub struct RelaySource {
    /// The file (`--config`, default [`crate::config::relay::DEFAULT_RELAY_PATH`]).
    pub path: PathBuf,
    /// `--listen ADDR`, which overrides `[relay_server] listen`.
    pub listen: Option<SocketAddr>,
}

impl RelaySource {
    /// Reads and checks the file, with the command-line override applied.
    pub fn load(&self) -> Result<RelayServerSettings, ConfigError> {
        let mut settings = load_relay(&self.path)?;
        if let Some(addr) = self.listen {
            settings.server.listen = addr;
        }
        Ok(settings)
    }
}

/// What a new device list changes against the running one, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceChanges {
    /// Names that were not configured.
    pub added: Vec<String>,
    /// Names no longer configured: their links are closed.
    pub removed: Vec<String>,
    /// Names whose token changed: the next registration needs the new one.
    pub new_token: Vec<String>,
}

impl DeviceChanges {
    /// Compares `running` with `wanted`.
    pub fn between(running: &[RelayDevice], wanted: &[RelayDevice]) -> DeviceChanges {
        let find = |list: &[RelayDevice], name: &str| list.iter().position(|d| d.name == name);
        let mut changes = DeviceChanges::default();
        for device in wanted {
            match find(running, &device.name) {
                None => changes.added.push(device.name.clone()),
                Some(i) if running[i].token != device.token => {
                    changes.new_token.push(device.name.clone())
                }
                Some(_) => {}
            }
        }
        for device in running {
            if find(wanted, &device.name).is_none() {
                changes.removed.push(device.name.clone());
            }
        }
        changes
    }
}

/// The keys of `wanted` that differ from `running` and apply only after a restart.
pub fn restart_keys(
    running: &RelayServerSettings,
    wanted: &RelayServerSettings,
) -> Vec<&'static str> {
    let (r, w) = (&running.server, &wanted.server);
    [
        ("[relay_server] listen", r.listen != w.listen),
        ("[relay_server] password", r.password != w.password),
        ("[relay_server] tls", r.tls != w.tls),
        ("[relay_server] state_dir", r.state_dir != w.state_dir),
        ("[relay_server] hosts", r.hosts != w.hosts),
        (
            "[limits]",
            running.limits != wanted.limits
                || running.browsers_per_device != wanted.browsers_per_device,
        ),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect()
}

/// Re-reads the file from `source` and applies what can be applied to `state`; `running` is
/// the configuration in force but for the devices, which `state` holds (its `[log]` is
/// replaced here).
pub fn reload(state: &RelayState, source: &RelaySource, running: &mut RelayServerSettings) {
    let origin = source.path.display();
    let wanted = match source.load() {
        Ok(wanted) => wanted,
        Err(e) => {
            error!("reload: {e}; keeping the running configuration");
            return;
        }
    };
    let restart = restart_keys(running, &wanted);
    if !restart.is_empty() {
        warn!(
            "reload: {} changed in {origin}; those keys apply after a restart \
             (systemctl restart peercam-relay)",
            restart.join(", ")
        );
    }
    let changes = DeviceChanges::between(&state.devices(), &wanted.devices);
    let level_changed = running.log != wanted.log;
    if level_changed {
        crate::logging::set_level(wanted.log.level);
    }
    running.log = wanted.log;
    // New registrations check the new list from here on; links of removed names close.
    state.set_devices(wanted.devices);
    let closed = state.links.close(&changes.removed);
    let mut applied = Vec::new();
    if !changes.added.is_empty() {
        applied.push(format!("devices added: {}", changes.added.join(", ")));
    }
    if !changes.removed.is_empty() {
        applied.push(format!(
            "devices removed: {} ({closed} link(s) closed)",
            changes.removed.join(", ")
        ));
    }
    if !changes.new_token.is_empty() {
        applied.push(format!(
            "new token for: {} (needed from its next registration)",
            changes.new_token.join(", ")
        ));
    }
    if level_changed {
        applied.push(format!(
            "[log] level {}",
            running.log.level.as_str().to_lowercase()
        ));
    }
    if applied.is_empty() {
        info!("reload: {origin} applied (nothing that applies without a restart changed)");
    } else {
        info!("reload: {origin} applied ({})", applied.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::relay::parse_relay_str;

    fn device(name: &str, token: &str) -> RelayDevice {
        RelayDevice {
            name: name.into(),
            token: token.into(),
        }
    }

    #[test]
    fn device_changes_name_added_removed_and_new_tokens() {
        let running = [
            device("shop", "a"),
            device("door", "b"),
            device("yard", "c"),
        ];
        let wanted = [
            device("door", "b"),
            device("yard", "d"),
            device("barn", "e"),
        ];
        assert_eq!(
            DeviceChanges::between(&running, &wanted),
            DeviceChanges {
                added: vec!["barn".into()],
                removed: vec!["shop".into()],
                new_token: vec!["yard".into()],
            }
        );
        assert_eq!(
            DeviceChanges::between(&running, &running),
            DeviceChanges::default()
        );
    }

    #[test]
    fn restart_keys_are_the_ones_that_changed() {
        let base = parse_relay_str("", "r.toml").expect("empty file");
        let other = parse_relay_str(
            "[relay_server]\nlisten = \"127.0.0.1:9\"\npassword = \"correct horse\"\n\
             [limits]\nbrowsers_per_device = 3\n[log]\nlevel = \"debug\"\n\
             [[relay_server.devices]]\nname = \"shop\"\ntoken = \"0123456789abcdef\"\n",
            "r.toml",
        )
        .expect("valid");
        assert_eq!(
            restart_keys(&base, &other),
            [
                "[relay_server] listen",
                "[relay_server] password",
                "[limits]"
            ]
        );
        assert!(restart_keys(&base, &base).is_empty());
    }
}
