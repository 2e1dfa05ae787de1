//! Signaling, sans-IO: the wire protocol ([`protocol`]), codec choice from a browser's offer
//! ([`codec`]), the per-viewer state machine ([`viewer`]) and what it asks of a peer
//! connection and hears back ([`plan`]). No sockets, no clocks, no webrtc-rs.

pub mod codec;
pub mod plan;
pub mod protocol;
pub mod viewer;
