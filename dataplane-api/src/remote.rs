//! The out-of-process driver: a JSON-lines protocol over a Unix socket, so a
//! dataplane written in any language can plug in.
//!
//! # Protocol
//!
//! The driver process listens on a Unix stream socket (`SOCK_STREAM`); the
//! client (Felix) connects and keeps the connection for as long as it runs.
//! Both directions carry UTF-8 JSON, one value per line: compact JSON
//! followed by a single `\n` (a JSON text never contains a raw newline; a
//! `\r` before the `\n` is tolerated as whitespace). A line without its
//! `\n` at end of stream is discarded, never applied.
//!
//! **Request** (client to server), exactly one key:
//!
//! ```text
//! {"batch": [OPERATION, ...]}
//! ```
//!
//! **Answer** (server to client), exactly one per request line, in order:
//!
//! ```text
//! {"ok": true}
//! {"error": "human-readable reason", "index": 3}
//! ```
//!
//! `ok` means the whole batch was applied. `error` means it was not (or, for
//! a kernel driver, possibly only in part): the driver is then out of sync
//! (what it holds is stale) and the client must resync it (send the whole
//! desired state again, then `"InSync"`, which removes what was not sent
//! again). `index`,
//! optional, is the position in the batch of the operation that broke the
//! contract. A client ignores answer keys it does not know; the server
//! refuses a request with any key but `batch`.
//! A request line that is empty, not JSON, not of the shape above, or
//! longer than the server's bound (default [`DEFAULT_MAX_LINE`], 256 MiB)
//! gets an `error` answer and the connection stays usable: the server reads
//! past an over-long line without storing it. The client waits for each
//! answer before it sends the next request (default timeout
//! [`DEFAULT_TIMEOUT`], 30 s); after a timeout it closes the connection.
//! The server serves one connection at a time; a new connection means a new
//! (or restarted, or reconnecting) client, which will send the whole state
//! and `"InSync"`: the server marks what its driver holds stale at every
//! new connection, so that `InSync` removes what the client did not send
//! again.
//!
//! **Operations** are [`Operation`]'s serde form: externally tagged, so a
//! unit variant is a string (`"InSync"`) and any other variant an object
//! with one key, the variant's name. Field names are the Rust field names;
//! enums ([`crate::ops::Action`], [`crate::ops::IpSetKind`]) are their
//! variant names as strings; addresses are strings (`"10.0.0.1"`,
//! `"fd00::1"`), networks are strings in CIDR form (`"10.0.0.0/24"`); IP
//! protocols are numbers (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6).
//! Every field is always sent; an absent optional value is `null` (and may
//! be omitted by a client written elsewhere); lists are never omitted.
//! Every variant, one per line:
//!
//! ```text
//! {"IpSetUpdate":{"id":"s:web","kind":"Net","members":[{"Net":"10.0.0.1/32"}]}}
//! {"IpSetUpdate":{"id":"np:http","kind":"NamedPort","members":[{"NamedPort":{"ip":"10.0.0.1","protocol":6,"port":8080}}]}}
//! {"IpSetDelta":{"id":"s:web","added":[{"Net":"10.0.0.2/32"}],"removed":[{"Net":"10.0.0.1/32"}]}}
//! {"IpSetRemove":{"id":"s:web"}}
//! {"PolicyUpdate":{"id":{"tier":"default","name":"prod/allow-web"},"policy":{"inbound":[RULE],"outbound":[]}}}
//! {"PolicyRemove":{"id":{"tier":"default","name":"prod/allow-web"}}}
//! {"ProfileUpdate":{"id":"kns.prod","profile":{"inbound":[RULE],"outbound":[RULE]}}}
//! {"ProfileRemove":{"id":"kns.prod"}}
//! {"WorkloadEndpointUpdate":{"id":{"namespace":"prod","name":"web-0"},"interface_name":"cali0","nets":["10.0.0.1/32"],"mac":null,"tiers":[{"name":"default","default_action":"Deny","inbound":[{"tier":"default","name":"prod/allow-web"}],"outbound":[]}],"profiles":["kns.prod"]}}
//! {"WorkloadEndpointRemove":{"id":{"namespace":"prod","name":"web-0"}}}
//! {"HostEndpointUpdate":{"id":"node1-eth0","interface_name":"eth0","expected_ips":["192.168.0.10"],"tiers":[],"pre_dnat_tiers":[],"untracked_tiers":[],"forward_tiers":[],"profiles":[]}}
//! {"HostEndpointRemove":{"id":"node1-eth0"}}
//! {"ServiceUpdate":{"namespace":"prod","name":"web","cluster_ips":["10.96.0.10"],"external_ips":[],"load_balancer_ips":[],"load_balancer_source_ranges":[],"external_traffic":"Cluster","internal_traffic":"Cluster","affinity_timeout_seconds":null,"health_check_node_port":null,"balancing":"Random","ports":[{"name":"http","protocol":6,"port":80,"node_port":null,"backends":[{"ip":"10.0.0.1","port":8080,"local":true,"ready":true}],"local_backends":[{"ip":"10.0.0.1","port":8080,"local":true,"ready":true}]}]}}
//! {"ServiceRemove":{"namespace":"prod","name":"web"}}
//! "InSync"
//! ```
//!
//! where a `RULE` is
//!
//! ```text
//! {"id":"default/prod/allow-web/inbound/0","action":"Allow","ip_version":null,"protocol":6,"not_protocol":null,
//!  "icmp":null,"not_icmp":null,
//!  "src":{"nets":[],"not_nets":[],"ports":[],"not_ports":[],"named_port_sets":[],"not_named_port_sets":[],"ip_sets":["s:web"],"not_ip_sets":[]},
//!  "dst":{"nets":[],"not_nets":[],"ports":[{"first":80,"last":80}],"not_ports":[],"named_port_sets":["np:http"],"not_named_port_sets":[],"ip_sets":[],"not_ip_sets":[]}}
//! ```
//!
//! (shown on several lines here; on the wire it is part of one line), with
//! `action` one of `"Allow"`, `"Deny"`, `"Log"`, `"Pass"`, and `icmp`
//! either `null` or `{"icmp_type":8,"code":null}`. The meaning of every
//! operation and the ordering contract a server may rely on (and should
//! check) are in [`crate::driver`] and [`crate::ops`]; how a dataplane must
//! judge packets is in [`crate::verdict`].
//!
//! A whole exchange, `>` from the client and `<` from the server:
//!
//! ```text
//! > {"batch":[{"IpSetUpdate":{"id":"s:web","kind":"Net","members":[]}},"InSync"]}
//! < {"ok":true}
//! > {"batch":[{"IpSetRemove":{"id":"s:nope"}}]}
//! < {"error":"operation 0 (IpSetRemove) breaks the dataplane contract: IP set s:nope is removed, but the driver does not have it","index":0}
//! > hello
//! < {"error":"malformed request: expected value at line 1 column 1"}
//! ```
//!
//! # In Rust
//!
//! [`RemoteDriver`] is the client (what Felix holds); [`serve`] and
//! [`serve_connection`] put any [`Driver`] behind a socket; [`ServeHandle`]
//! runs [`serve`] on a thread that can be stopped (for tests).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::driver::{Driver, DriverError};
use crate::ops::Operation;

