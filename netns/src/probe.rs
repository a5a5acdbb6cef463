//! Probes run from inside a namespace, with a timeout, and small servers
//! listening inside one. A socket stays in the namespace it was created
//! in, so only creation happens on a namespace thread; serving happens on
//! ordinary threads.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{NetnsError, Result};
use crate::ns::NetNs;

/// What [`TcpServer`] sends first on every connection.
pub const TCP_BANNER: &[u8] = b"manul-netns\n";

/// How often server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The shortest timeout a probe uses (a zero timeout is not a socket
/// timeout).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// How a probe ended.
///
/// `Refused` and `Unreachable` come from ICMP errors (or a TCP RST), and
/// the kernel rate-limits ICMP errors per destination (a short burst, then
/// about one a second): back-to-back probes from one address that each
/// expect an ICMP error can see `TimedOut` instead. Space them by a second,
/// or treat anything but `Connected` as "blocked".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeOutcome {
    /// Reached: TCP connected, the UDP datagram or ICMP echo came back.
    Connected,
    /// Actively refused: a TCP RST, or ICMP port unreachable for UDP.
    Refused,
    /// An ICMP error said the host or network cannot be reached (also a
    /// policy reject with an ICMP prohibited code), or there is no route.
    Unreachable,
    /// No answer in time (dropped somewhere).
    TimedOut,
}

impl ProbeOutcome {
    /// Whether the destination answered.
    pub fn reached(self) -> bool {
        self == ProbeOutcome::Connected
    }
}

/// Classifies the socket errors that are answers rather than failures.
pub(crate) fn outcome_of(e: &io::Error) -> Option<ProbeOutcome> {
    use nix::libc;
    match e.kind() {
        io::ErrorKind::ConnectionRefused => return Some(ProbeOutcome::Refused),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            return Some(ProbeOutcome::TimedOut);
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            return Some(ProbeOutcome::Unreachable);
        }
        _ => {}
    }
    match e.raw_os_error() {
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN) => {
            Some(ProbeOutcome::Unreachable)
        }
        _ => None,
    }
}

pub(crate) fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .map(|d| d.max(MIN_TIMEOUT))
}

fn next_token() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Tries a TCP connection from inside `ns` to `dst`.
pub fn tcp_connect(ns: &NetNs, dst: SocketAddr, timeout: Duration) -> Result<ProbeOutcome> {
    let result = ns.run(|| TcpStream::connect_timeout(&dst, timeout.max(MIN_TIMEOUT)))?;
    match result {
        Ok(_stream) => Ok(ProbeOutcome::Connected),
        Err(e) => match outcome_of(&e) {
            Some(outcome) => Ok(outcome),
            None => Err(NetnsError::io(
                ns.name(),
                format!("tcp connect to {dst}"),
                e,
            )),
        },
    }
}

