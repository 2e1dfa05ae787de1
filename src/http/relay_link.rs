//! `[relay]`: the device's link out to a `peercam relay`. The device connects over `wss://`
//! (tokio-tungstenite over tokio-rustls with ring: the system's roots plus `[relay] ca_file`),
//! registers its name and token ([`relay_wire`]), and then serves the browsers the relay
//! forwards exactly as it serves its own `/ws` viewers: each relayed browser runs the same
//! [`Viewer`] conversation in the same [`socket::run`] loop, fed by the link instead of a
//! WebSocket, under the same limits (its address as the relay reports it; relayed sockets
//! take `[limits] max_connections` slots, at most half of them, and
//! `connections_per_address` per browser address).
//!
//! Every step has a deadline ([`STEP_DEADLINE`] for the TCP connect, the TLS handshake, the
//! WebSocket handshake and the registration answer); a link that hears nothing for
//! [`relay_wire::LINK_SILENCE`] is dropped (the device pings every
//! [`relay_wire::PING_INTERVAL`]). Then the device reconnects after 0.5 s, 1 s, 2 s, 4 s …
//! at most 30 s (±25 % jitter), starting again at 0.5 s after a link that stayed up for
//! [`STABLE_LINK`]. One log line per episode: the first failure of an outage is logged (and a
//! refusal that differs from it), repeats are not, and the registration after an outage says
//! how long it lasted.
//!
//! When the link drops, relayed viewers in a call keep their call (see [`socket`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use log::{debug, info, warn};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::lookups::NameLookups;
use super::socket::{self, Relayed, Socket};
use super::viewer::Viewer;
use super::AppState;
use crate::config::RelaySettings;
use crate::limits::{address_key, AddressCounts, LimitLog};
use crate::logging::client_str;
use crate::session::machine::Transport;
use crate::session::relay_wire::{self, Frame, Refusal, Register};

/// Deadline of each step of connecting: TCP, TLS, the WebSocket handshake, the answer to
/// `register`.
pub const STEP_DEADLINE: Duration = Duration::from_secs(10);
/// A link that stayed up this long resets the backoff.
pub const STABLE_LINK: Duration = Duration::from_secs(10);
/// The first wait before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Frames queued for the relay; browsers wait (up to the socket's write stall) when it is
/// full.
const LINK_QUEUE: usize = 256;
/// Messages queued per relayed browser; one more closes its socket.
const BROWSER_QUEUE: usize = 64;

/// Attempts to connect, for `/metrics`.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
/// 1 while registered.
static REGISTERED: AtomicU64 = AtomicU64::new(0);
/// Relayed browsers refused: `max_connections` slots, half of them, or their address's share.
static REFUSED: LimitLog = LimitLog::new("relayed sockets (half of [limits] max_connections)");
/// Relayed browser messages dropped because the browser's queue was full.
static QUEUE_DROPS: LimitLog = LimitLog::new("relayed browser queue");

/// `/metrics` lines of the relay link.
pub(super) fn metrics_text() -> String {
    format!(
        "peercam_relay_link_attempts_total {}\npeercam_relay_link_registered {}\n\
         peercam_limit_hits_total{{limit=\"relayed_sockets\"}} {}\n\
         peercam_limit_hits_total{{limit=\"relayed_queue\"}} {}\n",
        ATTEMPTS.load(Ordering::Relaxed),
        REGISTERED.load(Ordering::Relaxed),
        REFUSED.hits(),
        QUEUE_DROPS.hits(),
    )
}

/// Why a link could not be made or ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("TLS with the relay failed: {0} (a self-signed relay needs its certificate in [relay] ca_file)")]
    Tls(String),
    #[error("the WebSocket handshake with the relay failed: {0}")]
    Handshake(String),
    #[error("the relay refused this device ({}): {}", .0.code.as_str(), client_str(&.0.message))]
    Refused(Refusal),
    #[error("{0}")]
    Lost(String),
}

impl LinkError {
    /// What kind of failure this is: repeats of one kind are one episode in the log.
    fn kind(&self) -> String {
        match self {
            LinkError::Refused(r) => format!("refused {}", r.code.as_str()),
            LinkError::Connect(_) => "connect".to_owned(),
            LinkError::Tls(_) => "tls".to_owned(),
            LinkError::Handshake(_) => "handshake".to_owned(),
            LinkError::Lost(_) => "lost".to_owned(),
        }
    }
}