/// How long [`RemoteDriver`] waits for an answer (and for a write to go
/// through) unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest line either side accepts, without its newline: 256 MiB.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024 * 1024;

/// A request line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    batch: Vec<Operation>,
}

/// A request line, borrowed for encoding.
#[derive(Debug, Serialize)]
struct RequestRef<'a> {
    batch: &'a [Operation],
}

/// An answer line. Unknown fields are ignored, for later extensions.
#[derive(Debug, Serialize, Deserialize)]
struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
}

/// [`RemoteDriver`]'s settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOptions {
    /// How long to wait for an answer, and for a write to go through.
    pub timeout: Duration,
    /// The longest request or answer line, without its newline.
    pub max_line: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_line: DEFAULT_MAX_LINE,
        }
    }
}

/// A driver in another process, reached over a Unix socket.
///
/// One request at a time, blocking. After an I/O error, a timeout or a
/// malformed answer the connection is unusable ([`DriverError::Broken`])
/// until [`Driver::mark_stale`], which the caller sends at the start of
/// its resync, connects again. A refused batch
/// ([`DriverError::Rejected`]) leaves the connection usable, but the remote
/// driver must be resynced all the same.
#[derive(Debug)]
pub struct RemoteDriver {
    stream: BufReader<UnixStream>,
    path: PathBuf,
    options: RemoteOptions,
    broken: bool,
    line: Vec<u8>,
}

