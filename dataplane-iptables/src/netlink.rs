//! Sending an element batch (`elements.rs`) to nf_tables over netlink,
//! from this process: no `nft`, so no listing of the table first. Acts
//! in the network namespace of the calling thread: a [`Writer`] opens its
//! socket there at its first batch and keeps it for the next ones.
//!
//! Why one socket for many batches: closing a `NETLINK_NETFILTER` socket
//! makes nf_tables finish the destruction of every committed transaction
//! first (its `NETLINK_URELEASE` handler flushes the destroy work, which
//! waits for an RCU grace period), so a socket per batch spends a few
//! scheduler ticks in `close` after every batch that deleted elements:
//! 2.6 to 12 ms measured with `strace -T` on a 250 Hz kernel, the 4 ms
//! steps of a backend change. A socket kept open never waits for that.

use std::os::fd::AsRawFd;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::elements::{self, Batch};
use crate::nft::NftError;

/// The kernel processes a batch while it is being sent, so every answer
/// is queued by the time `send` returns; this is room for them (at
/// least; more for a batch of many messages).
const RECEIVE_BUFFER: usize = 1 << 20;

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> NftError {
    move |source| NftError::Netlink { context, source }
}

/// Sets a socket buffer's size with a `*FORCE` option (root may go past
/// `net.core.[rw]mem_max`); no safe wrapper in the dependencies sets it.
#[allow(unsafe_code)]
pub(crate) fn buffer(socket: &Socket, option: libc::c_int, size: usize) -> std::io::Result<()> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the socket's, open for the call; the
    // option value is a c_int that lives across it, its size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends `batch` as one transaction on a socket of its own (see
/// [`Writer`] for batches that follow one another).
pub fn apply(batch: &Batch) -> Result<(), NftError> {
    Writer::default().apply(batch)
}

/// A `NETLINK_NETFILTER` socket kept open across batches, opened in the
/// calling thread's network namespace at its first use.
#[derive(Debug, Default)]
pub struct Writer {
    socket: Option<Socket>,
}

/// Opens and binds a `NETLINK_NETFILTER` socket that acknowledges
/// without echoing the request.
fn open() -> Result<Socket, NftError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io("opening a netlink socket"))?;
    socket
        .bind_auto()
        .map_err(io("binding the netlink socket"))?;
    socket
        .set_cap_ack(true)
        .map_err(io("setting NETLINK_CAP_ACK"))?;
    Ok(socket)
}

impl Writer {
    /// The socket, opened if it is not yet.
    pub fn socket(&mut self) -> Result<&Socket, NftError> {
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => open()?,
        };
        Ok(self.socket.insert(socket))
    }

    /// Sends `batch` as one transaction and checks that the kernel
    /// acknowledged every message. On error the kernel applied none of
    /// it, and the socket is closed (the next batch opens another, so no
    /// answer of this one is read as the next one's).
    pub fn apply(&mut self, batch: &Batch) -> Result<(), NftError> {
        let result = self.socket().and_then(|socket| send_batch(socket, batch));
        if result.is_err() {
            self.socket = None;
        }
        result
    }

    /// Closes the socket (the next use opens another).
    pub fn reset(&mut self) {
        self.socket = None;
    }
}

/// Reads every answer queued on `socket` without waiting.
fn drain(socket: &Socket, buf: &mut [u8]) -> Result<Vec<(u32, i32)>, NftError> {
    let mut answers = Vec::new();
    loop {
        match socket.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(n) => answers.extend(elements::acks(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(io("reading the answers")(e)),
        }
    }
    Ok(answers)
}

fn send_batch(socket: &Socket, batch: &Batch) -> Result<(), NftError> {
    let mut buf = vec![0u8; 64 * 1024];
    // Nothing of an earlier use may be taken for this batch's answers.
    drain(socket, &mut buf)?;
    // A batch is one message to the kernel: the send buffer must hold it
    // (as `nft` does, past the system's default limit).
    buffer(socket, libc::SO_SNDBUFFORCE, batch.bytes.len() + 4096)
        .map_err(io("sizing the send buffer"))?;
    buffer(
        socket,
        libc::SO_RCVBUFFORCE,
        RECEIVE_BUFFER.max(batch.acked.len() * 64),
    )
    .map_err(io("sizing the receive buffer"))?;
    let sent = socket
        .send(&batch.bytes, 0)
        .map_err(io("sending the batch"))?;
    if sent != batch.bytes.len() {
        return Err(NftError::Netlink {
            context: "sending the batch",
            source: std::io::Error::other(format!("{sent} of {} bytes sent", batch.bytes.len())),
        });
    }
    let answers = drain(socket, &mut buf)?;
    if let Some((seq, err)) = answers.iter().find(|(_, e)| *e != 0) {
        let what = batch
            .acked
            .iter()
            .find(|(s, _)| s == seq)
            .map_or("an unknown message", |(_, w)| w.as_str());
        return Err(NftError::Refused {
            stderr: format!(
                "netlink: {what}: {}",
                std::io::Error::from_raw_os_error(-err)
            ),
        });
    }
    let missing: Vec<&str> = batch
        .acked
        .iter()
        .filter(|(s, _)| !answers.iter().any(|(a, _)| a == s))
        .map(|(_, w)| w.as_str())
        .collect();
    if let Some(first) = missing.first() {
        return Err(NftError::Netlink {
            context: "reading the answers",
            source: std::io::Error::other(format!(
                "{} messages unacknowledged, the first {first}",
                missing.len()
            )),
        });
    }
    Ok(())
}
