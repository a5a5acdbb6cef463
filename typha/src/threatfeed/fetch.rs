//! Reading a feed's body: `file:///PATH` from the leader's filesystem,
//! `http://` and `https://` (the system's roots, TLS 1.2 or later) with the
//! feed's headers. Bounded in size and time.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use manul_model::v3::HttpPull;

/// The largest body read (a feed of a few million addresses).
pub const MAX_BODY: usize = 64 << 20;
/// How long one pull may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is over the limit of {MAX_BODY} bytes")]
    TooLarge(String),
    #[error("header {0}: Manul does not read header values from ConfigMaps or Secrets")]
    HeaderFrom(String),
    #[error("header {name}")]
    Header {
        name: String,
        #[source]
        source: http::Error,
    },
    #[error("GET {url}")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: reading the body: {reason}")]
    Body { url: String, reason: String },
    #[error("GET {0}: no answer within {TIMEOUT:?}")]
    Timeout(String),
    #[error("the body of {0} is not UTF-8")]
    NotText(String),
    #[error("no TLS roots for https")]
    Roots(#[source] std::io::Error),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTP(S) client for feeds.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<Https, Empty<bytes::Bytes>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

impl Fetcher {
    pub fn new() -> Result<Fetcher, FetchError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(FetchError::Roots)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Fetcher {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// The body `pull` names, as text.
    pub async fn fetch(&self, pull: &HttpPull) -> Result<String, FetchError> {
        match tokio::time::timeout(TIMEOUT, self.fetch_inner(pull)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(pull.url.clone())),
        }
    }

    async fn fetch_inner(&self, pull: &HttpPull) -> Result<String, FetchError> {
        let url = pull.url.as_str();
        if let Some(path) = url.strip_prefix("file://") {
            let file_err = |source| FetchError::File {
                path: path.to_string(),
                source,
            };
            let len = tokio::fs::metadata(path).await.map_err(file_err)?.len();
            if len > MAX_BODY as u64 {
                return Err(FetchError::TooLarge(url.to_string()));
            }
            let bytes = tokio::fs::read(path).await.map_err(file_err)?;
            return String::from_utf8(bytes).map_err(|_| FetchError::NotText(url.to_string()));
        }
        let mut request = http::Request::get(url);
        for h in &pull.headers {
            match (&h.value, &h.value_from) {
                (Some(v), _) => request = request.header(h.name.as_str(), v.as_str()),
                (None, _) => return Err(FetchError::HeaderFrom(h.name.clone())),
            }
        }
        let request = request
            .body(Empty::new())
            .map_err(|source| FetchError::Header {
                name: pull
                    .headers
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })?;
        let response =
            self.client
                .request(request)
                .await
                .map_err(|source| FetchError::Request {
                    url: url.to_string(),
                    source,
                })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::Body {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| FetchError::NotText(url.to_string()))
    }
}
