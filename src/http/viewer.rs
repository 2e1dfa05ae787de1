//! Viewer mode (`/ws`): the WebSocket adapter of the sans-IO [`Session`]. It feeds the
//! session what the socket, the peer and the encoder's bitrate say, and performs the
//! session's outputs: messages, building and closing the call, candidates, limit logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};
use tokio::sync::{mpsc, watch};

use super::lookups::NameLookups;
use super::media::{answer_logged, Answered, Call, MediaService};
use super::socket::{self, now, Conversation, Input, Socket};
use crate::peer::PEER_EVENT_CAPACITY;
use crate::session::machine::{self, Output, Session};
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::{ErrorBody, Message};

/// A change of the viewer count is sent this long after it, with whatever came meanwhile:
/// eight pages dialling together cost each socket one or two messages, not eight.
const VIEWERS_COALESCE: Duration = Duration::from_millis(250);

/// What reaches a viewer's conversation from outside its socket.
#[derive(Debug)]
pub(super) enum ViewerEvent {
    /// The call's peer said something.
    Peer(PeerEvent),
    /// The encoder's adaptive bitrate target changed (kbit/s).
    Bitrate(u32),
    /// A `.local` name's lookup ended.
    Resolved(String, Option<std::net::IpAddr>),
    /// The number of viewers in a call changed; it is sent after [`VIEWERS_COALESCE`].
    ViewersChanged,
    /// Time to send the number of viewers.
    ViewersDue,
}

/// The call in progress: the peer, and the encoder's bitrate target it follows.
struct LiveCall {
    call: Box<dyn Call>,
    bitrate: Option<watch::Receiver<u32>>,
}

/// One viewer's conversation.
pub(super) struct Viewer {
    session: Session,
    media: Arc<dyn MediaService>,
    call: Option<LiveCall>,
    peer_tx: mpsc::Sender<PeerEvent>,
    peer_rx: mpsc::Receiver<PeerEvent>,
    deadline: Option<Instant>,
    lookups: NameLookups,
    /// The signaling transport is gone (a relayed viewer whose relay link dropped): the call
    /// goes on without it, and the conversation ends with the call.
    detached: bool,
    /// `viewer 192.0.2.7:40000` or `relayed viewer 192.0.2.7:40000`.
    label: String,
    /// The daemon's viewer count (the number in `hello` counts as seen).
    viewers: watch::Receiver<usize>,
    /// When the changed count is sent; `None`: nothing to send.
    viewers_due: Option<tokio::time::Instant>,
}

impl Viewer {
    /// A conversation for the browser of `session`, on `media`; `label` starts its log
    /// lines.
    pub(super) fn new(
        session: Session,
        media: Arc<dyn MediaService>,
        lookups: NameLookups,
        viewers: watch::Receiver<usize>,
        label: String,
    ) -> Self {
        let (peer_tx, peer_rx) = mpsc::channel(PEER_EVENT_CAPACITY);
        info!("{label} connected");
        Viewer {
            session,
            media,
            call: None,
            peer_tx,
            peer_rx,
            deadline: None,
            lookups,
            detached: false,
            label,
            viewers,
            viewers_due: None,
        }
    }

    /// Builds the call for an admitted offer.
    async fn start_peer(
        &mut self,
        offer_sdp: String,
        plan: &AnswerPlan,
    ) -> Result<String, ErrorBody> {
        let label = self.label.clone();
        let Answered {
            call,
            answer_sdp,
            bitrate,
        } = answer_logged(&*self.media, &label, offer_sdp, plan, self.peer_tx.clone()).await?;
        self.call = Some(LiveCall { call, bitrate });
        Ok(answer_sdp)
    }

