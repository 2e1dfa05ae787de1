//! `AlsaSource` against a real alsa-lib, without sound hardware: the ALSA `file` plugin reads
//! a raw S16_LE file as if it were a microphone (see vm-testing.md §5). The plugin trusts the
//! application's rate and channel count, so it cannot stand in for a 44.1 kHz device: the
//! resampling and mixing path is covered by the unit tests in `src/capture/alsa/tests.rs`.
//! It is also not paced in real time, which the source must (and does) cope with.

use std::f64::consts::TAU;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use peercam::capture::alsa::{list_capture_devices, AlsaSource};
use peercam::capture::{AudioSource, CaptureError};
use peercam::media::AUDIO_FRAME_SAMPLES;

/// The tone in the fake microphone's file: distinctive, and 48 samples per cycle at 48 kHz.
const TONE_HZ: f64 = 1000.0;
const AMPLITUDE: f64 = 12000.0;
/// The file is longer than any test reads: past its end the plugin returns stale data.
const FILE_SECONDS: usize = 4;

/// Sample `n` of the tone.
fn tone(n: usize) -> i16 {
    (AMPLITUDE * (TAU * TONE_HZ * n as f64 / 48_000.0).sin()).round() as i16
}

/// Writes the tone file and an asoundrc defining `peercamtest`, and points alsa-lib at it.
/// Runs once per process, before any ALSA call (alsa-lib reads its configuration once).
fn setup() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let raw: Vec<u8> = (0..48_000 * FILE_SECONDS)
            .flat_map(|n| tone(n).to_le_bytes())
            .collect();
        let infile = dir.join("tone-1khz-48k-mono.s16le");
        std::fs::write(&infile, raw).expect("write tone");
        let rc = dir.join("asoundrc");
        std::fs::write(
            &rc,
            format!(
                "pcm.peercamtest {{\n    type file\n    slave.pcm \"null\"\n    file \"/dev/null\"\n    \
                 infile \"{}\"\n    format \"raw\"\n    hint {{ show on description \"peercam test tone\" }}\n}}\n",
                infile.display()
            ),
        )
        .expect("write asoundrc");
        // Edition 2021: set_var is safe; this runs before any test touches ALSA.
        std::env::set_var(
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", rc.display()),
        );
        dir
    })
}

#[test]
fn captures_the_file_tone_in_exact_20_ms_chunks() {
    setup();
    let mut source = AlsaSource::open("peercamtest", 1).expect("open the file-plugin PCM");
    assert_eq!(source.channels(), 1);
    assert_eq!(source.device_rate(), 48_000);
    assert_eq!(source.device_channels(), 1);
    assert!(
        source.describe().contains("peercamtest"),
        "{}",
        source.describe()
    );

    let mut samples = Vec::new();
    let mut last_instant = None;
    for _ in 0..50 {
        let chunk = source.next_chunk().expect("chunk");
        assert_eq!(chunk.channels, 1);
        assert_eq!(chunk.samples.len(), AUDIO_FRAME_SAMPLES);
        // Capture instants never go backwards and are never in the future.
        assert!(chunk.capture_instant <= Instant::now());
        if let Some(last) = last_instant {
            assert!(chunk.capture_instant >= last);
        }
        last_instant = Some(chunk.capture_instant);
        samples.extend(chunk.samples);
    }
    // 48 kHz mono device, mono chunks: no conversion, so 1 s of it equals the file exactly.
    let expected: Vec<i16> = (0..48_000).map(tone).collect();
    let mismatches = samples
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(mismatches, 0, "captured audio differs from the file");
    assert_eq!(source.overruns(), 0);
}

#[test]
fn stereo_chunks_from_the_file_device() {
    setup();
    // The plugin reads the mono file as interleaved stereo frames: chunk sizes and the
    // sample stream must still be exact.
    let mut source = AlsaSource::open("peercamtest", 2).expect("open stereo");
    assert_eq!(source.channels(), 2);
    let mut samples = Vec::new();
    for _ in 0..10 {
        let chunk = source.next_chunk().expect("chunk");
        assert_eq!(chunk.channels, 2);
        assert_eq!(chunk.samples.len(), 2 * AUDIO_FRAME_SAMPLES);
        samples.extend(chunk.samples);
    }
    let expected: Vec<i16> = (0..samples.len()).map(tone).collect();
    assert_eq!(samples, expected);
}

#[test]
fn nonexistent_devices_give_a_clear_error() {
    setup();
    for name in ["hw:9,0", "nosuchpcm"] {
        let Err(CaptureError::Stopped { reason, .. }) = AlsaSource::open(name, 1) else {
            panic!("opening {name} should fail");
        };
        assert!(
            reason.starts_with(&format!(
                "ALSA capture device \"{name}\" cannot be opened: "
            )),
            "{reason}"
        );
        assert!(reason.contains("arecord -l"), "{reason}");
    }
    let Err(err) = AlsaSource::open("bad\0name", 1) else {
        panic!("a NUL in the name must be rejected");
    };
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn the_test_pcm_is_listed_as_a_capture_device() {
    setup();
    let devices = list_capture_devices();
    let ours = devices
        .iter()
        .find(|d| d.name == "peercamtest")
        .unwrap_or_else(|| panic!("peercamtest missing from {devices:?}"));
    assert_eq!(ours.description, "peercam test tone");
}
