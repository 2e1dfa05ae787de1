//! The media pipeline between capture and viewers: bounded drop-oldest queues ([`queue`]),
//! encode-once fan-out ([`fanout`]) with frame-age histograms ([`delay`]), coalesced keyframe
//! requests ([`keyframe`]), the adaptive bitrate decision ([`bitrate`]) and the newest picture
//! for snapshots ([`latest`]); the threads that
//! tie them together are in [`hub`](crate::hub). Frame buffers are reused through
//! [`media::pool`](crate::media::pool), beside the frame types.

pub mod bitrate;
pub mod delay;
pub mod fanout;
pub mod heartbeat;
pub mod keyframe;
pub mod latest;
pub mod queue;
