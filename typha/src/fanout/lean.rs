//! The lean Sync transport's server side: one connection of the sync
//! listener (`crate::listener::lean`) carries one stream, framed as
//! `manul_proto::frame` says.
//!
//! The connection must send its hello (a `SyncRequest` frame of at most
//! `MAX_HELLO_BYTES`) within the handshake timeout; a frame over the
//! limit, one that does not decode, an invalid request, a refused stream
//! (limit, shutdown, not serving) or any byte after the hello ends the
//! connection with a `StreamEnd` naming the problem when one can be sent
//! (with the status's retry hint, `retry_after_ms`). Then the same
//! stream as gRPC's (`service::open`: the client task, its bounded queue,
//! the stall cut) is written straight to the socket: each message is
//! framed with its snapshot chunk's or delta batch's shared entries bytes
//! left as they are (one vectored write, no copy), the messages ready at
//! once are written together (up to [`BATCH_BYTES`]), and nothing is
//! buffered per connection between writes. A client the stall check cuts
//! has its connection dropped at once, even in the middle of a write.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::{FutureExt as _, StreamExt as _};
use manul_proto::frame::{self, FrameError, FrameReader};
use manul_proto::v1::{SyncMessage, SyncRequest};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tonic::Status;

use super::Fanout;
use super::service::{Cut, SyncStream, open, validate};
use crate::listener::kill::KillSwitch;

/// Initial buffer for the hello.
const HELLO_BUFFER: usize = 512;
/// Messages ready at once are written together up to about this many bytes.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;
/// Longest a refusal's write may take.
const REFUSAL_WRITE: Duration = Duration::from_secs(5);
/// Longest the server reads what a refused client still sends.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Largest frame sent (the client's default limit).
const MAX_FRAME: usize = frame::MAX_MESSAGE_BYTES;

/// How a lean connection ended.
#[derive(Debug)]
enum Finish {
    /// The stream ended with this status, sent to the client.
    Ended(Status),
    /// The client closed its connection (or it failed).
    ClientGone(String),
    /// The client broke the protocol after its hello.
    Protocol(&'static str),
    /// The stall check cut the connection.
    Cut,
}

/// Serves the lean connection `io` from `peer` until its stream ends.
pub(crate) async fn serve_connection<S>(
    fanout: Arc<Fanout>,
    io: S,
    peer: SocketAddr,
    handshake: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let mut reader = FrameReader::new(read, frame::MAX_HELLO_BYTES, HELLO_BUFFER);
    let hello = match tokio::time::timeout(handshake, reader.next()).await {
        Err(_) => {
            tracing::info!(%peer, ?handshake, "lean sync connection sent no hello in time; closed");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(hello))) => hello,
        Ok(Err(error)) => {
            let status = Status::invalid_argument(format!("hello: {error}"));
            refuse(&mut write, reader.into_inner(), &peer, status).await;
            return;
        }
    };
    if !reader.buffered().is_empty() {
        // Sent with the hello, so read with it: nothing may follow it.
        let status = Status::invalid_argument(format!(
            "{} bytes after the hello: a client sends nothing after it",
            reader.buffered().len()
        ));
        refuse(&mut write, reader.into_inner(), &peer, status).await;
        return;
    }
    let request = match SyncRequest::decode(hello) {
        Ok(request) => request,
        Err(source) => {
            let error = FrameError::Decode {
                what: "SyncRequest",
                source,
            };
            refuse(
                &mut write,
                reader.into_inner(),
                &peer,
                Status::invalid_argument(format!("hello: {error}: {}", source_of(&error))),
            )
            .await;
            return;
        }
    };
    let valid = match validate(&request) {
        Ok(valid) => valid,
        Err(status) => {
            refuse(&mut write, reader.into_inner(), &peer, status).await;
            return;
        }
    };
    let switch = Arc::new(KillSwitch::default());
    let peer_name = peer.to_string();
    let stream = match open(&fanout, valid, &peer_name, Cut::Switch(switch.clone())) {
        Ok(stream) => stream,
        Err(status) => {
            refuse(&mut write, reader.into_inner(), &peer, status).await;
            return;
        }
    };
    let read = reader.into_inner();
    let finish = tokio::select! {
        finish = send_all(&mut write, stream) => finish,
        finish = watch_client(read) => finish,
        () = killed(&switch) => Finish::Cut,
    };
    match finish {
        Finish::Ended(status) => {
            tracing::debug!(%peer, reason = status.message(), "lean sync stream ended");
        }
        Finish::ClientGone(why) => tracing::debug!(%peer, why, "lean sync client went away"),
        Finish::Protocol(what) => {
            tracing::info!(%peer, what, "lean sync client broke the protocol; closed");
        }
        Finish::Cut => tracing::debug!(%peer, "lean sync connection cut"),
    }
}

fn source_of(error: &FrameError) -> String {
    std::error::Error::source(error).map_or_else(String::new, ToString::to_string)
}

