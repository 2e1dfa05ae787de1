//! One viewer's signaling conversation as a value, sans-IO: messages, peer events, media
//! events and the current time go in; messages to send, peer actions and the next deadline
//! come out (in the manner of str0m's `handle_input` / `poll_output` / `Output::Timeout`).
//!
//! Every rule of the conversation is decided here and tested in memory: the protocol errors,
//! codec choice, admission (viewer limit, dials still connecting, dials a minute per address:
//! [`Admission`]), the ICE deadline (`[limits] ice_timeout_s`), the idle deadline
//! (`idle_timeout_s`) and the bitrate notices. A transport (the WebSocket in `http/`, later
//! WHEP) only feeds inputs, performs the outputs and sleeps until the deadline; nothing here
//! touches a socket, a clock or webrtc-rs.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::h264::ProfileLevelId;
use crate::media::VideoCodec;
use crate::session::admission::{Admission, Refusal, Ticket};
use crate::session::codec;
use crate::session::mdns::{self, HoldRefused, Lookups};
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::{
    self, BitrateTarget, Bye, ByeReason, ErrorBody, ErrorCode, Hello, IceCandidate, IceServerInfo,
    Message, SdpKind, SessionDescription, ViewerCount, PROTOCOL_VERSION,
};
use crate::session::sdp::{self, CandidateAddress, Direction, MediaKind};
use crate::session::sdpfrag;

/// What the session needs to know about the media it can send; asked at each offer, so a
/// camera that starts sending H.264 is passed through from the next call on.
pub trait MediaInfo: Send + Sync {
    /// The video codecs being encoded, in the configured preference order.
    fn video_codecs(&self) -> Vec<VideoCodec>;
    /// Whether Opus audio is sent.
    fn has_audio(&self) -> bool;
    /// The camera's H.264 profile when its stream can be passed through.
    fn camera_h264(&self) -> Option<ProfileLevelId>;
}

/// The per-connection rules (from `[limits]`), and the ICE servers the browser is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Largest text message accepted (`max_message_bytes`).
    pub max_message_bytes: usize,
    /// A call must connect within this (`ice_timeout_s`).
    pub ice_timeout: Duration,
    /// A connection without a call that sends nothing this long is closed (`idle_timeout_s`).
    pub idle_timeout: Duration,
    /// Accept loopback candidates: the daemon itself serves only on loopback (tests,
    /// development). Otherwise a loopback candidate can only be an attempt to make the daemon
    /// send STUN to its own services.
    pub loopback_candidates: bool,
    /// Resolve browsers' `<uuid>.local` candidates ([`Output::Resolve`]); otherwise they go
    /// to the peer as they are, which ignores them (`[webrtc] resolve_mdns`).
    pub resolve_mdns: bool,
    /// The STUN and TURN servers `hello` gives the browser (with its TURN credentials).
    pub ice_servers: Vec<IceServerInfo>,
    /// The camera's name `hello` gives the page (`[server] name`); `None`: not said.
    pub camera_name: Option<String>,
}

/// Remote ICE candidates accepted per call; more are dropped (browsers send a handful).
pub const MAX_REMOTE_CANDIDATES: usize = 20;

/// Time the DTLS handshake gets once ICE has connected. On a LAN it takes milliseconds; a
/// handshake that fails (the offer's certificate fingerprint is not the peer's) never ends,
/// and its dial slot is freed at this deadline rather than at `ice_timeout_s`.
pub const DTLS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the conversation with one browser stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected, no offer yet (or the last call hung up).
    Idle,
    /// An offer was admitted; the peer is being built.
    Answering,
    /// The answer was sent; ICE/DTLS is under way or media flows.
    Active,
    /// The conversation is over; the connection closes.
    Closed,
}

/// Something that happened to the session.
#[derive(Debug)]
pub enum Input<'a> {
    /// A text message from the browser.
    Text(&'a str),
    /// A message a transport read itself (WHEP reads SDP and SDP fragments from HTTP
    /// requests); it counts as a sign of life like a text message.
    Message(Message),
    /// The client restarts ICE on the live call with this offer (the first one with its new
    /// credentials: WHEP's `PATCH`).
    RestartIce {
        /// The offer to apply.
        offer_sdp: String,
    },
    /// A binary message from the browser (the protocol is JSON text).
    Binary,
    /// Any other sign of life from the browser (a ping or pong).
    Heard,
    /// The peer for the last [`Output::StartPeer`] is ready: the answer SDP, or why not.
    PeerReady(Result<String, ErrorBody>),
    /// An event from the live peer.
    Peer(PeerEvent),
    /// The browser's candidate was rejected by the peer.
    CandidateRejected(String),
    /// The answer to [`Output::Resolve`]: the name's address, or `None` if it did not resolve.
    Resolved {
        /// The name as asked.
        name: String,
        /// Its address.
        address: Option<IpAddr>,
    },
    /// The encoder's adaptive bitrate target changed (kbit/s).
    Bitrate(u32),
    /// The number of viewers in a call changed (the transport coalesces bursts).
    Viewers(usize),
    /// The daemon is shutting down.
    Shutdown,
    /// The configuration was reloaded with new media settings: end the call and close the
    /// connection (the page reconnects and dials again).
    Reload,
}

/// A limit that refused or ended something; the transport counts it for `/metrics` and logs
/// it (throttled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// A dial was refused by [`Admission`].
    Refused(Refusal),
    /// A call did not connect within `ice_timeout_s`.
    IceTimeout {
        /// `[limits] ice_timeout_s`.
        seconds: u64,
    },
    /// A connection without a call was silent for `idle_timeout_s`.
    IdleTimeout {
        /// `[limits] idle_timeout_s`.
        seconds: u64,
    },
    /// ICE connected but DTLS did not complete within [`DTLS_TIMEOUT`].
    DtlsTimeout,
    /// A call's remote candidates went over [`MAX_REMOTE_CANDIDATES`]; the rest is dropped.
    RemoteCandidates,
    /// A remote candidate pointed where the daemon must not send STUN (unspecified,
    /// loopback, multicast, broadcast, port 0); it was dropped.
    CandidateAddress {
        /// Why, with the address.
        reason: String,
    },
}

impl Limit {
    /// The name in `peercam_limit_hits_total{limit="…"}`.
    pub fn metric(&self) -> &'static str {
        match self {
            Limit::Refused(Refusal::Viewers { .. }) => "viewers",
            Limit::Refused(Refusal::PendingDials { .. }) => "pending_dials",
            Limit::Refused(Refusal::PendingDialsFrom { .. }) => "pending_dials_per_address",
            Limit::Refused(Refusal::DialRate { .. }) => "dials_per_minute",
            Limit::IceTimeout { .. } => "ice_timeout",
            Limit::IdleTimeout { .. } => "idle_timeout",
            Limit::DtlsTimeout => "dtls_timeout",
            Limit::RemoteCandidates => "remote_candidates",
            Limit::CandidateAddress { .. } => "candidate_address",
        }
    }

    /// Every metric name, for counters that start at zero.
    pub const METRICS: [&'static str; 9] = [
        "viewers",
        "pending_dials",
        "pending_dials_per_address",
        "dials_per_minute",
        "ice_timeout",
        "idle_timeout",
        "dtls_timeout",
        "remote_candidates",
        "candidate_address",
    ];

    /// The config key that sets the limit.
    pub fn key(&self) -> &'static str {
        match self {
            Limit::Refused(Refusal::Viewers { .. }) => "[limits] max_viewers",
            Limit::Refused(Refusal::PendingDials { .. }) => "[limits] max_pending_dials",
            Limit::Refused(Refusal::PendingDialsFrom { .. }) => {
                "[limits] pending_dials_per_address"
            }
            Limit::Refused(Refusal::DialRate { .. }) => "[limits] dials_per_minute",
            Limit::IceTimeout { .. } => "[limits] ice_timeout_s",
            Limit::IdleTimeout { .. } => "[limits] idle_timeout_s",
            Limit::DtlsTimeout => "5 s for DTLS after ICE",
            Limit::RemoteCandidates => "20 remote candidates per call",
            Limit::CandidateAddress { .. } => "remote candidate address check",
        }
    }

    /// What happened, for the log.
    pub fn describe(&self) -> String {
        match self {
            Limit::Refused(Refusal::DialRate { ip, per_minute, .. }) => {
                format!("refusing a dial: over {per_minute} dials a minute from {ip}")
            }
            Limit::Refused(Refusal::Viewers { max }) => {
                format!("refusing a dial: {max} viewers in a call")
            }
            Limit::Refused(Refusal::PendingDials { max }) => {
                format!("refusing a dial: {max} dials are connecting")
            }
            Limit::Refused(Refusal::PendingDialsFrom { ip, max }) => {
                format!("refusing a dial: {max} dials from {ip} are connecting")
            }
            Limit::IceTimeout { seconds } => {
                format!("closing a call that did not connect within {seconds} s")
            }
            Limit::IdleTimeout { seconds } => format!("closing a socket idle for {seconds} s"),
            Limit::DtlsTimeout => "closing a call whose DTLS handshake did not complete \
                 (a certificate fingerprint that is not the peer's?)"
                .to_owned(),
            Limit::RemoteCandidates => {
                format!("dropping remote candidates past {MAX_REMOTE_CANDIDATES} in one call")
            }
            Limit::CandidateAddress { reason } => format!("dropping a remote candidate: {reason}"),
        }
    }
}

