//! Signaling, sans-IO: the wire protocol ([`protocol`]), codec choice from a browser's offer
//! ([`codec`]) and the per-viewer state machine ([`viewer`]). No sockets, no clocks.

pub mod codec;
pub mod protocol;
pub mod viewer;
