//! Microphone capture through ALSA.
//!
//! [`AlsaSource`] opens a capture PCM (`default`, `hw:1,0`, `plughw:CARD=Mic`, or any PCM an
//! asoundrc defines) for blocking, interleaved S16_LE reads of ~20 ms periods. It asks for
//! 48 kHz and the wanted channel count; when the device offers something else (a USB microphone
//! that only does 44.1 kHz mono, say) it takes what the device offers and converts:
//!
//! ```text
//! readi (device rate, device channels) --> mix to 1/2 channels --> rubato FFT resampler
//!     --> FIFO --> exact 20 ms chunks at 48 kHz
//! ```
//!
//! Nothing here assumes that reads are paced in real time (the ALSA `file` plugin used by the
//! tests returns seconds of audio at once): chunking only counts samples. Capture instants come
//! from the monotonic clock minus the audio still buffered (in ALSA and here), held exactly
//! 20 ms apart while the device keeps time (see [`ChunkClock`]).

use std::collections::VecDeque;
use std::ffi::CString;
use std::time::{Duration, Instant};

use alsa::device_name::HintIter;
use alsa::pcm::{Access, Format, HwParams, State, PCM};
use alsa::{Direction, ValueOr};
use log::{info, warn};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::{AudioSource, CaptureError};
use crate::media::{AudioChunk, AUDIO_FRAME_MS, AUDIO_FRAME_SAMPLES, AUDIO_RATE};

/// The device name `audio.source = "auto"` maps to.
pub const DEFAULT_DEVICE: &str = "default";
/// Periods in the ALSA ring buffer (each ~20 ms): room for ~80 ms of scheduling hiccups.
const PERIODS_PER_BUFFER: usize = 4;
/// Overruns closer together than this belong to one episode and are logged once.
const OVERRUN_EPISODE_GAP: Duration = Duration::from_secs(5);
/// A measured capture instant further than this from the 20 ms-spaced prediction resyncs the
/// chunk clock (lost audio after an overrun, or a device that is not paced in real time).
const RESYNC_THRESHOLD: Duration = Duration::from_millis(AUDIO_FRAME_MS as u64);
/// A device that delivers nothing for this long is reported (not waited on forever).
const STALL_TIMEOUT_MS: u32 = 2000;
const CHUNK: Duration = Duration::from_millis(AUDIO_FRAME_MS as u64);

/// A capture PCM as `arecord -L` would list it, for `--list-devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlsaDevice {
    /// The name to put in `audio.source`, e.g. `hw:CARD=Mic,DEV=0` or `default`.
    pub name: String,
    /// ALSA's description, lines joined with " / ", e.g. `USB Mic, USB Audio / Direct hardware`.
    pub description: String,
}

/// The PCMs alsa-lib knows that can capture (hardware devices and asoundrc entries with a
/// `hint`). Empty if ALSA has no configuration at all.
pub fn list_capture_devices() -> Vec<AlsaDevice> {
    let Ok(hints) = HintIter::new_str(None, "pcm") else {
        return Vec::new();
    };
    hints
        // No direction in the hint means the PCM does both.
        .filter(|h| h.direction != Some(Direction::Playback))
        .filter_map(|h| {
            let name = h.name?;
            if name == "null" {
                return None;
            }
            let description = h
                .desc
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" / ");
            Some(AlsaDevice { name, description })
        })
        .collect()
}

/// A microphone (or any ALSA capture PCM) as an [`AudioSource`]; see the module docs.
pub struct AlsaSource {
    device: String,
    pcm: PCM,
    channels: u8,
    device_rate: u32,
    device_channels: usize,
    /// One period of interleaved device samples.
    read_buf: Vec<i16>,
    converter: Converter,
    /// Capture instant of the end of the last frame read from ALSA.
    input_end: Instant,
    clock: ChunkClock,
    overruns: u64,
    last_overrun: Option<Instant>,
    /// Set once the device is gone; every later call reports it again.
    gone: Option<String>,
}

impl std::fmt::Debug for AlsaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaSource")
            .field("device", &self.device)
            .field("channels", &self.channels)
            .field("device_rate", &self.device_rate)
            .field("device_channels", &self.device_channels)
            .field("overruns", &self.overruns)
            .finish_non_exhaustive()
    }
}

/// What the device agreed to in `hw_params`.
struct DeviceConfig {
    rate: u32,
    channels: usize,
    period: usize,
}

