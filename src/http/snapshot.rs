//! `GET /snapshot.jpg[?width=N]`: the newest picture as a JPEG, for Home Assistant's
//! generic camera ("still image URL") and anything else that polls stills (docs/snapshot.md).
//!
//! Nothing is made until someone asks: the capture thread only keeps a reference to the
//! newest frame ([`crate::pipeline::latest`]). A request renders it on a blocking thread
//! ([`crate::snapshot::render`]) within [`RENDER_DEADLINE`]; at most [`MAX_AT_ONCE`] renders
//! run at once, [`MAX_PER_ADDRESS`] for one address, and a request for the same width within
//! [`REUSE_WITHIN`] of the last render gets that JPEG again without a render.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{plain_text as text, AppState};
use crate::limits::{address_key, AddressCounts, LimitLog};
use crate::pipeline::latest::NoPicture;
use crate::snapshot;

/// Renders running at once, in all (each takes a core for a few to a few hundred ms).
pub const MAX_AT_ONCE: usize = 2;
/// Renders running at once for one address (an IPv6 /64 counts as one).
pub const MAX_PER_ADDRESS: usize = 1;
/// A render must finish within this, or the request is answered 503.
pub const RENDER_DEADLINE: Duration = Duration::from_secs(5);
/// A JPEG rendered this recently (for the same width) is sent again instead of a new one.
pub const REUSE_WITHIN: Duration = Duration::from_millis(100);

/// Snapshot requests refused because too many renders ran.
static BUSY: LimitLog = LimitLog::new("snapshots at once (2 in all, 1 per address)");
/// Renders that failed or missed their deadline, logged throttled (one line per episode).
static FAILED: LimitLog = LimitLog::new("/snapshot.jpg");

/// The renders in progress, the last JPEG and the counters.
#[derive(Debug)]
pub struct Snapshots {
    slots: Arc<Semaphore>,
    per_address: Arc<Mutex<AddressCounts>>,
    last: Mutex<Option<Recent>>,
    served: AtomicU64,
    reused: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, Clone)]
struct Recent {
    made: Instant,
    width: Option<u32>,
    jpeg: Bytes,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            slots: Arc::new(Semaphore::new(MAX_AT_ONCE)),
            per_address: Arc::default(),
            last: Mutex::default(),
            served: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

/// A render's place in the total and per-address counts; dropping it frees both.
#[derive(Debug)]
struct Slot {
    _total: OwnedSemaphorePermit,
    per_address: Arc<Mutex<AddressCounts>>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.per_address).remove(self.key);
    }
}

impl Snapshots {
    /// A render slot for `ip`, or `None` when [`MAX_AT_ONCE`] or [`MAX_PER_ADDRESS`] are
    /// taken.
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let key = address_key(ip);
        let mut counts = lock(&self.per_address);
        if counts.get(key) >= MAX_PER_ADDRESS {
            return None;
        }
        let total = self.slots.clone().try_acquire_owned().ok()?;
        counts.add(key);
        Some(Slot {
            _total: total,
            per_address: self.per_address.clone(),
            key,
        })
    }

    /// The JPEG rendered for `width` within [`REUSE_WITHIN`] of `now`, if any.
    fn recent(&self, width: Option<u32>, now: Instant) -> Option<Bytes> {
        let last = lock(&self.last);
        let recent = last.as_ref()?;
        (recent.width == width && now.saturating_duration_since(recent.made) < REUSE_WITHIN)
            .then(|| recent.jpeg.clone())
    }

    fn remember(&self, width: Option<u32>, jpeg: Bytes, made: Instant) {
        *lock(&self.last) = Some(Recent { made, width, jpeg });
    }

    /// `/metrics` lines: stills sent (rendered or reused) and requests that found no
    /// picture or whose render failed; refusals for load are limit hits.
    pub fn metrics_text(&self) -> String {
        format!(
            "peercam_snapshots_total{{result=\"rendered\"}} {}\n\
             peercam_snapshots_total{{result=\"reused\"}} {}\n\
             peercam_snapshots_total{{result=\"failed\"}} {}\n",
            self.served.load(Ordering::Relaxed),
            self.reused.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// How often the snapshot limit was hit, for `/metrics`.
pub fn limit_hits() -> [(&'static str, u64); 1] {
    [("snapshots", BUSY.hits())]
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every write leaves the value whole.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The query string: `width` only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnapshotQuery {
    width: Option<String>,
}

/// `?width=`, parsed; `Err` is the 400 body.
fn width_of(query: Result<Query<SnapshotQuery>, QueryRejection>) -> Result<Option<u32>, String> {
    let query = query.map_err(|rejection| {
        format!(
            "400 Bad Request: {}; the only parameter is width=N (pixels)",
            crate::logging::client_str(&rejection.body_text())
        )
    })?;
    let Some(text) = query.0.width else {
        return Ok(None);
    };
    text.parse::<u32>().map(Some).map_err(|_| {
        format!(
            "400 Bad Request: width={} is not a whole number of pixels; use e.g. width=640",
            crate::logging::client_str(&text)
        )
    })
}

/// [`super::require_login`] with a Basic challenge besides the Bearer one in a 401.
pub(super) async fn require_login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let Some(mut refusal) = super::login_refusal(&state.auth, remote, request.headers()) else {
        return next.run(request).await;
    };
    if refusal.status() == StatusCode::UNAUTHORIZED {
        refusal.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"peercam\", charset=\"UTF-8\""),
        );
    }
    refusal
}

/// `GET /snapshot.jpg`.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Response {
    let snapshots = &state.snapshots;
    let width = match width_of(query) {
        Ok(width) => width,
        Err(body) => return text(StatusCode::BAD_REQUEST, &body),
    };
    let picture = match state.media().await.media.latest_picture() {
        Ok(picture) => picture,
        Err(why) => {
            snapshots.failed.fetch_add(1, Ordering::Relaxed);
            return no_picture(why);
        }
    };
    // A width the picture cannot have is refused before any work.
    let width = match snapshot::checked_width(&picture, width) {
        Ok(checked) => checked,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("400 Bad Request: {e}")),
    };
    let now = Instant::now();
    if let Some(jpeg) = snapshots.recent(width, now) {
        snapshots.reused.fetch_add(1, Ordering::Relaxed);
        return jpeg_response(jpeg);
    }
    let Some(slot) = snapshots.admit(remote.ip()) else {
        BUSY.hit(|| format!("refusing a snapshot for {remote}: others are being made"));
        return with_retry(
            text(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "429 Too Many Requests: snapshots are being made already (at most \
                     {MAX_AT_ONCE} at once, {MAX_PER_ADDRESS} per address); try again in a \
                     second"
                ),
            ),
            1,
        );
    };
    let render = tokio::task::spawn_blocking(move || {
        // The slot is held until the work is done, even past the deadline.
        let _slot = slot;
        snapshot::render(&picture, width)
    });
    let failure = match tokio::time::timeout(RENDER_DEADLINE, render).await {
        Ok(Ok(Ok(still))) => {
            snapshots.served.fetch_add(1, Ordering::Relaxed);
            let jpeg = Bytes::from(still.jpeg);
            snapshots.remember(width, jpeg.clone(), now);
            return jpeg_response(jpeg);
        }
        Ok(Ok(Err(e))) => format!("the snapshot failed: {e}"),
        Ok(Err(join)) => format!("the snapshot failed: its thread stopped ({join})"),
        Err(_) => format!(
            "the snapshot took longer than {} s to make; try again",
            RENDER_DEADLINE.as_secs()
        ),
    };
    snapshots.failed.fetch_add(1, Ordering::Relaxed);
    FAILED.hit(|| format!("snapshot for {remote}: {failure}"));
    with_retry(
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("503 Service Unavailable: {failure}"),
        ),
        1,
    )
}

