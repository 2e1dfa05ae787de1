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
//! capture -> LatestPicture (a reference; camera H.264 from its latest keyframe)
//!         -> on GET /snapshot.jpg: decode, scale, JPEG on a blocking thread
//! ```
//!
//! ## Module map, top to bottom (each imports only what is below it;
//! `scripts/module-deps.sh` prints who imports whom)
//! - entry: `main.rs`, [`cli`], [`doctor`] (`peercam doctor`: checks and the encode
//!   benchmark), [`daemon`] (start, reload, watchdog and stop; owns the
//!   running [`config::Settings`] and the [`hub::MediaHub`]).
//! - transports: [`http`] (the page, login, TLS, `/metrics`; [`http`]'s `socket` module is the
//!   one WebSocket loop, `viewer` and `room` its adapters, [`http::whep`] WHEP,
//!   [`http::media`] the interface to the media that the router is tested against,
//!   [`http::snapshot`] `/snapshot.jpg`); [`whip`]
//!   (publishing to WHIP servers).
//! - assembly: [`hub`] (sources and encoders chosen from the settings, their threads, the
//!   fan-outs), [`snapshot`] (the newest picture decoded and encoded as a JPEG).
//! - peer: [`peer`] (the only module that uses webrtc-rs; carries out the session's plan).
//! - core: [`session`] (sans-IO: protocol, codec choice, admission, the per-viewer machine
//!   with its deadlines), [`pipeline`] (queues, fan-out, keyframe requests, bitrate policy,
//!   the newest picture),
//!   [`capture`] (sources), [`encode`] (encoders), [`config`] (file, validation, settings).
//! - ground: [`media`] (frame types, the frame pool), [`h264`] (NAL units,
//!   profile-level-id), [`limits`] (rate limits, throttled limit logs), [`deadline`], [`logging`],
//!   [`systemd`], [`devices`], [`lan`] (the URLs people open, bind-error hints).
//!
//! ## Where things happen
//! - A viewer's offer becomes an answer: `http::socket::run` reads it, `http::viewer` feeds it
//!   to [`session::machine::Session`] (codec choice, admission, deadlines), which asks for a
//!   peer; [`http::media::LiveMedia`] wires the hub's fan-outs to
//!   [`peer::PeerFactory::answer`], and the answer goes back the same way.
//! - A captured frame becomes RTP: [`capture`] -> [`hub`]'s threads -> [`encode`] ->
//!   [`pipeline::fanout::Fanout`] -> the peer's `forward_media` -> [`peer::rtp`].
//! - A config key is validated: `config/file.rs` reads the TOML into raw values with their
//!   spans, `config/validate.rs` range-checks each key into [`config::Settings`] (types in
//!   `config/settings.rs`) and names file:line:column and the key in every error.

pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deadline;
pub mod devices;
pub mod doctor;
pub mod encode;
pub mod h264;
pub mod http;
pub mod hub;
pub mod lan;
pub mod limits;
pub mod logging;
pub mod mdns;
pub mod media;
pub mod peer;
pub mod pipeline;
pub mod relay;
pub mod session;
pub mod snapshot;
pub mod systemd;
pub mod whip;
