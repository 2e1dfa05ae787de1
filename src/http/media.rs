//! The small interface through which the HTTP layer reaches the media: what can be sent
//! ([`MediaInfo`]), a call answered from an offer ([`MediaService::answer`]), the newest
//! picture for snapshots and the media metrics. [`LiveMedia`] is the real one (the [`MediaHub`]'s encoders and webrtc-rs peers);
//! the router's in-process tests use a test implementation without capture threads.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::config::WebrtcSettings;
use crate::h264::ProfileLevelId;
use crate::hub::MediaHub;
use crate::media::VideoCodec;
use crate::peer::{PeerError, PeerFactory, ViewerPeer};
use crate::pipeline::latest::{NoPicture, Picture};
use crate::session::machine::MediaInfo;
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::{ErrorBody, ErrorCode, IceCandidate};

/// A call's peer connection, as the signaling transports drive it.
#[async_trait]
pub trait Call: Send + Sync {
    /// Adds a trickled remote candidate; `Err` says why it was rejected.
    async fn add_remote_candidate(&self, candidate: &IceCandidate) -> Result<(), String>;
    /// The browser has no more candidates.
    async fn end_of_remote_candidates(&self) -> Result<(), String>;
    /// Restarts ICE with `offer_sdp` (the first offer with new credentials); the answer SDP,
    /// with the daemon's new credentials.
    async fn restart_ice(&self, offer_sdp: String) -> Result<String, String>;
    /// Hangs up: stops the media and closes the connection.
    async fn close(self: Box<Self>);
}

/// An answered offer.
pub struct Answered {
    /// The call; its events arrive on the channel given to [`MediaService::answer`].
    pub call: Box<dyn Call>,
    /// The answer SDP for the browser.
    pub answer_sdp: String,
    /// The encoder's adaptive bitrate target, marked changed so the page gets the current
    /// value right after the answer; `None` when not adaptive (passthrough).
    pub bitrate: Option<watch::Receiver<u32>>,
}

/// Answers `offer_sdp` on `media` per `plan` and logs the outcome under `label` (e.g.
/// `viewer ADDR`): the media answered with, or why not (cut: webrtc-rs's reason may quote the
/// offer). Every viewer transport answers through here.
pub(super) async fn answer_logged(
    media: &dyn MediaService,
    label: &str,
    offer_sdp: String,
    plan: &AnswerPlan,
    events: mpsc::Sender<PeerEvent>,
) -> Result<Answered, ErrorBody> {
    let answered = media.answer(offer_sdp, plan, events).await;
    match &answered {
        Ok(_) => log::info!("{label}: answering with {}", describe(plan)),
        Err(body) => {
            let text =
                crate::logging::client_str(&body.message).max(super::socket::LOGGED_MESSAGE_CHARS);
            log::warn!("{label}: {text}");
        }
    }
    answered
}

/// The answer's media for the log: "H264 (payload type 109) and opus", naming passthrough.
pub fn describe(plan: &AnswerPlan) -> String {
    let video = &plan.video;
    format!(
        "{}{} (payload type {}){}",
        video.codec,
        if video.passthrough {
            format!(" passed through from the camera ({})", video.fmtp)
        } else {
            String::new()
        },
        video.payload_type,
        if plan.opus_payload_type.is_some() {
            " and opus"
        } else {
            ""
        }
    )
}

/// The media side of the server.
#[async_trait]
pub trait MediaService: MediaInfo {
    /// Builds a call answering `offer_sdp` per `plan`; its events go to `events`.
    async fn answer(
        &self,
        offer_sdp: String,
        plan: &AnswerPlan,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Answered, ErrorBody>;
    /// Prometheus lines for the pipeline (frames, drops, encoder figures).
    fn metrics_text(&self) -> String;
    /// The newest picture, for `/snapshot.jpg`, or why there is none.
    fn latest_picture(&self) -> Result<Picture, NoPicture>;
}

/// The real media: the hub's encoders, sent by webrtc-rs peers built from `[webrtc]`.
pub struct LiveMedia {
    hub: Arc<MediaHub>,
    peers: PeerFactory,
}

impl LiveMedia {
    /// Calls on `hub`'s media with peers built from `webrtc`.
    pub fn new(hub: Arc<MediaHub>, webrtc: WebrtcSettings) -> Arc<LiveMedia> {
        Arc::new(LiveMedia {
            hub,
            peers: PeerFactory::new(webrtc),
        })
    }
}

impl MediaInfo for LiveMedia {
    fn video_codecs(&self) -> Vec<VideoCodec> {
        self.hub.video_codecs()
    }

    fn has_audio(&self) -> bool {
        self.hub.has_audio()
    }

    fn camera_h264(&self) -> Option<ProfileLevelId> {
        self.hub.camera_h264_profile()
    }
}

#[async_trait]
impl MediaService for LiveMedia {
    async fn answer(
        &self,
        offer_sdp: String,
        plan: &AnswerPlan,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Answered, ErrorBody> {
        let Some(tap) = self.hub.tap(&plan.video) else {
            return Err(ErrorBody {
                code: ErrorCode::NoCodec,
                message: format!("the {} encoder is not running", plan.video.codec),
                retry_after_ms: None,
            });
        };
        let target = tap.bitrate.as_ref().map(|b| {
            let mut rx = b.subscribe();
            rx.mark_changed();
            rx
        });
        match self.peers.answer(offer_sdp, plan, tap, events).await {
            Ok((peer, answer_sdp)) => Ok(Answered {
                call: Box::new(peer),
                answer_sdp,
                bitrate: target,
            }),
            Err(e) => Err(ErrorBody {
                code: match e {
                    PeerError::BadOffer(_) => ErrorCode::BadSdp,
                    _ => ErrorCode::Internal,
                },
                message: e.to_string(),
                retry_after_ms: None,
            }),
        }
    }

    fn metrics_text(&self) -> String {
        self.hub.metrics_text()
    }

    fn latest_picture(&self) -> Result<Picture, NoPicture> {
        self.hub.latest_picture()
    }
}

#[async_trait]
impl Call for ViewerPeer {
    async fn add_remote_candidate(&self, candidate: &IceCandidate) -> Result<(), String> {
        ViewerPeer::add_remote_candidate(self, candidate)
            .await
            .map_err(|e| e.to_string())
    }

    async fn end_of_remote_candidates(&self) -> Result<(), String> {
        ViewerPeer::end_of_remote_candidates(self)
            .await
            .map_err(|e| e.to_string())
    }

    async fn restart_ice(&self, offer_sdp: String) -> Result<String, String> {
        ViewerPeer::restart_ice(self, offer_sdp)
            .await
            .map_err(|e| e.to_string())
    }

    async fn close(self: Box<Self>) {
        ViewerPeer::close(*self).await;
    }
}
