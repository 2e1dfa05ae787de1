//! One WHIP publication (RFC 9725) as a value, sans-IO: the daemon sends its stream to a
//! WHIP server (an SFU that serves the crowd), keeps it there, and comes back by itself after
//! the server or the network goes away.
//!
//! Inputs are what the transport did (the offer is built, the POST answered, the answer
//! applied), what the peer says, and the time; outputs are what to do next and the next
//! deadline. Failures are retried with capped exponential backoff and jitter; the first
//! failure of an episode is reported, the rest of it only counted, and the return reported
//! once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::session::plan::PeerEvent;
use crate::session::protocol::IceCandidate;

/// The first retry waits about this long.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries wait at most about this long.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// A published peer must connect (ICE and DTLS) within this after the answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A live peer that stays disconnected this long is given up and published again: a server
/// that restarted has forgotten the session, so waiting for ICE to fail (half a minute)
/// only keeps the viewers waiting.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(2);

/// Where the publication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting to try (again).
    Waiting,
    /// The offer peer is being built.
    Offering,
    /// The offer was POSTed; waiting for the answer.
    Posting,
    /// The answer is applied; ICE and DTLS are under way.
    Connecting,
    /// Media flows to the server.
    Live,
    /// Stopped for good (shutdown, or the target was removed).
    Stopped,
}

impl State {
    /// The number in `peercam_publish_state` (0 waiting … 4 live, 5 stopped).
    pub fn metric(self) -> u8 {
        match self {
            State::Waiting => 0,
            State::Offering => 1,
            State::Posting => 2,
            State::Connecting => 3,
            State::Live => 4,
            State::Stopped => 5,
        }
    }
}

/// The server's answer to the POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The session resource (absolute URL), for PATCH and DELETE.
    pub location: String,
    /// The answer SDP.
    pub answer_sdp: String,
    /// The server takes trickled candidates by PATCH (`Accept-Patch` named the sdpfrag type).
    pub trickle: bool,
    /// The resource's `ETag`, sent as `If-Match` with PATCH.
    pub etag: Option<String>,
}

/// Something that happened to the publication.
#[derive(Debug)]
pub enum Input {
    /// The offer peer is built: its offer SDP (candidates inside), or why not.
    Offered(Result<String, String>),
    /// The POST was answered: the session, or why not (a status and text, or a network
    /// error, as the transport words it).
    Posted(Result<Posted, String>),
    /// The answer was applied to the peer, or why not.
    AnswerApplied(Result<(), String>),
    /// An event from the peer.
    Peer(PeerEvent),
    /// Stop for good: DELETE the session and close the peer (shutdown, reload).
    Stop,
}

/// What the transport must do, in order.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Build a send-only offer peer; feed back [`Input::Offered`].
    BuildPeer,
    /// POST this offer to the target; feed back [`Input::Posted`].
    Post {
        /// The offer SDP.
        offer_sdp: String,
    },
    /// Apply this answer to the peer; feed back [`Input::AnswerApplied`].
    ApplyAnswer {
        /// The answer SDP.
        answer_sdp: String,
    },
    /// PATCH this local candidate (or the end of candidates) to the session.
    Patch {
        /// The session resource.
        location: String,
        /// Its `ETag`, for `If-Match`.
        etag: Option<String>,
        /// The candidate; `None`: the end of candidates.
        candidate: Option<IceCandidate>,
    },
    /// Close the peer.
    ClosePeer,
    /// DELETE the session resource (best effort).
    Delete {
        /// The session resource.
        location: String,
    },
    /// Report a change worth a log line: live, or the first failure of an episode.
    Report(Report),
    /// Nothing more until this instant ([`Publication::handle_timeout`]) or the next input.
    Timeout(Option<Instant>),
}

/// What the log (and the metrics) should hear.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Media flows; `attempts` it took (1 for the first try).
    Live {
        /// Tries since the last time it was live (or since the start).
        attempts: u32,
    },
    /// The first failure of an episode; the next try is in `retry_in`.
    Down {
        /// Why.
        reason: String,
        /// When the next try is.
        retry_in: Duration,
    },
}

/// One target's publication.
#[derive(Debug)]
pub struct Publication {
    state: State,
    /// When the next try starts (Waiting) or the peer must be up by (Connecting).
    deadline: Option<Instant>,
    /// The session resource, once POSTed.
    session: Option<Posted>,
    /// Failures in a row (0 while live).
    failures: u32,
    /// Tries since the last time it was live.
    attempts: u32,
    /// Times it went down after being live or failed a try (for `/metrics`).
    reconnects: u64,
    /// The episode's failure was reported.
    reported: bool,
    /// A small xorshift generator for the jitter (deterministic per seed, for tests).
    rng: u64,
    out: VecDeque<Output>,
}

