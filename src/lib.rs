//! # peercam
//!
//! A headless camera daemon: captures a webcam (V4L2) and a microphone (ALSA), or a built-in
//! test pattern and tone, encodes video once (H.264 with openh264, AV1 with rav1e) and audio
//! once (Opus), and streams to every browser that dials in over WebRTC. The signaling relay
//! and the Dial page are served by the same binary on one HTTP port.
//!
//! ## Data path (one direction)
//! ```text
//! capture (camera/test) -> VideoFrame  -> [queue 4, drop oldest] -> video encoder thread (per codec)
//! capture (test tone)    -> AudioChunk -> [bounded queue]        -> Opus encoder thread
//! encoders -> EncodedFrame { data, keyframe, capture_instant } -> Fanout (one per codec)
//! Fanout   -> per-viewer bounded queue; a viewer that falls behind skips to the next keyframe
//! viewer   -> webrtc-rs track (RTP, timestamps from capture time) -> browser
//! browser RTCP PLI/FIR -> KeyframeRequests (coalesced, <= 1 per 500 ms) -> encoder
//! browser RTCP REMB/RR  -> BitrateController (min over viewers, hysteresis) -> encoder target
//! ```
//!
//! Module map: [`config`] (file + validated settings), [`capture`] (sources), [`encode`]
//! (encoders), [`pipeline`] (queues, fan-out, keyframe requests), [`hub`] (sources and
//! encoders chosen from the settings, their threads, the fan-outs), [`session`] (signaling
//! protocol and per-viewer state, sans-IO), [`peer`] (the only module that uses webrtc-rs),
//! [`http`] (page, WebSocket relay), [`daemon`] (start, reload, watchdog and stop of everything),
//! [`systemd`] (the notification protocol); at the bottom, [`media`] (frame types) and
//! [`h264`] (NAL units, profile-level-id), used by capture, encode and session alike.

pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod devices;
pub mod encode;
pub mod h264;
pub mod http;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod media;
pub mod peer;
pub mod pipeline;
pub mod session;
pub mod systemd;