#[cfg(test)]
impl Limit {
    /// One limit of each kind, for the tests of whoever counts them.
    pub(crate) fn samples() -> Vec<Limit> {
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        vec![
            Limit::Refused(Refusal::Viewers { max: 1 }),
            Limit::Refused(Refusal::PendingDials { max: 1 }),
            Limit::Refused(Refusal::PendingDialsFrom { ip, max: 1 }),
            Limit::Refused(Refusal::DialRate {
                ip,
                per_minute: 1,
                wait: Duration::from_secs(1),
            }),
            Limit::IceTimeout { seconds: 1 },
            Limit::IdleTimeout { seconds: 1 },
            Limit::DtlsTimeout,
            Limit::RemoteCandidates,
            Limit::CandidateAddress {
                reason: "0.0.0.0:9 is the unspecified address".to_owned(),
            },
        ]
    }
}

/// What the transport must do, in order.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send this message to the browser.
    Send(Message),
    /// Build a peer answering this offer per `plan` (admission is already granted), then
    /// feed back [`Input::PeerReady`].
    StartPeer {
        /// The browser's offer SDP.
        offer_sdp: String,
        /// Codecs and payload types to answer with.
        plan: AnswerPlan,
    },
    /// Give this remote candidate to the peer.
    AddCandidate(IceCandidate),
    /// Resolve this browser's mDNS name (`<uuid>.local`, checked by
    /// [`mdns::is_browser_name`]) and feed back [`Input::Resolved`]; its candidates wait.
    Resolve(String),
    /// Restart ICE on the live peer with this offer; the call has `ice_timeout_s` again to
    /// connect.
    RestartIce {
        /// The offer with the client's new credentials.
        offer_sdp: String,
    },
    /// The browser has no more candidates.
    EndOfRemoteCandidates,
    /// Close the current peer (hang up).
    ClosePeer,
    /// Close the connection.
    CloseSocket,
    /// A limit was hit: count and log it.
    LimitHit(Limit),
    /// Nothing more to do until this instant ([`Session::handle_timeout`]) or the next input;
    /// `None`: until the next input.
    Timeout(Option<Instant>),
}

/// The call in progress: its admission and, until it connects, its ICE deadline.
#[derive(Debug)]
struct Call {
    ticket: Ticket,
    offered_at: Instant,
    ice_deadline: Option<Instant>,
    /// When ICE connected, while DTLS has not (the deadline is then at most [`DTLS_TIMEOUT`]
    /// later).
    ice_connected_at: Option<Instant>,
    /// Remote candidates accepted so far.
    remote_candidates: usize,
    /// `.local` names being resolved, with their candidates.
    lookups: Lookups,
    /// The browser's end-of-candidates, held until the lookups end.
    end_after_lookups: bool,
    /// ICE is being restarted on the connected call (DTLS stays up: ICE connecting again
    /// is all it takes).
    restarting: bool,
}

/// How a viewer reached the daemon, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The page's WebSocket (`/ws`).
    WebSocket,
    /// WHEP (`POST /whep`).
    Whep,
}

impl Transport {
    /// The word that starts this viewer's log lines.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "viewer",
            Transport::Whep => "WHEP viewer",
        }
    }
}

