//! The media pipeline between capture and viewers: bounded drop-oldest queues ([`queue`]),
//! encode-once fan-out ([`fanout`]) with frame-age histograms ([`delay`]), coalesced keyframe requests ([`keyframe`]), reused
//! frame buffers ([`pool`]), the adaptive bitrate decision ([`bitrate`]) and the
//! threads that tie them together ([`hub`]).

pub mod bitrate;
pub mod delay;
pub mod fanout;
pub mod heartbeat;
pub mod hub;
pub mod keyframe;
pub mod pool;
pub mod queue;
