//! The one HTTP port: the Dial page, the WebSocket signaling relay (`/ws`), and metrics.
//!
//! `/ws` serves viewers: each browser's offer is auto-answered by a peer of the daemon.
//! `/ws?room=NAME` is the seed tutorial's relay: it links exactly two browsers to each other.
//! `/whep` serves other software the same way (WHEP: SDP over HTTP, see [`whep`]).
//! `/snapshot.jpg` is the newest picture as a JPEG ([`snapshot`]).

pub mod auth;
pub mod connections;
pub mod hosts;
mod lookups;
pub mod media;
mod page;
pub mod relay_link;
mod room;
pub mod snapshot;
pub(crate) mod socket;
pub mod tls;
mod viewer;
pub mod whep;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::auth::{Access, Auth, Login};
use self::connections::{Connection, Connections};
use self::hosts::Hosts;
use self::media::MediaService;
pub(crate) use self::page::{dial_page, PageInfo};
use crate::config::{LimitSettings, Settings};
use crate::limits::LimitLog;
use crate::session::admission::{Admission, AdmissionLimits};
use crate::session::machine::{Rules, Session, Transport};
use crate::session::protocol::IceServerInfo;

const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Time a client gets to finish the TLS handshake, and to send a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial WebSocket read and write buffer per socket.
const WS_BUFFER_BYTES: usize = 8 * 1024;
/// Most a WebSocket's unsent data may grow to: a client that sends pings and never reads
/// the pongs (or stops reading anything) has its socket closed instead of growing the
/// daemon's memory.
const WS_MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Largest login form accepted.
const MAX_LOGIN_BODY: usize = 4096;

/// Hits of the WebSocket cap.
static WS_LIMIT: LimitLog = LimitLog::new("[limits] max_connections");
/// WebSockets and logins refused for a foreign Origin.
pub(crate) static ORIGIN_REFUSED: LimitLog = LimitLog::new("Origin check");
/// Requests refused for naming an unknown host (DNS rebinding) without a password.
static HOST_REFUSED: LimitLog = LimitLog::new("[server] hosts");

/// The media the signaling serves, until a reload replaces it.
#[derive(Clone)]
pub struct Generation {
    /// What viewers are answered with.
    pub media: Arc<dyn MediaService>,
    /// Cancelled when a reload replaces the media pipeline: its viewers are told to dial
    /// again.
    pub retired: CancellationToken,
}

impl Generation {
    /// A new generation of `media`.
    pub fn new(media: Arc<dyn MediaService>) -> Generation {
        Generation {
            media,
            retired: CancellationToken::new(),
        }
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    /// `[limits]`, as the daemon started (they apply until a restart).
    pub limits: LimitSettings,
    /// Remote loopback candidates are accepted: the daemon serves only on loopback.
    loopback_candidates: bool,
    /// Resolves browsers' `.local` candidates (`[webrtc] resolve_mdns`; `None` when off).
    pub resolver: Option<Arc<crate::mdns::Resolver>>,
    /// The current media; written only by a reload, which holds the lock while it swaps
    /// pipelines so new viewers wait for the new one.
    media: tokio::sync::RwLock<Generation>,
    /// Who may start a call (`max_viewers`, `max_pending_dials`, `dials_per_minute`).
    pub admission: Arc<Admission>,
    /// One permit per open WebSocket (`limits.max_connections`).
    pub connection_slots: Arc<Semaphore>,
    /// Of those, one permit per room-mode socket: half of `max_connections` (at least 2), so
    /// browsers paired in rooms (never idle: they may be in a call) leave room for viewers.
    pub room_slots: Arc<Semaphore>,
    /// The password check and sessions (`[server] password`).
    pub auth: Auth,
    /// The names the daemon answers to, and the same-origin check.
    pub hosts: Hosts,
    /// Seed-mode rooms.
    pub rooms: room::Rooms,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// Every connection's task, so a stop can wait for them to finish.
    pub tasks: TaskTracker,
    /// The WHEP sessions alive.
    pub whep: whep::WhepSessions,
    /// `/snapshot.jpg`'s renders in progress and counters.
    pub snapshots: snapshot::Snapshots,
    /// `[server] cors_origins`: pages that may use WHEP from other origins.
    cors_origins: Vec<String>,
    /// `[webrtc] ice_servers`, given to pages in `hello` and to WHEP clients in `Link`
    /// headers; a reload replaces them ([`AppState::set_ice_servers`]).
    ice_servers: std::sync::RwLock<Arc<[crate::config::IceServer]>>,
    /// More `/metrics` lines from parts of the daemon outside the HTTP server (the WHIP
    /// publications), replaced when they change.
    extra_metrics: std::sync::Mutex<Option<ExtraMetrics>>,
    /// `[server] name` (or the host name): the page's title and header, and `hello`.
    pub camera_name: String,
    /// The config file the daemon reads, as the no-password banner names it.
    config_file: String,
}

/// What the login, the session check and the host check need; implemented by the daemon's
/// state and by the relay's (`peercam relay` serves the same login with the same rules).
pub trait Front: Send + Sync + 'static {
    /// The password check and sessions.
    fn auth(&self) -> &Auth;
    /// The names the server answers to, and the same-origin check.
    fn hosts(&self) -> &Hosts;
}

