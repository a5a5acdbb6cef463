//! The `Sync` service's tower glue, written by hand instead of the generated
//! `sync_server::SyncServer` so that the stream's codec can have small
//! buffers.
//!
//! tonic allocates an encode buffer per response stream up front (8 KiB by
//! default) and keeps it for the stream's life. A Sync stream lives as long
//! as its Felix, and there are thousands of them, so that buffer was a
//! quarter of a replica's memory per client. Typha's messages are small
//! (pings, hellos, in-sync markers, delta batches that are usually a few
//! hundred bytes), so a stream starts with [`ENCODE_BUFFER`] bytes; the
//! buffer grows for the rare large message (a snapshot chunk) like any
//! `BytesMut`. The wire format is exactly the generated service's: same
//! path, same protobuf messages, same compression and size limits.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use manul_proto::v1::sync_server::Sync as SyncApi;
use manul_proto::v1::{SyncMessage, SyncRequest};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Body as HttpBody, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::service::{SyncService, SyncStream};

/// Initial encode buffer of a stream, in bytes.
const ENCODE_BUFFER: usize = 512;
/// Messages ready at once are batched into one write up to this many bytes.
const YIELD_THRESHOLD: usize = 32 * 1024;
/// Initial decode buffer: the one `SyncRequest` of a stream is small.
const DECODE_BUFFER: usize = 512;

/// The full method path, as the generated client calls it.
const SYNC_PATH: &str = "/manul.v1.Sync/Sync";

/// Prost encoding of `SyncMessage`s and decoding of `SyncRequest`s with
/// small per-stream buffers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SyncCodec;

impl Codec for SyncCodec {
    type Encode = SyncMessage;
    type Decode = SyncRequest;
    type Encoder = ProstEncoder<SyncMessage>;
    type Decoder = ProstDecoder<SyncRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<SyncMessage, SyncRequest>::raw_encoder(BufferSettings::new(
            ENCODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<SyncMessage, SyncRequest>::raw_decoder(BufferSettings::new(
            DECODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }
}

/// The `manul.v1.Sync` gRPC service (what `Server::add_service` takes).
#[derive(Debug, Clone)]
pub struct SyncServer {
    inner: Arc<SyncService>,
    max_decoding_message_size: Option<usize>,
}

impl SyncServer {
    pub(crate) fn new(inner: SyncService) -> SyncServer {
        SyncServer {
            inner: Arc::new(inner),
            max_decoding_message_size: None,
        }
    }

    /// Largest request decoded.
    #[must_use]
    pub(crate) fn max_decoding_message_size(mut self, limit: usize) -> SyncServer {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl NamedService for SyncServer {
    const NAME: &'static str = manul_proto::v1::sync_server::SERVICE_NAME;
}

/// One call of the `Sync` method.
struct SyncMethod(Arc<SyncService>);

impl ServerStreamingService<SyncRequest> for SyncMethod {
    type Response = SyncMessage;
    type ResponseStream = SyncStream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<SyncStream>, Status>> + Send>>;

    fn call(&mut self, request: Request<SyncRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { SyncApi::sync(&*inner, request).await })
    }
}

impl<B> Service<http::Request<B>> for SyncServer
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SYNC_PATH {
            return Box::pin(async {
                let mut response = http::Response::new(Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let method = SyncMethod(Arc::clone(&self.inner));
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(SyncCodec).apply_max_message_size_config(max_decoding, None);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}
