//! Unit tests of the conversion path of [`super::AlsaSource`]: resampling, channel mixing,
//! chunking and capture instants. The device side is covered by `tests/it/alsa_capture.rs`.

use std::f64::consts::TAU;

use super::*;

/// `seconds` of a sine at `freq` Hz sampled at `rate`, amplitude 10000, `channels` copies.
fn sine(freq: f64, rate: u32, seconds: f64, channels: usize) -> Vec<i16> {
    let frames = (f64::from(rate) * seconds).round() as usize;
    (0..frames)
        .flat_map(|n| {
            let v = (10000.0 * (TAU * freq * n as f64 / f64::from(rate)).sin()).round() as i16;
            std::iter::repeat_n(v, channels)
        })
        .collect()
}

/// Pushes `input` in device-sized periods of `period` frames and collects all chunks.
fn run(conv: &mut Converter, input: &[i16], in_ch: usize, period: usize) -> Vec<Vec<i16>> {
    let mut chunks = Vec::new();
    for piece in input.chunks(period * in_ch) {
        conv.push(piece).expect("push");
        while let Some(c) = conv.pop_chunk() {
            chunks.push(c);
        }
    }
    chunks
}

/// Frequency of a mono signal from its rising zero crossings (first to last).
fn zero_crossing_freq(samples: &[i16], rate: f64) -> f64 {
    let rising: Vec<f64> = samples
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
        // Interpolate the crossing between the two samples.
        .map(|(i, w)| i as f64 + f64::from(-w[0]) / f64::from(w[1] - w[0]))
        .collect();
    assert!(
        rising.len() > 10,
        "too few zero crossings: {}",
        rising.len()
    );
    let span = rising[rising.len() - 1] - rising[0];
    (rising.len() - 1) as f64 / (span / rate)
}

#[test]
fn resampling_44100_to_48000_keeps_length_and_pitch() {
    let mut conv = Converter::new(44_100, 1, 1).expect("converter");
    let input = sine(440.0, 44_100, 1.0, 1);
    // 10 ms periods: sizes unrelated to the resampler's blocks.
    let chunks = run(&mut conv, &input, 1, 441);
    let total: usize = chunks.iter().map(Vec::len).sum();
    assert!(
        total.abs_diff(48_000) <= AUDIO_FRAME_SAMPLES,
        "1 s at 44.1 kHz became {total} samples at 48 kHz"
    );
    assert!(chunks.iter().all(|c| c.len() == AUDIO_FRAME_SAMPLES));
    // Skip the resampler's startup (its delay is well under 100 ms).
    let steady: Vec<i16> = chunks[5..].concat();
    let freq = zero_crossing_freq(&steady, 48_000.0);
    assert!(
        (freq - 440.0).abs() < 4.4,
        "440 Hz came out as {freq:.2} Hz"
    );
    // The level survives too (amplitude 10000 in, no clipping, no big loss).
    let peak = steady.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!((9500..=10500).contains(&peak), "peak {peak}");
}

#[test]
fn resampling_16000_stereo_to_48000_mono() {
    let mut conv = Converter::new(16_000, 2, 1).expect("converter");
    let input = sine(1000.0, 16_000, 1.0, 2);
    let chunks = run(&mut conv, &input, 2, 320);
    let total: usize = chunks.iter().map(Vec::len).sum();
    assert!(total.abs_diff(48_000) <= AUDIO_FRAME_SAMPLES, "{total}");
    let freq = zero_crossing_freq(&chunks[5..].concat(), 48_000.0);
    assert!(
        (freq - 1000.0).abs() < 10.0,
        "1 kHz came out as {freq:.2} Hz"
    );
}

#[test]
fn buffered_accounts_for_pending_input_and_resampler_delay() {
    let mut conv = Converter::new(48_000, 1, 1).expect("converter");
    assert_eq!(conv.buffered(), Duration::ZERO);
    conv.push(&[0; 1440]).expect("push");
    assert_eq!(conv.buffered(), Duration::from_millis(30));
    conv.pop_chunk().expect("chunk");
    assert_eq!(conv.buffered(), Duration::from_millis(10));

    let mut conv = Converter::new(44_100, 1, 1).expect("converter");
    let delay = conv.buffered();
    assert!(
        delay > Duration::ZERO && delay < Duration::from_millis(50),
        "{delay:?}"
    );
    conv.push(&[0; 441]).expect("push");
    let with_input = conv.buffered();
    assert!(
        with_input >= delay + Duration::from_millis(9),
        "{with_input:?}"
    );
}

