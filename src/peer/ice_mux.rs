//! One UDP port for every call (`[webrtc] udp_port`, an ICE UDP mux), and one TCP port for
//! every call that reaches the daemon over ICE-TCP (`[webrtc] tcp_port`): a router forwards
//! these and every viewer's media flows through them.
//!
//! webrtc-rs 0.21 binds its own sockets for each peer connection, but it wraps each one
//! through the [`Runtime`] it is given. [`MuxRuntime`] is the tokio runtime with one
//! difference: the socket a peer binds (an ephemeral port on the interface address) is kept
//! only for TURN, and everything else goes through a [`IceMux`] socket bound once per
//! interface address on the shared port. Datagrams that arrive there are routed to the peer
//! they belong to:
//!
//! 1. by the remote address, once a STUN request from it named the peer's ICE username
//!    fragment (`USERNAME` = `<local ufrag>:<remote ufrag>`);
//! 2. STUN responses by the transaction id of the peer's request (server-reflexive
//!    gathering: every peer asks the same STUN server);
//! 3. anything else is dropped and counted.
//!
//! TURN messages (Allocate, Refresh, CreatePermission, ChannelBind, Send, ChannelData) go out
//! of the peer's own socket instead: a TURN server keys allocations by 5-tuple, so peers
//! sharing one would take each other's. The peer's host candidates name the ephemeral port;
//! [`MuxPeer::rewrite_candidate`] puts the shared port in their place before the browser sees
//! them. Every table is bounded, per peer and in total.
//!
//! ICE-TCP (RFC 6544, passive): webrtc-rs's TCP listeners are wrapped the same way. A
//! [`IceMux`] listener accepts on the shared TCP port, reads each connection's first frame
//! (RFC 4571: a 2-byte length, then a STUN binding request naming a call's ufrag) within
//! [`TCP_FIRST_FRAME`], and hands the connection, first frame included, to that call's
//! listener. Connections being read are bounded in total and per address.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use log::{info, warn};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// Datagrams queued for one peer's socket before new ones are dropped.
const INBOX: usize = 512;
/// Largest datagram read (WebRTC keeps below the path MTU; TURN and DTLS too).
const MAX_DATAGRAM: usize = 2048;
/// Remote addresses learned per peer, and in total.
const ADDRS_PER_PEER: usize = 16;
const MAX_ADDRS: usize = 4096;
/// Ufrags per peer (a new one per ICE restart) and in total.
const UFRAGS_PER_PEER: usize = 4;
const MAX_UFRAGS: usize = 1024;
/// Outstanding STUN transactions remembered, and for how long.
const MAX_TRANSACTIONS: usize = 4096;
const TRANSACTION_TTL: Duration = Duration::from_secs(40);

/// ICE-TCP connections whose first frame is being read, in total and per address.
const TCP_PENDING: usize = 64;
const TCP_PENDING_PER_ADDRESS: usize = 8;
/// How long a new ICE-TCP connection has to send its first frame.
pub const TCP_FIRST_FRAME: Duration = Duration::from_secs(5);
/// Connections waiting for a call's listener to take them.
const TCP_INBOX: usize = 8;
/// Largest first frame (a STUN binding request is a few hundred bytes).
const TCP_MAX_FRAME: usize = 1500;

/// STUN's magic cookie (RFC 8489).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// The USERNAME attribute.
const ATTR_USERNAME: u16 = 0x0006;
/// The ERROR-CODE attribute.
const ATTR_ERROR_CODE: u16 = 0x0009;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MuxStats {
    /// Datagrams that matched no call (no known address, ufrag or transaction).
    pub unroutable: AtomicU64,
    /// Datagrams dropped because a call's queue was full.
    pub inbox_full: AtomicU64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub send_full: AtomicU64,
    /// ICE-TCP connections closed before reaching a call: over the pending bounds, no
    /// first frame in time, or not a check naming a call.
    pub tcp_refused: AtomicU64,
}

/// The muxes in use, by port ([`IceMux::shared`]).
static MUXES: Mutex<Vec<(u16, std::sync::Weak<IceMux>)>> = Mutex::new(Vec::new());

/// `/metrics` lines: per shared port, the datagrams dropped and why.
pub fn metrics_text() -> String {
    let muxes: Vec<Arc<IceMux>> = MUXES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|(_, weak)| weak.upgrade())
        .collect();
    let mut out = String::new();
    if !muxes.is_empty() {
        out.push_str("# Datagrams the shared UDP port ([webrtc] udp_port) dropped, and why.\n");
    }
    for mux in muxes {
        let stats = mux.stats();
        for (reason, count) in [
            ("unroutable", &stats.unroutable),
            ("queue_full", &stats.inbox_full),
            ("send_buffer_full", &stats.send_full),
            ("tcp_refused", &stats.tcp_refused),
        ] {
            out.push_str(&format!(
                "peercam_udp_mux_dropped_total{{port=\"{}\",reason=\"{reason}\"}} {}\n",
                mux.port,
                count.load(Ordering::Relaxed)
            ));
        }
    }
    out
}

