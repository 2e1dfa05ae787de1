//! Security end to end against the real daemon: the password and its session, the login
//! rate limit, HTTPS with a self-signed certificate, the WebSocket Origin check, and each
//! `[limits]` key (connections, pending dials, dials per minute, ICE deadline, idle sockets).

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{connect_between, exchange, http, Reply};
use common::probe::{metrics_text, offer_message, offer_sdp, value};
use common::{connect, next_json, send_text, Daemon};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const PASSWORD: &str = "correct horse battery";

/// A config with a password (and `extra` appended to `[server]`).
fn protected(server_extra: &str, limits_extra: &str) -> String {
    common::test_config("", limits_extra).replace(
        "[server]\n",
        &format!("[server]\npassword = \"{PASSWORD}\"\n{server_extra}\n"),
    )
}

/// A TCP connection to the daemon from another loopback address (a second machine on the
/// LAN, as far as per-address limits can tell).
async fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    connect_between(
        Ipv4Addr::from(source).into(),
        (Ipv4Addr::LOCALHOST, port).into(),
    )
    .await
}

/// Logs in and returns the `peercam_session=...` pair to send as a Cookie.
async fn log_in(port: u16) -> String {
    let reply = http(
        port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("password={}", PASSWORD.replace(' ', "+")),
    )
    .await;
    assert_eq!(reply.status, 303, "login: {}", reply.body);
    assert_eq!(reply.header("location"), Some("./"));
    let cookie = reply.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().expect("pair").to_owned()
}

/// A WebSocket upgrade request for `url` with these extra headers.
fn ws_request(
    url: &str,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    request
}

/// A WebSocket upgrade with these extra headers; the HTTP status when it is refused.
async fn ws_with(port: u16, headers: &[(&str, &str)]) -> Result<(common::Ws, Value), u16> {
    let request = ws_request(&format!("ws://127.0.0.1:{port}/ws"), headers);
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, _)) => {
            let hello = next_json(&mut ws).await;
            Ok((ws, hello))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("WebSocket upgrade failed oddly: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protects_every_endpoint_and_the_login_opens_a_session() {
    let daemon = Daemon::start(&protected("", ""));
    let port = daemon.port;

    // Without a session: the login form, and 401 with nothing else everywhere else.
    let page = http(port, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
    assert!(
        !page.body.contains("app.js"),
        "the login page must not load the app"
    );
    assert_eq!(http(port, "GET", "/style.css", &[], "").await.status, 200);
    for path in ["/app.js", "/metrics", "/healthz", "/ws", "/ws?room=a"] {
        let reply = http(port, "GET", path, &[], "").await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        assert!(
            !reply.body.contains("peercam_") && !reply.body.contains("function"),
            "{path} leaks: {}",
            reply.body
        );
    }
    assert_eq!(ws_with(port, &[]).await.err(), Some(401));
    let forged = [("Cookie", "peercam_session=00112233")];
    assert_eq!(http(port, "GET", "/metrics", &forged, "").await.status, 401);

    // A wrong password: 401 and the form again, saying so.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let wrong = http(port, "POST", "/login", &form, "password=guess").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong password"), "{}", wrong.body);
    assert!(wrong.header("set-cookie").is_none());

    // The right one: a session that opens everything.
    let cookie = log_in(port).await;
    let with = [("Cookie", cookie.as_str())];
    let page = http(port, "GET", "/", &with, "").await;
    assert!(page.body.contains("id=\"dial\"") && page.body.contains("Log out"));
    assert!(!page.body.contains("open-warning"));
    assert_eq!(http(port, "GET", "/app.js", &with, "").await.status, 200);
    let metrics = http(port, "GET", "/metrics", &with, "").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("peercam_sessions 1"),
        "{}",
        metrics.body
    );
    let (_ws, hello) = ws_with(port, &with)
        .await
        .expect("WebSocket with a session");
    assert_eq!(hello["hello"]["mode"], "viewer");

    // Scripts may send the password as a bearer token.
    let bearer = format!("Bearer {PASSWORD}");
    let reply = http(port, "GET", "/metrics", &[("Authorization", &bearer)], "").await;
    assert_eq!(reply.status, 200);

    // Logging out ends the session.
    let out = http(port, "POST", "/logout", &with, "").await;
    assert_eq!(out.status, 303);
    assert!(out
        .header("set-cookie")
        .is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(http(port, "GET", "/metrics", &with, "").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_address() {
    let daemon = Daemon::start(&protected("", "login_failures_per_minute = 2"));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for _ in 0..2 {
        let r = http(daemon.port, "POST", "/login", &form, "password=guess").await;
        assert_eq!(r.status, 401);
    }
    // Now even the right password waits.
    let body = format!("password={}", PASSWORD.replace(' ', "+"));
    let r = http(daemon.port, "POST", "/login", &form, &body).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed logins"), "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=31).contains(&retry), "Retry-After {retry}");
    daemon.wait_for_log("[limits] login_failures_per_minute", Duration::from_secs(5));
    // An oversized form is refused without reading it all.
    let huge = format!("password={}", "x".repeat(10_000));
    let r = http(daemon.port, "POST", "/login", &form, &huge).await;
    assert_eq!(r.status, 413);
}

/// Finding: wrong `Authorization: Bearer` guesses were neither limited nor logged. They now
/// spend the same per-address budget as the login form, and a spent budget refuses even the
/// right password before comparing it; another address is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_guesses_spend_the_login_budget_of_their_address() {
    let daemon = Daemon::start(&protected("", "login_failures_per_minute = 3"));
    let port = daemon.port;
    for path in ["/healthz", "/metrics", "/app.js"] {
        let wrong = http(port, "GET", path, &[("Authorization", "Bearer guess")], "").await;
        assert_eq!(wrong.status, 401, "{path}");
    }
    let right = format!("Bearer {PASSWORD}");
    let refused = http(port, "GET", "/healthz", &[("Authorization", &right)], "").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        ws_with(port, &[("Authorization", &right)]).await.err(),
        Some(429)
    );
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = format!("password={}", PASSWORD.replace(' ', "+"));
    let login = http(port, "POST", "/login", &form, &body).await;
    assert_eq!(login.status, 429, "the form shares the budget");
    daemon.wait_for_log("[limits] login_failures_per_minute", Duration::from_secs(5));

    // Two spaces are not the grammar; another address still gets in with the password.
    let from = |path: &'static str, auth: String| async move {
        let stream = connect_from([127, 0, 0, 2], port).await;
        exchange(stream, "GET", path, &[("Authorization", &auth)], "").await
    };
    assert_eq!(
        from("/healthz", format!("Bearer  {PASSWORD}")).await.status,
        401
    );
    assert_eq!(from("/healthz", right.clone()).await.status, 200);
    assert_eq!(
        from("/healthz", format!("bearer {PASSWORD}")).await.status,
        200
    );
    legit_viewer_is_unharmed(port, Some(PASSWORD)).await;
}

