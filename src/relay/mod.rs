//! `peercam relay`: a signaling relay on a public host, for devices that cannot be reached
//! from outside. It holds no media: devices connect out to it (`/link`, see
//! [`relay_wire`]), browsers log in and dial a device by name (`/d/NAME/`, the device's own
//! page), and each browser's signaling messages are forwarded over its device's link.
//!
//! The login, session cookie, failure limits, origin and host checks, TLS and the
//! connection admission are the device's own ([`crate::http`]); this module adds the device
//! registry ([`links`]) and the browser side ([`browser`]). Every queue is bounded and every
//! refusal and drop counted in `/metrics` ([`counters`]). SIGHUP reloads the device list and
//! the log level ([`reload`]).

mod browser;
mod counters;
mod links;
mod reload;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use log::{info, warn};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::relay::{RelayDevice, RelayServerSettings};
use crate::http::auth::Auth;
use crate::http::connections::Connections;
use crate::http::hosts::Hosts;
use crate::http::{self, Front};
use crate::limits::RateLimiter;

pub use counters::Counters;
pub use reload::RelaySource;

/// Largest login form accepted.
const MAX_LOGIN_BODY: usize = 4096;
/// How long connections get to close after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(600);

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The async runtime could not be created.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}: {hint}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it, for this cause ([`crate::lan::bind_hint`]).
        hint: String,
    },
    /// The server failed while running, or the signal handlers could not be installed.
    #[error("relay server: {0}")]
    Serve(std::io::Error),
    /// `[relay_server] tls` could not be set up.
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
}

/// Everything the relay's handlers share.
pub struct RelayState {
    /// The settings the relay started with, but for the devices (`devices`): a reload
    /// changes none of them.
    settings: RelayServerSettings,
    /// `[[relay_server.devices]]`, replaced by a reload.
    devices: RwLock<Arc<Vec<RelayDevice>>>,
    auth: Auth,
    hosts: Hosts,
    /// The devices connected now.
    links: links::Links,
    /// One permit per open browser socket (`[limits] max_connections`).
    browser_slots: Arc<Semaphore>,
    /// Browser sockets opened per minute per address (`[limits] dials_per_minute`).
    opens: RateLimiter,
    counters: Counters,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Front for RelayState {
    fn auth(&self) -> &Auth {
        &self.auth
    }
    fn hosts(&self) -> &Hosts {
        &self.hosts
    }
}

impl RelayState {
    /// The state for `settings`, stopping with `shutdown`.
    pub fn new(mut settings: RelayServerSettings, shutdown: CancellationToken) -> Arc<RelayState> {
        let devices = std::mem::take(&mut settings.devices);
        let secure = settings.server.tls != crate::config::TlsMode::Off;
        let limits = &settings.limits;
        Arc::new(RelayState {
            auth: Auth::new(
                settings.server.password.as_ref(),
                limits.login_failures_per_minute,
                secure,
            ),
            hosts: Hosts::new(&settings.server),
            devices: RwLock::new(Arc::new(devices)),
            links: links::Links::default(),
            browser_slots: Arc::new(Semaphore::new(limits.max_connections)),
            opens: RateLimiter::new(limits.dials_per_minute),
            counters: Counters::default(),
            shutdown,
            tasks: TaskTracker::new(),
            settings,
        })
    }

    /// The devices configured now.
    pub fn devices(&self) -> Arc<Vec<RelayDevice>> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a device named `name` is configured now.
    pub fn is_configured(&self, name: &str) -> bool {
        self.devices().iter().any(|d| d.name == name)
    }

    /// Replaces the configured devices (a reload): registrations from now on check `devices`.
    fn set_devices(&self, devices: Vec<RelayDevice>) {
        *self.devices.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(devices);
    }
}

/// Runs the relay until SIGINT or SIGTERM; SIGHUP re-reads the configuration from `source`
/// ([`reload`]). Blocking; builds its own runtime.
pub fn run(settings: RelayServerSettings, source: RelaySource) -> Result<(), RelayError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("peercam-relay")
        .enable_all()
        .build()
        .map_err(RelayError::Runtime)?;
    let result = runtime.block_on(serve(settings, source));
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn serve(settings: RelayServerSettings, source: RelaySource) -> Result<(), RelayError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(RelayError::Serve)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RelayError::Serve)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RelayError::Serve)?;
    let tls = http::tls::acceptor(&settings.server)?;
    let addr = settings.server.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| {
        let facts = crate::lan::LanFacts::read();
        let hint =
            crate::lan::bind_hint(addr, &source, "[relay_server] listen or --listen", &facts);
        RelayError::Listen { addr, source, hint }
    })?;
    let local = listener.local_addr().map_err(RelayError::Serve)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let limits = settings.limits.clone();
    let devices = settings.devices.len();
    let shutdown = CancellationToken::new();
    // The configuration in force for the reload to compare with; the devices live in `state`.
    let mut running = RelayServerSettings {
        devices: Vec::new(),
        ..settings.clone()
    };
    let state = RelayState::new(settings, shutdown.clone());
    info!(
        "peercam relay listening on {scheme}://{local}/ ({devices} device(s) configured; \
         devices connect to {}://{local}/link)",
        if tls.is_some() { "wss" } else { "ws" }
    );
    if state.auth.is_open() {
        warn!("no [relay_server] password is set: anyone who can reach the relay can dial its devices");
    }
    if devices == 0 {
        warn!("no [[relay_server.devices]] are configured: no device can register");
    }
    // Devices a reload adds fit in the room left by the browsers' doubled share.
    let connections = Connections::new(
        limits.connections_per_address,
        limits.max_connections * 2 + 16 + devices,
        limits.max_connections,
    );
    let mut server = tokio::spawn(http::serve_app(
        listener,
        router(state.clone()),
        connections,
        tls,
        shutdown.clone(),
        state.tasks.clone(),
    ));
    crate::systemd::ready(&format!("listening on {local}"));
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()) }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()) }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the configuration");
                crate::systemd::reloading();
                reload::reload(&state, &source, &mut running);
                crate::systemd::ready(&format!("listening on {local}"));
            }
            r = &mut server => break match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(RelayError::Serve(e)),
                Err(e) => Err(RelayError::Serve(std::io::Error::other(e.to_string()))),
            },
        }
    };
    crate::systemd::stopping();
    shutdown.cancel();
    state.tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, state.tasks.wait()).await;
    if !server.is_finished() {
        server.abort();
    }
    info!("stopped");
    outcome
}

