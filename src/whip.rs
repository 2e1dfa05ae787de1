//! WHIP publishing (RFC 9725): one task per `[[publish]]` target sends the daemon's stream
//! to a WHIP server (an SFU such as MediaMTX, LiveKit or Janus behind a WHIP front), which
//! then serves any number of viewers while the camera sends one stream. The published peer
//! takes its media from the same encoders as every viewer (a keyframe when it connects; the
//! server's PLI/FIR honoured like a browser's).
//!
//! Each task drives a sans-IO [`Publication`] (offer, POST, answer, connect deadline,
//! backoff, DELETE): the task performs its outputs with HTTP (reqwest, redirects followed,
//! every request bounded in time) and a webrtc-rs peer (`peer/`).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use reqwest::header::{self, HeaderMap};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{IceServer, PublishTarget, WebrtcSettings};
use crate::deadline::sleep_until;
use crate::hub::MediaHub;
use crate::logging::client_str;
use crate::peer::{PeerFactory, ViewerPeer, PEER_EVENT_CAPACITY};
use crate::session::codec::{self, OFFER_OPUS_PT};
use crate::session::plan::{AnswerPlan, PeerEvent};
use crate::session::protocol::IceCandidate;
use crate::session::publish::{Input, Output, Posted, Publication, Report, State};
use crate::session::sdpfrag;

/// Each HTTP request to a WHIP server gets this long, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an offer waits for the daemon's candidates before it is sent.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long a stop waits for the DELETEs, all targets together.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Redirects followed for one POST.
const MAX_REDIRECTS: usize = 5;

/// What `/metrics` shows of one target.
#[derive(Debug)]
pub struct TargetStats {
    /// The target's URL (its label).
    pub url: String,
    state: AtomicU8,
    reconnects: AtomicU64,
    sent_bytes: Arc<AtomicU64>,
}

/// The running publications.
pub struct Publishers {
    running: Vec<Running>,
}

struct Running {
    target: PublishTarget,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<TargetStats>,
}

impl Publishers {
    /// Starts one publication per target, on `hub`'s media with peers from `webrtc`.
    pub fn start(
        targets: &[PublishTarget],
        hub: &Arc<MediaHub>,
        webrtc: &WebrtcSettings,
    ) -> Publishers {
        let mut publishers = Publishers {
            running: Vec::new(),
        };
        publishers.add(targets, hub, webrtc);
        publishers
    }

    fn add(&mut self, targets: &[PublishTarget], hub: &Arc<MediaHub>, webrtc: &WebrtcSettings) {
        let Some(client) = http_client() else {
            return;
        };
        for target in targets {
            let stats = Arc::new(TargetStats {
                url: target.url.clone(),
                state: AtomicU8::new(State::Waiting.metric()),
                reconnects: AtomicU64::new(0),
                sent_bytes: Arc::new(AtomicU64::new(0)),
            });
            let stop = CancellationToken::new();
            let task = tokio::spawn(
                Task {
                    target: target.clone(),
                    hub: hub.clone(),
                    peers: PeerFactory::new(webrtc.clone()),
                    client: client.clone(),
                    stats: stats.clone(),
                    peer: None,
                    link_ice_servers: Vec::new(),
                }
                .run(stop.clone()),
            );
            info!("publish: sending the stream to {}", target.url);
            self.running.push(Running {
                target: target.clone(),
                stop,
                task,
                stats,
            });
        }
    }

    /// After a reload: targets no longer listed, or changed, are stopped (their sessions
    /// deleted) and the new ones started; when the media pipeline was replaced
    /// (`media_changed`), every target starts again on the new `hub`.
    pub async fn reload(
        &mut self,
        targets: &[PublishTarget],
        hub: &Arc<MediaHub>,
        webrtc: &WebrtcSettings,
        media_changed: bool,
    ) {
        let (keep, stop): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| !media_changed && targets.contains(&r.target));
        stop_all(stop).await;
        let new: Vec<PublishTarget> = targets
            .iter()
            .filter(|t| !keep.iter().any(|r| r.target == **t))
            .cloned()
            .collect();
        self.running = keep;
        self.add(&new, hub, webrtc);
    }

    /// Stops every publication: sessions deleted (waiting at most [`STOP_GRACE`]).
    pub async fn stop(self) {
        stop_all(self.running).await;
    }

    /// The targets' figures for `/metrics`.
    pub fn stats(&self) -> Vec<Arc<TargetStats>> {
        self.running.iter().map(|r| r.stats.clone()).collect()
    }
}