/// Finding: remote candidates were used unfiltered and uncounted (300 candidates, 2,406 STUN
/// packets in 7 s, some to 127.0.0.1:22 and 0.0.0.0:9). Now at most 20 per call are used,
/// loopback, unspecified, multicast and broadcast addresses are dropped (the daemon does not
/// listen only on loopback here), each drop is answered and counted, and no STUN reaches a
/// loopback port the candidates name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_candidates_are_filtered_and_capped() {
    let config = common::test_config("", "").replace("127.0.0.1:0", "0.0.0.0:0");
    let daemon = Daemon::start(&config);
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let trap_port = trap.local_addr().expect("addr").port();
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    send_text(&mut ws, offer_message(&offer_sdp().await)).await;
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["sdp"]["type"], "answer", "{answer}");
    let candidate = |address: String| {
        format!(
            r#"{{"candidate":{{"candidate":"candidate:1 1 udp 2122260223 {address} typ host","sdpMid":"0","sdpMLineIndex":0}}}}"#
        )
    };
    let mut dropped = 0;
    for address in [
        format!("127.0.0.1 {trap_port}"),
        "127.0.0.1 22".to_owned(),
        "0.0.0.0 9".to_owned(),
        "224.0.0.1 9".to_owned(),
        "255.255.255.255 9".to_owned(),
    ] {
        send_text(&mut ws, candidate(address.clone())).await;
        let reply = next_event(&mut ws, Duration::from_secs(5)).await;
        assert_eq!(
            reply["error"]["code"], "bad_candidate",
            "{address}: {reply}"
        );
        dropped += 1;
    }
    // 300 candidates to documentation addresses: 20 are used, the rest refused.
    let mut capped = 0;
    for i in 0..300 {
        send_text(
            &mut ws,
            candidate(format!("192.0.2.{} {}", i % 250 + 1, 9000 + i)),
        )
        .await;
    }
    while capped < 280 {
        let reply = next_event(&mut ws, Duration::from_secs(5)).await;
        if reply["error"]["code"] == "bad_candidate" {
            capped += 1;
        }
    }
    let metrics = metrics_text(daemon.port).await;
    assert_eq!(
        value(
            &metrics,
            "peercam_limit_hits_total{limit=\"candidate_address\"}"
        ),
        Some(f64::from(dropped)),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "peercam_limit_hits_total{limit=\"remote_candidates\"}"
        ),
        Some(280.0)
    );
    let mut buf = [0u8; 1500];
    let stun = tokio::time::timeout(Duration::from_secs(2), trap.recv_from(&mut buf)).await;
    assert!(
        stun.is_err(),
        "STUN reached the loopback port a candidate named"
    );
    daemon.wait_for_log("remote candidate address check", Duration::from_secs(5));
    // A viewer elsewhere connects all the same (its own loopback host candidates are dropped
    // here; the path is found peer-reflexive).
    legit_viewer_is_unharmed(daemon.port, None).await;
}

