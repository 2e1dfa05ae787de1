//! What the session asks of a viewer's peer connection and what it hears back: the answer it
//! plans from the offer ([`AnswerPlan`]) and the peer's events ([`PeerEvent`]). The session
//! defines them; `peer/` (the only module that uses webrtc-rs) carries them out, so the session
//! imports nothing of it.

use crate::session::codec::Chosen;
use crate::session::protocol::IceCandidate;

/// What the answer will carry, decided by the session from the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPlan {
    /// The video codec chosen from the offer: codec, the browser's payload type, the fmtp
    /// line to answer with, and whether the camera's own H.264 is passed through.
    pub video: Chosen,
    /// The browser's payload type for Opus; `None` sends no audio.
    pub opus_payload_type: Option<u8>,
}

/// Something the peer wants the session to know.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// A local ICE candidate to send to the browser.
    LocalCandidate(IceCandidate),
    /// Local gathering finished: send the end-of-candidates marker.
    EndOfCandidates,
    /// ICE found a path; the DTLS handshake comes next.
    IceConnected,
    /// ICE and DTLS are up; media flows.
    Connected,
    /// Nothing heard from the other side for a while (webrtc-rs: about 5 s); ICE may still
    /// recover, or fail later (about 25 s more).
    Disconnected,
    /// The connection failed or was lost for good.
    Failed(String),
    /// The connection closed.
    Closed,
}
