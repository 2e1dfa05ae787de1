//! WHEP playback (draft-ietf-wish-whep): other software watches without the page. A client
//! `POST`s an `application/sdp` offer to `/whep` and gets `201 Created`, the answer (with
//! the daemon's ICE candidates in it: the daemon cannot trickle to a WHEP client), the
//! session's `Location` and an `ETag`; `PATCH` on that resource trickles the client's
//! candidates or restarts ICE (`application/trickle-ice-sdpfrag`), `DELETE` hangs up.
//!
//! Each WHEP session is the same sans-IO [`Session`] a WebSocket viewer has (admission, codec
//! choice, candidate checks, the ICE and DTLS deadlines), fed from HTTP requests, and takes
//! its media from the same encoders. Its task owns the call; requests on the resource reach
//! it as [`Command`]s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use log::{debug, info};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::lookups::NameLookups;
use super::media::{self, Call, MediaService};
use super::socket::{self, now};
use super::{plain_text as text, AppState};
use crate::config::IceServer;
use crate::deadline::sleep_until;
use crate::limits::{address_key, LimitLog};
use crate::logging::client_str;
use crate::peer::PEER_EVENT_CAPACITY;
use crate::session::machine::{Input, Output, Session, State as SessionState, Transport};
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::{ErrorBody, ErrorCode, Message, SdpKind, SessionDescription};
use crate::session::sdpfrag::{self, SdpFrag};

/// How long an answer waits for the daemon's ICE candidates (host candidates come at once;
/// server-reflexive ones need a STUN round trip). Candidates found later cannot reach the
/// client.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests queued for one session (`PATCH`, `DELETE`); one more gets 503.
const COMMAND_CAPACITY: usize = 4;

/// The media type of WHEP offers and answers.
const SDP: &str = "application/sdp";
/// The media type of `PATCH` bodies (RFC 8840).
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// WHEP requests from pages of origins not in `[server] cors_origins`.
static CORS_REFUSED: LimitLog = LimitLog::new("[server] cors_origins");

/// The WHEP sessions alive, by resource id.
#[derive(Default)]
pub struct WhepSessions {
    live: Mutex<HashMap<String, Handle>>,
    opened: AtomicU64,
}

/// How requests on a resource reach its session's task.
struct Handle {
    /// The address key ([`address_key`]) of the client that opened it.
    owner: IpAddr,
    commands: mpsc::Sender<Command>,
}

/// A request on a session's resource.
enum Command {
    /// `PATCH`: trickled candidates or an ICE restart.
    Patch {
        if_match: Option<String>,
        frag: SdpFrag,
        reply: oneshot::Sender<Response>,
    },
    /// `DELETE`: hang up.
    Delete { reply: oneshot::Sender<Response> },
}

/// WHEP requests refused for their page's origin, for `/metrics`.
pub(super) fn cors_refused() -> u64 {
    CORS_REFUSED.hits()
}

impl WhepSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prometheus lines: sessions alive and opened since the start.
    pub fn metrics_text(&self) -> String {
        format!(
            "peercam_whep_sessions {}\npeercam_whep_sessions_total {}\n",
            self.lock().len(),
            self.opened.load(Ordering::Relaxed)
        )
    }

    /// The command queue of resource `id`, if `remote` may use it; else the refusal.
    fn commands(&self, id: &str, remote: IpAddr) -> Result<mpsc::Sender<Command>, Box<Response>> {
        let live = self.lock();
        let Some(handle) = live.get(id) else {
            return Err(Box::new(text(
                StatusCode::NOT_FOUND,
                "404 Not Found: no such WHEP session (it ended, or never existed)",
            )));
        };
        if handle.owner != address_key(remote) {
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                "403 Forbidden: this WHEP session was opened from another address",
            )));
        }
        Ok(handle.commands.clone())
    }
}

