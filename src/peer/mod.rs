//! The WebRTC peer for one viewer. This is the only module that uses webrtc-rs.
//!
//! [`PeerFactory::answer`] takes a browser's offer and the codec the session chose, builds a
//! send-only peer connection with exactly that video codec (with the browser's payload type)
//! and Opus, and returns the answer. Local ICE candidates and connection state changes come
//! back as [`PeerEvent`]s. Once connected, the peer subscribes to the shared encoders'
//! [`Fanout`]s and writes RTP; browser PLI/FIR become keyframe requests, and its REMB and
//! receiver reports feed the encoder's adaptive bitrate ([`BitrateController`]).

pub mod ice_mux;
pub mod nat;
mod rtcp;
pub mod rtp;
pub mod turn_watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use log::{debug, info, warn};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::Slot;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

use crate::config::WebrtcSettings;
use crate::pipeline::bitrate::{BitrateController, Feedback, ViewerBitrate};
use crate::pipeline::fanout::Fanout;
use crate::pipeline::keyframe::KeyframeRequests;
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::IceCandidate;
use ice_mux::{IceMux, MuxPeer};
use rtp::{RtpPacketizer, StreamKind};

/// Why a peer could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The browser's offer was rejected by the WebRTC stack.
    #[error("the offer could not be applied: {0}")]
    BadOffer(String),
    /// A remote ICE candidate was rejected.
    #[error("ICE candidate rejected: {0}")]
    BadCandidate(String),
    /// No UDP port in the configured range could be bound.
    #[error("no free UDP port in {min}..={max} on {addrs}: {reason}")]
    NoPort {
        /// `webrtc.udp_port_min`.
        min: u16,
        /// `webrtc.udp_port_max`.
        max: u16,
        /// Addresses tried.
        addrs: String,
        /// Last error.
        reason: String,
    },
    /// The shared UDP port (`[webrtc] udp_port`) could not be bound.
    #[error("cannot use UDP port {port} ([webrtc] udp_port) on {addrs}: {reason}")]
    MuxPort {
        /// `webrtc.udp_port`.
        port: u16,
        /// Addresses tried.
        addrs: String,
        /// Last error.
        reason: String,
    },
    /// Anything else the WebRTC stack reported.
    #[error("WebRTC error: {0}")]
    Internal(String),
}

/// The shared media a viewer subscribes to once connected.
#[derive(Clone)]
pub struct MediaTap {
    /// Encoded video of the chosen codec.
    pub video: Arc<Fanout>,
    /// Encoded Opus audio, if audio is enabled.
    pub audio: Option<Arc<Fanout>>,
    /// Where this viewer's PLI/FIR go (the video encoder's request flag).
    pub keyframes: Arc<KeyframeRequests>,
    /// The encoder's adaptive bitrate this viewer's congestion feedback steers; `None` for
    /// camera H.264 passthrough (not adaptive).
    pub bitrate: Option<Arc<BitrateController>>,
    /// Counts the RTP bytes this peer writes (video and audio), when someone wants to know
    /// (a WHIP publication's `/metrics`).
    pub sent_bytes: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Builds one peer connection per viewer from the `[webrtc]` settings.
pub struct PeerFactory {
    settings: WebrtcSettings,
    next_port: AtomicU32,
    /// `[webrtc] udp_port`: every call on one port; `None`: a port per call from the range.
    mux: Option<Arc<IceMux>>,
}

/// How a peer's local candidates are shown to the other side: the shared port in place of
/// the peer's own (`udp_port`), then external addresses in place of local ones
/// (`nat_1to1_ips`). Local descriptions pass through here, which also tells the mux the
/// peer's ICE username fragments.
#[derive(Clone)]
struct Advertise {
    mux: Option<Arc<MuxPeer>>,
    nat: Vec<crate::config::NatMapping>,
}

impl Advertise {
    fn candidate(&self, candidate: &str) -> String {
        match &self.mux {
            Some(mux) => nat::rewrite_candidate(&mux.rewrite_candidate(candidate), &self.nat),
            None => nat::rewrite_candidate(candidate, &self.nat),
        }
    }

