//! The media hub: capture and encoder threads, and the fan-outs viewers subscribe to.
//!
//! ```text
//! capture thread --Arc<VideoFrame>--> DropOldest(4) per output --> output thread --> Fanout
//! audio thread: capture 20 ms --> Opus --> Fanout
//! ```
//! One output per configured codec encodes pixels (decoding camera H.264 first when the
//! camera streams it). When the camera's H.264 may be passed through (`h264` first in
//! `video.codecs`, a camera source), an extra *passthrough* output sends the camera's access
//! units as they are (SPS/PPS added before each IDR) and encodes only the placeholder while
//! the camera is gone; viewers whose browser takes the camera's profile get it.
//! An output only encodes while someone subscribes to its fan-out, so an unused codec costs
//! nothing but a queue pop. Every thread stops within one frame time of [`MediaHub::stop`].
//! Each encoding output has a [`BitrateController`] its viewers' congestion feedback steers;
//! the output thread applies its target before each frame (adaptive bitrate; the passthrough
//! output is not adaptive: the camera's bitrate is the camera's).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::capture::alsa::{self, AlsaSource};
use crate::capture::formats::{FourCc, Request};
use crate::capture::recover::{Reconnect, RecoveringAudio};
use crate::capture::rpicam::{self, Output as RpicamOutput};
use crate::capture::rpicam_source::RpicamSource;
use crate::capture::test_h264::TestH264Camera;
use crate::capture::test_pattern::TestPattern;
use crate::capture::test_tone::TestTone;
use crate::capture::v4l2::{self, V4l2Source};
use crate::capture::{AudioSource, CaptureError, VideoSource};
use crate::config::{
    AudioSource as AudioSourceSetting, Settings, VideoFormat, VideoSettings,
    VideoSource as VideoSourceSetting,
};
use crate::encode::h264_decode::{Decoded, H264Decoder};
use crate::encode::opus::OpusEncoder;
use crate::encode::passthrough::H264Passthrough;
use crate::encode::{new_encoder, AudioEncoder, VideoEncoder, VideoEncoderSettings};
use crate::h264::ProfileLevelId;
use crate::media::{CameraH264, RawFrame, VideoCodec, VideoFrame};
use crate::pipeline::bitrate::{BitrateController, BitrateLimits};
use crate::pipeline::fanout::Fanout;
use crate::pipeline::heartbeat::{Beat, Heartbeat};
use crate::pipeline::keyframe::KeyframeRequests;
use crate::pipeline::latest::{GopLimits, LatestPicture, NoPicture, Picture};
use crate::pipeline::queue::DropOldest;

/// Captured frames waiting per output; older ones are dropped (latency over completeness).
/// An encoder skips to the newest frame; camera H.264 is decoded or passed in order, so the
/// queue holds a few frames of slack before a drop forces a wait for the next keyframe.
pub const VIDEO_QUEUE_CAPACITY: usize = 4;
/// Least time between two keyframe requests sent to the camera.
const CAMERA_KEYFRAME_SPACING: Duration = Duration::from_millis(250);
/// How long a capture loop waits after its source failed before it asks again.
const CAPTURE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
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

/// One output's shared parts: what the capture thread feeds and viewers subscribe to.
struct VideoOutput {
    codec: VideoCodec,
    /// Sends the camera's own H.264 (see the module documentation).
    passthrough: bool,
    fanout: Arc<Fanout>,
    keyframes: Arc<KeyframeRequests>,
    queue: Arc<DropOldest<Arc<VideoFrame>>>,
    encoded: Arc<AtomicU64>,
    /// The adaptive target; `None` on the passthrough output.
    bitrate: Option<Arc<BitrateController>>,
}

impl VideoOutput {
    fn label(&self) -> String {
        if self.passthrough {
            format!("{}-camera", self.codec)
        } else {
            self.codec.to_string()
        }
    }
}

/// The running capture and encode threads and their outputs.
pub struct MediaHub {
    video: Vec<VideoOutput>,
    audio: Option<Arc<Fanout>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    captured: Arc<AtomicU64>,
    source_description: String,
    /// profile-level-id of the camera's H.264 (latest SPS); `None` until one is seen.
    camera_profile: Arc<Mutex<Option<ProfileLevelId>>>,
    /// Progress of every thread, for the watchdog.
    heartbeat: Arc<Heartbeat>,
    /// The newest picture, for `/snapshot.jpg`.
    latest: Arc<LatestPicture>,
}

