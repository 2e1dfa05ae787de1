//! WHEP and WHIP against an independent WebRTC stack: aiortc from PyPI (ICE, DTLS, SRTP, RTP
//! depacketizers and FFmpeg's decoders that share no code with peercam or webrtc-rs), run as
//! child processes from `tests/interop/` (see its README). The first test to need it makes
//! the venv (about 8 s cold, nothing when warm).

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::probe::value;
use common::Daemon;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

/// The venv's python (tests/interop/setup.sh, once per test binary).
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("bash")
            .arg(interop_dir().join("setup.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/interop/setup.sh");
        assert!(out.status.success(), "tests/interop/setup.sh failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("the python path").trim())
    })
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Runs `whep_client.py` with `args` (bounded: `--timeout` plus the DELETE and close); its
/// exit code, its JSON line and its stderr.
async fn whep_client(args: &[&str]) -> (i32, Value, String) {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(interop_dir().join("whep_client.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(45), command.output())
        .await
        .expect("whep_client.py finished within 45 s")
        .expect("run whep_client.py");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line from whep_client.py; stderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// aiortc pulls the stream over WHEP with the password as a bearer token: it decodes 60
/// H.264 frames at the configured size and Opus audio, then DELETEs its session. A wrong
/// token gets 401. AV1: aiortc 1.16 has no AV1 (VP8 and H.264 only); the client says so
/// before any request, which this test checks, so the day aiortc gains it the test fails and
/// asks for the AV1 run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_pulls_h264_and_opus_over_whep_and_deletes() {
    let config = common::test_config("", "").replace(
        "[server]\n",
        &format!("[server]\npassword = \"{PASSWORD}\"\n"),
    );
    let daemon = Daemon::start(&config);
    let url = format!("http://127.0.0.1:{}/whep", daemon.port);
    let base = [
        "--url",
        &url,
        "--codec",
        "h264",
        "--width",
        "320",
        "--height",
        "240",
        "--frames",
        "60",
        "--timeout",
        "20",
    ];
    let mut args = base.to_vec();
    args.extend(["--token", PASSWORD]);
    let (code, json, stderr) = whep_client(&args).await;
    eprintln!("aiortc WHEP: {json}");
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["ok"], true);
    assert!(json["video_frames"].as_u64() >= Some(60), "{json}");
    assert_eq!(
        (json["width"].as_u64(), json["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(json["size_mismatches"], 0);
    assert_eq!(json["video_codec"], "video/H264");
    assert_eq!(json["audio_codec"], "audio/opus");
    assert!(json["audio_frames"].as_u64() >= Some(10), "{json}");
    assert_eq!(json["answer_end_of_candidates"], true);
    assert_eq!(json["delete_status"], 200);
    daemon.wait_for_log("WHEP viewer 127.0.0.1", Duration::from_secs(1));

    // The wrong token: 401 and nothing built.
    let mut args = base.to_vec();
    args.extend(["--token", "wrong password", "--timeout", "5"]);
    let (code, json, _) = whep_client(&args).await;
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["http_status"], 401, "{json}");

    // AV1 is not in aiortc 1.16: exit 3 before any request.
    let mut args = base.to_vec();
    args.extend(["--token", PASSWORD]);
    args[3] = "av1";
    let (code, json, _) = whep_client(&args).await;
    assert_eq!(
        code, 3,
        "aiortc can decode AV1 now: assert the AV1 run instead. {json}"
    );

    let metrics = metrics_text_with(daemon.port).await;
    assert_eq!(
        value(&metrics, "peercam_whep_sessions"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "peercam_whep_sessions_total"),
        Some(1.0),
        "{metrics}"
    );
}

/// `/metrics` with the password.
async fn metrics_text_with(port: u16) -> String {
    let bearer = format!("Bearer {PASSWORD}");
    let reply =
        common::http::http(port, "GET", "/metrics", &[("Authorization", &bearer)], "").await;
    assert_eq!(reply.status, 200);
    reply.body
}

/// `whip_server.py` running as a child; killed on drop.
struct WhipServer {
    child: std::process::Child,
    port: u16,
}

impl WhipServer {
    /// Starts it on `port` (0: any) with `token`; waits for its "listening" line.
    fn start(port: u16, token: &str) -> WhipServer {
        use std::io::BufRead;
        let port_arg = port.to_string();
        let mut child = Command::new(python())
            .arg(interop_dir().join("whip_server.py"))
            .args([
                "--port",
                &port_arg,
                "--status-interval",
                "0",
                "--token",
                token,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start whip_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the listening line");
        let json: Value = serde_json::from_str(&line).expect("JSON listening line");
        let port = json["listening"].as_u64().expect("port") as u16;
        WhipServer { child, port }
    }

    /// Its `/stats`.
    async fn stats(&self) -> Value {
        let reply = common::http::http(self.port, "GET", "/stats", &[], "").await;
        serde_json::from_str(&reply.body).unwrap_or(Value::Null)
    }

    /// Polls `/stats` until `done` holds (panics after `wait`, with the last stats).
    async fn wait_for(&self, what: &str, wait: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let until = std::time::Instant::now() + wait;
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                std::time::Instant::now() < until,
                "{what} within {wait:?}; the server's stats: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for WhipServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aiortc as a WHIP server: peercam publishes to it (bearer token), and aiortc decodes the
/// H.264 frames at the configured size and the Opus audio. The server is killed mid-stream
/// and started again on its port: peercam publishes again within 10 s, logging the episode
/// once. A stop DELETEs the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_receives_the_published_stream_and_peercam_comes_back_after_a_restart() {
    let server = WhipServer::start(0, "whip-token");
    let config = format!(
        "{}\n[[publish]]\nurl = \"http://127.0.0.1:{}/whip\"\ntoken = \"whip-token\"\n",
        common::test_config("", ""),
        server.port
    );
    let mut daemon = Daemon::start(&config);
    let live = |s: &Value| {
        let last = &s["last_session"];
        last["video_frames"].as_u64() >= Some(60)
            && last["audio_frames"].as_u64() >= Some(10)
            && last["width"] == 320
            && last["height"] == 240
    };
    let stats = server
        .wait_for(
            "60 frames decoded from the published stream",
            Duration::from_secs(20),
            live,
        )
        .await;
    eprintln!("aiortc WHIP server: {stats}");
    assert_eq!(
        stats["last_session"]["video_codec"], "video/H264",
        "{stats}"
    );
    daemon.wait_for_log("publish: live at", Duration::from_secs(5));
    let metrics = common::probe::metrics_text(daemon.port).await;
    let target = format!("{{target=\"http://127.0.0.1:{}/whip\"}}", server.port);
    assert_eq!(
        value(&metrics, &format!("peercam_publish_state{target}")),
        Some(4.0),
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            &format!("peercam_publish_sent_bytes_total{target}")
        ) > Some(10_000.0),
        "{metrics}"
    );

    // The server dies mid-stream and comes back on the same port.
    let port = server.port;
    drop(server);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = std::time::Instant::now();
    let server = WhipServer::start(port, "whip-token");
    let stats = server
        .wait_for("the stream published again", Duration::from_secs(10), |s| {
            s["last_session"]["video_frames"].as_u64() >= Some(30)
        })
        .await;
    eprintln!(
        "republished and 30 frames decoded {} ms after the server came back",
        restarted.elapsed().as_millis()
    );
    assert_eq!(stats["last_session"]["width"], 320);
    daemon.wait_for_log("trying again in", Duration::from_secs(1));
    daemon.wait_for_log("publish: live at", Duration::from_secs(5));
    let metrics = common::probe::metrics_text(daemon.port).await;
    assert!(
        value(
            &metrics,
            &format!("peercam_publish_reconnects_total{target}")
        ) >= Some(1.0),
        "{metrics}"
    );

    // A stop deletes the session.
    let (status, _) = daemon.terminate();
    assert!(status.success());
    let stats = server.stats().await;
    assert!(stats["deletes"].as_u64() >= Some(1), "{stats}");
}

/// Answers every request on a loopback port with `307 Temporary Redirect` to `to` (a WHIP
/// endpoint moved elsewhere); the port.
async fn redirector(to: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                // Read the head and the body it announces, then redirect.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
                    else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let reply = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

/// A WHIP endpoint that redirects (307) is followed to the aiortc server; a reload that
/// points the target at another server ends the first session (DELETE) and publishes to the
/// new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peercam_follows_a_whip_redirect_and_a_reload_moves_the_stream() {
    let first = WhipServer::start(0, "t");
    let moved = redirector(format!("http://127.0.0.1:{}/whip", first.port)).await;
    let publish = |port: u16| {
        format!(
            "{}\n[[publish]]\nurl = \"http://127.0.0.1:{port}/whip\"\ntoken = \"t\"\n",
            common::test_config("", "")
        )
    };
    let daemon = Daemon::start(&publish(moved));
    let flowing = |s: &Value| s["last_session"]["video_frames"].as_u64() >= Some(30);
    first
        .wait_for(
            "the stream, through the redirect",
            Duration::from_secs(20),
            flowing,
        )
        .await;

    let second = WhipServer::start(0, "t");
    std::fs::write(&daemon.config_path, publish(second.port)).expect("rewrite the config");
    daemon.signal("HUP");
    daemon.wait_for_log("[[publish]] changed", Duration::from_secs(5));
    second
        .wait_for(
            "the stream at the new target",
            Duration::from_secs(20),
            flowing,
        )
        .await;
    first
        .wait_for("the first session deleted", Duration::from_secs(5), |s| {
            s["deletes"].as_u64() >= Some(1)
        })
        .await;
}

/// A STUN server on loopback that answers Binding requests only after `delay` (RFC 8489:
/// a Binding success response with XOR-MAPPED-ADDRESS): a server-reflexive candidate that
/// comes after the offer went out. The port.
async fn slow_stun_server(delay: Duration) -> u16 {
    let socket = std::sync::Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let port = socket.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            // A Binding request: type 0x0001, the magic cookie, a 12-byte transaction id.
            if n < 20 || buf[0..2] != [0x00, 0x01] || buf[4..8] != [0x21, 0x12, 0xA4, 0x42] {
                continue;
            }
            let transaction: [u8; 12] = buf[8..20].try_into().expect("12 bytes");
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let std::net::SocketAddr::V4(v4) = from else {
                    return;
                };
                let mut reply = vec![0x01, 0x01, 0x00, 12, 0x21, 0x12, 0xA4, 0x42];
                reply.extend_from_slice(&transaction);
                // XOR-MAPPED-ADDRESS: IPv4, port and address XORed with the cookie.
                reply.extend_from_slice(&[0x00, 0x20, 0x00, 8, 0x00, 0x01]);
                reply.extend_from_slice(&(v4.port() ^ 0x2112).to_be_bytes());
                let address = u32::from(*v4.ip()) ^ 0x2112_A442;
                reply.extend_from_slice(&address.to_be_bytes());
                let _ = socket.send_to(&reply, from).await;
            });
        }
    });
    port
}

/// A candidate found after the offer went out (a STUN server that answers after 3 s, later
/// than the 2 s the offer waits) is trickled to the WHIP server by PATCH, since its 201 said
/// `Accept-Patch: application/trickle-ice-sdpfrag`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_candidate_is_trickled_to_the_whip_server_by_patch() {
    let server = WhipServer::start(0, "t");
    let stun = slow_stun_server(Duration::from_secs(3)).await;
    let config = format!(
        "{}\n[[publish]]\nurl = \"http://127.0.0.1:{}/whip\"\ntoken = \"t\"\n",
        common::test_config("", "").replace(
            "[webrtc]\n",
            &format!("[webrtc]\nice_servers = [{{ urls = [\"stun:127.0.0.1:{stun}\"] }}]\n"),
        ),
        server.port
    );
    let _daemon = Daemon::start(&config);
    let stats = server
        .wait_for(
            "a PATCH with the late candidate",
            Duration::from_secs(15),
            |s| {
                s["trickled_candidates"].as_u64() >= Some(1)
                    && s["last_session"]["video_frames"].as_u64() >= Some(30)
            },
        )
        .await;
    assert_eq!(stats["rejected"], serde_json::json!({}), "{stats}");
}
