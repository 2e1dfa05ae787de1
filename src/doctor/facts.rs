//! What `peercam doctor` reads from the machine: the only part of the doctor that touches
//! devices, files, sockets and processes. Everything is gathered into [`Facts`] first and
//! judged afterwards ([`super::checks`]), so the judging is tested on made-up facts.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::capture::alsa::{list_capture_devices, AlsaDevice, AlsaSource, DEFAULT_DEVICE};
use crate::capture::rpicam::{self, Probe};
use crate::capture::v4l2::{self, Node};
use crate::config::{
    self, AudioSource, ConfigOrigin, Loaded, Settings, TlsMode, VideoSource, DEFAULT_PATH,
};

/// Where the systemd unit is looked for (the Debian package installs the first).
pub const UNIT_PATHS: [&str; 3] = [
    "/lib/systemd/system/peercam.service",
    "/usr/lib/systemd/system/peercam.service",
    "/etc/systemd/system/peercam.service",
];

/// Everything the checks judge.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The loaded configuration, or the error that stops the daemon.
    pub config: Result<Loaded, String>,
    /// `/proc/device-tree/model`, e.g. `Raspberry Pi 4 Model B Rev 1.4`; `None` off
    /// device-tree boards.
    pub board_model: Option<String>,
    /// CPU cores (what the daemon gives each encoder as threads).
    pub cores: usize,
    /// What `rpicam-vid --list-cameras` said.
    pub rpicam: Probe,
    /// Every `/dev/video*` node.
    pub nodes: Vec<Node>,
    /// Every ALSA capture device.
    pub microphones: Vec<AlsaDevice>,
    /// Whether the ALSA device `audio.source` would use opens: `None` when the settings open
    /// none (test tone, no audio).
    pub microphone_open: Option<Result<(), String>>,
    /// Owner, group and mode of the device nodes and files the daemon opens.
    pub files: Vec<FileFacts>,
    /// `/etc/group`: name and gid of every group.
    pub groups: Vec<(String, u32)>,
    /// Who runs the doctor.
    pub user: User,
    /// The installed `peercam.service`, if any.
    pub service_unit: Option<PathBuf>,
    /// Whether the listen addresses can be bound now.
    pub ports: PortFacts,
    /// Process ids of other running `peercam` processes.
    pub peercam_pids: Vec<u32>,
}

/// Owner, group and permission bits of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// The path.
    pub path: PathBuf,
    /// Its metadata, or why it could not be read (e.g. it does not exist).
    pub meta: Result<FileMeta, String>,
}

/// The parts of a file's metadata that decide who may open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits (`0o777` part of `st_mode`).
    pub mode: u32,
}

/// The user running the doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Effective uid (0: root, who may open everything).
    pub uid: u32,
    /// Effective gid and supplementary gids.
    pub gids: Vec<u32>,
}

/// What binding the configured addresses gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFacts {
    /// `[server] listen`.
    pub listen: SocketAddr,
    /// `Ok` when it could be bound, else the error (e.g. "Address already in use").
    pub tcp: Result<(), String>,
    /// `[webrtc] udp_port` (every call on it) and whether it can be bound now; `None` with
    /// `udp_port = 0`.
    pub udp_port: Option<(u16, Result<(), String>)>,
    /// `[webrtc] tcp_port` (ICE over TCP, with a `udp_port`) and whether it can be bound now.
    pub ice_tcp_port: Option<(u16, Result<(), String>)>,
    /// `[webrtc] udp_port_min..=udp_port_max` (used with `udp_port = 0`); `None` for any
    /// port (0, 0) or with a `udp_port`.
    pub udp_range: Option<(u16, u16)>,
    /// How many ports of the range could be bound.
    pub udp_free: usize,
    /// `net.ipv4.ip_unprivileged_port_start` (1024 unless changed).
    pub unprivileged_port_start: Option<u16>,
}

impl Facts {
    /// The settings the other checks judge: the file's, or the defaults when it failed.
    pub fn settings(&self) -> Settings {
        match &self.config {
            Ok(loaded) => loaded.settings.clone(),
            Err(_) => Settings::default(),
        }
    }