impl RemoteDriver {
    /// Connects with the default options.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, DriverError> {
        Self::connect_with(path, RemoteOptions::default())
    }

    /// Connects with the given options.
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: RemoteOptions,
    ) -> Result<Self, DriverError> {
        let path = path.as_ref().to_path_buf();
        if options.max_line == 0 {
            return Err(DriverError::InvalidOption("max_line must be positive"));
        }
        let stream = UnixStream::connect(&path).map_err(|source| DriverError::Connect {
            path: path.clone(),
            source,
        })?;
        set_timeouts(&stream, options.timeout)?;
        Ok(Self {
            stream: BufReader::new(stream),
            path,
            options,
            broken: false,
            line: Vec::new(),
        })
    }

    /// Changes the answer (and write) timeout.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), DriverError> {
        set_timeouts(self.stream.get_ref(), timeout)?;
        self.options.timeout = timeout;
        Ok(())
    }

    pub fn options(&self) -> RemoteOptions {
        self.options
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an earlier failure left the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn exchange(&mut self, request: &[u8]) -> Result<(), DriverError> {
        let timeout = self.options.timeout;
        let io_error = |context: &'static str| {
            move |source: io::Error| match source.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    DriverError::Timeout(timeout)
                }
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::UnexpectedEof => DriverError::Disconnected,
                _ => DriverError::Io { context, source },
            }
        };
        let mut writer = self.stream.get_ref();
        writer
            .write_all(request)
            .and_then(|()| writer.flush())
            .map_err(io_error("sending a batch"))?;
        match read_line_bounded(&mut self.stream, &mut self.line, self.options.max_line)
            .map_err(io_error("reading an answer"))?
        {
            ReadLine::Eof => Err(DriverError::Disconnected),
            ReadLine::TooLong(len) => Err(DriverError::LineTooLong {
                what: "answer",
                len,
                limit: self.options.max_line,
            }),
            ReadLine::Line => {
                let answer: Response = serde_json::from_slice(&self.line).map_err(|source| {
                    DriverError::BadResponse {
                        line: excerpt(&self.line),
                        source: Some(source),
                    }
                })?;
                match answer {
                    Response {
                        error: Some(message),
                        index,
                        ..
                    } => Err(DriverError::Rejected { message, index }),
                    Response { ok: Some(true), .. } => Ok(()),
                    Response { .. } => Err(DriverError::BadResponse {
                        line: excerpt(&self.line),
                        source: None,
                    }),
                }
            }
        }
    }
}

impl Driver for RemoteDriver {
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        if self.broken {
            return Err(DriverError::Broken);
        }
        let mut request = serde_json::to_vec(&RequestRef { batch }).map_err(DriverError::Encode)?;
        if request.len() > self.options.max_line {
            return Err(DriverError::LineTooLong {
                what: "request",
                len: request.len(),
                limit: self.options.max_line,
            });
        }
        request.push(b'\n');
        let result = self.exchange(&request);
        if let Err(error) = &result
            && !matches!(error, DriverError::Rejected { .. })
        {
            self.broken = true;
        }
        if self.line.capacity() > KEEP_BUFFER {
            self.line = Vec::new();
        }
        result
    }

    /// The start of a resync. After a broken connection this connects
    /// again (if that fails the connection stays broken and the next batch
    /// fails with [`DriverError::Broken`]); the server marks its driver
    /// stale at every new connection. Over a working connection there is
    /// nothing to do: a server's driver marks itself stale when it refuses
    /// a batch.
    fn mark_stale(&mut self) {
        if !self.broken {
            return;
        }
        match RemoteDriver::connect_with(&self.path, self.options) {
            Ok(fresh) => *self = fresh,
            Err(e) => tracing::debug!(error = %e, "remote driver: cannot connect again"),
        }
    }

    fn name(&self) -> &'static str {
        "remote"
    }
}