#[test]
fn mixing_between_channel_counts() {
    let mut out = Vec::new();
    mix(&[100, 300, -5, -6, 7, 8], 2, 1, &mut out);
    assert_eq!(out, [200, -6, 8]);

    out.clear();
    mix(&[1, -2, 3], 1, 2, &mut out);
    assert_eq!(out, [1, 1, -2, -2, 3, 3]);

    out.clear();
    mix(&[1, 2, 3, 4, 5, 6, 7, 8], 4, 2, &mut out);
    assert_eq!(out, [1, 2, 5, 6]);

    out.clear();
    mix(
        &[i16::MAX, i16::MAX, i16::MIN, i16::MIN, 4, 8, 0, 0],
        4,
        1,
        &mut out,
    );
    // Means -0.5 and 3: rounded half away from zero, no overflow.
    assert_eq!(out, [-1, 3]);

    out.clear();
    // Same count passes through; a trailing partial frame is dropped.
    mix(&[1, 2, 3, 4, 5], 2, 2, &mut out);
    assert_eq!(out, [1, 2, 3, 4]);
}

#[test]
fn chunks_are_exactly_20_ms_whatever_the_period() {
    for (channels, period) in [(1usize, 333usize), (2, 1024), (2, 7)] {
        let mut conv = Converter::new(48_000, channels, channels).expect("converter");
        let input: Vec<i16> = (0..48_000 * channels)
            .map(|i| (i % 30_000) as i16)
            .collect();
        let chunks = run(&mut conv, &input, channels, period);
        assert_eq!(chunks.len(), 50, "channels {channels}, period {period}");
        assert!(chunks.iter().all(|c| c.len() == 960 * channels));
        // Without resampling the samples come out unchanged and in order.
        assert_eq!(chunks.concat(), input);
    }
}

#[test]
fn stereo_device_to_mono_chunks_without_resampling() {
    let mut conv = Converter::new(48_000, 2, 1).expect("converter");
    let input: Vec<i16> = (0..960).flat_map(|i| [i as i16, -(i as i16)]).collect();
    let chunks = run(&mut conv, &input, 2, 480);
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].iter().all(|&s| s == 0));
}

#[test]
fn converter_rejects_unusable_formats() {
    assert!(Converter::new(0, 1, 1).is_err());
    assert!(Converter::new(48_000, 0, 1).is_err());
    assert!(Converter::new(48_000, 1, 3).is_err());
}

#[test]
fn chunk_clock_spaces_chunks_20_ms_and_resyncs_on_jumps() {
    let t0 = Instant::now();
    let mut clock = ChunkClock::default();
    assert_eq!(clock.stamp(t0), t0);
    // 3 ms of jitter is mostly smoothed away.
    let second = clock.stamp(t0 + CHUNK + Duration::from_millis(3));
    assert!(second - t0 >= CHUNK && second - t0 < CHUNK + Duration::from_millis(1));
    // 100 ms of lost audio: follow the measurement.
    let jumped = t0 + Duration::from_millis(140);
    assert_eq!(clock.stamp(jumped), jumped);
    // A measurement far in the past never moves the clock backwards.
    assert_eq!(clock.stamp(t0), jumped);
    // After an explicit resync the measurement is taken as is.
    clock.resync();
    let later = jumped + Duration::from_millis(45);
    assert_eq!(clock.stamp(later), later);
}

#[test]
fn open_errors_name_the_device_and_what_to_try() {
    let missing = open_failure("hw:9,0", &alsa::Error::new("snd_pcm_open", libc::ENOENT));
    assert_eq!(
        missing,
        "ALSA capture device \"hw:9,0\" cannot be opened: No such file or directory; list \
         devices with `arecord -l` or `peercam --list-devices`"
    );
    let busy = open_failure("hw:1,0", &alsa::Error::new("snd_pcm_open", libc::EBUSY));
    assert!(
        busy.contains("\"hw:1,0\"") && busy.contains("another program"),
        "{busy}"
    );
    let err = stopped("hw:1,0", "was disconnected".into());
    assert_eq!(
        err.to_string(),
        "capture source ALSA \"hw:1,0\" stopped: ALSA capture device \"hw:1,0\" was disconnected"
    );
}

/// The `null` PCM of alsa-lib's stock configuration: a real device path with no hardware.
#[test]
fn overruns_are_recovered_and_counted_and_a_lost_device_stops() {
    let mut source = AlsaSource::open("null", 2).expect("open the null PCM");
    assert_eq!(source.device(), "null");
    let first = source.next_chunk().expect("chunk from null");
    assert_eq!(first.samples.len(), 2 * AUDIO_FRAME_SAMPLES);

    for _ in 0..3 {
        let overrun = alsa::Error::new("snd_pcm_readi", libc::EPIPE);
        source.recover(overrun).expect("overrun recovered");
    }
    assert_eq!(source.overruns(), 3);
    let after = source.next_chunk().expect("capture resumes after overruns");
    assert_eq!(after.samples.len(), 2 * AUDIO_FRAME_SAMPLES);
    assert!(after.capture_instant >= first.capture_instant);

    let gone = alsa::Error::new("snd_pcm_readi", libc::ENODEV);
    let err = source.recover(gone).expect_err("a vanished device stops");
    let text = err.to_string();
    assert!(
        text.contains("\"null\"") && text.contains("disconnected"),
        "{text}"
    );
    // It stays stopped: the caller reopens instead.
    let again = source.next_chunk().expect_err("still stopped");
    assert!(again.to_string().contains("disconnected"), "{again}");
}