/// The shared sockets and the routing tables.
pub struct IceMux {
    port: u16,
    /// The ICE-TCP port; `None`: ICE-TCP is off. A reload may change it (new calls use it).
    tcp_port: Mutex<Option<u16>>,
    sockets: Mutex<HashMap<IpAddr, Arc<SharedSocket>>>,
    listeners: Mutex<HashMap<(IpAddr, u16), Arc<SharedListener>>>,
    /// ICE-TCP connections being read, per remote address.
    tcp_pending: Mutex<HashMap<IpAddr, usize>>,
    /// The TCP port could not be bound (said once until it can).
    tcp_failed: std::sync::atomic::AtomicBool,
    routes: Mutex<Routes>,
    next_peer: AtomicU64,
    stats: Arc<MuxStats>,
}

impl fmt::Debug for IceMux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceMux").field("port", &self.port).finish()
    }
}

/// One socket on the shared port, for one local address.
#[derive(Debug)]
struct SharedSocket {
    io: Arc<tokio::net::UdpSocket>,
    local: SocketAddr,
    /// The read loop; it stops with the socket.
    _reader: AbortOnDropHandle<()>,
}

/// The listener on the shared TCP port, for one local address.
#[derive(Debug)]
struct SharedListener {
    local: SocketAddr,
    /// The accept loop; it stops with the listener.
    _acceptor: AbortOnDropHandle<()>,
}

#[derive(Default)]
struct Routes {
    by_addr: HashMap<(IpAddr, SocketAddr), u64>,
    by_ufrag: HashMap<String, u64>,
    by_transaction: HashMap<[u8; 12], (u64, Instant)>,
    /// Each peer's queue, per local address.
    inboxes: HashMap<(u64, IpAddr), mpsc::Sender<Datagram>>,
    /// Each peer's ICE-TCP listener, per local address.
    tcp_inboxes: HashMap<(u64, IpAddr), mpsc::Sender<MuxStream>>,
}

impl Routes {
    fn forget(&mut self, peer: u64) {
        self.by_addr.retain(|_, p| *p != peer);
        self.by_ufrag.retain(|_, p| *p != peer);
        self.by_transaction.retain(|_, (p, _)| *p != peer);
        self.inboxes.retain(|(p, _), _| *p != peer);
        self.tcp_inboxes.retain(|(p, _), _| *p != peer);
    }

    fn count<K>(map: &HashMap<K, u64>, peer: u64) -> usize {
        map.values().filter(|p| **p == peer).count()
    }

    /// The call a datagram that arrived on `local_ip` from `from` goes to: by its address,
    /// else by the ufrag a STUN request names (the address is learned then), else by the
    /// transaction of a STUN response.
    fn route(&mut self, local_ip: IpAddr, from: SocketAddr, data: &[u8]) -> Option<u64> {
        if let Some(peer) = self.by_addr.get(&(local_ip, from)) {
            return Some(*peer);
        }
        let stun = Stun::parse(data)?;
        match stun.class {
            StunClass::Request | StunClass::Indication => {
                let username = stun.username?;
                let local_ufrag = username.split(':').next()?;
                let peer = *self.by_ufrag.get(local_ufrag)?;
                let per_peer = Routes::count(&self.by_addr, peer);
                if per_peer < ADDRS_PER_PEER && self.by_addr.len() < MAX_ADDRS {
                    self.by_addr.insert((local_ip, from), peer);
                }
                Some(peer)
            }
            StunClass::Success | StunClass::Error => self
                .by_transaction
                .remove(&stun.transaction)
                .map(|(peer, _)| peer),
        }
    }
}

#[derive(Debug)]
struct Datagram {
    from: SocketAddr,
    data: Vec<u8>,
}

impl IceMux {
    /// A mux on `port` (0: an OS-chosen port per local address, for tests). Sockets are
    /// bound when the first call uses an address.
    pub fn new(port: u16, tcp_port: Option<u16>) -> Arc<IceMux> {
        Arc::new(IceMux {
            port,
            tcp_port: Mutex::new(tcp_port),
            sockets: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            tcp_pending: Mutex::new(HashMap::new()),
            tcp_failed: std::sync::atomic::AtomicBool::new(false),
            routes: Mutex::new(Routes::default()),
            next_peer: AtomicU64::new(1),
            stats: Arc::new(MuxStats::default()),
        })
    }

