//! Streaming flow records to the flow aggregator: numbered batches kept
//! until acknowledged ([`Outbox`], no I/O) and the task that sends them
//! ([`run`]), resending what was not acknowledged after every reconnect.
//! The aggregator drops a batch it already stored (same node, epoch and
//! sequence number), so a resend never counts a flow twice. A batch is
//! kept once (shared with the stream that sends it, [`PushCodec`]), never
//! copied to be sent or resent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use manul_proto::flows::{FlowRecord, PushAck, PushHello, RecordBatch};
use manul_tls::connect::Transport;
use manul_tls::{Expected, TlsError};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Endpoint;
use tracing::{info, warn};

/// The aggregator's URL with the scheme tonic dials (`https://` becomes
/// `http://`: the TLS is [`Transport`]'s, not tonic's).
fn plain_url(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_owned(),
    }
}

/// Why the aggregator's address or TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExportTlsError {
    #[error("--flow-aggregator {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    #[error(
        "--flow-aggregator {0:?} is https:// but TyphaCAFile, TyphaCertFile and TyphaKeyFile (Felix's certificate) are not all set"
    )]
    NoCertificate(String),
    #[error("--flow-aggregator-cn/--flow-aggregator-uri-san need an https:// aggregator")]
    NamesWithoutTls,
    #[error("TLS towards the flow aggregator")]
    Tls(#[source] TlsError),
}

/// How Felix reaches the aggregator at `url`: plaintext for `http://`;
/// for `https://`, TLS with Felix's own certificate (the files it presents
/// to Typha: `ca`, `cert`, `key`) and the aggregator's certificate checked
/// for common name `cn` (default `manul-flows`) or URI SAN `uri_san`,
/// never a host name.
pub fn transport(
    url: &str,
    files: [&str; 3],
    cn: Option<&str>,
    uri_san: Option<&str>,
) -> Result<Transport, ExportTlsError> {
    if url.starts_with("http://") {
        if cn.is_some() || uri_san.is_some() {
            return Err(ExportTlsError::NamesWithoutTls);
        }
        return Ok(Transport::Plain);
    }
    if !url.starts_with("https://") {
        return Err(ExportTlsError::Url(url.to_owned()));
    }
    if files.iter().any(|f| f.is_empty()) {
        return Err(ExportTlsError::NoCertificate(url.to_owned()));
    }
    let cn = match (cn, uri_san) {
        (None, None) => Some(manul_tls::dev::FLOWS_CN),
        (cn, _) => cn,
    };
    let server = Expected::new(
        cn.map(str::to_owned),
        uri_san.map(str::to_owned),
        "--flow-aggregator-cn/--flow-aggregator-uri-san",
    )
    .map_err(ExportTlsError::Tls)?;
    let config = manul_tls::client::ClientSettings {
        ca_file: files[0].into(),
        cert_file: files[1].into(),
        key_file: files[2].into(),
        server,
    }
    .config()
    .map_err(ExportTlsError::Tls)?;
    Ok(Transport::Tls(config))
}

/// Batches sent or to send, oldest first, until acknowledged; at most
/// `capacity` records (beyond: the oldest batches are dropped and counted).
#[derive(Debug)]
pub struct Outbox {
    batches: VecDeque<Arc<RecordBatch>>,
    records: usize,
    capacity: usize,
    next_seq: u64,
    /// Records dropped because the outbox was full.
    pub dropped: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            batches: VecDeque::new(),
            records: 0,
            capacity,
            next_seq: 1,
            dropped: 0,
        }
    }

    /// Numbers `records` as the next batch and keeps it; the batch to send
    /// (the one kept, shared).
    pub fn push(&mut self, records: Vec<FlowRecord>) -> Arc<RecordBatch> {
        let batch = Arc::new(RecordBatch {
            seq: self.next_seq,
            records,
        });
        self.next_seq += 1;
        self.records += batch.records.len();
        self.batches.push_back(batch.clone());
        while self.records > self.capacity {
            let Some(old) = self.batches.pop_front() else {
                break;
            };
            self.records -= old.records.len();
            self.dropped += old.records.len() as u64;
        }
        batch
    }

    /// The aggregator stored every batch up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        while self.batches.front().is_some_and(|b| b.seq <= seq) {
            if let Some(b) = self.batches.pop_front() {
                self.records -= b.records.len();
            }
        }
    }

    /// What a new stream sends first: every batch not acknowledged.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &Arc<RecordBatch>> {
        self.batches.iter()
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// The most records one batch carries (well under gRPC's 4 MiB message
/// limit at a few hundred bytes a record).
pub const BATCH_RECORDS: usize = 2_000;

