//! The Raspberry Pi Camera Module as a [`VideoSource`]: peercam runs `rpicam-vid` (or
//! `libcamera-vid`) as a child process and reads its stdout, either the Pi's hardware H.264
//! (passed through to viewers) or raw I420 frames (for peercam's own encoders).
//!
//! The child is supervised: when it exits, stalls or cannot be started, viewers see the
//! "camera disconnected" placeholder at the frame rate while peercam starts it again after a
//! backoff (1 s after a run that delivered frames; after starts that delivered none, 1 s,
//! then doubling up to 30 s). Each outage is logged
//! once, with the last lines rpicam-vid wrote to stderr; its stderr is otherwise kept, not
//! logged (libcamera is chatty). The child is stopped (SIGTERM, then SIGKILL after 1 s) when
//! the source is dropped (shutdown, reload), and dies with the thread that started it if
//! peercam itself is killed.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{info, warn};

use super::placeholder::Placeholder;
use super::recover::Reconnect;
use super::rpicam::{self, Output, Request};
use super::{CaptureError, VideoSource};
use crate::h264::AccessUnits;
use crate::logging::client_str;
use crate::media::pool::BufferPool;
use crate::media::{CameraH264, PixelFormat, RawFrame, VideoFrame};

/// First wait before starting rpicam-vid again.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between starts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a started rpicam-vid may take to deliver its first frame (libcamera starts the
/// camera in about a second on a Pi 4).
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A running rpicam-vid that sends nothing for this long is stalled and is restarted.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the outage's log line waits for the stderr reader to reach the end of the pipe
/// (it is there at once when rpicam-vid exited; a child it left behind may hold it open).
const STDERR_DRAIN: Duration = Duration::from_millis(300);
/// Lines of rpicam-vid's stderr kept for the outage's log line.
const STDERR_LINES: usize = 6;
/// Characters of each kept stderr line.
const STDERR_LINE_CHARS: usize = 200;
/// Frames read ahead of the capture thread (the reader blocks, and so does rpicam-vid, beyond).
const FRAME_CHANNEL: usize = 4;
/// How long a stopping rpicam-vid gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// rpicam-vid's YUV420 rows are padded to this many bytes (the Pi 4's ISP aligns to 32, the
/// Pi 5's to 64): a raw width that is a multiple of it has no padding.
pub const RAW_ROW_ALIGN: u32 = 64;
/// Read size for the H.264 pipe.
const READ_CHUNK: usize = 64 * 1024;
/// Spare picture buffers kept for reuse.
const FRAME_POOL_SPARE: usize = 8;

/// The Camera Module through a supervised rpicam-vid.
pub struct RpicamSource {
    request: Request,
    /// The width the frames are delivered at (raw mode crops rpicam-vid's wider rows to it).
    width: u32,
    running: Option<Running>,
    placeholder: Placeholder,
    pool: Arc<BufferPool>,
    frame_interval: Duration,
    next_placeholder: Instant,
    reconnect: Reconnect,
    backoff: Duration,
    /// Starts that have not delivered a frame since the last one that did.
    failed_starts: u32,
    sequence: u64,
}

/// A started rpicam-vid.
struct Running {
    child: Child,
    program: &'static str,
    frames: Receiver<Result<VideoFrame, String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Disconnected once the stderr reader read to the end (or never started).
    stderr_done: Receiver<()>,
    started: Instant,
    delivered: bool,
}

impl RpicamSource {
    /// A source for `request`. Nothing starts here: rpicam-vid is started by the first
    /// [`VideoSource::next_frame`] call, on the capture thread (the child is tied to it).
    pub fn new(request: Request) -> Self {
        let now = Instant::now();
        if request.output == Output::H264 {
            info!(
                "rpicam: keyframe requests cannot reach the Pi's H.264 encoder through \
                 rpicam-vid; a new viewer waits for the next keyframe (every {} frames, --intra)",
                request.keyframe_interval_frames
            );
        }
        let mut request = request;
        let width = request.width;
        if request.output == Output::Yuv420 && !width.is_multiple_of(RAW_ROW_ALIGN) {
            // Ask for rows without padding and crop them to the configured width.
            request.width = width.div_ceil(RAW_ROW_ALIGN) * RAW_ROW_ALIGN;
            info!(
                "rpicam: raw frames are asked for {}x{} (rows without padding) and cropped \
                 to {width}x{}",
                request.width, request.height, request.height
            );
        }
        RpicamSource {
            placeholder: Placeholder::new(width, request.height),
            frame_interval: Duration::from_secs(1) / request.fps.max(1),
            width,
            request,
            running: None,
            pool: BufferPool::new(FRAME_POOL_SPARE),
            next_placeholder: now,
            reconnect: Reconnect::new(FIRST_BACKOFF, now),
            backoff: FIRST_BACKOFF,
            failed_starts: 0,
            sequence: 0,
        }
    }