    /// The process's mux on `port`: factories built on reload and the WHIP publisher share
    /// it (a port can be bound once). Port 0 gets a new mux each time.
    pub fn shared(port: u16, tcp_port: Option<u16>) -> Arc<IceMux> {
        if port == 0 {
            return IceMux::new(0, tcp_port);
        }
        let mut muxes = MUXES.lock().unwrap_or_else(|e| e.into_inner());
        muxes.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(mux) = muxes
            .iter()
            .find(|(p, _)| *p == port)
            .and_then(|(_, weak)| weak.upgrade())
        {
            // Calls in progress keep the port; a reload's new tcp_port applies to new calls.
            *mux.tcp_port.lock().unwrap_or_else(|e| e.into_inner()) = tcp_port;
            return mux;
        }
        let mux = IceMux::new(port, tcp_port);
        muxes.push((port, Arc::downgrade(&mux)));
        mux
    }

    /// The routing tables, locked.
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> &MuxStats {
        &self.stats
    }

    /// The shared socket for `ip` (bound on first use).
    fn socket_for(self: &Arc<Self>, ip: IpAddr) -> io::Result<Arc<SharedSocket>> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(socket) = sockets.get(&ip) {
            return Ok(socket.clone());
        }
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, self.port))
            .map_err(|e| io::Error::new(e.kind(), format!("UDP {ip}:{}: {e}", self.port)))?;
        std_socket.set_nonblocking(true)?;
        let io = Arc::new(tokio::net::UdpSocket::from_std(std_socket)?);
        let local = io.local_addr()?;
        let reader = tokio::spawn(read_loop(Arc::downgrade(self), io.clone(), ip));
        info!("webrtc: every call's UDP on {local} (udp_port)");
        let socket = Arc::new(SharedSocket {
            io,
            local,
            _reader: AbortOnDropHandle::new(reader),
        });
        sockets.insert(ip, socket.clone());
        Ok(socket)
    }

    /// The listener on the shared TCP port for `ip` (bound on first use).
    fn listener_for(self: &Arc<Self>, ip: IpAddr, port: u16) -> io::Result<Arc<SharedListener>> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listener) = listeners.get(&(ip, port)) {
            return Ok(listener.clone());
        }
        let std_listener = std::net::TcpListener::bind(SocketAddr::new(ip, port))
            .map_err(|e| io::Error::new(e.kind(), format!("TCP {ip}:{port}: {e}")))?;
        std_listener.set_nonblocking(true)?;
        let io = tokio::net::TcpListener::from_std(std_listener)?;
        let local = io.local_addr()?;
        let acceptor = tokio::spawn(accept_loop(Arc::downgrade(self), io, ip));
        info!("webrtc: ICE over TCP for every call on {local} (tcp_port)");
        let listener = Arc::new(SharedListener {
            local,
            _acceptor: AbortOnDropHandle::new(acceptor),
        });
        listeners.insert((ip, port), listener.clone());
        Ok(listener)
    }

    /// A new ICE-TCP connection from `from` on `ip`: within the pending bounds, read its
    /// first frame (by [`TCP_FIRST_FRAME`]) and hand it to the call it names.
    fn admit(self: &Arc<Self>, stream: tokio::net::TcpStream, from: SocketAddr, ip: IpAddr) {
        {
            let mut pending = self.tcp_pending.lock().unwrap_or_else(|e| e.into_inner());
            let total: usize = pending.values().sum();
            let mine = pending.get(&from.ip()).copied().unwrap_or(0);
            if total >= TCP_PENDING || mine >= TCP_PENDING_PER_ADDRESS {
                self.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *pending.entry(from.ip()).or_insert(0) += 1;
        }
        let mux = self.clone();
        tokio::spawn(async move {
            let first = tokio::time::timeout(TCP_FIRST_FRAME, first_frame(stream)).await;
            {
                let mut pending = mux.tcp_pending.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = pending.get_mut(&from.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(&from.ip());
                    }
                }
            }
            let handed = match first {
                Ok(Some((stream, frame))) => mux.hand_over(stream, frame, from, ip),
                _ => false,
            };
            log::debug!("ICE-TCP connection from {from}: handed to a call: {handed}");
            if !handed {
                mux.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Gives a connection whose first frame is `frame` to the call the frame names.
    fn hand_over(
        &self,
        stream: tokio::net::TcpStream,
        frame: Vec<u8>,
        from: SocketAddr,
        ip: IpAddr,
    ) -> bool {
        let Some(stun) = Stun::parse(&frame[2..]) else {
            return false;
        };
        if stun.class != StunClass::Request {
            return false;
        }
        let inbox = {
            let routes = self.routes();
            let Some(peer) = stun
                .username
                .and_then(|u| u.split(':').next())
                .and_then(|ufrag| routes.by_ufrag.get(ufrag))
            else {
                return false;
            };
            routes.tcp_inboxes.get(&(*peer, ip)).cloned()
        };
        let Some(inbox) = inbox else {
            return false;
        };
        let (read, write) = stream.into_split();
        inbox
            .try_send(MuxStream {
                prefix: Mutex::new(frame),
                read: tokio::sync::Mutex::new(read),
                write: tokio::sync::Mutex::new(write),
                local: None,
                peer: from,
            })
            .is_ok()
    }

    /// The port the calls use on `ip` (bound on first use), for tests and logs.
    pub fn local_addr(self: &Arc<Self>, ip: IpAddr) -> io::Result<SocketAddr> {
        Ok(self.socket_for(ip)?.local)
    }

    /// A new peer's handle: give [`MuxPeer::runtime`] to its builder.
    pub fn peer(self: &Arc<Self>) -> Arc<MuxPeer> {
        Arc::new(MuxPeer {
            id: self.next_peer.fetch_add(1, Ordering::Relaxed),
            mux: self.clone(),
            ports: Mutex::new(Vec::new()),
        })
    }

    /// Where a datagram that arrived on `local_ip` from `from` goes.
    #[cfg(test)]
    fn route(&self, local_ip: IpAddr, from: SocketAddr, data: &[u8]) -> Option<u64> {
        self.routes().route(local_ip, from, data)
    }

    fn deliver(&self, local_ip: IpAddr, from: SocketAddr, data: &[u8]) {
        // One lock per datagram: the call it goes to, and that call's queue.
        let inbox = {
            let mut routes = self.routes();
            routes
                .route(local_ip, from, data)
                .and_then(|peer| routes.inboxes.get(&(peer, local_ip)).cloned())
        };
        let Some(inbox) = inbox else {
            self.stats.unroutable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let datagram = Datagram {
            from,
            data: data.to_vec(),
        };
        if inbox.try_send(datagram).is_err() {
            self.stats.inbox_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes what `peer` sends: its requests' transactions (their responses come back
    /// here) and, from its connectivity checks, its own ufrag.
    fn outgoing(&self, peer: u64, data: &[u8]) {
        let Some(stun) = Stun::parse(data) else {
            return;
        };
        if stun.class != StunClass::Request {
            return;
        }
        let now = Instant::now();
        let mut routes = self.routes();
        if routes.by_transaction.len() >= MAX_TRANSACTIONS {
            routes
                .by_transaction
                .retain(|_, (_, at)| now.duration_since(*at) < TRANSACTION_TTL);
        }
        if routes.by_transaction.len() < MAX_TRANSACTIONS {
            routes.by_transaction.insert(stun.transaction, (peer, now));
        }
        // A check's USERNAME is "<remote ufrag>:<local ufrag>".
        if let Some(local) = stun.username.and_then(|u| u.split(':').nth(1)) {
            register_ufrag(&mut routes, peer, local);
        }
    }
}

fn register_ufrag(routes: &mut Routes, peer: u64, ufrag: &str) {
    if ufrag.is_empty() || ufrag.len() > 256 || routes.by_ufrag.contains_key(ufrag) {
        return;
    }
    if Routes::count(&routes.by_ufrag, peer) >= UFRAGS_PER_PEER
        || routes.by_ufrag.len() >= MAX_UFRAGS
    {
        return;
    }
    routes.by_ufrag.insert(ufrag.to_owned(), peer);
}

async fn read_loop(mux: std::sync::Weak<IceMux>, io: Arc<tokio::net::UdpSocket>, ip: IpAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match io.recv_from(&mut buf).await {
            Ok(got) => got,
            // ICMP errors surface here on Linux; they concern one remote, not the socket.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                warn!("webrtc: the shared UDP socket on {ip} failed: {e}");
                return;
            }
        };
        let Some(mux) = mux.upgrade() else {
            return;
        };
        mux.deliver(ip, from, &buf[..n]);
    }
}

async fn accept_loop(mux: std::sync::Weak<IceMux>, listener: tokio::net::TcpListener, ip: IpAddr) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                warn!("webrtc: ICE-TCP accept on {ip}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(mux) = mux.upgrade() else {
            return;
        };
        mux.admit(stream, from, ip);
    }
}

/// Reads the RFC 4571 frame a new ICE-TCP connection starts with: the 2-byte length and
/// the frame, returned together (the call's ICE reads them again).
async fn first_frame(
    mut stream: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await.ok()?;
    let n = usize::from(u16::from_be_bytes(length));
    if !(20..=TCP_MAX_FRAME).contains(&n) {
        return None;
    }
    let mut frame = vec![0u8; 2 + n];
    frame[..2].copy_from_slice(&length);
    stream.read_exact(&mut frame[2..]).await.ok()?;
    Some((stream, frame))
}

/// An ICE-TCP connection handed to a call: its first frame, then the socket.
struct MuxStream {
    /// Bytes read by the mux that the call has not read yet.
    prefix: Mutex<Vec<u8>>,
    read: tokio::sync::Mutex<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    /// The call's own listener address (what its ICE knows as the local candidate); set
    /// when the call's listener takes the connection.
    local: Option<SocketAddr>,
    peer: SocketAddr,
}

impl fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxStream")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

impl AsyncTcpStream for MuxStream {
    fn read<'a, 'b>(
        &'a self,
        buf: &'b mut [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            {
                let mut prefix = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
                if !prefix.is_empty() {
                    let n = prefix.len().min(buf.len());
                    buf[..n].copy_from_slice(&prefix[..n]);
                    prefix.drain(..n);
                    return Ok(n);
                }
            }
            use tokio::io::AsyncReadExt as _;
            self.read.lock().await.read(buf).await
        })
    }

    fn write_all<'a, 'b>(
        &'a self,
        buf: &'b [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt as _;
            self.write.lock().await.write_all(buf).await
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local
            .ok_or_else(|| io::Error::other("ICE-TCP connection not taken by a call yet"))
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

/// A call's ICE-TCP listener: connections the shared listener routed to it.
struct MuxListener {
    peer: Arc<MuxPeer>,
    own_addr: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::Receiver<MuxStream>>,
}

impl fmt::Debug for MuxListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxListener")
            .field("own", &self.own_addr)
            .finish()
    }
}