    /// The facts of `path`, if gathered.
    pub fn file(&self, path: &Path) -> Option<&FileFacts> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Reads everything from this machine (takes up to [`rpicam::LIST_TIMEOUT`] when a hung
/// camera stack keeps `rpicam-vid --list-cameras` from answering).
pub fn gather(config_path: Option<&Path>) -> Facts {
    let config = config::load(config_path).map_err(|e| e.to_string());
    let settings = match &config {
        Ok(loaded) => loaded.settings.clone(),
        Err(_) => Settings::default(),
    };
    let nodes = v4l2::list_devices();
    let mut paths: Vec<PathBuf> = nodes.iter().map(|n| n.path().to_path_buf()).collect();
    paths.extend(dir_entries("/dev", "media"));
    paths.extend(dir_entries("/dev/snd", ""));
    if let VideoSource::Device(path) = &settings.video.source {
        paths.push(path.clone());
    }
    if let TlsMode::Files { cert, key } = &settings.server.tls {
        paths.extend([cert.clone(), key.clone()]);
    }
    if let Ok(Loaded {
        origin: ConfigOrigin::File(path),
        ..
    }) = &config
    {
        paths.push(path.clone());
    }
    paths.dedup();
    Facts {
        board_model: rpicam::board_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rpicam: rpicam::probe(rpicam::LIST_TIMEOUT),
        nodes,
        microphones: list_capture_devices(),
        microphone_open: microphone_open(&settings),
        files: paths.into_iter().map(|p| file_facts(&p)).collect(),
        groups: std::fs::read_to_string("/etc/group")
            .map(|text| parse_groups(&text))
            .unwrap_or_default(),
        user: std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|text| parse_status(&text))
            .unwrap_or(User {
                uid: u32::MAX,
                gids: Vec::new(),
            }),
        service_unit: UNIT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()),
        ports: port_facts(&settings),
        peercam_pids: other_peercam_processes(),
        config,
    }
}

/// The daemon's own choice for `audio.source = "auto"` is whether ALSA's default capture
/// device opens, so the doctor opens it too (and closes it at once).
fn microphone_open(settings: &Settings) -> Option<Result<(), String>> {
    let a = &settings.audio;
    let device = match &a.source {
        AudioSource::Auto => DEFAULT_DEVICE,
        AudioSource::Alsa(name) => name.as_str(),
        AudioSource::Test | AudioSource::None => return None,
    };
    Some(
        AlsaSource::open(device, a.channels)
            .map(drop)
            .map_err(|e| e.to_string()),
    )
}

/// Character devices in `dir` whose name starts with `prefix`, sorted.
fn dir_entries(dir: &str, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_char_device()))
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

fn file_facts(path: &Path) -> FileFacts {
    FileFacts {
        path: path.to_path_buf(),
        meta: std::fs::metadata(path)
            .map(|m| FileMeta {
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o777,
            })
            .map_err(|e| e.to_string()),
    }
}

/// `name:x:gid:members` lines of `/etc/group`.
pub fn parse_groups(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let gid = fields.nth(1)?.trim().parse().ok()?;
            (!name.is_empty() && !name.starts_with('#')).then(|| (name.to_owned(), gid))
        })
        .collect()
}

/// The effective uid and the gids from `/proc/self/status` (`Uid:` real effective saved fs;
/// `Gid:` likewise; `Groups:` the supplementary ones).
pub fn parse_status(text: &str) -> Option<User> {
    let field = |key: &str| -> Option<Vec<u32>> {
        let line = text.lines().find_map(|l| l.strip_prefix(key))?;
        Some(
            line.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect(),
        )
    };
    let uid = *field("Uid:")?.get(1)?;
    let mut gids = vec![*field("Gid:")?.get(1)?];
    gids.extend(field("Groups:").unwrap_or_default());
    Some(User { uid, gids })
}

fn port_facts(settings: &Settings) -> PortFacts {
    let listen = settings.server.listen;
    let w = &settings.webrtc;
    let udp_port = (w.udp_port != 0).then(|| {
        let bound = UdpSocket::bind(SocketAddr::new(listen.ip(), w.udp_port))
            .map(drop)
            .map_err(|e| e.to_string());
        (w.udp_port, bound)
    });
    let ice_tcp_port = (w.udp_port != 0 && w.tcp_port != 0).then(|| {
        let bound = TcpListener::bind(SocketAddr::new(listen.ip(), w.tcp_port))
            .map(drop)
            .map_err(|e| e.to_string());
        (w.tcp_port, bound)
    });
    let udp_range = (w.udp_port == 0 && (w.udp_port_min != 0 || w.udp_port_max != 0))
        .then_some((w.udp_port_min, w.udp_port_max));
    // Every port of the range at once (held until counted), as the daemon would hold them.
    let udp_free = match udp_range {
        Some((min, max)) => {
            let sockets: Vec<UdpSocket> = (min..=max)
                .filter_map(|port| UdpSocket::bind(SocketAddr::new(listen.ip(), port)).ok())
                .collect();
            sockets.len()
        }
        None => 0,
    };
    PortFacts {
        listen,
        tcp: TcpListener::bind(listen)
            .map(drop)
            .map_err(|e| e.to_string()),
        udp_port,
        ice_tcp_port,
        udp_range,
        udp_free,
        unprivileged_port_start: std::fs::read_to_string(
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        )
        .ok()
        .and_then(|t| t.trim().parse().ok()),
    }
}

/// Other processes whose name (`/proc/PID/comm`) is `peercam`.
fn other_peercam_processes() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "peercam")
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The text the doctor prints for where the configuration came from.
pub fn origin_text(origin: &ConfigOrigin) -> String {
    match origin {
        ConfigOrigin::File(path) => path.display().to_string(),
        ConfigOrigin::BuiltInDefaults => {
            format!("built-in defaults ({DEFAULT_PATH} does not exist)")
        }
    }
}