impl Front for AppState {
    fn auth(&self) -> &Auth {
        &self.auth
    }
    fn hosts(&self) -> &Hosts {
        &self.hosts
    }
}

/// Writes `/metrics` lines.
pub type ExtraMetrics = Box<dyn Fn() -> String + Send + Sync>;

impl AppState {
    /// Shared state for the server: `[server]` and `[limits]` from `settings`, read from
    /// `config_file` (`None`: the built-in defaults), and `media`.
    pub fn new(
        settings: &Settings,
        config_file: Option<&std::path::Path>,
        media: Arc<dyn MediaService>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let limits = &settings.limits;
        let secure = settings.server.tls != crate::config::TlsMode::Off;
        Arc::new(AppState {
            media: tokio::sync::RwLock::new(Generation::new(media)),
            admission: Admission::new(AdmissionLimits {
                max_viewers: limits.max_viewers,
                max_pending_dials: limits.max_pending_dials,
                pending_dials_per_address: limits.pending_dials_per_address,
                dials_per_minute: limits.dials_per_minute,
            }),
            connection_slots: Arc::new(Semaphore::new(limits.max_connections)),
            room_slots: Arc::new(Semaphore::new((limits.max_connections / 2).max(2))),
            auth: Auth::new(
                settings.server.password.as_ref(),
                limits.login_failures_per_minute,
                secure,
            ),
            rooms: room::Rooms::default(),
            hosts: Hosts::new(&settings.server),
            limits: limits.clone(),
            loopback_candidates: serves_only_loopback(settings),
            resolver: settings
                .webrtc
                .resolve_mdns
                .then(|| crate::mdns::Resolver::multicast(settings.webrtc.ip_addresses.clone())),
            shutdown,
            tasks: TaskTracker::new(),
            whep: whep::WhepSessions::default(),
            snapshots: snapshot::Snapshots::default(),
            cors_origins: settings.server.cors_origins.clone(),
            ice_servers: std::sync::RwLock::new(settings.webrtc.ice_servers.clone().into()),
            extra_metrics: std::sync::Mutex::new(None),
            camera_name: settings.server.camera_name(),
            config_file: match config_file {
                Some(path) => path.display().to_string(),
                None => format!(
                    "{} (it does not exist yet: peercam runs on its built-in defaults)",
                    crate::config::DEFAULT_PATH
                ),
            },
        })
    }

    /// The current media (waits while a reload swaps it).
    pub async fn media(&self) -> Generation {
        self.media.read().await.clone()
    }