impl Drop for MuxListener {
    fn drop(&mut self) {
        let mut routes = self.peer.mux.routes();
        routes
            .tcp_inboxes
            .remove(&(self.peer.id, self.own_addr.ip()));
    }
}

impl AsyncTcpListener for MuxListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>>
    {
        Box::pin(async move {
            let mut inbox = self.inbox.lock().await;
            match inbox.recv().await {
                Some(mut stream) => {
                    stream.local = Some(self.own_addr);
                    let peer = stream.peer;
                    Ok((Arc::new(stream) as Arc<dyn AsyncTcpStream>, peer))
                }
                // The sender lives in the routes until this listener is dropped.
                None => std::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.own_addr)
    }
}

/// Which of the two shared ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// One peer connection's place in the mux.
#[derive(Debug)]
pub struct MuxPeer {
    id: u64,
    mux: Arc<IceMux>,
    /// (transport, the peer's own socket, the shared one) per local address.
    ports: Mutex<Vec<(Transport, SocketAddr, SocketAddr)>>,
}

impl MuxPeer {
    /// The runtime to build this peer's connection with.
    pub fn runtime(self: &Arc<Self>) -> Arc<dyn Runtime> {
        Arc::new(MuxRuntime { peer: self.clone() })
    }

    /// Routes STUN requests that name `ufrag` (this peer's local ICE username fragment, from
    /// its local description) to this peer.
    pub fn register_ufrag(&self, ufrag: &str) {
        let mut routes = self.mux.routes();
        register_ufrag(&mut routes, self.id, ufrag);
    }

    /// Registers every `a=ice-ufrag:` of a local description.
    pub fn register_sdp(&self, sdp: &str) {
        for line in sdp.lines() {
            if let Some(ufrag) = line.trim().strip_prefix("a=ice-ufrag:") {
                self.register_ufrag(ufrag.trim());
            }
        }
    }

    /// A candidate (or SDP line) with this peer's own ports replaced by the shared port:
    /// `ADDR PORT typ host`, and `raddr ADDR rport PORT` of reflexive candidates.
    pub fn rewrite_candidate(&self, candidate: &str) -> String {
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if ports.is_empty() {
            return candidate.to_owned();
        }
        let mut fields: Vec<String> = candidate.split(' ').map(str::to_owned).collect();
        let transport = match fields.get(2).map(|t| t.to_ascii_lowercase()).as_deref() {
            Some("tcp") => Transport::Tcp,
            _ => Transport::Udp,
        };
        let replace = |addr: &str, port: &str| -> Option<String> {
            let own = SocketAddr::new(addr.parse().ok()?, port.parse().ok()?);
            ports
                .iter()
                .find(|(t, mine, _)| *t == transport && *mine == own)
                .map(|(_, _, shared)| shared.port().to_string())
        };
        if fields.len() >= 8 && fields[6] == "typ" && fields[7] == "host" {
            if let Some(port) = replace(&fields[4], &fields[5]) {
                fields[5] = port;
            }
        }
        if let Some(i) = fields.iter().position(|f| f == "raddr") {
            if fields.len() > i + 3 && fields[i + 2] == "rport" {
                if let Some(port) = replace(&fields[i + 1], &fields[i + 3]) {
                    fields[i + 3] = port;
                }
            }
        }
        fields.join(" ")
    }

    /// Every `a=candidate:` line of `sdp` through [`MuxPeer::rewrite_candidate`].
    pub fn rewrite_sdp(&self, sdp: &str) -> String {
        super::nat::map_lines(sdp, |body| {
            body.starts_with("a=candidate:")
                .then(|| self.rewrite_candidate(body))
        })
    }

    /// Candidates naming `own` (this peer's socket or listener) name `shared` instead.
    fn map_port(&self, transport: Transport, own: SocketAddr, shared: SocketAddr) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.retain(|(t, mine, _)| *t != transport || mine.ip() != own.ip());
        ports.push((transport, own, shared));
    }
}