/// One browser's signaling conversation.
pub struct Session {
    state: State,
    transport: Transport,
    remote: SocketAddr,
    media: Arc<dyn MediaInfo>,
    admission: Arc<Admission>,
    rules: Rules,
    call: Option<Call>,
    last_heard: Instant,
    /// Remote candidates that arrived while the peer was being built.
    pending: Vec<Option<IceCandidate>>,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("remote", &self.remote)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a browser that connected from `remote` at `now`; its first output
    /// greets the browser with `hello`.
    pub fn new(
        media: Arc<dyn MediaInfo>,
        admission: Arc<Admission>,
        rules: Rules,
        remote: SocketAddr,
        now: Instant,
    ) -> Session {
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            server: Some(format!("peercam {}", env!("CARGO_PKG_VERSION"))),
            name: rules.camera_name.clone(),
            mode: Some("viewer".to_owned()),
            viewers: Some(admission.viewers_in_call()),
            max_viewers: Some(admission.limits().max_viewers),
            codecs: Some(
                media
                    .video_codecs()
                    .iter()
                    .map(|c| c.config_name().to_owned())
                    .collect(),
            ),
            ice_servers: rules.ice_servers.clone(),
        });
        Session {
            state: State::Idle,
            transport: Transport::WebSocket,
            remote,
            media,
            admission,
            rules,
            call: None,
            last_heard: now,
            pending: Vec::new(),
            out: VecDeque::from([Output::Send(hello)]),
        }
    }

    /// The same session reached by `transport` (the default is the WebSocket).
    pub fn with_transport(mut self, transport: Transport) -> Session {
        self.transport = transport;
        self
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The next thing to do; [`Output::Timeout`] when there is nothing until a deadline.
    pub fn poll_output(&mut self) -> Output {
        self.out
            .pop_front()
            .unwrap_or_else(|| Output::Timeout(self.deadline()))
    }

    /// The next instant [`Session::handle_timeout`] has something to do.
    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Idle => Some(self.last_heard + self.rules.idle_timeout),
            State::Answering | State::Active => {
                let call = self.call.as_ref();
                let ice = call.and_then(|c| c.ice_deadline);
                let lookup = call.and_then(|c| c.lookups.deadline());
                ice.into_iter().chain(lookup).min()
            }
            State::Closed => None,
        }
    }

    /// Time passed: applies the deadline that is due at `now`, if any.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(call) = self.call.as_mut() {
            let dropped = call.lookups.expire(now);
            if dropped > 0 {
                let why = format!("no answer within {} ms", mdns::LOOKUP_TIMEOUT.as_millis());
                self.unresolved(dropped, &why);
                self.end_if_looked_up();
            }
        }
        match self.state {
            State::Idle if now >= self.last_heard + self.rules.idle_timeout => {
                self.push(Output::LimitHit(Limit::IdleTimeout {
                    seconds: self.rules.idle_timeout.as_secs(),
                }));
                self.close_with(ByeReason::Idle);
            }
            State::Answering | State::Active
                if self
                    .call
                    .as_ref()
                    .and_then(|c| c.ice_deadline)
                    .is_some_and(|at| now >= at) =>
            {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.ice_connected_at.is_some())
                {
                    self.push(Output::LimitHit(Limit::DtlsTimeout));
                    self.hang_up();
                    return self.error(
                        ErrorCode::Internal,
                        format!(
                            "the secure connection (DTLS) did not complete within {} s of ICE; \
                             dial again",
                            DTLS_TIMEOUT.as_secs()
                        ),
                    );
                }
                self.push(Output::LimitHit(Limit::IceTimeout {
                    seconds: self.rules.ice_timeout.as_secs(),
                }));
                self.hang_up();
                self.push(Output::Send(Message::Bye(Bye::because(
                    ByeReason::IceTimeout,
                ))));
            }
            _ => {}
        }
    }

    /// Handles one input that arrived at `now`; its outputs come from
    /// [`Session::poll_output`].
    pub fn handle_input(&mut self, input: Input<'_>, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        match input {
            Input::Text(text) => {
                self.last_heard = now;
                self.on_text(text, now);
            }
            Input::Binary => {
                self.last_heard = now;
                self.error(
                    ErrorCode::BadJson,
                    "binary frames are not supported; send JSON text".to_owned(),
                );
            }
            Input::Message(message) => {
                self.last_heard = now;
                self.on_message(message, now);
            }
            Input::RestartIce { offer_sdp } => self.on_restart(offer_sdp, now),
            Input::Heard => self.last_heard = now,
            Input::PeerReady(result) => self.on_peer_ready(result),
            Input::Peer(event) => self.on_peer_event(event, now),
            Input::Resolved { name, address } => self.on_resolved(&name, address),
            Input::CandidateRejected(reason) => self.error(
                ErrorCode::BadCandidate,
                format!("ICE candidate rejected: {reason}"),
            ),
            Input::Bitrate(target_kbps) => {
                if self.state == State::Active {
                    self.push(Output::Send(Message::Bitrate(BitrateTarget {
                        target_kbps,
                    })));
                }
            }
            Input::Viewers(count) => {
                if self.state != State::Closed {
                    let max = self.admission.limits().max_viewers;
                    self.push(Output::Send(Message::Viewers(ViewerCount { count, max })));
                }
            }
            Input::Shutdown => self.close_with(ByeReason::Shutdown),
            Input::Reload => self.close_with(ByeReason::Reload),
        }
    }

    fn on_text(&mut self, text: &str, now: Instant) {
        match protocol::parse(text, self.rules.max_message_bytes) {
            Ok(message) => self.on_message(message, now),
            Err(e) => self.push(Output::Send(Message::Error(ErrorBody::from(&e)))),
        }
    }

    fn on_message(&mut self, message: Message, now: Instant) {
        match message {
            Message::Sdp(desc) => self.on_sdp(desc, now),
            Message::Candidate(candidate) => self.on_candidate(candidate),
            Message::Bye(_) => {
                self.hang_up();
                self.push(Output::Send(Message::Bye(Bye::default())));
            }
            // A browser may greet us, or echo the daemon's notices; nothing to do.
            Message::Hello(_) | Message::Bitrate(_) | Message::Viewers(_) => {}
            Message::Error(body) => {
                log::info!(
                    "{} {}: the browser reported an error: {}",
                    self.transport.label(),
                    self.remote,
                    crate::logging::client_str(&body.message)
                );
            }
        }
    }

    fn on_sdp(&mut self, desc: SessionDescription, now: Instant) {
        if desc.kind != SdpKind::Offer {
            return self.error(
                ErrorCode::Unexpected,
                format!(
                    "expected an offer, got an {}: peercam answers, it never offers",
                    desc.kind
                ),
            );
        }
        let offered = match sdp::offered_video_codecs(&desc.sdp) {
            Ok(o) => o,
            Err(e) => return self.error(ErrorCode::BadSdp, format!("bad offer: {e}")),
        };
        let preferences = self.media.video_codecs();
        let video =
            match codec::choose_with_camera(&preferences, &offered, self.media.camera_h264()) {
                Ok(c) => c,
                Err(e) => return self.error(ErrorCode::NoCodec, e.to_string()),
            };
        let receives =
            |kind| sdp::media_direction(&desc.sdp, kind).is_some_and(Direction::browser_receives);
        if !receives(MediaKind::Video) {
            return self.error(
                ErrorCode::BadSdp,
                "the offer does not receive video (its video section is sendonly or inactive); \
                 Dial with a recvonly or sendrecv video transceiver"
                    .to_owned(),
            );
        }
        let opus_payload_type = if self.media.has_audio() && receives(MediaKind::Audio) {
            sdp::offered_opus(&desc.sdp)
        } else {
            None
        };
        // A new offer while in a call re-dials: the old call ends (and frees its slots) first.
        self.hang_up();
        let ticket = match self.admission.admit(self.remote.ip(), now) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                let body = refusal.error_body();
                self.push(Output::LimitHit(Limit::Refused(refusal)));
                return self.push(Output::Send(Message::Error(body)));
            }
        };
        self.call = Some(Call {
            ticket,
            offered_at: now,
            ice_deadline: Some(now + self.rules.ice_timeout),
            ice_connected_at: None,
            remote_candidates: 0,
            lookups: Lookups::default(),
            end_after_lookups: false,
            restarting: false,
        });
        self.state = State::Answering;
        // Candidates in the offer (a WHEP client that waited for its gathering) go the way
        // trickled ones go: checked, capped, .local names looked up.
        let (offer_sdp, candidates, end_of_candidates) = sdpfrag::take_candidates(&desc.sdp);
        self.push(Output::StartPeer {
            offer_sdp,
            plan: AnswerPlan {
                video,
                opus_payload_type,
            },
        });
        self.offered_candidates(candidates, end_of_candidates);
    }

    /// The candidates an offer carried, as if trickled after it.
    fn offered_candidates(&mut self, candidates: Vec<IceCandidate>, end_of_candidates: bool) {
        for candidate in candidates {
            self.on_candidate(Some(candidate));
        }
        if end_of_candidates {
            self.on_candidate(None);
        }
    }

    fn on_restart(&mut self, offer_sdp: String, now: Instant) {
        let Some(call) = self.call.as_mut().filter(|_| self.state == State::Active) else {
            return self.error(
                ErrorCode::Unexpected,
                "ICE restart without a call: make an offer first".to_owned(),
            );
        };
        call.ice_deadline = Some(now + self.rules.ice_timeout);
        call.ice_connected_at = None;
        call.remote_candidates = 0;
        call.lookups.clear();
        call.end_after_lookups = false;
        call.restarting = true;
        let (offer_sdp, candidates, end_of_candidates) = sdpfrag::take_candidates(&offer_sdp);
        self.push(Output::RestartIce { offer_sdp });
        self.offered_candidates(candidates, end_of_candidates);
    }

    fn on_candidate(&mut self, candidate: Option<IceCandidate>) {
        // Browsers send an empty candidate string as end-of-candidates too.
        let candidate = candidate.filter(|c| !c.candidate.trim().is_empty());
        if let (Some(c), Some(call)) = (&candidate, self.call.as_mut()) {
            if call.remote_candidates >= MAX_REMOTE_CANDIDATES {
                self.push(Output::LimitHit(Limit::RemoteCandidates));
                return self.error(
                    ErrorCode::BadCandidate,
                    format!("more than {MAX_REMOTE_CANDIDATES} candidates in one call; dropped"),
                );
            }
            if let (true, Some(sdp::CandidateAddress::Name(name))) = (
                self.rules.resolve_mdns,
                sdp::candidate_address(&c.candidate),
            ) {
                return self.on_named_candidate(name, c.clone());
            }
            if let Some(reason) = refused_address(&c.candidate, self.rules.loopback_candidates) {
                self.push(Output::LimitHit(Limit::CandidateAddress {
                    reason: reason.clone(),
                }));
                return self.error(
                    ErrorCode::BadCandidate,
                    format!("candidate dropped: {reason}"),
                );
            }
            call.remote_candidates += 1;
        }
        match self.state {
            State::Idle => self.error(
                ErrorCode::Unexpected,
                "ICE candidate before an offer: send {\"sdp\": offer} first".to_owned(),
            ),
            State::Answering | State::Active
                if candidate.is_none()
                    && self.call.as_ref().is_some_and(|c| !c.lookups.is_empty()) =>
            {
                // Resolved candidates must not come after the end of candidates.
                if let Some(call) = self.call.as_mut() {
                    call.end_after_lookups = true;
                }
            }
            State::Answering => self.pending.push(candidate),
            State::Active => self.push(candidate_output(candidate)),
            State::Closed => {}
        }
    }

    /// A candidate whose address is a name: a browser's mDNS name waits for its lookup,
    /// anything else is dropped (the daemon resolves no other names).
    fn on_named_candidate(&mut self, name: String, candidate: IceCandidate) {
        let Some(call) = self.call.as_mut() else {
            return self.error(
                ErrorCode::Unexpected,
                "ICE candidate before an offer: send {\"sdp\": offer} first".to_owned(),
            );
        };
        let refused = if !mdns::is_browser_name(&name) {
            "its address is a host name but not a browser's mDNS name (<uuid>.local)".to_owned()
        } else {
            // The candidate arrived with the message just heard: its time is `last_heard`.
            match call.lookups.hold(&name, candidate, self.last_heard) {
                Ok(new) => {
                    call.remote_candidates += 1;
                    if new {
                        self.push(Output::Resolve(name));
                    }
                    return;
                }
                Err(HoldRefused::TooMany) => format!(
                    "{} mDNS names are being resolved for this call already",
                    mdns::MAX_LOOKUPS_PER_CALL
                ),
            }
        };
        self.push(Output::LimitHit(Limit::CandidateAddress {
            reason: refused.clone(),
        }));
        self.error(
            ErrorCode::BadCandidate,
            format!("candidate dropped: {refused}"),
        );
    }

    /// A name's lookup ended: its candidates go on with the address put in, through the
    /// address checks every candidate gets, or are dropped.
    fn on_resolved(&mut self, name: &str, address: Option<IpAddr>) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let waiting = call.lookups.take(name);
        if waiting.is_empty() {
            return; // a call that ended, or a lookup given up on
        }
        let Some(ip) = address else {
            let why = format!("no answer for {}", crate::logging::client_str(name));
            self.unresolved(waiting.len(), &why);
            return self.end_if_looked_up();
        };
        for c in waiting {
            let Some(line) = mdns::with_address(&c.candidate, ip) else {
                continue;
            };
            if let Some(reason) = refused_address(&line, self.rules.loopback_candidates) {
                self.push(Output::LimitHit(Limit::CandidateAddress {
                    reason: format!("{reason} (resolved from an mDNS name)"),
                }));
                continue;
            }
            let resolved = IceCandidate {
                candidate: line,
                ..c
            };
            match self.state {
                State::Answering => self.pending.push(Some(resolved)),
                State::Active => self.push(Output::AddCandidate(resolved)),
                State::Idle | State::Closed => {}
            }
        }
        self.end_if_looked_up();
    }

    /// The browser's held end-of-candidates, once no name is being resolved.
    fn end_if_looked_up(&mut self) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.end_after_lookups && call.lookups.is_empty() {
            call.end_after_lookups = false;
            match self.state {
                State::Answering => self.pending.push(None),
                State::Active => self.push(Output::EndOfRemoteCandidates),
                State::Idle | State::Closed => {}
            }
        }
    }

    /// Says once per call that `.local` candidates were dropped unresolved.
    fn unresolved(&mut self, dropped: usize, why: &str) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.lookups.unresolved += dropped;
        if call.lookups.unresolved == dropped {
            log::info!(
                "{} {}: dropping the browser's .local candidate(s) that did not resolve ({why}); \
                 the call connects only if the browser's own checks reach the daemon",
                self.transport.label(),
                self.remote
            );
        }
    }

    fn on_peer_ready(&mut self, result: Result<String, ErrorBody>) {
        if self.state != State::Answering {
            // The browser hung up while the peer was being built.
            if result.is_ok() {
                self.push(Output::ClosePeer);
            }
            return;
        }
        match result {
            Ok(answer_sdp) => {
                self.state = State::Active;
                self.push(Output::Send(Message::Sdp(SessionDescription {
                    kind: SdpKind::Answer,
                    sdp: answer_sdp,
                })));
                let pending = std::mem::take(&mut self.pending);
                self.out.extend(pending.into_iter().map(candidate_output));
            }
            Err(body) => {
                // No peer to close; the call's slots go back.
                self.state = State::Idle;
                self.call = None;
                self.pending.clear();
                self.push(Output::Send(Message::Error(body)));
            }
        }
    }

    fn on_peer_event(&mut self, event: PeerEvent, now: Instant) {
        if self.state != State::Active {
            return;
        }
        match event {
            PeerEvent::LocalCandidate(c) => self.push(Output::Send(Message::Candidate(Some(c)))),
            PeerEvent::EndOfCandidates => self.push(Output::Send(Message::Candidate(None))),
            // A restarted ICE that connects again (or a connection state that says so
            // first) ends the restart: DTLS and the media never stopped.
            PeerEvent::IceConnected | PeerEvent::Connected
                if self.call.as_ref().is_some_and(|c| c.restarting) =>
            {
                if let Some(call) = self.call.as_mut() {
                    call.restarting = false;
                    call.ice_deadline = None;
                }
                log::info!("{} {}: ICE restarted", self.transport.label(), self.remote);
            }
            PeerEvent::IceConnected => {
                if let Some(call) = self.call.as_mut() {
                    if let (Some(at), None) = (call.ice_deadline, call.ice_connected_at) {
                        call.ice_connected_at = Some(now);
                        call.ice_deadline = Some(at.min(now + DTLS_TIMEOUT));
                    }
                }
            }
            PeerEvent::Connected => {
                if let Some(call) = self.call.as_mut() {
                    if call.ice_deadline.take().is_some() {
                        call.ticket.connected();
                        log::info!(
                            "{} {}: connected {} ms after the offer",
                            self.transport.label(),
                            self.remote,
                            now.saturating_duration_since(call.offered_at).as_millis()
                        );
                    }
                }
            }
            PeerEvent::Failed(reason) => {
                self.hang_up();
                self.error(ErrorCode::Internal, format!("connection lost: {reason}"));
            }
            PeerEvent::Closed => {
                self.hang_up();
                self.push(Output::Send(Message::Bye(Bye::default())));
            }
            // A viewer's browser may come back (a Wi-Fi hiccup); ICE gives up by itself.
            PeerEvent::Disconnected => {}
        }
    }

    /// Ends the current call, if any: the peer closes and the call's slots go back.
    fn hang_up(&mut self) {
        self.pending.clear();
        self.call = None;
        if matches!(self.state, State::Answering | State::Active) {
            self.push(Output::ClosePeer);
        }
        if self.state != State::Closed {
            self.state = State::Idle;
        }
    }

    /// Ends the call, says `bye` with `reason` and closes the connection.
    fn close_with(&mut self, reason: ByeReason) {
        self.hang_up();
        self.push(Output::Send(Message::Bye(Bye::because(reason))));
        self.push(Output::CloseSocket);
        self.state = State::Closed;
    }

    fn error(&mut self, code: ErrorCode, message: String) {
        self.push(Output::Send(Message::Error(ErrorBody::new(code, message))));
    }

    fn push(&mut self, output: Output) {
        self.out.push_back(output);
    }
}