/// Finding: one address re-dialling under the rate limit held every `max_pending_dials`
/// slot, and a viewer elsewhere got `dial_limit` every time. Now one address holds at most
/// `pending_dials_per_address` of them, and the other viewer dials, connects and streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_dial_slot() {
    let daemon = Daemon::start(&common::test_config(
        "",
        "max_pending_dials = 4\npending_dials_per_address = 2",
    ));
    let url = daemon.ws_url("");
    let mut attackers = Vec::new();
    let mut answered = 0;
    for _ in 0..4 {
        let (mut ws, _) = connect(&url).await;
        let reply = offer_without_ice(&mut ws).await;
        if reply["sdp"]["type"] == "answer" {
            answered += 1;
        } else {
            assert_eq!(reply["error"]["code"], "dial_limit", "{reply}");
            let message = reply["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("127.0.0.1"), "{message}");
        }
        attackers.push(ws);
    }
    assert_eq!(answered, 2, "two dials per address");
    daemon.wait_for_log("[limits] pending_dials_per_address", Duration::from_secs(5));

    // A viewer on another address dials, connects and gets the frame rate.
    legit_viewer_is_unharmed(daemon.port, None).await;
}

/// Finding: a dial whose DTLS fails (the offer's fingerprint is not the client's
/// certificate) held its dial slot until the ICE deadline. It is freed as soon as DTLS fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dtls_handshake_frees_its_dial_slot_at_once() {
    let daemon = Daemon::start(&common::test_config("", "ice_timeout_s = 30"));
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, _client, mut candidates) = common::client::client(&[common::client::h264()]).await;
    let started = Instant::now();
    let answer = common::client::dial_with(
        &mut ws,
        &pc,
        &mut candidates,
        Duration::from_secs(8),
        || false,
        |sdp| {
            // Another certificate's fingerprint: ICE connects, DTLS cannot.
            let at = sdp.find("a=fingerprint:sha-256 ").expect("fingerprint") + 22;
            let mut sdp = sdp;
            sdp.replace_range(
                at..at + 2,
                if &sdp[at..at + 2] == "00" { "11" } else { "00" },
            );
            sdp
        },
    )
    .await;
    assert_eq!(answer["sdp"]["type"], "answer", "{answer}");
    let mut freed = None;
    while started.elapsed() < Duration::from_secs(20) {
        if common::client::metric(daemon.port, "peercam_pending_dials").await == Some(0.0) {
            freed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let freed = freed.expect("the dial slot was not freed within 20 s");
    assert!(freed < Duration::from_secs(10), "freed after {freed:?}");
    assert_eq!(
        common::client::metric(daemon.port, "peercam_viewers").await,
        Some(0.0)
    );
}

/// A WebSocket to `/ws` from the loopback address `source`, with these headers.
/// Whether the server closed `stream` within `wait` (EOF or reset); anything it sends first
/// is returned.
async fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// A legitimate viewer on another address (127.0.0.2) while an attack goes on: the page
/// loads, the login works (when `password` is set), the dial connects and the video comes
/// at 25 fps or more.
pub(crate) async fn legit_viewer_is_unharmed(port: u16, password: Option<&str>) {
    let source = Ipv4Addr::new(127, 0, 0, 2).into();
    Visitor::new(source, (Ipv4Addr::LOCALHOST, port).into())
        .is_unharmed(password)
        .await;
}

/// A client of the daemon at `server` from the local address `source` (its UDP too), over
/// HTTP and ws://, or HTTPS and wss:// trusting one certificate.
struct Visitor {
    source: IpAddr,
    server: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Visitor {
    fn new(source: IpAddr, server: SocketAddr) -> Visitor {
        Visitor {
            source,
            server,
            tls: None,
        }
    }

    /// Over TLS, trusting exactly the certificate in `cert_pem` (for the name `localhost`).
    fn over_tls(source: IpAddr, server: SocketAddr, cert_pem: &std::path::Path) -> Visitor {
        Visitor {
            tls: Some(common::http::tls_config(cert_pem)),
            ..Visitor::new(source, server)
        }
    }

    /// One HTTP(S) exchange on a new connection.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let tcp = connect_between(self.source, self.server).await;
        match &self.tls {
            None => exchange(tcp, method, path, headers, body).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .expect("TLS handshake, verified");
                exchange(tls, method, path, headers, body).await
            }
        }
    }

    /// Logs in with `password`; the `peercam_session=...` pair to send as a Cookie.
    async fn log_in(&self, password: &str) -> String {
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let body = format!("password={}", password.replace(' ', "+"));
        let login = self.exchange("POST", "/login", &form, &body).await;
        assert_eq!(login.status, 303, "the login: {}", login.body);
        login
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned()
    }

    /// A WebSocket to `/ws` (ws:// or wss://), after its hello.
    async fn ws(&self, headers: &[(&str, &str)]) -> common::Ws {
        let tcp = connect_between(self.source, self.server).await;
        let (mut ws, _) = match &self.tls {
            None => {
                let request = ws_request(&format!("ws://{}/ws", self.server), headers);
                let plain = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
                tokio_tungstenite::client_async(request, plain).await
            }
            Some(config) => {
                let url = format!("wss://localhost:{}/ws", self.server.port());
                let connector = tokio_tungstenite::Connector::Rustls(config.clone());
                tokio_tungstenite::client_async_tls_with_config(
                    ws_request(&url, headers),
                    tcp,
                    None,
                    Some(connector),
                )
                .await
            }
        }
        .expect("WebSocket upgrade");
        assert!(
            next_json(&mut ws).await.get("hello").is_some(),
            "a hello first"
        );
        ws
    }

    /// The page loads, the login works (when `password` is set), the dial connects and the
    /// video comes at 25 fps or more.
    async fn is_unharmed(&self, password: Option<&str>) {
        let page = self.exchange("GET", "/", &[], "").await;
        assert_eq!(page.status, 200, "the page: {}", page.body);
        let cookie = match password {
            Some(password) => Some(self.log_in(password).await),
            None => None,
        };
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        let ws = self.ws(&headers).await;
        let udp = SocketAddr::new(self.source, 0).to_string();
        let viewer = common::probe::dial_viewer_on(ws, 10, &udp).await;
        let fps = common::probe::frame_rate(&viewer.client, Duration::from_secs(2)).await;
        assert!(
            fps >= 25.0,
            "the viewer at {} got {fps:.1} fps",
            self.source
        );
        viewer.hang_up().await;
    }
}