    /// Exclusive access for a reload: new viewers wait until the guard is dropped.
    pub async fn media_for_reload(&self) -> tokio::sync::RwLockWriteGuard<'_, Generation> {
        self.media.write().await
    }

    /// Adds `lines` to every `/metrics` answer (replacing what was set before).
    pub fn set_extra_metrics(&self, lines: ExtraMetrics) {
        *self.extra_metrics.lock().unwrap_or_else(|e| e.into_inner()) = Some(lines);
    }

    /// Viewers currently in a call.
    pub fn viewers_in_call(&self) -> usize {
        self.admission.viewers_in_call()
    }

    /// A new viewer session for `remote` on `generation`'s media, reached by `transport`.
    fn session(
        &self,
        generation: &Generation,
        remote: SocketAddr,
        transport: Transport,
    ) -> Session {
        Session::new(
            generation.media.clone(),
            self.admission.clone(),
            self.rules(),
            remote,
            socket::now(),
        )
        .with_transport(transport)
    }

    /// The per-connection rules of a viewer's session.
    fn rules(&self) -> Rules {
        Rules {
            max_message_bytes: self.limits.max_message_bytes,
            ice_timeout: Duration::from_secs(u64::from(self.limits.ice_timeout_s)),
            idle_timeout: Duration::from_secs(u64::from(self.limits.idle_timeout_s)),
            loopback_candidates: self.loopback_candidates,
            resolve_mdns: self.resolver.is_some(),
            ice_servers: self.page_ice_servers(),
            camera_name: Some(self.camera_name.clone()),
        }
    }

    /// `[webrtc] ice_servers` as configured now.
    fn ice_servers(&self) -> Arc<[crate::config::IceServer]> {
        // A poisoned lock still holds a whole list (it is only ever replaced).
        self.ice_servers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A reload's new `[webrtc] ice_servers`, for pages and WHEP clients from now on.
    pub fn set_ice_servers(&self, servers: &[crate::config::IceServer]) {
        *self
            .ice_servers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = servers.into();
    }

    /// `[webrtc] ice_servers` as a page gets them in `hello`, with TURN credentials made now
    /// from a server's secret.
    fn page_ice_servers(&self) -> Vec<IceServerInfo> {
        let now = std::time::SystemTime::now();
        self.ice_servers()
            .iter()
            .map(|server| {
                let server = server.credentials_at(now);
                IceServerInfo {
                    urls: server.urls,
                    username: server.username,
                    credential: server.credential,
                }
            })
            .collect()
    }
}

/// Whether the daemon listens only on loopback (tests, development): then its viewers are on
/// this machine and their loopback candidates are real.
fn serves_only_loopback(settings: &Settings) -> bool {
    settings.server.listen.ip().is_loopback()
}

/// A plain-text reply that is not cached: `body` and a line end (WHEP's and
/// `/snapshot.jpg`'s errors).
pub(crate) fn plain_text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

/// The router with every route. Everything but the page (which shows the login form when
/// needed), its stylesheet and the login itself requires a session when a password is set.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/app.js", get(app_js))
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_login::<AppState>,
        ));
    // Still-image clients (Home Assistant, NVRs, wget) may wait for a Basic challenge before
    // they send the password; no page fetches the snapshot, so no browser dialog covers the
    // login form.
    let snapshot = Router::new()
        .route("/snapshot.jpg", get(snapshot::get))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            snapshot::require_login,
        ));
    // WHEP checks the page's origin (CORS) and the password itself: a CORS preflight comes
    // without the password.
    let whep = Router::new()
        .route("/whep", post(whep::post).options(whep::options))
        .route(
            "/whep/{id}",
            axum::routing::patch(whep::patch)
                .delete(whep::delete)
                .options(whep::options),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), whep::gate));
    Router::new()
        .route("/", get(index))
        .route("/style.css", get(style_css))
        .route(
            "/login",
            post(login::<AppState>).layer(DefaultBodyLimit::max(MAX_LOGIN_BODY)),
        )
        .route("/logout", post(logout::<AppState>))
        .merge(protected)
        .merge(snapshot)
        .merge(whep)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            known_host::<AppState>,
        ))
        .with_state(state)
}

/// Without a password, refuses requests that name a host the daemon does not answer to: a
/// page on another domain that rebinds its name to the camera's address (DNS rebinding)
/// must not read it.
pub(crate) async fn known_host<S: Front>(
    State(state): State<Arc<S>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let authority = state.hosts().authority(request.headers());
    if !state.auth().is_open() || state.hosts().knows(authority) {
        return next.run(request).await;
    }
    let named = crate::logging::client_str(authority.unwrap_or_default());
    HOST_REFUSED.hit(|| format!("refusing a request from {remote} for the unknown host {named}"));
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "403 Forbidden: this camera does not answer to that name; open it by its address, \
         its host name, or a name listed in [server] hosts\n",
    )
        .into_response()
}

/// Serves until `state.shutdown` is cancelled: plain HTTP, or HTTPS with `tls`. Each
/// connection is its own task, admitted by [`connections::Connections`]: at most
/// `limits.connections_per_address` from one address, `2 * limits.max_connections + 16` in
/// all, `max_connections` of them before their first request (WebSockets alone are capped at
/// `max_connections` too).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let limits = &state.limits;
    let connections = Connections::new(
        limits.connections_per_address,
        limits.max_connections * 2 + 16,
        limits.max_connections,
    );
    serve_app(
        listener,
        router(state.clone()),
        connections,
        tls,
        state.shutdown.clone(),
        state.tasks.clone(),
    )
    .await
}

