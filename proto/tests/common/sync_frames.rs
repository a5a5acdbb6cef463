//! The `sync_frames` fuzz target's harness: any bytes as what a Typha
//! server sends a client of the lean Sync transport, fed to the client's
//! frame decoder in pieces whose sizes the input's first byte chooses.
//! Never a panic; a length over the limit is refused before any of the
//! frame is buffered; every frame that decodes as a `SyncMessage` frames
//! again (`encode_message`) to the same bytes. Shared with
//! `proto/tests/fuzz_replay.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut as _, BytesMut};
use manul_proto::frame::{FrameDecoder, FrameError, encode_message};
use manul_proto::v1::SyncMessage;
use prost::Message as _;

/// Frames the harness's decoder takes at most.
pub const MAX: usize = 64 * 1024;

/// What one input did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// Frames taken off the input.
    pub frames: usize,
    /// Of those, frames that decode as a `SyncMessage`.
    pub messages: usize,
    /// The input ended with a frame over the limit.
    pub too_large: bool,
}

pub fn offer_frames(data: &[u8]) -> Offered {
    let Some((&step, data)) = data.split_first() else {
        return Offered::default();
    };
    let step = usize::from(step % 16) + 1;
    let decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Offered::default();
    for piece in data.chunks(step) {
        buf.put_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX);
                    out.frames += 1;
                    if let Ok(message) = SyncMessage::decode(frame.clone()) {
                        out.messages += 1;
                        let again = encode_message(&message, MAX + 16).unwrap();
                        let mut wire = again.head.to_vec();
                        wire.extend_from_slice(&again.body);
                        let canonical = message.encode_to_vec();
                        assert_eq!(&wire[4..], &canonical[..]);
                    }
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max }) => {
                    assert!(len > max && max == MAX);
                    // Nothing of the frame was buffered beyond what arrived.
                    assert!(buf.len() <= piece.len() + 4 + MAX);
                    out.too_large = true;
                    return out;
                }
                Err(e) => panic!("the decoder failed otherwise: {e}"),
            }
        }
        let missing = decoder.missing(&buf).unwrap();
        assert!(missing > 0);
    }
    out
}

/// Real streams as a server sends them (each seed starts with its piece
/// size byte).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use bytes::Bytes;
    use manul_proto::v1::sync_message::Message;
    use manul_proto::v1::{DeltaBatch, InSync, Ping, ServerHello, SnapshotChunk};
    let m = |message| SyncMessage {
        message: Some(message),
    };
    let stream = |step: u8, messages: &[SyncMessage], end: Option<(i32, &str)>| {
        let mut out = vec![step];
        for message in messages {
            let frame = encode_message(message, MAX).unwrap();
            out.extend_from_slice(&frame.head);
            out.extend_from_slice(&frame.body);
        }
        if let Some((code, text)) = end {
            out.extend_from_slice(&manul_proto::frame::end_frame(code, text));
        }
        out
    };
    let hello = m(Message::Hello(ServerHello {
        server_version: "manul/0.1.0".into(),
        replica_id: 1,
        revision: 12,
        snapshot_follows: true,
        compression: "identity".into(),
    }));
    let chunk = m(Message::Snapshot(SnapshotChunk {
        revision: 12,
        index: 0,
        count: 1,
        entries: Bytes::from_static(b"\x0a\x05\x0a\x03\x0a\x01t"),
    }));
    let in_sync = m(Message::InSync(InSync { revision: 12 }));
    let delta = m(Message::Deltas(DeltaBatch {
        first_revision: 13,
        last_revision: 13,
        entries: Bytes::from_static(b"\x0a\x07\x0a\x03\x0a\x01t\x18\x0d"),
    }));
    let ping = m(Message::Ping(Ping {
        unix_millis: 1_700_000_000_000,
        revision: 13,
    }));
    vec![
        (
            "seed-snapshot-stream".into(),
            stream(
                0,
                &[hello.clone(), chunk, in_sync.clone(), delta.clone()],
                None,
            ),
        ),
        (
            "seed-resume-then-ping".into(),
            stream(3, &[hello, in_sync, delta, ping], None),
        ),
        (
            "seed-fell-behind".into(),
            stream(
                15,
                &[],
                Some((
                    8,
                    "client fell behind: reconnect and resume from revision 13",
                )),
            ),
        ),
        ("seed-over-the-limit".into(), vec![1, 0, 1, 0, 1, 0]),
    ]
}
