//! The media hub: capture and encoder threads, and the fan-outs viewers subscribe to.
//!
//! ```text
//! capture thread --Arc<RawFrame>--> DropOldest(2) per codec --> encoder thread --> Fanout
//! audio thread: capture 20 ms --> Opus --> Fanout
//! ```
//! An encoder only encodes while someone subscribes to its fan-out, so an unused codec costs
//! nothing but a queue pop. Every thread stops within one frame time of [`MediaHub::stop`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::capture::alsa::{self, AlsaSource};
use crate::capture::formats::Request;
use crate::capture::recover::RecoveringAudio;
use crate::capture::test_pattern::TestPattern;
use crate::capture::test_tone::TestTone;
use crate::capture::v4l2::{self, V4l2Source};
use crate::capture::{AudioSource, VideoSource};
use crate::config::{
    AudioSource as AudioSourceSetting, Settings, VideoSource as VideoSourceSetting,
};
use crate::encode::av1::Av1Encoder;
use crate::encode::h264::H264Encoder;
use crate::encode::opus::OpusEncoder;
use crate::encode::{AudioEncoder, VideoEncoder, VideoEncoderSettings};
use crate::media::{RawFrame, VideoCodec};
use crate::pipeline::fanout::Fanout;
use crate::pipeline::keyframe::KeyframeRequests;
use crate::pipeline::queue::DropOldest;

/// Raw frames waiting per encoder; older ones are dropped (latency over completeness).
pub const RAW_QUEUE_CAPACITY: usize = 2;
/// Encoded video frames buffered per viewer.
pub const VIDEO_VIEWER_QUEUE: usize = 8;
/// Opus packets buffered per viewer (320 ms).
pub const AUDIO_VIEWER_QUEUE: usize = 16;

/// Why the media pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A configured source is not available in this build.
    #[error("{0}")]
    Source(String),
    /// An encoder could not be created.
    #[error(transparent)]
    Encoder(#[from] crate::encode::EncodeError),
    /// A thread could not be spawned.
    #[error("cannot start thread {name}: {reason}")]
    Thread {
        /// Thread name.
        name: String,
        /// OS error.
        reason: String,
    },
}

/// One codec's shared output.
struct VideoOutput {
    codec: VideoCodec,
    fanout: Arc<Fanout>,
    keyframes: Arc<KeyframeRequests>,
    queue: Arc<DropOldest<Arc<RawFrame>>>,
    encoded: Arc<AtomicU64>,
}

/// The running capture and encode threads and their outputs.
pub struct MediaHub {
    video: Vec<VideoOutput>,
    audio: Option<Arc<Fanout>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    captured: Arc<AtomicU64>,
    source_description: String,
}