/// Finding: 48 connections that stall (a login body that never comes, headers at one byte a
/// second, a handshake that never starts) held their slots for minutes and every new viewer
/// got resets. Now one address holds at most `connections_per_address`, the rest is closed
/// at once, a request has 10 s for its whole life (408), and a viewer on another address
/// loads the page, logs in and streams while the attack goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_from_one_address_do_not_lock_out_viewers() {
    let daemon = Daemon::start(&protected(
        "",
        "max_connections = 16\nconnections_per_address = 12",
    ));
    let port = daemon.port;
    // A login whose body never comes, from a third address.
    let mut stalled = connect_from([127, 0, 0, 3], port).await;
    stalled
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\n",
        )
        .await
        .expect("write");
    let stalled_at = Instant::now();
    let mut held = Vec::new();
    for i in 0..48 {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let opening: &[u8] = match i % 3 {
            0 => b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\npass",
            1 => b"GET / HTTP/1.1\r\nHo",
            _ => b"",
        };
        let _ = stream.write_all(opening).await;
        held.push(stream);
        // The connections arrive one after another, as an attacker's would.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Slow headers: one more byte a second on every second kind, for the whole test.
    let mut open = 0;
    let mut refused = 0;
    for stream in held.iter_mut() {
        match closed_by_server(stream, Duration::from_millis(200)).await {
            Some(_) => refused += 1,
            None => open += 1,
        }
    }
    assert!(open <= 12, "{open} connections held from one address");
    assert_eq!(open + refused, 48);
    daemon.wait_for_log("[limits] connections_per_address", Duration::from_secs(5));
    let drip = tokio::spawn(async move {
        for _ in 0..30 {
            for (i, stream) in held.iter_mut().enumerate() {
                if i % 3 == 1 {
                    let _ = stream.write_all(b"s").await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        held
    });

    // Meanwhile a viewer on another address: page, login, signaling, a call at full rate.
    legit_viewer_is_unharmed(port, Some(PASSWORD)).await;
    drip.abort();
    // The stalled request ended by its deadline: a 408 for the login body that never came.
    let reply = closed_by_server(&mut stalled, Duration::from_secs(13))
        .await
        .expect("a stalled body is cut by the request deadline");
    let took = stalled_at.elapsed();
    assert!(
        took >= Duration::from_secs(9) && reply.starts_with("HTTP/1.1 408"),
        "after {took:?}: {reply:?}"
    );
    daemon.wait_for_log("request deadline", Duration::from_secs(5));
}

/// Finding 2 over HTTPS: TLS handshakes that start and never finish (and silent
/// connections) from one address cannot starve the others. A viewer on another address
/// completes its handshakes, loads the page, logs in and streams over wss:// at 25 fps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_from_one_address_do_not_lock_out_viewers() {
    let state = tempfile::tempdir().expect("tempdir");
    let server = format!(
        "tls = \"self-signed\"\nstate_dir = \"{}\"",
        state.path().display()
    );
    let daemon = Daemon::start(&protected(
        &server,
        "max_connections = 16\nconnections_per_address = 12",
    ));
    let port = daemon.port;
    let mut held = Vec::new();
    for i in 0..48 {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        // A TLS record header that promises a ClientHello that never comes, or nothing.
        if i % 2 == 0 {
            let _ = stream
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await;
        }
        held.push(stream);
    }
    let mut open = 0;
    for stream in held.iter_mut() {
        if closed_by_server(stream, Duration::from_millis(200))
            .await
            .is_none()
        {
            open += 1;
        }
    }
    assert!(
        open <= 12,
        "{open} stalled handshakes held from one address"
    );

    legit_viewer_is_unharmed_over_https(port, &state.path().join("tls/cert.pem")).await;
    // The stalled handshakes end by the handshake deadline (10 s).
    let mut ended = 0;
    for stream in held.iter_mut() {
        if closed_by_server(stream, Duration::from_secs(12))
            .await
            .is_some()
        {
            ended += 1;
        }
    }
    assert_eq!(ended, 48, "every stalled handshake was closed");
}

/// Finding: 64 silent room sockets gave every viewer 503 for as long as they stayed. Now one
/// address holds at most `connections_per_address` of them, a viewer elsewhere dials at
/// once, and a browser alone in its room is closed after `idle_timeout_s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_room_sockets_do_not_lock_viewers_out() {
    let daemon = Daemon::start(&common::test_config(
        "",
        "max_connections = 8\nconnections_per_address = 6\nidle_timeout_s = 10",
    ));
    let port = daemon.port;
    let started = Instant::now();
    let mut rooms = Vec::new();
    for i in 0..64 {
        let url = format!("ws://127.0.0.1:{port}/ws?room=r{i}");
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await {
            rooms.push(ws);
        }
    }
    // At most half of max_connections are rooms, whoever opens them.
    assert!(rooms.len() <= 4, "{} room sockets", rooms.len());
    legit_viewer_is_unharmed(port, None).await;
    // Alone and silent: each room socket is told why and closed after idle_timeout_s.
    for ws in rooms.iter_mut() {
        let hello = next_event(ws, Duration::from_secs(5)).await;
        assert_eq!(hello["hello"]["mode"], "room", "{hello}");
        let bye = next_event(ws, Duration::from_secs(15)).await;
        assert_eq!(bye["bye"]["reason"], "idle", "{bye}");
    }
    assert!(started.elapsed() >= Duration::from_secs(9));
}

/// Findings: DNS rebinding in open mode (the Origin was compared with whatever Host or
/// X-Forwarded-Host the client sent, and the scheme was ignored), and logins posted by
/// other sites' pages (which spent the owner's failure budget). Now an unknown name is
/// refused on every path without a password, X-Forwarded-Host counts only when configured,
/// the Origin must be this scheme and authority, and a foreign login is refused unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_pages_and_foreign_logins_are_refused() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let port = daemon.port;
    let status = |path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        // `exchange` sends Host: localhost; a second Host header would be ambiguous, so
        // these requests are written whole here.
        raw_request(stream, path, &headers).await
    };
    let rebound = format!("rebind.attacker.test:{port}");
    for path in ["/", "/app.js", "/healthz", "/metrics"] {
        assert_eq!(
            status(path, vec![("Host", rebound.clone())]).await,
            403,
            "{path}"
        );
    }
    assert_eq!(
        status("/", vec![("Host", format!("127.0.0.1:{port}"))]).await,
        200
    );
    assert_eq!(
        status("/", vec![("Host", format!("localhost:{port}"))]).await,
        200
    );
    // X-Forwarded-Host is not trusted by default: it neither lets in nor locks out.
    let forwarded = vec![
        ("Host", format!("127.0.0.1:{port}")),
        ("X-Forwarded-Host", "rebind.attacker.test".to_owned()),
    ];
    assert_eq!(status("/", forwarded).await, 200);
    daemon.wait_for_log("[server] hosts", Duration::from_secs(5));

    // The WebSocket: a same-authority Origin with the wrong scheme is another origin.
    let https = format!("https://127.0.0.1:{port}");
    assert_eq!(
        ws_with(port, &[("Origin", https.as_str())]).await.err(),
        Some(403)
    );
    let own = format!("http://127.0.0.1:{port}");
    assert!(ws_with(port, &[("Origin", own.as_str())]).await.is_ok());
    legit_viewer_is_unharmed(port, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_posted_by_another_site_is_refused_without_spending_the_budget() {
    let daemon = Daemon::start(&protected("", "login_failures_per_minute = 2"));
    let port = daemon.port;
    let form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", "http://evil.example"),
    ];
    for _ in 0..5 {
        let refused = http(port, "POST", "/login", &form, "password=guess").await;
        assert_eq!(refused.status, 403, "{}", refused.body);
    }
    let referred = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Referer", "http://evil.example/page"),
    ];
    assert_eq!(
        http(port, "POST", "/login", &referred, "password=guess")
            .await
            .status,
        403
    );
    daemon.wait_for_log("posted by another site", Duration::from_secs(5));
    // The owner's budget is untouched: the page's own login works.
    // (`http` sends `Host: localhost`.)
    let from_page = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", "http://localhost"),
    ];
    let body = format!("password={}", PASSWORD.replace(' ', "+"));
    let reply = http(port, "POST", "/login", &from_page, &body).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    legit_viewer_is_unharmed(port, Some(PASSWORD)).await;
}