/// Checks every `/whep` request before its handler: a browser page's `Origin` must be the
/// daemon's own or listed in `[server] cors_origins` (403 otherwise); a CORS preflight
/// (`OPTIONS`) is answered without the password, as browsers send it without one;
/// everything else needs the password or a session like every protected path. Responses to
/// allowed origins carry the CORS headers, errors included, so the player can read them.
pub(super) async fn gate(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let cors = match allowed_origin(&state, request.headers()) {
        Ok(cors) => cors,
        Err(origin) => {
            let shown = client_str(&origin);
            CORS_REFUSED.hit(|| format!("refusing WHEP from {remote}: a page on {shown}"));
            return text(
                StatusCode::FORBIDDEN,
                "403 Forbidden: WHEP from a page of another site; list its origin in \
                 [server] cors_origins to allow it",
            );
        }
    };
    let response = if request.method() == Method::OPTIONS {
        // ICE servers only for a client that shows the password (MediaMTX asks here).
        let authorized = super::login_refusal(&state.auth, remote, request.headers()).is_none();
        let links = if authorized {
            ice_server_links(&state.ice_servers())
        } else {
            Vec::new()
        };
        preflight(cors.is_some(), &links)
    } else {
        match super::login_refusal(&state.auth, remote, request.headers()) {
            Some(refusal) => refusal,
            None => next.run(request).await,
        }
    };
    with_cors(response, cors)
}

/// `Ok(Some(origin))`: a page on a `[server] cors_origins` origin; `Ok(None)`: no `Origin`
/// (a tool, not a browser) or the daemon's own page; `Err(origin)`: another site's page.
fn allowed_origin(state: &AppState, headers: &HeaderMap) -> Result<Option<HeaderValue>, String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let text = origin.to_str().unwrap_or_default().to_ascii_lowercase();
    if state.cors_origins.contains(&text) {
        return Ok(Some(origin.clone()));
    }
    if state.hosts.same_origin(headers) {
        return Ok(None);
    }
    Err(String::from_utf8_lossy(origin.as_bytes()).into_owned())
}

/// The answer to `OPTIONS`: what `/whep` takes, the ICE server `links`, and the CORS
/// preflight part when `cors`. `Access-Control-Allow-Methods` is always there: MediaMTX
/// trickles by `PATCH` when it lists it.
fn preflight(cors: bool, links: &[String]) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, POST, PATCH, DELETE"),
    );
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    headers.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, POST, PATCH, DELETE"),
    );
    add_links(headers, links);
    if cors {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, if-match"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

/// `response` with the CORS headers for `origin`, when there is one.
fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("location, etag, link, accept-patch, retry-after"),
        );
    }
    response
}

/// `OPTIONS /whep` and `/whep/{id}` (answered by [`gate`]).
pub(super) async fn options() -> Response {
    preflight(false, &[])
}

/// Adds one `Link` header per entry of `links`.
fn add_links(headers: &mut HeaderMap, links: &[String]) {
    for link in links {
        if let Ok(value) = HeaderValue::from_str(link) {
            headers.append(header::LINK, value);
        }
    }
}

/// `POST /whep`: answers an offer and opens a session.
pub(super) async fn post(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    if !has_content_type(request.headers(), SDP) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 Unsupported Media Type: send the offer with Content-Type: application/sdp",
        );
    }
    let limit = state.limits.max_message_bytes;
    let offer = match read_text(request, limit).await {
        Ok(offer) => offer,
        Err(response) => return response,
    };
    if !offer.trim_start().starts_with("v=0") {
        return text(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the body is not an SDP offer (an SDP starts with v=0)",
        );
    }
    let generation = state.media().await;
    let session = state.session(&generation, remote, Transport::Whep);
    let lookups = NameLookups::new(state.resolver.clone());
    let mut whep = WhepCall::new(session, generation.media, remote, offer.clone(), lookups);
    let answer = match whep.open(offer).await {
        Ok(answer) => answer,
        Err(body) => {
            whep.hang_up().await;
            return error_response(&body);
        }
    };
    let id = format!("{:032x}", rand::random::<u128>());
    let (commands, queue) = mpsc::channel(COMMAND_CAPACITY);
    state.whep.lock().insert(
        id.clone(),
        Handle {
            owner: address_key(remote.ip()),
            commands,
        },
    );
    state.whep.opened.fetch_add(1, Ordering::Relaxed);
    let etag = whep.etag.clone();
    let task_state = state.clone();
    let task_id = id.clone();
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        whep.run(queue, shutdown, generation.retired).await;
        task_state.whep.lock().remove(&task_id);
    });
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_owned()),
            (header::LOCATION, format!("/whep/{id}")),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::HeaderName::from_static("accept-patch"),
                SDPFRAG.to_owned(),
            ),
        ],
        answer,
    )
        .into_response();
    add_links(
        response.headers_mut(),
        &ice_server_links(&state.ice_servers()),
    );
    response
}