    /// Performs the session's outputs until it waits for a deadline or an input.
    async fn perform(&mut self, socket: &mut Socket) {
        loop {
            match self.session.poll_output() {
                Output::Timeout(at) => {
                    self.deadline = at;
                    return;
                }
                // A count is news only while fresh: never wait for room to send it.
                Output::Send(message @ Message::Viewers(_)) => socket.try_send(&message),
                Output::Send(message) => socket.send(&message).await,
                Output::StartPeer { offer_sdp, plan } => {
                    let ready = self.start_peer(offer_sdp, &plan).await;
                    self.session
                        .handle_input(machine::Input::PeerReady(ready), now());
                }
                Output::AddCandidate(candidate) => {
                    if let Some(live) = &self.call {
                        if let Err(e) = live.call.add_remote_candidate(&candidate).await {
                            self.session
                                .handle_input(machine::Input::CandidateRejected(e), now());
                        }
                    }
                }
                Output::Resolve(name) => self.lookups.start(name),
                // Only WHEP restarts ICE in place; on the WebSocket a new offer re-dials.
                Output::RestartIce { .. } => {}
                Output::EndOfRemoteCandidates => {
                    if let Some(live) = &self.call {
                        if let Err(e) = live.call.end_of_remote_candidates().await {
                            debug!("end of candidates: {e}");
                        }
                    }
                }
                Output::ClosePeer => self.hang_up().await,
                Output::CloseSocket => {}
                Output::LimitHit(limit) => socket::limit_hit(socket.label(), &limit),
            }
        }
    }

    async fn hang_up(&mut self) {
        if let Some(live) = self.call.take() {
            live.call.close().await;
            info!("{}: call ended", self.label);
        }
    }
}

impl Conversation for Viewer {
    type Event = ViewerEvent;

    async fn next_event(&mut self) -> ViewerEvent {
        let bitrate = async {
            if let Some(rx) = self.call.as_mut().and_then(|c| c.bitrate.as_mut()) {
                if rx.changed().await.is_ok() {
                    return *rx.borrow_and_update();
                }
            }
            // No call, not adaptive, or the pipeline is gone (a reload ends this connection).
            std::future::pending().await
        };
        let due = self.viewers_due;
        let viewers = async {
            match due {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    ViewerEvent::ViewersDue
                }
                // Gone only when the daemon is: then nothing more to tell.
                None => match self.viewers.changed().await {
                    Ok(()) => ViewerEvent::ViewersChanged,
                    Err(_) => std::future::pending().await,
                },
            }
        };
        tokio::select! {
            Some(event) = self.peer_rx.recv() => ViewerEvent::Peer(event),
            target = bitrate => ViewerEvent::Bitrate(target),
            (name, address) = self.lookups.next() => ViewerEvent::Resolved(name, address),
            event = viewers => event,
        }
    }

    async fn handle(&mut self, input: Input<'_, ViewerEvent>, now: Instant, socket: &mut Socket) {
        let input = match input {
            Input::Opened => None,
            Input::Text(text) => Some(machine::Input::Text(text)),
            Input::Binary => Some(machine::Input::Binary),
            Input::Heard => Some(machine::Input::Heard),
            Input::Event(ViewerEvent::Peer(event)) => Some(machine::Input::Peer(event)),
            Input::Event(ViewerEvent::Bitrate(kbps)) => Some(machine::Input::Bitrate(kbps)),
            Input::Event(ViewerEvent::Resolved(name, address)) => {
                Some(machine::Input::Resolved { name, address })
            }
            Input::Event(ViewerEvent::ViewersChanged) => {
                self.viewers_due = Some(tokio::time::Instant::now() + VIEWERS_COALESCE);
                None
            }
            Input::Event(ViewerEvent::ViewersDue) => {
                self.viewers_due = None;
                let count = *self.viewers.borrow_and_update();
                Some(machine::Input::Viewers(count))
            }
            Input::Shutdown => Some(machine::Input::Shutdown),
            Input::Reload => Some(machine::Input::Reload),
            Input::SignalingLost => {
                self.detached = true;
                if self.session.state() == machine::State::Active {
                    info!(
                        "{}: signaling lost (the relay link dropped); the call keeps its \
                         media until it ends",
                        self.label
                    );
                }
                None
            }
            Input::Timeout => {
                self.session.handle_timeout(now);
                None
            }
        };
        if let Some(input) = input {
            self.session.handle_input(input, now);
        }
        self.perform(socket).await;
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn is_closed(&self) -> bool {
        // Without signaling only a call in progress keeps the conversation: it ends when
        // the call does (ICE/DTLS failure, the browser closing its peer, a deadline).
        let state = self.session.state();
        state == machine::State::Closed || (self.detached && state != machine::State::Active)
    }

    async fn finish(mut self) {
        self.hang_up().await;
        info!("{} left", self.label);
    }
}
