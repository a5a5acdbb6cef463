//! A datagram sent with a source address its namespace does not own (what
//! a compromised pod can do), and whether it arrived: for checking that a
//! dataplane drops spoofed sources.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{NetnsError, Result};
use crate::ns::NetNs;

/// Sends one UDP datagram from inside `from` with source `src` (any
/// address: the socket is transparent) to `dst`, where a socket bound in
/// `to` waits for it; true when it arrived within `timeout`. `dst`'s port
/// must be free in `to`.
pub fn spoofed_udp_arrives(
    from: &NetNs,
    src: SocketAddr,
    to: &NetNs,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<bool> {
    let token = format!("manul-netns spoofed {} {src}", std::process::id()).into_bytes();
    let sink = to
        .run(|| UdpSocket::bind(dst))?
        .map_err(|e| NetnsError::io(to.name(), format!("bind {dst}"), e))?;
    from.run(|| -> io::Result<()> {
        let domain = Domain::for_address(src);
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if src.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
        socket.bind(&SockAddr::from(src))?;
        socket.send_to(&token, &SockAddr::from(dst))?;
        Ok(())
    })?
    .map_err(|e| NetnsError::io(from.name(), format!("send {src} -> {dst}"), e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        sink.set_read_timeout(Some(left))
            .map_err(|e| NetnsError::io(to.name(), "set read timeout", e))?;
        match sink.recv_from(&mut buf) {
            Ok((n, _)) if buf[..n] == token[..] => return Ok(true),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(NetnsError::io(to.name(), format!("receive on {dst}"), e)),
        }
    }
}