/// A GET with exactly these headers (no Host unless given); the status.
async fn raw_request(mut stream: TcpStream, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_password_the_log_and_the_page_say_it_is_open() {
    let daemon = Daemon::start(&common::test_config("", ""));
    daemon.wait_for_log("no [server] password is set", Duration::from_secs(5));
    let page = http(daemon.port, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"open-warning\""), "{}", page.body);
    assert_eq!(
        http(daemon.port, "GET", "/metrics", &[], "").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_another_sites_page_is_refused() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let port = daemon.port;
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(ws_with(port, &evil).await.err(), Some(403));
    let own = format!("http://127.0.0.1:{port}");
    assert!(ws_with(port, &[("Origin", own.as_str())]).await.is_ok());
}

/// Finding 10 against the real daemon: a private key open to others. The key peercam
/// generated is made private again (with a warning); a configured key every user may read
/// stops the start with the fix named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_open_to_others_are_fixed_or_refused() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().expect("tempdir");
    let server = format!(
        "tls = \"self-signed\"\nstate_dir = \"{}\"",
        state.path().display()
    );
    let key = state.path().join("tls/key.pem");
    let cert = state.path().join("tls/cert.pem");
    drop(Daemon::start(&protected(&server, "")));
    let open = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(&key, open.clone()).expect("chmod 644");
    // The generated key: made private again (a warning says so, before the daemon says
    // where it listens), and the daemon serves.
    let daemon = Daemon::start(&protected(&server, ""));
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated key is private again");
    legit_viewer_is_unharmed_over_https(daemon.port, &cert).await;
    drop(daemon);

    // A configured key every user may read: no start, and the fix is named.
    std::fs::set_permissions(&key, open).expect("chmod 644");
    let configured = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("peercam.toml");
    std::fs::write(&config, protected(&configured, "")).expect("config");
    let args = [std::ffi::OsStr::new("--config"), config.as_os_str()];
    let (mut child, log) = common::spawn(&args, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon started with a world-readable key"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let lines: Vec<String> = log.try_iter().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("chmod 600") && l.contains("key.pem")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("listening on")),
        "{lines:#?}"
    );
}

