//! Start, reload and stop of everything: the media hub, the HTTP server, signal handling and
//! the systemd protocol.
//!
//! Start: bind the HTTP port, start the media threads, serve, and tell systemd READY=1 once
//! the first video frame (camera or placeholder) has been captured.
//! Watchdog: every [`WATCHDOG_TICK`] the media threads' heartbeats are checked
//! ([`crate::pipeline::heartbeat`]); WATCHDOG=1 goes to systemd only while every thread made
//! progress within [`STALL_AFTER`], so a hung capture or encoder gets the service restarted.
//! Reload (SIGHUP, `systemctl reload`): the file is read again; a broken file is logged
//! (file:line:column and key) and the running configuration stays. Changed `[video]` or
//! `[audio]` settings replace the media pipeline (viewers get `bye` with reason "reload" and
//! their page dials again); changed `[webrtc]` settings apply to the next calls; `[server]`,
//! `[limits]` and `[log]` need a restart, which the log says.
//! Stop: SIGINT or SIGTERM cancels one token; the HTTP server stops accepting; every
//! WebSocket task says `bye`, closes its peer and ends, and the daemon waits for all of
//! them (they are tracked); then the media threads stop. The wait is bounded by
//! [`SHUTDOWN_GRACE`] so the process exits within a second.
//!
//! The running [`Settings`] and the [`MediaHub`] are owned here, by [`serve`]'s loop: a
//! reload compares and replaces them in one place, and hands the HTTP layer new media.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError, ConfigOrigin, Loaded, Settings};
use crate::http::media::LiveMedia;
use crate::http::{self, AppState, Generation};
use crate::hub::{HubError, MediaHub};
use crate::lan::{self, LanFacts};
use crate::pipeline::heartbeat::Monitor;
use crate::systemd;
use crate::whip::{self, Publishers};

/// How long connections get to close after a stop signal before they are abandoned.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(600);
/// How often the media threads' progress is checked (and the watchdog pinged).
pub const WATCHDOG_TICK: Duration = Duration::from_millis(1000);
/// A media thread without progress for this long counts as stuck: the watchdog is no longer
/// pinged. Longer than the slowest loop turn (one frame at 1 fps).
pub const STALL_AFTER: Duration = Duration::from_millis(2500);
/// READY=1 waits at most this long for the first captured frame.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(10);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The async runtime could not be created.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr}: {source}: {hint}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it, for this cause ([`lan::bind_hint`]).
        hint: String,
    },
    /// The media pipeline could not start.
    #[error("media pipeline: {0}")]
    Media(#[from] HubError),
    /// The HTTP server failed while running.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
    /// Installing the signal handlers failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// `[server] tls` could not be set up.
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
}

/// Where the configuration comes from, so a reload reads it the same way as the start did.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config PATH`; `None` reads [`config::DEFAULT_PATH`] if it exists.
    pub path: Option<PathBuf>,
    /// `--listen ADDR`, which overrides `[server] listen`.
    pub listen: Option<SocketAddr>,
}

impl ConfigSource {
    /// Reads and validates the configuration, with the command-line overrides applied.
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        let mut loaded = config::load(self.path.as_deref())?;
        if let Some(addr) = self.listen {
            loaded.settings.server.listen = addr;
        }
        Ok(loaded)
    }

    /// The config file read: `--config`, else [`config::DEFAULT_PATH`] when it exists;
    /// `None`: the built-in defaults.
    pub fn file(&self) -> Option<PathBuf> {
        let default = std::path::Path::new(config::DEFAULT_PATH);
        self.path
            .clone()
            .or_else(|| default.exists().then(|| default.to_path_buf()))
    }
}

