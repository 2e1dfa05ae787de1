//! The router and the signaling adapters in-process: a real server on a loopback port and a
//! real WebSocket client, with [`TestMedia`] in place of the capture threads and webrtc-rs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tower::ServiceExt;

use super::media::{Answered, Call, MediaService};
use super::*;
use crate::h264::ProfileLevelId;
use crate::media::VideoCodec;
use crate::pipeline::latest::{NoPicture, Picture};
use crate::session::machine::MediaInfo;
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::{ErrorBody, IceCandidate};

const CHROMIUM: &str = include_str!("../../tests/fixtures/offers/chromium-156.sdp");
const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=test answer\r\n";
/// The media section of a gathering [`TestMedia`]'s answer.
const MEDIA_SECTION: &str =
    "m=video 9 UDP/TLS/RTP/SAVPF 108\r\na=mid:0\r\na=ice-ufrag:local\r\na=ice-pwd:localpwd\r\n";
/// The candidate a gathering [`TestMedia`] reports.
const LOCAL_CANDIDATE: &str = "candidate:2 1 udp 1 127.0.0.1 40000 typ host";

/// Media without capture or peers: every offer is answered with [`ANSWER`]; what the calls
/// are asked to do is written to `log`, and each call's event sender is kept in `events`.
#[derive(Default)]
struct TestMedia {
    log: Arc<Mutex<Vec<String>>>,
    events: Mutex<Vec<mpsc::Sender<PeerEvent>>>,
    bitrate: Mutex<Option<watch::Sender<u32>>>,
    /// Each call reports a local candidate and the end of gathering right away.
    gathers: bool,
}

impl TestMedia {
    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    fn last_events(&self) -> mpsc::Sender<PeerEvent> {
        self.events
            .lock()
            .expect("events")
            .last()
            .expect("a call was answered")
            .clone()
    }
}

impl MediaInfo for TestMedia {
    fn video_codecs(&self) -> Vec<VideoCodec> {
        vec![VideoCodec::H264]
    }
    fn has_audio(&self) -> bool {
        true
    }
    fn camera_h264(&self) -> Option<ProfileLevelId> {
        None
    }
}

