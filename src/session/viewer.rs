//! The per-viewer signaling state machine, sans-IO: text and peer events in, actions out.
//!
//! The WebSocket task (src/http/) feeds it every message and every [`PeerEvent`], and
//! carries out the [`Action`]s it returns. Nothing here touches a socket or a clock, so the
//! whole conversation is tested in memory.

use crate::h264::ProfileLevelId;
use crate::media::VideoCodec;
use crate::session::codec;
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::{
    self, Bye, ByeReason, ErrorBody, ErrorCode, IceCandidate, Message, SdpKind, SessionDescription,
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
    /// The configuration was reloaded with new media settings: end the call and close the
    /// socket (the page reconnects and dials again).
    Reload,
    /// The call did not connect in time (`limits.ice_timeout_s`): end it, keep the socket.
    IceTimeout,
    /// The socket has been silent without a call for `limits.idle_timeout_s`: close it.
    Idle,
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
    /// The camera's H.264 profile when it can be passed through (see
    /// [`ViewerSession::set_camera_h264`]).
    camera_h264: Option<ProfileLevelId>,
    /// Remote candidates that arrived while the peer was being built.
    pending: Vec<Option<IceCandidate>>,
}

impl ViewerSession {
    /// A new session for a browser that just connected.
    pub fn new(
        preferences: Vec<VideoCodec>,
        audio_enabled: bool,
        max_message_bytes: usize,
    ) -> Self {
        ViewerSession {
            state: State::Idle,
            preferences,
            audio_enabled,
            max_message_bytes,
            camera_h264: None,
            pending: Vec::new(),
        }
    }

