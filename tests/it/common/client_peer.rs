//! The webrtc-rs client peer: a receive-only peer connection offering video codecs and Opus,
//! as a browser's, that counts the RTP it receives and hands its local candidates to a
//! channel. The integration tests dial the daemon with it (client.rs); benches/alloc.rs
//! includes this file (`#[path]`) as the receiving side of its loopback connection, so it
//! uses nothing from the tests' other modules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, Registry,
};

/// Counts RTP packets per kind and forwards local candidates to the signaling socket.
pub struct Client {
    pub video_packets: AtomicU64,
    /// Video frames: RTP packets whose timestamp differs from the previous packet's.
    pub video_frames: AtomicU64,
    pub audio_packets: AtomicU64,
    pub video_keyframe_starts: AtomicU64,
    pub video_pt: std::sync::Mutex<Option<u8>>,
    /// profile_idc of every SPS seen at the start of a STAP-A.
    pub sps_profiles: std::sync::Mutex<Vec<u8>>,
    /// The video track and the daemon's video SSRC, once RTP arrived (to send RTCP back).
    pub video_track: std::sync::Mutex<Option<(Arc<dyn TrackRemote>, u32)>>,
    candidates: tokio::sync::mpsc::Sender<Option<RTCIceCandidateInit>>,
}

struct Handler(Arc<Client>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.candidates.send(Some(init)).await;
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let client = self.0.clone();
        tokio::spawn(async move {
            let kind = track.kind().await;
            let mut last_timestamp = None;
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    match kind {
                        RtpCodecKind::Video => {
                            client.video_packets.fetch_add(1, Ordering::Relaxed);
                            // Every packet of one frame carries the frame's timestamp.
                            if last_timestamp.replace(packet.header.timestamp)
                                != Some(packet.header.timestamp)
                            {
                                client.video_frames.fetch_add(1, Ordering::Relaxed);
                            }
                            *client.video_pt.lock().unwrap() = Some(packet.header.payload_type);
                            client
                                .video_track
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| (track.clone(), packet.header.ssrc));
                            // STAP-A (24) carrying SPS/PPS starts every H.264 keyframe.
                            if packet.payload.first().map(|b| b & 0x1f) == Some(24) {
                                client.video_keyframe_starts.fetch_add(1, Ordering::Relaxed);
                                // STAP-A: header, 2-byte size, then the first NAL unit.
                                let p = &packet.payload;
                                if p.len() > 4 && p[3] & 0x1f == 7 {
                                    client.sps_profiles.lock().unwrap().push(p[4]);
                                }
                            }
                        }
                        _ => {
                            client.audio_packets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
}

pub fn codec(mime: &str, clock: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: clock,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

pub const H264_PT: u8 = 109;
pub const OPUS_PT: u8 = 111;

/// Builds a receive-only client offering `video` codecs (and Opus), on loopback.
pub async fn client(
    video: &[RTCRtpCodecParameters],
) -> (
    impl PeerConnection,
    Arc<Client>,
    tokio::sync::mpsc::Receiver<Option<RTCIceCandidateInit>>,
) {
    client_on(video, "127.0.0.1:0").await
}

/// [`client`] with its UDP socket bound to `udp_addr` (e.g. `[2001:db8::1]:0`).
pub async fn client_on(
    video: &[RTCRtpCodecParameters],
    udp_addr: &str,
) -> (
    impl PeerConnection,
    Arc<Client>,
    tokio::sync::mpsc::Receiver<Option<RTCIceCandidateInit>>,
) {
    build_client(video, Some(udp_addr)).await
}

/// [`client`] on ICE over TCP only (active, from loopback), as a browser on a network that
/// blocks UDP.
pub async fn client_tcp_only(
    video: &[RTCRtpCodecParameters],
) -> (
    impl PeerConnection,
    Arc<Client>,
    tokio::sync::mpsc::Receiver<Option<RTCIceCandidateInit>>,
) {
    build_client(video, None).await
}

/// The client: on `udp_addr`, or on ICE-TCP only when `None`.
async fn build_client(
    video: &[RTCRtpCodecParameters],
    udp_addr: Option<&str>,
) -> (
    impl PeerConnection,
    Arc<Client>,
    tokio::sync::mpsc::Receiver<Option<RTCIceCandidateInit>>,
) {
    let mut media = MediaEngine::default();
    for c in video {
        // Browsers offer REMB for every video codec (the daemon's adaptive bitrate uses it).
        let mut c = c.clone();
        c.rtp_codec.rtcp_feedback.push(RTCPFeedback {
            typ: "goog-remb".to_owned(),
            parameter: String::new(),
        });
        media
            .register_codec(c, RtpCodecKind::Video)
            .expect("register video");
    }
    media
        .register_codec(
            codec(
                "audio/opus",
                48_000,
                2,
                "minptime=10;useinbandfec=1",
                OPUS_PT,
            ),
            RtpCodecKind::Audio,
        )
        .expect("register opus");
    let registry =
        register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let state = Arc::new(Client {
        video_packets: AtomicU64::new(0),
        video_frames: AtomicU64::new(0),
        audio_packets: AtomicU64::new(0),
        video_keyframe_starts: AtomicU64::new(0),
        video_pt: std::sync::Mutex::new(None),
        sps_profiles: std::sync::Mutex::new(Vec::new()),
        video_track: std::sync::Mutex::new(None),
        candidates: tx,
    });
    let builder = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler(state.clone())));
    let builder = match udp_addr {
        Some(addr) => builder.with_udp_addrs(vec![addr.to_owned()]),
        None => builder
            .with_setting_engine(
                webrtc::peer_connection::SettingEngineBuilder::new()
                    .with_network_types(vec![rtc::ice::network_type::NetworkType::Tcp4])
                    .build(),
            )
            .with_tcp_addrs(vec!["127.0.0.1:0".to_owned()])
            .with_udp_addrs(Vec::<String>::new()),
    };
    let pc = builder.build().await.expect("client peer");
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .expect("transceiver");
    }
    (pc, state, rx)
}

pub fn h264() -> RTCRtpCodecParameters {
    codec(
        "video/H264",
        90_000,
        0,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        H264_PT,
    )
}

pub fn av1() -> RTCRtpCodecParameters {
    codec("video/AV1", 90_000, 0, "", 45)
}