/// Runs the daemon until SIGINT or SIGTERM; SIGHUP re-reads the configuration from `source`.
/// Blocking; builds its own tokio runtime.
pub fn run(settings: Settings, source: ConfigSource) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("peercam-io")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let result = runtime.block_on(serve(settings, source));
    // Tasks still running (peers mid-close) are abandoned rather than waited for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn serve(settings: Settings, source: ConfigSource) -> Result<(), DaemonError> {
    let shutdown = CancellationToken::new();
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let tls = http::tls::acceptor(&settings.server)?;
    let addr = settings.server.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| {
        let hint = lan::bind_hint(addr, &source, LISTEN_KEY, &LanFacts::read());
        DaemonError::Listen { addr, source, hint }
    })?;
    let local = listener.local_addr().map_err(DaemonError::Serve)?;
    let mut hub = MediaHub::start(&settings)?;
    let open = settings.server.password.is_none();
    let state = AppState::new(
        &settings,
        source.file().as_deref(),
        LiveMedia::new(hub.clone(), settings.webrtc.clone()),
        shutdown.clone(),
    );
    let mut running = settings;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut where_to_look = WhereToLook::new(scheme, local);
    info!(
        "peercam listening on {local} ({scheme}): open {} {}",
        lan::joined(&where_to_look.urls),
        if local.ip().is_loopback() {
            "on this machine (only it can connect: [server] listen is a loopback address)"
        } else {
            "from a browser on the network"
        }
    );
    if let Some(line) = crate::peer::ice_servers_summary(&running.webrtc.ice_servers) {
        info!("{line}");
    }
    if open {
        warn!(
            "no [server] password is set: anyone who can reach port {} can watch and listen; \
             set one in the config file",
            local.port()
        );
    }

    let mut server = tokio::spawn(http::serve(listener, state.clone(), tls));
    if let Some(relay) = running.relay.clone() {
        // The local page and /ws keep working beside it; the link ends with `shutdown`.
        state
            .tasks
            .spawn(http::relay_link::run(state.clone(), relay));
    }
    let mut publishers = Publishers::start(&running.publish, &hub, &running.webrtc);
    publish_metrics(&state, &publishers);
    let mut watchdog = Watchdog::new();
    watchdog.wait_for_first_frame(&hub).await;
    watchdog.ready(&state, &hub, &where_to_look.urls);
    let mut tick = tokio::time::interval(WATCHDOG_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()) }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()) }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the configuration");
                systemd::reloading();
                let before = hub.clone();
                let result = reload(&state, &source, &mut running, &mut hub).await;
                watchdog.reset();
                if let Err(e) = result {
                    break Err(e);
                }
                let media_changed = !Arc::ptr_eq(&before, &hub);
                publishers
                    .reload(&running.publish, &hub, &running.webrtc, media_changed)
                    .await;
                publish_metrics(&state, &publishers);
                watchdog.ready(&state, &hub, &where_to_look.urls);
            }
            _ = tick.tick() => {
                where_to_look.refresh();
                watchdog.tick(&state, &hub, &where_to_look.urls);
            }
            r = &mut server => break match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DaemonError::Serve(e)),
                Err(e) => Err(DaemonError::Serve(std::io::Error::other(e.to_string()))),
            },
        }
    };
    systemd::stopping();
    shutdown.cancel();
    // The WHIP sessions are deleted while the media still runs.
    publishers.stop().await;
    // Every connection task sees the token: viewers get `bye`, peers close. Wait for them.
    state.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            "{} connection task(s) still running after {SHUTDOWN_GRACE:?}; abandoning them",
            state.tasks.len()
        );
    }
    if !server.is_finished() {
        server.abort();
    }
    let stopper = tokio::task::spawn_blocking(move || hub.stop());
    if tokio::time::timeout(Duration::from_millis(300), stopper)
        .await
        .is_err()
    {
        error!("media threads did not stop in time");
    }
    info!("stopped");
    outcome
}

/// `/metrics` shows `publishers`' targets.
fn publish_metrics(state: &AppState, publishers: &Publishers) {
    let stats = publishers.stats();
    state.set_extra_metrics(Box::new(move || whip::metrics_text(&stats)));
}

/// The setting that holds the daemon's listen address, for bind errors.
const LISTEN_KEY: &str = "[server] listen or --listen";

/// The page's URLs from the LAN ([`lan::urls`]), kept current: a Pi often starts peercam
/// before DHCP gave it an address, so they are read again every tick and logged (one line)
/// when they change.
struct WhereToLook {
    scheme: &'static str,
    local: SocketAddr,
    facts: LanFacts,
    urls: Vec<String>,
}