impl Drop for MuxPeer {
    fn drop(&mut self) {
        self.mux.routes().forget(self.id);
    }
}

/// The tokio runtime, with the peer's UDP sockets joined to the mux.
#[derive(Debug)]
struct MuxRuntime {
    peer: Arc<MuxPeer>,
}

impl Runtime for MuxRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        socket.set_nonblocking(true)?;
        let own = socket.local_addr()?;
        let shared = self.peer.mux.socket_for(own.ip())?;
        let (tx, rx) = mpsc::channel(INBOX);
        self.peer
            .mux
            .routes()
            .inboxes
            .insert((self.peer.id, own.ip()), tx);
        self.peer.map_port(Transport::Udp, own, shared.local);
        Ok(Arc::new(MuxSocket {
            peer: self.peer.clone(),
            turn: super::turn_watch::TurnWatch::default(),
            own_addr: own,
            own: tokio::net::UdpSocket::from_std(socket)?,
            shared,
            inbox: Mutex::new(rx),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let tcp_port = *self
            .peer
            .mux
            .tcp_port
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(port) = tcp_port else {
            return TokioRuntime.wrap_tcp_listener(listener);
        };
        let own = listener.local_addr()?;
        let shared = match self.peer.mux.listener_for(own.ip(), port) {
            Ok(shared) => shared,
            Err(e) => {
                // UDP still works; ICE-TCP goes to this call's own port, unforwarded.
                if !self.peer.mux.tcp_failed.swap(true, Ordering::Relaxed) {
                    warn!(
                        "webrtc: cannot use TCP port {port} ([webrtc] tcp_port): {e}; calls \
                         offer ICE over TCP on ports of their own until it is free"
                    );
                }
                return TokioRuntime.wrap_tcp_listener(listener);
            }
        };
        self.peer.mux.tcp_failed.store(false, Ordering::Relaxed);
        // Nobody learns the own port (candidates name the shared one): close it.
        drop(listener);
        let (tx, rx) = mpsc::channel(TCP_INBOX);
        self.peer
            .mux
            .routes()
            .tcp_inboxes
            .insert((self.peer.id, own.ip()), tx);
        self.peer.map_port(Transport::Tcp, own, shared.local);
        Ok(Arc::new(MuxListener {
            peer: self.peer.clone(),
            own_addr: own,
            inbox: tokio::sync::Mutex::new(rx),
        }))
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.connect_tcp(remote_addr).await })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.resolve_host(host).await })
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn name(&self) -> &'static str {
        "tokio (peercam UDP mux)"
    }
}