/// Why the daemon must not send STUN to this candidate's address, if it must not: the
/// unspecified address, loopback (unless `loopback` is allowed), multicast, broadcast, or
/// port 0. A host name (a browser's `.local` name) is left to the ICE agent.
fn refused_address(candidate: &str, loopback: bool) -> Option<String> {
    let Some(CandidateAddress::Ip(addr)) = sdp::candidate_address(candidate) else {
        return None;
    };
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    let why = if ip.is_unspecified() {
        "the unspecified address"
    } else if ip.is_loopback() && !loopback {
        "a loopback address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if broadcast {
        "the broadcast address"
    } else if addr.port() == 0 {
        "port 0"
    } else {
        return None;
    };
    Some(format!("{addr} is {why}"))
}

fn candidate_output(candidate: Option<IceCandidate>) -> Output {
    match candidate {
        Some(c) => Output::AddCandidate(c),
        None => Output::EndOfRemoteCandidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::VideoCodec::{Av1, H264};
    use crate::session::admission::AdmissionLimits;

    const CHROMIUM: &str = include_str!("../../tests/fixtures/offers/chromium-156.sdp");
    const FIREFOX: &str = include_str!("../../tests/fixtures/offers/firefox-esr-153.sdp");
    const ICE: Duration = Duration::from_secs(15);
    const IDLE: Duration = Duration::from_secs(120);

    /// Media for the tests: fixed codecs, audio on or off, no camera H.264.
    struct TestMedia {
        codecs: Vec<VideoCodec>,
        audio: bool,
    }

    impl MediaInfo for TestMedia {
        fn video_codecs(&self) -> Vec<VideoCodec> {
            self.codecs.clone()
        }
        fn has_audio(&self) -> bool {
            self.audio
        }
        fn camera_h264(&self) -> Option<ProfileLevelId> {
            None
        }
    }

    fn admission(max_viewers: usize, max_pending_dials: usize) -> Arc<Admission> {
        Admission::new(AdmissionLimits {
            max_viewers,
            max_pending_dials,
            pending_dials_per_address: max_pending_dials,
            dials_per_minute: 1000,
        })
    }

    fn remote(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], port))
    }

    /// A session opened at `t0`, its hello already read.
    fn open(
        codecs: Vec<VideoCodec>,
        audio: bool,
        max_message_bytes: usize,
        admission: &Arc<Admission>,
        t0: Instant,
    ) -> Session {
        let mut s = Session::new(
            Arc::new(TestMedia { codecs, audio }),
            admission.clone(),
            Rules {
                max_message_bytes,
                ice_timeout: ICE,
                idle_timeout: IDLE,
                loopback_candidates: true,
                resolve_mdns: false,
                ice_servers: Vec::new(),
                camera_name: None,
            },
            remote(40_000),
            t0,
        );
        assert!(matches!(s.poll_output(), Output::Send(Message::Hello(_))));
        s
    }

    fn session(t0: Instant) -> Session {
        open(vec![H264, Av1], true, 65_536, &admission(4, 4), t0)
    }

    /// Every output up to the next [`Output::Timeout`], and that deadline.
    fn drain(s: &mut Session) -> (Vec<Output>, Option<Instant>) {
        let mut outputs = Vec::new();
        loop {
            match s.poll_output() {
                Output::Timeout(at) => return (outputs, at),
                o => outputs.push(o),
            }
        }
    }

    fn feed(s: &mut Session, input: Input<'_>, now: Instant) -> Vec<Output> {
        s.handle_input(input, now);
        drain(s).0
    }

    /// The offer a browser that trickles sends: `sdp` without its candidates (the fixtures
    /// were captured after gathering).
    fn offer(sdp: &str) -> String {
        offer_as_is(&sdpfrag::take_candidates(sdp).0)
    }

    fn offer_as_is(sdp: &str) -> String {
        Message::Sdp(SessionDescription {
            kind: SdpKind::Offer,
            sdp: sdp.to_owned(),
        })
        .to_json()
    }

    fn error_code(outputs: &[Output]) -> Option<ErrorCode> {
        outputs.iter().find_map(|o| match o {
            Output::Send(Message::Error(e)) => Some(e.code),
            _ => None,
        })
    }

    fn candidate(text: &str) -> String {
        format!(r#"{{"candidate":{{"candidate":"{text}","sdpMid":"0","sdpMLineIndex":0}}}}"#)
    }

    /// Dials and answers at `now`.
    fn dial(s: &mut Session, now: Instant) {
        let outputs = feed(s, Input::Text(&offer(CHROMIUM)), now);
        assert!(
            matches!(outputs.as_slice(), [Output::StartPeer { .. }]),
            "{outputs:?}"
        );
        feed(s, Input::PeerReady(Ok("v=0 answer".into())), now);
        assert_eq!(s.state(), State::Active);
    }

    #[test]
    fn an_ice_restart_rearms_the_deadline_until_ice_connects_again() {
        let t0 = Instant::now();
        let mut s = session(t0);
        // Without a call there is nothing to restart.
        let outputs = feed(
            &mut s,
            Input::RestartIce {
                offer_sdp: "v=0 x".into(),
            },
            t0,
        );
        assert_eq!(error_code(&outputs), Some(ErrorCode::Unexpected));
        // A WHEP offer read by the transport, connected.
        let offer = Message::Sdp(SessionDescription {
            kind: SdpKind::Offer,
            sdp: CHROMIUM.to_owned(),
        });
        let outputs = feed(&mut s, Input::Message(offer), t0);
        assert!(
            matches!(outputs.as_slice(), [Output::StartPeer { .. }]),
            "{outputs:?}"
        );
        feed(&mut s, Input::PeerReady(Ok("v=0 answer".into())), t0);
        feed(&mut s, Input::Peer(PeerEvent::Connected), t0);
        assert_eq!(drain(&mut s).1, None, "connected: no deadline");

        let t1 = t0 + Duration::from_secs(60);
        let outputs = feed(
            &mut s,
            Input::RestartIce {
                offer_sdp: "v=0 new".into(),
            },
            t1,
        );
        assert_eq!(
            outputs,
            [Output::RestartIce {
                offer_sdp: "v=0 new".into()
            }]
        );
        assert_eq!(drain(&mut s).1, Some(t1 + ICE));
        // Connected again: the restart is over, the call goes on.
        feed(&mut s, Input::Peer(PeerEvent::IceConnected), t1);
        assert_eq!(drain(&mut s).1, None);
        assert_eq!(s.state(), State::Active);

        // A restart that never connects ends the call at the ICE deadline.
        let t2 = t1 + Duration::from_secs(60);
        feed(
            &mut s,
            Input::RestartIce {
                offer_sdp: "v=0 again".into(),
            },
            t2,
        );
        s.handle_timeout(t2 + ICE);
        let (outputs, _) = drain(&mut s);
        assert!(outputs.contains(&Output::ClosePeer), "{outputs:?}");
        assert_eq!(s.state(), State::Idle);
    }

    #[test]
    fn hello_names_the_codecs_and_the_viewer_limit() {
        let mut s = Session::new(
            Arc::new(TestMedia {
                codecs: vec![Av1, H264],
                audio: true,
            }),
            admission(3, 3),
            Rules {
                max_message_bytes: 1024,
                ice_timeout: ICE,
                idle_timeout: IDLE,
                loopback_candidates: true,
                resolve_mdns: false,
                ice_servers: Vec::new(),
                camera_name: None,
            },
            remote(1),
            Instant::now(),
        );
        let Output::Send(Message::Hello(hello)) = s.poll_output() else {
            panic!("hello first");
        };
        assert_eq!(hello.mode.as_deref(), Some("viewer"));
        assert_eq!(
            hello.codecs,
            Some(vec!["av1".to_owned(), "h264".to_owned()])
        );
        assert_eq!((hello.viewers, hello.max_viewers), (Some(0), Some(3)));
    }

    #[test]
    fn dial_answer_and_trickle_in_both_directions() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let outputs = feed(&mut s, Input::Text(&offer(CHROMIUM)), t0);
        let [Output::StartPeer { plan, .. }] = outputs.as_slice() else {
            panic!("expected StartPeer, got {outputs:?}");
        };
        assert_eq!(plan.video.codec, H264);
        assert_eq!(plan.video.payload_type, 108);
        assert_eq!(plan.opus_payload_type, Some(111));
        assert_eq!(s.state(), State::Answering);

        // A candidate that arrives while the peer is being built is held, then applied.
        let c = candidate("candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host");
        assert!(feed(&mut s, Input::Text(&c), t0).is_empty());
        let outputs = feed(&mut s, Input::PeerReady(Ok("v=0 answer".into())), t0);
        assert!(matches!(&outputs[0], Output::Send(Message::Sdp(d)) if d.kind == SdpKind::Answer));
        assert!(matches!(&outputs[1], Output::AddCandidate(c) if c.candidate.contains("50000")));
        assert_eq!(s.state(), State::Active);

        let c2 = candidate("candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host");
        assert!(matches!(
            feed(&mut s, Input::Text(&c2), t0).as_slice(),
            [Output::AddCandidate(_)]
        ));
        assert_eq!(
            feed(&mut s, Input::Text(r#"{"candidate":null}"#), t0),
            vec![Output::EndOfRemoteCandidates]
        );
        assert_eq!(
            feed(&mut s, Input::Text(&candidate("")), t0),
            vec![Output::EndOfRemoteCandidates],
            "an empty candidate string also ends the candidates"
        );

        // Local candidates and end-of-candidates go to the browser.
        let local = IceCandidate {
            candidate: "candidate:9 1 udp 1 127.0.0.1 40000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        assert_eq!(
            feed(
                &mut s,
                Input::Peer(PeerEvent::LocalCandidate(local.clone())),
                t0
            ),
            vec![Output::Send(Message::Candidate(Some(local)))]
        );
        assert_eq!(
            feed(&mut s, Input::Peer(PeerEvent::EndOfCandidates), t0),
            vec![Output::Send(Message::Candidate(None))]
        );
        assert!(feed(&mut s, Input::Peer(PeerEvent::Connected), t0).is_empty());

        // Hang up: the peer closes, the browser gets bye, a new Dial may follow.
        assert_eq!(
            feed(&mut s, Input::Text(r#"{"bye":{}}"#), t0),
            vec![
                Output::ClosePeer,
                Output::Send(Message::Bye(Bye::default()))
            ]
        );
        assert_eq!(s.state(), State::Idle);
        assert!(matches!(
            feed(&mut s, Input::Text(&offer(CHROMIUM)), t0).as_slice(),
            [Output::StartPeer { .. }]
        ));
    }

    #[test]
    fn firefox_offer_falls_back_to_av1() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let outputs = feed(&mut s, Input::Text(&offer(FIREFOX)), t0);
        assert!(matches!(
            outputs.as_slice(),
            [Output::StartPeer { plan, .. }] if plan.video.codec == Av1 && plan.video.payload_type == 99
        ));
    }

    #[test]
    fn bad_input_gets_errors_and_changes_nothing() {
        let t0 = Instant::now();
        let mut s = session(t0);
        for (text, code) in [
            ("{oops", ErrorCode::BadJson),
            (r#"{"wave":{}}"#, ErrorCode::UnknownType),
            (
                &candidate("candidate:1 1 udp 1 127.0.0.1 9 typ host") as &str,
                ErrorCode::Unexpected,
            ),
            (
                r#"{"sdp":{"type":"answer","sdp":"v=0"}}"#,
                ErrorCode::Unexpected,
            ),
            (
                r#"{"sdp":{"type":"offer","sdp":"v=0\r\n"}}"#,
                ErrorCode::BadSdp,
            ),
        ] {
            let outputs = feed(&mut s, Input::Text(text), t0);
            assert_eq!(error_code(&outputs), Some(code), "{text}: {outputs:?}");
            assert_eq!(outputs.len(), 1);
            assert_eq!(s.state(), State::Idle);
        }
        let outputs = feed(&mut s, Input::Binary, t0);
        assert_eq!(error_code(&outputs), Some(ErrorCode::BadJson));
        assert!(
            matches!(&outputs[0], Output::Send(Message::Error(e)) if e.message.contains("binary"))
        );

        let mut small = open(vec![H264], true, 1024, &admission(1, 1), t0);
        let outputs = feed(&mut small, Input::Text(&offer(CHROMIUM)), t0);
        assert_eq!(error_code(&outputs), Some(ErrorCode::TooLarge));
    }

    #[test]
    fn no_acceptable_codec_names_both_sides() {
        let t0 = Instant::now();
        let mut s = open(vec![H264], true, 65_536, &admission(1, 1), t0);
        let outputs = feed(&mut s, Input::Text(&offer(FIREFOX)), t0);
        let [Output::Send(Message::Error(e))] = outputs.as_slice() else {
            panic!("{outputs:?}");
        };
        assert_eq!(e.code, ErrorCode::NoCodec);
        assert!(
            e.message.contains("VP8") && e.message.contains("h264"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_viewer_limit_is_shared_and_freed_by_hang_up() {
        let t0 = Instant::now();
        let shared = admission(1, 4);
        let mut first = open(vec![H264], true, 65_536, &shared, t0);
        let mut second = open(vec![H264], true, 65_536, &shared, t0);
        dial(&mut first, t0);
        let outputs = feed(&mut second, Input::Text(&offer(CHROMIUM)), t0);
        assert_eq!(
            outputs[0],
            Output::LimitHit(Limit::Refused(Refusal::Viewers { max: 1 }))
        );
        assert_eq!(error_code(&outputs), Some(ErrorCode::ViewerLimit));
        assert_eq!(outputs.len(), 2, "no peer is built: {outputs:?}");
        assert_eq!(second.state(), State::Idle);

        feed(&mut first, Input::Text(r#"{"bye":{}}"#), t0);
        assert_eq!(shared.viewers_in_call(), 0);
        dial(&mut second, t0);
        assert_eq!(shared.viewers_in_call(), 1);
        // Closing the connection frees the slot too.
        feed(&mut second, Input::Shutdown, t0);
        assert_eq!(shared.viewers_in_call(), 0);
    }

    #[test]
    fn a_dial_slot_is_held_until_the_call_connects() {
        let t0 = Instant::now();
        let shared = admission(4, 1);
        let mut first = open(vec![H264], true, 65_536, &shared, t0);
        let mut second = open(vec![H264], true, 65_536, &shared, t0);
        dial(&mut first, t0);
        let outputs = feed(&mut second, Input::Text(&offer(CHROMIUM)), t0);
        assert_eq!(error_code(&outputs), Some(ErrorCode::DialLimit));
        assert_eq!(pending(&shared), 1);
        feed(&mut first, Input::Peer(PeerEvent::Connected), t0);
        assert_eq!(pending(&shared), 0);
        dial(&mut second, t0);
    }

    fn pending(a: &Admission) -> usize {
        a.pending_dials()
    }

    #[test]
    fn a_failed_peer_frees_the_slots_and_returns_to_idle() {
        let t0 = Instant::now();
        let shared = admission(1, 1);
        let mut s = open(vec![H264], true, 65_536, &shared, t0);
        feed(&mut s, Input::Text(&offer(CHROMIUM)), t0);
        let outputs = feed(
            &mut s,
            Input::PeerReady(Err(ErrorBody {
                code: ErrorCode::Internal,
                message: "no free UDP port".into(),
                retry_after_ms: None,
            })),
            t0,
        );
        assert_eq!(error_code(&outputs), Some(ErrorCode::Internal));
        assert_eq!(s.state(), State::Idle);
        assert_eq!((shared.viewers_in_call(), shared.pending_dials()), (0, 0));
    }

    #[test]
    fn audio_disabled_answers_without_opus() {
        let t0 = Instant::now();
        let mut s = open(vec![H264], false, 65_536, &admission(1, 1), t0);
        let outputs = feed(&mut s, Input::Text(&offer(CHROMIUM)), t0);
        assert!(matches!(
            outputs.as_slice(),
            [Output::StartPeer { plan, .. }] if plan.opus_payload_type.is_none()
        ));
    }

    #[test]
    fn peer_failure_and_shutdown_close_the_call() {
        let t0 = Instant::now();
        let mut s = session(t0);
        dial(&mut s, t0);
        let outputs = feed(
            &mut s,
            Input::Peer(PeerEvent::Failed("ICE failed".into())),
            t0,
        );
        assert_eq!(outputs[0], Output::ClosePeer);
        assert_eq!(error_code(&outputs), Some(ErrorCode::Internal));
        assert_eq!(s.state(), State::Idle);

        dial(&mut s, t0);
        assert_eq!(
            feed(&mut s, Input::Shutdown, t0),
            vec![
                Output::ClosePeer,
                Output::Send(Message::Bye(Bye::because(ByeReason::Shutdown))),
                Output::CloseSocket
            ]
        );
        assert_eq!(s.state(), State::Closed);
        assert!(feed(&mut s, Input::Text(&offer(CHROMIUM)), t0).is_empty());
        assert_eq!(drain(&mut s).1, None, "a closed session has no deadline");
    }

    #[test]
    fn reload_ends_the_call_with_a_reason_the_page_redials_on() {
        let t0 = Instant::now();
        let mut s = session(t0);
        dial(&mut s, t0);
        assert_eq!(
            feed(&mut s, Input::Reload, t0),
            vec![
                Output::ClosePeer,
                Output::Send(Message::Bye(Bye::because(ByeReason::Reload))),
                Output::CloseSocket
            ]
        );
        assert_eq!(
            Message::Bye(Bye::because(ByeReason::Reload)).to_json(),
            r#"{"bye":{"reason":"reload"}}"#
        );
        assert_eq!(s.state(), State::Closed);
    }

    #[test]
    fn a_peer_that_finishes_after_hang_up_is_closed() {
        let t0 = Instant::now();
        let mut s = session(t0);
        feed(&mut s, Input::Text(&offer(CHROMIUM)), t0);
        feed(&mut s, Input::Text(r#"{"bye":{}}"#), t0);
        assert_eq!(
            feed(&mut s, Input::PeerReady(Ok("late answer".into())), t0),
            vec![Output::ClosePeer]
        );
    }

    #[test]
    fn the_ice_deadline_ends_a_call_that_does_not_connect_but_keeps_the_socket() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let offered = t0 + Duration::from_secs(3);
        dial(&mut s, offered);
        assert_eq!(drain(&mut s).1, Some(offered + ICE), "the ICE deadline");
        // Early: nothing.
        s.handle_timeout(offered + ICE - Duration::from_millis(1));
        assert_eq!(drain(&mut s).0, vec![]);
        s.handle_timeout(offered + ICE);
        let (outputs, next) = drain(&mut s);
        assert_eq!(
            outputs,
            vec![
                Output::LimitHit(Limit::IceTimeout { seconds: 15 }),
                Output::ClosePeer,
                Output::Send(Message::Bye(Bye::because(ByeReason::IceTimeout)))
            ]
        );
        assert_eq!(s.state(), State::Idle);
        assert_eq!(
            Message::Bye(Bye::because(ByeReason::IceTimeout)).to_json(),
            r#"{"bye":{"reason":"ice_timeout"}}"#
        );
        // Back to idle: the idle deadline counts from the last message (the offer).
        assert_eq!(next, Some(offered + IDLE));
        // The browser may dial again on the same socket.
        assert!(matches!(
            feed(&mut s, Input::Text(&offer(CHROMIUM)), offered + ICE).as_slice(),
            [Output::StartPeer { .. }]
        ));
    }

    #[test]
    fn a_connected_call_has_no_deadline() {
        let t0 = Instant::now();
        let mut s = session(t0);
        dial(&mut s, t0);
        feed(
            &mut s,
            Input::Peer(PeerEvent::Connected),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(drain(&mut s).1, None);
        // Long after both deadlines, nothing happens to a live call.
        s.handle_timeout(t0 + IDLE * 10);
        assert_eq!(drain(&mut s).0, vec![]);
        assert_eq!(s.state(), State::Active);
    }

    #[test]
    fn the_idle_deadline_moves_with_every_sign_of_life() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(drain(&mut s).1, Some(t0 + IDLE));
        let t1 = t0 + Duration::from_secs(100);
        feed(&mut s, Input::Text(r#"{"hello":{"version":1}}"#), t1);
        assert_eq!(drain(&mut s).1, Some(t1 + IDLE));
        let t2 = t1 + Duration::from_secs(100);
        feed(&mut s, Input::Heard, t2);
        assert_eq!(drain(&mut s).1, Some(t2 + IDLE));
        // A timer that fires early (or for an old deadline) changes nothing.
        s.handle_timeout(t1 + IDLE);
        assert_eq!(drain(&mut s).0, vec![]);
        s.handle_timeout(t2 + IDLE);
        assert_eq!(
            drain(&mut s),
            (
                vec![
                    Output::LimitHit(Limit::IdleTimeout { seconds: 120 }),
                    Output::Send(Message::Bye(Bye::because(ByeReason::Idle))),
                    Output::CloseSocket
                ],
                None
            )
        );
        assert_eq!(s.state(), State::Closed);
    }

    #[test]
    fn bitrate_notices_go_only_to_a_call() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert!(feed(&mut s, Input::Bitrate(800), t0).is_empty());
        dial(&mut s, t0);
        assert_eq!(
            feed(&mut s, Input::Bitrate(800), t0),
            vec![Output::Send(Message::Bitrate(BitrateTarget {
                target_kbps: 800
            }))]
        );
    }

    #[test]
    fn viewer_counts_go_to_every_open_session() {
        let t0 = Instant::now();
        let mut idle = session(t0);
        let max = idle.admission.limits().max_viewers;
        let count = |count| vec![Output::Send(Message::Viewers(ViewerCount { count, max }))];
        // Not in a call: still told (the page shows how many watch before it dials).
        assert_eq!(feed(&mut idle, Input::Viewers(3), t0), count(3));
        dial(&mut idle, t0);
        assert_eq!(feed(&mut idle, Input::Viewers(1), t0), count(1));
        feed(&mut idle, Input::Shutdown, t0);
        assert!(
            feed(&mut idle, Input::Viewers(0), t0).is_empty(),
            "closed: nothing"
        );
    }

    #[test]
    fn hello_names_the_camera() {
        let t0 = Instant::now();
        let admission = admission(4, 4);
        let rules = Rules {
            max_message_bytes: 65_536,
            ice_timeout: ICE,
            idle_timeout: IDLE,
            loopback_candidates: false,
            resolve_mdns: false,
            ice_servers: Vec::new(),
            camera_name: Some("Front door".to_owned()),
        };
        let media = Arc::new(TestMedia {
            codecs: vec![H264],
            audio: true,
        });
        let mut s = Session::new(media, admission, rules, remote(1), t0);
        let Output::Send(Message::Hello(hello)) = s.poll_output() else {
            panic!("no hello first");
        };
        assert_eq!(hello.name.as_deref(), Some("Front door"));
    }

    #[test]
    fn limits_name_their_keys_and_metrics() {
        let samples = Limit::samples();
        assert_eq!(samples.len(), Limit::METRICS.len(), "one sample per kind");
        for limit in samples {
            assert!(Limit::METRICS.contains(&limit.metric()), "{limit:?}");
            assert!(!limit.key().is_empty(), "{limit:?}");
            assert!(!limit.describe().is_empty());
        }
    }

    #[test]
    fn remote_candidates_are_capped_per_call_and_bad_addresses_dropped() {
        let t0 = Instant::now();
        let mut s = Session::new(
            Arc::new(TestMedia {
                codecs: vec![H264],
                audio: true,
            }),
            admission(4, 4),
            Rules {
                max_message_bytes: 65_536,
                ice_timeout: ICE,
                idle_timeout: IDLE,
                loopback_candidates: false,
                resolve_mdns: false,
                ice_servers: Vec::new(),
                camera_name: None,
            },
            remote(1),
            t0,
        );
        drain(&mut s);
        dial(&mut s, t0);
        for (address, why) in [
            ("0.0.0.0 9", "unspecified"),
            ("127.0.0.1 22", "loopback"),
            ("::1 22", "loopback"),
            ("224.0.0.251 5353", "multicast"),
            ("255.255.255.255 9", "broadcast"),
            ("192.0.2.9 0", "port 0"),
        ] {
            let text = candidate(&format!("candidate:1 1 udp 1 {address} typ host"));
            let outputs = feed(&mut s, Input::Text(&text), t0);
            assert!(
                matches!(&outputs[..], [Output::LimitHit(Limit::CandidateAddress { reason }), Output::Send(Message::Error(e))]
                    if reason.contains(why) && e.code == ErrorCode::BadCandidate),
                "{address}: {outputs:?}"
            );
        }
        // Names (a browser's .local) and ordinary addresses go to the peer, up to the cap.
        let named = candidate("candidate:2 1 udp 1 4f1c.local 50000 typ host");
        assert!(matches!(
            feed(&mut s, Input::Text(&named), t0)[..],
            [Output::AddCandidate(_)]
        ));
        for port in 1..MAX_REMOTE_CANDIDATES as u16 {
            let text = candidate(&format!("candidate:3 1 udp 1 192.0.2.9 {port} typ host"));
            assert!(matches!(
                feed(&mut s, Input::Text(&text), t0)[..],
                [Output::AddCandidate(_)]
            ));
        }
        let one_more = candidate("candidate:4 1 udp 1 192.0.2.9 40000 typ host");
        let outputs = feed(&mut s, Input::Text(&one_more), t0);
        assert_eq!(outputs[0], Output::LimitHit(Limit::RemoteCandidates));
        assert_eq!(error_code(&outputs), Some(ErrorCode::BadCandidate));
        // End-of-candidates is not a candidate; a new call starts a new count.
        assert_eq!(
            feed(&mut s, Input::Text(r#"{"candidate":null}"#), t0),
            vec![Output::EndOfRemoteCandidates]
        );
        feed(&mut s, Input::Text(r#"{"bye":{}}"#), t0);
        dial(&mut s, t0);
        assert!(matches!(
            feed(&mut s, Input::Text(&one_more), t0)[..],
            [Output::AddCandidate(_)]
        ));
    }

    /// A session resolving `.local` candidates (loopback refused), dialled at `t0`.
    /// A session that resolves `.local` names, greeted and not yet dialled.
    fn resolving_session(t0: Instant) -> Session {
        let rules = Rules {
            max_message_bytes: 65_536,
            ice_timeout: ICE,
            idle_timeout: IDLE,
            loopback_candidates: false,
            resolve_mdns: true,
            ice_servers: Vec::new(),
            camera_name: None,
        };
        let media = Arc::new(TestMedia {
            codecs: vec![H264],
            audio: true,
        });
        let mut s = Session::new(media, admission(4, 4), rules, remote(1), t0);
        drain(&mut s);
        s
    }

    fn mdns_session(t0: Instant) -> Session {
        let mut s = resolving_session(t0);
        dial(&mut s, t0);
        s
    }

    #[test]
    fn an_offers_own_candidates_are_checked_and_looked_up_like_trickled_ones() {
        let t0 = Instant::now();
        let mut s = resolving_session(t0);
        // Chromium's offer after gathering: two .local names (four candidates), and a
        // loopback candidate an attacker added.
        let sdp = CHROMIUM.replacen(
            "a=candidate:",
            "a=candidate:9 1 udp 1 127.0.0.1 7000 typ host\r\na=candidate:",
            1,
        );
        let outputs = feed(&mut s, Input::Text(&offer_as_is(&sdp)), t0);
        let Some(Output::StartPeer { offer_sdp, .. }) = outputs.first() else {
            panic!("expected StartPeer first, got {outputs:?}");
        };
        assert!(
            !offer_sdp.contains("a=candidate:"),
            "the peer gets them later, checked"
        );
        let resolves: Vec<&Output> = outputs
            .iter()
            .filter(|o| matches!(o, Output::Resolve(_)))
            .collect();
        assert_eq!(resolves.len(), 2, "one lookup per name: {outputs:?}");
        assert_eq!(
            error_code(&outputs),
            Some(ErrorCode::BadCandidate),
            "{outputs:?}"
        );
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o, Output::LimitHit(Limit::CandidateAddress { .. }))),
            "{outputs:?}"
        );
    }

    #[test]
    fn mdns_candidates_wait_for_their_lookup_then_meet_the_address_checks() {
        let t0 = Instant::now();
        let mut s = mdns_session(t0);
        let name = "557ea1ac-2173-4579-9787-a2e14c2bbd73.local";
        let udp = format!("candidate:1 1 udp 2113937151 {name} 58601 typ host generation 0");
        let tcp = format!("candidate:2 1 tcp 1518280447 {name} 9 typ host tcptype active");
        // One query per name; the candidates wait, and so does the end of candidates.
        assert_eq!(
            feed(&mut s, Input::Text(&candidate(&udp)), t0),
            vec![Output::Resolve(name.to_owned())]
        );
        assert_eq!(feed(&mut s, Input::Text(&candidate(&tcp)), t0), vec![]);
        assert_eq!(
            feed(&mut s, Input::Text(r#"{"candidate":null}"#), t0),
            vec![]
        );
        // Other names are not queried.
        let printer = candidate("candidate:3 1 udp 1 printer.local 9 typ host");
        let outputs = feed(&mut s, Input::Text(&printer), t0);
        assert!(
            matches!(&outputs[..], [Output::LimitHit(Limit::CandidateAddress { reason }), Output::Send(Message::Error(_))]
                if reason.contains("not a browser's mDNS name")),
            "{outputs:?}"
        );
        // The answer: the address put in, the rest of each line as it was, then the end.
        let resolved = Input::Resolved {
            name: name.to_uppercase(),
            address: Some("192.0.2.7".parse().unwrap()),
        };
        let outputs = feed(&mut s, resolved, t0);
        let lines: Vec<&str> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::AddCandidate(c) => Some(c.candidate.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            lines,
            [
                "candidate:1 1 udp 2113937151 192.0.2.7 58601 typ host generation 0",
                "candidate:2 1 tcp 1518280447 192.0.2.7 9 typ host tcptype active"
            ]
        );
        assert_eq!(outputs.last(), Some(&Output::EndOfRemoteCandidates));

        // A name that resolves to loopback is dropped like a loopback candidate.
        let other = "0a0b0c0d-2173-4579-9787-a2e14c2bbd73.local";
        let line = format!("candidate:4 1 udp 1 {other} 5000 typ host");
        assert_eq!(
            feed(&mut s, Input::Text(&candidate(&line)), t0),
            vec![Output::Resolve(other.to_owned())]
        );
        let loopback = Input::Resolved {
            name: other.to_owned(),
            address: Some("127.0.0.1".parse().unwrap()),
        };
        let outputs = feed(&mut s, loopback, t0);
        assert!(
            matches!(&outputs[..], [Output::LimitHit(Limit::CandidateAddress { reason })] if reason.contains("loopback")),
            "{outputs:?}"
        );
    }

    #[test]
    fn mdns_lookups_are_capped_per_call_and_given_up_at_their_deadline() {
        let t0 = Instant::now();
        let mut s = mdns_session(t0);
        let name = |i: usize| format!("{i:08x}-2173-4579-9787-a2e14c2bbd73.local");
        let line = |i: usize| candidate(&format!("candidate:1 1 udp 1 {} 5000 typ host", name(i)));
        for i in 0..mdns::MAX_LOOKUPS_PER_CALL {
            assert_eq!(
                feed(&mut s, Input::Text(&line(i)), t0),
                vec![Output::Resolve(name(i))]
            );
        }
        let outputs = feed(&mut s, Input::Text(&line(99)), t0);
        assert!(
            matches!(&outputs[..], [Output::LimitHit(Limit::CandidateAddress { reason }), Output::Send(Message::Error(e))]
                if reason.contains("being resolved") && e.code == ErrorCode::BadCandidate),
            "{outputs:?}"
        );
        // The session wakes at the lookups' deadline (before the ICE deadline) and drops them.
        let (_, deadline) = drain(&mut s);
        assert_eq!(deadline, Some(t0 + mdns::LOOKUP_TIMEOUT));
        s.handle_timeout(t0 + mdns::LOOKUP_TIMEOUT);
        let (outputs, deadline) = drain(&mut s);
        assert!(outputs.is_empty(), "{outputs:?}");
        assert_eq!(deadline, Some(t0 + ICE));
        // An answer after that finds nothing waiting.
        let late = Input::Resolved {
            name: name(0),
            address: Some("192.0.2.7".parse().unwrap()),
        };
        assert_eq!(feed(&mut s, late, t0 + ICE / 2), vec![]);
        // Places are free again.
        assert_eq!(
            feed(&mut s, Input::Text(&line(99)), t0 + ICE / 2),
            vec![Output::Resolve(name(99))]
        );
    }

    #[test]
    fn a_dtls_handshake_that_does_not_follow_ice_frees_the_call_early() {
        let t0 = Instant::now();
        let shared = admission(4, 1);
        let mut s = open(vec![H264], true, 65_536, &shared, t0);
        dial(&mut s, t0);
        assert_eq!(drain(&mut s).1, Some(t0 + ICE));
        let ice = t0 + Duration::from_secs(2);
        feed(&mut s, Input::Peer(PeerEvent::IceConnected), ice);
        assert_eq!(drain(&mut s).1, Some(ice + DTLS_TIMEOUT));
        s.handle_timeout(ice + DTLS_TIMEOUT);
        let (outputs, _) = drain(&mut s);
        assert_eq!(outputs[0], Output::LimitHit(Limit::DtlsTimeout));
        assert_eq!(outputs[1], Output::ClosePeer);
        assert_eq!(error_code(&outputs), Some(ErrorCode::Internal));
        assert_eq!(s.state(), State::Idle);
        assert_eq!(shared.pending_dials(), 0, "the dial slot is free");

        // A handshake that completes clears the deadline.
        dial(&mut s, t0);
        feed(&mut s, Input::Peer(PeerEvent::IceConnected), ice);
        feed(
            &mut s,
            Input::Peer(PeerEvent::Connected),
            ice + Duration::from_millis(50),
        );
        assert_eq!(drain(&mut s).1, None);
    }
}
