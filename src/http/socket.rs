//! The one loop every signaling socket runs (viewer mode and room mode alike, a browser's own
//! WebSocket or one relayed by `peercam relay`): it reads frames, enforces what the socket
//! promises (message size, UTF-8, close codes 1009 and 1007), sleeps until the conversation's
//! deadline, and passes everything to a [`Conversation`], which feeds its sans-IO session and
//! carries out the session's outputs.
//!
//! A relayed socket ([`Socket::relayed`]) reads the browser's messages from the relay link's
//! channel and writes them back through it. When the link itself goes (the relay restarts),
//! the conversation hears [`Input::SignalingLost`] and may go on without signaling: a viewer
//! whose call is up keeps it until the call ends by itself.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use log::info;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::deadline::sleep_until;
use crate::limits::LimitLog;
use crate::logging::client_str;
use crate::session::machine::Limit;
use crate::session::protocol::Message;
use crate::session::relay_wire;

/// Outgoing messages queued per socket before the writer applies back-pressure.
pub(super) const OUTBOX_CAPACITY: usize = 64;

/// How long a socket closed over a protocol error is kept before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Error replies logged per socket; a client that keeps sending garbage costs one summary
/// line when it leaves, not a line per message.
const LOGGED_ERRORS_PER_SOCKET: u32 = 5;

/// Pings a client may send per second. Browsers send none (pages cannot); a tool that pings
/// faster is flooding, and each ping asks for a pong it may never read.
const MAX_PINGS_PER_SECOND: u32 = 20;

/// A message the browser does not take within this closes the socket: it stopped reading.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// Characters of an error message written to the log: peercam's own words with what the
/// browser sent in them, which may be long.
pub(super) const LOGGED_MESSAGE_CHARS: usize = 300;

/// One throttled log and hit counter per limit a socket's session can hit, in the order of
/// [`Limit::METRICS`].
static LIMIT_LOGS: [LimitLog; Limit::METRICS.len()] = [
    LimitLog::new("[limits] max_viewers"),
    LimitLog::new("[limits] max_pending_dials"),
    LimitLog::new("[limits] pending_dials_per_address"),
    LimitLog::new("[limits] dials_per_minute"),
    LimitLog::new("[limits] ice_timeout_s"),
    LimitLog::new("[limits] idle_timeout_s"),
    LimitLog::new("5 s for DTLS after ICE"),
    LimitLog::new("20 remote candidates per call"),
    LimitLog::new("remote candidate address check"),
];

/// Counts and logs (throttled) a limit hit by the socket labelled `label`.
pub(super) fn limit_hit(label: &str, limit: &Limit) {
    if let Some(i) = Limit::METRICS.iter().position(|m| *m == limit.metric()) {
        LIMIT_LOGS[i].hit(|| format!("{label}: {}", limit.describe()));
    }
}

/// How often each limit of the sockets' sessions was hit, for `/metrics`.
pub(super) fn limit_hits() -> impl Iterator<Item = (&'static str, u64)> {
    Limit::METRICS
        .into_iter()
        .zip(LIMIT_LOGS.iter().map(LimitLog::hits))
}

/// What the loop hands to a conversation.
#[derive(Debug)]
pub(super) enum Input<'a, E> {
    /// The socket is open: send the greeting.
    Opened,
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary,
    /// A ping or pong: the browser is there.
    Heard,
    /// An event from outside the socket ([`Conversation::next_event`]).
    Event(E),
    /// The conversation's deadline passed.
    Timeout,
    /// The daemon is stopping.
    Shutdown,
    /// The media this conversation uses was replaced by a reload.
    Reload,
    /// The socket's transport went away without the browser closing it (a relayed socket
    /// whose relay link dropped): nothing more can be sent or heard. The conversation may go
    /// on (its call keeps its media) or end; [`Conversation::is_closed`] says which.
    SignalingLost,
}

/// One kind of WebSocket conversation: a session machine and the IO its outputs ask for.
pub(super) trait Conversation: Send {
    /// What arrives from outside the socket (peer events, relayed messages).
    type Event: Send;

    /// The next event from outside the socket; pending forever when there is none. Must be
    /// cancel-safe: the loop drops it when something else comes first.
    fn next_event(&mut self) -> impl Future<Output = Self::Event> + Send;