#[async_trait]
impl MediaService for TestMedia {
    async fn answer(
        &self,
        _offer_sdp: String,
        plan: &AnswerPlan,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Answered, ErrorBody> {
        self.log.lock().expect("log").push(format!(
            "answer {} pt {}",
            plan.video.codec, plan.video.payload_type
        ));
        if self.gathers {
            let host = IceCandidate {
                candidate: LOCAL_CANDIDATE.to_owned(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            };
            events
                .try_send(PeerEvent::LocalCandidate(host))
                .expect("room");
            events.try_send(PeerEvent::EndOfCandidates).expect("room");
        }
        self.events.lock().expect("events").push(events);
        let (tx, mut rx) = watch::channel(1500);
        rx.mark_changed();
        *self.bitrate.lock().expect("bitrate") = Some(tx);
        Ok(Answered {
            call: Box::new(TestCall {
                log: self.log.clone(),
            }),
            answer_sdp: if self.gathers {
                format!("{ANSWER}{MEDIA_SECTION}")
            } else {
                ANSWER.to_owned()
            },
            bitrate: Some(rx),
        })
    }

    fn metrics_text(&self) -> String {
        "peercam_test_media 1\n".to_owned()
    }

    fn latest_picture(&self) -> Result<Picture, NoPicture> {
        Err(NoPicture::NotYet)
    }
}

struct TestCall {
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Call for TestCall {
    async fn add_remote_candidate(&self, candidate: &IceCandidate) -> Result<(), String> {
        if candidate.candidate.contains("reject") {
            return Err("not a candidate".to_owned());
        }
        self.log.lock().expect("log").push("candidate".to_owned());
        Ok(())
    }
    async fn end_of_remote_candidates(&self) -> Result<(), String> {
        self.log.lock().expect("log").push("end".to_owned());
        Ok(())
    }
    async fn restart_ice(&self, offer_sdp: String) -> Result<String, String> {
        let (ufrag, _) = crate::session::sdpfrag::ice_credentials(&offer_sdp)
            .ok_or_else(|| "no credentials".to_owned())?;
        self.log
            .lock()
            .expect("log")
            .push(format!("restart {ufrag}"));
        Ok(format!(
            "{ANSWER}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:new{ufrag}\r\na=ice-pwd:newpwd\r\n"
        ))
    }
    async fn close(self: Box<Self>) {
        self.log.lock().expect("log").push("close".to_owned());
    }
}

/// A server on a loopback port with `limits` appended to `[limits]`.
async fn start(limits: &str) -> (Arc<AppState>, Arc<TestMedia>, SocketAddr) {
    start_with(&format!("[limits]\n{limits}\n"), TestMedia::default()).await
}

/// A server on a loopback port with the config `text` and `media`.
async fn start_with(text: &str, media: TestMedia) -> (Arc<AppState>, Arc<TestMedia>, SocketAddr) {
    let settings = crate::config::parse_str(text, "test.toml").expect("test config");
    let media = Arc::new(media);
    let state = AppState::new(&settings, None, media.clone(), CancellationToken::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, state.clone(), None));
    (state, media, addr)
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, query: &str) -> (Client, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws{query}"))
        .await
        .expect("connect");
    let hello = next(&mut ws).await;
    (ws, hello)
}

async fn next(ws: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("open")
            .expect("no error");
        match message {
            WsMessage::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                // Viewer counts come whenever a call starts or ends (tests of them read
                // them with `next_counted`).
                if value.get("viewers").is_none() {
                    return value;
                }
            }
            WsMessage::Close(_) => return Value::Null,
            _ => {}
        }
    }
}

async fn send(ws: &mut Client, value: Value) {
    ws.send(WsMessage::Text(value.to_string().into()))
        .await
        .expect("send");
}