    fn local_description(&self, sdp: &str) -> String {
        match &self.mux {
            Some(mux) => {
                mux.register_sdp(sdp);
                nat::rewrite_sdp(&mux.rewrite_sdp(sdp), &self.nat)
            }
            None => nat::rewrite_sdp(sdp, &self.nat),
        }
    }
}

/// Capacity of the channel that carries [`PeerEvent`]s to the session.
pub const PEER_EVENT_CAPACITY: usize = 64;

impl PeerFactory {
    /// A factory using the `[webrtc]` settings (ICE servers, UDP ports, addresses).
    pub fn new(settings: WebrtcSettings) -> Self {
        PeerFactory {
            mux: (settings.udp_port != 0).then(|| {
                IceMux::shared(
                    settings.udp_port,
                    (settings.tcp_port != 0).then_some(settings.tcp_port),
                )
            }),
            settings,
            next_port: AtomicU32::new(0),
        }
    }

    /// Applies `offer_sdp`, attaches video (per `plan`) and Opus tracks, and returns the
    /// connected-later peer plus the answer SDP. Events arrive on `events`.
    ///
    /// The steps: build a peer connection with exactly the plan's codecs on a free UDP port
    /// ([`PeerFactory::connect`]), apply the offer, add the tracks, answer
    /// ([`PeerFactory::local_answer`]), and start the tasks that send media and forward
    /// the browser's feedback ([`start_media`]).
    pub async fn answer(
        &self,
        offer_sdp: String,
        plan: &AnswerPlan,
        tap: MediaTap,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<(ViewerPeer, String), PeerError> {
        let prepared = self.prepare(plan, &tap, events, &[]).await?;
        let pc = &prepared.pc;
        let offer = RTCSessionDescription::offer(offer_sdp)
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        if let Err(e) = pc.set_remote_description(offer).await {
            let _ = pc.close().await;
            return Err(PeerError::BadOffer(e.to_string()));
        }
        // The tracks go on after the offer: webrtc-rs then answers with the browser's
        // payload types.
        let (video, audio) = prepared.add_tracks(None).await?;
        let answer_sdp = self
            .local_answer(pc.as_ref(), plan, &prepared.advertise)
            .await?;
        Ok((prepared.start(plan, &tap, video, audio), answer_sdp))
    }

    /// A send-only offer for a WHIP server: video (per `plan`, whose payload types the daemon
    /// chooses) and Opus tracks, ICE servers `extra_ice_servers` besides `[webrtc]`'s.
    /// Returns the peer and its offer SDP (candidates come as events); apply the server's
    /// answer with [`ViewerPeer::apply_answer`].
    pub async fn offer(
        &self,
        plan: &AnswerPlan,
        tap: MediaTap,
        events: mpsc::Sender<PeerEvent>,
        extra_ice_servers: &[crate::config::IceServer],
    ) -> Result<(ViewerPeer, String), PeerError> {
        let prepared = self.prepare(plan, &tap, events, extra_ice_servers).await?;
        let pc = &prepared.pc;
        let (video, audio) = prepared
            .add_tracks(Some(RTCRtpTransceiverDirection::Sendonly))
            .await?;
        let offer = pc.create_offer(None).await.map_err(internal)?;
        pc.set_local_description(offer).await.map_err(internal)?;
        let description = pc
            .local_description()
            .await
            .ok_or_else(|| PeerError::Internal("no local description after offer".into()))?;
        let sdp = prepared.advertise.local_description(&description.sdp);
        Ok((prepared.start(plan, &tap, video, audio), sdp))
    }

    /// The part of a peer both directions share: the event handler, a peer connection with
    /// exactly the plan's codecs on a free port, and the tracks to add.
    async fn prepare(
        &self,
        plan: &AnswerPlan,
        tap: &MediaTap,
        events: mpsc::Sender<PeerEvent>,
        extra_ice_servers: &[crate::config::IceServer],
    ) -> Result<Prepared, PeerError> {
        let video_codec = video_codec_parameters(plan);
        let audio_codec = plan.opus_payload_type.map(opus_codec_parameters);
        let (connected_tx, connected_rx) = watch::channel(false);
        let advertise = Advertise {
            mux: self.mux.as_ref().map(|m| m.peer()),
            nat: self.settings.nat_1to1_ips.clone(),
        };
        let handler = Arc::new(Handler {
            events,
            connected: connected_tx,
            advertise: advertise.clone(),
        });
        // Chosen before the interceptors are built: the RTCP forwarder picks this stream's
        // receiver reports by SSRC.
        let video_ssrc: u32 = rand::random();
        let (feedback_tx, feedback_rx) = mpsc::channel::<Feedback>(rtcp::FEEDBACK_CAPACITY);
        let feedback_tx = tap.bitrate.is_some().then_some(feedback_tx);
        let pc = self
            .connect(
                &video_codec,
                audio_codec.as_ref(),
                Wiring {
                    handler,
                    video_ssrc,
                    feedback: feedback_tx,
                    extra_ice_servers,
                    mux: advertise.mux.as_ref(),
                },
            )
            .await?;
        Ok(Prepared {
            pc,
            advertise,
            video: SendTrack {
                track: new_track(RtpCodecKind::Video, &video_codec, video_ssrc),
                ssrc: video_ssrc,
                payload_type: video_codec.payload_type,
            },
            audio: audio_codec.map(|codec| {
                let ssrc: u32 = rand::random();
                SendTrack {
                    track: new_track(RtpCodecKind::Audio, &codec, ssrc),
                    ssrc,
                    payload_type: codec.payload_type,
                }
            }),
            feedback_rx,
            connected_rx,
        })
    }

    /// A peer connection with exactly `video` and `audio` registered, bound to the first free
    /// port of the configured range.
    async fn connect(
        &self,
        video: &RTCRtpCodecParameters,
        audio: Option<&RTCRtpCodecParameters>,
        wiring: Wiring<'_>,
    ) -> Result<Arc<dyn PeerConnection>, PeerError> {
        let Wiring {
            handler,
            video_ssrc,
            feedback,
            extra_ice_servers,
            mux,
        } = wiring;
        let now = std::time::SystemTime::now();
        let ice_servers = self
            .settings
            .ice_servers
            .iter()
            .chain(extra_ice_servers)
            .filter_map(|s| {
                let s = s.credentials_at(now);
                let urls: Vec<String> = s.urls.into_iter().filter(|u| gathers(u)).collect();
                (!urls.is_empty()).then(|| RTCIceServer {
                    urls,
                    username: s.username.unwrap_or_default(),
                    credential: s.credential.unwrap_or_default(),
                })
            })
            .collect();
        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers)
            .build();
        // mDNS off: host candidates carry IP addresses (query-only mode failed on machines
        // without a multicast route; browsers' .local candidates still connect peer-reflexive).
        // ICE over TCP (passive, through the mux's TCP port) besides UDP, when configured.
        let ice_tcp = mux.is_some() && self.settings.udp_port != 0 && self.settings.tcp_port != 0;
        let mut setting_engine =
            SettingEngineBuilder::new().with_multicast_dns_mode(MulticastDnsMode::Disabled);
        if ice_tcp {
            setting_engine = setting_engine.with_network_types(vec![
                NetworkType::Udp4,
                NetworkType::Udp6,
                NetworkType::Tcp4,
                NetworkType::Tcp6,
            ]);
        }
        let setting_engine = setting_engine.build();
        let mut last_error = String::new();
        // With the mux, the peer's own sockets (ephemeral ports) carry only TURN.
        let ports = match mux {
            Some(_) => vec![0],
            None => self.port_candidates(),
        };
        for port in ports {
            // The interceptor registry is consumed by each build attempt: make a fresh one.
            let (media_engine, registry) = media_setup(
                video,
                audio,
                rtcp::RtcpForwarder::new(video_ssrc, feedback.clone()),
            )?;
            let mut builder = PeerConnectionBuilder::new();
            if let Some(mux) = mux {
                builder = builder.with_runtime(mux.runtime());
            }
            let built = builder
                .with_configuration(configuration.clone())
                .with_media_engine(media_engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(setting_engine.clone())
                .with_handler(handler.clone() as Arc<dyn PeerConnectionEventHandler>)
                .with_udp_addrs(self.udp_addrs(port))
                .with_tcp_addrs(if ice_tcp {
                    self.udp_addrs(0)
                } else {
                    Vec::new()
                })
                .build()
                .await;
            match built {
                Ok(pc) => return Ok(Arc::new(pc)),
                Err(e) => last_error = e.to_string(),
            }
        }
        if mux.is_some() {
            return Err(PeerError::MuxPort {
                port: self.settings.udp_port,
                addrs: self.udp_addrs(0).join(", "),
                reason: last_error,
            });
        }
        Err(PeerError::NoPort {
            min: self.settings.udp_port_min,
            max: self.settings.udp_port_max,
            addrs: self.udp_addrs(0).join(", "),
            reason: last_error,
        })
    }

    /// Creates and sets the answer; returns its SDP as the browser gets it (NAT mappings
    /// applied; for passthrough, the camera's level in the fmtp).
    async fn local_answer(
        &self,
        pc: &dyn PeerConnection,
        plan: &AnswerPlan,
        advertise: &Advertise,
    ) -> Result<String, PeerError> {
        let answer = pc.create_answer(None).await.map_err(internal)?;
        pc.set_local_description(answer).await.map_err(internal)?;
        let description = pc
            .local_description()
            .await
            .ok_or_else(|| PeerError::Internal("no local description after answer".into()))?;
        let sdp = advertise.local_description(&description.sdp);
        Ok(if plan.video.passthrough {
            // webrtc-rs copies the offer's fmtp; announce the camera's level.
            crate::session::sdp::replace_fmtp(&sdp, plan.video.payload_type, &plan.video.fmtp)
        } else {
            sdp
        })
    }

    /// UDP ports to try, starting at a rotating point of the configured range.
    fn port_candidates(&self) -> Vec<u16> {
        let (min, max) = (self.settings.udp_port_min, self.settings.udp_port_max);
        if min == 0 && max == 0 {
            return vec![0];
        }
        let span = u32::from(max - min) + 1;
        let start = self.next_port.fetch_add(1, Ordering::Relaxed) % span;
        (0..span)
            .map(|i| min + ((start + i) % span) as u16)
            .collect()
    }

    /// Socket addresses to bind for one peer on `port`.
    fn udp_addrs(&self, port: u16) -> Vec<String> {
        if self.settings.ip_addresses.is_empty() {
            // Wildcard: webrtc-rs binds one socket per non-loopback interface address.
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).to_string()]
        } else {
            self.settings
                .ip_addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port).to_string())
                .collect()
        }
    }
}