impl Publication {
    /// A publication that tries at once; `seed` drives the retry jitter.
    pub fn new(now: Instant, seed: u64) -> Publication {
        let mut p = Publication {
            state: State::Waiting,
            deadline: Some(now),
            session: None,
            failures: 0,
            attempts: 0,
            reconnects: 0,
            reported: false,
            // Spread the seed's bits; xorshift needs a non-zero state.
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            out: VecDeque::new(),
        };
        p.handle_timeout(now);
        p
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Failed tries and lost sessions since the start.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Output {
        self.out
            .pop_front()
            .unwrap_or(Output::Timeout(self.deadline))
    }

    /// Time passed: starts the due try, or gives up on a peer that did not connect.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|at| now < at) {
            return;
        }
        match self.state {
            State::Waiting => {
                self.deadline = None;
                self.attempts += 1;
                self.state = State::Offering;
                self.out.push_back(Output::BuildPeer);
            }
            State::Connecting => self.fail(
                format!(
                    "the peer did not connect within {} s of the answer",
                    CONNECT_TIMEOUT.as_secs()
                ),
                now,
            ),
            State::Live => self.fail(
                "the server went silent (the connection stayed disconnected)".to_owned(),
                now,
            ),
            _ => self.deadline = None,
        }
    }

    /// Handles one input that arrived at `now`.
    pub fn handle_input(&mut self, input: Input, now: Instant) {
        if self.state == State::Stopped {
            return;
        }
        match input {
            Input::Stop => {
                self.end_session();
                self.state = State::Stopped;
                self.deadline = None;
            }
            Input::Offered(result) if self.state == State::Offering => match result {
                Ok(offer_sdp) => {
                    self.state = State::Posting;
                    self.out.push_back(Output::Post { offer_sdp });
                }
                Err(e) => self.fail(format!("cannot build the offer: {e}"), now),
            },
            Input::Posted(result) if self.state == State::Posting => match result {
                Ok(posted) => {
                    self.out.push_back(Output::ApplyAnswer {
                        answer_sdp: posted.answer_sdp.clone(),
                    });
                    self.session = Some(posted);
                    self.state = State::Connecting;
                    self.deadline = Some(now + CONNECT_TIMEOUT);
                }
                Err(e) => self.fail(e, now),
            },
            Input::AnswerApplied(result) if self.state == State::Connecting => {
                if let Err(e) = result {
                    self.fail(format!("the server's answer does not apply: {e}"), now);
                }
            }
            Input::Peer(event) => self.on_peer_event(event, now),
            // A late reply to a try that was given up.
            Input::Offered(_) | Input::Posted(_) | Input::AnswerApplied(_) => {}
        }
    }

    fn on_peer_event(&mut self, event: PeerEvent, now: Instant) {
        match (self.state, event) {
            (State::Connecting | State::Live, PeerEvent::LocalCandidate(c)) => {
                self.patch(Some(c));
            }
            (State::Connecting | State::Live, PeerEvent::EndOfCandidates) => self.patch(None),
            // Back before the grace ran out.
            (State::Live, PeerEvent::Connected) => self.deadline = None,
            (State::Connecting, PeerEvent::Connected) => {
                self.state = State::Live;
                self.deadline = None;
                self.out.push_back(Output::Report(Report::Live {
                    attempts: self.attempts,
                }));
                self.failures = 0;
                self.attempts = 0;
                self.reported = false;
            }
            (State::Live, PeerEvent::Disconnected) => {
                self.deadline = Some(now + DISCONNECTED_GRACE);
            }
            (State::Connecting | State::Live, PeerEvent::Failed(reason)) => {
                self.fail(format!("the connection failed: {reason}"), now);
            }
            (State::Connecting | State::Live, PeerEvent::Closed) => {
                self.fail("the connection closed".to_owned(), now);
            }
            _ => {}
        }
    }

    /// Trickles a late local candidate when the server takes them.
    fn patch(&mut self, candidate: Option<IceCandidate>) {
        if let Some(session) = self.session.as_ref().filter(|s| s.trickle) {
            self.out.push_back(Output::Patch {
                location: session.location.clone(),
                etag: session.etag.clone(),
                candidate,
            });
        }
    }

    /// Ends this try: the peer closes, the session is deleted, and the next try waits.
    fn fail(&mut self, reason: String, now: Instant) {
        self.end_session();
        self.failures += 1;
        self.reconnects += 1;
        let retry_in = self.backoff();
        if !self.reported {
            self.reported = true;
            self.out
                .push_back(Output::Report(Report::Down { reason, retry_in }));
        }
        self.state = State::Waiting;
        self.deadline = Some(now + retry_in);
    }

    /// Closes the peer (if one is being built or runs) and deletes the session (if any).
    fn end_session(&mut self) {
        if matches!(
            self.state,
            State::Offering | State::Posting | State::Connecting | State::Live
        ) {
            self.out.push_back(Output::ClosePeer);
        }
        if let Some(session) = self.session.take() {
            self.out.push_back(Output::Delete {
                location: session.location,
            });
        }
    }

    /// The wait before the next try: [`FIRST_RETRY`] doubled per failure in a row, at most
    /// [`MAX_RETRY`], times a jitter from 0.8 to 1.2 (so that many cameras that lost the same
    /// server do not all come back in the same second).
    fn backoff(&mut self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        let base = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.8 + 0.4 * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(p: &mut Publication) -> (Vec<Output>, Option<Instant>) {
        let mut outputs = Vec::new();
        loop {
            match p.poll_output() {
                Output::Timeout(at) => return (outputs, at),
                o => outputs.push(o),
            }
        }
    }

    fn posted(location: &str, trickle: bool) -> Posted {
        Posted {
            location: location.to_owned(),
            answer_sdp: "v=0 answer".to_owned(),
            trickle,
            etag: Some("\"e\"".to_owned()),
        }
    }

    /// Runs one try from Waiting to Live at `now`.
    fn go_live(p: &mut Publication, now: Instant, location: &str) {
        p.handle_timeout(now);
        assert!(drain(p).0.contains(&Output::BuildPeer));
        p.handle_input(Input::Offered(Ok("v=0 offer".into())), now);
        assert_eq!(
            drain(p).0,
            [Output::Post {
                offer_sdp: "v=0 offer".into()
            }]
        );
        p.handle_input(Input::Posted(Ok(posted(location, true))), now);
        let (outputs, deadline) = drain(p);
        assert_eq!(
            outputs,
            [Output::ApplyAnswer {
                answer_sdp: "v=0 answer".into()
            }]
        );
        assert_eq!(deadline, Some(now + CONNECT_TIMEOUT));
        p.handle_input(Input::AnswerApplied(Ok(())), now);
        p.handle_input(Input::Peer(PeerEvent::Connected), now);
        assert_eq!(p.state(), State::Live);
    }

    #[test]
    fn a_publication_offers_posts_applies_and_goes_live() {
        let t0 = Instant::now();
        let mut p = Publication::new(t0, 7);
        go_live(&mut p, t0, "http://sfu/whip/1");
        let (outputs, deadline) = drain(&mut p);
        assert_eq!(outputs, [Output::Report(Report::Live { attempts: 1 })]);
        assert_eq!(deadline, None, "live: nothing to wait for");
        // A late candidate is trickled, with the ETag.
        let c = IceCandidate {
            candidate: "candidate:1 1 udp 1 192.0.2.1 5000 typ srflx".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        p.handle_input(Input::Peer(PeerEvent::LocalCandidate(c.clone())), t0);
        assert_eq!(
            drain(&mut p).0,
            [Output::Patch {
                location: "http://sfu/whip/1".into(),
                etag: Some("\"e\"".into()),
                candidate: Some(c)
            }]
        );
        // Stop: the peer closes and the session is deleted, once.
        p.handle_input(Input::Stop, t0);
        assert_eq!(
            drain(&mut p).0,
            [
                Output::ClosePeer,
                Output::Delete {
                    location: "http://sfu/whip/1".into()
                }
            ]
        );
        p.handle_input(Input::Stop, t0);
        assert_eq!(drain(&mut p), (vec![], None));
        assert_eq!(p.state(), State::Stopped);
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_and_are_reported_once_per_episode() {
        let t0 = Instant::now();
        let mut p = Publication::new(t0, 42);
        let mut now = t0;
        let mut waits = Vec::new();
        let mut reports = 0;
        for _ in 0..8 {
            p.handle_timeout(now);
            p.handle_input(Input::Offered(Ok("v=0".into())), now);
            p.handle_input(Input::Posted(Err("connection refused".into())), now);
            let (outputs, deadline) = drain(&mut p);
            reports += outputs
                .iter()
                .filter(|o| matches!(o, Output::Report(Report::Down { .. })))
                .count();
            assert!(outputs.contains(&Output::ClosePeer), "{outputs:?}");
            let at = deadline.expect("a retry");
            waits.push(at - now);
            // Early: nothing happens.
            p.handle_timeout(at - Duration::from_millis(1));
            assert_eq!(drain(&mut p).0, []);
            now = at;
        }
        assert_eq!(reports, 1, "one report per episode");
        assert_eq!(p.reconnects(), 8);
        for (i, wait) in waits.iter().enumerate() {
            let base = FIRST_RETRY.saturating_mul(1 << i.min(16)).min(MAX_RETRY);
            assert!(
                *wait >= base.mul_f64(0.8) && *wait <= base.mul_f64(1.2),
                "try {i}: {wait:?} for a base of {base:?}"
            );
        }
        assert!(waits[7] <= MAX_RETRY.mul_f64(1.2));
        // Two seeds give different waits (jitter).
        let mut other = Publication::new(t0, 43);
        other.handle_input(Input::Offered(Err("x".into())), t0);
        let (_, at) = drain(&mut other);
        assert_ne!(Some(t0 + waits[0]), at);

        // Back: one Live report with the attempts; the next failure is a new episode with
        // the first wait again.
        go_live(&mut p, now, "http://sfu/whip/2");
        let (outputs, _) = drain(&mut p);
        assert_eq!(outputs, [Output::Report(Report::Live { attempts: 9 })]);
        p.handle_input(Input::Peer(PeerEvent::Failed("ICE".into())), now);
        let (outputs, deadline) = drain(&mut p);
        assert_eq!(
            outputs[..2],
            [
                Output::ClosePeer,
                Output::Delete {
                    location: "http://sfu/whip/2".into()
                }
            ]
        );
        assert!(matches!(outputs[2], Output::Report(Report::Down { .. })));
        assert!(deadline.expect("retry") - now <= FIRST_RETRY.mul_f64(1.2));
    }

    #[test]
    fn a_live_peer_disconnected_past_the_grace_is_published_again() {
        let t0 = Instant::now();
        let mut p = Publication::new(t0, 5);
        go_live(&mut p, t0, "http://sfu/whip/4");
        drain(&mut p);
        // A hiccup: back within the grace, nothing happens.
        p.handle_input(Input::Peer(PeerEvent::Disconnected), t0);
        assert_eq!(drain(&mut p).1, Some(t0 + DISCONNECTED_GRACE));
        p.handle_input(
            Input::Peer(PeerEvent::Connected),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(drain(&mut p), (vec![], None));
        // Silent for good: given up at the grace, deleted, tried again soon.
        let t1 = t0 + Duration::from_secs(60);
        p.handle_input(Input::Peer(PeerEvent::Disconnected), t1);
        p.handle_timeout(t1 + DISCONNECTED_GRACE);
        let (outputs, deadline) = drain(&mut p);
        assert_eq!(outputs[0], Output::ClosePeer);
        assert!(
            matches!(&outputs[2], Output::Report(Report::Down { reason, .. }) if reason.contains("silent"))
        );
        assert!(deadline.expect("a retry") <= t1 + DISCONNECTED_GRACE + FIRST_RETRY.mul_f64(1.2));
        assert_eq!(p.state(), State::Waiting);
    }

    #[test]
    fn a_peer_that_does_not_connect_is_given_up_at_the_deadline() {
        let t0 = Instant::now();
        let mut p = Publication::new(t0, 1);
        p.handle_input(Input::Offered(Ok("v=0".into())), t0);
        p.handle_input(Input::Posted(Ok(posted("http://sfu/whip/3", false))), t0);
        drain(&mut p);
        // Without trickle, late candidates are not sent.
        p.handle_input(Input::Peer(PeerEvent::EndOfCandidates), t0);
        assert_eq!(drain(&mut p).0, []);
        p.handle_timeout(t0 + CONNECT_TIMEOUT);
        let (outputs, _) = drain(&mut p);
        assert_eq!(
            outputs[..2],
            [
                Output::ClosePeer,
                Output::Delete {
                    location: "http://sfu/whip/3".into()
                }
            ]
        );
        let Output::Report(Report::Down { reason, .. }) = &outputs[2] else {
            panic!("{outputs:?}");
        };
        assert!(reason.contains("did not connect within 15 s"), "{reason}");
        // The answer that arrives late for a given-up try is ignored.
        p.handle_input(Input::AnswerApplied(Ok(())), t0 + CONNECT_TIMEOUT);
        assert_eq!(p.state(), State::Waiting);
    }
}