/// `FlowIngest.Push`'s path.
const PUSH: &str = "/manul.flows.v1.FlowIngest/Push";

/// What the exporter writes on the stream: a `PushRequest` whose batch is
/// the outbox's own.
#[derive(Debug, Clone)]
pub enum Push {
    Hello(PushHello),
    Batch(Arc<RecordBatch>),
}

/// `PushRequest`'s field numbers (`proto/flows.proto`).
const HELLO_FIELD: u32 = 1;
const BATCH_FIELD: u32 = 2;

/// The codec of `FlowIngest.Push` on Felix's side: [`Push`] encoded as the
/// `PushRequest` it stands for (the same bytes), `PushAck` decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushCodec;

/// [`PushCodec`]'s encoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushEncoder;

/// [`PushCodec`]'s decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct AckDecoder;

impl Encoder for PushEncoder {
    type Item = Push;
    type Error = tonic::Status;

    fn encode(&mut self, item: Push, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        // Room for the whole message at once: grown as it is written, the
        // buffer (tonic's, 8 KiB) is copied at every doubling and a batch
        // of 2,000 records (about 700 KB) lands on pages the kernel zeroes
        // anew each time.
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

impl Push {
    /// The bytes [`Push::encode`] writes.
    fn encoded_len(&self) -> usize {
        match self {
            Push::Hello(h) => prost::encoding::message::encoded_len(HELLO_FIELD, h),
            Push::Batch(b) => prost::encoding::message::encoded_len(BATCH_FIELD, &**b),
        }
    }

    /// Writes the `PushRequest` this stands for.
    fn encode(&self, dst: &mut impl bytes::BufMut) {
        match self {
            Push::Hello(h) => prost::encoding::message::encode(HELLO_FIELD, h, dst),
            Push::Batch(b) => prost::encoding::message::encode(BATCH_FIELD, &**b, dst),
        }
    }
}

impl Decoder for AckDecoder {
    type Item = PushAck;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PushAck>, tonic::Status> {
        PushAck::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("a malformed acknowledgement: {e}")))
    }
}

impl Codec for PushCodec {
    type Encode = Push;
    type Decode = PushAck;
    type Encoder = PushEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> PushEncoder {
        PushEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// An interval's records as batches' worth.
fn split(mut records: Vec<FlowRecord>) -> Vec<Vec<FlowRecord>> {
    let mut out = Vec::new();
    while records.len() > BATCH_RECORDS {
        let rest = records.split_off(BATCH_RECORDS);
        out.push(records);
        records = rest;
    }
    out.push(records);
    out
}

/// Where and as whom the records go.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `http://HOST:PORT` (`https://` is the same address over TLS).
    pub endpoint: String,
    /// Plaintext, or TLS with Felix's certificate and the aggregator's
    /// identity checked (see [`transport`]).
    pub transport: Transport,
    pub node: String,
    /// This run of Felix (its start time in nanoseconds): sequence numbers
    /// start again with every run.
    pub epoch: u64,
    /// Records kept while the aggregator is away.
    pub capacity: usize,
}

/// What the exporter did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStatus {
    pub connected: bool,
    pub sent_batches: u64,
    pub acknowledged: u64,
    pub unacknowledged: usize,
    pub dropped_records: u64,
}