/// What a peer connection is connected to besides its codecs: its event handler, the RTCP
/// forwarder's stream and channel, extra ICE servers, and the UDP mux.
struct Wiring<'a> {
    handler: Arc<Handler>,
    video_ssrc: u32,
    feedback: Option<mpsc::Sender<Feedback>>,
    extra_ice_servers: &'a [crate::config::IceServer],
    mux: Option<&'a Arc<MuxPeer>>,
}

/// A peer connection being set up, with the tracks it will send.
struct Prepared {
    pc: Arc<dyn PeerConnection>,
    advertise: Advertise,
    video: SendTrack,
    audio: Option<SendTrack>,
    feedback_rx: mpsc::Receiver<Feedback>,
    connected_rx: watch::Receiver<bool>,
}

impl Prepared {
    /// Adds the video and audio tracks: with `direction`, as transceivers of their own (an
    /// offer); without, to the offer's transceivers (an answer).
    async fn add_tracks(
        &self,
        direction: Option<RTCRtpTransceiverDirection>,
    ) -> Result<(SendTrack, Option<SendTrack>), PeerError> {
        for send in std::iter::once(&self.video).chain(&self.audio) {
            let track = send.track.clone() as Arc<dyn TrackLocal>;
            match direction {
                None => {
                    self.pc.add_track(track).await.map_err(internal)?;
                }
                Some(direction) => {
                    let init = RTCRtpTransceiverInit {
                        direction,
                        ..Default::default()
                    };
                    self.pc
                        .add_transceiver_from_track(track, Some(init))
                        .await
                        .map_err(internal)?;
                }
            }
        }
        Ok((self.video.clone(), self.audio.clone()))
    }

