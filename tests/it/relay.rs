//! `peercam relay` and a device's `[relay]` link, each a real process on loopback: the relay
//! with a self-signed certificate (the device trusts it through `[relay] ca_file`), browsers
//! played by webrtc-rs clients over wss://.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::http::{connect_between, exchange};
use crate::common::probe::{dial_viewer, viewer};
use crate::common::{next_json, spawn, test_config, Daemon, Ws};

const SHOP_TOKEN: &str = "shop-token-0123456789";
const DOOR_TOKEN: &str = "door-token-0123456789";

/// A running `peercam relay`; killed on drop.
struct Relay {
    child: Child,
    port: u16,
    log: std::sync::mpsc::Receiver<String>,
    /// The relay's state directory (its self-signed certificate) and config.
    dir: PathBuf,
    tls: bool,
}

impl Relay {
    /// Starts a relay on `port` (0: any) with devices `shop` and `door`, state in `dir`.
    fn start(dir: &Path, port: u16, tls: bool, limits: &str) -> Relay {
        let config = format!(
            "[relay_server]\nlisten = \"127.0.0.1:{port}\"\ntls = \"{}\"\nstate_dir = \"{}\"\n\
             [[relay_server.devices]]\nname = \"shop\"\ntoken = \"{SHOP_TOKEN}\"\n\
             [[relay_server.devices]]\nname = \"door\"\ntoken = \"{DOOR_TOKEN}\"\n\
             [limits]\n{limits}\n",
            if tls { "self-signed" } else { "off" },
            dir.display()
        );
        let path = dir.join("relay.toml");
        std::fs::write(&path, config).expect("write relay config");
        let (child, log) = spawn(
            &["relay".as_ref(), "--config".as_ref(), path.as_os_str()],
            &[],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the relay did not log its address in time");
            if let Some(rest) = line.split("relay listening on ").nth(1) {
                let addr = rest.split('/').nth(2).expect("address");
                break addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        };
        Relay {
            child,
            port,
            log,
            dir: dir.to_owned(),
            tls,
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls").join("cert.pem")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The `[relay]` table of a device that dials this relay as `name` with `token`.
    fn device_table(&self, name: &str, token: &str) -> String {
        relay_table(self.port, self.tls, &self.dir, name, token)
    }

    /// A browser's signaling socket to device `name` from `source`; the first message.
    async fn browser(&self, source: IpAddr, name: &str) -> Result<(Ws, Value), String> {
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), connect_between(source, self.addr()))
                .await
                .map_err(|_| "connect timed out".to_owned())?;
        let scheme = if self.tls { "wss" } else { "ws" };
        let url = format!("{scheme}://localhost:{}/d/{name}/ws", self.port);
        let request = url.into_client_request().expect("request");
        let connector = self.tls.then(|| {
            tokio_tungstenite::Connector::Rustls(crate::common::http::tls_config(&self.cert()))
        });
        let upgrade =
            tokio_tungstenite::client_async_tls_with_config(request, tcp, None, connector);
        let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), upgrade)
            .await
            .map_err(|_| "upgrade timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let first = next_json(&mut ws).await;
        Ok((ws, first))
    }

