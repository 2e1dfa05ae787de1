//! The media pipeline between capture and viewers: bounded drop-oldest queues ([`queue`]),
//! encode-once fan-out ([`fanout`]), coalesced keyframe requests ([`keyframe`]), reused
//! frame buffers ([`pool`]) and the
//! threads that tie them together ([`hub`]).

pub mod fanout;
pub mod heartbeat;
pub mod hub;
pub mod keyframe;
pub mod pool;
pub mod queue;