    /// Starts the media tasks: the peer is ready.
    fn start(
        self,
        plan: &AnswerPlan,
        tap: &MediaTap,
        video: SendTrack,
        audio: Option<SendTrack>,
    ) -> ViewerPeer {
        let (cancel, tasks) =
            start_media(plan, tap, video, audio, self.feedback_rx, self.connected_rx);
        ViewerPeer {
            pc: self.pc,
            cancel,
            tasks,
            advertise: self.advertise,
        }
    }
}

/// A track this peer sends, with its SSRC and payload type.
#[derive(Clone)]
struct SendTrack {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
}

/// Starts the peer's tasks: media from the fan-outs once connected, the browser's keyframe
/// requests to the encoder, and its congestion feedback to the adaptive bitrate. They stop
/// when the returned token is cancelled.
fn start_media(
    plan: &AnswerPlan,
    tap: &MediaTap,
    video: SendTrack,
    audio: Option<SendTrack>,
    feedback: mpsc::Receiver<Feedback>,
    connected: watch::Receiver<bool>,
) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let cancel = CancellationToken::new();
    let mut tasks = vec![
        tokio::spawn(forward_media(
            video.track.clone(),
            RtpPacketizer::new(
                StreamKind::Video(plan.video.codec),
                video.payload_type,
                video.ssrc,
            ),
            tap.video.clone(),
            connected.clone(),
            cancel.clone(),
            tap.sent_bytes.clone(),
        )),
        tokio::spawn(forward_keyframe_requests(
            video.track,
            tap.keyframes.clone(),
            cancel.clone(),
        )),
    ];
    if let Some(controller) = &tap.bitrate {
        tasks.push(tokio::spawn(forward_congestion_feedback(
            feedback,
            controller.join(),
            cancel.clone(),
        )));
    }
    if let (Some(audio), Some(fanout)) = (audio, tap.audio.clone()) {
        tasks.push(tokio::spawn(forward_media(
            audio.track,
            RtpPacketizer::new(StreamKind::Opus, audio.payload_type, audio.ssrc),
            fanout,
            connected,
            cancel.clone(),
            tap.sent_bytes.clone(),
        )));
    }
    (cancel, tasks)
}