/// A peer's socket: media and ICE through the shared port, TURN through its own.
struct MuxSocket {
    peer: Arc<MuxPeer>,
    /// Whether TURN servers accept the call's credentials (said in the log per episode).
    turn: super::turn_watch::TurnWatch,
    own_addr: SocketAddr,
    own: tokio::net::UdpSocket,
    shared: Arc<SharedSocket>,
    inbox: Mutex<mpsc::Receiver<Datagram>>,
}

impl fmt::Debug for MuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxSocket")
            .field("own", &self.own_addr)
            .field("shared", &self.shared.local)
            .finish()
    }
}

impl Drop for MuxSocket {
    fn drop(&mut self) {
        let mut routes = self.peer.mux.routes();
        routes.inboxes.remove(&(self.peer.id, self.own_addr.ip()));
    }
}

impl AsyncUdpSocket for MuxSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.own_addr)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let data = transmit.contents;
        if is_turn(data) {
            self.turn.sent(data);
            return self.own.poll_send_to(cx, data, transmit.destination);
        }
        self.peer.mux.outgoing(self.peer.id, data);
        // Many peers share the socket: a full send buffer drops the datagram (as the
        // kernel's queue would) rather than parking one peer's waker over another's.
        match self.shared.io.try_send_to(data, transmit.destination) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.peer
                    .mux
                    .stats
                    .send_full
                    .fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Ok(data.len()))
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            if let Poll::Ready(Some(datagram)) = inbox.poll_recv(cx) {
                let n = datagram.data.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram.data[..n]);
                *m = RecvMeta::default();
                m.addr = datagram.from;
                m.len = n;
                m.stride = n.max(1);
                m.dst_ip = Some(self.own_addr.ip());
                return Poll::Ready(Ok(1));
            }
        }
        let mut read = tokio::io::ReadBuf::new(buf);
        match self.own.poll_recv_from(cx, &mut read) {
            Poll::Ready(Ok(from)) => {
                let n = read.filled().len();
                self.turn.received(read.filled(), from);
                *m = RecvMeta::default();
                m.addr = from;
                m.len = n;
                m.stride = n.max(1);
                m.dst_ip = Some(self.own_addr.ip());
                Poll::Ready(Ok(1))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// TURN traffic: ChannelData (first two bits 01) or a STUN message of a TURN method.
fn is_turn(data: &[u8]) -> bool {
    if data.first().is_some_and(|b| (0x40..=0x7f).contains(b)) {
        return true;
    }
    Stun::parse(data)
        .is_some_and(|s| matches!(s.method, 0x003 | 0x004 | 0x006 | 0x007 | 0x008 | 0x009))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StunClass {
    Request,
    Indication,
    Success,
    Error,
}

/// What the mux reads of a STUN message.
#[derive(Debug)]
pub(super) struct Stun<'a> {
    pub class: StunClass,
    pub method: u16,
    pub transaction: [u8; 12],
    pub username: Option<&'a str>,
    /// An error response's code (ERROR-CODE: class * 100 + number).
    pub error_code: Option<u16>,
}

impl<'a> Stun<'a> {
    pub(super) fn parse(data: &'a [u8]) -> Option<Stun<'a>> {
        if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != MAGIC_COOKIE {
            return None;
        }
        let kind = u16::from_be_bytes([data[0], data[1]]);
        let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if 20 + length > data.len() {
            return None;
        }
        let class = match ((kind >> 4) & 1) | ((kind >> 7) & 2) {
            0 => StunClass::Request,
            1 => StunClass::Indication,
            2 => StunClass::Success,
            _ => StunClass::Error,
        };
        let method = (kind & 0x000f) | ((kind & 0x00e0) >> 1) | ((kind & 0x3e00) >> 2);
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&data[8..20]);
        let mut username = None;
        let mut error_code = None;
        let mut at = 20;
        while at + 4 <= 20 + length {
            let attr = u16::from_be_bytes([data[at], data[at + 1]]);
            let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
            let value = data.get(at + 4..at + 4 + len)?;
            match attr {
                ATTR_USERNAME => username = std::str::from_utf8(value).ok(),
                ATTR_ERROR_CODE if len >= 4 => {
                    error_code = Some(u16::from(value[2] & 0x07) * 100 + u16::from(value[3]));
                }
                _ => {}
            }
            at += 4 + len.div_ceil(4) * 4;
        }
        Some(Stun {
            class,
            method,
            transaction,
            username,
            error_code,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A STUN message: `kind`, transaction `tx`, and a USERNAME if given.
    fn stun(kind: u16, tx: u8, username: Option<&str>) -> Vec<u8> {
        stun_with(kind, tx, username, None)
    }

    /// [`stun`] with an ERROR-CODE (`class * 100 + number`) if given.
    pub(in crate::peer) fn stun_with(
        kind: u16,
        tx: u8,
        username: Option<&str>,
        error: Option<u16>,
    ) -> Vec<u8> {
        let mut attrs = Vec::new();
        if let Some(u) = username {
            attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
            attrs.extend_from_slice(&(u.len() as u16).to_be_bytes());
            attrs.extend_from_slice(u.as_bytes());
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
        }
        if let Some(code) = error {
            attrs.extend_from_slice(&ATTR_ERROR_CODE.to_be_bytes());
            attrs.extend_from_slice(&4u16.to_be_bytes());
            attrs.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[tx; 12]);
        m.extend(attrs);
        m
    }

    const BINDING_REQUEST: u16 = 0x0001;
    const BINDING_SUCCESS: u16 = 0x0101;
    const ALLOCATE_REQUEST: u16 = 0x0003;

    #[test]
    fn stun_messages_are_read_and_turn_is_told_apart() {
        let m = stun(BINDING_REQUEST, 7, Some("abcd:wxyz"));
        let s = Stun::parse(&m).expect("stun");
        assert_eq!(
            (s.class, s.method, s.username),
            (StunClass::Request, 1, Some("abcd:wxyz"))
        );
        assert_eq!(s.transaction, [7; 12]);
        let success = stun(BINDING_SUCCESS, 7, None);
        let ok = Stun::parse(&success).expect("stun");
        assert_eq!(ok.class, StunClass::Success);
        assert!(!is_turn(&m));
        assert!(is_turn(&stun(ALLOCATE_REQUEST, 1, None)));
        assert!(
            is_turn(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]),
            "ChannelData"
        );
        // RTP/RTCP (first bits 10) and DTLS (20..63) are not STUN.
        assert!(Stun::parse(&[0x80; 40]).is_none());
        assert!(Stun::parse(&[22; 40]).is_none());
        // A length beyond the datagram, or an attribute running past it, is not read.
        let mut short = stun(BINDING_REQUEST, 1, Some("abcd:wxyz"));
        short.truncate(24);
        assert!(Stun::parse(&short).is_none());
    }

    #[tokio::test]
    async fn datagrams_are_routed_by_ufrag_address_and_transaction() {
        let mux = IceMux::new(0, None);
        let (a, b) = (mux.peer(), mux.peer());
        a.register_ufrag("aaaa");
        b.register_sdp("v=0\r\na=ice-ufrag:bbbb\r\n");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (ta, _ra) = mpsc::channel(4);
        let (tb, _rb) = mpsc::channel(4);
        mux.routes.lock().unwrap().inboxes.insert((a.id, ip), ta);
        mux.routes.lock().unwrap().inboxes.insert((b.id, ip), tb);
        let browser: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        // An unknown address with media: dropped.
        assert_eq!(mux.route(ip, browser, &[0x80; 40]), None);
        // A check naming b's ufrag routes the address to b from then on.
        let check = stun(BINDING_REQUEST, 1, Some("bbbb:browser"));
        assert_eq!(mux.route(ip, browser, &check), Some(b.id));
        assert_eq!(mux.route(ip, browser, &[0x80; 40]), Some(b.id));
        assert_eq!(
            mux.route(ip, stranger, &stun(BINDING_REQUEST, 2, Some("zzzz:x"))),
            None
        );
        // a's request to a STUN server: the response comes back to a.
        mux.outgoing(a.id, &stun(BINDING_REQUEST, 9, None));
        let server: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        assert_eq!(
            mux.route(ip, server, &stun(BINDING_SUCCESS, 9, None)),
            Some(a.id)
        );
        assert_eq!(
            mux.route(ip, server, &stun(BINDING_SUCCESS, 9, None)),
            None,
            "once"
        );
        // a's check names its own ufrag last: learned (after an ICE restart, say).
        mux.outgoing(a.id, &stun(BINDING_REQUEST, 3, Some("browser:aaa2")));
        assert_eq!(
            mux.route(
                ip,
                stranger,
                &stun(BINDING_REQUEST, 4, Some("aaa2:browser"))
            ),
            Some(a.id)
        );
        // Gone peers are forgotten.
        drop(b);
        assert_eq!(mux.route(ip, browser, &[0x80; 40]), None);
    }

    #[tokio::test]
    async fn the_tables_are_bounded() {
        let mux = IceMux::new(0, None);
        let a = mux.peer();
        a.register_ufrag("aaaa");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for port in 0..100u16 {
            let from = SocketAddr::new(ip, 30000 + port);
            mux.route(ip, from, &stun(BINDING_REQUEST, 1, Some("aaaa:b")));
        }
        assert_eq!(mux.routes.lock().unwrap().by_addr.len(), ADDRS_PER_PEER);
        for i in 0..10 {
            a.register_ufrag(&format!("u{i}"));
        }
        assert_eq!(
            Routes::count(&mux.routes.lock().unwrap().by_ufrag, a.id),
            UFRAGS_PER_PEER
        );
        for i in 0..(MAX_TRANSACTIONS + 10) {
            let mut m = stun(BINDING_REQUEST, 0, None);
            m[8..16].copy_from_slice(&(i as u64).to_be_bytes());
            mux.outgoing(a.id, &m);
        }
        assert!(mux.routes.lock().unwrap().by_transaction.len() <= MAX_TRANSACTIONS);
    }

    #[test]
    fn host_candidates_name_the_shared_port() {
        let mux = IceMux::new(0, None);
        let p = mux.peer();
        p.ports.lock().unwrap().push((
            Transport::Udp,
            "192.168.1.5:41234".parse().unwrap(),
            "192.168.1.5:8555".parse().unwrap(),
        ));
        p.ports.lock().unwrap().push((
            Transport::Tcp,
            "192.168.1.5:41999".parse().unwrap(),
            "192.168.1.5:8556".parse().unwrap(),
        ));
        assert_eq!(
            p.rewrite_candidate(
                "candidate:3 1 tcp 1518280447 192.168.1.5 41999 typ host tcptype passive"
            ),
            "candidate:3 1 tcp 1518280447 192.168.1.5 8556 typ host tcptype passive"
        );
        // A TCP candidate on the UDP socket's port is not the UDP socket.
        let crossed = "candidate:3 1 tcp 1518280447 192.168.1.5 41234 typ host tcptype passive";
        assert_eq!(p.rewrite_candidate(crossed), crossed);
        assert_eq!(
            p.rewrite_candidate("candidate:1 1 udp 2130706431 192.168.1.5 41234 typ host"),
            "candidate:1 1 udp 2130706431 192.168.1.5 8555 typ host"
        );
        assert_eq!(
            p.rewrite_candidate(
                "candidate:2 1 udp 1694498815 203.0.113.9 8555 typ srflx raddr 192.168.1.5 rport 41234"
            ),
            "candidate:2 1 udp 1694498815 203.0.113.9 8555 typ srflx raddr 192.168.1.5 rport 8555"
        );
        // Another address or port is left alone.
        let other = "candidate:1 1 udp 2130706431 10.0.0.2 41234 typ host";
        assert_eq!(p.rewrite_candidate(other), other);
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 192.168.1.5 41234 typ host\r\n";
        assert!(p.rewrite_sdp(sdp).contains("192.168.1.5 8555 typ host\r\n"));
    }
}