/// Stops `running` together: every session is deleted in parallel, and the wait for all of
/// them ends [`STOP_GRACE`] after the start (a dead server cannot hold up a stop).
async fn stop_all(running: Vec<Running>) {
    for r in &running {
        r.stop.cancel();
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for r in running {
        if tokio::time::timeout_at(deadline, r.task).await.is_err() {
            warn!(
                "publish: {} did not end its session within {STOP_GRACE:?}",
                r.target.url
            );
        }
    }
}

/// Prometheus lines for `targets`: state (0 waiting, 1 offering, 2 posting, 3 connecting,
/// 4 live, 5 stopped), reconnects and RTP bytes sent, per target URL.
pub fn metrics_text(targets: &[Arc<TargetStats>]) -> String {
    let mut out = String::new();
    for t in targets {
        let url = t.url.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "peercam_publish_state{{target=\"{url}\"}} {}\n\
             peercam_publish_reconnects_total{{target=\"{url}\"}} {}\n\
             peercam_publish_sent_bytes_total{{target=\"{url}\"}} {}\n",
            t.state.load(Ordering::Relaxed),
            t.reconnects.load(Ordering::Relaxed),
            t.sent_bytes.load(Ordering::Relaxed),
        ));
    }
    out
}

/// The HTTP client for every target: rustls with ring and the system's certificates, every
/// request bounded. Redirects are followed by [`Task::post`] itself: reqwest drops the
/// `Authorization` header when a redirect leaves the host, and a WHIP server that sends a
/// publisher to another node expects its token there.
fn http_client() -> Option<reqwest::Client> {
    // reqwest's rustls takes the process's default provider; the daemon uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("peercam/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => Some(client),
        Err(e) => {
            warn!("publish: cannot make an HTTP client: {e}; nothing is published");
            None
        }
    }
}

/// One target's task: the publication and what performs its outputs.
struct Task {
    target: PublishTarget,
    hub: Arc<MediaHub>,
    peers: PeerFactory,
    client: reqwest::Client,
    stats: Arc<TargetStats>,
    /// The peer of the current try.
    peer: Option<ViewerPeer>,
    /// ICE servers the WHIP server offered (`Link: rel="ice-server"`), used from the next
    /// peer on.
    link_ice_servers: Vec<IceServer>,
}

impl Task {
    async fn run(mut self, stop: CancellationToken) {
        let mut publication = Publication::new(Instant::now(), rand::random());
        // A new channel per peer: a closed peer's last events cannot reach the next try.
        let (_, mut events) = mpsc::channel::<PeerEvent>(1);
        loop {
            let deadline = loop {
                match publication.poll_output() {
                    Output::Timeout(at) => break at,
                    output => self.perform(output, &mut publication, &mut events).await,
                }
            };
            self.stats
                .state
                .store(publication.state().metric(), Ordering::Relaxed);
            self.stats
                .reconnects
                .store(publication.reconnects(), Ordering::Relaxed);
            if publication.state() == State::Stopped {
                info!("publish: stopped sending to {}", self.target.url);
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => publication.handle_input(Input::Stop, Instant::now()),
                Some(event) = events.recv() => {
                    publication.handle_input(Input::Peer(event), Instant::now());
                }
                _ = sleep_until(deadline) => publication.handle_timeout(Instant::now()),
            }
        }
    }

    async fn perform(
        &mut self,
        output: Output,
        publication: &mut Publication,
        events: &mut mpsc::Receiver<PeerEvent>,
    ) {
        let now = Instant::now;
        match output {
            Output::BuildPeer => {
                let (tx, rx) = mpsc::channel(PEER_EVENT_CAPACITY);
                *events = rx;
                let offered = self.build_peer(tx, events).await;
                publication.handle_input(Input::Offered(offered), now());
            }
            Output::Post { offer_sdp } => {
                let posted = self.post(offer_sdp).await;
                publication.handle_input(Input::Posted(posted), now());
            }
            Output::ApplyAnswer { answer_sdp } => {
                let applied = match &self.peer {
                    Some(peer) => peer
                        .apply_answer(answer_sdp)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("no peer".to_owned()),
                };
                publication.handle_input(Input::AnswerApplied(applied), now());
            }
            Output::Patch {
                location,
                etag,
                candidate,
            } => self.patch(&location, etag.as_deref(), candidate).await,
            Output::ClosePeer => {
                if let Some(peer) = self.peer.take() {
                    peer.close().await;
                }
            }
            Output::Delete { location } => self.delete(&location).await,
            Output::Report(Report::Live { attempts }) => {
                let after = if attempts > 1 {
                    format!(" (after {attempts} tries)")
                } else {
                    String::new()
                };
                info!("publish: live at {}{after}", self.target.url);
            }
            Output::Report(Report::Down { reason, retry_in }) => warn!(
                "publish: {}: {reason}; trying again in {:.1} s, and on (backing off up to \
                 30 s; further failures are counted in /metrics, not logged)",
                self.target.url,
                retry_in.as_secs_f64()
            ),
            Output::Timeout(_) => {}
        }
    }

