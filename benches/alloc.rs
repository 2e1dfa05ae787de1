//! Heap allocations per RTP packet on the send path, in steady state.
//!
//! ```text
//! cargo run --example bench_alloc -- [--frames N] [--codec h264|av1|all] [--trace EVERY] [--out DIR]
//! ```
//!
//! A counting `#[global_allocator]` (wrapping `System`) counts every `alloc`, `alloc_zeroed`
//! and `realloc` with its size. Two parts, each warmed up first and then counted over a
//! steady-state window of N video frames (default 300) plus the Opus frames of the same
//! 20 ms-paced span:
//!
//! - **(a) peercam**: `RtpPacketizer` (src/peer/rtp.rs) turns real encoded frames (the test
//!   pattern at 640x480 encoded by peercam's H.264 and AV1 encoders at 1000 kbit/s, and the
//!   test tone by its Opus encoder) into RTP packets, on this thread only. The packets are
//!   kept in a 1024-slot ring, as webrtc-rs's NACK send buffer keeps them, so buffers that
//!   are still referenced cannot be reused early.
//! - **(b) the full send path**: a real loopback pair of webrtc-rs peer connections. This
//!   process is the daemon side, built with peercam's own `PeerFactory` (so `forward_media`
//!   packetizes and writes), fed the same frames through `Fanout`s at 30 fps and 50 fps. The
//!   browser side is the integration tests' client peer (tests/it/common/client_peer.rs) in
//!   this example re-run as a child process (`--receiver`), so its receive path does not
//!   count: every allocation of this process (all threads) in the window is
//!   divided by the packets sent. The same count over an idle stretch afterwards (connected,
//!   nothing sent: ICE keep-alives, RTCP reports) is printed per second.
//!
//! `--trace EVERY` captures a backtrace of every EVERY-th allocation in the windows and prints
//! the most frequent call sites (the first frames outside std, alloc, core and bytes). Build
//! with the dev profile (the default here): release builds strip the symbols. `--out DIR`
//! also writes the tables as `DIR/alloc.json`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peercam::capture::test_pattern::TestPattern;
use peercam::capture::test_tone::TestTone;
use peercam::config::WebrtcSettings;
use peercam::encode::av1::Av1Encoder;
use peercam::encode::h264::H264Encoder;
use peercam::encode::opus::OpusEncoder;
use peercam::encode::{AudioEncoder, VideoEncoder, VideoEncoderSettings};
use peercam::media::{AudioChunk, EncodedFrame, PixelFormat, RawFrame, VideoCodec};
use peercam::peer::rtp::{RtpPacketizer, StreamKind};
use peercam::peer::{MediaTap, PeerFactory};
use peercam::pipeline::fanout::Fanout;
use peercam::pipeline::keyframe::KeyframeRequests;
use peercam::session::codec::Chosen;
use peercam::session::plan::{AnswerPlan, PeerEvent};
use peercam::session::protocol::IceCandidate;
use rtc::rtp::packet::Packet;

// ---------------------------------------------------------------------------------------
// The counting allocator.

/// Counts allocations process-wide and per thread; optionally samples backtraces.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Sample a backtrace every this many allocations; 0 = off.
static TRACE_EVERY: AtomicU64 = AtomicU64::new(0);
static TRACES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