/// The stream under the WebSocket: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Link = WebSocketStream<Box<dyn Io>>;

/// Keeps the link to the relay up until the daemon stops.
pub async fn run(state: Arc<AppState>, settings: RelaySettings) {
    let tls = match client_config(&settings) {
        Ok(tls) => tls,
        Err(e) => {
            warn!("relay: {e}; not connecting to {}", settings.url.text);
            return;
        }
    };
    let mut backoff = Backoff::new();
    // The failure being reported (one line per episode), and since when.
    let mut episode: Option<(String, Instant)> = None;
    info!(
        "relay: connecting to {} as '{}'",
        settings.url.text, settings.name
    );
    loop {
        ATTEMPTS.fetch_add(1, Ordering::Relaxed);
        let attempt = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            attempt = connect(&settings, &tls) => attempt,
        };
        let error = match attempt {
            Ok(link) => {
                match episode.take() {
                    Some((_, since)) => info!(
                        "relay: registered as '{}' at {} (after {} s without the relay)",
                        settings.name,
                        settings.url.text,
                        since.elapsed().as_secs()
                    ),
                    None => info!(
                        "relay: registered as '{}' at {}; browsers dial it there",
                        settings.name, settings.url.text
                    ),
                }
                REGISTERED.store(1, Ordering::Relaxed);
                let up = Instant::now();
                let ended = serve(link, &state).await;
                REGISTERED.store(0, Ordering::Relaxed);
                if state.shutdown.is_cancelled() {
                    return;
                }
                if up.elapsed() >= STABLE_LINK {
                    backoff.reset();
                }
                ended
            }
            Err(e) => e,
        };
        // One line per outage: its first failure, and a refusal that differs from what was
        // said (a relay that comes back but refuses is news; "still down" is not).
        let kind = error.kind();
        let news = match &episode {
            None => true,
            Some((said, _)) => kind.starts_with("refused") && *said != kind,
        };
        if news {
            warn!(
                "relay: {error}; retrying (0.5 s, then doubling to 30 s apart; \
                 this is logged once until it changes)"
            );
            let since = episode.map_or_else(Instant::now, |(_, since)| since);
            episode = Some((kind, since));
        } else {
            debug!("relay: {error}");
        }
        let wait = backoff.next();
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The wait between attempts: doubling from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], each
/// drawn ±25 % so that devices cut off together do not come back together.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(MAX_BACKOFF);
        base.mul_f64(rand::random_range(0.75..=1.25))
    }
}

