//! Shared helpers for the integration tests: start the real `peercam` binary with a config,
//! find its port from the log, talk to it over WebSocket.
#![allow(dead_code)]

pub mod cli;
pub mod client;
pub mod client_peer;
pub mod http;
pub mod netns;
pub mod probe;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A running daemon; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: mpsc::Receiver<String>,
    /// The config file the daemon was started with (rewrite it and [`Daemon::signal`] HUP).
    pub config_path: std::path::PathBuf,
    /// The lines logged up to and including the listening address (read by `start`).
    pub startup_log: Vec<String>,
    _dir: tempfile::TempDir,
}

/// `[limits]` lines for tests where one address plays many clients (load, soak): the
/// per-address caps are lifted so that the global ones are what is tested.
pub const MANY_CLIENTS: &str = "connections_per_address = 4096\npending_dials_per_address = 64\n";

/// A config for tests: loopback only, test sources, the given extra TOML appended per table.
pub fn test_config(video_extra: &str, limits_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[video]
source = "test"
width = 320
height = 240
fps = 30
{video_extra}

[audio]
source = "test"

[webrtc]
ip_addresses = ["127.0.0.1"]
udp_port = 0
tcp_port = 0
udp_port_min = 0
udp_port_max = 0

[limits]
{limits_extra}

[log]
level = "info"
"#
    )
}

/// Starts the real `peercam` binary with `args` and `env` (outside systemd: no journal, no
/// notification socket; `RUST_LOG=info`). Its stderr lines arrive on the receiver, each also
/// echoed to the test's own stderr (shown when a test fails).
pub fn spawn(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    spawn_in(None, args, env)
}

/// [`spawn`] inside the network namespace `netns` (`ip netns exec`, which execs peercam:
/// the child's pid is peercam's).
pub fn spawn_in(
    netns: Option<&str>,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<String>) {
    let peercam = env!("CARGO_BIN_EXE_peercam");
    let mut command = match netns {
        None => Command::new(peercam),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, peercam]);
            c
        }
    };
    let mut child = command
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peercam");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[peercam] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

impl Daemon {
    /// Starts `peercam --config <file>` and waits until it logs its listening address.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with_env(config, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(None, config, env)
    }

    /// [`Daemon::start_with_env`] inside the network namespace `netns` (see [`netns::Link`]).
    pub fn start_in(netns: Option<&str>, config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("peercam.toml");
        std::fs::write(&path, config).expect("write config");
        let (child, rx) = spawn_in(netns, &["--config".as_ref(), path.as_os_str()], env);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut startup_log = Vec::new();
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("peercam did not log its listening address in time");
            startup_log.push(line.clone());
            // "peercam listening on ADDR:PORT (http): open …".
            let listening = line
                .split("peercam listening on ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next());
            if let Some(addr) = listening {
                let port = addr
                    .parse::<std::net::SocketAddr>()
                    .expect("address in the listening line")
                    .port();
                break port;
            }
        };
        Daemon {
            child,
            port,
            log: rx,
            config_path: path,
            startup_log,
            _dir: dir,
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) to the daemon.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for a log line containing `needle` and returns it; panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("peercam did not log `{needle}` within {timeout:?}"),
            }
        }
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws{query}", self.port)
    }

    /// Sends SIGTERM and returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let pid = self.child.id();
        let start = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = start + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            assert!(Instant::now() < deadline, "peercam did not exit within 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and returns the socket and the server's hello.
pub async fn connect(url: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket connect");
    let hello = next_json(&mut ws).await;
    (ws, hello)
}

/// The next JSON text message (panics after 10 s). The viewer counts the daemon pushes
/// whenever a call starts or ends elsewhere (`{"viewers": …}`) are skipped.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("socket closed")
            .expect("socket error");
        if let WsMessage::Text(text) = msg {
            let value: Value = serde_json::from_str(&text).expect("server sent invalid JSON");
            if value.get("viewers").is_none() {
                return value;
            }
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: impl Into<String>) {
    ws.send(WsMessage::Text(text.into().into()))
        .await
        .expect("send");
}

/// Sends `text` and returns the error reply's (code, message).
pub async fn expect_error(ws: &mut Ws, text: impl Into<String>) -> (String, String) {
    send_text(ws, text).await;
    let reply = next_json(ws).await;
    let err = reply
        .get("error")
        .unwrap_or_else(|| panic!("expected an error reply, got {reply}"));
    (
        err["code"].as_str().unwrap_or_default().to_owned(),
        err["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Reads until the server closes the socket; returns the close code (None: closed without a
/// close frame). Panics if the socket is still open after `wait`, naming what arrived.
pub async fn closed_within(ws: &mut Ws, wait: Duration) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(other))) => seen.push(other.to_string()),
            Ok(Some(Err(e))) => {
                eprintln!("closed_within: socket error {e}");
                return None;
            }
            Ok(None) => return None,
            Err(_) => panic!("socket still open {wait:?} later; received {seen:?}"),
        }
    }
}