/// Every route of the relay. The device list, the pages and `/metrics` need a session when
/// a password is set; `/link` is the devices' (they present a token instead).
pub fn router(state: Arc<RelayState>) -> Router {
    let protected = Router::new()
        .route("/d/{name}/app.js", get(http::app_js))
        .route("/d/{name}/ws", get(browser::ws))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            http::require_login::<RelayState>,
        ));
    let login = || post(http::login::<RelayState>).layer(DefaultBodyLimit::max(MAX_LOGIN_BODY));
    Router::new()
        .route("/", get(device_list))
        .route("/d/{name}/", get(device_page))
        .route("/d/{name}", get(to_device_page))
        .route("/style.css", get(http::style_css))
        .route("/d/{name}/style.css", get(http::style_css))
        .route("/login", login())
        .route("/d/{name}/login", login())
        .route("/logout", post(http::logout::<RelayState>))
        .route("/d/{name}/logout", post(http::logout::<RelayState>))
        .route("/link", get(links::link))
        .merge(protected)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http::known_host::<RelayState>,
        ))
        .with_state(state)
}

/// `/`: the devices, online or offline, each linking to its Dial page.
async fn device_list(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(form) = http::login_form_for(&state.auth, remote, &headers) {
        return form;
    }
    let online = state.links.names();
    let mut items = String::new();
    for device in state.devices().iter() {
        // Names are [a-z0-9-] (checked in the config): nothing to escape.
        let (class, word) = if online.contains(&device.name) {
            ("online", "online".to_owned())
        } else {
            (
                "offline",
                format!("offline: {}", state.links.offline_reason(&device.name)),
            )
        };
        items.push_str(&format!(
            "<li class=\"device {class}\" data-device=\"{name}\"><a href=\"d/{name}/\">{name}</a> \
             <span class=\"muted\">{word}</span></li>\n",
            name = device.name
        ));
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>peercam relay</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"style.css\">\n</head>\n<body>\n<main>\n\
         <header><h1>peercam relay</h1></header>\n<ul id=\"devices\">\n{items}</ul>\n\
         </main>\n</body>\n</html>\n"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `/d/NAME/`: the device's own Dial page; its relative `ws` is `/d/NAME/ws`.
async fn device_page(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(form) = http::login_form_for(&state.auth, remote, &headers) {
        return form;
    }
    if !state.is_configured(&name) {
        return (
            StatusCode::NOT_FOUND,
            "404 Not Found: no camera of that name is configured on this relay\n",
        )
            .into_response();
    }
    http::dial_page(http::PageInfo {
        camera_name: &name,
        open_in: state.auth.is_open().then_some("the relay's config file"),
        password_key: "[relay_server] password",
    })
}

/// `/d/NAME` without the slash: the page's relative URLs need it.
async fn to_device_page(Path(name): Path<String>) -> Response {
    let name = crate::logging::client_str(&name).to_string();
    if !crate::config::is_device_name(&name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, format!("{name}/"))],
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<RelayState>>) -> Response {
    let mut out = state.counters.text();
    out.push_str(&format!(
        "peercam_relay_devices_online {}\npeercam_relay_devices_configured {}\n\
         peercam_relay_browsers {}\npeercam_relay_sessions {}\n",
        state.links.names().len(),
        state.devices().len(),
        state.settings.limits.max_connections - state.browser_slots.available_permits(),
        state.auth.session_count(),
    ));
    for (name, hits) in http::connections::limit_hits().into_iter().chain([
        ("login_failures", state.auth.limit_hits()),
        ("wrong_password", state.auth.failures()),
    ]) {
        out.push_str(&format!(
            "peercam_limit_hits_total{{limit=\"{name}\"}} {hits}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