/// rustls with ring: the system's roots and the certificates of `[relay] ca_file`.
fn client_config(settings: &RelaySettings) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = &settings.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("[relay] ca_file: cannot read {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "[relay] ca_file: no \"BEGIN CERTIFICATE\" block in {}",
                path.display()
            ));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                format!(
                    "[relay] ca_file: a certificate in {} is not usable: {e}",
                    path.display()
                )
            })?;
        }
    } else if added == 0 && settings.url.tls {
        warn!("relay: no system certificates found; set [relay] ca_file to trust the relay");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects, upgrades and registers, each step within [`STEP_DEADLINE`].
async fn connect(
    settings: &RelaySettings,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Link, LinkError> {
    let url = &settings.url;
    let target = format!("{}:{}", url.host, url.port);
    let step = |what: &str| format!("{what} took longer than {} s", STEP_DEADLINE.as_secs());
    let tcp = tokio::time::timeout(
        STEP_DEADLINE,
        TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| LinkError::Connect(format!("{target}: {}", step("connecting"))))?
    .map_err(|e| LinkError::Connect(format!("{target}: {e} (is the relay running?)")))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if url.tls {
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| LinkError::Tls(format!("{}: {e}", url.host)))?;
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let stream = tokio::time::timeout(STEP_DEADLINE, connector.connect(name, tcp))
            .await
            .map_err(|_| LinkError::Tls(step("the handshake")))?
            .map_err(|e| LinkError::Tls(e.to_string()))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(relay_wire::MAX_FRAME_BYTES))
        .max_frame_size(Some(relay_wire::MAX_FRAME_BYTES));
    let (mut link, _) = tokio::time::timeout(
        STEP_DEADLINE,
        tokio_tungstenite::client_async_with_config(url.text.as_str(), io, Some(config)),
    )
    .await
    .map_err(|_| LinkError::Handshake(step("the handshake")))?
    .map_err(|e| LinkError::Handshake(e.to_string()))?;
    let register = Frame::Register(Register {
        version: relay_wire::VERSION,
        name: settings.name.clone(),
        token: settings.token.clone(),
    });
    let answer = tokio::time::timeout(STEP_DEADLINE, async {
        link.send(WsMessage::text(register.to_json())).await?;
        loop {
            match link.next().await {
                Some(Ok(WsMessage::Text(text))) => return Ok(Some(text)),
                Some(Ok(WsMessage::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
            }
        }
    })
    .await
    .map_err(|_| {
        LinkError::Lost(format!(
            "the relay did not answer the registration within {} s",
            STEP_DEADLINE.as_secs()
        ))
    })?
    .map_err(|e| LinkError::Lost(format!("the link broke while registering: {e}")))?;
    match answer.as_deref().map(Frame::parse) {
        Some(Ok(Frame::Registered { .. })) => Ok(link),
        Some(Ok(Frame::Refused(refusal))) => Err(LinkError::Refused(refusal)),
        Some(Ok(other)) => Err(LinkError::Lost(format!(
            "the relay answered the registration with {other:?}"
        ))),
        Some(Err(e)) => Err(LinkError::Lost(format!(
            "the relay answered the registration with something else: {}",
            client_str(&e)
        ))),
        None => Err(LinkError::Lost(
            "the relay closed the link without answering the registration".to_owned(),
        )),
    }
}

/// One relayed browser, as the link sees it.
struct Browser {
    to_viewer: mpsc::Sender<Relayed>,
}

/// Relayed browsers open now, per address and in all, shared by the link and the viewers'
/// tasks (which release their place when they end, even after the link went).
#[derive(Default)]
struct Places {
    per_address: AddressCounts,
    total: usize,
}

/// A relayed browser's place; given back when dropped.
struct Place {
    places: Arc<Mutex<Places>>,
    addr: std::net::IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
        places.per_address.remove(address_key(self.addr));
        places.total -= 1;
    }
}

/// Serves a registered link until it ends; says why it ended.
async fn serve(link: Link, state: &Arc<AppState>) -> LinkError {
    let (mut sink, mut stream) = link.split();
    let (to_link, mut outbox) = mpsc::channel::<Frame>(LINK_QUEUE);
    let mut browsers: HashMap<u64, Browser> = HashMap::new();
    let places = Arc::new(Mutex::new(Places::default()));
    let mut ping = tokio::time::interval(relay_wire::PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        let silence = heard + relay_wire::LINK_SILENCE;
        let write = tokio::select! {
            _ = state.shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_millis(200), sink.close()).await;
                return LinkError::Lost("stopping".to_owned());
            }
            _ = tokio::time::sleep_until(silence) => {
                return LinkError::Lost(format!(
                    "the relay link was silent for {} s",
                    relay_wire::LINK_SILENCE.as_secs()
                ));
            }
            _ = ping.tick() => WsMessage::Ping(Default::default()),
            Some(frame) = outbox.recv() => {
                if let Frame::Close { id } = frame {
                    browsers.remove(&id);
                }
                WsMessage::text(frame.to_json())
            }
            next = stream.next() => {
                heard = tokio::time::Instant::now();
                match next {
                    Some(Ok(WsMessage::Text(text))) => {
                        on_frame(text.as_str(), state, &mut browsers, &places, &to_link);
                        continue;
                    }
                    Some(Ok(WsMessage::Close(_))) | None => {
                        return LinkError::Lost("the relay closed the link".to_owned());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return LinkError::Lost(format!("the relay link broke: {e}")),
                }
            }
        };
        match tokio::time::timeout(STEP_DEADLINE, sink.send(write)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return LinkError::Lost(format!("the relay link broke: {e}")),
            Err(_) => {
                return LinkError::Lost(format!(
                    "the relay took nothing for {} s",
                    STEP_DEADLINE.as_secs()
                ))
            }
        }
    }
}

/// One frame from the relay.
fn on_frame(
    text: &str,
    state: &Arc<AppState>,
    browsers: &mut HashMap<u64, Browser>,
    places: &Arc<Mutex<Places>>,
    to_link: &mpsc::Sender<Frame>,
) {
    match Frame::parse(text) {
        Ok(Frame::Open { id, addr }) => {
            browsers.retain(|_, b| !b.to_viewer.is_closed());
            match open_viewer(state, id, addr, places, to_link) {
                Some(browser) => {
                    browsers.insert(id, browser);
                }
                None => {
                    let _ = to_link.try_send(Frame::Close { id });
                }
            }
        }
        Ok(Frame::Message { id, text }) => {
            let Some(browser) = browsers.get(&id) else {
                return;
            };
            if browser
                .to_viewer
                .try_send(Relayed::Text(text.into()))
                .is_err()
            {
                QUEUE_DROPS.hit(|| {
                    format!("relayed browser {id}: {BROWSER_QUEUE} messages unread; closing it")
                });
                browsers.remove(&id);
                let _ = to_link.try_send(Frame::Close { id });
            }
        }
        Ok(Frame::Close { id }) => {
            if let Some(browser) = browsers.remove(&id) {
                let _ = browser.to_viewer.try_send(Relayed::Closed);
            }
        }
        Ok(other) => debug!("relay: ignoring an unexpected frame {other:?}"),
        Err(e) => debug!("relay: ignoring a frame: {}", client_str(&e)),
    }
}

/// Starts the viewer of relayed browser `id` at `addr`, if the limits let it in.
fn open_viewer(
    state: &Arc<AppState>,
    id: u64,
    addr: SocketAddr,
    places: &Arc<Mutex<Places>>,
    to_link: &mpsc::Sender<Frame>,
) -> Option<Browser> {
    let limits = &state.limits;
    let per_link = (limits.max_connections / 2).max(1);
    let place = {
        let mut p = places.lock().unwrap_or_else(|e| e.into_inner());
        let key = address_key(addr.ip());
        let why = if p.total >= per_link {
            Some(format!(
                "{per_link} relayed browsers are connected (half of [limits] max_connections)"
            ))
        } else if p.per_address.get(key) >= limits.connections_per_address {
            Some(format!(
                "{} relayed browsers from its address ([limits] connections_per_address)",
                limits.connections_per_address
            ))
        } else {
            None
        };
        let permit = match why {
            Some(why) => Err(why),
            None => state
                .connection_slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| {
                    format!(
                        "{} connections are open ([limits] max_connections)",
                        limits.max_connections
                    )
                }),
        };
        match permit {
            Ok(permit) => {
                p.per_address.add(key);
                p.total += 1;
                Place {
                    places: places.clone(),
                    addr: addr.ip(),
                    _permit: permit,
                }
            }
            Err(why) => {
                REFUSED.hit(|| format!("refusing relayed browser {addr}: {why}"));
                return None;
            }
        }
    };
    let (to_viewer, from_link) = mpsc::channel(BROWSER_QUEUE);
    let state = state.clone();
    let to_link = to_link.clone();
    let token = state.tasks.token();
    tokio::spawn(async move {
        let generation = state.media().await;
        let session = state.session(&generation, addr, Transport::WebSocket);
        let lookups = NameLookups::new(state.resolver.clone());
        let label = format!("relayed viewer {addr}");
        let viewers = state.admission.watch_viewers();
        let viewer = Viewer::new(session, generation.media, lookups, viewers, label.clone());
        let socket = Socket::relayed(from_link, to_link, id, label);
        socket::run(
            socket,
            viewer,
            state.shutdown.clone(),
            Some(generation.retired),
        )
        .await;
        drop(place);
        drop(token);
    });
    Some(Browser { to_viewer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_30_s_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let bases = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0];
        for base in bases {
            let got = b.next().as_secs_f64();
            assert!(
                got >= base * 0.75 - 1e-9 && got <= base * 1.25 + 1e-9,
                "{got} for {base}"
            );
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(625));
    }
}