/// One viewer's live peer connection; dropping it without [`ViewerPeer::close`] still stops
/// its media tasks.
pub struct ViewerPeer {
    pc: Arc<dyn PeerConnection>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Applied to the answers of ICE restarts.
    advertise: Advertise,
}

impl ViewerPeer {
    /// Adds a trickled remote candidate.
    pub async fn add_remote_candidate(&self, candidate: &IceCandidate) -> Result<(), PeerError> {
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate.clone(),
            sdp_mid: candidate.sdp_mid.clone(),
            sdp_mline_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment.clone(),
            url: None,
        };
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| PeerError::BadCandidate(e.to_string()))
    }

    /// The browser has no more candidates.
    pub async fn end_of_remote_candidates(&self) -> Result<(), PeerError> {
        // An empty candidate is the end-of-candidates sentinel for webrtc-rs.
        self.pc
            .add_ice_candidate(RTCIceCandidateInit::default())
            .await
            .map_err(|e| PeerError::BadCandidate(e.to_string()))
    }

    /// Restarts ICE: applies `offer_sdp` (the first offer with the client's new ICE
    /// credentials) and answers it; the answer carries the daemon's new credentials. Media
    /// and DTLS go on; new local candidates arrive as events.
    pub async fn restart_ice(&self, offer_sdp: String) -> Result<String, PeerError> {
        let offer = RTCSessionDescription::offer(offer_sdp)
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        let answer = self.pc.create_answer(None).await.map_err(internal)?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(internal)?;
        let description = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| PeerError::Internal("no local description after answer".into()))?;
        Ok(self.advertise.local_description(&description.sdp))
    }

    /// Applies a WHIP server's answer to this peer's offer.
    pub async fn apply_answer(&self, answer_sdp: String) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(answer_sdp)
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| PeerError::BadOffer(e.to_string()))
    }

    /// Stops the media tasks and closes the connection.
    pub async fn close(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Err(e) = self.pc.close().await {
            debug!("closing peer connection: {e}");
        }
    }
}