    /// Whether rpicam-vid is delivering frames now.
    pub fn is_streaming(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.delivered)
    }

    fn start(&mut self, now: Instant) {
        self.reconnect.attempt(now);
        let Some((program, path)) = rpicam::find_program() else {
            self.lose(
                now,
                "rpicam-vid is not installed (nor libcamera-vid): install rpicam-apps \
                 (apt install rpicam-apps), or set [video] source to a V4L2 camera"
                    .to_owned(),
            );
            return;
        };
        let args = self.request.args();
        let mut command = Command::new(&path);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                // The child dies with this thread: peercam killed leaves no camera held.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.lose(now, format!("cannot start {}: {e}", path.display()));
                return;
            }
        };
        let stderr = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_LINES)));
        let (stderr_end, stderr_done) = mpsc::sync_channel::<()>(0);
        if let Some(pipe) = child.stderr.take() {
            let lines = stderr.clone();
            spawn_reader("peercam-rpicam-err", move || {
                keep_stderr(pipe, &lines);
                drop(stderr_end);
            });
        }
        let (tx, frames) = mpsc::sync_channel(FRAME_CHANNEL);
        if let Some(pipe) = child.stdout.take() {
            let (request, width, pool) = (self.request.clone(), self.width, self.pool.clone());
            spawn_reader("peercam-rpicam", move || match request.output {
                Output::H264 => read_h264(pipe, &request, &tx),
                Output::Yuv420 => read_raw(pipe, &request, width, &pool, &tx),
            });
        }
        if self.failed_starts == 0 && self.reconnect.outage().is_none() {
            info!(
                "rpicam: started {program} {}",
                client_str(&args.join(" ")).max(400)
            );
        }
        self.running = Some(Running {
            child,
            program,
            frames,
            stderr,
            stderr_done,
            started: now,
            delivered: false,
        });
    }

    /// rpicam-vid is gone (or never came) for `reason`: placeholder, and a start later.
    fn lose(&mut self, now: Instant, reason: String) {
        let delivered = self.running.take().is_some_and(|mut r| {
            stop_child(&mut r.child);
            r.delivered
        });
        if delivered {
            self.failed_starts = 0;
            self.backoff = FIRST_BACKOFF;
        } else {
            self.failed_starts += 1;
            if self.failed_starts > 1 {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.reconnect.set_interval(self.backoff);
        self.reconnect.attempt(now);
        if self.reconnect.failed(&reason) {
            warn!(
                "rpicam: {reason}; showing \"camera disconnected\" and starting it again \
                 (after {} s, then up to every {} s)",
                self.backoff.as_secs(),
                MAX_BACKOFF.as_secs()
            );
        }
        self.next_placeholder = now;
    }

    /// Why the running rpicam-vid ended: its exit status and last stderr lines.
    fn ended(running: &mut Running) -> String {
        let status = wait_briefly(&mut running.child);
        // Its last words may still be in the pipe: let the reader get to the end first.
        let _ = running.stderr_done.recv_timeout(STDERR_DRAIN);
        let kept = running.stderr.lock().unwrap_or_else(|e| e.into_inner());
        // Its errors if it wrote any (libcamera's INFO lines come first), else its last lines.
        let errors: Vec<&String> = kept.iter().filter(|l| l.contains("ERROR")).collect();
        let tail: Vec<String> = if errors.is_empty() {
            kept.iter()
                .skip(kept.len().saturating_sub(2))
                .cloned()
                .collect()
        } else {
            errors[errors.len().saturating_sub(2)..]
                .iter()
                .map(|l| l.to_string())
                .collect()
        };
        drop(kept);
        let status = match status {
            Some(s) => describe_status(s),
            None => "closed its output".to_owned(),
        };
        if tail.is_empty() {
            format!("{} {status}", running.program)
        } else {
            format!(
                "{} {status}; it said: {}",
                running.program,
                client_str(&tail.join(" | ")).max(600)
            )
        }
    }
}

impl VideoSource for RpicamSource {
    fn describe(&self) -> String {
        let how = match self.request.output {
            Output::H264 => "H.264 from the Pi's encoder",
            Output::Yuv420 => "raw I420 frames",
        };
        format!(
            "Camera Module {} through rpicam-vid ({}x{}@{}, {how})",
            self.request.camera, self.width, self.request.height, self.request.fps
        )
    }

    fn next_frame(&mut self) -> Result<VideoFrame, CaptureError> {
        loop {
            let now = Instant::now();
            if self.running.is_none() && self.reconnect.is_due(now) {
                self.start(now);
            }
            if let Some(running) = self.running.as_mut() {
                // Until the first frame, placeholders keep flowing at the frame rate.
                let wait = if running.delivered {
                    STALL_TIMEOUT
                } else {
                    self.next_placeholder.saturating_duration_since(now)
                };
                match running.frames.recv_timeout(wait) {
                    Ok(Ok(mut frame)) => {
                        // One count across runs and placeholders: a new run after a gap
                        // reads as lost frames, and the stream starts over at its IDR.
                        match &mut frame {
                            VideoFrame::H264(h264) => h264.sequence = self.sequence,
                            VideoFrame::Raw(raw) => raw.sequence = self.sequence,
                        }
                        if !running.delivered {
                            running.delivered = true;
                            self.failed_starts = 0;
                            if self.reconnect.succeeded() {
                                info!("rpicam: {} is streaming again", running.program);
                            }
                        }
                        self.sequence += 1;
                        return Ok(frame);
                    }
                    Ok(Err(reason)) => {
                        let reason = format!("{}: {reason}", running.program);
                        self.lose(Instant::now(), reason);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        let reason = Self::ended(running);
                        self.lose(Instant::now(), reason);
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let now = Instant::now();
                        let silence = if running.delivered {
                            Some(format!("for {} s (stalled)", STALL_TIMEOUT.as_secs()))
                        } else {
                            (now.duration_since(running.started) >= FIRST_FRAME_TIMEOUT).then(
                                || {
                                    format!(
                                        "within {} s of starting",
                                        FIRST_FRAME_TIMEOUT.as_secs()
                                    )
                                },
                            )
                        };
                        if let Some(silence) = silence {
                            let reason = format!("{} sent no frame {silence}", running.program);
                            self.lose(now, reason);
                            continue;
                        }
                    }
                }
            }
            // The placeholder, paced, while rpicam-vid is away or starting.
            let due = self.next_placeholder;
            let now = Instant::now();
            if due > now {
                let until_start = if self.running.is_none() {
                    self.reconnect.wait(now)
                } else {
                    Duration::MAX
                };
                std::thread::sleep((due - now).min(until_start));
                if Instant::now() < due {
                    continue;
                }
            }
            let now = Instant::now();
            self.next_placeholder = (due + self.frame_interval).max(now);
            let frame = self.placeholder.frame(&self.pool, self.sequence, now);
            self.sequence += 1;
            return Ok(VideoFrame::Raw(frame));
        }
    }
}

impl Drop for RpicamSource {
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            stop_child(&mut running.child);
        }
    }
}