    /// Feeds `input`, which arrived at `now`, and carries out what follows.
    fn handle(
        &mut self,
        input: Input<'_, Self::Event>,
        now: Instant,
        socket: &mut Socket,
    ) -> impl Future<Output = ()> + Send;

    /// When the loop must pass [`Input::Timeout`]; `None`: no deadline.
    fn deadline(&self) -> Option<Instant>;

    /// Whether the conversation is over (the socket then closes).
    fn is_closed(&self) -> bool;

    /// Cleans up after the socket closed (hang up, leave the room).
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// Runs `conversation` on `socket` until either ends, the daemon stops (`shutdown`) or the
/// conversation's media is replaced (`retired`).
pub(super) async fn run<C: Conversation>(
    mut socket: Socket,
    mut conversation: C,
    shutdown: CancellationToken,
    retired: Option<CancellationToken>,
) {
    conversation.handle(Input::Opened, now(), &mut socket).await;
    while !conversation.is_closed() {
        let deadline = conversation.deadline();
        let frame = tokio::select! {
            _ = shutdown.cancelled() => {
                conversation.handle(Input::Shutdown, now(), &mut socket).await;
                break;
            }
            _ = cancelled(retired.as_ref()) => {
                conversation.handle(Input::Reload, now(), &mut socket).await;
                break;
            }
            _ = sleep_until(deadline) => {
                conversation.handle(Input::Timeout, now(), &mut socket).await;
                continue;
            }
            event = conversation.next_event() => {
                conversation.handle(Input::Event(event), now(), &mut socket).await;
                continue;
            }
            frame = socket.read() => frame,
        };
        let input = match &frame {
            Frame::Text(text) => Input::Text(text.as_str()),
            Frame::Binary => Input::Binary,
            Frame::Heard => Input::Heard,
            Frame::Closed => break,
            Frame::Lost => {
                socket.detach();
                Input::SignalingLost
            }
        };
        conversation.handle(input, now(), &mut socket).await;
    }
    conversation.finish().await;
    socket.close().await;
}

/// The current time, from tokio's clock (so paused-time tests move it).
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Waits for `token` to be cancelled, or forever without one.
async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// A frame as the conversation sees it.
pub(super) enum Frame {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary,
    /// A ping or pong.
    Heard,
    /// The browser closed the socket, or it broke.
    Closed,
    /// The relay link under a relayed socket went away (the browser did not close it).
    Lost,
}

/// What a relayed socket hears from the relay link.
#[derive(Debug)]
pub(super) enum Relayed {
    /// A text message from the browser.
    Text(Utf8Bytes),
    /// The browser closed its socket.
    Closed,
}

/// Where a socket's frames come from.
enum Reader {
    /// The browser's own WebSocket.
    WebSocket(SplitStream<WebSocket>),
    /// A browser behind the relay: its frames come from the relay link's task; the channel
    /// closing without [`Relayed::Closed`] means the link went away.
    Relayed(mpsc::Receiver<Relayed>),
    /// The transport is gone, the conversation goes on without it.
    Detached,
}

/// A signaling socket split into a reader (this) and a writer task fed through a bounded
/// outbox.
pub(super) struct Socket {
    reader: Reader,
    out: mpsc::Sender<WsMessage>,
    /// Ends early (with `true`) when the browser stopped reading.
    writer: JoinHandle<bool>,
    /// Pings in the current second, and when that second started.
    pings: (u32, tokio::time::Instant),
    /// `viewer 192.0.2.7:40000` or `room lab: 192.0.2.7:40000`: the start of every log line.
    label: String,
    /// Error replies sent so far.
    errors: u32,
    /// The close frame for a protocol error (1009, 1007), sent when the socket closes.
    close_frame: Option<CloseFrame>,
}

impl Socket {
    /// The browser's own WebSocket; `label` starts every log line of it.
    pub(super) fn websocket(ws: WebSocket, label: String) -> Socket {
        let (mut sink, stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<WsMessage>(OUTBOX_CAPACITY);
        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let close = matches!(message, WsMessage::Close(_));
                match tokio::time::timeout(WRITE_STALL, sink.send(message)).await {
                    Ok(Ok(())) if !close => {}
                    Ok(_) => break,
                    // Not reading: end here; the reader notices and the socket closes.
                    Err(_) => return true,
                }
            }
            let _ = tokio::time::timeout(WRITE_STALL, sink.close()).await;
            false
        });
        Socket::with(Reader::WebSocket(stream), out, writer, label)
    }

    /// A browser behind the relay, its id `id` on the link: frames arrive on `from_link`;
    /// what the conversation sends goes to `to_link` framed with the id. A link that does
    /// not take a message within [`WRITE_STALL`] ends the socket, like a browser that
    /// stopped reading.
    pub(super) fn relayed(
        from_link: mpsc::Receiver<Relayed>,
        to_link: mpsc::Sender<relay_wire::Frame>,
        id: u64,
        label: String,
    ) -> Socket {
        let (out, mut out_rx) = mpsc::channel::<WsMessage>(OUTBOX_CAPACITY);
        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let frame = match message {
                    WsMessage::Text(text) => relay_wire::Frame::Message {
                        id,
                        text: text.as_str().to_owned(),
                    },
                    WsMessage::Close(_) => relay_wire::Frame::Close { id },
                    _ => continue,
                };
                let close = matches!(frame, relay_wire::Frame::Close { .. });
                match tokio::time::timeout(WRITE_STALL, to_link.send(frame)).await {
                    Ok(Ok(())) if !close => {}
                    // Closed, or the link is gone: nothing more to write.
                    Ok(_) => break,
                    Err(_) => return true,
                }
            }
            false
        });
        Socket::with(Reader::Relayed(from_link), out, writer, label)
    }

    fn with(
        reader: Reader,
        out: mpsc::Sender<WsMessage>,
        writer: JoinHandle<bool>,
        label: String,
    ) -> Socket {
        Socket {
            reader,
            out,
            writer,
            label,
            errors: 0,
            close_frame: None,
            pings: (0, tokio::time::Instant::now()),
        }
    }

    /// The transport went away: from now on nothing is read, and what is sent goes nowhere.
    fn detach(&mut self) {
        self.reader = Reader::Detached;
    }

    /// The start of this socket's log lines.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// The next frame. A message over the size limit or text that is not UTF-8 ends the
    /// socket with close code 1009 or 1007, as RFC 6455 asks.
    async fn read(&mut self) -> Frame {
        let stream = match &mut self.reader {
            Reader::WebSocket(stream) => stream,
            Reader::Relayed(from_link) => {
                return tokio::select! {
                    next = from_link.recv() => match next {
                        Some(Relayed::Text(text)) => Frame::Text(text),
                        Some(Relayed::Closed) => Frame::Closed,
                        None => Frame::Lost,
                    },
                    stalled = &mut self.writer, if !self.writer.is_finished() => {
                        if stalled.unwrap_or(false) {
                            info!("{}: the relay link took nothing for {WRITE_STALL:?}; closing", self.label);
                            Frame::Closed
                        } else {
                            // The link's side of the channel is gone: so is the link.
                            Frame::Lost
                        }
                    }
                };
            }
            Reader::Detached => return std::future::pending().await,
        };
        let next = tokio::select! {
            next = stream.next() => next,
            stalled = &mut self.writer, if !self.writer.is_finished() => {
                if stalled.unwrap_or(false) {
                    info!("{}: not reading for {WRITE_STALL:?}; closing", self.label);
                }
                return Frame::Closed;
            }
        };
        match next {
            Some(Ok(WsMessage::Text(text))) => Frame::Text(text),
            Some(Ok(WsMessage::Binary(_))) => Frame::Binary,
            Some(Ok(WsMessage::Ping(_))) => {
                let now = tokio::time::Instant::now();
                if now.duration_since(self.pings.1) >= Duration::from_secs(1) {
                    self.pings = (0, now);
                }
                self.pings.0 += 1;
                if self.pings.0 > MAX_PINGS_PER_SECOND {
                    info!(
                        "{}: more than {MAX_PINGS_PER_SECOND} pings a second; closing",
                        self.label
                    );
                    self.close_frame = Some(CloseFrame {
                        code: 1008,
                        reason: "too many pings".into(),
                    });
                    return Frame::Closed;
                }
                Frame::Heard
            }
            Some(Ok(WsMessage::Pong(_))) => Frame::Heard,
            Some(Ok(WsMessage::Close(_))) | None => Frame::Closed,
            Some(Err(e)) => {
                info!("{}: WebSocket closed: {e}", self.label);
                self.close_frame = close_frame_for(e);
                Frame::Closed
            }
        }
    }

    /// Queues `message` for the browser (waits while the outbox is full). Error replies are
    /// logged, the first few of each socket.
    pub(super) async fn send(&mut self, message: &Message) {
        if let Message::Error(body) = message {
            self.errors += 1;
            // The message may quote what the browser sent (a message type, an SDP line).
            let text = client_str(&body.message).max(LOGGED_MESSAGE_CHARS);
            if self.errors < LOGGED_ERRORS_PER_SOCKET {
                info!("{}: {text}", self.label);
            } else if self.errors == LOGGED_ERRORS_PER_SOCKET {
                info!(
                    "{}: {text} (further errors on this socket are not logged)",
                    self.label
                );
            }
        }
        self.send_text(message.to_json().into()).await;
    }

    /// Queues `message` if the outbox has room, else drops it (for notices that a later
    /// one replaces, such as the viewer count).
    pub(super) fn try_send(&mut self, message: &Message) {
        let _ = self.out.try_send(WsMessage::Text(message.to_json().into()));
    }

    /// Queues a text message as it is (a relayed message, already validated).
    pub(super) async fn send_text(&mut self, text: Utf8Bytes) {
        let _ = self.out.send(WsMessage::Text(text)).await;
    }

    /// Sends the close frame, lets the writer finish and, after a protocol error, lingers so
    /// the browser can read the close frame before the TCP connection goes.
    async fn close(self) {
        let linger = self.close_frame.is_some();
        if !self.writer.is_finished() {
            let _ = self.out.send(WsMessage::Close(self.close_frame)).await;
            drop(self.out);
            let _ = self.writer.await;
        }
        if linger {
            // The rest of the oversized message is still unread: closing the TCP socket now
            // would reset it and could destroy the close frame before the browser reads it.
            tokio::time::sleep(CLOSE_LINGER).await;
        }
        if self.errors > LOGGED_ERRORS_PER_SOCKET {
            info!("{}: {} error replies in all", self.label, self.errors);
        }
    }
}

