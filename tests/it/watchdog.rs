//! The systemd protocol without systemd: the test plays the service manager's notification
//! socket (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) and checks READY=1, RELOADING=1 and that
//! WATCHDOG=1 follows the media pipeline's heartbeat. The stuck thread is real: the
//! microphone is the ALSA `file` plugin reading a FIFO, and when the test stops writing to
//! the FIFO the audio thread blocks inside alsa-lib, exactly like a hung driver.

use crate::common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Daemon;

/// Messages from the daemon on the fake notification socket, waiting up to `timeout` for one
/// that contains `needle`; returns every message read until then.
fn wait_for_message(socket: &UnixDatagram, needle: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = text.contains(needle);
                seen.push(text);
                if found {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no notification with `{needle}` within {timeout:?}; got {seen:?}");
}

/// Every message that arrives within `window`.
fn messages_during(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return seen;
        }
        socket.set_read_timeout(Some(left)).expect("timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

/// Feeds 20 ms of silence-free tone into the FIFO every 20 ms while `feeding` is set; keeps
/// the FIFO open (so the reader blocks instead of seeing end-of-file) until `done`.
fn feeder(fifo: &Path, feeding: Arc<AtomicBool>, done: Arc<AtomicBool>) {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .expect("open FIFO for writing");
    let chunk: Vec<u8> = (0..960)
        .flat_map(|n| {
            ((((n % 48) as f64 / 48.0 * std::f64::consts::TAU).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u32;
    while !done.load(Ordering::Relaxed) {
        if feeding.load(Ordering::Relaxed) && out.write_all(&chunk).is_err() {
            return;
        }
        sent += 1;
        let next = start + Duration::from_millis(20) * sent;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

#[test]
fn watchdog_pings_follow_the_heartbeat_and_stop_when_a_media_thread_hangs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("mic.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let rc = dir.path().join("asoundrc");
    std::fs::write(
        &rc,
        format!(
            "pcm.fifomic {{\n type file\n slave.pcm \"null\"\n file \"/dev/null\"\n infile \"{}\"\n format \"raw\"\n}}\n",
            fifo.display()
        ),
    )
    .expect("asoundrc");
    let notify_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).expect("bind notify socket");

    let feeding = Arc::new(AtomicBool::new(true));
    let done = Arc::new(AtomicBool::new(false));
    let feed = {
        let (fifo, feeding, done) = (fifo.clone(), feeding.clone(), done.clone());
        std::thread::spawn(move || feeder(&fifo, feeding, done))
    };

    let config = common::test_config("codecs = [\"h264\"]", "").replace(
        "[audio]\nsource = \"test\"",
        "[audio]\nsource = \"fifomic\"\nchannels = 1",
    );
    let alsa_path = format!("/usr/share/alsa/alsa.conf:{}", rc.display());
    let notify = notify_path.display().to_string();
    let daemon = Daemon::start_with_env(
        &config,
        &[
            ("ALSA_CONFIG_PATH", alsa_path.as_str()),
            ("NOTIFY_SOCKET", notify.as_str()),
            ("WATCHDOG_USEC", "3000000"),
        ],
    );

    // READY=1 (with a status line) once frames flow, then regular pings.
    let ready = wait_for_message(&socket, "READY=1", Duration::from_secs(10));
    let ready = ready.last().expect("ready");
    assert!(ready.contains("STATUS=open http://127.0.0.1:"), "{ready}");
    wait_for_message(&socket, "WATCHDOG=1", Duration::from_secs(3));
    wait_for_message(&socket, "WATCHDOG=1", Duration::from_secs(3));

    // The microphone stops delivering: the audio thread blocks in alsa-lib.
    feeding.store(false, Ordering::Relaxed);
    let stuck = daemon.wait_for_log("made no progress", Duration::from_secs(8));
    assert!(stuck.contains("peercam-audio"), "{stuck}");
    assert!(
        stuck.contains("not pinging the systemd watchdog"),
        "{stuck}"
    );
    let _ = messages_during(&socket, Duration::from_millis(50)); // a ping already in flight
    let quiet = messages_during(&socket, Duration::from_millis(3500));
    assert!(
        !quiet.iter().any(|m| m.contains("WATCHDOG=1")),
        "pinged while the audio thread was stuck: {quiet:?}"
    );

    // It comes back: pings resume (under systemd the 3 s would have restarted the service).
    feeding.store(true, Ordering::Relaxed);
    daemon.wait_for_log("make progress again", Duration::from_secs(5));
    wait_for_message(&socket, "WATCHDOG=1", Duration::from_secs(3));

    // A reload is announced and completed.
    daemon.signal("HUP");
    let reload = wait_for_message(&socket, "RELOADING=1", Duration::from_secs(5));
    assert!(
        reload.last().is_some_and(|m| m.contains("MONOTONIC_USEC=")),
        "{reload:?}"
    );
    wait_for_message(&socket, "READY=1", Duration::from_secs(5));

    drop(daemon);
    done.store(true, Ordering::Relaxed);
    let _ = feed.join();
}
