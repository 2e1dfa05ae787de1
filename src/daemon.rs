//! Start and stop of everything: the media hub, the HTTP server, signal handling.
//!
//! Shutdown: SIGINT or SIGTERM cancels one token; every WebSocket task says `bye`, closes its
//! peer and ends; the HTTP server stops accepting; the media threads stop. The whole stop is
//! bounded by [`SHUTDOWN_GRACE`] so the process exits within a second.

use std::time::Duration;

use log::{error, info, warn};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::pipeline::hub::{HubError, MediaHub};

/// How long connections get to close after a stop signal before the server is dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(600);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The async runtime could not be created.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another peercam or web server using it? set [server] listen or --listen)")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
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
}

/// Runs the daemon until SIGINT or SIGTERM. Blocking; builds its own tokio runtime.
pub fn run(settings: Settings) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("peercam-io")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let result = runtime.block_on(serve(settings));
    // Tasks still running (peers mid-close) are abandoned rather than waited for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn serve(settings: Settings) -> Result<(), DaemonError> {
    let shutdown = CancellationToken::new();
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let addr = settings.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(DaemonError::Serve)?;
    let hub = MediaHub::start(&settings)?;
    let state = AppState::new(settings, hub.clone(), shutdown.clone());
    info!("peercam listening on http://{local}/");

    let mut server = tokio::spawn(http::serve(listener, state));
    let outcome = tokio::select! {
        _ = sigterm.recv() => { info!("SIGTERM: stopping"); Ok(()) }
        _ = sigint.recv() => { info!("SIGINT: stopping"); Ok(()) }
        r = &mut server => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DaemonError::Serve(e)),
            Err(e) => Err(DaemonError::Serve(std::io::Error::other(e.to_string()))),
        },
    };
    shutdown.cancel();
    if !server.is_finished()
        && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
            .await
            .is_err()
    {
        warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
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