    /// One line of the relay's `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let tcp = tokio::net::TcpStream::connect(self.addr())
            .await
            .expect("connect");
        let reply = if self.tls {
            let connector =
                tokio_rustls::TlsConnector::from(crate::common::http::tls_config(&self.cert()));
            let server = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let tls = connector.connect(server, tcp).await.expect("TLS");
            exchange(tls, "GET", "/metrics", &[], "").await
        } else {
            exchange(tcp, "GET", "/metrics", &[], "").await
        };
        reply
            .body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the relay's metrics:\n{}", reply.body))
    }

    /// Waits for a log line containing `needle`.
    fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the relay did not log `{needle}` within {timeout:?}"),
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[relay]` table of a device that dials the relay on `port` (state in `dir`) as
/// `name` with `token`.
fn relay_table(port: u16, tls: bool, dir: &Path, name: &str, token: &str) -> String {
    let (scheme, host) = if tls {
        ("wss", "localhost")
    } else {
        ("ws", "127.0.0.1")
    };
    let ca = if tls {
        format!(
            "ca_file = \"{}\"\n",
            dir.join("tls").join("cert.pem").display()
        )
    } else {
        String::new()
    };
    format!(
        "\n[relay]\nurl = \"{scheme}://{host}:{port}/link\"\ntoken = \"{token}\"\nname = \"{name}\"\n{ca}"
    )
}

/// A device dialling `relay` as `name` with `token`.
fn device(relay: &Relay, name: &str, token: &str) -> Daemon {
    Daemon::start(&(test_config("", "") + &relay.device_table(name, token)))
}

fn registered(device: &Daemon) {
    device.wait_for_log("relay: registered as", Duration::from_secs(10));
}

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_dials_through_the_relay_while_the_local_page_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::start(dir.path(), 0, true, "");
    let device = device(&relay, "shop", SHOP_TOKEN);
    registered(&device);

    let (ws, hello) = relay.browser(LOCALHOST, "shop").await.expect("browser");
    assert_eq!(hello["hello"]["mode"], "viewer", "{hello}");
    let relayed = dial_viewer(ws, 30).await;
    // The device's own /ws at the same time.
    let local = viewer(&device, 30).await;
    assert!(relayed.frames() >= 30 && local.frames() >= 30);
    device.wait_for_log("relayed viewer 127.0.0.1", Duration::from_secs(5));

    // A device that is not connected: a clear error code, and the socket closes.
    let (_ws, error) = relay.browser(LOCALHOST, "door").await.expect("browser");
    assert_eq!(error["error"]["code"], "device_offline", "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("camera 'door' is offline"), "{message}");
    assert_eq!(
        relay
            .metric("peercam_relay_browsers_refused_total{reason=\"device_offline\"}")
            .await,
        1.0
    );
    assert_eq!(relay.metric("peercam_relay_devices_online").await, 1.0);
    relayed.hang_up().await;
    local.hang_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_a_relay_restart_and_the_device_registers_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut relay = Relay::start(dir.path(), 0, true, "");
    let port = relay.port;
    let device = device(&relay, "shop", SHOP_TOKEN);
    registered(&device);
    let (ws, _) = relay.browser(LOCALHOST, "shop").await.expect("browser");
    let call = dial_viewer(ws, 30).await;

    // Kill the relay (no goodbye), start it again on the same port with the same certificate.
    let _ = relay.child.kill();
    let _ = relay.child.wait();
    let killed = Instant::now();
    device.wait_for_log("retrying", Duration::from_secs(5));
    let before = call.frames();
    drop(relay);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relay = Relay::start(dir.path(), port, true, "");
    device.wait_for_log("relay: registered as 'shop'", Duration::from_secs(10));
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "registered again after {took:?}"
    );

    // The call never hung up: frames keep coming.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = call.frames();
    assert!(
        after >= before + 30,
        "{before} frames before the restart, {after} 2 s after it came back"
    );
    // And the relay serves new calls.
    let (ws, hello) = relay.browser(LOCALHOST, "shop").await.expect("browser");
    assert!(hello.get("hello").is_some(), "{hello}");
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_logged_once_and_retried_with_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::start(dir.path(), 0, true, "");
    let device = device(&relay, "shop", "not-the-token-0123456789");
    let line = device.wait_for_log("relay:", Duration::from_secs(10));
    let line = if line.contains("connecting to") {
        device.wait_for_log("relay:", Duration::from_secs(10))
    } else {
        line
    };
    assert!(
        line.contains("the relay refused this device (bad_token): wrong token"),
        "{line}"
    );
    let start = Instant::now();
    let mut repeated = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(line) = device.log.recv_timeout(Duration::from_millis(100)) {
            if line.contains("relay") {
                repeated.push(line);
            }
        }
    }
    assert!(repeated.is_empty(), "logged again: {repeated:?}");
    // 0.5 s, 1 s, 2 s … apart: about four attempts in 5.5 s, not hundreds.
    let refused = relay
        .metric("peercam_relay_refused_total{reason=\"bad_token\"}")
        .await;
    assert!((2.0..=6.0).contains(&refused), "{refused} attempts");
    // A browser dialling it through the relay is told why the camera is offline.
    let (_ws, error) = relay
        .browser(IpAddr::from([127, 0, 0, 1]), "shop")
        .await
        .expect("browser");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("camera 'shop' is offline: its last attempt, ")
            && message.contains("s ago from 127.0.0.1, was refused: its token is wrong"),
        "{error}"
    );
    // The local page is unaffected.
    let local = viewer(&device, 10).await;
    local.hang_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_and_another_names_token_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::start(dir.path(), 0, true, "");
    let first = device(&relay, "shop", SHOP_TOKEN);
    registered(&first);
    let second = device(&relay, "shop", SHOP_TOKEN);
    let line = second.wait_for_log("refused", Duration::from_secs(10));
    assert!(
        line.contains("(name_taken): a device named 'shop' is connected already"),
        "{line}"
    );
    let third = device(&relay, "door", SHOP_TOKEN);
    let line = third.wait_for_log("refused", Duration::from_secs(10));
    assert!(
        line.contains("(bad_token)") && line.contains("one name"),
        "{line}"
    );
    // The first keeps its name and its browsers.
    let (ws, hello) = relay.browser(LOCALHOST, "shop").await.expect("browser");
    assert!(hello.get("hello").is_some(), "{hello}");
    drop(ws);
    assert!(
        relay
            .metric("peercam_relay_refused_total{reason=\"name_taken\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_started_while_the_relay_is_down_registers_when_it_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Once, for the certificate and a port; then down.
    let first = Relay::start(dir.path(), 0, true, "");
    let port = first.port;
    drop(first);
    let table = relay_table(port, true, dir.path(), "shop", SHOP_TOKEN);
    let device = Daemon::start(&(test_config("", "") + &table));
    let line = device.wait_for_log("cannot connect", Duration::from_secs(10));
    assert!(line.contains("is the relay running?"), "{line}");
    // The local page works meanwhile.
    let local = viewer(&device, 10).await;
    local.hang_up().await;
    let relay = Relay::start(dir.path(), port, true, "");
    registered(&device);
    relay.wait_for_log("device 'shop' registered", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_leaves_room_for_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Plain ws:// on loopback (allowed there), 4 connections per address.
    let relay = Relay::start(dir.path(), 0, false, "connections_per_address = 4\n");
    let device = device(&relay, "shop", SHOP_TOKEN);
    registered(&device);
    let flooder: IpAddr = "127.0.0.3".parse().expect("addr");
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        match relay.browser(flooder, "shop").await {
            Ok((ws, hello)) if hello.get("hello").is_some() => open.push(ws),
            _ => refused += 1,
        }
    }
    assert_eq!(open.len(), 4, "{refused} refused");
    let other: IpAddr = "127.0.0.2".parse().expect("addr");
    let (ws, hello) = relay.browser(other, "shop").await.expect("another address");
    assert!(hello.get("hello").is_some(), "{hello}");
    let call = dial_viewer(ws, 10).await;
    call.hang_up().await;
}

/// A device played by a plain WebSocket on `relay`'s `/link`: registers as `name` with
/// `token`; the relay's answer.
async fn fake_link(relay: &Relay, name: &str, token: &str) -> (Ws, Value) {
    use futures_util::SinkExt;
    assert!(!relay.tls, "fake_link speaks ws://");
    let url = format!("ws://127.0.0.1:{}/link", relay.port);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("link upgrade timed out")
    .expect("link upgrade");
    let register = serde_json::json!({"register": {"version": 1, "name": name, "token": token}});
    ws.send(register.to_string().into())
        .await
        .expect("send register");
    let answer = next_json(&mut ws).await;
    (ws, answer)
}

/// Rewrites `relay`'s config file with `edit` and sends it SIGHUP; the reload's line.
fn reload(relay: &Relay, edit: impl FnOnce(String) -> String) -> String {
    let path = relay.dir.join("relay.toml");
    let text = std::fs::read_to_string(&path).expect("read relay config");
    std::fs::write(&path, edit(text)).expect("write relay config");
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(relay.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
    relay.wait_for_log("reload:", Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_devices_and_keeps_the_running_config_on_a_bad_file() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut relay = Relay::start(dir.path(), 0, false, "");
    const BARN_TOKEN: &str = "barn-token-0123456789";
    let (_ws, answer) = fake_link(&relay, "barn", BARN_TOKEN).await;
    assert_eq!(answer["refused"]["code"], "bad_token", "{answer}");
    let (mut door, answer) = fake_link(&relay, "door", DOOR_TOKEN).await;
    assert_eq!(answer["registered"]["name"], "door", "{answer}");
    let (_shop, answer) = fake_link(&relay, "shop", SHOP_TOKEN).await;
    assert_eq!(answer["registered"]["name"], "shop", "{answer}");

    // barn added, door removed, shop's token changed, a limit changed (needs a restart).
    let door_table =
        format!("[[relay_server.devices]]\nname = \"door\"\ntoken = \"{DOOR_TOKEN}\"\n");
    let warning = reload(&relay, |text| {
        text.replace(&door_table, "")
            .replace(SHOP_TOKEN, "shop-token-changed-0123")
            .replace("[limits]\n", "[limits]\nbrowsers_per_device = 3\n")
            + &format!("[[relay_server.devices]]\nname = \"barn\"\ntoken = \"{BARN_TOKEN}\"\n")
            + "[log]\nlevel = \"debug\"\n"
    });
    assert!(
        warning.contains("reload: [limits] changed in")
            && warning.contains("apply after a restart"),
        "{warning}"
    );
    let applied = relay.wait_for_log("reload:", Duration::from_secs(5));
    assert!(
        applied.contains(
            "applied (devices added: barn; devices removed: door (1 link(s) closed); \
             new token for: shop (needed from its next registration); [log] level debug)"
        ),
        "{applied}"
    );
    // The removed device's link is closed; the one whose token changed stays up.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match door.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None => break,
                Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "door's link stayed open after the reload");
    let (_barn, answer) = fake_link(&relay, "barn", BARN_TOKEN).await;
    assert_eq!(answer["registered"]["name"], "barn", "{answer}");
    let (_ws, answer) = fake_link(&relay, "door", DOOR_TOKEN).await;
    assert_eq!(answer["refused"]["code"], "bad_token", "{answer}");
    assert_eq!(relay.metric("peercam_relay_devices_online").await, 2.0);
    assert_eq!(relay.metric("peercam_relay_devices_configured").await, 2.0);

    // A file that does not load keeps the running configuration.
    let line = reload(&relay, |text| text + "[limits]\nmax_viewers = 3\n");
    assert!(
        line.contains("reload: ") && line.contains("keeping the running configuration"),
        "{line}"
    );
    assert!(
        relay.child.try_wait().expect("try_wait").is_none(),
        "the relay exited on SIGHUP"
    );
    assert_eq!(relay.metric("peercam_relay_devices_configured").await, 2.0);
    let (_ws, answer) = fake_link(&relay, "barn", BARN_TOKEN).await;
    assert_eq!(answer["refused"]["code"], "name_taken", "{answer}");
    // The fixed file: the limit still differs from the running one; nothing else changed.
    let line = reload(&relay, |text| {
        text.replace("[limits]\nmax_viewers = 3\n", "")
    });
    assert!(line.contains("reload: [limits] changed in"), "{line}");
    let line = relay.wait_for_log("reload:", Duration::from_secs(5));
    assert!(
        line.contains("applied (nothing that applies without a restart changed)"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_browser_message_closes_with_1009_and_is_counted() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::start(dir.path(), 0, false, "max_message_bytes = 1024\n");
    let (_shop, answer) = fake_link(&relay, "shop", SHOP_TOKEN).await;
    assert_eq!(answer["registered"]["name"], "shop", "{answer}");
    let url = format!("ws://127.0.0.1:{}/d/shop/ws", relay.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("browser upgrade");
    // 4 × max_message_bytes is the most a browser may send in one message.
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(4 * 1024));
    ws.send(Message::text(big)).await.expect("send");
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        }
    })
    .await
    .expect("the relay did not close the socket");
    assert_eq!(close, Some(1009));
    assert_eq!(
        relay
            .metric("peercam_relay_browsers_closed_total{reason=\"message_too_big\"}")
            .await,
        1.0
    );
    assert_eq!(
        relay
            .metric("peercam_relay_browsers_closed_total{reason=\"not_utf8\"}")
            .await,
        0.0
    );
}