/// Line buffers larger than this are released after use.
const KEEP_BUFFER: usize = 1024 * 1024;

fn set_timeouts(stream: &UnixStream, timeout: Duration) -> Result<(), DriverError> {
    if timeout.is_zero() {
        return Err(DriverError::InvalidOption("the timeout must be positive"));
    }
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|source| DriverError::Io {
            context: "setting the socket timeouts",
            source,
        })
}

/// At most 200 characters of a line, for messages.
fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.into_owned(),
    }
}

/// What [`read_line_bounded`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadLine {
    /// A whole line (without its newline) is in the buffer.
    Line,
    /// A line of this many bytes (without its newline) was longer than the
    /// bound and was read and thrown away.
    TooLong(usize),
    /// End of stream; an unterminated last line is dropped.
    Eof,
}

/// Reads one `\n`-terminated line into `line`, holding at most `max` bytes:
/// a longer line is consumed without being stored.
fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<ReadLine> {
    line.clear();
    let mut discarded: Option<usize> = None;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            line.clear();
            return Ok(ReadLine::Eof);
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end, true),
            None => (available.len(), false),
        };
        let result = match discarded.as_mut() {
            Some(len) => {
                *len += used;
                done.then_some(ReadLine::TooLong(*len))
            }
            None if line.len() + used > max => {
                let len = line.len() + used;
                line.clear();
                if done {
                    Some(ReadLine::TooLong(len))
                } else {
                    discarded = Some(len);
                    None
                }
            }
            None => {
                line.extend_from_slice(&available[..used]);
                done.then_some(ReadLine::Line)
            }
        };
        reader.consume(if done { used + 1 } else { used });
        if let Some(result) = result {
            return Ok(result);
        }
    }
}

/// Serves `driver` on `listener` forever, one connection at a time (a
/// second client waits in the listen backlog until the first disconnects).
/// A failing connection is logged and closed; only a failing `accept`
/// returns.
pub fn serve(listener: UnixListener, driver: impl Driver) -> Result<(), DriverError> {
    serve_with(listener, driver, DEFAULT_MAX_LINE)
}

/// [`serve`] with a bound on request lines other than [`DEFAULT_MAX_LINE`].
pub fn serve_with(
    listener: UnixListener,
    mut driver: impl Driver,
    max_line: usize,
) -> Result<(), DriverError> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = serve_connection(stream, &mut driver, max_line) {
                    tracing::warn!(%error, driver = driver.name(), "remote driver connection failed");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(source) => {
                return Err(DriverError::Io {
                    context: "accepting a connection",
                    source,
                });
            }
        }
    }
}

/// Serves one connection until the client disconnects: every request line
/// gets exactly one answer line. Returns `Ok` at end of stream, an error if
/// reading or writing the socket fails.
pub fn serve_connection<D: Driver + ?Sized>(
    stream: UnixStream,
    driver: &mut D,
    max_line: usize,
) -> Result<(), DriverError> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    tracing::debug!(driver = driver.name(), "remote driver client connected");
    // A new client resyncs: what the driver holds is stale until its
    // InSync (a previous client may have lost a batch in flight).
    driver.mark_stale();
    loop {
        let read = read_line_bounded(&mut reader, &mut line, max_line).map_err(|source| {
            DriverError::Io {
                context: "reading a request",
                source,
            }
        })?;
        let answer = match read {
            ReadLine::Eof => {
                tracing::debug!(driver = driver.name(), "remote driver client disconnected");
                return Ok(());
            }
            ReadLine::TooLong(len) => Response {
                ok: None,
                error: Some(format!(
                    "request line of {len} bytes exceeds the limit of {max_line} bytes"
                )),
                index: None,
            },
            ReadLine::Line => answer(&line, driver),
        };
        if line.capacity() > KEEP_BUFFER {
            line = Vec::new();
        }
        let mut encoded = serde_json::to_vec(&answer)
            .unwrap_or_else(|_| br#"{"error":"the server could not encode its answer"}"#.to_vec());
        encoded.push(b'\n');
        let mut writer = reader.get_ref();
        writer
            .write_all(&encoded)
            .and_then(|()| writer.flush())
            .map_err(|source| DriverError::Io {
                context: "writing an answer",
                source,
            })?;
    }
}