/// [`legit_viewer_is_unharmed`] over HTTPS and wss://, trusting `cert`.
async fn legit_viewer_is_unharmed_over_https(port: u16, cert: &std::path::Path) {
    let source = Ipv4Addr::new(127, 0, 0, 2).into();
    Visitor::over_tls(source, (Ipv4Addr::LOCALHOST, port).into(), cert)
        .is_unharmed(Some(PASSWORD))
        .await;
}

/// A TLS connector trusting exactly `cert_pem`.
fn tls_connector(cert_pem: &std::path::Path) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(common::http::tls_config(cert_pem))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_serves_https_and_wss_and_keeps_its_certificate() {
    let state = tempfile::tempdir().expect("tempdir");
    let server = format!(
        "tls = \"self-signed\"\nstate_dir = \"{}\"",
        state.path().display()
    );
    let config = protected(&server, "");
    let cert_path = state.path().join("tls/cert.pem");
    let first_cert = {
        let daemon = Daemon::start(&config);
        let connector = tls_connector(&cert_path);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tcp = TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .expect("tcp");
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .expect("TLS handshake, verified");
        let page = exchange(tls, "GET", "/", &[], "").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("name=\"password\""));

        // The session cookie is Secure over HTTPS.
        let tcp = TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .expect("tcp");
        let tls = connector.connect(name.clone(), tcp).await.expect("TLS");
        let body = format!("password={}", PASSWORD.replace(' ', "+"));
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let login = exchange(tls, "POST", "/login", &form, &body).await;
        assert_eq!(login.status, 303);
        let set_cookie = login.header("set-cookie").expect("cookie").to_owned();
        assert!(set_cookie.contains("Secure"), "{set_cookie}");
        let cookie = set_cookie.split(';').next().expect("pair").to_owned();

        // wss:// with the session: the dial streams.
        let visitor = Visitor::over_tls(
            Ipv4Addr::LOCALHOST.into(),
            (Ipv4Addr::LOCALHOST, daemon.port).into(),
            &cert_path,
        );
        let ws = visitor.ws(&[("Cookie", &cookie)]).await;
        common::probe::dial_viewer(ws, 10).await.hang_up().await;

        // Plain HTTP to the HTTPS port: sent to the same place over https://.
        let plain = http(daemon.port, "GET", "/app.js", &[], "").await;
        assert_eq!(plain.status, 308, "{}", plain.body);
        assert_eq!(plain.header("location"), Some("https://localhost/app.js"));
        std::fs::read(&cert_path).expect("certificate kept in state_dir/tls")
    };
    // A restart uses the same certificate (browsers' exceptions stay valid).
    let daemon = Daemon::start(&config);
    let tcp = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tls_connector(&cert_path)
        .connect(name, tcp)
        .await
        .expect("same certificate");
    assert_eq!(exchange(tls, "GET", "/", &[], "").await.status, 200);
    assert_eq!(std::fs::read(&cert_path).expect("cert"), first_cert);
}