/// `PATCH /whep/{id}`: trickled candidates (204) or an ICE restart (200 with the daemon's
/// new credentials and candidates).
pub(super) async fn patch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let commands = match state.whep.commands(&id, remote.ip()) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    if !has_content_type(request.headers(), SDPFRAG) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 Unsupported Media Type: send Content-Type: application/trickle-ice-sdpfrag",
        );
    }
    let if_match = request
        .headers()
        .get(header::IF_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
    let body = match read_text(request, sdpfrag::MAX_SDPFRAG_BYTES).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let frag = match sdpfrag::parse(&body) {
        Ok(frag) => frag,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("400 Bad Request: not a trickle-ice-sdpfrag: {e}"),
            )
        }
    };
    let (reply, answer) = oneshot::channel();
    send(
        &commands,
        Command::Patch {
            if_match,
            frag,
            reply,
        },
        answer,
    )
    .await
}

/// `DELETE /whep/{id}`: hangs up.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    let commands = match state.whep.commands(&id, remote.ip()) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let (reply, answer) = oneshot::channel();
    send(&commands, Command::Delete { reply }, answer).await
}

/// Queues `command` for a session and waits for its reply (the request's own deadline
/// bounds the wait).
async fn send(
    commands: &mpsc::Sender<Command>,
    command: Command,
    answer: oneshot::Receiver<Response>,
) -> Response {
    match commands.try_send(command) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: this session is busy with other requests",
            )
        }
        Err(mpsc::error::TrySendError::Closed(_)) => return gone(),
    }
    answer.await.unwrap_or_else(|_| gone())
}

fn gone() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "404 Not Found: the WHEP session ended",
    )
}

/// Whether the request's `Content-Type` is `expected` (parameters ignored).
fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// The body as UTF-8 text of at most `limit` bytes.
async fn read_text(request: Request, limit: usize) -> Result<String, Response> {
    let Ok(body) = axum::body::to_bytes(request.into_body(), limit).await else {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("413 Content Too Large: the body is over {limit} bytes"),
        ));
    };
    String::from_utf8(body.to_vec()).map_err(|_| {
        text(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the body is not UTF-8 text",
        )
    })
}

/// The HTTP form of a session's refusal: a status for its code, the message as the body.
fn error_response(body: &ErrorBody) -> Response {
    let (status, retry) = match body.code {
        ErrorCode::NoCodec => (StatusCode::NOT_ACCEPTABLE, None),
        ErrorCode::ViewerLimit | ErrorCode::DialLimit => (StatusCode::SERVICE_UNAVAILABLE, Some(5)),
        ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, Some(10)),
        ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, None),
        ErrorCode::BadCandidate | ErrorCode::Unexpected => (StatusCode::UNPROCESSABLE_ENTITY, None),
        _ => (StatusCode::BAD_REQUEST, None),
    };
    let reason = status.canonical_reason().unwrap_or_default();
    let mut response = text(
        status,
        &format!("{} {reason}: {}", status.as_u16(), body.message),
    );
    if let Some(seconds) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `Link` header values offering the daemon's ICE servers (RFC 9725 section 4.6).
fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    let quoted = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let now = std::time::SystemTime::now();
    let mut links = Vec::new();
    for server in servers.iter().map(|s| s.credentials_at(now)) {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quoted(user),
                    quoted(credential)
                ));
            }
            links.push(link);
        }
    }
    links
}

/// An `ETag` for the ICE session whose local credentials are in `answer` (a restart
/// changes it).
fn etag_of(answer: &str) -> String {
    let ufrag = sdpfrag::ice_credentials(answer)
        .map(|(ufrag, _)| ufrag)
        .unwrap_or_default();
    format!("\"{ufrag}\"")
}

/// What the session said to its client while it was run (collected, as WHEP replies once
/// per request).
#[derive(Debug, Default)]
struct Said {
    answer: Option<String>,
    errors: Vec<ErrorBody>,
    candidates: Vec<String>,
    gathered: bool,
}

/// One WHEP viewer: its session, its call, and what a restart needs.
struct WhepCall {
    session: Session,
    media: Arc<dyn MediaService>,
    call: Option<Box<dyn Call>>,
    peer_tx: mpsc::Sender<PeerEvent>,
    peer_rx: mpsc::Receiver<PeerEvent>,
    deadline: Option<Instant>,
    label: String,
    /// The client's offer as last applied (an ICE restart changes its credentials).
    offer: String,
    /// The current `ETag`.
    etag: String,
    /// The daemon's candidates as last sent (an ICE restart keeps them when webrtc-rs
    /// gathers none anew).
    local_candidates: Vec<String>,
    /// The client's `.local` names being resolved.
    lookups: NameLookups,
}

impl WhepCall {
    fn new(
        session: Session,
        media: Arc<dyn MediaService>,
        remote: SocketAddr,
        offer: String,
        lookups: NameLookups,
    ) -> WhepCall {
        let (peer_tx, peer_rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        WhepCall {
            session,
            media,
            call: None,
            peer_tx,
            peer_rx,
            deadline: None,
            label: format!("{} {remote}", Transport::Whep.label()),
            offer,
            etag: String::new(),
            local_candidates: Vec::new(),
            lookups,
        }
    }

    /// Answers `offer`: the answer SDP with the daemon's candidates, or why not.
    async fn open(&mut self, offer: String) -> Result<String, ErrorBody> {
        let mut said = Said::default();
        self.perform(&mut said).await; // the hello, which WHEP has no use for
        let offer = Message::Sdp(SessionDescription {
            kind: SdpKind::Offer,
            sdp: offer,
        });
        self.session.handle_input(Input::Message(offer), now());
        self.perform(&mut said).await;
        if let Some(error) = said.errors.into_iter().next() {
            return Err(error);
        }
        let Some(answer) = said.answer.take() else {
            return Err(ErrorBody {
                code: ErrorCode::Internal,
                message: "no answer was made".to_owned(),
                retry_after_ms: None,
            });
        };
        let mut said = Said::default();
        self.gather(&mut said).await;
        self.etag = etag_of(&answer);
        self.local_candidates = said.candidates;
        Ok(sdpfrag::with_candidates(
            &answer,
            &self.local_candidates,
            said.gathered,
        ))
    }

    /// Runs the session until it ends: requests on the resource, peer events, deadlines,
    /// the daemon's stop and reloads.
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        retired: CancellationToken,
    ) {
        while matches!(
            self.session.state(),
            SessionState::Answering | SessionState::Active
        ) {
            let mut said = Said::default();
            let deadline = self.deadline;
            tokio::select! {
                _ = shutdown.cancelled() => self.session.handle_input(Input::Shutdown, now()),
                _ = retired.cancelled() => self.session.handle_input(Input::Reload, now()),
                command = commands.recv() => match command {
                    Some(Command::Patch { if_match, frag, reply }) => {
                        let response = self.patch(if_match, frag).await;
                        let _ = reply.send(response);
                        continue;
                    }
                    Some(Command::Delete { reply }) => {
                        self.hang_up().await;
                        let _ = reply.send(text(StatusCode::OK, "the call ended"));
                        break;
                    }
                    None => break,
                },
                Some(event) = self.peer_rx.recv() => {
                    self.session.handle_input(Input::Peer(event), now());
                }
                (name, address) = self.lookups.next() => {
                    self.session.handle_input(Input::Resolved { name, address }, now());
                }
                _ = sleep_until(deadline) => self.session.handle_timeout(now()),
            }
            self.perform(&mut said).await;
            for error in said.errors {
                info!(
                    "{}: {}",
                    self.label,
                    client_str(&error.message).max(socket::LOGGED_MESSAGE_CHARS)
                );
            }
        }
        self.hang_up().await;
        info!("{} left", self.label);
    }