/// The accept loop of [`serve`], for any router (the relay's too): each connection admitted
/// by `connections`, its TLS handshake and requests bounded in time, served in a task of
/// `tasks` until `shutdown`.
pub(crate) async fn serve_app(
    listener: TcpListener,
    app: Router,
    connections: Arc<Connections>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> std::io::Result<()> {
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    log::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit(remote.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            match tls {
                None => serve_connection(stream, remote, slot, app, shutdown).await,
                Some(acceptor) => {
                    if let Some(stream) = tls_handshake(acceptor, stream, remote).await {
                        serve_connection(stream, remote, slot, app, shutdown).await;
                    }
                }
            }
        });
    }
}

/// The TLS handshake, bounded in time. A client speaking plain HTTP to the HTTPS port gets
/// a plain-text 400 that says to use https://.
async fn tls_handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // 0x16: a TLS handshake record. Anything else is most likely "GET / HTTP/1.1": send
    // the browser to the same place over https://.
    if first[0] != 0x16 {
        redirect_to_https(stream).await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            log::debug!("TLS handshake with {remote} failed: {e}");
            None
        }
        Err(_) => {
            log::debug!("TLS handshake with {remote} timed out");
            None
        }
    }
}

/// Answers a plain-HTTP request on the HTTPS port with a redirect to its `https://` URL (a
/// 400 saying to use https:// when the request head is not readable), within
/// [`HANDSHAKE_TIMEOUT`] and [`MAX_PLAIN_HEAD`] bytes.
async fn redirect_to_https(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while head.len() < MAX_PLAIN_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let reply = match (read, https_url(&head)) {
        (Ok(()), Some(url)) => format!(
            "HTTP/1.1 308 Permanent Redirect\r\nLocation: {url}\r\nContent-Type: text/plain; \
             charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{url}\n",
            url.len() + 1
        ),
        _ => {
            let body = "This port speaks HTTPS: open https:// instead of http://\n";
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Most of a plain-HTTP request head read to redirect it.
const MAX_PLAIN_HEAD: usize = 8 * 1024;

/// The `https://` URL for a plain-HTTP request head that reached the HTTPS port: its `Host`
/// and path, when both are well-formed (bounded, no spaces or control characters; a path
/// starting with `//` would make the `Location` point at another host).
fn https_url(head: &[u8]) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let path = request.nth(1)?;
    let host = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim())
    })?;
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let path_ok = path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 2048
        && path.bytes().all(|b| b.is_ascii_graphic());
    (host_ok && path_ok).then(|| format!("https://{host}{path}"))
}

/// HTTP/1.1 (with upgrades, for WebSockets) on one connection until it closes or the daemon
/// stops. Every request is answered within [`connections::REQUEST_DEADLINE`], body included
/// (408 and the connection closes otherwise); the request carries the connection's `slot`, so
/// an upgraded WebSocket keeps counting against its address.
async fn serve_connection<IO>(
    io: IO,
    remote: SocketAddr,
    slot: Arc<Connection>,
    app: Router,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            slot.proven();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(slot.clone());
            let app = app.clone();
            async move {
                match tokio::time::timeout(connections::REQUEST_DEADLINE, app.oneshot(request))
                    .await
                {
                    Ok(response) => response,
                    Err(_) => {
                        connections::deadline_hit(remote);
                        Ok((
                            StatusCode::REQUEST_TIMEOUT,
                            [(header::CONNECTION, "close")],
                            "408 Request Timeout: the request took too long\n",
                        )
                            .into_response())
                    }
                }
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                log::debug!("HTTP connection from {remote}: {e}");
            }
        }
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Refuses requests without a session or the right Bearer password (when a password is
/// set): 401 and nothing else, or 429 once the address spent its failure budget.
pub(crate) async fn require_login<S: Front>(
    State(state): State<Arc<S>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match login_refusal(state.auth(), remote, request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// The refusal for a request without a session or the right Bearer password (when a
/// password is set): 401, or 429 once the address spent its failure budget; `None`: it may
/// pass.
pub(crate) fn login_refusal(
    auth: &Auth,
    remote: SocketAddr,
    headers: &HeaderMap,
) -> Option<Response> {
    let text = |status, body: &'static str| {
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    };
    match auth.check(remote.ip(), headers) {
        Access::Allowed => None,
        Access::Refused => {
            let mut refused = text(
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized: log in on the page first, or send Authorization: Bearer \
                 <password> (or Basic, with any user name)\n",
            );
            // RFC 9110 asks a 401 to name a scheme. Bearer only: a Basic challenge would
            // make browsers pop up their own password dialog over the page's login form.
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"peercam\""),
            );
            Some(refused)
        }
        Access::TooMany(wait) => Some(with_retry_after(
            text(
                StatusCode::TOO_MANY_REQUESTS,
                "429 Too Many Requests: too many wrong passwords from your address\n",
            ),
            wait,
        )),
    }
}