thread_local! {
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static THREAD_BYTES: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread records a backtrace (whose own allocations are not sampled).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn count(size: usize) {
        // The backtrace recorder's own allocations are not counted (try_with: thread-locals
        // may be gone while a thread exits).
        if IN_TRACE.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        let n = ALLOCS.fetch_add(1, Ordering::Relaxed) + 1;
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
        let _ = THREAD_BYTES.try_with(|c| c.set(c.get() + size as u64));
        let every = TRACE_EVERY.load(Ordering::Relaxed);
        if every != 0 && n.is_multiple_of(every) {
            record_backtrace();
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments; counting has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::count(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::count(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::count(new_size);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocation count and bytes at one moment, process-wide or for this thread.
#[derive(Clone, Copy)]
struct Snapshot {
    allocs: u64,
    bytes: u64,
}

impl Snapshot {
    fn process() -> Snapshot {
        Snapshot {
            allocs: ALLOCS.load(Ordering::Relaxed),
            bytes: BYTES.load(Ordering::Relaxed),
        }
    }

    fn thread() -> Snapshot {
        Snapshot {
            allocs: THREAD_ALLOCS.with(Cell::get),
            bytes: THREAD_BYTES.with(Cell::get),
        }
    }

    fn since(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            allocs: self.allocs - earlier.allocs,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

/// Records where this allocation comes from: the first frames outside the allocator and
/// the standard containers.
fn record_backtrace() {
    if IN_TRACE.with(|t| t.replace(true)) {
        return;
    }
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    let key = call_site(&trace);
    if let Ok(mut traces) = TRACES.lock() {
        *traces
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_insert(0) += 1;
    }
    IN_TRACE.with(|t| t.set(false));
}

/// The first two frames of a rendered backtrace outside the allocator, std, core, alloc,
/// bytes and hashbrown, as `crate-version/file.rs:line (function)`, joined with " < "
/// (callee first).
fn call_site(trace: &str) -> String {
    const SKIP: [&str; 4] = ["/rustc/", "/bytes-1.", "/hashbrown-", "benches/alloc.rs"];
    let mut frames = Vec::new();
    let mut name = "";
    for line in trace.lines().map(str::trim_start) {
        if let Some(location) = line.strip_prefix("at ") {
            if !SKIP.iter().any(|s| location.contains(s)) {
                // Registry paths: keep from the crate directory on.
                let short = location
                    .split_once("index.crates.io-")
                    .and_then(|(_, rest)| rest.split_once('/'))
                    .map_or(location, |(_, path)| path);
                let short = short.rsplit_once(':').map_or(short, |(l, _column)| l);
                frames.push(format!("{short} ({name})"));
            }
        } else if let Some((index, n)) = line.split_once(": ") {
            if index.parse::<u32>().is_ok() {
                name = n;
            }
        }
        if frames.len() == 2 {
            break;
        }
    }
    frames.join(" < ")
}

/// Prints the sampled call sites (most frequent first) and forgets them.
fn print_traces(every: u64) {
    let Some(traces) = TRACES.lock().ok().and_then(|mut t| t.take()) else {
        return;
    };
    let mut sites: Vec<(String, u64)> = traces.into_iter().collect();
    sites.sort_by_key(|site| std::cmp::Reverse(site.1));
    println!("  sampled call sites (1 in {every} allocations; count x {every} ~ allocations):");
    for (site, n) in sites.iter().take(20) {
        println!("  {:>6}  {site}", n * every);
    }
}

fn start_tracing(every: u64) {
    if every > 0 {
        if let Ok(mut t) = TRACES.lock() {
            *t = Some(HashMap::new());
        }
    }
    TRACE_EVERY.store(every, Ordering::Relaxed);
}

fn stop_tracing() {
    TRACE_EVERY.store(0, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------
// Frames.

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const FPS: u32 = 30;
const KBPS: u32 = 1000;
/// Encoded video frames in the cycle that is sent over and over (an IDR every 2 s).
const CYCLE: usize = 60;
/// Packets webrtc-rs's NACK responder keeps per stream (its default send buffer).
const NACK_BUFFER: usize = 1024;

/// `CYCLE` encoded frames of the test pattern with peercam's encoder for `codec`.
fn encode_video(codec: VideoCodec) -> Vec<EncodedFrame> {
    let settings = VideoEncoderSettings {
        width: WIDTH,
        height: HEIGHT,
        fps: FPS,
        bitrate_kbps: KBPS,
        keyframe_interval_s: 2,
        threads: 1,
    };
    let mut encoder: Box<dyn VideoEncoder> = match codec {
        VideoCodec::H264 => Box::new(H264Encoder::new(&settings).expect("H.264 encoder")),
        VideoCodec::Av1 => Box::new(Av1Encoder::new(&settings).expect("AV1 encoder")),
    };
    let pattern = TestPattern::new(WIDTH, HEIGHT, FPS);
    let start = Instant::now();
    let mut frames = Vec::new();
    // rav1e holds a few frames back: feed until CYCLE frames came out.
    for sequence in 0..(CYCLE as u64 * 3) {
        let raw = RawFrame {
            width: WIDTH,
            height: HEIGHT,
            format: PixelFormat::I420,
            data: pattern.render(sequence, 0).into(),
            capture_instant: start + Duration::from_millis(sequence * 1000 / u64::from(FPS)),
            sequence,
        };
        frames.extend(encoder.encode(&raw, false).expect("encode"));
        if frames.len() >= CYCLE {
            break;
        }
    }
    frames.truncate(CYCLE);
    frames
}

/// 50 Opus frames (one second) of the test tone.
fn encode_audio() -> Vec<EncodedFrame> {
    let tone = TestTone::new(2);
    let mut encoder = OpusEncoder::new(2, 64).expect("Opus encoder");
    (0..50)
        .map(|i| {
            let chunk = AudioChunk {
                samples: tone.render(i),
                channels: 2,
                capture_instant: Instant::now(),
            };
            encoder.encode(&chunk).expect("opus encode")
        })
        .collect()
}

/// Frame `i` of `cycle`, stamped `at` (a shallow copy: the bytes are shared).
fn frame_at(cycle: &[EncodedFrame], i: usize, at: Instant) -> EncodedFrame {
    let f = &cycle[i % cycle.len()];
    EncodedFrame {
        data: f.data.clone(),
        keyframe: f.keyframe,
        capture_instant: at,
    }
}

// ---------------------------------------------------------------------------------------
// (a) peercam's packetizer alone.

/// Packets and allocations of one packetizing run.
struct Tally {
    frames: usize,
    packets: usize,
    counted: Snapshot,
}

impl Tally {
    /// Prints a table row and returns it as JSON.
    fn print(&self, label: &str) -> String {
        let per = |n: u64, d: usize| n as f64 / d.max(1) as f64;
        println!(
            "| {label} | {} | {} | {:.2} | {:.1} | {:.2} |",
            self.frames,
            self.packets,
            per(self.counted.allocs, self.packets),
            per(self.counted.bytes, self.packets),
            per(self.counted.allocs, self.frames),
        );
        format!(
            "{{\"part\":\"packetizer\",\"stream\":\"{label}\",\"frames\":{},\"packets\":{},             \"allocs\":{},\"bytes\":{}}}",
            self.frames, self.packets, self.counted.allocs, self.counted.bytes
        )
    }
}

/// Packetizes `frames` frames of `cycle` into `scratch` (reused, as `forward_media` reuses
/// its vector), keeping the last [`NACK_BUFFER`] packets alive.
fn packetize_run(
    packetizer: &mut RtpPacketizer,
    cycle: &[EncodedFrame],
    ring: &mut VecDeque<Packet>,
    scratch: &mut Vec<Packet>,
    frames: usize,
) -> usize {
    let start = Instant::now();
    let mut packets = 0;
    for i in 0..frames {
        let frame = frame_at(cycle, i, start + Duration::from_millis(i as u64 * 20));
        packetizer.packetize(&frame, scratch).expect("packetize");
        for packet in scratch.drain(..) {
            if ring.len() == NACK_BUFFER {
                ring.pop_front();
            }
            ring.push_back(packet);
            packets += 1;
        }
    }
    packets
}

fn part_a(kind: StreamKind, cycle: &[EncodedFrame], frames: usize, trace: u64) -> Tally {
    let mut packetizer = RtpPacketizer::new(kind, 100, 1);
    let mut ring = VecDeque::with_capacity(NACK_BUFFER);
    let mut scratch = Vec::new();
    // Warm-up: until the ring is full, then twice around the cycle.
    while ring.len() < NACK_BUFFER {
        packetize_run(&mut packetizer, cycle, &mut ring, &mut scratch, cycle.len());
    }
    packetize_run(
        &mut packetizer,
        cycle,
        &mut ring,
        &mut scratch,
        2 * cycle.len(),
    );
    start_tracing(trace);
    let before = Snapshot::thread();
    let packets = packetize_run(&mut packetizer, cycle, &mut ring, &mut scratch, frames);
    let counted = Snapshot::thread().since(before);
    stop_tracing();
    Tally {
        frames,
        packets,
        counted,
    }
}

// ---------------------------------------------------------------------------------------
// (b) the full send path: this process is the daemon side, a child process the browser.

/// One line of the protocol between this process and the `--receiver` child (JSON lines).
#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
enum Line {
    Offer(String),
    Answer(String),
    Candidate(IceCandidate),
    /// Ask the receiver for its counts.
    Report,
    /// The receiver's RTP packet counts so far.
    Received {
        video: u64,
        audio: u64,
    },
}

fn to_line(line: &Line) -> String {
    let mut s = serde_json::to_string(line).expect("json");
    s.push('\n');
    s
}

/// Result of one full-path run.
struct PathResult {
    frames: usize,
    audio_frames: usize,
    packets: usize,
    received: u64,
    counted: Snapshot,
    idle_per_s: f64,
}

async fn part_b(
    codec: VideoCodec,
    video: &[EncodedFrame],
    audio: &[EncodedFrame],
    frames: usize,
    trace: u64,
) -> PathResult {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let exe = std::env::current_exe().expect("own path");
    let mut child = tokio::process::Command::new(exe)
        .args(["--receiver", codec.config_name()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("receiver process");
    let mut to_child = child.stdin.take().expect("child stdin");
    let mut from_child = BufReader::new(child.stdout.take().expect("child stdout")).lines();
    let next_line = |l: Option<String>| -> Line {
        serde_json::from_str(&l.expect("receiver closed")).expect("receiver line")
    };

    // The receiver's first candidates may come before its offer.
    let mut early_candidates = Vec::new();
    let offer = loop {
        match next_line(from_child.next_line().await.expect("read")) {
            Line::Offer(offer) => break offer,
            Line::Candidate(c) => early_candidates.push(c),
            other => panic!("unexpected {other:?}"),
        }
    };
    let factory = PeerFactory::new(WebrtcSettings {
        udp_port: 0,
        udp_port_min: 0,
        udp_port_max: 0,
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..WebrtcSettings::default()
    });
    let video_offered = offered(codec);
    let plan = AnswerPlan {
        video: Chosen {
            codec,
            payload_type: video_offered.payload_type,
            fmtp: video_offered.rtp_codec.sdp_fmtp_line,
            passthrough: false,
        },
        opus_payload_type: Some(client_peer::OPUS_PT),
    };
    let keyframes = Arc::new(KeyframeRequests::new());
    let video_fanout = Arc::new(Fanout::new(8, keyframes.clone()));
    let audio_fanout = Arc::new(Fanout::new(8, Arc::new(KeyframeRequests::new())));
    let tap = MediaTap {
        video: video_fanout.clone(),
        audio: Some(audio_fanout.clone()),
        keyframes,
        bitrate: None,
        sent_bytes: None,
    };
    let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
    let (peer, answer) = factory
        .answer(offer, &plan, tap, events_tx)
        .await
        .expect("answer");
    to_child
        .write_all(to_line(&Line::Answer(answer)).as_bytes())
        .await
        .expect("write answer");
    for c in &early_candidates {
        peer.add_remote_candidate(c).await.expect("candidate");
    }

    // Trickle candidates both ways until connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(PeerEvent::LocalCandidate(c)) => to_child
                    .write_all(to_line(&Line::Candidate(c)).as_bytes())
                    .await
                    .expect("write candidate"),
                Some(PeerEvent::Connected) => break,
                Some(PeerEvent::Failed(why)) => panic!("connection failed: {why}"),
                Some(_) => {}
                None => panic!("peer events closed"),
            },
            l = from_child.next_line() => match next_line(l.expect("read")) {
                Line::Candidate(c) => peer.add_remote_candidate(&c).await.expect("candidate"),
                other => panic!("unexpected {other:?}"),
            },
            _ = tokio::time::sleep_until(deadline) => panic!("not connected within 20 s"),
        }
    }
    // forward_media subscribes once connected.
    while video_fanout.subscriber_count() == 0 || audio_fanout.subscriber_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Packets per cycle frame, from a packetizer of our own (same frames, same counts).
    let video_packets = packet_counts(StreamKind::Video(codec), video);
    let audio_packets = packet_counts(StreamKind::Opus, audio);

    let mut ask = async || -> u64 {
        to_child
            .write_all(to_line(&Line::Report).as_bytes())
            .await
            .expect("write report");
        loop {
            match next_line(from_child.next_line().await.expect("read")) {
                Line::Received { video, audio } => return video + audio,
                Line::Candidate(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    };

    // Warm-up: three seconds of media (the NACK buffer fills, queues reach their size).
    let warm = 3 * FPS as usize;
    send_media(&video_fanout, &audio_fanout, video, audio, 0, warm).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received_before = ask().await;

    start_tracing(trace);
    let before = Snapshot::process();
    let (audio_frames, packets) = send_media(
        &video_fanout,
        &audio_fanout,
        video,
        audio,
        warm,
        warm + frames,
    )
    .await
    .count_packets(&video_packets, &audio_packets);
    // Let the last packets leave.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let counted = Snapshot::process().since(before);
    stop_tracing();
    let received = ask().await - received_before;

    let idle = Duration::from_secs(3);
    let before = Snapshot::process();
    tokio::time::sleep(idle).await;
    let idle_allocs = Snapshot::process().since(before).allocs;

    peer.close().await;
    drop(to_child);
    let _ = child.wait().await;
    PathResult {
        frames,
        audio_frames,
        packets,
        received,
        counted,
        idle_per_s: idle_allocs as f64 / idle.as_secs_f64(),
    }
}

fn packet_counts(kind: StreamKind, cycle: &[EncodedFrame]) -> Vec<usize> {
    let mut packetizer = RtpPacketizer::new(kind, 100, 1);
    let now = Instant::now();
    cycle
        .iter()
        .map(|f| {
            let mut packets = Vec::new();
            let frame = frame_at(std::slice::from_ref(f), 0, now);
            packetizer
                .packetize(&frame, &mut packets)
                .map_or(0, |()| packets.len())
        })
        .collect()
}

/// Which frames of the cycles a `send_media` call published.
struct Sent {
    video: std::ops::Range<usize>,
    audio: std::ops::Range<usize>,
}

impl Sent {
    /// (audio frames, packets) for these frames.
    fn count_packets(&self, video: &[usize], audio: &[usize]) -> (usize, usize) {
        let sum = |r: &std::ops::Range<usize>, per: &[usize]| -> usize {
            r.clone().map(|i| per[i % per.len()]).sum()
        };
        (
            self.audio.len(),
            sum(&self.video, video) + sum(&self.audio, audio),
        )
    }
}

/// Publishes video frames `from..to` of the cycle at 30 fps and Opus frames at 50 fps over
/// the same span, paced by the clock.
async fn send_media(
    video_fanout: &Fanout,
    audio_fanout: &Fanout,
    video: &[EncodedFrame],
    audio: &[EncodedFrame],
    from: usize,
    to: usize,
) -> Sent {
    let start = tokio::time::Instant::now();
    let video_due = |i: usize| start + Duration::from_micros((i - from) as u64 * 1_000_000 / 30);
    let audio_from = from * 50 / 30;
    let audio_to = to * 50 / 30;
    let audio_due = |j: usize| start + Duration::from_millis((j - audio_from) as u64 * 20);
    let (mut i, mut j) = (from, audio_from);
    while i < to || j < audio_to {
        let send_video = i < to && (j >= audio_to || video_due(i) <= audio_due(j));
        let due = if send_video {
            video_due(i)
        } else {
            audio_due(j)
        };
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        if send_video {
            video_fanout.publish(frame_at(video, i, now));
            i += 1;
        } else {
            audio_fanout.publish(frame_at(audio, j, now));
            j += 1;
        }
    }
    Sent {
        video: from..to,
        audio: audio_from..audio_to,
    }
}

// ---------------------------------------------------------------------------------------
// The receiver (browser side), run as a child process: the integration tests' webrtc-rs
// client peer, driven over stdin/stdout instead of the daemon's WebSocket.

#[allow(dead_code)] // the tests read more of it than the packet counts used here
#[path = "../tests/it/common/client_peer.rs"]
mod client_peer;

/// The video codec the receiver offers for `codec`, as the tests' client offers it.
fn offered(codec: VideoCodec) -> rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters {
    match codec {
        VideoCodec::H264 => client_peer::h264(),
        VideoCodec::Av1 => client_peer::av1(),
    }
}

mod receiver {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

    fn say(line: &Line) {
        print!("{}", to_line(line));
    }

    /// Offers `video` and Opus receive-only, answers on stdout, follows stdin.
    pub async fn run(video: VideoCodec) {
        let (pc, counts, mut candidates) = client_peer::client(&[offered(video)]).await;
        tokio::spawn(async move {
            while let Some(Some(init)) = candidates.recv().await {
                say(&Line::Candidate(IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_m_line_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                }));
            }
        });
        let offer = pc.create_offer(None).await.expect("offer");
        pc.set_local_description(offer).await.expect("set local");
        let sdp = pc.local_description().await.expect("local description").sdp;
        say(&Line::Offer(sdp));

        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            match serde_json::from_str::<Line>(&l) {
                Ok(Line::Answer(sdp)) => {
                    let answer = RTCSessionDescription::answer(sdp).expect("answer");
                    pc.set_remote_description(answer)
                        .await
                        .expect("apply answer");
                }
                Ok(Line::Candidate(c)) => {
                    let init = RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_m_line_index,
                        username_fragment: c.username_fragment,
                        url: None,
                    };
                    let _ = pc.add_ice_candidate(init).await;
                }
                Ok(Line::Report) => say(&Line::Received {
                    video: counts.video_packets.load(Ordering::Relaxed),
                    audio: counts.audio_packets.load(Ordering::Relaxed),
                }),
                other => eprintln!("receiver: unexpected {other:?}"),
            }
        }
        let _ = pc.close().await;
    }
}

// ---------------------------------------------------------------------------------------

fn codec_named(name: &str) -> Option<VideoCodec> {
    match name {
        "h264" => Some(VideoCodec::H264),
        "av1" => Some(VideoCodec::Av1),
        _ => None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(codec) = value("--receiver") {
        let codec = codec_named(&codec).expect("--receiver h264|av1");
        runtime.block_on(receiver::run(codec));
        return;
    }
    let frames: usize = value("--frames")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let trace: u64 = value("--trace").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut json = Vec::new();
    let codecs = match value("--codec").as_deref() {
        None | Some("all") => vec![VideoCodec::H264, VideoCodec::Av1],
        Some(name) => vec![codec_named(name).expect("--codec h264|av1|all")],
    };

    println!(
        "encoding {CYCLE} test-pattern frames per codec at {WIDTH}x{HEIGHT}, {KBPS} kbit/s ..."
    );
    let audio = encode_audio();
    let video: Vec<(VideoCodec, Vec<EncodedFrame>)> =
        codecs.iter().map(|&c| (c, encode_video(c))).collect();
    for (codec, cycle) in &video {
        let bytes: usize = cycle.iter().map(|f| f.data.len()).sum();
        println!("  {codec}: {} bytes/frame on average", bytes / cycle.len());
    }

    println!("\n(a) peercam's RtpPacketizer alone, {frames} frames after warm-up (this thread)\n");
    println!("| stream | frames | packets | allocs/packet | bytes/packet | allocs/frame |");
    println!("|---|---|---|---|---|---|");
    for (codec, cycle) in &video {
        json.push(
            part_a(StreamKind::Video(*codec), cycle, frames, trace).print(codec.config_name()),
        );
        print_traces(trace);
    }
    json.push(part_a(StreamKind::Opus, &audio, frames * 50 / 30, trace).print("opus"));
    print_traces(trace);

    println!(
        "\n(b) full send path: peercam peer -> webrtc-rs -> loopback UDP, {frames} video frames \
         at 30 fps + Opus at 50 fps after 3 s warm-up (whole process)\n"
    );
    println!(
        "| video | frames (video+opus) | packets sent | received | allocs/packet | bytes/packet | \
         allocs/s idle |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (codec, cycle) in &video {
        let r = runtime.block_on(part_b(*codec, cycle, &audio, frames, trace));
        println!(
            "| {codec} + opus | {}+{} | {} | {} | {:.2} | {:.0} | {:.0} |",
            r.frames,
            r.audio_frames,
            r.packets,
            r.received,
            r.counted.allocs as f64 / r.packets.max(1) as f64,
            r.counted.bytes as f64 / r.packets.max(1) as f64,
            r.idle_per_s,
        );
        json.push(format!(
            "{{\"part\":\"send_path\",\"stream\":\"{codec}+opus\",\"frames\":{},             \"audio_frames\":{},\"packets\":{},\"received\":{},\"allocs\":{},             \"bytes\":{},\"idle_allocs_per_s\":{:.0}}}",
            r.frames,
            r.audio_frames,
            r.packets,
            r.received,
            r.counted.allocs,
            r.counted.bytes,
            r.idle_per_s
        ));
        print_traces(trace);
    }
    if let Some(dir) = value("--out") {
        let path = std::path::Path::new(&dir).join("alloc.json");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n"))));
        match written {
            Ok(()) => println!("\nwrote {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}