impl Drop for ViewerPeer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A media engine with exactly the answer's codecs, and the interceptors (NACK, RTCP reports,
/// `forwarder` for keyframe requests and congestion feedback).
fn media_setup(
    video: &RTCRtpCodecParameters,
    audio: Option<&RTCRtpCodecParameters>,
    forwarder: rtcp::RtcpForwarder,
) -> Result<(MediaEngine, Registry), PeerError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(video.clone(), RtpCodecKind::Video)
        .map_err(internal)?;
    if let Some(audio) = audio {
        media_engine
            .register_codec(audio.clone(), RtpCodecKind::Audio)
            .map_err(internal)?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .map_err(internal)?
        .with(Slot::from(rtcp::SLOT), forwarder);
    Ok((media_engine, registry))
}

fn internal(e: impl std::fmt::Display) -> PeerError {
    PeerError::Internal(e.to_string())
}

fn video_codec_parameters(plan: &AnswerPlan) -> RTCRtpCodecParameters {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: plan.video.codec.mime_type().to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: plan.video.fmtp.clone(),
            rtcp_feedback: vec![
                feedback("nack", ""),
                feedback("nack", "pli"),
                feedback("ccm", "fir"),
                // The browser's bandwidth estimate, for adaptive bitrate.
                feedback("goog-remb", ""),
            ],
        },
        payload_type: plan.video.payload_type,
    }
}

fn opus_codec_parameters(payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type,
    }
}

/// A static-RTP track sending `codec` as `ssrc`.
fn new_track(
    kind: RtpCodecKind,
    codec: &RTCRtpCodecParameters,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
    let track = MediaStreamTrack::new(
        "peercam".to_owned(),
        format!("peercam-{kind}"),
        format!("peercam {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtp_codec.clone(),
            ..Default::default()
        }],
    );
    Arc::new(TrackLocalStaticRTP::new(track))
}

/// Hands this viewer's congestion feedback to the encoder's adaptive bitrate until the peer
/// closes; the viewer then leaves the bitrate minimum (its handle is dropped).
async fn forward_congestion_feedback(
    mut feedback: mpsc::Receiver<Feedback>,
    viewer: ViewerBitrate,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            f = feedback.recv() => match f {
                Some(f) => {
                    debug!("congestion feedback: {f:?}");
                    viewer.feedback(f, std::time::Instant::now());
                }
                None => return,
            },
        }
    }
}

/// Waits until connected, then subscribes to `fanout` and writes every frame as RTP.
async fn forward_media(
    track: Arc<TrackLocalStaticRTP>,
    mut packetizer: RtpPacketizer,
    fanout: Arc<Fanout>,
    mut connected: watch::Receiver<bool>,
    cancel: CancellationToken,
    sent_bytes: Option<Arc<std::sync::atomic::AtomicU64>>,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        r = connected.wait_for(|c| *c) => if r.is_err() { return },
    }
    let mut subscription = fanout.subscribe();
    // Reused for every frame: no allocation per packet (see `rtp`).
    let mut packets = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            f = subscription.recv() => match f {
                Some(f) => f,
                None => return,
            },
        };
        if let Err(e) = packetizer.packetize(&frame, &mut packets) {
            warn!("{e}; frame skipped");
            continue;
        }
        for packet in packets.drain(..) {
            if let Some(sent) = &sent_bytes {
                // The RTP header (12 bytes, no extensions or CSRCs here) and the payload.
                let bytes = 12 + packet.payload.len() as u64;
                sent.fetch_add(bytes, Ordering::Relaxed);
            }
            if let Err(e) = track.write_rtp(packet).await {
                debug!("RTP write stopped: {e}");
                return;
            }
        }
        fanout.observe_sent(frame.capture_instant);
    }
}