/// Sends a real offer (from a webrtc-rs client that is closed at once, so ICE never
/// completes) on `ws` and returns the reply.
async fn offer_without_ice(ws: &mut common::Ws) -> Value {
    send_text(ws, offer_message(&offer_sdp().await)).await;
    loop {
        let reply = next_json(ws).await;
        // Skip the daemon's trickled candidates and bitrate notes (next_json skips the
        // viewer counts).
        if reply.get("candidate").is_none() && reply.get("bitrate").is_none() {
            return reply;
        }
    }
}

/// The next message that is not a candidate (or bitrate, or viewer count), within `timeout`.
async fn next_event(ws: &mut common::Ws, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .expect("no message in time")
            .expect("socket open")
            .expect("ok");
        if let WsMessage::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            let notice = ["candidate", "bitrate", "viewers"]
                .iter()
                .any(|k| v.get(k).is_some());
            if !notice {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_dials_are_limited_and_freed_by_the_ice_deadline() {
    let daemon = Daemon::start(&common::test_config(
        "",
        "max_pending_dials = 1\nice_timeout_s = 5",
    ));
    let url = daemon.ws_url("");
    let (mut a, _) = connect(&url).await;
    let answer = offer_without_ice(&mut a).await;
    assert_eq!(answer["sdp"]["type"], "answer", "{answer}");
    let started = Instant::now();

    // A second dial while the first has not connected: refused, with the key named in the log.
    let (mut b, _) = connect(&url).await;
    let refused = offer_without_ice(&mut b).await;
    assert_eq!(refused["error"]["code"], "dial_limit", "{refused}");
    daemon.wait_for_log("[limits] max_pending_dials", Duration::from_secs(5));

    // The first never connects: after ice_timeout_s its peer is closed and it is told why.
    let bye = next_event(&mut a, Duration::from_secs(10)).await;
    assert_eq!(bye["bye"]["reason"], "ice_timeout", "{bye}");
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(8)).contains(&waited),
        "closed after {waited:?}"
    );
    daemon.wait_for_log("[limits] ice_timeout_s", Duration::from_secs(5));
    assert_eq!(
        common::client::metric(daemon.port, "peercam_pending_dials").await,
        Some(0.0)
    );
    assert_eq!(
        common::client::metric(daemon.port, "peercam_viewers").await,
        Some(0.0)
    );

    // The slot is free: the second socket may dial now.
    let answer = offer_without_ice(&mut b).await;
    assert_eq!(answer["sdp"]["type"], "answer", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_per_minute_are_limited_per_address() {
    let daemon = Daemon::start(&common::test_config(
        "",
        "dials_per_minute = 2\nmax_pending_dials = 4",
    ));
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    for _ in 0..2 {
        let reply = offer_without_ice(&mut ws).await;
        assert_eq!(reply["sdp"]["type"], "answer", "{reply}");
    }
    let reply = offer_without_ice(&mut ws).await;
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("try again in"), "{message}");
    daemon.wait_for_log("[limits] dials_per_minute", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_and_connections_are_capped() {
    let daemon = Daemon::start(&common::test_config(
        "",
        "idle_timeout_s = 10\nmax_connections = 2",
    ));
    let url = daemon.ws_url("");
    let started = Instant::now();
    let (mut a, _) = connect(&url).await;
    let (_b, _) = connect(&url).await;
    // A third WebSocket is over max_connections: 503.
    assert_eq!(ws_with(daemon.port, &[]).await.err(), Some(503));
    daemon.wait_for_log("[limits] max_connections", Duration::from_secs(5));

    // `a` stays silent: closed after idle_timeout_s with a reason.
    let bye = next_event(&mut a, Duration::from_secs(15)).await;
    assert_eq!(bye["bye"]["reason"], "idle", "{bye}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle socket was not closed");
    daemon.wait_for_log("[limits] idle_timeout_s", Duration::from_secs(5));
    // Its slot is free again (once its task has ended, a moment after the close).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match ws_with(daemon.port, &[]).await {
            Ok(_) => break,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status, 503, "only the connection cap may refuse it");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the idle socket's slot was not freed: {status}"),
        }
    }
}

