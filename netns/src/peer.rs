//! Who answered, and whom it saw: a TCP probe that asks the
//! [`TcpServer`](crate::TcpServer) it reaches for the client address the
//! server saw (after any NAT on the way) and the address it answered on
//! (which backend a service sent the connection to).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{NetnsError, Result};
use crate::ns::NetNs;
use crate::probe::{ProbeOutcome, TCP_BANNER};

/// Sent (as one write) after the banner: the server answers
/// `peer PEER local LOCAL\n` instead of echoing it.
pub const PEER_QUERY: &[u8] = b"manul-netns peer?\n";

/// What [`tcp_peer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProbe {
    /// How the connection attempt ended.
    pub outcome: ProbeOutcome,
    /// When connected and answered: (the client address the server saw,
    /// the server's own address).
    pub seen: Option<(SocketAddr, SocketAddr)>,
}

/// The server's answer to [`PEER_QUERY`].
pub(crate) fn peer_answer(peer: SocketAddr, local: SocketAddr) -> Vec<u8> {
    format!("peer {peer} local {local}\n").into_bytes()
}

/// Parses [`peer_answer`]'s line.
pub(crate) fn parse_answer(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim_end().strip_prefix("peer ")?;
    let (peer, local) = rest.split_once(" local ")?;
    Some((peer.parse().ok()?, local.parse().ok()?))
}

/// Connects from inside `ns` to `dst`, and when a [`TcpServer`](crate::TcpServer)
/// answers, asks it whom it saw. A connection that is refused, unreachable
/// or timed out is an outcome, not an error; a connected server that does
/// not answer the query in time is `Connected` with `seen: None`.
pub fn tcp_peer(ns: &NetNs, dst: SocketAddr, timeout: Duration) -> Result<PeerProbe> {
    let deadline = Instant::now() + timeout;
    let result =
        ns.run(|| TcpStream::connect_timeout(&dst, timeout.max(Duration::from_millis(1))))?;
    let mut stream = match result {
        Ok(stream) => stream,
        Err(e) => {
            return match crate::probe::outcome_of(&e) {
                Some(outcome) => Ok(PeerProbe {
                    outcome,
                    seen: None,
                }),
                None => Err(NetnsError::io(
                    ns.name(),
                    format!("tcp connect to {dst}"),
                    e,
                )),
            };
        }
    };
    let seen = ask(&mut stream, deadline)
        .map_err(|e| NetnsError::io(ns.name(), format!("peer query to {dst}"), e))?;
    Ok(PeerProbe {
        outcome: ProbeOutcome::Connected,
        seen,
    })
}

/// Reads the banner, sends the query, reads the answer; `None` when the
/// deadline passes or the connection ends first.
fn ask(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<(SocketAddr, SocketAddr)>> {
    let mut pending = Vec::new();
    let mut sent = false;
    let mut buf = [0u8; 512];
    loop {
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if line == TCP_BANNER && !sent {
                stream.write_all(PEER_QUERY)?;
                sent = true;
            } else if sent {
                return Ok(parse_answer(&String::from_utf8_lossy(&line)));
            }
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(None);
        };
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_round_trips() {
        let peer: SocketAddr = "192.168.220.200:40000".parse().unwrap();
        let local: SocketAddr = "10.65.0.3:8080".parse().unwrap();
        let line = String::from_utf8(peer_answer(peer, local)).unwrap();
        assert_eq!(parse_answer(&line), Some((peer, local)));
        assert_eq!(parse_answer("manul-netns\n"), None);
        assert_eq!(parse_answer("peer x local y\n"), None);
    }
}
