//! The lean Sync transport: the `Sync` stream's protobuf messages as
//! length-delimited frames over a plain (or TLS) TCP connection, without
//! HTTP/2, as Calico's Typha protocol is plain framed messages over TCP.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of one
//! protobuf message. The client sends one frame, its hello: a
//! `SyncRequest` (node name, version, resume revision, accepted
//! compression: what the gRPC request carries), at most
//! [`MAX_HELLO_BYTES`], and then nothing (it keeps its side open; closing
//! it ends the stream). The server answers with `SyncMessage` frames with
//! the gRPC stream's semantics (hello, snapshot chunks, in-sync, delta
//! batches, pings); when it ends the stream it sends a last
//! `SyncMessage::end` (`StreamEnd`: the status gRPC would carry) and
//! closes. Over TLS both sides name [`ALPN`].
//!
//! Here: the sans-IO frame decoder ([`FrameDecoder`]), the encoder that
//! leaves a snapshot chunk's or delta batch's shared entries bytes
//! uncopied ([`encode_message`]), and an async reader and client
//! ([`FrameReader`], [`open`]). A length over the reader's limit, a
//! connection that closes inside a frame, or a frame that does not decode
//! is an error naming it; nothing here panics on input.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::v1::sync_message::Message;
use crate::v1::{DeltaBatch, SnapshotChunk, StreamEnd, SyncMessage, SyncRequest};

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;
/// Largest hello (`SyncRequest`) frame a server reads.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;
/// Largest server frame a client reads by default (a snapshot chunk of
/// large resources; the gRPC client's limit is the same).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;
/// The TLS application protocol of the lean transport.
pub const ALPN: &[u8] = b"manul-sync/1";

/// Bytes a reader asks the connection for at once, at most.
const READ_STEP: usize = 64 * 1024;

/// Why a frame could not be read, decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the connection closed inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("reading or writing the connection")]
    Io(#[source] std::io::Error),
    #[error("frame does not decode as a {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the server ended the stream (code {code}): {message}")]
    Ended {
        code: i32,
        message: String,
        /// The server's hint to ask again after this many milliseconds
        /// (0: none).
        retry_after_ms: u32,
    },
}

/// Takes whole frames off the front of a buffer; refuses a length over
/// `max` before any of the frame is buffered.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder { max }
    }

    /// The payload of the first frame in `buf`, removed from it; none
    /// while the frame is incomplete.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = self.length(buf)? else {
            return Ok(None);
        };
        if buf.len() < LEN_BYTES + len {
            return Ok(None);
        }
        buf.advance(LEN_BYTES);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// Bytes still missing before [`FrameDecoder::decode`] can return a
    /// frame (0 when it can).
    pub fn missing(&self, buf: &[u8]) -> Result<usize, FrameError> {
        Ok(match self.length(buf)? {
            None => LEN_BYTES - buf.len(),
            Some(len) => (LEN_BYTES + len).saturating_sub(buf.len()),
        })
    }

    fn length(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.first_chunk::<LEN_BYTES>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        Ok(Some(len))
    }
}

/// A message as a frame: `head` (the length prefix and every field) then
/// `body`, the shared entries bytes of a snapshot chunk or delta batch,
/// which are written as they are instead of copied (empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub head: Bytes,
    pub body: Bytes,
}