impl MediaHub {
    /// Creates the sources and encoders from `settings` and starts their threads.
    /// Fails (before any thread starts) if a source or encoder cannot be set up.
    pub fn start(settings: &Settings) -> Result<Arc<MediaHub>, HubError> {
        let video_source = video_source(settings)?;
        let audio_parts = audio_source(settings)?;
        let v = &settings.video;
        let encoder_settings = VideoEncoderSettings {
            width: v.width,
            height: v.height,
            fps: v.fps,
            bitrate_kbps: v.bitrate_kbps,
            keyframe_interval_s: v.keyframe_interval_s,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let mut encoders: Vec<Box<dyn VideoEncoder>> = Vec::new();
        for codec in &v.codecs {
            encoders.push(new_encoder(*codec, &encoder_settings)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let captured = Arc::new(AtomicU64::new(0));
        let source_description = video_source.describe();
        let mut threads = Vec::new();
        let mut video = Vec::new();
        for encoder in encoders {
            let codec = encoder.codec();
            let keyframes = Arc::new(KeyframeRequests::new());
            let output = VideoOutput {
                codec,
                fanout: Arc::new(Fanout::new(VIDEO_VIEWER_QUEUE, keyframes.clone())),
                keyframes,
                queue: Arc::new(DropOldest::new(RAW_QUEUE_CAPACITY)),
                encoded: Arc::new(AtomicU64::new(0)),
            };
            let worker = EncoderWorker {
                encoder,
                settings: encoder_settings.clone(),
                queue: output.queue.clone(),
                fanout: output.fanout.clone(),
                keyframes: output.keyframes.clone(),
                encoded: output.encoded.clone(),
                stop: stop.clone(),
            };
            threads.push(spawn(&format!("peercam-{codec}"), move || worker.run())?);
            video.push(output);
        }
        let queues: Vec<_> = video.iter().map(|o| o.queue.clone()).collect();
        let (stop_c, captured_c) = (stop.clone(), captured.clone());
        threads.push(spawn("peercam-video", move || {
            capture_video(video_source, queues, stop_c, captured_c)
        })?);

        let audio = match audio_parts {
            Some((source, encoder)) => {
                let fanout = Arc::new(Fanout::new(
                    AUDIO_VIEWER_QUEUE,
                    Arc::new(KeyframeRequests::new()),
                ));
                let (f, s) = (fanout.clone(), stop.clone());
                threads.push(spawn("peercam-audio", move || {
                    capture_audio(source, encoder, f, s)
                })?);
                Some(fanout)
            }
            None => None,
        };
        info!(
            "media: {source_description}; video codecs {}; audio {}",
            v.codecs
                .iter()
                .map(|c| c.config_name())
                .collect::<Vec<_>>()
                .join(", "),
            if audio.is_some() { "opus" } else { "off" }
        );
        Ok(Arc::new(MediaHub {
            video,
            audio,
            stop,
            threads: Mutex::new(threads),
            captured,
            source_description,
        }))
    }

    /// The configured video codecs, in preference order.
    pub fn video_codecs(&self) -> Vec<VideoCodec> {
        self.video.iter().map(|o| o.codec).collect()
    }

    /// Whether audio is captured and encoded.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// The fan-out and keyframe requests of `codec`'s encoder, if it runs.
    pub fn video(&self, codec: VideoCodec) -> Option<(Arc<Fanout>, Arc<KeyframeRequests>)> {
        self.video
            .iter()
            .find(|o| o.codec == codec)
            .map(|o| (o.fanout.clone(), o.keyframes.clone()))
    }

    /// The Opus fan-out, if audio is enabled.
    pub fn audio(&self) -> Option<Arc<Fanout>> {
        self.audio.clone()
    }

    /// What the video source is, for the log and the page.
    pub fn source_description(&self) -> &str {
        &self.source_description
    }

    /// Counters in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut out = format!(
            "peercam_frames_captured_total {}\n",
            self.captured.load(Ordering::Relaxed)
        );
        for o in &self.video {
            let s = o.fanout.stats();
            let c = o.codec;
            out.push_str(&format!(
                "peercam_raw_frames_dropped_total{{codec=\"{c}\"}} {}\n\
                 peercam_frames_encoded_total{{codec=\"{c}\"}} {}\n\
                 peercam_fanout_published_total{{codec=\"{c}\"}} {}\n\
                 peercam_fanout_delivered_total{{codec=\"{c}\"}} {}\n\
                 peercam_fanout_dropped_total{{codec=\"{c}\"}} {}\n\
                 peercam_fanout_subscribers{{codec=\"{c}\"}} {}\n",
                o.queue.dropped(),
                o.encoded.load(Ordering::Relaxed),
                s.published,
                s.delivered,
                s.dropped,
                s.subscribers,
            ));
        }
        if let Some(a) = &self.audio {
            let s = a.stats();
            out.push_str(&format!(
                "peercam_fanout_published_total{{codec=\"opus\"}} {}\n\
                 peercam_fanout_delivered_total{{codec=\"opus\"}} {}\n\
                 peercam_fanout_dropped_total{{codec=\"opus\"}} {}\n\
                 peercam_fanout_subscribers{{codec=\"opus\"}} {}\n",
                s.published, s.delivered, s.dropped, s.subscribers,
            ));
        }
        out
    }

    /// Stops every thread and waits for them (each notices within one frame time).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for o in &self.video {
            o.queue.close();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for MediaHub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, HubError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| HubError::Thread {
            name: name.to_owned(),
            reason: e.to_string(),
        })
}

fn video_source(settings: &Settings) -> Result<Box<dyn VideoSource>, HubError> {
    let v = &settings.video;
    let request = Request {
        width: v.width,
        height: v.height,
        fps: v.fps,
        // Camera H.264 passthrough is not wired into the pipeline yet: always convert.
        h264_passthrough_ok: false,
        forced_format: None,
    };
    let path = match &v.source {
        VideoSourceSetting::Test => None,
        VideoSourceSetting::Auto => {
            match v4l2::find_camera() {
                Some((path, caps)) => {
                    info!(
                        "video.source = \"auto\": using {} ({})",
                        path.display(),
                        caps.card
                    );
                    Some(path)
                }
                None => {
                    warn!("video.source = \"auto\": no usable camera found; streaming the test pattern");
                    None
                }
            }
        }
        VideoSourceSetting::Device(path) => Some(path.clone()),
    };
    Ok(match path {
        Some(path) => Box::new(V4l2Source::new(path, request)),
        None => Box::new(TestPattern::new(v.width, v.height, v.fps)),
    })
}

type AudioParts = (Box<dyn AudioSource>, Box<dyn AudioEncoder>);