impl AlsaSource {
    /// Opens capture PCM `device` (use [`DEFAULT_DEVICE`] for `auto`) for `channels` output
    /// channels (clamped to 1..=2). The device is asked for S16_LE, 48 kHz and `channels`; a
    /// device offering another rate or channel count is resampled / mixed.
    ///
    /// Errors name the device and what to do: nonexistent, busy, no S16_LE, and so on.
    pub fn open(device: &str, channels: u8) -> Result<AlsaSource, CaptureError> {
        let channels = channels.clamp(1, 2);
        let c_name = CString::new(device)
            .map_err(|_| stopped(device, "the device name contains a NUL byte".into()))?;
        // alsa-lib prints its own messages to stderr (every retry while a microphone is
        // gone); collect them on this thread instead and put them into our one error line.
        let lib_messages = alsa::Output::local_error_handler().ok();
        let pcm = PCM::open(&c_name, Direction::Capture, false).map_err(|e| {
            let detail = lib_messages
                .as_ref()
                .map(|m| m.borrow().to_string())
                .and_then(|text| text.lines().next().map(|l| l.trim().to_owned()))
                .filter(|l| !l.is_empty())
                .map(|l| format!(" (alsa-lib: {l})"))
                .unwrap_or_default();
            stopped(device, format!("{}{detail}", open_failure(device, &e)))
        })?;
        let config = configure(&pcm, device, channels)?;
        pcm.prepare()
            .map_err(|e| stopped(device, format!("cannot prepare capture: {}", describe(&e))))?;
        let converter = Converter::new(config.rate, config.channels, usize::from(channels))
            .map_err(|reason| stopped(device, reason))?;
        info!(
            "ALSA capture \"{device}\": {} Hz, {} channel(s), period {} frames{}",
            config.rate,
            config.channels,
            config.period,
            if config.rate == AUDIO_RATE && config.channels == usize::from(channels) {
                String::new()
            } else {
                format!(" (converted to {AUDIO_RATE} Hz, {channels} channel(s))")
            }
        );
        Ok(AlsaSource {
            device: device.to_owned(),
            pcm,
            channels,
            device_rate: config.rate,
            device_channels: config.channels,
            read_buf: vec![0; config.period * config.channels],
            converter,
            input_end: Instant::now(),
            clock: ChunkClock::default(),
            overruns: 0,
            last_overrun: None,
            gone: None,
        })
    }

    /// The ALSA device name this source was opened with.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The sample rate the device runs at (48000 unless it could not).
    pub fn device_rate(&self) -> u32 {
        self.device_rate
    }

    /// The channel count the device delivers (before mixing to [`AudioSource::channels`]).
    pub fn device_channels(&self) -> usize {
        self.device_channels
    }

    /// How many capture overruns (audio lost because the reader fell behind) were recovered.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Reads one period into the converter. `Ok` after a recovered overrun too (no data then).
    fn read_period(&mut self) -> Result<(), CaptureError> {
        // Wait with a timeout rather than block in readi forever: a stalled device (USB
        // microphone wedged without unplugging) becomes an error the hub can act on.
        if self.pcm.state() == State::Prepared {
            if let Err(e) = self.pcm.start() {
                return self.recover(e);
            }
        }
        match self.pcm.wait(Some(STALL_TIMEOUT_MS)) {
            Ok(true) => {}
            Ok(false) => {
                return Err(stopped(
                    &self.device,
                    format!("delivered no audio for {STALL_TIMEOUT_MS} ms"),
                ))
            }
            Err(e) => return self.recover(e),
        }
        let io = self.pcm.io_i16().map_err(|e| {
            stopped(
                &self.device,
                format!("cannot read S16_LE samples: {}", describe(&e)),
            )
        })?;
        let read = io.readi(&mut self.read_buf);
        drop(io);
        match read {
            Ok(frames) => {
                let now = Instant::now();
                // For capture, the delay is how long ago the newest readable frame was
                // digitised; what we just read ends there.
                let delay = self.pcm.delay().unwrap_or(0).max(0) as u64;
                let behind = frames_duration(delay, self.device_rate);
                self.input_end = now.checked_sub(behind).unwrap_or(now);
                let samples = &self.read_buf[..frames * self.device_channels];
                self.converter
                    .push(samples)
                    .map_err(|r| stopped(&self.device, r))
            }
            Err(e) => self.recover(e),
        }
    }

