//! The per-viewer signaling state machine, sans-IO: text and peer events in, actions out.
//!
//! The WebSocket task (src/http/) feeds it every message and every [`PeerEvent`], and
//! carries out the [`Action`]s it returns. Nothing here touches a socket or a clock, so the
//! whole conversation is tested in memory.

use crate::media::VideoCodec;
use crate::peer::{AnswerPlan, PeerEvent};
use crate::session::codec;
use crate::session::protocol::{
    self, ErrorBody, ErrorCode, IceCandidate, Message, SdpKind, SessionDescription,
};

/// Where the conversation with one browser stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected, no offer yet (or the last call hung up).
    Idle,
    /// An offer was accepted; the peer is being built.
    Answering,
    /// The answer was sent; ICE/DTLS is under way or media flows.
    Active,
    /// The conversation is over; the socket closes.
    Closed,
}

/// Something that happened to the session.
#[derive(Debug)]
pub enum Input<'a> {
    /// A text message from the browser.
    Text(&'a str),
    /// The peer for the last offer is ready: the answer SDP, or why it failed.
    PeerReady(Result<String, ErrorBody>),
    /// An event from the live peer.
    Peer(PeerEvent),
    /// The browser's candidate was rejected by the peer.
    CandidateRejected(String),
    /// The daemon is shutting down.
    Shutdown,
}

/// What the IO layer must do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send this message to the browser.
    Send(Message),
    /// Build a peer for this offer (check the viewer limit first), then feed back
    /// [`Input::PeerReady`].
    StartPeer {
        /// The browser's offer SDP.
        offer_sdp: String,
        /// Codecs and payload types to answer with.
        plan: AnswerPlan,
    },
    /// Give this remote candidate to the peer.
    AddCandidate(IceCandidate),
    /// The browser has no more candidates.
    EndOfRemoteCandidates,
    /// Close the current peer (hang up) and free its viewer slot.
    ClosePeer,
    /// Close the WebSocket.
    CloseSocket,
}

/// One browser's signaling conversation.
#[derive(Debug)]
pub struct ViewerSession {
    state: State,
    preferences: Vec<VideoCodec>,
    audio_enabled: bool,
    max_message_bytes: usize,
    /// Remote candidates that arrived while the peer was being built.
    pending: Vec<Option<IceCandidate>>,
}