fn audio_source(settings: &Settings) -> Result<Option<AudioParts>, HubError> {
    let a = &settings.audio;
    let channels = a.channels;
    let device = match &a.source {
        AudioSourceSetting::None => return Ok(None),
        AudioSourceSetting::Test => None,
        AudioSourceSetting::Auto => match AlsaSource::open(alsa::DEFAULT_DEVICE, channels) {
            Ok(_) => {
                info!("audio.source = \"auto\": using the ALSA default capture device");
                Some(alsa::DEFAULT_DEVICE.to_owned())
            }
            Err(e) => {
                warn!("audio.source = \"auto\": no microphone ({e}); streaming the test tone");
                None
            }
        },
        AudioSourceSetting::Alsa(name) => Some(name.clone()),
    };
    let source: Box<dyn AudioSource> = match device {
        Some(name) => {
            let device = name.clone();
            Box::new(RecoveringAudio::new(
                name,
                channels,
                Box::new(move || {
                    Ok(Box::new(AlsaSource::open(&device, channels)?) as Box<dyn AudioSource>)
                }),
            ))
        }
        None => Box::new(TestTone::new(channels)),
    };
    let encoder = OpusEncoder::new(channels, a.bitrate_kbps)?;
    Ok(Some((source, Box::new(encoder))))
}

/// Reads frames and hands each (shared, not copied) to every encoder's queue.
fn capture_video(
    mut source: Box<dyn VideoSource>,
    queues: Vec<Arc<DropOldest<Arc<RawFrame>>>>,
    stop: Arc<AtomicBool>,
    captured: Arc<AtomicU64>,
) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        match source.next_frame() {
            Ok(frame) => {
                failing = false;
                captured.fetch_add(1, Ordering::Relaxed);
                let frame = Arc::new(frame);
                for q in &queues {
                    q.push(frame.clone());
                }
            }
            Err(e) => {
                if !failing {
                    error!("{e}; retrying every second");
                    failing = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Captures 20 ms chunks and encodes them while anyone listens.
fn capture_audio(
    mut source: Box<dyn AudioSource>,
    mut encoder: Box<dyn AudioEncoder>,
    fanout: Arc<Fanout>,
    stop: Arc<AtomicBool>,
) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let chunk = match source.next_chunk() {
            Ok(c) => c,
            Err(e) => {
                if !failing {
                    error!("{e}; retrying every second");
                    failing = true;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        failing = false;
        if fanout.subscriber_count() == 0 {
            continue;
        }
        match encoder.encode(&chunk) {
            Ok(packet) => fanout.publish(packet),
            Err(e) => warn!("{e}"),
        }
    }
}

/// A video encoder of `codec` for `settings`.
fn new_encoder(
    codec: VideoCodec,
    settings: &VideoEncoderSettings,
) -> Result<Box<dyn VideoEncoder>, crate::encode::EncodeError> {
    Ok(match codec {
        VideoCodec::H264 => Box::new(H264Encoder::new(settings)?),
        VideoCodec::Av1 => Box::new(Av1Encoder::new(settings)?),
    })
}

/// One video encoder's thread state.
struct EncoderWorker {
    encoder: Box<dyn VideoEncoder>,
    /// What the encoder was built for; a frame of another size rebuilds it (a camera whose
    /// closest mode differs from the configured size, or a different camera after replug).
    settings: VideoEncoderSettings,
    queue: Arc<DropOldest<Arc<RawFrame>>>,
    fanout: Arc<Fanout>,
    keyframes: Arc<KeyframeRequests>,
    encoded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl EncoderWorker {
    fn run(mut self) {
        let codec = self.encoder.codec();
        let mut failing = false;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(frame) = self.queue.pop_timeout(Duration::from_millis(200)) else {
                continue;
            };
            if self.fanout.subscriber_count() == 0 {
                continue;
            }
            if (frame.width, frame.height) != (self.settings.width, self.settings.height) {
                let mut settings = self.settings.clone();
                (settings.width, settings.height) = (frame.width, frame.height);
                match new_encoder(codec, &settings) {
                    Ok(encoder) => {
                        info!(
                            "{codec} encoder now {}x{} (was {}x{})",
                            settings.width,
                            settings.height,
                            self.settings.width,
                            self.settings.height
                        );
                        self.encoder = encoder;
                        self.settings = settings;
                    }
                    Err(e) => {
                        if !failing {
                            error!("{codec} encoder for {}x{}: {e}", frame.width, frame.height);
                            failing = true;
                        }
                        continue;
                    }
                }
            }
            let force = self.keyframes.take(Instant::now());
            match self.encoder.encode(&frame, force) {
                Ok(frames) => {
                    failing = false;
                    for f in frames {
                        self.encoded.fetch_add(1, Ordering::Relaxed);
                        self.fanout.publish(f);
                    }
                }
                Err(e) => {
                    if !failing {
                        error!("{codec} encoder: {e}");
                        failing = true;
                    }
                }
            }
        }
    }
}