fn spawn_reader(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        warn!("rpicam: cannot start the {name} thread: {e}");
    }
}

/// Keeps the last [`STDERR_LINES`] lines of `pipe`, each cut to [`STDERR_LINE_CHARS`].
fn keep_stderr(pipe: impl Read, lines: &Mutex<VecDeque<String>>) {
    let mut pipe = pipe;
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                line.clear();
                if text.is_empty() {
                    continue;
                }
                let mut kept = lines.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == STDERR_LINES {
                    kept.pop_front();
                }
                kept.push_back(text.chars().take(STDERR_LINE_CHARS).collect());
            } else if line.len() < STDERR_LINE_CHARS * 4 {
                line.push(b);
            }
        }
    }
}

/// Reads H.264 from rpicam-vid and sends one access unit per frame.
fn read_h264(mut pipe: impl Read, request: &Request, tx: &SyncSender<Result<VideoFrame, String>>) {
    let mut splitter = AccessUnits::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut sequence = 0u64;
    let send = |data: Vec<u8>, sequence: &mut u64| {
        let frame = VideoFrame::H264(CameraH264 {
            width: request.width,
            height: request.height,
            data: Bytes::from(data),
            capture_instant: Instant::now(),
            sequence: *sequence,
        });
        *sequence += 1;
        tx.send(Ok(frame)).is_ok()
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Err(format!("reading its output: {e}")));
                return;
            }
        };
        for unit in splitter.push(&buf[..n]) {
            if !send(unit, &mut sequence) {
                return;
            }
        }
    }
    if let Some(unit) = splitter.finish() {
        send(unit, &mut sequence);
    }
}

