//! Helpers for the load and soak tests: a streaming viewer, the daemon's memory, file
//! descriptors and tokio tasks, and polling them back to a baseline.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use webrtc::peer_connection::PeerConnection;

use super::client::{client, client_on, dial, h264, Client};
use super::{connect, send_text, Daemon, Ws};

/// A webrtc-rs viewer in a call with the daemon.
pub struct Viewer<P: PeerConnection> {
    pub ws: Ws,
    pub pc: P,
    pub client: Arc<Client>,
}

impl<P: PeerConnection> Viewer<P> {
    /// Video frames received so far.
    pub fn frames(&self) -> u64 {
        self.client.video_frames.load(Ordering::Relaxed)
    }

    /// Says bye and closes the peer (as the page's Hang up does).
    pub async fn hang_up(mut self) {
        send_text(&mut self.ws, r#"{"bye": {}}"#).await;
        let _ = self.pc.close().await;
        let _ = self.ws.close(None).await;
    }
}

/// Connects, dials with H.264 and waits until `frames` video frames arrived (panics after
/// 15 s, naming what arrived).
pub async fn viewer(daemon: &Daemon, frames: u64) -> Viewer<impl PeerConnection> {
    let (ws, _) = connect(&daemon.ws_url("")).await;
    dial_viewer(ws, frames).await
}

/// Dials on an open signaling socket and waits until `frames` video frames arrived.
pub async fn dial_viewer(ws: Ws, frames: u64) -> Viewer<impl PeerConnection> {
    dial_viewer_on(ws, frames, "127.0.0.1:0").await
}

/// [`dial_viewer`] with the client's UDP socket bound to `udp_addr`.
pub async fn dial_viewer_on(
    mut ws: Ws,
    frames: u64,
    udp_addr: &str,
) -> Viewer<impl PeerConnection> {
    let (pc, client, mut cands) = client_on(&[h264()], udp_addr).await;
    let answer = dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        client.video_frames.load(Ordering::Relaxed) >= frames
    })
    .await;
    let got = client.video_frames.load(Ordering::Relaxed);
    assert!(
        got >= frames,
        "viewer received {got} of {frames} video frames within 15 s; answer: {answer}"
    );
    Viewer { ws, pc, client }
}

/// A real receive-only H.264 + Opus offer from a webrtc-rs client (its peer is closed again).
pub async fn offer_sdp() -> String {
    let (pc, _client, _cands) = client(&[h264()]).await;
    let offer = pc.create_offer(None).await.expect("offer");
    let _ = pc.close().await;
    offer.sdp
}

/// The JSON text of an offer message.
pub fn offer_message(sdp: &str) -> String {
    json!({"sdp": {"type": "offer", "sdp": sdp}}).to_string()
}

/// The daemon's resident memory in KiB (VmRSS of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// GET /metrics (one scrape, so several values are read at the same moment).
pub async fn metrics_text(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect for /metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send /metrics request");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read /metrics");
    body
}

/// The value of metric `name` in a scrape.
pub fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// What a leak leaves behind: the daemon's open file descriptors and live tokio tasks,
/// from `peercam_open_fds` and `peercam_tasks` (both read in one scrape, which itself holds
/// one connection: the same in every reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub fds: u64,
    pub tasks: u64,
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} fds, {} tasks", self.fds, self.tasks)
    }
}

pub async fn resources(port: u16) -> Resources {
    let text = metrics_text(port).await;
    let get = |name| {
        value(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")) as u64
    };
    Resources {
        fds: get("peercam_open_fds"),
        tasks: get("peercam_tasks"),
    }
}

/// Resources once they stopped moving: three readings 300 ms apart that agree (at most 5 s;
/// then the last reading).
pub async fn steady_resources(port: u16) -> Resources {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = resources(port).await;
    let mut same = 0;
    while same < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = resources(port).await;
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Polls until the resources equal `baseline` (returns how long that took) or `timeout`
/// passes (panics naming both readings and `what` happened in between).
pub async fn back_to_baseline(
    port: u16,
    baseline: Resources,
    timeout: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let now = resources(port).await;
        if now == baseline {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "after {what}: {now} {timeout:?} later, baseline was {baseline} \
             (a leak of {} fds, {} tasks)",
            now.fds as i64 - baseline.fds as i64,
            now.tasks as i64 - baseline.tasks as i64,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The frames per second `client` receives over `window`.
pub async fn frame_rate(client: &Client, window: Duration) -> f64 {
    let before = client.video_frames.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = client.video_frames.load(Ordering::Relaxed);
    (after - before) as f64 / start.elapsed().as_secs_f64()
}

/// Samples the daemon's RSS every 100 ms until dropped; the peak so far is `peak_kib()`.
pub struct RssSampler {
    peak: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid)));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { peak, task }
    }

    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Runs the tests of one binary one at a time: they measure frame rates and leaks, which
/// another test's daemon on the same (2-core) machine would disturb. Hold the guard for the
/// whole test (a tokio mutex: held across awaits, not poisoned by a failed test).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