/// A signaling socket's read error that the peer caused and is told about in the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A message over the size limit (4x `max_message_bytes`): close code 1009.
    TooBig,
    /// Text that is not UTF-8: close code 1007.
    NotUtf8,
}

impl ReadError {
    /// What `error` was, or `None` for errors where the connection is gone anyway.
    pub(crate) fn of(error: axum::Error) -> Option<ReadError> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        // (axum's WebSocket is tokio-tungstenite's: Cargo.toml keeps the two on one version.)
        let error = error.into_inner().downcast::<WsError>().ok()?;
        match *error {
            WsError::Capacity(_) => Some(ReadError::TooBig),
            WsError::Utf8(_) => Some(ReadError::NotUtf8),
            _ => None,
        }
    }

    /// The close code and reason RFC 6455 asks for.
    pub(crate) fn close(self) -> (u16, &'static str) {
        match self {
            ReadError::TooBig => (1009, "message too big"),
            ReadError::NotUtf8 => (1007, "text is not UTF-8"),
        }
    }
}

/// The close frame for a read error ([`ReadError`]); `None` for errors where the connection
/// is gone anyway.
fn close_frame_for(error: axum::Error) -> Option<CloseFrame> {
    let (code, reason) = ReadError::of(error)?.close();
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_is_counted_under_its_own_key() {
        for limit in Limit::samples() {
            let before: Vec<_> = limit_hits().collect();
            limit_hit("test", &limit);
            let after: Vec<_> = limit_hits().collect();
            let i = Limit::METRICS
                .iter()
                .position(|m| *m == limit.metric())
                .expect("listed");
            assert_eq!(LIMIT_LOGS[i].key(), limit.key());
            assert_eq!(after[i].1, before[i].1 + 1, "{limit:?}");
        }
    }
}