    /// A send-only peer and its offer with the daemon's candidates (gathered for at most
    /// [`GATHER_TIMEOUT`]).
    async fn build_peer(
        &mut self,
        tx: mpsc::Sender<PeerEvent>,
        events: &mut mpsc::Receiver<PeerEvent>,
    ) -> Result<String, String> {
        let running = self.hub.video_codecs();
        let Some(video) = codec::for_offer(
            &self.target.codecs,
            &running,
            self.hub.camera_h264_profile(),
        ) else {
            let wanted: Vec<&str> = self.target.codecs.iter().map(|c| c.config_name()).collect();
            return Err(format!(
                "none of the codecs to publish ({}) is being encoded",
                wanted.join(", ")
            ));
        };
        let Some(mut tap) = self.hub.tap(&video) else {
            return Err(format!("the {} encoder is not running", video.codec));
        };
        tap.sent_bytes = Some(self.stats.sent_bytes.clone());
        let plan = AnswerPlan {
            opus_payload_type: self.hub.has_audio().then_some(OFFER_OPUS_PT),
            video,
        };
        let (peer, offer) = self
            .peers
            .offer(&plan, tap, tx, &self.link_ice_servers)
            .await
            .map_err(|e| e.to_string())?;
        self.peer = Some(peer);
        let mut candidates = Vec::new();
        let mut complete = false;
        let until = tokio::time::Instant::now() + GATHER_TIMEOUT;
        while !complete {
            match tokio::time::timeout_at(until, events.recv()).await {
                Ok(Some(PeerEvent::LocalCandidate(c))) => candidates.push(c.candidate),
                Ok(Some(PeerEvent::EndOfCandidates)) => complete = true,
                Ok(Some(other)) => debug!("publish: {other:?} while gathering"),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(sdpfrag::with_candidates(&offer, &candidates, complete))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.target.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// POSTs the offer, following 307 and 308 redirects (with the token, but never from
    /// https:// to http://); the session, or why not (in words for the log).
    async fn post(&mut self, offer_sdp: String) -> Result<Posted, String> {
        let mut url = reqwest::Url::parse(&self.target.url).map_err(|e| e.to_string())?;
        let mut redirects = 0;
        let response = loop {
            let request = self
                .authorized(self.client.post(url.clone()))
                .header(header::CONTENT_TYPE, "application/sdp")
                .body(offer_sdp.clone());
            let response = request.send().await.map_err(|e| plain_error(&e))?;
            let status = response.status();
            if status != reqwest::StatusCode::TEMPORARY_REDIRECT
                && status != reqwest::StatusCode::PERMANENT_REDIRECT
            {
                break response;
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let next = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| format!("the server answered {status} without a usable Location"))?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(format!(
                    "the server redirected from https:// to {}; not sending the token there",
                    client_str(next.as_str()).max(200)
                ));
            }
            debug!("publish: {status}: {url} sends the offer to {next}");
            url = next;
        };
        let status = response.status();
        let url = response.url().clone();
        let headers = response.headers().clone();
        let body = read_limited(response).await?;
        if status != reqwest::StatusCode::CREATED {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "the server answered {status}: {}",
                client_str(text.trim()).max(200)
            ));
        }
        let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
            return Err("the server's 201 has no Location".to_owned());
        };
        let location = url
            .join(location)
            .map_err(|e| format!("the server's Location is not a URL: {e}"))?;
        let answer_sdp = String::from_utf8(body)
            .map_err(|_| "the server's answer is not UTF-8 text".to_owned())?;
        if !answer_sdp.trim_start().starts_with("v=0") {
            return Err("the server's 201 body is not an SDP answer".to_owned());
        }
        self.link_ice_servers = ice_servers_from_links(&headers);
        Ok(Posted {
            location: location.to_string(),
            answer_sdp,
            trickle: accepts_trickle(&headers),
            etag: headers
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
    }

    /// Trickles one late candidate (best effort).
    async fn patch(&self, location: &str, etag: Option<&str>, candidate: Option<IceCandidate>) {
        let mut body = String::new();
        if let Some(c) = &candidate {
            let mid = c.sdp_mid.as_deref().unwrap_or("0");
            body.push_str(&format!(
                "m=audio 9 RTP/AVP 0\r\na=mid:{mid}\r\na={}\r\n",
                c.candidate.trim_start_matches("a=")
            ));
        } else {
            body.push_str("a=end-of-candidates\r\n");
        }
        let mut request = self
            .authorized(self.client.patch(location))
            .header(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")
            .body(body);
        if let Some(etag) = etag {
            request = request.header(header::IF_MATCH, etag);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => debug!("publish: PATCH {location}: {}", r.status()),
            Err(e) => debug!("publish: PATCH {location}: {}", plain_error(&e)),
        }
    }

    /// Ends the session on the server (best effort).
    async fn delete(&self, location: &str) {
        match self.authorized(self.client.delete(location)).send().await {
            Ok(r) if r.status().is_success() => debug!("publish: deleted {location}"),
            Ok(r) => debug!("publish: DELETE {location}: {}", r.status()),
            Err(e) => debug!("publish: DELETE {location}: {}", plain_error(&e)),
        }
    }
}

/// A reqwest error as one line with its causes (reqwest's own text says only "error sending
/// request").
fn plain_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The body, at most [`MAX_ANSWER_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| plain_error(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the server's answer is over {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether the server takes trickled candidates: `Accept-Patch` names the sdpfrag type.
fn accepts_trickle(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept-patch")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.to_ascii_lowercase()
                .contains("application/trickle-ice-sdpfrag")
        })
}

/// ICE servers from `Link: <url>; rel="ice-server"; username="…"; credential="…"` headers
/// (RFC 9725 section 4.6); malformed ones are skipped.
fn ice_servers_from_links(headers: &HeaderMap) -> Vec<IceServer> {
    let mut servers = Vec::new();
    for value in headers.get_all(header::LINK).iter() {
        let Ok(value) = value.to_str() else { continue };
        for link in split_links(value) {
            if let Some(server) = ice_server_link(link) {
                servers.push(server);
            }
        }
    }
    servers
}

/// The links of one `Link` header value (comma-separated, commas inside quotes kept).
fn split_links(value: &str) -> Vec<&str> {
    let mut links = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                links.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    links.push(value[start..].trim());
    links
}

fn ice_server_link(link: &str) -> Option<IceServer> {
    let rest = link.strip_prefix('<')?;
    let (url, params) = rest.split_once('>')?;
    let valid_url = ["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    let mut rel = false;
    let (mut username, mut credential) = (None, None);
    for param in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches('"')
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
        match name.trim().to_ascii_lowercase().as_str() {
            "rel" => rel = value.split_whitespace().any(|r| r == "ice-server"),
            "username" => username = Some(value),
            "credential" => credential = Some(value),
            _ => {}
        }
    }
    (rel && valid_url).then(|| IceServer {
        urls: vec![url.to_owned()],
        username,
        credential,
        secret: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_ice_servers() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::LINK,
            "<stun:stun.example.net>; rel=\"ice-server\", <https://x/y>; rel=\"next\""
                .parse()
                .expect("header"),
        );
        headers.append(
            header::LINK,
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u,1\"; \
             credential=\"p\\\"w\"; credential-type=\"password\""
                .parse()
                .expect("header"),
        );
        headers.append(header::LINK, "garbage".parse().expect("header"));
        let servers = ice_servers_from_links(&headers);
        assert_eq!(servers.len(), 2, "{servers:?}");
        assert_eq!(servers[0].urls, ["stun:stun.example.net"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].urls, ["turn:turn.example.net?transport=udp"]);
        assert_eq!(servers[1].username.as_deref(), Some("u,1"));
        assert_eq!(servers[1].credential.as_deref(), Some("p\"w"));
    }

    #[test]
    fn trickle_is_used_only_when_the_server_accepts_it() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_trickle(&headers));
        headers.insert(
            "accept-patch",
            "application/trickle-ice-sdpfrag".parse().expect("header"),
        );
        assert!(accepts_trickle(&headers));
    }

    #[test]
    fn metrics_name_each_target() {
        let stats = Arc::new(TargetStats {
            url: "https://sfu/whip?x=\"1\"".to_owned(),
            state: AtomicU8::new(4),
            reconnects: AtomicU64::new(2),
            sent_bytes: Arc::new(AtomicU64::new(1234)),
        });
        let text = metrics_text(&[stats]);
        assert!(
            text.contains("peercam_publish_state{target=\"https://sfu/whip?x=\\\"1\\\"\"} 4\n"),
            "{text}"
        );
        assert!(text.contains(
            "peercam_publish_reconnects_total{target=\"https://sfu/whip?x=\\\"1\\\"\"} 2\n"
        ));
        assert!(text.contains(
            "peercam_publish_sent_bytes_total{target=\"https://sfu/whip?x=\\\"1\\\"\"} 1234\n"
        ));
    }
}