impl ViewerSession {
    /// A new session for a browser that just connected.
    pub fn new(preferences: Vec<VideoCodec>, audio_enabled: bool, max_message_bytes: usize) -> Self {
        ViewerSession {
            state: State::Idle,
            preferences,
            audio_enabled,
            max_message_bytes,
            pending: Vec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Handles one input and returns what to do, in order.
    pub fn handle(&mut self, input: Input<'_>) -> Vec<Action> {
        if self.state == State::Closed {
            return Vec::new();
        }
        match input {
            Input::Text(text) => self.on_text(text),
            Input::PeerReady(result) => self.on_peer_ready(result),
            Input::Peer(event) => self.on_peer_event(event),
            Input::CandidateRejected(reason) => vec![error(
                ErrorCode::BadCandidate,
                format!("ICE candidate rejected: {reason}"),
            )],
            Input::Shutdown => self.close_with(vec![Action::Send(Message::Bye(Default::default()))]),
        }
    }

    fn on_text(&mut self, text: &str) -> Vec<Action> {
        let message = match protocol::parse(text, self.max_message_bytes) {
            Ok(m) => m,
            Err(e) => return vec![Action::Send(Message::Error(ErrorBody::from(&e)))],
        };
        match message {
            Message::Sdp(desc) => self.on_sdp(desc),
            Message::Candidate(candidate) => self.on_candidate(candidate),
            Message::Bye(_) => {
                let mut actions = self.hang_up();
                self.state = State::Idle;
                actions.push(Action::Send(Message::Bye(Default::default())));
                actions
            }
            // A browser may greet us; nothing to do.
            Message::Hello(_) => Vec::new(),
            Message::Error(body) => {
                log::info!("browser reported an error: {}", body.message);
                Vec::new()
            }
        }
    }

    fn on_sdp(&mut self, desc: SessionDescription) -> Vec<Action> {
        if desc.kind != SdpKind::Offer {
            return vec![error(
                ErrorCode::Unexpected,
                format!(
                    "expected an offer, got an {}: peercam answers, it never offers",
                    desc.kind
                ),
            )];
        }
        let offered = match codec::offered_video_codecs(&desc.sdp) {
            Ok(o) => o,
            Err(e) => return vec![error(ErrorCode::BadSdp, format!("bad offer: {e}"))],
        };
        let chosen = match codec::choose(&self.preferences, &offered) {
            Ok(c) => c,
            Err(e) => return vec![error(ErrorCode::NoCodec, e.to_string())],
        };
        let opus = if self.audio_enabled {
            codec::offered_opus(&desc.sdp)
        } else {
            None
        };
        // A new offer while in a call re-dials: the old peer goes first.
        let mut actions = self.hang_up();
        self.state = State::Answering;
        actions.push(Action::StartPeer {
            offer_sdp: desc.sdp,
            plan: AnswerPlan {
                video_codec: chosen.codec,
                video_payload_type: chosen.payload_type,
                video_fmtp: chosen.fmtp,
                opus_payload_type: opus,
            },
        });
        actions
    }

    fn on_candidate(&mut self, candidate: Option<IceCandidate>) -> Vec<Action> {
        // Browsers send an empty candidate string as end-of-candidates too.
        let candidate = candidate.filter(|c| !c.candidate.trim().is_empty());
        match self.state {
            State::Idle => vec![error(
                ErrorCode::Unexpected,
                "ICE candidate before an offer: send {\"sdp\": offer} first".to_owned(),
            )],
            State::Answering => {
                self.pending.push(candidate);
                Vec::new()
            }
            State::Active => vec![candidate_action(candidate)],
            State::Closed => Vec::new(),
        }
    }

    fn on_peer_ready(&mut self, result: Result<String, ErrorBody>) -> Vec<Action> {
        if self.state != State::Answering {
            // The browser hung up while the peer was being built.
            return if result.is_ok() { vec![Action::ClosePeer] } else { Vec::new() };
        }
        match result {
            Ok(answer_sdp) => {
                self.state = State::Active;
                let mut actions = vec![Action::Send(Message::Sdp(SessionDescription {
                    kind: SdpKind::Answer,
                    sdp: answer_sdp,
                }))];
                actions.extend(self.pending.drain(..).map(candidate_action));
                actions
            }
            Err(body) => {
                self.state = State::Idle;
                self.pending.clear();
                vec![Action::Send(Message::Error(body))]
            }
        }
    }

    fn on_peer_event(&mut self, event: PeerEvent) -> Vec<Action> {
        if self.state != State::Active {
            return Vec::new();
        }
        match event {
            PeerEvent::LocalCandidate(c) => vec![Action::Send(Message::Candidate(Some(c)))],
            PeerEvent::EndOfCandidates => vec![Action::Send(Message::Candidate(None))],
            PeerEvent::Connected => Vec::new(),
            PeerEvent::Failed(reason) => {
                let mut actions = self.hang_up();
                self.state = State::Idle;
                actions.push(error(ErrorCode::Internal, format!("connection lost: {reason}")));
                actions
            }
            PeerEvent::Closed => {
                let mut actions = self.hang_up();
                self.state = State::Idle;
                actions.push(Action::Send(Message::Bye(Default::default())));
                actions
            }
        }
    }

    /// Actions that end the current call, if any.
    fn hang_up(&mut self) -> Vec<Action> {
        self.pending.clear();
        match self.state {
            State::Answering | State::Active => vec![Action::ClosePeer],
            State::Idle | State::Closed => Vec::new(),
        }
    }

    fn close_with(&mut self, mut last: Vec<Action>) -> Vec<Action> {
        let mut actions = self.hang_up();
        actions.append(&mut last);
        actions.push(Action::CloseSocket);
        self.state = State::Closed;
        actions
    }
}

fn error(code: ErrorCode, message: String) -> Action {
    Action::Send(Message::Error(ErrorBody { code, message }))
}

fn candidate_action(candidate: Option<IceCandidate>) -> Action {
    match candidate {
        Some(c) => Action::AddCandidate(c),
        None => Action::EndOfRemoteCandidates,
    }
}