impl WhereToLook {
    fn new(scheme: &'static str, local: SocketAddr) -> WhereToLook {
        let facts = LanFacts::read();
        let urls = lan::urls(scheme, local, &facts);
        WhereToLook {
            scheme,
            local,
            facts,
            urls,
        }
    }

    /// Reads the addresses again; logs the URLs when they changed.
    fn refresh(&mut self) {
        let facts = LanFacts::read();
        if facts == self.facts {
            return;
        }
        self.urls = lan::urls(self.scheme, self.local, &facts);
        self.facts = facts;
        info!(
            "the network addresses changed: open {} from a browser on the network",
            lan::joined(&self.urls)
        );
    }
}

/// READY/STATUS/WATCHDOG messages driven by the media pipeline's heartbeat.
struct Watchdog {
    monitor: Monitor,
    /// systemd's `WatchdogSec`, when it asked for pings.
    period: Option<Duration>,
    /// Threads reported stuck (logged once per episode).
    stalled: Vec<String>,
    status: String,
}

impl Watchdog {
    fn new() -> Watchdog {
        let period = systemd::watchdog_period();
        if let Some(p) = period {
            info!(
                "systemd watchdog: {p:?}; pinged while every media thread makes progress \
                 (a thread stuck for {STALL_AFTER:?} stops the pings)"
            );
        }
        Watchdog {
            monitor: Monitor::new(STALL_AFTER),
            period,
            stalled: Vec::new(),
            status: String::new(),
        }
    }