/// Adds `Retry-After` (whole seconds, rounded up) to `response`.
fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    if let Ok(value) = (wait.as_secs() + 1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The Dial page, or the login form when a password is set and this browser has no session.
/// With no password the page carries a warning that anyone can watch.
async fn index(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(form) = login_form_for(&state.auth, remote, &headers) {
        return form;
    }
    dial_page(PageInfo {
        camera_name: &state.camera_name,
        open_in: state.auth.is_open().then_some(state.config_file.as_str()),
        password_key: "[server] password",
    })
}

/// The login form (or a 429) for a browser without a session; `None`: it may see the page.
pub(crate) fn login_form_for(
    auth: &Auth,
    remote: SocketAddr,
    headers: &HeaderMap,
) -> Option<Response> {
    match auth.check(remote.ip(), headers) {
        Access::Allowed => None,
        Access::Refused => Some(login_page(StatusCode::OK, "")),
        Access::TooMany(wait) => Some(too_many_failures(wait)),
    }
}

/// The login form with a 429 and `Retry-After`.
fn too_many_failures(wait: Duration) -> Response {
    let seconds = wait.as_secs() + 1;
    with_retry_after(
        login_page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed logins from your address: try again in {seconds} s."),
        ),
        wait,
    )
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"status\" data-state=\"failed\" role=\"alert\">{message}</p>")
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        LOGIN_HTML.replace("<!--message-->", &message),
    )
        .into_response()
}

/// The login form's body.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    password: String,
}

/// The request's `Origin` (or `Referer`), escaped and cut for the log.
pub(crate) fn origin_of(headers: &HeaderMap) -> String {
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    crate::logging::client_str(&origin).to_string()
}

/// `POST /login`: the right password sets the session cookie and goes back to the page. A
/// login posted by another site's page is refused before the password is looked at, so no
/// page elsewhere can spend this address's failure budget and lock the owner out.
pub(crate) async fn login<S: Front>(
    State(state): State<Arc<S>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !state.hosts().same_origin(&headers) {
        ORIGIN_REFUSED.hit(|| {
            format!(
                "refusing a login from {remote}: posted by another site's page ({})",
                origin_of(&headers)
            )
        });
        return login_page(
            StatusCode::FORBIDDEN,
            "This login came from another site's page; log in on this page.",
        );
    }
    match state.auth().login(remote.ip(), &form.password) {
        Login::Accepted(cookie) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "./".to_owned()),
                (header::SET_COOKIE, cookie),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response(),
        Login::Refused => login_page(StatusCode::UNAUTHORIZED, "Wrong password."),
        Login::TooMany(wait) => too_many_failures(wait),
    }
}

/// `POST /logout`: ends the session and shows the login form.
pub(crate) async fn logout<S: Front>(State(state): State<Arc<S>>, headers: HeaderMap) -> Response {
    let cleared = state.auth().logout(&headers);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "./".to_owned()),
            (header::SET_COOKIE, cleared),
        ],
    )
        .into_response()
}

pub(crate) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub(crate) async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Query string of `/ws`.
#[derive(Debug, Deserialize)]
struct WsQuery {
    /// Seed mode: link two browsers in this room.
    room: Option<String>,
}