/// A login with a wrong password from `source` to `server`; the status.
async fn wrong_login(source: IpAddr, server: SocketAddr) -> u16 {
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let stream = connect_between(source, server).await;
    exchange(stream, "POST", "/login", &form, "password=guess")
        .await
        .status
}

/// Finding 10: a host is given a whole IPv6 /64, so limiting per IPv6 address let one
/// machine guess and connect without end. Against the daemon in a network namespace of its
/// own (IPv6 only, across a veth pair): five addresses of one /64 spend that /64's login
/// budget together and the sixth is refused; they share one `connections_per_address`; a
/// viewer in another /64 logs in and streams over IPv6 meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_limited_per_64() {
    let v6 = |s: String| -> IpAddr { s.parse().expect("address") };
    let link = common::netns::Link::new();
    let attacked = v6("2001:db8:64::100".into());
    let served = v6("2001:db8:65::100".into());
    link.ns_addr(attacked, 64);
    link.ns_addr(served, 64);
    let attackers: Vec<IpAddr> = (2..=12)
        .map(|i| v6(format!("2001:db8:64::{i:x}")))
        .collect();
    for a in &attackers {
        link.host_addr(*a, 64);
    }
    let viewer = v6("2001:db8:65::1".into());
    link.host_addr(viewer, 64);
    let config = protected("", "connections_per_address = 4")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"[::]:0\"")
        .replace(
            "ip_addresses = [\"127.0.0.1\"]",
            &format!("ip_addresses = [\"{attacked}\", \"{served}\"]"),
        );
    let daemon = Daemon::start_in(Some(&link.ns), &config, &[]);
    let target = SocketAddr::new(attacked, daemon.port);

    // Five wrong passwords, each from a new address of the /64: the budget (5) is spent.
    for a in &attackers[..5] {
        assert_eq!(wrong_login(*a, target).await, 401, "from {a}");
    }
    for a in [attackers[5], attackers[0]] {
        assert_eq!(
            wrong_login(a, target).await,
            429,
            "from {a}: the /64 is spent"
        );
    }
    // Four idle connections from four addresses fill the /64's connection cap; a fifth
    // address of it is closed at once.
    let mut held = Vec::new();
    for a in &attackers[6..10] {
        held.push(connect_between(*a, target).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = connect_between(attackers[10], target).await;
    assert!(
        closed_by_server(&mut over, Duration::from_secs(2))
            .await
            .is_some(),
        "a fifth connection from the same /64 was kept"
    );
    daemon.wait_for_log("[limits] connections_per_address", Duration::from_secs(5));
    // Another /64 is another client: it logs in and streams over IPv6 meanwhile.
    Visitor::new(viewer, SocketAddr::new(served, daemon.port))
        .is_unharmed(Some(PASSWORD))
        .await;
    for stream in &mut held {
        assert!(
            closed_by_server(stream, Duration::ZERO).await.is_none(),
            "the held connections are still open (under their 10 s deadline)"
        );
    }
}

/// Finding 10: the per-address limiter's table was cleared whole once 4,096 addresses were
/// tracked, so a guesser with a spent budget got it back by having enough other addresses
/// fail once. Now the least recently seen are forgotten first, and an address that keeps
/// being refused is seen each time: after 4,200 other addresses, it is still refused, and a
/// viewer elsewhere logs in and streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_addresses_does_not_give_a_guesser_its_budget_back() {
    let daemon = Daemon::start(&protected("", ""));
    let server = (Ipv4Addr::LOCALHOST, daemon.port).into();
    let guesser = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1));
    for _ in 0..5 {
        assert_eq!(wrong_login(guesser, server).await, 401);
    }
    assert_eq!(wrong_login(guesser, server).await, 429);
    let started = Instant::now();
    for i in 0..4200u32 {
        // 127.1.0.1 onwards, one wrong password each.
        let addr = IpAddr::V4(Ipv4Addr::from(0x7f01_0001 + i));
        assert_eq!(wrong_login(addr, server).await, 401, "from {addr}");
        if i % 256 == 0 {
            assert_eq!(
                wrong_login(guesser, server).await,
                429,
                "the guesser got its budget back after {i} new addresses"
            );
        }
    }
    eprintln!("4,200 addresses in {:?}", started.elapsed());
    assert_eq!(wrong_login(guesser, server).await, 429);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = format!("password={}", PASSWORD.replace(' ', "+"));
    let stream = connect_between(guesser, server).await;
    let right = exchange(stream, "POST", "/login", &form, &body).await;
    assert_eq!(
        right.status, 429,
        "a spent budget refuses even the password"
    );
    legit_viewer_is_unharmed(daemon.port, Some(PASSWORD)).await;
}