/// Sends `status` as the stream's end and closes, reading (and dropping)
/// what the client still sends for a moment first: closing a socket with
/// unread bytes resets the connection, and the reset can destroy the
/// refusal before the client has read it.
async fn refuse<W, R>(write: &mut W, mut read: R, peer: &SocketAddr, status: Status)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    tracing::info!(%peer, reason = status.message(), "lean sync connection refused");
    let end = end_of(&status);
    let sent = async {
        write.write_all(&end).await?;
        write.shutdown().await
    };
    // A client that does not read its refusal does not hold the task.
    if !matches!(tokio::time::timeout(REFUSAL_WRITE, sent).await, Ok(Ok(()))) {
        return;
    }
    let drained = async {
        let mut sink = [0u8; 4096];
        while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drained).await;
}

/// The `StreamEnd` frame of `status`, with its retry hint.
fn end_of(status: &Status) -> Bytes {
    let retry = super::retry_hint(status).unwrap_or(0);
    frame::end_frame_retry(status.code() as i32, status.message(), retry)
}

/// Resolves when the switch is flipped.
async fn killed(switch: &KillSwitch) {
    std::future::poll_fn(|cx| {
        if switch.killed(cx) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Reads what the client sends after its hello: nothing until it closes.
async fn watch_client<R: AsyncRead + Unpin>(mut read: R) -> Finish {
    let mut byte = [0u8; 1];
    match read.read(&mut byte).await {
        Ok(0) => Finish::ClientGone("closed its connection".to_owned()),
        Ok(_) => Finish::Protocol("sent bytes after its hello"),
        Err(error) => Finish::ClientGone(error.to_string()),
    }
}

/// Writes the stream's messages as they come, then its end.
async fn send_all<W: AsyncWrite + Unpin>(write: &mut W, mut stream: SyncStream) -> Finish {
    loop {
        let mut batch = Frames::default();
        let mut end = None;
        match stream.next().await {
            None => return Finish::ClientGone("stream closed".to_owned()),
            Some(Err(status)) => end = Some(status),
            Some(Ok(message)) => {
                if let Err(status) = batch.push(&message) {
                    end = Some(status);
                }
            }
        }
        while end.is_none() && batch.remaining() < BATCH_BYTES {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    if let Err(status) = batch.push(&message) {
                        end = Some(status);
                    }
                }
                Some(Some(Err(status))) => end = Some(status),
                Some(None) | None => break,
            }
        }
        if let Some(status) = &end {
            batch.push_end(status);
        }
        let written = async {
            write.write_all_buf(&mut batch).await?;
            write.flush().await
        };
        if let Err(error) = written.await {
            return Finish::ClientGone(error.to_string());
        }
        if let Some(status) = end {
            let _ = write.shutdown().await;
            return Finish::Ended(status);
        }
    }
}

/// Frames to write, as a [`Buf`] of their pieces (written vectored).
#[derive(Debug, Default)]
struct Frames {
    pieces: VecDeque<Bytes>,
    remaining: usize,
}

impl Frames {
    fn push(&mut self, message: &SyncMessage) -> Result<(), Status> {
        let encoded = frame::encode_message(message, MAX_FRAME).map_err(|error| {
            tracing::error!(%error, "a sync message cannot be framed");
            Status::internal(format!("a message could not be sent: {error}"))
        })?;
        self.add(encoded.head);
        self.add(encoded.body);
        Ok(())
    }

    fn push_end(&mut self, status: &Status) {
        self.add(end_of(status));
    }

    fn add(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.remaining += piece.len();
            self.pieces.push_back(piece);
        }
    }
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.front().map_or(&[], |p| p.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while cnt > 0 {
            let Some(front) = self.pieces.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.pieces.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, piece) in dst.iter_mut().zip(&self.pieces) {
            *slot = IoSlice::new(piece);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use manul_proto::v1::sync_message::Message;
    use manul_proto::v1::{DeltaBatch, Ping};

    #[test]
    fn frames_advance_across_pieces_and_write_every_byte_once() {
        let mut frames = Frames::default();
        let delta = SyncMessage {
            message: Some(Message::Deltas(DeltaBatch {
                first_revision: 1,
                last_revision: 2,
                entries: Bytes::from_static(b"0123456789"),
            })),
        };
        let ping = SyncMessage {
            message: Some(Message::Ping(Ping {
                unix_millis: 5,
                revision: 2,
            })),
        };
        frames.push(&delta).unwrap();
        frames.push(&ping).unwrap();
        let mut expected = Vec::new();
        for m in [&delta, &ping] {
            expected.extend_from_slice(&u32::try_from(m.encoded_len()).unwrap().to_be_bytes());
            expected.extend_from_slice(&m.encode_to_vec());
        }
        assert_eq!(frames.remaining(), expected.len());
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(frames.chunks_vectored(&mut slices), 3);
        let mut out = Vec::new();
        while frames.has_remaining() {
            let step = frames.chunk().len().min(3);
            out.extend_from_slice(&frames.chunk()[..step]);
            frames.advance(step);
        }
        assert_eq!(out, expected);
    }
}