/// 503 saying why there is no picture, with a `Retry-After`.
fn no_picture(why: NoPicture) -> Response {
    let body = match why {
        NoPicture::NotYet => "503 Service Unavailable: no picture yet: the camera is starting; \
                              try again in a second"
            .to_owned(),
        NoPicture::Stalled(age) => format!(
            "503 Service Unavailable: the camera has sent no frame for {} s; see the daemon's \
             log (journalctl -u peercam)",
            age.as_secs()
        ),
    };
    with_retry(text(StatusCode::SERVICE_UNAVAILABLE, &body), 1)
}

fn jpeg_response(jpeg: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response()
}

fn with_retry(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use axum::http::Uri;

    use super::*;

    fn width(query: &str) -> Result<Option<u32>, String> {
        let uri: Uri = format!("/snapshot.jpg{query}").parse().expect("uri");
        width_of(Query::try_from_uri(&uri))
    }

    #[test]
    fn the_query_is_width_only_in_whole_pixels() {
        assert_eq!(width(""), Ok(None));
        assert_eq!(width("?width=320"), Ok(Some(320)));
        let not_a_number = width("?width=wide").expect_err("refused");
        assert!(
            not_a_number.contains("width=wide is not a whole number"),
            "{not_a_number}"
        );
        assert!(width("?width=-5").is_err());
        let unknown = width("?height=5").expect_err("refused");
        assert!(
            unknown.contains("unknown field `height`") && unknown.contains("width=N"),
            "{unknown}"
        );
    }

    #[test]
    fn renders_are_capped_in_all_and_per_address() {
        let snapshots = Snapshots::default();
        let a = IpAddr::from([192, 0, 2, 1]);
        let first = snapshots.admit(a).expect("a first render");
        assert!(snapshots.admit(a).is_none(), "one per address");
        let b = snapshots
            .admit(IpAddr::from([192, 0, 2, 2]))
            .expect("another address");
        assert!(
            snapshots.admit(IpAddr::from([192, 0, 2, 3])).is_none(),
            "{MAX_AT_ONCE} in all"
        );
        drop(first);
        drop(b);
        assert!(snapshots.admit(a).is_some(), "slots come back");
        assert!(lock(&snapshots.per_address).is_empty(), "and go again");
        assert_eq!(snapshots.slots.available_permits(), MAX_AT_ONCE);
    }

    #[test]
    fn a_recent_jpeg_is_reused_for_the_same_width_only() {
        let snapshots = Snapshots::default();
        let then = Instant::now();
        snapshots.remember(Some(320), Bytes::from_static(b"jpeg"), then);
        assert_eq!(
            snapshots.recent(Some(320), then + Duration::from_millis(50)),
            Some(Bytes::from_static(b"jpeg"))
        );
        assert_eq!(snapshots.recent(None, then), None, "another width");
        assert_eq!(
            snapshots.recent(Some(320), then + REUSE_WITHIN),
            None,
            "too old"
        );
    }
}