impl MediaHub {
    /// Creates the sources and encoders from `settings` and starts their threads.
    /// Fails (before any thread starts) if a source or encoder cannot be set up.
    pub fn start(settings: &Settings) -> Result<Arc<MediaHub>, HubError> {
        let (video_source, passthrough) = video_source(settings)?;
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
        // (codec, passthrough, encoder): encoders are built before any thread starts.
        let mut outputs: Vec<(VideoCodec, bool, Box<dyn VideoEncoder>)> = Vec::new();
        if passthrough {
            // Encodes only the placeholder; camera H.264 passes through.
            let encoder = new_encoder(VideoCodec::H264, &encoder_settings)?;
            outputs.push((VideoCodec::H264, true, encoder));
        }
        for codec in &v.codecs {
            outputs.push((*codec, false, new_encoder(*codec, &encoder_settings)?));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let captured = Arc::new(AtomicU64::new(0));
        let camera_keyframe = Arc::new(AtomicBool::new(false));
        let camera_profile = Arc::new(Mutex::new(None));
        let source_description = video_source.describe();
        let heartbeat = Arc::new(Heartbeat::default());
        let latest = Arc::new(LatestPicture::new(GopLimits::default()));
        let mut threads = Vec::new();
        let mut video = Vec::new();
        for (codec, passthrough, encoder) in outputs {
            let keyframes = Arc::new(KeyframeRequests::new());
            let bitrate = (!passthrough)
                .then(|| BitrateController::new(&codec.to_string(), bitrate_limits(v)));
            let output = VideoOutput {
                codec,
                passthrough,
                fanout: Arc::new(Fanout::new(VIDEO_VIEWER_QUEUE, keyframes.clone())),
                keyframes,
                queue: Arc::new(DropOldest::new(VIDEO_QUEUE_CAPACITY)),
                encoded: Arc::new(AtomicU64::new(0)),
                bitrate,
            };
            let name = format!("peercam-{}", output.label());
            let worker = OutputWorker {
                beat: heartbeat.register(&name),
                label: output.label(),
                encoder,
                settings: encoder_settings.clone(),
                passthrough: passthrough.then(H264Passthrough::new),
                camera_profile: camera_profile.clone(),
                decoder: None,
                last_was_h264: false,
                camera_keyframe: camera_keyframe.clone(),
                last_camera_request: None,
                queue: output.queue.clone(),
                fanout: output.fanout.clone(),
                keyframes: output.keyframes.clone(),
                encoded: output.encoded.clone(),
                bitrate: output.bitrate.clone(),
                stop: stop.clone(),
            };
            threads.push(spawn(&name, move || worker.run())?);
            video.push(output);
        }
        let queues: Vec<_> = video.iter().map(|o| o.queue.clone()).collect();
        let capture = CaptureLoop {
            queues,
            camera_keyframe,
            latest: latest.clone(),
            stop: stop.clone(),
            captured: captured.clone(),
            beat: heartbeat.register("peercam-video"),
        };
        threads.push(spawn("peercam-video", move || capture.run(video_source))?);

        let audio = match audio_parts {
            Some((source, encoder)) => {
                let fanout = Arc::new(Fanout::new(
                    AUDIO_VIEWER_QUEUE,
                    Arc::new(KeyframeRequests::new()),
                ));
                let (f, s) = (fanout.clone(), stop.clone());
                let beat = heartbeat.register("peercam-audio");
                threads.push(spawn("peercam-audio", move || {
                    capture_audio(source, encoder, f, s, beat)
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
            camera_profile,
            heartbeat,
            latest,
        }))
    }

    /// The newest picture, for a snapshot, or why there is none.
    pub fn latest_picture(&self) -> Result<Picture, NoPicture> {
        self.latest.picture(Instant::now())
    }

    /// The configured video codecs, in preference order.
    pub fn video_codecs(&self) -> Vec<VideoCodec> {
        self.video
            .iter()
            .filter(|o| !o.passthrough)
            .map(|o| o.codec)
            .collect()
    }

    /// Whether audio is captured and encoded.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// The fan-out and keyframe requests of `codec`'s output (with `passthrough`, the one
    /// sending the camera's own H.264), if it runs.
    pub fn video(
        &self,
        codec: VideoCodec,
        passthrough: bool,
    ) -> Option<(Arc<Fanout>, Arc<KeyframeRequests>)> {
        self.video
            .iter()
            .find(|o| o.codec == codec && o.passthrough == passthrough)
            .map(|o| (o.fanout.clone(), o.keyframes.clone()))
    }

    /// What a peer sending `video` subscribes to: its output's fan-out and keyframe
    /// requests, the Opus fan-out, and the adaptive bitrate (not for passthrough); `None`
    /// when that output does not run.
    pub fn tap(&self, video: &crate::session::codec::Chosen) -> Option<crate::peer::MediaTap> {
        let (fanout, keyframes) = self.video(video.codec, video.passthrough)?;
        Some(crate::peer::MediaTap {
            video: fanout,
            audio: self.audio(),
            keyframes,
            bitrate: self.bitrate(video.codec, video.passthrough),
            sent_bytes: None,
        })
    }

    /// The adaptive bitrate controller of `codec`'s encoding output (`None` for the
    /// passthrough output, which is not adaptive, or a codec that does not run).
    pub fn bitrate(&self, codec: VideoCodec, passthrough: bool) -> Option<Arc<BitrateController>> {
        self.video
            .iter()
            .find(|o| o.codec == codec && o.passthrough == passthrough)
            .and_then(|o| o.bitrate.clone())
    }

    /// The profile-level-id of the camera's H.264 stream when it can be passed through
    /// (the camera streams H.264 and its SPS has been seen), else `None`.
    pub fn camera_h264_profile(&self) -> Option<ProfileLevelId> {
        *self
            .camera_profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The Opus fan-out, if audio is enabled.
    pub fn audio(&self) -> Option<Arc<Fanout>> {
        self.audio.clone()
    }

    /// Progress of the media threads (see [`crate::pipeline::heartbeat`]).
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Video frames captured so far (camera or placeholder).
    pub fn frames_captured(&self) -> u64 {
        self.captured.load(Ordering::Relaxed)
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
            let c = o.label();
            out.push_str(&format!(
                "peercam_video_queue_dropped_total{{codec=\"{c}\"}} {}\n\
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
            out.push_str(&o.fanout.age_metrics(&format!("codec=\"{c}\"")));
            if let Some(b) = &o.bitrate {
                out.push_str(&format!(
                    "peercam_video_target_bitrate_kbps{{codec=\"{c}\"}} {}\n\
                     peercam_video_bitrate_changes_total{{codec=\"{c}\"}} {}\n",
                    b.target_kbps(),
                    b.changes(),
                ));
            }
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
            out.push_str(&a.age_metrics("codec=\"opus\""));
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

/// The video source for `settings`, and whether its camera H.264 may be passed through.
fn video_source(settings: &Settings) -> Result<(Box<dyn VideoSource>, bool), HubError> {
    let v = &settings.video;
    // Camera H.264 is passed through only when H.264 is the preferred codec (otherwise every
    // viewer would need it decoded and re-encoded anyway).
    let passthrough_ok = v.codecs.first() == Some(&VideoCodec::H264)
        && matches!(v.format, VideoFormat::Auto | VideoFormat::H264);
    let request = Request {
        width: v.width,
        height: v.height,
        fps: v.fps,
        h264_passthrough_ok: passthrough_ok,
        forced_format: forced_fourcc(v.format),
        keyframe_interval_s: v.keyframe_interval_s,
    };
    let path = match &v.source {
        VideoSourceSetting::Test => None,
        VideoSourceSetting::Rpicam => return Ok(rpicam_source(settings, None)),
        VideoSourceSetting::Auto => {
            if let Some(camera) = auto_rpicam(settings.rpicam.camera) {
                return Ok(rpicam_source(settings, Some(camera)));
            }
            match v4l2::find_camera(passthrough_ok) {
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
        Some(path) => (Box::new(V4l2Source::new(path, request)), passthrough_ok),
        None if v.format == VideoFormat::H264 => {
            let camera = TestH264Camera::new(v.width, v.height, v.fps, v.keyframe_interval_s)?;
            (Box::new(camera), passthrough_ok)
        }
        None => (Box::new(TestPattern::new(v.width, v.height, v.fps)), false),
    })
}

/// With `source = "auto"`: the Camera Module rpicam-vid lists (`preferred`, the configured
/// `[rpicam] camera`, if listed, else the first), or `None` when there is none (or no
/// rpicam-vid: nothing is run then).
fn auto_rpicam(preferred: u32) -> Option<rpicam::RpiCamera> {
    match rpicam::probe(rpicam::LIST_TIMEOUT) {
        rpicam::Probe::Listed { cameras, .. } => {
            let camera = rpicam::pick(&cameras, preferred).cloned();
            if camera.is_none() {
                info!("video.source = \"auto\": rpicam-vid lists no Camera Module");
            }
            camera
        }
        rpicam::Probe::Failed { reason, .. } => {
            warn!("video.source = \"auto\": {reason}; looking for a V4L2 camera instead");
            None
        }
        rpicam::Probe::NotInstalled => None,
    }
}

/// How rpicam-vid delivers frames: `[video] format` "h264" or "yu12" say; "auto" takes the
/// Pi's H.264 where the board (`model`) has the hardware encoder and H.264 is the first
/// codec, else raw frames for peercam's encoders. (`peercam doctor` reports the same.)
pub fn rpicam_output(v: &VideoSettings, model: Option<&str>) -> RpicamOutput {
    match v.format {
        VideoFormat::H264 => RpicamOutput::H264,
        VideoFormat::Auto
            if v.codecs.first() == Some(&VideoCodec::H264)
                && model.is_some_and(rpicam::has_hardware_h264) =>
        {
            RpicamOutput::H264
        }
        _ => RpicamOutput::Yuv420,
    }
}

/// The rpicam-vid source for `settings` (`found`: the camera `auto` found), and whether its
/// H.264 is passed through.
fn rpicam_source(
    settings: &Settings,
    found: Option<rpicam::RpiCamera>,
) -> (Box<dyn VideoSource>, bool) {
    let v = &settings.video;
    let r = &settings.rpicam;
    let model = rpicam::board_model();
    let output = rpicam_output(v, model.as_deref());
    let request = rpicam::Request {
        camera: found.as_ref().map_or(r.camera, |c| c.index),
        width: v.width,
        height: v.height,
        fps: v.fps,
        output,
        // A keyframe every second: keyframe requests cannot reach the Pi's encoder.
        keyframe_interval_frames: v.fps,
        bitrate_kbps: v.bitrate_kbps,
        rotation: r.rotation,
        hflip: r.hflip,
        vflip: r.vflip,
        extra_args: r.extra_args.clone(),
    };
    let how = match output {
        RpicamOutput::H264 => "the Pi's H.264 encoder, passed through",
        RpicamOutput::Yuv420 => "raw frames encoded by peercam",
    };
    let board = model.unwrap_or_else(|| "not a Raspberry Pi".to_owned());
    match &found {
        Some(camera) => info!(
            "video.source = \"auto\": using the Camera Module {} ({}) through rpicam-vid, {how} \
             (board: {board})",
            camera.index, camera.sensor
        ),
        None => info!(
            "video.source = \"rpicam\": camera {} through rpicam-vid, {how} (board: {board})",
            request.camera
        ),
    }
    let passthrough = output == RpicamOutput::H264 && v.codecs.first() == Some(&VideoCodec::H264);
    (Box::new(RpicamSource::new(request)), passthrough)
}

/// The adaptive bitrate limits of `[video]`.
fn bitrate_limits(v: &VideoSettings) -> BitrateLimits {
    BitrateLimits {
        start_kbps: v.bitrate_kbps,
        min_kbps: v.min_bitrate_kbps,
        max_kbps: v.max_bitrate_kbps,
        floor_kbps: v.multi_viewer_floor_kbps,
    }
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

/// The capture thread's state: where frames go, and the keyframe wishes it passes on.
struct CaptureLoop {
    queues: Vec<Arc<DropOldest<Arc<VideoFrame>>>>,
    /// An output wants a camera keyframe.
    camera_keyframe: Arc<AtomicBool>,
    latest: Arc<LatestPicture>,
    stop: Arc<AtomicBool>,
    captured: Arc<AtomicU64>,
    beat: Beat,
}

impl CaptureLoop {
    /// Reads frames and hands each (shared, not copied) to every output's queue and to the
    /// snapshot store; forwards the outputs' (and snapshots') keyframe wishes to the camera.
    fn run(self, mut source: Box<dyn VideoSource>) {
        let mut retry = Reconnect::new(CAPTURE_RETRY_INTERVAL, Instant::now());
        while !self.stop.load(Ordering::Relaxed) {
            self.beat.beat();
            // Both wishes are taken: either one asks the camera once.
            let output_wish = self.camera_keyframe.swap(false, Ordering::Relaxed);
            if self.latest.take_keyframe_wish() | output_wish {
                source.request_keyframe();
            }
            match source.next_frame() {
                Ok(frame) => {
                    retry.succeeded();
                    self.captured.fetch_add(1, Ordering::Relaxed);
                    let frame = Arc::new(frame);
                    self.latest.record(&frame, Instant::now());
                    for q in &self.queues {
                        q.push(frame.clone());
                    }
                }
                Err(e) => wait_to_retry(&mut retry, &e),
            }
        }
    }
}

/// After a capture error: logs it if it starts an outage, then sleeps until the next attempt.
fn wait_to_retry(retry: &mut Reconnect, e: &CaptureError) {
    if retry.failed(&e.to_string()) {
        error!("{e}; retrying every second");
    }
    let now = Instant::now();
    retry.attempt(now);
    std::thread::sleep(retry.wait(now));
}

/// Captures 20 ms chunks and encodes them while anyone listens.
fn capture_audio(
    mut source: Box<dyn AudioSource>,
    mut encoder: Box<dyn AudioEncoder>,
    fanout: Arc<Fanout>,
    stop: Arc<AtomicBool>,
    beat: Beat,
) {
    let mut retry = Reconnect::new(CAPTURE_RETRY_INTERVAL, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        beat.beat();
        let chunk = match source.next_chunk() {
            Ok(c) => c,
            Err(e) => {
                wait_to_retry(&mut retry, &e);
                continue;
            }
        };
        retry.succeeded();
        if fanout.subscriber_count() == 0 {
            continue;
        }
        match encoder.encode(&chunk) {
            Ok(packet) => fanout.publish(packet),
            Err(e) => warn!("{e}"),
        }
    }
}

/// One output's thread state: encodes pixels (decoding camera H.264 first if needed), or
/// passes camera H.264 through and encodes only raw frames (the placeholder).
struct OutputWorker {
    beat: Beat,
    label: String,
    encoder: Box<dyn VideoEncoder>,
    /// What the encoder was built for; a frame of another size rebuilds it (a camera whose
    /// closest mode differs from the configured size, or a different camera after replug).
    settings: VideoEncoderSettings,
    /// Set on the passthrough output.
    passthrough: Option<H264Passthrough>,
    camera_profile: Arc<Mutex<Option<ProfileLevelId>>>,
    /// Created when camera H.264 first reaches an encoding output.
    decoder: Option<H264Decoder>,
    /// The previous frame was camera H.264 (a switch to raw forces an encoder keyframe).
    last_was_h264: bool,
    camera_keyframe: Arc<AtomicBool>,
    last_camera_request: Option<Instant>,
    queue: Arc<DropOldest<Arc<VideoFrame>>>,
    fanout: Arc<Fanout>,
    keyframes: Arc<KeyframeRequests>,
    encoded: Arc<AtomicU64>,
    /// The adaptive target (encoding outputs only).
    bitrate: Option<Arc<BitrateController>>,
    stop: Arc<AtomicBool>,
}

impl OutputWorker {
    fn run(mut self) {
        let mut failing = false;
        while !self.stop.load(Ordering::Relaxed) {
            self.beat.beat();
            let Some(frame) = self.queue.pop_timeout(Duration::from_millis(200)) else {
                continue;
            };
            // A newer frame is waiting: an encoder skips this one (latency first).
            let newer_waiting = !self.queue.is_empty();
            let result = match frame.as_ref() {
                VideoFrame::H264(h264) if self.passthrough.is_some() => {
                    self.pass(h264);
                    Ok(())
                }
                VideoFrame::H264(h264) => self.decode_and_encode(h264, newer_waiting),
                VideoFrame::Raw(_) if newer_waiting || self.fanout.subscriber_count() == 0 => {
                    Ok(())
                }
                VideoFrame::Raw(raw) => {
                    // Back from camera H.264: the encoder's last picture is stale.
                    let switched = std::mem::take(&mut self.last_was_h264);
                    self.encode(raw, switched)
                }
            };
            match result {
                Ok(()) => {
                    if failing {
                        info!("{} output: encoding again", self.label);
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        error!("{} output: {e}; frame skipped", self.label);
                        failing = true;
                    }
                }
            }
        }
    }

    /// Camera H.264 to viewers as it is (SPS/PPS completed); keyframe wishes go to the camera.
    fn pass(&mut self, frame: &CameraH264) {
        let Some(passthrough) = self.passthrough.as_mut() else {
            return;
        };
        if !self.last_was_h264 {
            // After the placeholder (or at start) the camera stream starts over at an IDR.
            passthrough.restart();
            self.last_was_h264 = true;
        }
        let passed = passthrough.push(frame);
        let profile = passthrough.profile();
        {
            let mut known = self
                .camera_profile
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if profile.is_some() && *known != profile {
                info!(
                    "camera H.264 profile-level-id {} ({}x{}): passed through to viewers that accept it",
                    profile.map(|p| p.hex()).unwrap_or_default(),
                    frame.width,
                    frame.height
                );
                *known = profile;
            }
        }
        let now = Instant::now();
        if passed.want_keyframe || self.keyframes.take(now) {
            self.request_camera_keyframe(now);
        }
        if let Some(out) = passed.frame {
            if self.fanout.subscriber_count() > 0 {
                self.encoded.fetch_add(1, Ordering::Relaxed);
                self.fanout.publish(out);
            }
        }
    }

    /// Camera H.264 decoded (every frame, in order) and the newest picture encoded.
    fn decode_and_encode(
        &mut self,
        frame: &CameraH264,
        newer_waiting: bool,
    ) -> Result<(), crate::encode::EncodeError> {
        self.last_was_h264 = true;
        let decoder = match self.decoder.as_mut() {
            Some(d) => d,
            None => self.decoder.insert(H264Decoder::new()?),
        };
        if self.fanout.subscriber_count() == 0 {
            // Nobody watches: no decoding, but SPS/PPS are remembered for later.
            decoder.skip(frame);
            return Ok(());
        }
        match decoder.decode(frame)? {
            Decoded::Frame(raw) if !newer_waiting => self.encode(&raw, false),
            Decoded::Frame(_) | Decoded::Nothing => Ok(()),
            Decoded::NeedKeyframe => {
                self.request_camera_keyframe(Instant::now());
                Ok(())
            }
        }
    }

    /// Asks the capture thread to request a camera keyframe (at most every 250 ms).
    fn request_camera_keyframe(&mut self, now: Instant) {
        if self
            .last_camera_request
            .is_some_and(|t| now.duration_since(t) < CAMERA_KEYFRAME_SPACING)
        {
            return;
        }
        self.last_camera_request = Some(now);
        self.camera_keyframe.store(true, Ordering::Relaxed);
    }

    /// Hands the adaptive bitrate target to the encoder when it moved.
    fn follow_target(&mut self, now: Instant) {
        let Some(bitrate) = &self.bitrate else {
            return;
        };
        bitrate.tick(now);
        let target = bitrate.target_kbps();
        if target == self.settings.bitrate_kbps {
            return;
        }
        match self.encoder.set_bitrate_kbps(target) {
            Ok(()) => debug!("{} encoder aims at {target} kbit/s", self.label),
            // Logged once per target; the encoder keeps its previous rate.
            Err(e) => warn!("{} output: {e}", self.label),
        }
        // Also what a rebuilt encoder (new frame size) starts with.
        self.settings.bitrate_kbps = target;
    }

    /// Encodes one picture (rebuilding the encoder for a new size) and publishes the result.
    fn encode(&mut self, frame: &RawFrame, force: bool) -> Result<(), crate::encode::EncodeError> {
        let codec = self.encoder.codec();
        if (frame.width, frame.height) != (self.settings.width, self.settings.height) {
            let mut settings = self.settings.clone();
            (settings.width, settings.height) = (frame.width, frame.height);
            let encoder = new_encoder(codec, &settings)?;
            info!(
                "{} encoder now {}x{} (was {}x{})",
                self.label,
                settings.width,
                settings.height,
                self.settings.width,
                self.settings.height
            );
            self.encoder = encoder;
            self.settings = settings;
        }
        self.follow_target(Instant::now());
        let force = self.keyframes.take(Instant::now()) || force;
        #[cfg(debug_assertions)]
        let result = injected_encoder_fault(self.encoded.load(Ordering::Relaxed), codec)
            .and_then(|()| self.encoder.encode(frame, force));
        #[cfg(not(debug_assertions))]
        let result = self.encoder.encode(frame, force);
        let frames = match result {
            Ok(frames) => frames,
            Err(e) => {
                // After a failure the encoder's state (reference pictures, rate control) is
                // unknown: the next frame goes to a new one, whose first frame is a keyframe.
                self.encoder = new_encoder(codec, &self.settings)?;
                return Err(e);
            }
        };
        for f in frames {
            self.encoded.fetch_add(1, Ordering::Relaxed);
            self.fanout.publish(f);
        }
        Ok(())
    }
}

/// Fault injection for the tests, in debug builds only (release binaries have no such hook):
/// `PEERCAM_FAULT=video-encoder-error-at-frame:N` makes one video encoder call fail, once
/// per process, as a library error would, when the output has encoded N frames
/// (tests/it/load.rs checks the error is logged and the viewer keeps receiving video).
#[cfg(debug_assertions)]
fn injected_encoder_fault(
    encoded: u64,
    codec: VideoCodec,
) -> Result<(), crate::encode::EncodeError> {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static FIRED: AtomicBool = AtomicBool::new(false);
    let at = AT.get_or_init(|| {
        let fault = std::env::var("PEERCAM_FAULT").ok()?;
        fault
            .strip_prefix("video-encoder-error-at-frame:")?
            .parse()
            .ok()
    });
    if at.is_some_and(|n| encoded >= n) && !FIRED.swap(true, Ordering::Relaxed) {
        return Err(crate::encode::EncodeError::Encode {
            codec: codec.config_name(),
            reason: "injected fault (PEERCAM_FAULT)".to_owned(),
        });
    }
    Ok(())
}

/// The V4L2 format `[video] format` forces, `None` for `auto`.
fn forced_fourcc(format: VideoFormat) -> Option<FourCc> {
    Some(match format {
        VideoFormat::Auto => return None,
        VideoFormat::Yuyv => FourCc::Yuyv,
        VideoFormat::Nv12 => FourCc::Nv12,
        VideoFormat::Yu12 => FourCc::Yu12,
        VideoFormat::Mjpeg => FourCc::Mjpg,
        VideoFormat::H264 => FourCc::H264,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_limits_are_the_video_settings() {
        let v = VideoSettings {
            bitrate_kbps: 1200,
            min_bitrate_kbps: 300,
            max_bitrate_kbps: 4000,
            multi_viewer_floor_kbps: 800,
            ..VideoSettings::default()
        };
        assert_eq!(
            bitrate_limits(&v),
            BitrateLimits {
                start_kbps: 1200,
                min_kbps: 300,
                max_kbps: 4000,
                floor_kbps: 800,
            }
        );
    }

    /// Settings for the built-in test sources, with `video` appended to `[video]`.
    fn test_settings(video: &str) -> Settings {
        crate::config::parse_str(
            &format!(
                "[video]\nsource = \"test\"\nwidth = 160\nheight = 120\nfps = 30\n\
                 {video}\n[audio]\nsource = \"test\"\n"
            ),
            "hub-test.toml",
        )
        .expect("test settings")
    }

    /// The next frame of `fanout`'s new subscriber, within 5 s.
    async fn first_frame(fanout: &Fanout) -> crate::media::EncodedFrame {
        let mut subscription = fanout.subscribe();
        tokio::time::timeout(std::time::Duration::from_secs(5), subscription.recv())
            .await
            .expect("a frame within 5 s")
            .expect("the fan-out is running")
    }

    #[tokio::test]
    async fn test_sources_are_encoded_once_per_codec_and_stop_cleanly() {
        let hub = MediaHub::start(&test_settings(r#"codecs = ["h264", "av1"]"#)).expect("start");
        assert_eq!(hub.video_codecs(), vec![VideoCodec::H264, VideoCodec::Av1]);
        assert!(hub.has_audio());
        assert_eq!(
            hub.camera_h264_profile(),
            None,
            "the test pattern is not H.264"
        );
        assert!(
            hub.video(VideoCodec::H264, true).is_none(),
            "no passthrough output"
        );
        let (h264, _) = hub.video(VideoCodec::H264, false).expect("h264 output");
        let (av1, _) = hub.video(VideoCodec::Av1, false).expect("av1 output");

        // A new viewer starts at a keyframe, of each codec, and audio flows.
        let frame = first_frame(&h264).await;
        assert!(frame.keyframe && !frame.data.is_empty());
        assert!(first_frame(&av1).await.keyframe);
        let audio = hub.audio().expect("opus output");
        assert!(!first_frame(&audio).await.data.is_empty());

        // Adaptive bitrate for encoders, starting at [video] bitrate_kbps.
        let bitrate = hub
            .bitrate(VideoCodec::H264, false)
            .expect("h264 is adaptive");
        assert_eq!(
            bitrate.target_kbps(),
            crate::config::VideoSettings::default().bitrate_kbps
        );
        assert!(hub.frames_captured() > 0);
        let metrics = hub.metrics_text();
        for line in [
            "peercam_frames_captured_total ",
            "peercam_frames_encoded_total{codec=\"h264\"} ",
            "peercam_frames_encoded_total{codec=\"av1\"} ",
            "peercam_fanout_published_total{codec=\"opus\"} ",
        ] {
            assert!(metrics.contains(line), "{line} missing from\n{metrics}");
        }

        // Every thread beats; stop joins them all and capture ends.
        let mut monitor =
            crate::pipeline::heartbeat::Monitor::new(std::time::Duration::from_secs(2));
        assert_eq!(
            monitor.check(hub.heartbeat(), std::time::Instant::now()),
            Vec::<String>::new()
        );
        hub.stop();
        let captured = hub.frames_captured();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(hub.frames_captured(), captured, "capture stopped");
        assert!(
            hub.threads.lock().expect("threads").is_empty(),
            "every thread was joined"
        );
    }

    #[tokio::test]
    async fn a_keyframe_request_reaches_the_encoder() {
        // Keyframes every 60 s: within the test, only a request makes one.
        let hub = MediaHub::start(&test_settings(
            "codecs = [\"h264\"]\nkeyframe_interval_s = 60",
        ))
        .expect("start");
        let (h264, keyframes) = hub.video(VideoCodec::H264, false).expect("h264 output");
        let mut subscription = h264.subscribe();
        let wait = std::time::Duration::from_secs(5);
        // Past the first keyframe, then ask for another.
        let first = tokio::time::timeout(wait, subscription.recv())
            .await
            .expect("frame");
        assert!(first.expect("running").keyframe);
        let next = tokio::time::timeout(wait, subscription.recv())
            .await
            .expect("frame");
        assert!(!next.expect("running").keyframe, "a 60 s keyframe interval");
        keyframes.request();
        let keyframe = tokio::time::timeout(wait, async {
            while let Some(frame) = subscription.recv().await {
                if frame.keyframe {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(keyframe, Ok(true), "a keyframe follows the request");
        hub.stop();
    }

    #[test]
    fn the_camera_module_passes_h264_through_only_from_a_hardware_encoder() {
        let pi4 = Some("Raspberry Pi 4 Model B Rev 1.4");
        let pi5 = Some("Raspberry Pi 5 Model B Rev 1.0");
        let video = |format, codecs: &[VideoCodec]| VideoSettings {
            format,
            codecs: codecs.to_vec(),
            ..VideoSettings::default()
        };
        let h264_first = video(VideoFormat::Auto, &[VideoCodec::H264, VideoCodec::Av1]);
        assert_eq!(rpicam_output(&h264_first, pi4), RpicamOutput::H264);
        assert_eq!(rpicam_output(&h264_first, pi5), RpicamOutput::Yuv420);
        assert_eq!(rpicam_output(&h264_first, None), RpicamOutput::Yuv420);
        let av1_first = video(VideoFormat::Auto, &[VideoCodec::Av1, VideoCodec::H264]);
        assert_eq!(rpicam_output(&av1_first, pi4), RpicamOutput::Yuv420);
        let forced = video(VideoFormat::H264, &[VideoCodec::H264]);
        assert_eq!(rpicam_output(&forced, pi5), RpicamOutput::H264);
        let raw = video(VideoFormat::Yu12, &[VideoCodec::H264]);
        assert_eq!(rpicam_output(&raw, pi4), RpicamOutput::Yuv420);
    }

    #[test]
    fn the_config_format_names_the_v4l2_format() {
        assert_eq!(forced_fourcc(VideoFormat::Auto), None);
        assert_eq!(forced_fourcc(VideoFormat::Mjpeg), Some(FourCc::Mjpg));
        assert_eq!(forced_fourcc(VideoFormat::H264), Some(FourCc::H264));
    }
}