/// Reads raw I420 frames of `request`'s size from rpicam-vid and sends them cropped to
/// `width` (rows are `request.width` wide, a multiple of [`RAW_ROW_ALIGN`] when cropping).
fn read_raw(
    mut pipe: impl Read,
    request: &Request,
    width: u32,
    pool: &Arc<BufferPool>,
    tx: &SyncSender<Result<VideoFrame, String>>,
) {
    let (stride, height) = (request.width as usize, request.height as usize);
    let wire_len = RawFrame::i420_len(request.width, request.height);
    let mut wire = vec![0u8; if width == request.width { 0 } else { wire_len }];
    let mut sequence = 0u64;
    loop {
        let mut data = pool.take(RawFrame::i420_len(width, request.height));
        let read = if wire.is_empty() {
            pipe.read_exact(&mut data)
        } else {
            pipe.read_exact(&mut wire).map(|()| {
                crop_i420(&wire, stride, &mut data, width as usize, height);
            })
        };
        match read {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                let _ = tx.send(Err(format!("reading its output: {e}")));
                return;
            }
        }
        let frame = VideoFrame::Raw(RawFrame {
            width,
            height: request.height,
            format: PixelFormat::I420,
            data,
            capture_instant: Instant::now(),
            sequence,
        });
        sequence += 1;
        if tx.send(Ok(frame)).is_err() {
            return;
        }
    }
}

/// Copies the left `width` columns of an I420 picture whose rows are `stride` wide.
fn crop_i420(src: &[u8], stride: usize, dst: &mut [u8], width: usize, height: usize) {
    let (src_y, src_c) = src.split_at(stride * height);
    let (src_u, src_v) = src_c.split_at((stride / 2) * (height / 2));
    let (dst_y, dst_c) = dst.split_at_mut(width * height);
    let (dst_u, dst_v) = dst_c.split_at_mut((width / 2) * (height / 2));
    let planes = [
        (src_y, dst_y, stride, width, height),
        (src_u, dst_u, stride / 2, width / 2, height / 2),
        (src_v, dst_v, stride / 2, width / 2, height / 2),
    ];
    for (src, dst, stride, width, rows) in planes {
        for row in 0..rows {
            dst[row * width..(row + 1) * width]
                .copy_from_slice(&src[row * stride..row * stride + width]);
        }
    }
}

/// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; always reaped.
fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The exit status of a child that closed its output, if it exits within 1 s (else killed).
fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                stop_child(child);
                return None;
            }
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_rows_are_cropped_to_the_configured_width() {
        // 4x2 picture in rows of 8 (chroma rows of 4): each byte says where it came from.
        let (stride, width, height) = (8usize, 4usize, 2usize);
        let mut src = Vec::new();
        src.extend((0..stride * height).map(|i| i as u8));
        src.extend((0..stride / 2).map(|i| 100 + i as u8));
        src.extend((0..stride / 2).map(|i| 200 + i as u8));
        let mut dst = vec![0u8; RawFrame::i420_len(width as u32, height as u32)];
        crop_i420(&src, stride, &mut dst, width, height);
        assert_eq!(dst, [0, 1, 2, 3, 8, 9, 10, 11, 100, 101, 200, 201]);
    }

    #[test]
    fn stderr_keeps_the_last_lines_cut() {
        let lines = Mutex::new(VecDeque::new());
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str(&"x".repeat(5000));
        text.push('\n');
        keep_stderr(text.as_bytes(), &lines);
        let kept: Vec<String> = lines.into_inner().unwrap().into_iter().collect();
        assert_eq!(kept.len(), STDERR_LINES);
        assert_eq!(kept[0], "line 5");
        assert_eq!(kept[STDERR_LINES - 1].len(), STDERR_LINE_CHARS);
    }
}
