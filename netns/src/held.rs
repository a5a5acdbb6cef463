//! Connections kept open across a change, asked again and again who
//! answers them: a [`HeldConnection`] (TCP) or a [`HeldUdp`] (a connected
//! UDP socket, so every datagram leaves from the same address and port,
//! one flow for conntrack and for a service's load balancer).

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::error::{NetnsError, Result};
use crate::ns::NetNs;
use crate::peer::{PEER_QUERY, parse_answer};
use crate::probe::{HeldConnection, outcome_of, remaining};

/// What one question on a held connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldAnswer {
    /// The server answered: (the client address it saw, its own address).
    Answered(SocketAddr, SocketAddr),
    /// The connection was reset (TCP RST), or an ICMP error came back
    /// (UDP).
    Reset,
    /// The server closed the connection (TCP FIN).
    Closed,
    /// Nothing came back in time.
    Silent,
}

impl HeldConnection {
    /// Sends [`PEER_QUERY`] and waits for the server's answer: whom it saw
    /// and on which address it answered (which backend a service sent
    /// this connection to).
    pub fn ask(&mut self, timeout: Duration) -> Result<HeldAnswer> {
        let deadline = Instant::now() + timeout;
        let sent = self
            .stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| self.stream.write_all(PEER_QUERY));
        if let Err(e) = sent {
            return self.ended(e);
        }
        loop {
            match self.read_line(deadline) {
                Ok(Some(line)) => {
                    if let Some((peer, local)) = parse_answer(&String::from_utf8_lossy(&line)) {
                        return Ok(HeldAnswer::Answered(peer, local));
                    }
                }
                Ok(None) => return Ok(HeldAnswer::Silent),
                Err(e) => return self.ended(e),
            }
        }
    }

    fn ended(&self, e: io::Error) -> Result<HeldAnswer> {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Ok(HeldAnswer::Reset),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::NotConnected => Ok(HeldAnswer::Closed),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Ok(HeldAnswer::Silent),
            _ if outcome_of(&e).is_some() => Ok(HeldAnswer::Reset),
            _ => Err(NetnsError::io(
                &self.ns,
                format!("held tcp connection to {}", self.peer),
                e,
            )),
        }
    }
}

/// A UDP socket created inside a namespace and connected to one
/// destination, kept to send from the same port again later.
#[derive(Debug)]
pub struct HeldUdp {
    ns: String,
    dst: SocketAddr,
    socket: UdpSocket,
}

/// Creates a UDP socket inside `ns` connected to `dst` (no datagram is
/// sent yet).
pub fn open_udp(ns: &NetNs, dst: SocketAddr) -> Result<HeldUdp> {
    let socket = ns
        .run(|| -> io::Result<UdpSocket> {
            let bind: SocketAddr = match dst {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(bind)?;
            socket.connect(dst)?;
            Ok(socket)
        })?
        .map_err(|e| NetnsError::io(ns.name(), format!("udp socket to {dst}"), e))?;
    Ok(HeldUdp {
        ns: ns.name().to_owned(),
        dst,
        socket,
    })
}

impl HeldUdp {
    /// The destination it is connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.dst
    }

    /// Sends [`PEER_QUERY`] and waits for a [`crate::UdpEcho`]'s answer.
    /// Whatever arrived before the question (late answers to earlier
    /// ones) is dropped first.
    pub fn ask(&self, timeout: Duration) -> Result<HeldAnswer> {
        let deadline = Instant::now() + timeout;
        let io_err = |e| NetnsError::io(&self.ns, format!("held udp socket to {}", self.dst), e);
        let mut buf = [0u8; 512];
        self.socket.set_nonblocking(true).map_err(io_err)?;
        while self.socket.recv(&mut buf).is_ok() {}
        self.socket.set_nonblocking(false).map_err(io_err)?;
        match self.socket.send(PEER_QUERY) {
            Ok(_) => {}
            Err(e) if outcome_of(&e).is_some() => return Ok(HeldAnswer::Reset),
            Err(e) => return Err(io_err(e)),
        }
        loop {
            let Some(left) = remaining(deadline) else {
                return Ok(HeldAnswer::Silent);
            };
            self.socket.set_read_timeout(Some(left)).map_err(io_err)?;
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    if let Some((peer, local)) = parse_answer(&String::from_utf8_lossy(&buf[..n])) {
                        return Ok(HeldAnswer::Answered(peer, local));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(HeldAnswer::Silent);
                }
                Err(e) if outcome_of(&e).is_some() => return Ok(HeldAnswer::Reset),
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    /// Closes the socket.
    pub fn close(self) {}
}