    /// Handles a failed read: overruns and suspends are recovered, a vanished device stops.
    fn recover(&mut self, e: alsa::Error) -> Result<(), CaptureError> {
        let errno = e.errno();
        match errno {
            libc::EINTR | libc::EAGAIN => return Ok(()),
            libc::ENODEV | libc::EBADFD | libc::ENXIO | libc::ESHUTDOWN => {
                let reason = format!(
                    "the device was disconnected ({}); capture stops until it is back",
                    describe(&e)
                );
                self.gone = Some(reason.clone());
                return Err(stopped(&self.device, reason));
            }
            libc::EPIPE => self.note_overrun(),
            _ => {}
        }
        if let Err(again) = self.pcm.try_recover(e, true) {
            let reason = format!("capture failed and could not recover: {}", describe(&again));
            self.gone = Some(reason.clone());
            return Err(stopped(&self.device, reason));
        }
        // Audio was lost: the next chunk's instant must come from a fresh measurement.
        self.clock.resync();
        Ok(())
    }

    fn note_overrun(&mut self) {
        self.overruns += 1;
        let now = Instant::now();
        let new_episode = self
            .last_overrun
            .is_none_or(|t| now.duration_since(t) > OVERRUN_EPISODE_GAP);
        self.last_overrun = Some(now);
        if new_episode {
            warn!(
                "ALSA capture \"{}\": overrun, audio was lost because the capture thread fell \
                 behind (overrun #{} since open; more within {} s are only counted)",
                self.device,
                self.overruns,
                OVERRUN_EPISODE_GAP.as_secs()
            );
        }
    }
}

impl AudioSource for AlsaSource {
    fn describe(&self) -> String {
        format!(
            "ALSA microphone \"{}\" ({} Hz, {} channel(s) -> {AUDIO_RATE} Hz, {} channel(s))",
            self.device, self.device_rate, self.device_channels, self.channels
        )
    }

    fn channels(&self) -> u8 {
        self.channels
    }

    /// Blocks on ALSA reads until 20 ms at 48 kHz are ready.
    fn next_chunk(&mut self) -> Result<AudioChunk, CaptureError> {
        if let Some(reason) = &self.gone {
            return Err(stopped(&self.device, reason.clone()));
        }
        loop {
            // The oldest ready sample lies `buffered` before the end of what was read.
            let buffered = self.converter.buffered();
            if let Some(samples) = self.converter.pop_chunk() {
                let measured = self
                    .input_end
                    .checked_sub(buffered)
                    .unwrap_or(self.input_end);
                return Ok(AudioChunk {
                    samples,
                    channels: self.channels,
                    capture_instant: self.clock.stamp(measured),
                });
            }
            self.read_period()?;
        }
    }
}

/// Negotiates S16_LE interleaved, 48 kHz (or nearest), `channels` (or nearest), ~20 ms periods.
fn configure(pcm: &PCM, device: &str, channels: u8) -> Result<DeviceConfig, CaptureError> {
    let fail = |what: &str, e: alsa::Error| stopped(device, format!("{what}: {}", describe(&e)));
    let hwp = HwParams::any(pcm).map_err(|e| fail("cannot query capabilities", e))?;
    hwp.set_access(Access::RWInterleaved)
        .map_err(|e| fail("does not support interleaved reads", e))?;
    hwp.set_format(Format::S16LE).map_err(|_| {
        stopped(
            device,
            "does not offer 16-bit little-endian samples (S16_LE); use its plughw: name (e.g. \
             \"plughw:1,0\") so that ALSA converts the format"
                .into(),
        )
    })?;
    let wanted = u32::from(channels);
    let device_channels = match hwp.set_channels(wanted) {
        Ok(()) => wanted,
        Err(_) => hwp
            .set_channels_near(wanted)
            .map_err(|e| fail("offers no usable channel count", e))?,
    };
    let rate = hwp
        .set_rate_near(AUDIO_RATE, ValueOr::Nearest)
        .map_err(|e| fail("offers no usable sample rate", e))?;
    if rate == 0 || device_channels == 0 {
        return Err(stopped(
            device,
            format!("offers an unusable format ({rate} Hz, {device_channels} channels)"),
        ));
    }
    // Frames is c_long: 64-bit on aarch64/x86_64, 32-bit on armv7 (a 20 ms period fits both).
    let period_wanted = (rate * AUDIO_FRAME_MS / 1000) as alsa::pcm::Frames;
    let period = hwp
        .set_period_size_near(period_wanted, ValueOr::Nearest)
        .map_err(|e| fail("cannot set a 20 ms period", e))?;
    hwp.set_buffer_size_near(period * PERIODS_PER_BUFFER as alsa::pcm::Frames)
        .map_err(|e| fail("cannot set the buffer size", e))?;
    pcm.hw_params(&hwp)
        .map_err(|e| fail("rejected the capture parameters", e))?;
    let period = usize::try_from(period).unwrap_or(0).max(1);
    Ok(DeviceConfig {
        rate,
        channels: device_channels as usize,
        period,
    })
}