/// Decodes and applies one request line.
fn answer<D: Driver + ?Sized>(line: &[u8], driver: &mut D) -> Response {
    let refuse = |error: String, index: Option<usize>| Response {
        ok: None,
        error: Some(error),
        index,
    };
    if line.iter().all(u8::is_ascii_whitespace) {
        return refuse("empty request line".to_owned(), None);
    }
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => return refuse(format!("malformed request: {e}"), None),
    };
    match driver.apply(&request.batch) {
        Ok(()) => Response {
            ok: Some(true),
            error: None,
            index: None,
        },
        Err(error) => {
            let index = match &error {
                DriverError::Contract { index, .. } => Some(*index),
                _ => None,
            };
            tracing::warn!(%error, driver = driver.name(), "remote driver refused a batch");
            refuse(crate::driver::chain(&error), index)
        }
    }
}

/// A [`serve`] loop on its own thread, stoppable: for tests and for
/// embedding a driver server in a process that does other things.
#[derive(Debug)]
pub struct ServeHandle<D> {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<UnixStream>>>,
    thread: Option<JoinHandle<Result<D, DriverError>>>,
}

impl<D: Driver + 'static> ServeHandle<D> {
    /// Starts serving `driver` on `listener` with [`DEFAULT_MAX_LINE`].
    pub fn spawn(listener: UnixListener, driver: D) -> Result<Self, DriverError> {
        Self::spawn_with(listener, driver, DEFAULT_MAX_LINE)
    }

    /// Starts serving `driver` on `listener`.
    pub fn spawn_with(
        listener: UnixListener,
        driver: D,
        max_line: usize,
    ) -> Result<Self, DriverError> {
        // Polled, so that `stop` is seen between connections.
        listener
            .set_nonblocking(true)
            .map_err(|source| DriverError::Io {
                context: "making the listener non-blocking",
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let current = Arc::new(Mutex::new(None));
        let thread = std::thread::Builder::new()
            .name("manul-remote-driver".to_owned())
            .spawn({
                let stop = Arc::clone(&stop);
                let current = Arc::clone(&current);
                move || serve_until(listener, driver, max_line, &stop, &current)
            })
            .map_err(|source| DriverError::Io {
                context: "starting the server thread",
                source,
            })?;
        Ok(Self {
            stop,
            current,
            thread: Some(thread),
        })
    }

    /// Stops serving (closing the current connection) and returns the
    /// driver.
    pub fn stop(mut self) -> Result<D, DriverError> {
        self.request_stop();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| DriverError::ServerPanicked)?,
            None => Err(DriverError::ServerPanicked),
        }
    }
}

impl<D> ServeHandle<D> {
    fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(stream) = lock(&self.current).as_ref() {
            // Wakes the blocked read; the serving loop then sees `stop`.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl<D> Drop for ServeHandle<D> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.request_stop();
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn serve_until<D: Driver>(
    listener: UnixListener,
    mut driver: D,
    max_line: usize,
    stop: &AtomicBool,
    current: &Mutex<Option<UnixStream>>,
) -> Result<D, DriverError> {
    let io = |context: &'static str| move |source: io::Error| DriverError::Io { context, source };
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(driver);
        }
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(io("making a connection blocking"))?;
                let clone = stream.try_clone().map_err(io("cloning a connection"))?;
                {
                    let mut slot = lock(current);
                    // Checked under the lock that `request_stop` takes, so a
                    // stop cannot slip between this check and the read.
                    if stop.load(Ordering::SeqCst) {
                        return Ok(driver);
                    }
                    *slot = Some(clone);
                }
                if let Err(error) = serve_connection(stream, &mut driver, max_line) {
                    tracing::warn!(%error, driver = driver.name(), "remote driver connection failed");
                }
                *lock(current) = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(source) => {
                return Err(DriverError::Io {
                    context: "accepting a connection",
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
