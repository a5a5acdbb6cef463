//! Opening gRPC channels, plaintext or over TLS with Manul's verification
//! (a tonic connector: TCP, then the rustls handshake with ALPN `h2`), and
//! plain or TLS streams for the lean Sync transport
//! ([`Transport::connect_stream`], with its own ALPN).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// How a client reaches a server.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// Plaintext HTTP/2 (development only).
    #[default]
    Plain,
    /// TLS with this configuration (see [`crate::client::ClientSettings`]).
    Tls(Arc<rustls::ClientConfig>),
}

impl Transport {
    /// Whether connections are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Connects `endpoint` (an `http://HOST:PORT` URI; the scheme is
    /// ignored over TLS).
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Transport::Plain => endpoint.connect().await,
            Transport::Tls(config) => {
                endpoint
                    .connect_with_connector(TlsConnector(config.clone()))
                    .await
            }
        }
    }

    /// A channel that connects on first use.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Transport::Plain => endpoint.connect_lazy(),
            Transport::Tls(config) => {
                endpoint.connect_with_connector_lazy(TlsConnector(config.clone()))
            }
        }
    }
}

/// TCP then TLS to the URI's host and port.
#[derive(Debug, Clone)]
pub struct TlsConnector(pub Arc<rustls::ClientConfig>);

type Connecting = Pin<
    Box<
        dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
            + Send,
    >,
>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.0.clone();
        Box::pin(async move {
            let bad = |what: &str| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {what}"))
            };
            let host = uri
                .host()
                .ok_or_else(|| bad("no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| bad("not a host name or address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A plain TCP or TLS connection of a protocol other than gRPC (the lean
/// Sync transport).
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    /// TCP to `host`:`port`, then TLS naming the application protocol
    /// `alpn` when this transport is TLS (the server's certificate is
    /// checked as for gRPC: its CN or URI SAN, not the host name).
    pub async fn connect_stream(
        &self,
        host: &str,
        port: u16,
        alpn: &[u8],
    ) -> std::io::Result<Stream> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        match self {
            Transport::Plain => Ok(Stream::Plain(tcp)),
            Transport::Tls(config) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{host}: not a host name or address"),
                    )
                })?;
                let mut config = (**config).clone();
                config.alpn_protocols = vec![alpn.to_vec()];
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