/// A TCP server listening inside a namespace. Every connection gets
/// [`TCP_BANNER`], then everything it sends is echoed back, until the
/// client closes it; except [`crate::PEER_QUERY`], answered with the
/// addresses the server saw ([`crate::tcp_peer`]). Dropping the server stops it and closes every
/// connection.
#[derive(Debug)]
pub struct TcpServer {
    ns: String,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `addr` inside `ns` (port 0 picks one: see
    /// [`TcpServer::local_addr`]).
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Result<TcpServer> {
        let io_err =
            |op: &str, e| NetnsError::io(ns.name(), format!("tcp server on {addr}: {op}"), e);
        let listener = ns
            .run(|| TcpListener::bind(addr))?
            .map_err(|e| io_err("bind", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io_err("set nonblocking", e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| io_err("local address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let accepted = Arc::clone(&accepted);
            let ns = ns.name().to_owned();
            std::thread::Builder::new()
                .name("netns-tcp-accept".to_owned())
                .spawn(move || accept_loop(&ns, &listener, &stop, &accepted))
                .map_err(|e| io_err("spawn the accept thread", e))?
        };
        Ok(TcpServer {
            ns: ns.name().to_owned(),
            local_addr,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops it (same as dropping it).
    pub fn stop(self) {}
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(netns = %self.ns, addr = %self.local_addr, "tcp server thread panicked");
        }
    }
}

fn accept_loop(ns: &str, listener: &TcpListener, stop: &Arc<AtomicBool>, accepted: &AtomicUsize) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                connections.retain(|c| !c.is_finished());
                match spawn_connection(stream, peer, Arc::clone(stop)) {
                    Ok(handle) => connections.push(handle),
                    Err(e) => {
                        tracing::warn!(netns = ns, %peer, error = %e, "could not serve a tcp connection");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(e) => {
                tracing::warn!(netns = ns, error = %e, "tcp accept failed");
                std::thread::sleep(POLL);
            }
        }
    }
    // Connection threads watch the same flag and close their streams.
    for connection in connections {
        if connection.join().is_err() {
            tracing::error!(netns = ns, "tcp connection thread panicked");
        }
    }
}

fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_nodelay(true)?;
    std::thread::Builder::new()
        .name("netns-tcp-conn".to_owned())
        .spawn(move || serve_connection(stream, peer, &stop))
}

fn serve_connection(mut stream: TcpStream, peer: SocketAddr, stop: &AtomicBool) {
    if stream.write_all(TCP_BANNER).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let reply = match stream.local_addr() {
                    Ok(local) if &buf[..n] == crate::peer::PEER_QUERY => {
                        crate::peer::peer_answer(peer, local)
                    }
                    _ => buf[..n].to_vec(),
                };
                if stream.write_all(&reply).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "tcp connection ended");
                return;
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A TCP connection opened from inside a namespace to a [`TcpServer`] and
/// kept open, to check later that it still passes data (say, across a
/// dataplane restart).
#[derive(Debug)]
pub struct HeldConnection {
    pub(crate) ns: String,
    pub(crate) peer: SocketAddr,
    pub(crate) stream: TcpStream,
    pending: Vec<u8>,
    seq: u64,
}

/// Connects from inside `ns` to the [`TcpServer`] at `dst` and waits for
/// its banner. A refused, unreachable or timed-out connection is an error
/// here (use [`tcp_connect`] to tell them apart).
pub fn open_connection(ns: &NetNs, dst: SocketAddr, timeout: Duration) -> Result<HeldConnection> {
    let deadline = Instant::now() + timeout;
    let io_err =
        |op: &str, e| NetnsError::io(ns.name(), format!("tcp connection to {dst}: {op}"), e);
    let stream = ns
        .run(|| TcpStream::connect_timeout(&dst, timeout.max(MIN_TIMEOUT)))?
        .map_err(|e| io_err("connect", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| io_err("set nodelay", e))?;
    let mut held = HeldConnection {
        ns: ns.name().to_owned(),
        peer: dst,
        stream,
        pending: Vec::new(),
        seq: 0,
    };
    match held.read_line(deadline) {
        Ok(Some(line)) if line == TCP_BANNER => Ok(held),
        Ok(Some(line)) => Err(NetnsError::Unexpected {
            ns: ns.name().to_owned(),
            what: format!(
                "tcp connection to {dst}: banner {:?}",
                String::from_utf8_lossy(&line)
            ),
        }),
        Ok(None) => Err(NetnsError::Unexpected {
            ns: ns.name().to_owned(),
            what: format!("tcp connection to {dst}: no banner in time"),
        }),
        Err(e) => Err(io_err("read the banner", e)),
    }
}

impl HeldConnection {
    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local (client) address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream.local_addr().map_err(|e| {
            NetnsError::io(
                &self.ns,
                format!("tcp connection to {}: local address", self.peer),
                e,
            )
        })
    }

    /// Sends a line and waits for the server to echo it: `Ok(true)` when
    /// it came back in time, `Ok(false)` when it did not, or the connection
    /// was reset or closed.
    pub fn roundtrip(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        self.seq += 1;
        let message = format!("roundtrip {}\n", self.seq).into_bytes();
        if let Err(e) = self
            .stream
            .set_write_timeout(Some(timeout.max(MIN_TIMEOUT)))
            .and_then(|()| self.stream.write_all(&message))
        {
            return self.lost(e);
        }
        loop {
            match self.read_line(deadline) {
                // Skip late echoes of earlier roundtrips.
                Ok(Some(line)) if line == message => return Ok(true),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(e) => return self.lost(e),
            }
        }
    }

    /// Closes the connection.
    pub fn close(self) {}

    fn lost(&self, e: io::Error) -> Result<bool> {
        match e.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock => Ok(false),
            _ if outcome_of(&e).is_some() => Ok(false),
            _ => Err(NetnsError::io(
                &self.ns,
                format!("tcp connection to {}", self.peer),
                e,
            )),
        }
    }

    /// The next line (with its newline), `None` at the deadline; EOF is
    /// `UnexpectedEof`.
    pub(crate) fn read_line(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                return Ok(Some(self.pending.drain(..=end).collect()));
            }
            let Some(left) = remaining(deadline) else {
                return Ok(None);
            };
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A UDP echo server inside a namespace: every datagram goes back to its
/// sender, except [`crate::PEER_QUERY`], answered with the sender's address
/// as the server saw it and its own ([`crate::HeldUdp::ask`]). Dropping it
/// stops it.
#[derive(Debug)]
pub struct UdpEcho {
    ns: String,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Listens on `addr` inside `ns` (port 0 picks one).
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Result<UdpEcho> {
        let io_err =
            |op: &str, e| NetnsError::io(ns.name(), format!("udp echo on {addr}: {op}"), e);
        let socket = ns
            .run(|| UdpSocket::bind(addr))?
            .map_err(|e| io_err("bind", e))?;
        socket
            .set_read_timeout(Some(POLL))
            .map_err(|e| io_err("set read timeout", e))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| io_err("local address", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let ns = ns.name().to_owned();
            std::thread::Builder::new()
                .name("netns-udp-echo".to_owned())
                .spawn(move || {
                    let mut buf = [0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        match socket.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                let reply = if &buf[..n] == crate::peer::PEER_QUERY {
                                    crate::peer::peer_answer(from, local_addr)
                                } else {
                                    buf[..n].to_vec()
                                };
                                if let Err(e) = socket.send_to(&reply, from) {
                                    tracing::debug!(netns = %ns, %from, error = %e, "udp echo reply failed");
                                }
                            }
                            Err(e) if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                            ) => {}
                            Err(e) => tracing::debug!(netns = %ns, error = %e, "udp echo receive failed"),
                        }
                    }
                })
                .map_err(|e| io_err("spawn its thread", e))?
        };
        Ok(UdpEcho {
            ns: ns.name().to_owned(),
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops it (same as dropping it).
    pub fn stop(self) {}
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(netns = %self.ns, addr = %self.local_addr, "udp echo thread panicked");
        }
    }
}

/// Sends a datagram from inside `ns` to `dst` and waits for it to come
/// back (from a [`UdpEcho`]). An ICMP port unreachable is `Refused`.
pub fn udp_probe(ns: &NetNs, dst: SocketAddr, timeout: Duration) -> Result<ProbeOutcome> {
    let deadline = Instant::now() + timeout;
    let token = format!("manul-netns udp {} {}", std::process::id(), next_token()).into_bytes();
    let result = ns.run(|| -> io::Result<ProbeOutcome> {
        let bind: SocketAddr = match dst {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(dst)?;
        socket.send(&token)?;
        let mut buf = [0u8; 2048];
        loop {
            let Some(left) = remaining(deadline) else {
                return Ok(ProbeOutcome::TimedOut);
            };
            socket.set_read_timeout(Some(left))?;
            match socket.recv(&mut buf) {
                Ok(n) if buf[..n] == token[..] => return Ok(ProbeOutcome::Connected),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })?;
    match result {
        Ok(outcome) => Ok(outcome),
        Err(e) => match outcome_of(&e) {
            Some(outcome) => Ok(outcome),
            None => Err(NetnsError::io(ns.name(), format!("udp probe to {dst}"), e)),
        },
    }
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_ECHO: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const PING_MAGIC: &[u8] = b"manul-netns-ping";

/// Sends one ICMP echo request from inside `ns` to `dst` over a raw socket
/// and waits for the matching reply (same id, sequence and payload, from
/// `dst`). A matching ICMP destination-unreachable is `Unreachable`.
pub fn ping(ns: &NetNs, dst: IpAddr, timeout: Duration) -> Result<ProbeOutcome> {
    let deadline = Instant::now() + timeout;
    let token = next_token();
    // Identifier: per call, as a new `ping` process would pick: conntrack
    // tracks an ICMP echo "flow" by its identifier, so reusing one would
    // make every later probe part of an established flow.
    let id = (std::process::id() as u16) ^ 0x4d4e ^ (token as u16).wrapping_mul(40503);
    let seq = token as u16;
    let mut payload = PING_MAGIC.to_vec();
    payload.extend_from_slice(&token.to_be_bytes());
    let request = echo_request(dst.is_ipv6(), id, seq, &payload);
    let result = ns.run(|| -> io::Result<ProbeOutcome> {
        let (domain, protocol) = match dst {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let socket = Socket::new(domain, Type::RAW, Some(protocol))?;
        socket.send_to(&request, &SockAddr::from(SocketAddr::new(dst, 0)))?;
        let socket = UdpSocket::from(socket);
        let mut buf = [0u8; 2048];
        loop {
            let Some(left) = remaining(deadline) else {
                return Ok(ProbeOutcome::TimedOut);
            };
            socket.set_read_timeout(Some(left))?;
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let icmp = match dst {
                IpAddr::V4(_) => strip_ipv4_header(&buf[..n]),
                IpAddr::V6(_) => Some(&buf[..n]),
            };
            if let Some(outcome) =
                icmp.and_then(|icmp| match_reply(icmp, dst, from.ip(), id, seq, &payload))
            {
                return Ok(outcome);
            }
        }
    })?;
    match result {
        Ok(outcome) => Ok(outcome),
        Err(e) => match outcome_of(&e) {
            Some(outcome) => Ok(outcome),
            None => Err(NetnsError::io(ns.name(), format!("ping {dst}"), e)),
        },
    }
}

fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![if v6 { ICMP6_ECHO } else { ICMP_ECHO }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    if !v6 {
        // The kernel fills in the ICMPv6 checksum, not the ICMPv4 one.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The ICMP message inside an IPv4 packet (raw IPv4 sockets get the IP
/// header too).
fn strip_ipv4_header(packet: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    packet.get(ihl..)
}

fn match_reply(
    icmp: &[u8],
    dst: IpAddr,
    from: IpAddr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Option<ProbeOutcome> {
    let kind = *icmp.first()?;
    let (reply, unreach, request) = if dst.is_ipv6() {
        (ICMP6_ECHO_REPLY, ICMP6_DEST_UNREACH, ICMP6_ECHO)
    } else {
        (ICMP_ECHO_REPLY, ICMP_DEST_UNREACH, ICMP_ECHO)
    };
    let ours = |echo: &[u8], kind: u8| {
        echo.len() >= 8
            && echo[0] == kind
            && echo[4..6] == id.to_be_bytes()
            && echo[6..8] == seq.to_be_bytes()
    };
    if kind == reply && from == dst && ours(icmp, reply) && icmp.get(8..) == Some(payload) {
        return Some(ProbeOutcome::Connected);
    }
    if kind == unreach {
        // Header (8 bytes), then the offending packet's IP header and at
        // least 8 bytes of its ICMP header.
        let inner = icmp.get(8..)?;
        let inner_icmp = if dst.is_ipv6() {
            inner.get(40..)?
        } else {
            strip_ipv4_header(inner)?
        };
        if ours(inner_icmp, request) {
            return Some(ProbeOutcome::Unreachable);
        }
    }
    None
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_packet() {
        // Echo request id 1 seq 1, no payload: 08 00 f7 fd 00 01 00 01.
        let packet = echo_request(false, 1, 1, &[]);
        assert_eq!(packet, [8, 0, 0xf7, 0xfd, 0, 1, 0, 1]);
        assert_eq!(checksum(&packet), 0);
    }

    #[test]
    fn replies_are_matched_by_id_seq_payload_and_source() {
        let dst: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        let mut reply = echo_request(false, 7, 9, b"xy");
        reply[0] = ICMP_ECHO_REPLY;
        assert_eq!(
            match_reply(&reply, dst, dst, 7, 9, b"xy"),
            Some(ProbeOutcome::Connected)
        );
        assert_eq!(match_reply(&reply, dst, dst, 7, 10, b"xy"), None);
        assert_eq!(match_reply(&reply, dst, dst, 7, 9, b"xz"), None);
        let other: IpAddr = Ipv4Addr::new(10, 0, 0, 3).into();
        assert_eq!(match_reply(&reply, dst, other, 7, 9, b"xy"), None);
        // Our own request looped back is not a reply.
        let request = echo_request(false, 7, 9, b"xy");
        assert_eq!(match_reply(&request, dst, dst, 7, 9, b"xy"), None);
    }

    #[test]
    fn unreachable_carries_our_request() {
        let dst: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        let request = echo_request(false, 7, 9, b"xy");
        let mut unreach = vec![ICMP_DEST_UNREACH, 1, 0, 0, 0, 0, 0, 0];
        let mut ip = vec![0x45u8];
        ip.resize(20, 0);
        unreach.extend_from_slice(&ip);
        unreach.extend_from_slice(&request);
        let router: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        assert_eq!(
            match_reply(&unreach, dst, router, 7, 9, b"xy"),
            Some(ProbeOutcome::Unreachable)
        );
    }
}