    /// Waits until the capture thread delivered a frame (or [`FIRST_FRAME_WAIT`] passed).
    async fn wait_for_first_frame(&self, hub: &MediaHub) {
        let start = Instant::now();
        while hub.frames_captured() == 0 {
            if start.elapsed() > FIRST_FRAME_WAIT {
                warn!(
                    "no video frame after {FIRST_FRAME_WAIT:?}; reporting ready anyway \
                     (the watchdog restarts peercam if capture stays stuck)"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn ready(&mut self, state: &AppState, hub: &MediaHub, urls: &[String]) {
        self.status = status_of(state, hub, urls);
        systemd::ready(&self.status);
        if systemd::under_systemd() {
            info!("ready (systemd notified): {}", self.status);
        }
    }

    /// The pipeline was replaced: its threads are new.
    fn reset(&mut self) {
        self.monitor.reset();
        self.stalled.clear();
    }

    fn tick(&mut self, state: &AppState, hub: &MediaHub, urls: &[String]) {
        let stalled = self.monitor.check(hub.heartbeat(), Instant::now());
        if stalled.is_empty() {
            if !self.stalled.is_empty() {
                info!("media threads make progress again");
                self.stalled.clear();
            }
            if self.period.is_some() {
                systemd::watchdog();
            }
        } else if stalled != self.stalled {
            error!(
                "media thread(s) {} made no progress for {STALL_AFTER:?}; {}",
                stalled.join(", "),
                if self.period.is_some() {
                    "not pinging the systemd watchdog, which restarts peercam if this lasts"
                } else {
                    "no watchdog is configured (run under systemd to get it restarted)"
                }
            );
            self.stalled = stalled;
        }
        let status = status_of(state, hub, urls);
        if status != self.status {
            systemd::status(&status);
            self.status = status;
        }
    }
}

/// The `systemctl status` line: where to open the page, viewers in a call, video source.
fn status_of(state: &AppState, hub: &MediaHub, urls: &[String]) -> String {
    format!(
        "open {} · {} viewer(s) · {}",
        urls.join(" "),
        state.viewers_in_call(),
        hub.source_description()
    )
}

/// Re-reads the configuration and applies what changed (see the module documentation):
/// `running` and `hub` are replaced here and only here. Errors only when no media pipeline
/// can run any more (neither the new nor the old one).
async fn reload(
    state: &AppState,
    source: &ConfigSource,
    running: &mut Settings,
    hub: &mut Arc<MediaHub>,
) -> Result<(), DaemonError> {
    let loaded = match source.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            error!("reload: {e}; keeping the running configuration");
            return Ok(());
        }
    };
    let origin = match &loaded.origin {
        ConfigOrigin::File(path) => path.display().to_string(),
        ConfigOrigin::BuiltInDefaults => "the built-in defaults".to_owned(),
    };
    let mut wanted = loaded.settings;
    let needs_restart: Vec<&str> = [
        ("[server]", running.server != wanted.server),
        ("[relay]", running.relay != wanted.relay),
        ("[limits]", running.limits != wanted.limits),
        ("[log]", running.log != wanted.log),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    if !needs_restart.is_empty() {
        warn!(
            "reload: {} changed in {origin}; those keys apply after a restart \
             (systemctl restart peercam)",
            needs_restart.join(", ")
        );
    }
    // Those sections keep their running values until a restart.
    wanted.server = running.server.clone();
    wanted.limits = running.limits.clone();
    wanted.log = running.log.clone();
    wanted.relay = running.relay.clone();
    let media_changed = running.video != wanted.video
        || running.audio != wanted.audio
        || running.rpicam != wanted.rpicam;
    let webrtc_changed = running.webrtc != wanted.webrtc;
    if !media_changed && !webrtc_changed {
        if running.publish != wanted.publish {
            info!("reload: {origin} applied ([[publish]] changed)");
        } else {
            info!("reload: {origin} applied (nothing that applies without a restart changed)");
        }
        running.publish = wanted.publish;
        return Ok(());
    }
    // New viewers wait for the new media while this guard is held.
    let mut generation = state.media_for_reload().await;
    if !media_changed {
        // Calls in progress keep their peers; new calls use the new [webrtc] settings.
        generation.media = LiveMedia::new(hub.clone(), wanted.webrtc.clone());
        state.set_ice_servers(&wanted.webrtc.ice_servers);
        if let Some(line) = crate::peer::ice_servers_summary(&wanted.webrtc.ice_servers) {
            info!("reload: {line}");
        }
        *running = wanted;
        info!("reload: {origin} applied ([webrtc] changed: new calls use it)");
        return Ok(());
    }
    // The camera can be opened only once: stop the running pipeline before the new one.
    generation.retired.cancel();
    stop_hub(hub.clone()).await;
    let started = {
        let wanted = wanted.clone();
        tokio::task::spawn_blocking(move || MediaHub::start(&wanted)).await
    };
    let (settings, new_hub) = match flatten(started) {
        Ok(new_hub) => {
            let changed: Vec<&str> = [
                ("[video]", running.video != wanted.video),
                ("[audio]", running.audio != wanted.audio),
                ("[rpicam]", running.rpicam != wanted.rpicam),
                ("[webrtc]", webrtc_changed),
            ]
            .into_iter()
            .filter_map(|(name, differs)| differs.then_some(name))
            .collect();
            info!(
                "reload: {origin} applied ({} changed; viewers were asked to dial again)",
                changed.join(", ")
            );
            (wanted, new_hub)
        }
        Err(e) => {
            error!(
                "reload: cannot start the media pipeline with the new configuration: {e}; \
                 going back to the running configuration"
            );
            let restarted = {
                let running = running.clone();
                tokio::task::spawn_blocking(move || MediaHub::start(&running)).await
            };
            (running.clone(), flatten(restarted)?)
        }
    };
    *generation = Generation::new(LiveMedia::new(new_hub.clone(), settings.webrtc.clone()));
    state.set_ice_servers(&settings.webrtc.ice_servers);
    *hub = new_hub;
    *running = settings;
    Ok(())
}

async fn stop_hub(hub: Arc<MediaHub>) {
    let stopper = tokio::task::spawn_blocking(move || hub.stop());
    if tokio::time::timeout(Duration::from_secs(2), stopper)
        .await
        .is_err()
    {
        error!(
            "reload: the old media threads did not stop within 2 s; starting the new ones anyway"
        );
    }
}

fn flatten(
    joined: Result<Result<Arc<MediaHub>, HubError>, tokio::task::JoinError>,
) -> Result<Arc<MediaHub>, HubError> {
    joined.unwrap_or_else(|e| {
        Err(HubError::Thread {
            name: "reload".to_owned(),
            reason: e.to_string(),
        })
    })
}