async fn get(state: &Arc<AppState>, path: &str) -> (StatusCode, String) {
    let mut request = Request::builder()
        .uri(path)
        .body(Body::empty())
        .expect("request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("response");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Chromium's offer as a trickling page sends it: without candidates (the fixture was
/// captured after gathering).
fn trickled() -> String {
    crate::session::sdpfrag::take_candidates(CHROMIUM).0
}

fn offer() -> Value {
    json!({"sdp": {"type": "offer", "sdp": trickled()}})
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 2 s");
}

#[tokio::test]
async fn a_viewer_dials_trickles_connects_and_hangs_up() {
    let (state, media, addr) = start("").await;
    let (mut ws, hello) = connect(addr, "").await;
    assert_eq!(hello["hello"]["mode"], "viewer");
    assert_eq!(hello["hello"]["codecs"], json!(["h264"]));

    send(&mut ws, offer()).await;
    let answer = next(&mut ws).await;
    assert_eq!(answer["sdp"]["type"], "answer", "{answer}");
    assert_eq!(answer["sdp"]["sdp"], ANSWER);
    // The page gets the encoder's target right after the answer, and every change.
    assert_eq!(
        next(&mut ws).await,
        json!({"bitrate": {"target_kbps": 1500}})
    );
    let bitrate = media
        .bitrate
        .lock()
        .expect("bitrate")
        .clone()
        .expect("sender");
    bitrate.send(900).expect("send");
    assert_eq!(
        next(&mut ws).await,
        json!({"bitrate": {"target_kbps": 900}})
    );

    let candidate =
        |text: &str| json!({"candidate": {"candidate": text, "sdpMid": "0", "sdpMLineIndex": 0}});
    send(
        &mut ws,
        candidate("candidate:1 1 udp 1 192.0.2.1 9 typ host"),
    )
    .await;
    send(&mut ws, candidate("candidate:reject")).await;
    let rejected = next(&mut ws).await;
    assert_eq!(rejected["error"]["code"], "bad_candidate", "{rejected}");
    send(&mut ws, json!({"candidate": null})).await;

    // The peer's own candidates go to the browser; "connected" frees the dial slot.
    let events = media.last_events();
    let local = IceCandidate {
        candidate: "candidate:2 1 udp 1 127.0.0.1 40000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    };
    events
        .send(PeerEvent::LocalCandidate(local))
        .await
        .expect("event");
    assert_eq!(
        next(&mut ws).await["candidate"]["candidate"],
        "candidate:2 1 udp 1 127.0.0.1 40000 typ host"
    );
    assert_eq!(state.admission.pending_dials(), 1);
    events.send(PeerEvent::Connected).await.expect("event");
    wait_for("the dial slot freed", || {
        state.admission.pending_dials() == 0
    })
    .await;
    let (status, metrics) = get(&state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("peercam_viewers 1\n"), "{metrics}");
    assert!(metrics.contains("peercam_test_media 1\n"), "{metrics}");

    send(&mut ws, json!({"bye": {}})).await;
    assert_eq!(next(&mut ws).await, json!({"bye": {}}));
    assert_eq!(
        media.log(),
        ["answer h264 pt 108", "candidate", "end", "close"]
    );
    assert_eq!(state.viewers_in_call(), 0);
}

#[tokio::test]
async fn the_viewer_limit_refuses_the_second_dial_without_building_a_peer() {
    let (state, media, addr) = start("max_viewers = 1").await;
    let (mut first, _) = connect(addr, "").await;
    let (mut second, hello) = connect(addr, "").await;
    assert_eq!(hello["hello"]["max_viewers"], 1);
    send(&mut first, offer()).await;
    assert_eq!(next(&mut first).await["sdp"]["type"], "answer");
    send(&mut second, offer()).await;
    let refused = next(&mut second).await;
    assert_eq!(refused["error"]["code"], "viewer_limit", "{refused}");
    assert_eq!(media.log(), ["answer h264 pt 108"]);
    let (_, metrics) = get(&state, "/metrics").await;
    assert!(
        metrics.contains("peercam_limit_hits_total{limit=\"viewers\"}"),
        "{metrics}"
    );
    // Closing the first socket hangs up its call and frees the slot.
    drop(first);
    wait_for("the slot freed", || state.viewers_in_call() == 0).await;
    send(&mut second, offer()).await;
    assert_eq!(next(&mut second).await["sdp"]["type"], "answer");
}

/// The next viewer count pushed on `ws` (other messages are skipped).
async fn next_counted(ws: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a viewer count within 5 s")
            .expect("open")
            .expect("no error");
        if let WsMessage::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if let Some(count) = value.get("viewers") {
                return count.clone();
            }
        }
    }
}

#[tokio::test]
async fn every_socket_hears_the_viewer_count_change() {
    let (_state, _media, addr) = start("max_viewers = 3").await;
    let (mut watcher, hello) = connect(addr, "").await;
    assert_eq!(hello["hello"]["viewers"], 0);
    assert!(
        hello["hello"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{hello}"
    );
    let (mut a, _) = connect(addr, "").await;
    let (mut b, _) = connect(addr, "").await;
    // Two dials at once: coalesced, the watcher hears the latest count.
    send(&mut a, offer()).await;
    send(&mut b, offer()).await;
    let mut count = next_counted(&mut watcher).await;
    if count["count"] == 1 {
        count = next_counted(&mut watcher).await;
    }
    assert_eq!(count, json!({"count": 2, "max": 3}));
    // The callers hear it too.
    let mut heard = next_counted(&mut a).await;
    if heard["count"] == 1 {
        heard = next_counted(&mut a).await;
    }
    assert_eq!(heard["count"], 2);
    send(&mut a, json!({"bye": {}})).await;
    assert_eq!(
        next_counted(&mut watcher).await,
        json!({"count": 1, "max": 3})
    );
    drop(b);
    assert_eq!(
        next_counted(&mut watcher).await,
        json!({"count": 0, "max": 3})
    );
}

#[tokio::test]
async fn a_reload_asks_viewers_to_dial_again_and_a_stop_waits_for_every_socket() {
    let (state, media, addr) = start("").await;
    let (mut viewer, _) = connect(addr, "").await;
    send(&mut viewer, offer()).await;
    assert_eq!(next(&mut viewer).await["sdp"]["type"], "answer");
    assert_eq!(next(&mut viewer).await["bitrate"]["target_kbps"], 1500);
    {
        let mut generation = state.media_for_reload().await;
        generation.retired.cancel();
        *generation = Generation::new(Arc::new(TestMedia::default()));
    }
    assert_eq!(
        next(&mut viewer).await,
        json!({"bye": {"reason": "reload"}})
    );
    assert_eq!(media.log().last().map(String::as_str), Some("close"));

    let (mut other, _) = connect(addr, "").await;
    let (mut room, _) = connect(addr, "?room=lab").await;
    state.shutdown.cancel();
    state.tasks.close();
    tokio::time::timeout(Duration::from_secs(1), state.tasks.wait())
        .await
        .expect("every connection task ends within a second of the stop");
    assert_eq!(
        next(&mut other).await,
        json!({"bye": {"reason": "shutdown"}})
    );
    assert_eq!(
        next(&mut room).await,
        Value::Null,
        "room sockets just close"
    );
}

#[tokio::test]
async fn pages_and_probes_answer_in_process() {
    let (state, _media, _addr) = start("").await;
    let (status, page) = get(&state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("open-warning"), "no password: the page warns");
    assert_eq!(
        get(&state, "/healthz").await,
        (StatusCode::OK, "ok\n".to_owned())
    );
    let (status, _) = get(&state, "/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn plain_http_on_the_https_port_is_sent_to_the_https_url() {
    let head = b"GET /app.js?x=1 HTTP/1.1\r\nHost: cam.local:7000\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        https_url(head),
        Some("https://cam.local:7000/app.js?x=1".to_owned())
    );
    assert_eq!(
        https_url(b"GET / HTTP/1.1\r\nhost: [fe80::1]:7000\r\n\r\n"),
        Some("https://[fe80::1]:7000/".to_owned())
    );
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET //evil.example/ HTTP/1.1\r\nHost: cam\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: cam x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.example/x\r\n\r\n",
        b"\xff\xfe",
    ] {
        assert_eq!(https_url(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// A request through the router from `remote`: (status, headers, body).
async fn call(
    state: &Arc<AppState>,
    remote: [u8; 4],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Body::from(body.to_owned())).expect("request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((remote, 40_000))));
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

const HERE: [u8; 4] = [127, 0, 0, 1];
const SDP: (&str, &str) = ("Content-Type", "application/sdp");
const FRAG: (&str, &str) = ("Content-Type", "application/trickle-ice-sdpfrag");

fn gathering() -> TestMedia {
    TestMedia {
        gathers: true,
        ..TestMedia::default()
    }
}

#[tokio::test]
async fn whep_answers_trickles_restarts_and_deletes() {
    let config = "[webrtc]\nice_servers = [{ urls = [\"stun:stun.example.org\"] }]\n";
    let (state, media, _) = start_with(config, gathering()).await;
    let (status, headers, answer) = call(&state, HERE, "POST", "/whep", &[SDP], &trickled()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/sdp");
    let location = header("location");
    assert!(
        location.starts_with("/whep/") && location.len() == 6 + 32,
        "{location}"
    );
    assert_eq!(
        header("link"),
        "<stun:stun.example.org>; rel=\"ice-server\""
    );
    assert_eq!(header("accept-patch"), "application/trickle-ice-sdpfrag");
    // The daemon's candidates are in the answer (it cannot trickle to a WHEP client).
    assert_eq!(
        answer,
        format!("{ANSWER}{MEDIA_SECTION}a={LOCAL_CANDIDATE}\r\na=end-of-candidates\r\n")
    );
    assert_eq!(header("etag"), "\"local\"");
    assert_eq!(media.log(), ["answer h264 pt 108"]);
    assert_eq!(state.viewers_in_call(), 1);
    assert_eq!(
        state.whep.metrics_text(),
        "peercam_whep_sessions 1\npeercam_whep_sessions_total 1\n"
    );

    // Trickle: one candidate and the end.
    let trickle = "a=ice-ufrag:\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
        a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\na=end-of-candidates\r\n";
    let trickle = trickle.replace("a=ice-ufrag:\r\n", "");
    let (status, _, body) = call(&state, HERE, "PATCH", &location, &[FRAG], &trickle).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(media.log()[1..], ["candidate", "end"]);
    // A bad address is refused by the session's checks, named in the reply.
    let bad = "a=candidate:1 1 udp 1 0.0.0.0 9 typ host\r\n";
    let (status, _, body) = call(&state, HERE, "PATCH", &location, &[FRAG], bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("0.0.0.0:9 is the unspecified address"),
        "{body}"
    );

    // An ICE restart: new credentials, the daemon's new ones back with a new ETag.
    let etag = header("etag");
    let restart = "a=ice-ufrag:fresh\r\na=ice-pwd:freshpasswordfreshpassword\r\n";
    let stale = [FRAG, ("If-Match", "\"not-it\"")];
    let (status, _, _) = call(&state, HERE, "PATCH", &location, &stale, restart).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let current = [FRAG, ("If-Match", etag.as_str())];
    let (status, headers, body) = call(&state, HERE, "PATCH", &location, &current, restart).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.starts_with("a=ice-ufrag:newfresh\r\na=ice-pwd:newpwd\r\n"),
        "{body}"
    );
    assert_eq!(headers.get("etag").expect("etag"), "\"newfresh\"");
    assert_eq!(
        media.log().last().map(String::as_str),
        Some("restart fresh")
    );

    // Another address may not end it; its owner may, once.
    let (status, _, _) = call(&state, [127, 0, 0, 9], "DELETE", &location, &[], "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&state, HERE, "DELETE", &location, &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(media.log().last().map(String::as_str), Some("close"));
    wait_for("the session gone", || {
        state
            .whep
            .metrics_text()
            .starts_with("peercam_whep_sessions 0")
    })
    .await;
    let (status, _, _) = call(&state, HERE, "DELETE", &location, &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(state.viewers_in_call(), 0);
}

#[tokio::test]
async fn whep_refuses_bad_requests_with_a_status_that_names_the_problem() {
    let (state, media, _) = start_with("[limits]\nmax_viewers = 1\n", gathering()).await;
    let post = |headers: Vec<(&'static str, &'static str)>, body: String| {
        let state = state.clone();
        async move { call(&state, HERE, "POST", "/whep", &headers, &body).await }
    };
    let (status, _, body) = post(vec![("Content-Type", "application/json")], CHROMIUM.into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body.contains("application/sdp"), "{body}");
    let (status, _, body) = post(vec![SDP], "{\"sdp\": 1}".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not an SDP offer"), "{body}");
    let (status, _, body) = post(vec![SDP], format!("v=0\r\n{}", "a=x\r\n".repeat(20_000))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("65536"), "{body}");
    let vp8_only = CHROMIUM.replace("H264", "H265");
    let (status, _, body) = post(vec![SDP], vp8_only).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{body}");
    for (method, path) in [("PATCH", "/whep/0123"), ("DELETE", "/whep/0123")] {
        let (status, _, _) = call(&state, HERE, method, path, &[FRAG], "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    assert!(
        media.log().is_empty(),
        "no peer was built: {:?}",
        media.log()
    );

    // The viewer limit counts WHEP viewers: the second gets 503 and a Retry-After.
    let (status, _, _) = post(vec![SDP], CHROMIUM.into()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, headers, body) = post(vec![SDP], CHROMIUM.into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("viewer limit 1"), "{body}");
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn whep_from_another_origin_needs_cors_origins() {
    let config = "[server]\npassword = \"correct horse\"\n\
                  cors_origins = [\"https://player.example.org\"]\n";
    let (state, _media, _) = start_with(config, gathering()).await;
    let allowed = ("Origin", "https://player.example.org");
    // The preflight needs no password and says what may be sent.
    let (status, headers, _) = call(&state, HERE, "OPTIONS", "/whep", &[allowed], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers.get("access-control-allow-origin").expect("ACAO"),
        "https://player.example.org"
    );
    let allow = headers
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        allow.contains("authorization") && allow.contains("content-type"),
        "{allow}"
    );
    // Without the password: 401, readable by the page (CORS headers on errors too).
    let (status, headers, _) = call(&state, HERE, "POST", "/whep", &[allowed, SDP], CHROMIUM).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("access-control-allow-origin"));
    assert_eq!(
        headers.get("www-authenticate").expect("a challenge"),
        "Bearer realm=\"peercam\""
    );
    let bearer = ("Authorization", "Bearer correct horse");
    let (status, headers, _) = call(
        &state,
        HERE,
        "POST",
        "/whep",
        &[allowed, SDP, bearer],
        CHROMIUM,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let exposed = headers
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        exposed.contains("location") && exposed.contains("etag"),
        "{exposed}"
    );
    // Any other site's page is refused before the password is looked at.
    let foreign = ("Origin", "https://evil.example.net");
    for method in ["OPTIONS", "POST"] {
        let (status, _, body) = call(
            &state,
            HERE,
            method,
            "/whep",
            &[foreign, SDP, bearer],
            CHROMIUM,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}");
        assert!(body.contains("cors_origins"), "{body}");
    }
}

#[tokio::test]
async fn whep_takes_what_mediamtx_and_go2rtc_send() {
    let config = "[server]\npassword = \"correct horse\"\n\
                  [webrtc]\nice_servers = [{ urls = [\"stun:stun.example.org\"] }]\n";
    let (state, _media, _) = start_with(config, gathering()).await;
    // MediaMTX asks OPTIONS with its bearer token first: PATCH listed (so it trickles),
    // and the ICE servers as Link headers; without the password, no ICE servers.
    let bearer = ("Authorization", "Bearer correct horse");
    let (status, headers, _) = call(&state, HERE, "OPTIONS", "/whep", &[bearer], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let methods = headers
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(methods.contains("PATCH"), "{methods}");
    assert_eq!(
        headers.get("link").expect("Link"),
        "<stun:stun.example.org>; rel=\"ice-server\""
    );
    let (status, headers, _) = call(&state, HERE, "OPTIONS", "/whep", &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!headers.contains_key("link"));
    // go2rtc puts the password in the URL (http://peercam:PASSWORD@host/whep): Basic.
    let basic = ("Authorization", "Basic cGVlcmNhbTpjb3JyZWN0IGhvcnNl");
    let (status, _, body) = call(&state, HERE, "POST", "/whep", &[SDP, basic], CHROMIUM).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wrong = ("Authorization", "Basic cGVlcmNhbTp3cm9uZw==");
    let (status, _, _) = call(&state, HERE, "POST", "/whep", &[SDP, wrong], CHROMIUM).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_snapshot_before_the_first_frame_is_a_503_that_says_why() {
    let (state, _media, _addr) = start("").await;
    let (status, body) = get(&state, "/snapshot.jpg").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no picture yet"), "{body}");
    // A bad query is refused before the picture is looked at.
    let (status, body) = get(&state, "/snapshot.jpg?width=big").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("width=big is not a whole number"), "{body}");
    let (_, metrics) = get(&state, "/metrics").await;
    assert!(
        metrics.contains("peercam_snapshots_total{result=\"failed\"} 1\n")
            && metrics.contains("peercam_limit_hits_total{limit=\"snapshots\"} "),
        "{metrics}"
    );
}