/// The message for a failed `snd_pcm_open`, with what to try.
fn open_failure(device: &str, e: &alsa::Error) -> String {
    let hint = match e.errno() {
        libc::EBUSY => {
            "; another program is using it (check with `fuser -v /dev/snd/*`), or \
                        use a shared PCM such as \"default\" or \"dsnoop:...\""
        }
        libc::EACCES | libc::EPERM => "; add the user to the `audio` group",
        _ => "; list devices with `arecord -l` or `peercam --list-devices`",
    };
    format!(
        "ALSA capture device \"{device}\" cannot be opened: {}{hint}",
        errno_text(e.errno())
    )
}

/// `strerror` text plus the ALSA function, e.g. `No such device (snd_pcm_readi)`.
fn describe(e: &alsa::Error) -> String {
    format!("{} ({})", errno_text(e.errno()), e.func())
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn stopped(device: &str, reason: String) -> CaptureError {
    // `open_failure` already names the device in full.
    let reason = if reason.starts_with("ALSA capture device") {
        reason
    } else {
        format!("ALSA capture device \"{device}\" {reason}")
    };
    CaptureError::Stopped {
        source_name: format!("ALSA \"{device}\""),
        reason,
    }
}

fn frames_duration(frames: u64, rate: u32) -> Duration {
    Duration::from_secs_f64(frames as f64 / f64::from(rate.max(1)))
}

/// Gives chunks capture instants exactly 20 ms apart while measurements agree (within
/// [`RESYNC_THRESHOLD`]); jumps to the measurement otherwise (lost audio, or clock drift that
/// has added up to more than the threshold). Never goes backwards.
///
/// No smoothing towards the measurement: RTP timestamps come from these instants, and an Opus
/// packet whose timestamp is not exactly 960 after the previous one overlaps it (browsers
/// discard it) or leaves a gap (they conceal it), so even a few samples of nudging on every
/// chunk cost about half the packets.
#[derive(Debug, Default)]
pub(crate) struct ChunkClock {
    /// Instant of the previous chunk.
    last: Option<Instant>,
    resync: bool,
}

impl ChunkClock {
    /// The instant for the next chunk, given its measured (jittery) instant.
    pub(crate) fn stamp(&mut self, measured: Instant) -> Instant {
        let stamped = match self.last {
            Some(last) if !self.resync => {
                let predicted = last + CHUNK;
                if measured > predicted + RESYNC_THRESHOLD {
                    measured
                } else if measured + RESYNC_THRESHOLD < predicted {
                    measured.max(last)
                } else {
                    predicted
                }
            }
            Some(last) => measured.max(last),
            None => measured,
        };
        self.resync = false;
        self.last = Some(stamped);
        stamped
    }

    /// Forget the prediction: audio was lost, the next measurement is taken as is.
    pub(crate) fn resync(&mut self) {
        self.resync = true;
    }
}

/// Turns device audio (any rate, any channel count) into exact 20 ms chunks at 48 kHz with
/// 1 or 2 channels. Pure computation; [`AlsaSource`] feeds it.
pub(crate) struct Converter {
    in_rate: u32,
    in_channels: usize,
    out_channels: usize,
    resampler: Option<Resampling>,
    /// Interleaved 48 kHz output not yet handed out.
    ready: VecDeque<i16>,
    mixed: Vec<i16>,
}

/// The FFT resampler and its buffers (only when the device rate is not 48 kHz).
struct Resampling {
    fft: Fft<f32>,
    /// Mixed, interleaved input at the device rate waiting for a full resampler chunk.
    pending: Vec<f32>,
    /// Output scratch: `output_frames_max` frames.
    out: Vec<f32>,
}

impl Converter {
    /// A converter from `in_rate`/`in_channels` to 48 kHz/`out_channels` (1 or 2).
    pub(crate) fn new(
        in_rate: u32,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Self, String> {
        if in_rate == 0 || in_channels == 0 || !(1..=2).contains(&out_channels) {
            return Err(format!(
                "has an unusable format: {in_rate} Hz, {in_channels} channels to {out_channels}"
            ));
        }
        let resampler = if in_rate == AUDIO_RATE {
            None
        } else {
            // Fixed output of one chunk per call: the smallest block (lowest latency) that
            // still yields whole chunks.
            let fft = Fft::<f32>::new(
                in_rate as usize,
                AUDIO_RATE as usize,
                AUDIO_FRAME_SAMPLES,
                out_channels,
                FixedSync::Output,
            )
            .map_err(|e| format!("cannot resample {in_rate} Hz to {AUDIO_RATE} Hz: {e}"))?;
            let out = vec![0.0; fft.output_frames_max() * out_channels];
            Some(Resampling {
                pending: Vec::with_capacity(fft.input_frames_max() * out_channels * 2),
                fft,
                out,
            })
        };
        Ok(Converter {
            in_rate,
            in_channels,
            out_channels,
            resampler,
            ready: VecDeque::new(),
            mixed: Vec::new(),
        })
    }

    /// Adds interleaved device samples (whole frames; a trailing partial frame is ignored).
    pub(crate) fn push(&mut self, interleaved: &[i16]) -> Result<(), String> {
        self.mixed.clear();
        mix(
            interleaved,
            self.in_channels,
            self.out_channels,
            &mut self.mixed,
        );
        let Some(r) = &mut self.resampler else {
            self.ready.extend(self.mixed.iter().copied());
            return Ok(());
        };
        let ch = self.out_channels;
        r.pending
            .extend(self.mixed.iter().map(|&s| f32::from(s) / 32768.0));
        loop {
            let need = r.fft.input_frames_next();
            if r.pending.len() < need * ch {
                return Ok(());
            }
            let out_frames = r.out.len() / ch;
            let input = InterleavedSlice::new(&r.pending[..need * ch], ch, need)
                .map_err(|e| format!("resampler input: {e}"))?;
            let mut output = InterleavedSlice::new_mut(&mut r.out[..], ch, out_frames)
                .map_err(|e| format!("resampler output: {e}"))?;
            let (used, produced) = r
                .fft
                .process_into_buffer(&input, &mut output, None)
                .map_err(|e| format!("resampling failed: {e}"))?;
            r.pending.drain(..used * ch);
            self.ready.extend(
                r.out[..produced * ch]
                    .iter()
                    .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
            );
        }
    }

    /// The next 20 ms chunk (`AUDIO_FRAME_SAMPLES * out_channels` samples), if complete.
    pub(crate) fn pop_chunk(&mut self) -> Option<Vec<i16>> {
        let len = AUDIO_FRAME_SAMPLES * self.out_channels;
        if self.ready.len() < len {
            return None;
        }
        Some(self.ready.drain(..len).collect())
    }

    /// How long before the end of the pushed input the oldest not yet popped sample was
    /// captured: ready output, plus input waiting for the resampler, plus its delay.
    pub(crate) fn buffered(&self) -> Duration {
        let ready = (self.ready.len() / self.out_channels) as u64;
        let mut d = frames_duration(ready, AUDIO_RATE);
        if let Some(r) = &self.resampler {
            d += frames_duration((r.pending.len() / self.out_channels) as u64, self.in_rate);
            d += frames_duration(r.fft.output_delay() as u64, AUDIO_RATE);
        }
        d
    }
}

/// Mixes interleaved `input` frames of `in_ch` channels to `out_ch` (1 or 2) channels:
/// same count copies, mono to stereo duplicates, many to mono averages all channels, many to
/// stereo keeps the first two (ALSA's front left/right).
pub(crate) fn mix(input: &[i16], in_ch: usize, out_ch: usize, out: &mut Vec<i16>) {
    if in_ch == out_ch {
        out.extend_from_slice(&input[..input.len() - input.len() % in_ch]);
        return;
    }
    for frame in input.chunks_exact(in_ch) {
        match out_ch {
            1 => {
                let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
                let n = in_ch as i32;
                // Round half away from zero; the mean of i16s always fits an i16.
                let mean = (2 * sum + sum.signum() * n) / (2 * n);
                out.push(mean as i16);
            }
            _ if in_ch == 1 => out.extend_from_slice(&[frame[0], frame[0]]),
            _ => out.extend_from_slice(&frame[..2]),
        }
    }
}

#[cfg(test)]
mod tests;
