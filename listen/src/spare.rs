//! A file descriptor held in reserve for an HTTP listener, so that its
//! health and metrics endpoints (`/readyz`, `/healthz`, `/metrics`) still
//! answer when the process is out of descriptors.
//!
//! The listeners' slots keep connections below the descriptor limit
//! ([`crate::slots::share`]), but descriptors can still run out: a limit
//! lowered after the start, or the rest of the process using more than
//! [`crate::slots::RESERVED_FDS`]. Then every `accept` fails with EMFILE,
//! and a probe's connection would wait in the kernel's backlog until
//! something else closes. So the HTTP listener keeps one descriptor in
//! reserve (at first open on `/dev/null`): when an accept fails for want
//! of a descriptor, it closes that one and accepts again at once, on the
//! same thread with nothing in between ([`Spare::release`], then the
//! accept), and the connection it gets is a [`SpareStream`]. When that
//! connection ends, its socket is shut down and its descriptor kept as
//! the reserve: the descriptor is never freed on the way back, so no
//! other thread can take it then. One probe at a time is served so;
//! others wait for it.
//!
//! One window remains: between closing the reserve and the accept (two
//! system calls in a row on one thread; Linux cannot accept into a given
//! descriptor), another thread's `accept` or `open` may take the freed
//! descriptor; the window is a few microseconds, longer only when the
//! thread is preempted right there. Then the reserve is gone until a
//! descriptor frees and the listener, retrying every 50 ms like the
//! others, opens `/dev/null` again. The same window comes when nobody is
//! connecting (Linux takes the descriptor before it looks at the backlog,
//! so EMFILE comes then too): the accept on the reserve finds nothing and
//! `/dev/null` is opened again at once.

use std::fs::File;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The reserve: one open descriptor (of any kind: `/dev/null`, or the
/// shut-down socket of the last connection accepted on it), or none while
/// it is lent out (or could not be opened again yet).
#[derive(Debug)]
pub struct Spare {
    held: Mutex<Option<OwnedFd>>,
}

/// What a connection accepted on the reserve's descriptor holds: given
/// that descriptor back ([`Lent::keep`]) it becomes the reserve again;
/// dropped without it, the reserve is opened again on `/dev/null`.
#[derive(Debug)]
pub struct Lent(Arc<Spare>);

impl Lent {
    /// Keeps `fd` (the connection's own descriptor) as the reserve.
    pub fn keep(self, fd: OwnedFd) {
        let mut held = self.0.lock();
        if held.is_none() {
            *held = Some(fd);
            tracing::debug!("reserved descriptor kept from its connection");
        }
        // Otherwise the reserve was opened again meanwhile: `fd` closes.
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.restore();
    }
}

impl Spare {
    /// A reserve, opened now (logged when it cannot be).
    pub fn new() -> Arc<Spare> {
        let spare = Spare {
            held: Mutex::new(None),
        };
        if !spare.restore() {
            tracing::warn!(
                "cannot open /dev/null to hold a descriptor in reserve: the HTTP listener has none when the process runs out"
            );
        }
        Arc::new(spare)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OwnedFd>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the reserve again when it is not held; whether it is held.
    pub fn restore(&self) -> bool {
        let mut held = self.lock();
        if held.is_none() {
            *held = File::open("/dev/null").ok().map(OwnedFd::from);
            tracing::debug!(held = held.is_some(), "reserved descriptor opened again");
        }
        held.is_some()
    }

    /// Takes the reserve out: its descriptor, for the caller to close
    /// right before its accept, and what the connection accepted on it
    /// holds; none when the reserve is not held.
    pub fn release(self: &Arc<Spare>) -> Option<(OwnedFd, Lent)> {
        let fd = self.lock().take()?;
        Some((fd, Lent(self.clone())))
    }

    /// Whether the reserve is held now.
    pub fn held(&self) -> bool {
        self.lock().is_some()
    }
}

/// A TCP connection that may have been accepted on the reserve's
/// descriptor: when it was, dropping it shuts its socket down and keeps
/// its descriptor as the reserve instead of closing it.
#[derive(Debug)]
pub struct SpareStream {
    tcp: Option<TcpStream>,
    lent: Option<Lent>,
}

impl SpareStream {
    /// `tcp`, accepted on the reserve's descriptor when `lent` is some.
    pub fn new(tcp: TcpStream, lent: Option<Lent>) -> SpareStream {
        SpareStream {
            tcp: Some(tcp),
            lent,
        }
    }

    fn tcp(&mut self) -> io::Result<&mut TcpStream> {
        self.tcp
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))
    }
}

impl Drop for SpareStream {
    fn drop(&mut self) {
        let (Some(tcp), Some(lent)) = (self.tcp.take(), self.lent.take()) else {
            return;
        };
        // Out of the reactor, then shut down (the peer sees the close) and
        // kept open. Should leaving the reactor fail, the socket is closed
        // and `lent` opens `/dev/null` again.
        if let Ok(tcp) = tcp.into_std() {
            if let Err(e) = tcp.shutdown(Shutdown::Both) {
                tracing::debug!("shutting down a connection on the reserve: {e}");
            }
            lent.keep(OwnedFd::from(tcp));
        }
    }
}

impl AsyncRead for SpareStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for SpareStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Whether `error` is the process (EMFILE) or the system (ENFILE) being out
/// of file descriptors.
pub fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_reserve_comes_back_when_its_connection_closes() {
        let spare = Spare::new();
        assert!(spare.held());
        let (fd, lent) = spare.release().expect("held at first");
        drop(fd);
        assert!(!spare.held());
        assert!(spare.release().is_none(), "lent once at a time");
        drop(lent);
        assert!(spare.held());
    }

    #[tokio::test]
    async fn a_connection_on_the_reserve_keeps_its_descriptor_as_the_reserve() {
        use std::os::fd::AsRawFd as _;
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let raw = tcp.as_raw_fd();
        let spare = Spare::new();
        let (fd, lent) = spare.release().unwrap();
        drop(fd);
        drop(SpareStream::new(tcp, Some(lent)));
        let (fd, lent) = spare.release().expect("held again");
        assert_eq!(fd.as_raw_fd(), raw, "the connection's own descriptor");
        let read = client.read(&mut [0u8; 8]).await.unwrap();
        assert_eq!(read, 0, "the client sees the close");
        drop((fd, lent));
    }

    #[test]
    fn only_running_out_of_descriptors_counts() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