impl EncodedFrame {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frames `message`; a frame over `max` bytes is refused.
pub fn encode_message(message: &SyncMessage, max: usize) -> Result<EncodedFrame, FrameError> {
    match &message.message {
        Some(Message::Deltas(d)) => {
            let fields = DeltaBatch {
                first_revision: d.first_revision,
                last_revision: d.last_revision,
                entries: Bytes::new(),
            };
            split_frame(4, &fields, 3, &d.entries, max)
        }
        Some(Message::Snapshot(c)) => {
            let fields = SnapshotChunk {
                revision: c.revision,
                index: c.index,
                count: c.count,
                entries: Bytes::new(),
            };
            split_frame(2, &fields, 4, &c.entries, max)
        }
        _ => Ok(EncodedFrame {
            head: encode_frame(message, max)?,
            body: Bytes::new(),
        }),
    }
}

/// A frame holding `message` (a hello, a ping...), copied whole.
pub fn encode_frame<M: prost::Message>(message: &M, max: usize) -> Result<Bytes, FrameError> {
    let len = message.encoded_len();
    check_len(len, max)?;
    let mut out = BytesMut::with_capacity(LEN_BYTES + len);
    put_len(&mut out, len);
    message
        .encode(&mut out)
        .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
    Ok(out.freeze())
}

/// The frame of a `SyncMessage` whose oneof `field` holds `fields` plus
/// the bytes field `entries_tag` = `body` (the inner message's last
/// field, so the bytes are those prost would write).
fn split_frame<M: prost::Message>(
    field: u32,
    fields: &M,
    entries_tag: u32,
    body: &Bytes,
    max: usize,
) -> Result<EncodedFrame, FrameError> {
    let body_len = body.len();
    let mut inner = fields.encoded_len();
    if body_len > 0 {
        inner += key_len(entries_tag) + encoded_len_varint(body_len as u64) + body_len;
    }
    let total = key_len(field) + encoded_len_varint(inner as u64) + inner;
    check_len(total, max)?;
    let mut head = BytesMut::with_capacity(LEN_BYTES + total - body_len);
    put_len(&mut head, total);
    encode_key(field, WireType::LengthDelimited, &mut head);
    encode_varint(inner as u64, &mut head);
    fields
        .encode(&mut head)
        .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
    if body_len > 0 {
        encode_key(entries_tag, WireType::LengthDelimited, &mut head);
        encode_varint(body_len as u64, &mut head);
    }
    Ok(EncodedFrame {
        head: head.freeze(),
        body: body.clone(),
    })
}

fn check_len(len: usize, max: usize) -> Result<(), FrameError> {
    let max = max.min(u32::MAX as usize);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(())
}

fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// The frame of a stream's end.
pub fn end_frame(code: i32, message: &str) -> Bytes {
    end_frame_retry(code, message, 0)
}

/// The frame of a stream's end that asks the client to try again after
/// `retry_after_ms` (0: no hint).
pub fn end_frame_retry(code: i32, message: &str, retry_after_ms: u32) -> Bytes {
    let end = |message: String| SyncMessage {
        message: Some(Message::End(StreamEnd {
            code,
            message,
            retry_after_ms,
        })),
    };
    // A status message is small; cut one that is not rather than fail.
    encode_frame(&end(message.to_owned()), MAX_HELLO_BYTES).unwrap_or_else(|_| {
        let cut = end("stream ended (reason too long to send)".to_owned());
        encode_frame(&cut, MAX_HELLO_BYTES).unwrap_or_default()
    })
}

/// Reads frames from a connection with a bounded buffer: a frame's
/// length is checked before its bytes are read, and the buffer grows with
/// the bytes that arrive, not with the length announced.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames of at most `max` bytes, starting with a `capacity`-byte
    /// buffer.
    pub fn new(io: R, max: usize, capacity: usize) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(capacity),
            decoder: FrameDecoder::new(max),
        }
    }

    /// The next frame's payload; none when the connection closed between
    /// frames.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            let missing = self.decoder.missing(&self.buf)?;
            self.buf.reserve(missing.clamp(1, READ_STEP));
            let read = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(FrameError::Io)?;
            if read == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(FrameError::Truncated {
                    got: self.buf.len(),
                    want: self.buf.len() + missing,
                });
            }
        }
    }

    /// Bytes read past the last frame returned (the start of the next).
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The connection, with any bytes read past the last frame dropped
    /// (see [`FrameReader::buffered`]).
    pub fn into_inner(self) -> R {
        self.io
    }
}

/// A client's side of a lean Sync stream.
#[derive(Debug)]
pub struct LeanStream<S> {
    reader: FrameReader<S>,
}

/// Sends `request` as the hello on `io` and returns the stream of the
/// server's messages (frames of at most `max` bytes).
pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: &SyncRequest,
    max: usize,
) -> Result<LeanStream<S>, FrameError> {
    let hello = encode_frame(request, MAX_HELLO_BYTES)?;
    io.write_all(&hello).await.map_err(FrameError::Io)?;
    io.flush().await.map_err(FrameError::Io)?;
    Ok(LeanStream {
        reader: FrameReader::new(io, max, 8 * 1024),
    })
}

