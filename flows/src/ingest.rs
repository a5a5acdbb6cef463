//! `FlowIngest` (`proto/flows.proto`), served with its own codec: each
//! `PushRequest` is decoded by the stream's [`PushDecoder`] straight into
//! the stored form (its strings shared through the stream's interner),
//! never into `FlowRecord` first. The wire and its semantics are those of
//! the proto: a hello naming the node and run, then numbered batches, each
//! acknowledged with the highest sequence number stored (a resent batch is
//! dropped as a duplicate and acknowledged again). The service is written
//! out here, as tonic would generate it, because generated services take
//! prost's codec.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Buf;
use manul_proto::flows::PushAck;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::server::Shared;
use crate::wire::{Push, PushDecoder};

/// `FlowIngest.Push`'s path.
const PUSH_PATH: &str = "/manul.flows.v1.FlowIngest/Push";

/// The codec of `FlowIngest.Push` on the aggregator's side: `PushRequest`
/// decoded into [`Push`], `PushAck` encoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestCodec;

/// [`IngestCodec`]'s encoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct AckEncoder;

impl Encoder for AckEncoder {
    type Item = PushAck;
    type Error = Status;

    fn encode(&mut self, item: PushAck, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode an acknowledgement: {e}")))
    }
}

/// [`IngestCodec`]'s decoder: one per stream.
#[derive(Debug, Default)]
pub struct IngestDecoder(PushDecoder);

impl Decoder for IngestDecoder {
    type Item = Push;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Push>, Status> {
        let len = src.remaining();
        // One message's bytes are one chunk of tonic's buffer; copied only
        // if they ever were not.
        let decoded = if src.chunk().len() >= len {
            let d = self.0.decode(&src.chunk()[..len]);
            src.advance(len);
            d
        } else {
            let mut bytes = vec![0; len];
            src.copy_to_slice(&mut bytes);
            self.0.decode(&bytes)
        };
        decoded
            .map(Some)
            .map_err(|e| Status::invalid_argument(chain(&e)))
    }
}

impl Codec for IngestCodec {
    type Encode = PushAck;
    type Decode = Push;
    type Encoder = AckEncoder;
    type Decoder = IngestDecoder;

    fn encoder(&mut self) -> AckEncoder {
        AckEncoder
    }

    fn decoder(&mut self) -> IngestDecoder {
        IngestDecoder::default()
    }
}

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

type AckStream = ReceiverStream<Result<PushAck, Status>>;

/// The `FlowIngest` service over a [`Shared`] store, for a tonic router.
#[derive(Debug, Clone)]
pub struct IngestServer(Shared);

impl IngestServer {
    pub fn new(shared: Shared) -> IngestServer {
        IngestServer(shared)
    }
}

impl NamedService for IngestServer {
    const NAME: &'static str = "manul.flows.v1.FlowIngest";
}

/// One `Push` call.
struct PushCall(Shared);

impl StreamingService<Push> for PushCall {
    type Response = PushAck;
    type ResponseStream = AckStream;
    type Future = BoxFuture<Response<AckStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Push>>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move { push(shared, request) })
    }
}

/// Stores the stream's batches and acknowledges them, on a task of its
/// own (each stream decodes on its own task).
fn push(shared: Shared, request: Request<Streaming<Push>>) -> Result<Response<AckStream>, Status> {
    shared.admit(&request, true)?;
    let mut input = request.into_inner();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut sender: Option<(String, u64)> = None;
        loop {
            let msg = match input.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    debug!("a flow stream ended: {e}");
                    return;
                }
            };
            match msg {
                Push::Empty => {
                    let _ = tx
                        .send(Err(Status::invalid_argument("an empty push message")))
                        .await;
                    return;
                }
                Push::Hello(h) => {
                    if h.node.is_empty() {
                        let _ = tx
                            .send(Err(Status::invalid_argument("the hello names no node")))
                            .await;
                        return;
                    }
                    sender = Some((h.node, h.epoch));
                }
                Push::Batch(b) => {
                    let Some((node, epoch)) = &sender else {
                        let _ = tx
                            .send(Err(Status::failed_precondition("a batch before the hello")))
                            .await;
                        return;
                    };
                    let ack = shared.ingest_flat(node, *epoch, b);
                    if tx.send(Ok(PushAck { seq: ack })).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

impl<B> Service<http::Request<B>> for IngestServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PUSH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let call = PushCall(self.0.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(IngestCodec);
            Ok(grpc.streaming(call, req).await)
        })
    }
}
