//! The one HTTP port: the Dial page, the WebSocket signaling relay (`/ws`), and metrics.
//!
//! `/ws` serves viewers: each browser's offer is auto-answered by a peer of the daemon.
//! `/ws?room=NAME` is the seed tutorial's relay: it links exactly two browsers to each other.

mod room;
mod viewer;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::peer::PeerFactory;
use crate::pipeline::hub::MediaHub;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Open WebSocket connections allowed per configured viewer slot (viewers, room peers and
/// browsers that have not dialled yet all hold one).
const CONNECTIONS_PER_VIEWER: usize = 4;

/// The parts a configuration reload replaces: the media pipeline and the peer settings.
pub struct Media {
    /// The settings these were built from.
    pub settings: Settings,
    /// The shared encoders' outputs.
    pub hub: Arc<MediaHub>,
    /// Builds viewers' peer connections.
    pub peers: PeerFactory,
    /// Cancelled when a reload replaces this pipeline: its viewers are told to dial again.
    pub retired: CancellationToken,
}

impl Media {
    /// The media parts for `settings` around a started `hub`.
    pub fn new(settings: Settings, hub: Arc<MediaHub>) -> Arc<Media> {
        Arc::new(Media {
            peers: PeerFactory::new(settings.webrtc.clone()),
            settings,
            hub,
            retired: CancellationToken::new(),
        })
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    /// The configuration the daemon started with. `[server]` and `[limits]` keep these
    /// values until a restart; the media parts follow reloads (see [`AppState::media`]).
    pub settings: Settings,
    /// The current media pipeline; written only by a reload, which holds the lock while it
    /// swaps pipelines so new viewers wait for the new one.
    media: tokio::sync::RwLock<Arc<Media>>,
    /// One permit per viewer in a call (`limits.max_viewers`).
    pub viewer_slots: Arc<Semaphore>,
    /// One permit per open WebSocket.
    pub connection_slots: Arc<Semaphore>,
    /// Seed-mode rooms.
    pub rooms: room::Rooms,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Shared state for the server.
    pub fn new(settings: Settings, hub: Arc<MediaHub>, shutdown: CancellationToken) -> Arc<Self> {
        let max_viewers = settings.limits.max_viewers;
        Arc::new(AppState {
            media: tokio::sync::RwLock::new(Media::new(settings.clone(), hub)),
            viewer_slots: Arc::new(Semaphore::new(max_viewers)),
            connection_slots: Arc::new(Semaphore::new(max_viewers * CONNECTIONS_PER_VIEWER)),
            rooms: room::Rooms::default(),
            settings,
            shutdown,
        })
    }

    /// The current media pipeline (waits while a reload swaps it).
    pub async fn media(&self) -> Arc<Media> {
        self.media.read().await.clone()
    }

    /// The current media pipeline, or `None` while a reload is swapping it.
    pub fn try_media(&self) -> Option<Arc<Media>> {
        self.media.try_read().ok().map(|m| m.clone())
    }

    /// Exclusive access for a reload: new viewers wait until the guard is dropped.
    pub async fn media_for_reload(&self) -> tokio::sync::RwLockWriteGuard<'_, Arc<Media>> {
        self.media.write().await
    }

    /// Viewers currently in a call.
    pub fn viewers_in_call(&self) -> usize {
        self.settings.limits.max_viewers - self.viewer_slots.available_permits()
    }
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Serves until `state.shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
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
    upgrade: WebSocketUpgrade,
    Query(query): Query<WsQuery>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    State(state): State<Arc<AppState>>,
) -> Response {
    let Ok(permit) = state.connection_slots.clone().try_acquire_owned() else {
        log::warn!("refusing WebSocket from {remote}: connection limit reached");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signaling connections; try again later\n",
        )
            .into_response();
    };
    // Messages up to 4x the limit are read and answered with a clear "too_large" error;
    // beyond that the socket is closed with 1009 (message too big).
    let frame_limit = state.settings.limits.max_message_bytes.saturating_mul(4);
    let upgrade = upgrade
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit);
    match query.room {
        Some(name) => upgrade.on_upgrade(move |socket| async move {
            room::run(socket, name, remote, state).await;
            drop(permit);
        }),
        None => upgrade.on_upgrade(move |socket| async move {
            viewer::run(socket, remote, state).await;
            drop(permit);
        }),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    out.push_str(&format!(
        "peercam_viewers {}\npeercam_viewer_slots {}\npeercam_signaling_connections {}\n",
        state.viewers_in_call(),
        state.settings.limits.max_viewers,
        state.settings.limits.max_viewers * CONNECTIONS_PER_VIEWER
            - state.connection_slots.available_permits(),
    ));
    out.push_str(&state.media().await.hub.metrics_text());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
