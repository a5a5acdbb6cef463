//! An HTTP/1 connection's deadlines, kept at its socket: [`Idle`] fails
//! the connection's reads once it has been idle too long, or once a
//! request's head has been arriving too long (a slow-loris client sending
//! one byte now and then), which ends the connection; axum and hyper
//! have neither deadline of their own.
//!
//! Idle means nothing read for `idle` (or, for a listener that streams
//! responses such as Server-Sent Events, nothing read or written). A
//! request's head is the bytes from the first one after the previous
//! head up to its empty line (CRLF CRLF, or LF LF); it must arrive whole
//! within `head` of its first byte. The listeners it serves take GET
//! requests, whose heads are all they send.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::slots::Slot;

/// Where a connection is in its current request's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Head {
    /// Between requests: no byte of the next head yet.
    #[default]
    Between,
    /// Inside a line of a head (since `since`).
    Line { since: Instant },
    /// Just after a line feed: another one (maybe after a CR) ends it.
    LineStart { since: Instant, cr: bool },
}

impl Head {
    /// Reads `bytes` received at `now`: where the head stands afterwards.
    pub fn scan(mut self, bytes: &[u8], now: Instant) -> Head {
        for &b in bytes {
            self = match (self, b) {
                (Head::Between, b'\n') => Head::LineStart {
                    since: now,
                    cr: false,
                },
                (Head::Between, _) => Head::Line { since: now },
                (Head::LineStart { .. }, b'\n') => Head::Between,
                (Head::LineStart { since, cr: false }, b'\r') => {
                    Head::LineStart { since, cr: true }
                }
                (Head::Line { since }, b'\n') => Head::LineStart { since, cr: false },
                (Head::Line { since } | Head::LineStart { since, .. }, _) => Head::Line { since },
            };
        }
        self
    }

    /// When the head's first byte arrived, while it is incomplete.
    pub fn since(self) -> Option<Instant> {
        match self {
            Head::Between => None,
            Head::Line { since } | Head::LineStart { since, .. } => Some(since),
        }
    }
}

/// A connection whose reads fail once it has been idle for `idle`, or a
/// request head has been arriving for longer than `head`; it holds its
/// listener's slot until dropped, after its own socket closes.
#[derive(Debug)]
pub struct Idle<IO> {
    // Dropped first: the socket closes before the slot is given back.
    inner: IO,
    idle: Duration,
    head_limit: Duration,
    /// Whether writes count as activity too.
    writes: bool,
    /// The last activity.
    last: Instant,
    head: Head,
    deadline: Pin<Box<Sleep>>,
    _slot: Option<Slot>,
}

impl<IO> Idle<IO> {
    /// Idle after `idle` without a byte read, a request head within
    /// `head` of its first byte.
    pub fn new(inner: IO, idle: Duration, head: Duration, slot: Option<Slot>) -> Idle<IO> {
        let now = Instant::now();
        Idle {
            inner,
            idle,
            head_limit: head,
            writes: false,
            last: now,
            head: Head::Between,
            deadline: Box::pin(tokio::time::sleep_until(now + idle)),
            _slot: slot,
        }
    }

    /// Writes count as activity (for responses that stream).
    pub fn counting_writes(mut self, writes: bool) -> Idle<IO> {
        self.writes = writes;
        self
    }

    /// The deadline after activity at `now`.
    fn rearm(&mut self, now: Instant) {
        self.last = now;
        let idle = now + self.idle;
        let next = match self.head.since() {
            Some(since) => idle.min(since + self.head_limit),
            None => idle,
        };
        self.deadline.as_mut().reset(next);
    }

    fn expired(&self) -> io::Error {
        let why = if self.head.since().is_some() {
            "no whole request head within the handshake timeout"
        } else {
            "no request within the idle timeout"
        };
        io::Error::new(io::ErrorKind::TimedOut, why)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Idle<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let now = Instant::now();
                this.head = this.head.scan(&buf.filled()[before..], now);
                this.rearm(now);
            }
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(this.expired()));
            }
            _ => {}
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Idle<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if this.writes && matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.rearm(Instant::now());
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn a_head_ends_at_its_empty_line() {
        let now = Instant::now();
        let h = Head::Between.scan(b"GET / HTTP/1.1\r\nHost: x\r\n", now);
        assert_eq!(h.since(), Some(now));
        assert_eq!(h.scan(b"\r\n", now), Head::Between);
        assert_eq!(h.scan(b"\r", now).scan(b"\n", now), Head::Between);
        assert_eq!(
            Head::Between.scan(b"GET / HTTP/1.1\n\n", now),
            Head::Between
        );
        // A header line that starts with CR but goes on is still a line.
        assert_ne!(h.scan(b"\rX", now), Head::Between);
        let next = Head::Between.scan(b"GET / HTTP/1.1\r\n\r\nGET", now);
        assert_eq!(next.since(), Some(now), "a pipelined request's head");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_after_idle() {
        let (client, server) = tokio::io::duplex(64);
        let mut idle = Idle::new(
            server,
            Duration::from_secs(10),
            Duration::from_secs(3),
            None,
        );
        let started = Instant::now();
        let err = idle.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_fails_after_the_handshake_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut idle = Idle::new(
            server,
            Duration::from_secs(10),
            Duration::from_secs(3),
            None,
        );
        let mut buf = [0u8; 64];
        let started = Instant::now();
        let mut sent = 0;
        let err = loop {
            client.write_all(b"G").await.unwrap();
            sent += 1;
            match idle.read(&mut buf).await {
                Ok(n) => assert_eq!(n, 1),
                Err(e) => break e,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(Err(e)) = tokio::time::timeout(Duration::ZERO, idle.read(&mut buf)).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("request head"), "{err}");
        assert!(started.elapsed() <= Duration::from_secs(4), "{sent} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_head_lifts_its_deadline_and_writes_count_when_asked() {
        let (mut client, server) = tokio::io::duplex(256);
        let mut idle = Idle::new(
            server,
            Duration::from_secs(10),
            Duration::from_secs(3),
            None,
        )
        .counting_writes(true);
        let mut buf = [0u8; 64];
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".len();
        assert_eq!(idle.read(&mut buf).await.unwrap(), head);
        // Past the head's 3 s, within the idle 10 s: still open.
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
        assert!(read.is_err(), "{read:?}");
        // A write at 9 s keeps it open until 19 s.
        tokio::time::sleep(Duration::from_secs(4)).await;
        idle.write_all(b"event").await.unwrap();
        let started = Instant::now();
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(client);
    }
}