    /// Tells the session what the camera's H.264 stream is now (`None`: no passthrough);
    /// the next offer's codec choice uses it. The IO layer updates it before each message.
    pub fn set_camera_h264(&mut self, profile: Option<ProfileLevelId>) {
        self.camera_h264 = profile;
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
            Input::Shutdown => self.close_with(vec![Action::Send(Message::Bye(Bye::because(
                ByeReason::Shutdown,
            )))]),
            Input::Reload => self.close_with(vec![Action::Send(Message::Bye(Bye::because(
                ByeReason::Reload,
            )))]),
            Input::IceTimeout => {
                if self.state != State::Active {
                    return Vec::new();
                }
                let mut actions = self.hang_up();
                self.state = State::Idle;
                actions.push(Action::Send(Message::Bye(Bye::because(
                    ByeReason::IceTimeout,
                ))));
                actions
            }
            Input::Idle => self.close_with(vec![Action::Send(Message::Bye(Bye::because(
                ByeReason::Idle,
            )))]),
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
            // A browser may greet us, or echo the daemon's bitrate; nothing to do.
            Message::Hello(_) | Message::Bitrate(_) => Vec::new(),
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
        let chosen = match codec::choose_with_camera(&self.preferences, &offered, self.camera_h264)
        {
            Ok(c) => c,
            Err(e) => return vec![error(ErrorCode::NoCodec, e.to_string())],
        };
        let receives = |kind| {
            codec::media_direction(&desc.sdp, kind).is_some_and(codec::Direction::browser_receives)
        };
        if !receives(codec::MediaKind::Video) {
            return vec![error(
                ErrorCode::BadSdp,
                "the offer does not receive video (its video section is sendonly or inactive); \
                 Dial with a recvonly or sendrecv video transceiver"
                    .to_owned(),
            )];
        }
        let opus = if self.audio_enabled && receives(codec::MediaKind::Audio) {
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
                video_passthrough: chosen.passthrough,
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
            return if result.is_ok() {
                vec![Action::ClosePeer]
            } else {
                Vec::new()
            };
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
                actions.push(error(
                    ErrorCode::Internal,
                    format!("connection lost: {reason}"),
                ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::VideoCodec::{Av1, H264};

    const CHROMIUM: &str = include_str!("../../tests/fixtures/offers/chromium-156.sdp");
    const FIREFOX: &str = include_str!("../../tests/fixtures/offers/firefox-esr-153.sdp");

    fn session() -> ViewerSession {
        ViewerSession::new(vec![H264, Av1], true, 65_536)
    }

    fn offer(sdp: &str) -> String {
        Message::Sdp(SessionDescription {
            kind: SdpKind::Offer,
            sdp: sdp.to_owned(),
        })
        .to_json()
    }

    fn error_code(actions: &[Action]) -> Option<ErrorCode> {
        actions.iter().find_map(|a| match a {
            Action::Send(Message::Error(e)) => Some(e.code),
            _ => None,
        })
    }

    fn candidate(text: &str) -> String {
        format!(r#"{{"candidate":{{"candidate":"{text}","sdpMid":"0","sdpMLineIndex":0}}}}"#)
    }

    #[test]
    fn dial_answer_and_trickle_in_both_directions() {
        let mut s = session();
        let actions = s.handle(Input::Text(&offer(CHROMIUM)));
        let [Action::StartPeer { plan, .. }] = actions.as_slice() else {
            panic!("expected StartPeer, got {actions:?}");
        };
        assert_eq!(plan.video_codec, H264);
        assert_eq!(plan.video_payload_type, 108);
        assert_eq!(plan.opus_payload_type, Some(111));
        assert_eq!(s.state(), State::Answering);

        // A candidate that arrives while the peer is being built is held, then applied.
        let c = candidate("candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host");
        assert!(s.handle(Input::Text(&c)).is_empty());
        let actions = s.handle(Input::PeerReady(Ok("v=0 answer".into())));
        assert!(matches!(&actions[0], Action::Send(Message::Sdp(d)) if d.kind == SdpKind::Answer));
        assert!(matches!(&actions[1], Action::AddCandidate(c) if c.candidate.contains("50000")));
        assert_eq!(s.state(), State::Active);

        let c2 = candidate("candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host");
        assert!(matches!(
            s.handle(Input::Text(&c2)).as_slice(),
            [Action::AddCandidate(_)]
        ));
        assert_eq!(
            s.handle(Input::Text(r#"{"candidate":null}"#)),
            vec![Action::EndOfRemoteCandidates]
        );
        assert_eq!(
            s.handle(Input::Text(&candidate(""))),
            vec![Action::EndOfRemoteCandidates],
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
            s.handle(Input::Peer(PeerEvent::LocalCandidate(local.clone()))),
            vec![Action::Send(Message::Candidate(Some(local)))]
        );
        assert_eq!(
            s.handle(Input::Peer(PeerEvent::EndOfCandidates)),
            vec![Action::Send(Message::Candidate(None))]
        );
        assert!(s.handle(Input::Peer(PeerEvent::Connected)).is_empty());

        // Hang up: the peer closes, the browser gets bye, a new Dial may follow.
        let actions = s.handle(Input::Text(r#"{"bye":{}}"#));
        assert_eq!(
            actions,
            vec![
                Action::ClosePeer,
                Action::Send(Message::Bye(Bye::default()))
            ]
        );
        assert_eq!(s.state(), State::Idle);
        assert!(matches!(
            s.handle(Input::Text(&offer(CHROMIUM))).as_slice(),
            [Action::StartPeer { .. }]
        ));
    }

    #[test]
    fn firefox_offer_falls_back_to_av1() {
        let mut s = session();
        let actions = s.handle(Input::Text(&offer(FIREFOX)));
        assert!(matches!(
            actions.as_slice(),
            [Action::StartPeer { plan, .. }] if plan.video_codec == Av1 && plan.video_payload_type == 99
        ));
    }

    #[test]
    fn bad_input_gets_errors_and_changes_nothing() {
        let mut s = session();
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
            let actions = s.handle(Input::Text(text));
            assert_eq!(error_code(&actions), Some(code), "{text}: {actions:?}");
            assert_eq!(actions.len(), 1);
            assert_eq!(s.state(), State::Idle);
        }
        let mut small = ViewerSession::new(vec![H264], true, 1024);
        let actions = small.handle(Input::Text(&offer(CHROMIUM)));
        assert_eq!(error_code(&actions), Some(ErrorCode::TooLarge));
    }

    #[test]
    fn no_acceptable_codec_names_both_sides() {
        let mut s = ViewerSession::new(vec![H264], true, 65_536);
        let actions = s.handle(Input::Text(&offer(FIREFOX)));
        let [Action::Send(Message::Error(e))] = actions.as_slice() else {
            panic!("{actions:?}");
        };
        assert_eq!(e.code, ErrorCode::NoCodec);
        assert!(
            e.message.contains("VP8") && e.message.contains("h264"),
            "{}",
            e.message
        );
    }

    #[test]
    fn viewer_limit_rejection_returns_to_idle() {
        let mut s = session();
        s.handle(Input::Text(&offer(CHROMIUM)));
        let actions = s.handle(Input::PeerReady(Err(ErrorBody {
            code: ErrorCode::ViewerLimit,
            message: "viewer limit 1 reached".into(),
        })));
        assert_eq!(error_code(&actions), Some(ErrorCode::ViewerLimit));
        assert_eq!(s.state(), State::Idle);
    }

    #[test]
    fn audio_disabled_answers_without_opus() {
        let mut s = ViewerSession::new(vec![H264], false, 65_536);
        let actions = s.handle(Input::Text(&offer(CHROMIUM)));
        assert!(matches!(
            actions.as_slice(),
            [Action::StartPeer { plan, .. }] if plan.opus_payload_type.is_none()
        ));
    }

    #[test]
    fn peer_failure_and_shutdown_close_the_call() {
        let mut s = session();
        s.handle(Input::Text(&offer(CHROMIUM)));
        s.handle(Input::PeerReady(Ok("answer".into())));
        let actions = s.handle(Input::Peer(PeerEvent::Failed("ICE failed".into())));
        assert_eq!(actions[0], Action::ClosePeer);
        assert_eq!(error_code(&actions), Some(ErrorCode::Internal));
        assert_eq!(s.state(), State::Idle);

        s.handle(Input::Text(&offer(CHROMIUM)));
        s.handle(Input::PeerReady(Ok("answer".into())));
        let actions = s.handle(Input::Shutdown);
        assert_eq!(
            actions,
            vec![
                Action::ClosePeer,
                Action::Send(Message::Bye(Bye::because(ByeReason::Shutdown))),
                Action::CloseSocket
            ]
        );
        assert_eq!(s.state(), State::Closed);
        assert!(s.handle(Input::Text(&offer(CHROMIUM))).is_empty());
    }

    #[test]
    fn reload_ends_the_call_with_a_reason_the_page_redials_on() {
        let mut s = session();
        s.handle(Input::Text(&offer(CHROMIUM)));
        s.handle(Input::PeerReady(Ok("answer".into())));
        let actions = s.handle(Input::Reload);
        assert_eq!(
            actions,
            vec![
                Action::ClosePeer,
                Action::Send(Message::Bye(Bye::because(ByeReason::Reload))),
                Action::CloseSocket
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
        let mut s = session();
        s.handle(Input::Text(&offer(CHROMIUM)));
        s.handle(Input::Text(r#"{"bye":{}}"#));
        assert_eq!(
            s.handle(Input::PeerReady(Ok("late answer".into()))),
            vec![Action::ClosePeer]
        );
    }

    #[test]
    fn ice_timeout_ends_the_call_but_keeps_the_socket() {
        let mut s = session();
        // Before any call it means nothing.
        assert!(s.handle(Input::IceTimeout).is_empty());
        s.handle(Input::Text(&offer(CHROMIUM)));
        s.handle(Input::PeerReady(Ok("answer".into())));
        assert_eq!(
            s.handle(Input::IceTimeout),
            vec![
                Action::ClosePeer,
                Action::Send(Message::Bye(Bye::because(ByeReason::IceTimeout)))
            ]
        );
        assert_eq!(s.state(), State::Idle);
        assert_eq!(
            Message::Bye(Bye::because(ByeReason::IceTimeout)).to_json(),
            r#"{"bye":{"reason":"ice_timeout"}}"#
        );
        // The browser may dial again on the same socket.
        assert!(matches!(
            s.handle(Input::Text(&offer(CHROMIUM))).as_slice(),
            [Action::StartPeer { .. }]
        ));
    }

    #[test]
    fn idle_closes_the_socket_with_a_reason() {
        let mut s = session();
        assert_eq!(
            s.handle(Input::Idle),
            vec![
                Action::Send(Message::Bye(Bye::because(ByeReason::Idle))),
                Action::CloseSocket
            ]
        );
        assert_eq!(s.state(), State::Closed);
    }
}