/// Sends the records that arrive on `records` until it closes.
pub async fn run(
    config: ExportConfig,
    mut records: mpsc::Receiver<Vec<FlowRecord>>,
    status: watch::Sender<ExportStatus>,
) {
    let mut outbox = Outbox::new(config.capacity);
    let mut st = ExportStatus::default();
    let mut backoff = Duration::from_millis(200);
    loop {
        match stream(&config, &mut outbox, &mut records, &mut st, &status).await {
            Ok(()) => return,
            Err(e) => {
                // A stream that got going starts the backoff again.
                if st.connected {
                    backoff = Duration::from_millis(200);
                }
                st.connected = false;
                status.send_replace(st);
                warn!(endpoint = %config.endpoint, "flow aggregator stream: {e}");
            }
        }
        // Keep taking records while waiting to reconnect.
        let wake = tokio::time::sleep(backoff);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                r = records.recv() => match r {
                    Some(r) => {
                        for part in split(r) {
                            outbox.push(part);
                        }
                        st.unacknowledged = outbox.len();
                        st.dropped_records = outbox.dropped;
                        status.send_replace(st);
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One stream: hello, the unacknowledged batches, then new ones as they
/// come, acknowledgements as they come. `Ok` when `records` closed.
async fn stream(
    config: &ExportConfig,
    outbox: &mut Outbox,
    records: &mut mpsc::Receiver<Vec<FlowRecord>>,
    st: &mut ExportStatus,
    status: &watch::Sender<ExportStatus>,
) -> Result<(), tonic::Status> {
    let unavailable = |e: &(dyn std::error::Error + 'static)| {
        tonic::Status::unavailable(manul_dataplane_api::chain(e))
    };
    let endpoint = Endpoint::from_shared(plain_url(&config.endpoint))
        .map_err(|e| unavailable(&e))?
        .connect_timeout(Duration::from_secs(5));
    let channel = config
        .transport
        .connect(endpoint)
        .await
        .map_err(|e| unavailable(&e))?;
    let mut client = tonic::client::Grpc::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let send = |tx: &mpsc::UnboundedSender<Push>, msg| {
        tx.send(msg)
            .map_err(|_| tonic::Status::cancelled("the request stream closed"))
    };
    send(
        &tx,
        Push::Hello(PushHello {
            node: config.node.clone(),
            epoch: config.epoch,
        }),
    )?;
    for b in outbox.unacknowledged() {
        send(&tx, Push::Batch(b.clone()))?;
        st.sent_batches += 1;
    }
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the aggregator's channel: {e}")))?;
    let mut acks = client
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static(PUSH),
            PushCodec,
        )
        .await?
        .into_inner();
    st.connected = true;
    status.send_replace(*st);
    info!(endpoint = %config.endpoint, resent = outbox.len(), "streaming flows to the aggregator");
    loop {
        tokio::select! {
            r = records.recv() => match r {
                Some(r) => {
                    for part in split(r) {
                        let b = outbox.push(part);
                        send(&tx, Push::Batch(b))?;
                        st.sent_batches += 1;
                    }
                }
                None => return Ok(()),
            },
            ack = acks.message() => match ack? {
                Some(a) => {
                    outbox.ack(a.seq);
                    st.acknowledged = a.seq;
                }
                None => return Err(tonic::Status::unavailable("the aggregator ended the stream")),
            },
        }
        st.unacknowledged = outbox.len();
        st.dropped_records = outbox.dropped;
        status.send_replace(*st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<FlowRecord> {
        (0..n).map(|_| FlowRecord::default()).collect()
    }

    #[test]
    fn the_codec_writes_the_push_request_it_stands_for() {
        use manul_proto::flows::{PushRequest, push_request};
        let batch = RecordBatch {
            seq: 7,
            records: vec![FlowRecord {
                node: "node1".into(),
                dst_port: 80,
                ..FlowRecord::default()
            }],
        };
        let hello = PushHello {
            node: "node1".into(),
            epoch: 3,
        };
        for (ours, theirs) in [
            (
                Push::Batch(Arc::new(batch.clone())),
                push_request::Msg::Batch(batch),
            ),
            (Push::Hello(hello.clone()), push_request::Msg::Hello(hello)),
        ] {
            let mut buf = bytes::BytesMut::new();
            ours.encode(&mut buf);
            let expected = PushRequest { msg: Some(theirs) }.encode_to_vec();
            assert_eq!(&buf[..], &expected[..]);
            assert_eq!(ours.encoded_len(), expected.len());
        }
    }

    #[test]
    fn large_intervals_are_split() {
        let parts: Vec<usize> = split(records(2 * BATCH_RECORDS + 1))
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(parts, vec![BATCH_RECORDS, BATCH_RECORDS, 1]);
    }

    #[test]
    fn batches_stay_until_acknowledged_and_the_oldest_go_when_full() {
        let mut o = Outbox::new(5);
        assert_eq!(o.push(records(2)).seq, 1);
        assert_eq!(o.push(records(2)).seq, 2);
        o.ack(1);
        let left: Vec<u64> = o.unacknowledged().map(|b| b.seq).collect();
        assert_eq!(left, vec![2]);
        o.push(records(2));
        o.push(records(2));
        // 6 records > 5: batch 2 is dropped.
        let left: Vec<u64> = o.unacknowledged().map(|b| b.seq).collect();
        assert_eq!(left, vec![3, 4]);
        assert_eq!(o.dropped, 2);
        o.ack(9);
        assert!(o.is_empty());
        assert_eq!(o.push(records(1)).seq, 5, "numbers never repeat");
    }
}