/// Turns the browser's PLI/FIR on the video track into keyframe requests.
async fn forward_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    keyframes: Arc<KeyframeRequests>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = track.poll() => e,
        };
        match event {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets
                    .iter()
                    .any(|p| rtcp::is_keyframe_request(p.as_ref()))
                {
                    debug!("the viewer (a browser or an SFU) asked for a keyframe");
                    keyframes.request();
                }
            }
            Some(_) => {}
            None => {
                // Not bound yet or unbound: wait a little instead of spinning.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Receives webrtc-rs callbacks and turns them into [`PeerEvent`]s.
struct Handler {
    events: mpsc::Sender<PeerEvent>,
    connected: watch::Sender<bool>,
    /// Applied to every local candidate sent to the browser.
    advertise: Advertise,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let candidate = IceCandidate {
                    candidate: self.advertise.candidate(&format!(
                        "candidate:{}",
                        init.candidate.trim_start_matches("candidate:")
                    )),
                    sdp_mid: init.sdp_mid,
                    sdp_m_line_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                let _ = self.events.send(PeerEvent::LocalCandidate(candidate)).await;
            }
            Err(e) => warn!("cannot serialize local ICE candidate: {e}"),
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if state == RTCIceConnectionState::Connected {
            let _ = self.events.send(PeerEvent::IceConnected).await;
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PeerEvent::EndOfCandidates).await;
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!("peer connection state: {state}");
        let event = match state {
            RTCPeerConnectionState::Connected => {
                let _ = self.connected.send(true);
                PeerEvent::Connected
            }
            RTCPeerConnectionState::Failed => {
                PeerEvent::Failed("ICE/DTLS connection failed".to_owned())
            }
            RTCPeerConnectionState::Closed => PeerEvent::Closed,
            RTCPeerConnectionState::Disconnected => {
                info!("peer disconnected; waiting for ICE to recover");
                PeerEvent::Disconnected
            }
            _ => return,
        };
        let _ = self.events.send(event).await;
    }
}

/// Whether webrtc-rs gathers candidates through this ICE server URL: `stun:`, and `turn:`
/// over UDP. It skips `stuns:`, `turns:` and TURN over TCP (with a warning per call), so
/// those are left to the viewers' browsers, which use them all.
pub fn gathers(url: &str) -> bool {
    let url = url.trim().to_ascii_lowercase();
    if url.starts_with("stun:") {
        return true;
    }
    let Some(rest) = url.strip_prefix("turn:") else {
        return false;
    };
    match rest.split_once("?transport=") {
        None => true,
        Some((_, transport)) => transport == "udp",
    }
}

/// One line for the start-up log on `[webrtc] ice_servers`: which URLs peercam gathers
/// through itself and which only the viewers' browsers use; `None` without ICE servers.
pub fn ice_servers_summary(servers: &[crate::config::IceServer]) -> Option<String> {
    let urls: Vec<&str> = servers
        .iter()
        .flat_map(|s| s.urls.iter().map(String::as_str))
        .collect();
    if urls.is_empty() {
        return None;
    }
    let (own, browsers): (Vec<&str>, Vec<&str>) = urls.into_iter().partition(|u| gathers(u));
    let mut line = format!(
        "ICE servers: peercam and its viewers use {}",
        if own.is_empty() {
            "none".to_owned()
        } else {
            own.join(", ")
        }
    );
    if !browsers.is_empty() {
        line.push_str(&format!(
            "; only the viewers' browsers use {} (peercam gathers over UDP only: stun: and \
             turn: with UDP)",
            browsers.join(", ")
        ));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peercam_gathers_through_stun_and_turn_over_udp_only() {
        for url in [
            "stun:s.example.org",
            "turn:t.example.org:3478",
            "turn:t?transport=udp",
        ] {
            assert!(gathers(url), "{url}");
        }
        for url in [
            "stuns:s.example.org",
            "turns:t.example.org",
            "turn:t?transport=tcp",
        ] {
            assert!(!gathers(url), "{url}");
        }
        let server = |urls: &[&str]| crate::config::IceServer {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            username: Some("u".into()),
            credential: Some("p".into()),
            secret: None,
        };
        assert_eq!(ice_servers_summary(&[]), None);
        assert_eq!(
            ice_servers_summary(&[
                server(&["stun:s:3478"]),
                server(&["turn:t:3478", "turn:t:3478?transport=tcp", "turns:t:5349"])
            ])
            .as_deref(),
            Some(
                "ICE servers: peercam and its viewers use stun:s:3478, turn:t:3478; only the \
                 viewers' browsers use turn:t:3478?transport=tcp, turns:t:5349 (peercam \
                 gathers over UDP only: stun: and turn: with UDP)"
            )
        );
    }
}