async fn ws(
    slot: Option<axum::Extension<Arc<Connection>>>,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    State(state): State<Arc<AppState>>,
) -> Response {
    if !state.hosts.same_origin(&headers) {
        ORIGIN_REFUSED.hit(|| {
            format!(
                "refusing WebSocket from {remote}: its page comes from another site ({})",
                origin_of(&headers)
            )
        });
        return (
            StatusCode::FORBIDDEN,
            "403 Forbidden: WebSocket from a page of another site\n",
        )
            .into_response();
    }
    let Ok(permit) = state.connection_slots.clone().try_acquire_owned() else {
        let max = state.limits.max_connections;
        WS_LIMIT.hit(|| format!("refusing WebSocket from {remote}: {max} connections open"));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signaling connections; try again later\n",
        )
            .into_response();
    };
    let room_permit = match &query.room {
        None => None,
        Some(_) => {
            match state.room_slots.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    WS_LIMIT.hit(|| {
                    format!("refusing a room WebSocket from {remote}: half the connections are rooms")
                });
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many room connections; try again later\n",
                    )
                        .into_response();
                }
            }
        }
    };
    let upgrade = bounded_upgrade(upgrade, state.limits.max_message_bytes);
    // The upgraded socket runs in a task of axum's; the token keeps the daemon's stop
    // waiting for it.
    let token = state.tasks.token();
    upgrade.on_upgrade(move |ws| async move {
        let shutdown = state.shutdown.clone();
        match query.room {
            Some(name) => {
                let label = format!("room {}: {remote}", crate::logging::client_str(&name));
                match room::join(&state, &name, &label) {
                    Ok(member) => {
                        socket::run(socket::Socket::websocket(ws, label), member, shutdown, None)
                            .await
                    }
                    Err(body) => room::refuse(ws, body).await,
                }
            }
            None => {
                let generation = state.media().await;
                let session = state.session(&generation, remote, Transport::WebSocket);
                let lookups = lookups::NameLookups::new(state.resolver.clone());
                let label = format!("viewer {remote}");
                let viewers = state.admission.watch_viewers();
                let viewer =
                    viewer::Viewer::new(session, generation.media, lookups, viewers, label.clone());
                let socket = socket::Socket::websocket(ws, label);
                socket::run(socket, viewer, shutdown, Some(generation.retired)).await;
            }
        }
        drop(permit);
        drop(room_permit);
        drop(slot);
        drop(token);
    })
}

/// A signaling WebSocket's sizes: messages up to 4x `max_message_bytes` are read (and
/// answered with a clear "too_large" error); beyond that the socket is closed with 1009
/// (message too big). Buffers start small (tungstenite's default is 128 KiB each, allocated
/// up front: 4096 idle sockets would need half a gigabyte); they grow for the rare large
/// message, and unsent data is capped.
pub(crate) fn bounded_upgrade(
    upgrade: WebSocketUpgrade,
    max_message_bytes: usize,
) -> WebSocketUpgrade {
    let frame_limit = max_message_bytes.saturating_mul(4);
    upgrade
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER_BYTES)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let limits = &state.limits;
    let mut out = String::new();
    out.push_str(&format!(
        "peercam_viewers {}\npeercam_viewer_slots {}\npeercam_signaling_connections {}\n\
         peercam_pending_dials {}\npeercam_sessions {}\n",
        state.viewers_in_call(),
        limits.max_viewers,
        limits.max_connections - state.connection_slots.available_permits(),
        state.admission.pending_dials(),
        state.auth.session_count(),
    ));
    out.push_str("# Times each limit was hit.\n");
    for (name, hits) in connections::limit_hits()
        .into_iter()
        .chain([
            ("websockets", WS_LIMIT.hits()),
            ("origin", ORIGIN_REFUSED.hits()),
            ("unknown_host", HOST_REFUSED.hits()),
            ("login_failures", state.auth.limit_hits()),
            ("wrong_password", state.auth.failures()),
            ("cors_origins", whep::cors_refused()),
        ])
        .chain(socket::limit_hits())
        .chain(snapshot::limit_hits())
    {
        out.push_str(&format!(
            "peercam_limit_hits_total{{limit=\"{name}\"}} {hits}\n"
        ));
    }
    out.push_str(&state.whep.metrics_text());
    out.push_str(&state.snapshots.metrics_text());
    out.push_str(&relay_link::metrics_text());
    out.push_str(&crate::peer::ice_mux::metrics_text());
    out.push_str(&crate::peer::turn_watch::metrics_text());
    if let Some(lines) = &*state
        .extra_metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
    {
        out.push_str(&lines());
    }
    out.push_str(&process_metrics());
    out.push_str(&state.media().await.media.metrics_text());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
/// Leak detectors for the load and soak tests (and anyone watching a long-running camera):
/// the tokio tasks alive and the file descriptors the process holds.
fn process_metrics() -> String {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut out = format!("peercam_tasks {tasks}\n");
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The read_dir handle itself is one of them.
        let fds = dir.count().saturating_sub(1);
        out.push_str(&format!("peercam_open_fds {fds}\n"));
    }
    out
}

#[cfg(test)]
mod tests;