    /// A `PATCH`: an ICE restart when the fragment has new credentials, then its candidates.
    async fn patch(&mut self, if_match: Option<String>, frag: SdpFrag) -> Response {
        if let Some(tag) = if_match.filter(|t| t != "*") {
            if tag != self.etag {
                return text(
                    StatusCode::PRECONDITION_FAILED,
                    "412 Precondition Failed: If-Match does not name this session's current ICE \
                     session (its ETag)",
                );
            }
        }
        let current = sdpfrag::ice_credentials(&self.offer).map(|(ufrag, _)| ufrag);
        let mut said = Said::default();
        let restart = match (&frag.ice_ufrag, &frag.ice_pwd) {
            (Some(ufrag), Some(pwd)) if current.as_ref() != Some(ufrag) => {
                let offer = sdpfrag::with_ice_credentials(&self.offer, ufrag, pwd);
                self.session.handle_input(
                    Input::RestartIce {
                        offer_sdp: offer.clone(),
                    },
                    now(),
                );
                self.perform(&mut said).await;
                match said.answer.take() {
                    Some(answer) if said.errors.is_empty() => {
                        self.offer = offer;
                        Some(answer)
                    }
                    _ => return self.refusal(said.errors),
                }
            }
            _ => None,
        };
        for candidate in frag.candidates {
            let message = Message::Candidate(Some(candidate));
            self.session.handle_input(Input::Message(message), now());
        }
        if frag.end_of_candidates {
            self.session
                .handle_input(Input::Message(Message::Candidate(None)), now());
        }
        self.perform(&mut said).await;
        let Some(answer) = restart else {
            if !said.errors.is_empty() {
                return self.refusal(said.errors);
            }
            return StatusCode::NO_CONTENT.into_response();
        };
        // The restart's candidates: new ones if webrtc-rs gathers again, else the ones it
        // keeps. Then its credentials in the reply.
        let mut gathered = Said::default();
        self.gather(&mut gathered).await;
        if !gathered.candidates.is_empty() {
            self.local_candidates = gathered.candidates;
        }
        self.etag = etag_of(&answer);
        let (ufrag, pwd) = sdpfrag::ice_credentials(&answer).unwrap_or_default();
        let body = sdpfrag::restart_reply(
            &ufrag,
            &pwd,
            &sdpfrag::mids(&answer),
            &self.local_candidates,
        );
        info!("{}: ICE restart", self.label);
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, SDPFRAG.to_owned()),
                (header::ETAG, self.etag.clone()),
            ],
            body,
        )
            .into_response()
    }

    /// The reply for a request the session refused.
    fn refusal(&self, errors: Vec<ErrorBody>) -> Response {
        match errors.first() {
            Some(first) => {
                debug!("{}: {}", self.label, client_str(&first.message));
                error_response(first)
            }
            None => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error: the request had no answer",
            ),
        }
    }

    /// Collects the daemon's candidates until gathering completes or [`GATHER_TIMEOUT`].
    async fn gather(&mut self, said: &mut Said) {
        let until = tokio::time::Instant::now() + GATHER_TIMEOUT;
        while !said.gathered {
            match tokio::time::timeout_at(until, self.peer_rx.recv()).await {
                Ok(Some(event)) => {
                    self.session.handle_input(Input::Peer(event), now());
                    self.perform(said).await;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Performs the session's outputs until it waits; what it says to the client goes into
    /// `said`.
    async fn perform(&mut self, said: &mut Said) {
        loop {
            match self.session.poll_output() {
                Output::Timeout(at) => {
                    self.deadline = at;
                    return;
                }
                Output::Send(Message::Sdp(answer)) => said.answer = Some(answer.sdp),
                Output::Send(Message::Error(body)) => said.errors.push(body),
                Output::Send(Message::Candidate(Some(c))) => said.candidates.push(c.candidate),
                Output::Send(Message::Candidate(None)) => said.gathered = true,
                // The hello, bitrate notes and bye: WHEP has no channel for them.
                Output::Send(_) | Output::CloseSocket => {}
                Output::StartPeer { offer_sdp, plan } => {
                    let ready = self.start_peer(offer_sdp, &plan).await;
                    self.session.handle_input(Input::PeerReady(ready), now());
                }
                Output::AddCandidate(candidate) => {
                    if let Some(call) = &self.call {
                        if let Err(e) = call.add_remote_candidate(&candidate).await {
                            self.session
                                .handle_input(Input::CandidateRejected(e), now());
                        }
                    }
                }
                Output::Resolve(name) => self.lookups.start(name),
                Output::EndOfRemoteCandidates => {
                    if let Some(call) = &self.call {
                        if let Err(e) = call.end_of_remote_candidates().await {
                            debug!("{}: end of candidates: {e}", self.label);
                        }
                    }
                }
                Output::RestartIce { offer_sdp } => {
                    if let Some(call) = &self.call {
                        match call.restart_ice(offer_sdp).await {
                            Ok(answer) => said.answer = Some(answer),
                            Err(e) => said.errors.push(ErrorBody {
                                code: ErrorCode::BadSdp,
                                message: format!("the ICE restart failed: {e}"),
                                retry_after_ms: None,
                            }),
                        }
                    }
                }
                Output::ClosePeer => self.hang_up().await,
                Output::LimitHit(limit) => socket::limit_hit(&self.label, &limit),
            }
        }
    }

    /// Builds the call for an admitted offer.
    async fn start_peer(
        &mut self,
        offer_sdp: String,
        plan: &AnswerPlan,
    ) -> Result<String, ErrorBody> {
        let answered = media::answer_logged(
            &*self.media,
            &self.label,
            offer_sdp,
            plan,
            self.peer_tx.clone(),
        )
        .await?;
        self.call = Some(answered.call);
        Ok(answered.answer_sdp)
    }

    async fn hang_up(&mut self) {
        if let Some(call) = self.call.take() {
            call.close().await;
            info!("{}: call ended", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_server_links(&[
            IceServer {
                urls: vec!["stun:stun.example.org:3478".to_owned()],
                username: None,
                credential: None,
                secret: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.org?transport=udp".to_owned()],
                username: Some("cam".to_owned()),
                credential: Some("se\"cret".to_owned()),
                secret: None,
            },
        ]);
        assert_eq!(
            links,
            [
                "<stun:stun.example.org:3478>; rel=\"ice-server\"",
                "<turn:turn.example.org?transport=udp>; rel=\"ice-server\"; username=\"cam\"; \
                 credential=\"se\\\"cret\"; credential-type=\"password\"",
            ]
        );
    }

    #[test]
    fn refusals_get_statuses_that_name_the_problem() {
        let status = |code| {
            let r = error_response(&ErrorBody::new(code, "m"));
            (
                r.status().as_u16(),
                r.headers().contains_key(header::RETRY_AFTER),
            )
        };
        assert_eq!(status(ErrorCode::NoCodec), (406, false));
        assert_eq!(status(ErrorCode::BadSdp), (400, false));
        assert_eq!(status(ErrorCode::ViewerLimit), (503, true));
        assert_eq!(status(ErrorCode::DialLimit), (503, true));
        assert_eq!(status(ErrorCode::RateLimited), (429, true));
        assert_eq!(status(ErrorCode::Internal), (500, false));
    }
}
