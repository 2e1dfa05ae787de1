//! Signaling, sans-IO: the wire protocol ([`protocol`]), reading and editing SDP ([`sdp`]),
//! codec choice from a browser's offer ([`codec`]), browsers' `.local` candidates ([`mdns`]), the per-viewer conversation with its
//! deadlines and limits ([`machine`]), who may start a call ([`admission`]), what the conversation asks of a peer connection and
//! hears back ([`plan`]), ICE in SDP fragments for WHEP ([`sdpfrag`]), one WHIP publication with its retries
//! ([`publish`]), and a browser's conversation in seed mode ([`room`]). No sockets,
//! no clocks, no webrtc-rs: time is an input, the next deadline an output.

pub mod admission;
pub mod codec;
pub mod machine;
pub mod mdns;
pub mod plan;
pub mod protocol;
pub mod publish;
pub mod relay_wire;
pub mod room;
pub mod sdp;
pub mod sdpfrag;
