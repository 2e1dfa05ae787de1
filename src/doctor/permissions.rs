//! The doctor's permissions check: the groups the systemd service runs with exist, the
//! service (and, when not root, the user running the doctor) may open the camera and sound
//! devices, and the TLS files and the config file are readable. Pure, like [`super::checks`].

use std::path::{Path, PathBuf};

use crate::config::{AudioSource, ConfigOrigin, Settings, TlsMode, DEFAULT_PATH};

use super::checks::{Check, Status, VideoChoice, SERVICE_GROUPS};
use super::facts::{Facts, FileMeta};

/// Who may open a file: `can_read`, `can_write` for one user.
fn may_open(meta: &FileMeta, uid: u32, gids: &[u32], write: bool) -> bool {
    if uid == 0 {
        return true;
    }
    let bits = if meta.uid == uid {
        meta.mode >> 6
    } else if gids.contains(&meta.gid) {
        meta.mode >> 3
    } else {
        meta.mode
    } & 0o7;
    let want = if write { 0o6 } else { 0o4 };
    bits & want == want
}

/// The permissions line: the groups the service needs exist, the service (and, when not
/// root, the user running the doctor) may open the camera and sound devices, and the TLS
/// files and the config file are readable.
pub fn permissions(settings: &Settings, video: &VideoChoice, facts: &Facts) -> Check {
    let gid_of = |name: &str| facts.groups.iter().find(|g| g.0 == name).map(|g| g.1);
    let name_of = |gid: u32| {
        facts
            .groups
            .iter()
            .find(|g| g.1 == gid)
            .map_or_else(|| gid.to_string(), |g| g.0.clone())
    };
    let service_gids: Vec<u32> = SERVICE_GROUPS.iter().filter_map(|g| gid_of(g)).collect();
    let mut problems: Vec<(Status, String, String)> = Vec::new();
    let mut found: Vec<String> = Vec::new();
    for group in SERVICE_GROUPS {
        match gid_of(group) {
            Some(gid) => found.push(format!("{group} ({gid})")),
            None if group == "peercam-config" && facts.service_unit.is_none() => {}
            None => problems.push((
                Status::Warn,
                format!("group {group} does not exist (peercam.service runs with it)"),
                format!("`groupadd --system {group}` (the Debian package makes peercam-config)"),
            )),
        }
    }
    // The devices the daemon opens.
    let mut devices: Vec<&Path> = match video {
        VideoChoice::V4l2 { path, .. } | VideoChoice::Missing { path, .. } => vec![path],
        VideoChoice::CameraModule { .. } => facts
            .files
            .iter()
            .map(|f| f.path.as_path())
            .filter(|p| {
                let p = p.to_string_lossy();
                p.starts_with("/dev/video") || p.starts_with("/dev/media")
            })
            .collect(),
        VideoChoice::TestPattern | VideoChoice::CameraModuleMissing { .. } => Vec::new(),
    };
    if matches!(
        settings.audio.source,
        AudioSource::Auto | AudioSource::Alsa(_)
    ) {
        devices.extend(
            facts
                .files
                .iter()
                .map(|f| f.path.as_path())
                .filter(|p| p.starts_with("/dev/snd")),
        );
    }
    let mut opened = 0;
    for path in &devices {
        let Some(Ok(meta)) = facts.file(path).map(|f| f.meta.as_ref()) else {
            continue; // missing devices are the camera and microphone checks' business
        };
        opened += 1;
        let owner = format!(
            "{} is group {} mode {:o}",
            path.display(),
            name_of(meta.gid),
            meta.mode
        );
        if !may_open(meta, u32::MAX, &service_gids, true) {
            problems.push((
                Status::Warn,
                format!("{owner}: the service (groups video, audio) cannot open it"),
                format!(
                    "give it to group video or audio with rw (udev does for cameras and sound \
                     cards: check `ls -l {}`)",
                    path.display()
                ),
            ));
        } else if facts.user.uid != 0 && !may_open(meta, facts.user.uid, &facts.user.gids, true) {
            problems.push((
                Status::Warn,
                format!("{owner}: you (uid {}) cannot open it", facts.user.uid),
                format!(
                    "to run peercam by hand: `sudo usermod -aG {} $USER` and log in again (the \
                     service has its own groups)",
                    name_of(meta.gid)
                ),
            ));
        }
    }
    files_readable(settings, facts, &service_gids, &mut problems);
    let status = problems.iter().map(|p| p.0).max().unwrap_or(Status::Pass);
    if status == Status::Pass {
        let groups = if found.is_empty() {
            "no service groups".to_owned()
        } else {
            format!("groups {}", found.join(", "))
        };
        let devices = match opened {
            0 => "no camera or sound device to check".to_owned(),
            n => format!("the service can open the {n} device node(s) it needs"),
        };
        return Check::pass("permissions", format!("{groups} exist; {devices}"));
    }
    let summary: Vec<String> = problems.iter().map(|p| p.1.clone()).collect();
    let mut fixes: Vec<String> = problems.iter().map(|p| p.2.clone()).collect();
    fixes.dedup();
    Check {
        name: "permissions",
        status,
        summary: summary.join("; "),
        fix: Some(fixes.join("; ")),
    }
}

/// TLS files (FAIL when unreadable: the daemon would not start) and the default config
/// file (the service reads it through group peercam-config).
fn files_readable(
    settings: &Settings,
    facts: &Facts,
    service_gids: &[u32],
    problems: &mut Vec<(Status, String, String)>,
) {
    let mut files: Vec<(&str, &Path)> = Vec::new();
    if let TlsMode::Files { cert, key } = &settings.server.tls {
        files.extend([
            ("TLS certificate", cert.as_path()),
            ("TLS key", key.as_path()),
        ]);
    }
    for (what, path) in files {
        match facts.file(path).map(|f| &f.meta) {
            Some(Ok(meta))
                if may_open(meta, facts.user.uid, &facts.user.gids, false)
                    && (facts.service_unit.is_none()
                        || may_open(meta, u32::MAX, service_gids, false)) => {}
            Some(Ok(meta)) if may_open(meta, facts.user.uid, &facts.user.gids, false) => problems
                .push((
                    Status::Warn,
                    format!("the service cannot read the {what} {}", path.display()),
                    format!(
                        "`chgrp peercam-config {p} && chmod g+r {p}`",
                        p = path.display()
                    ),
                )),
            Some(Ok(_)) => problems.push((
                Status::Fail,
                format!("you cannot read the {what} {}", path.display()),
                format!(
                    "make {} readable (group peercam-config, mode 640)",
                    path.display()
                ),
            )),
            Some(Err(e)) => problems.push((
                Status::Fail,
                format!("{what} {}: {e}", path.display()),
                "set [server] tls to files that exist".to_owned(),
            )),
            None => {}
        }
    }
    if let (Ok(loaded), Some(_)) = (&facts.config, &facts.service_unit) {
        if loaded.origin == ConfigOrigin::File(PathBuf::from(DEFAULT_PATH)) {
            if let Some(Ok(meta)) = facts.file(Path::new(DEFAULT_PATH)).map(|f| &f.meta) {
                if !may_open(meta, u32::MAX, service_gids, false) {
                    problems.push((
                        Status::Warn,
                        format!("the service cannot read {DEFAULT_PATH}"),
                        format!(
                            "`chgrp peercam-config {DEFAULT_PATH} && chmod 640 {DEFAULT_PATH}`"
                        ),
                    ));
                }
            }
        }
    }
}