impl<S: AsyncRead + Unpin> LeanStream<S> {
    /// The next message; none when the server closed the connection
    /// without an end (it went away). A `StreamEnd` is
    /// [`FrameError::Ended`].
    pub async fn message(&mut self) -> Result<Option<SyncMessage>, FrameError> {
        let Some(frame) = self.reader.next().await? else {
            return Ok(None);
        };
        let message = SyncMessage::decode(frame).map_err(|source| FrameError::Decode {
            what: "SyncMessage",
            source,
        })?;
        if let Some(Message::End(end)) = message.message {
            return Err(FrameError::Ended {
                code: end.code,
                message: end.message,
                retry_after_ms: end.retry_after_ms,
            });
        }
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::v1::{InSync, Ping, ServerHello};

    fn messages() -> Vec<SyncMessage> {
        let m = |message| SyncMessage {
            message: Some(message),
        };
        vec![
            m(Message::Hello(ServerHello {
                server_version: "manul/1".into(),
                replica_id: 3,
                revision: 42,
                snapshot_follows: true,
                compression: "gzip".into(),
            })),
            m(Message::Snapshot(SnapshotChunk {
                revision: 42,
                index: 0,
                count: 2,
                entries: Bytes::from(vec![7u8; 300]),
            })),
            m(Message::Snapshot(SnapshotChunk {
                revision: 0,
                index: 0,
                count: 1,
                entries: Bytes::new(),
            })),
            m(Message::InSync(InSync { revision: 42 })),
            m(Message::Deltas(DeltaBatch {
                first_revision: 43,
                last_revision: 45,
                entries: Bytes::from(vec![1u8; 200_000]),
            })),
            m(Message::Deltas(DeltaBatch {
                first_revision: 46,
                last_revision: 46,
                entries: Bytes::new(),
            })),
            m(Message::Ping(Ping {
                unix_millis: 1,
                revision: 46,
            })),
        ]
    }

    #[test]
    fn a_split_frame_is_the_length_then_exactly_what_prost_writes() {
        for message in messages() {
            let frame = encode_message(&message, MAX_MESSAGE_BYTES).unwrap();
            let mut wire = frame.head.to_vec();
            wire.extend_from_slice(&frame.body);
            let whole = message.encode_to_vec();
            assert_eq!(
                &wire[..4],
                &u32::try_from(whole.len()).unwrap().to_be_bytes()
            );
            assert_eq!(&wire[4..], &whole[..], "{message:?}");
        }
    }

    #[test]
    fn the_decoder_takes_frames_byte_by_byte_and_refuses_long_ones() {
        let decoder = FrameDecoder::new(MAX_MESSAGE_BYTES);
        let mut wire = Vec::new();
        for message in messages() {
            let frame = encode_message(&message, MAX_MESSAGE_BYTES).unwrap();
            wire.extend_from_slice(&frame.head);
            wire.extend_from_slice(&frame.body);
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                decoded.push(SyncMessage::decode(frame).unwrap());
            }
        }
        assert_eq!(decoded, messages());
        assert!(buf.is_empty());

        let small = FrameDecoder::new(10);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 11][..]);
        let err = small.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len: 11, max: 10 }),
            "{err}"
        );
        assert_eq!(small.missing(&[0, 0]).unwrap(), 2);
        assert_eq!(small.missing(&[0, 0, 0, 3, 1]).unwrap(), 2);
    }

    #[test]
    fn encoding_refuses_a_frame_over_the_limit() {
        let message = &messages()[4];
        let err = encode_message(message, 1000).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { max: 1000, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_client_reads_messages_then_the_end_and_names_a_cut_frame() {
        let (client, mut server) = tokio::io::duplex(1024);
        let request = SyncRequest {
            node_name: "n1".into(),
            client_version: "manul/1".into(),
            resume_revision: 7,
            accepted_compression: vec!["gzip".into()],
        };
        let serve = tokio::spawn(async move {
            let mut reader = FrameReader::new(&mut server, MAX_HELLO_BYTES, 64);
            let hello = SyncRequest::decode(reader.next().await.unwrap().unwrap()).unwrap();
            for message in messages() {
                let frame = encode_message(&message, MAX_MESSAGE_BYTES).unwrap();
                server.write_all(&frame.head).await.unwrap();
                server.write_all(&frame.body).await.unwrap();
            }
            server
                .write_all(&end_frame(8, "client fell behind"))
                .await
                .unwrap();
            hello
        });
        let mut stream = open(client, &request, MAX_MESSAGE_BYTES).await.unwrap();
        let mut got = Vec::new();
        let err = loop {
            match stream.message().await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => panic!("closed without an end"),
                Err(e) => break e,
            }
        };
        assert_eq!(got, messages());
        assert!(
            matches!(&err, FrameError::Ended { code: 8, message, retry_after_ms: 0 } if message == "client fell behind"),
            "{err}"
        );
        assert_eq!(serve.await.unwrap(), request);

        // A connection that closes inside a frame.
        let (client, mut server) = tokio::io::duplex(64);
        server.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(server);
        let mut reader = FrameReader::new(client, 100, 16);
        let err = reader.next().await.unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { got: 6, want: 13 }),
            "{err}"
        );
    }
}
