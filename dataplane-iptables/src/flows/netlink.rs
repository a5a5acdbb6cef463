//! The kernel side of flow observations: an nflog group and conntrack
//! dumps over `NETLINK_NETFILTER`, through
//! `netlink-packet-netfilter`. Sockets are opened in the calling thread's
//! network namespace and keep it whichever thread reads them.
//!
//! The group is asked to attach each logged packet's conntrack entry
//! (`NFULNL_CFG_F_CONNTRACK`: `NFULA_CT`, read by [`super::ct`]), so a
//! connection's start names the Service frontend it came through although
//! the packet is logged after DNAT. That needs `nf_conntrack_netlink`
//! (which the kernel loads itself on the request where it is a module)
//! built with `CONFIG_NETFILTER_NETLINK_GLUE_CT`; a kernel without it
//! refuses the flag (`EOPNOTSUPP`), which is logged once, and the
//! frontend comes from the record of the connection's first packet that
//! every chain picking a Service backend logs before DNAT
//! ([`super::prefix::FRONTEND`], rendered on every kernel). Every other
//! failure to set the group up is an error.
//!
//! No conntrack events are subscribed to: ctnetlink builds an event's
//! message in the packet path (a destroy event in the softirq that
//! deletes the entry, often the next connection's), so connections end
//! from the periodic dumps instead ([`super::track`]).
//!
//! One reader thread reads the nflog socket and queues what it brings,
//! bounded: the kernel's socket buffer stays drained between Felix's
//! calls to `take_flows`. While messages come it reads every
//! [`DRAIN_INTERVAL`] instead of waiting on the socket: a socket nobody
//! waits on takes a message without waking a thread, so a busy node pays
//! no wake-up (an inter-processor interrupt, a context switch) per new
//! connection or log batch. An interval that brings nothing puts it back
//! to waiting on the socket, so an idle node has no timer. Dumps run on
//! the caller's thread.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use manul_dataplane_api::{FlowCounts, FlowTuple};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer,
    NlasIterator,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::nflog::{
    ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage, config_request,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use tracing::{debug, warn};

use super::ct::{self, NFULA_CT, NFULA_CT_INFO};
use super::packet::{self, PacketInfo};
use super::track::CtEntry;

/// Why the flow sockets could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum FlowSocketError {
    #[error("opening a netfilter netlink socket")]
    Open(#[source] std::io::Error),
    #[error("binding nflog group {group}")]
    Bind {
        group: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("asking nflog group {group} for the packets' conntrack entries")]
    Conntrack {
        group: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("dumping the conntrack table")]
    Dump(#[source] std::io::Error),
    #[error("starting the flow reader thread")]
    Thread(#[source] std::io::Error),
}

/// A log record as read, interfaces still by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLog {
    pub prefix: String,
    pub in_ifindex: Option<u32>,
    pub out_ifindex: Option<u32>,
    pub packet: PacketInfo,
    /// The Service frontend the packet's connection came through, from
    /// the conntrack entry the record carries.
    pub frontend: Option<(IpAddr, u16)>,
}

/// Where a connection's start finds the Service frontend it came
/// through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendSource {
    /// Each log record's own conntrack entry (`NFULA_CT`): the kernel
    /// attaches it (`CONFIG_NETFILTER_NETLINK_GLUE_CT`).
    LogRecords,
    /// The log record of the connection's first packet before DNAT
    /// ([`super::prefix::FRONTEND`]): the kernel refused to attach
    /// entries.
    ServiceLog,
}

/// Conntrack's TCP states of a connection that is over.
const TCP_TIME_WAIT: u8 = 7;
const TCP_CLOSE: u8 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
/// Bytes of each packet nflog copies: enough for IPv6 with extension
/// headers and the ports.
const COPY_RANGE: u32 = 128;
/// The receive buffers: forced past `net.core.rmem_max` where the process
/// may (else capped there). They hold what comes in one
/// [`DRAIN_INTERVAL`]: at 50,000 new connections a second, 500
/// connections' log records, well under 1 MiB.
const RCVBUF: usize = 4 << 20;
/// How long the reader leaves the sockets to fill while messages come: a
/// record is queued at most this long after the kernel sent it (nflog's
/// flush timeout, [`FLUSH_TIMEOUT`], comes before).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// nflog's flush timeout: how long a record may wait in the kernel for
/// more to share its message.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(10);

fn io(e: impl Into<std::io::Error>) -> std::io::Error {
    e.into()
}

/// Sizes a socket's receive buffer to [`RCVBUF`], past `rmem_max` where
/// the process may.
fn receive_buffer(socket: &Socket) {
    if crate::netlink::buffer(socket, nix::libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
        let _ = socket.set_rx_buf_sz(RCVBUF);
    }
}

pub(crate) fn send(
    socket: &Socket,
    mut msg: NetlinkMessage<NetfilterMessage>,
) -> std::io::Result<()> {
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0)?;
    Ok(())
}

/// Each netlink message in one datagram.
pub(crate) fn messages(buf: &[u8]) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[offset..]) else {
            // nflog's multipart batches and unknown attributes parse; a
            // datagram that does not is skipped whole.
            debug!("skipping an undecodable netfilter message");
            break;
        };
        let len = msg.header.length as usize;
        out.push(msg);
        if len == 0 {
            break;
        }
        offset += (len + 3) & !3;
    }
    out
}

/// Sends a request and waits for its acknowledgement.
fn request(socket: &Socket, msg: NetlinkMessage<NetfilterMessage>) -> std::io::Result<()> {
    send(socket, msg)?;
    let mut buf = vec![0u8; 8192];
    let n = socket.recv(&mut &mut buf[..], 0)?;
    for m in messages(&buf[..n]) {
        if let NetlinkPayload::Error(e) = m.payload
            && let Some(code) = e.code
        {
            return Err(std::io::Error::from_raw_os_error(-code.get()));
        }
    }
    Ok(())
}

/// Binds nflog `group`; with it whether its records carry their packets'
/// conntrack entries.
fn bind_nflog(group: u16) -> Result<(Socket, bool), FlowSocketError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(FlowSocketError::Open)?;
    socket.bind_auto().map_err(FlowSocketError::Open)?;
    let bind_err = |source| FlowSocketError::Bind { group, source };
    receive_buffer(&socket);
    // An earlier run's binding of the group is gone with its socket; an
    // unbind first makes a half-closed one of this process go too.
    let _ = request(
        &socket,
        config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![ConfigCmd::Unbind.into()],
        ),
    );
    request(
        &socket,
        config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
                ConfigNla::QThresh(64),
                // Batches of up to 64 records, each at most 10 ms late
                // (the kernel's default waits a second).
                Timeout::from(FLUSH_TIMEOUT).into(),
            ],
        ),
    )
    .map_err(bind_err)?;
    // Its own request, so that a kernel refusing it still logs.
    let with_ct = match request(
        &socket,
        config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![ConfigNla::Flags(ConfigFlags::CONNTRACK)],
        ),
    ) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
            warn!(
                "nflog group {group}: this kernel cannot attach conntrack entries to log records \
                 (nf_conntrack_netlink with CONFIG_NETFILTER_NETLINK_GLUE_CT); a connection's \
                 start finds its Service frontend in the log of its first packet before DNAT"
            );
            false
        }
        Err(source) => return Err(FlowSocketError::Conntrack { group, source }),
    };
    socket.set_non_blocking(true).map_err(bind_err)?;
    Ok((socket, with_ct))
}

/// The value of an attribute the crate leaves undecoded.
fn value_of(nla: &impl Nla) -> Vec<u8> {
    let mut value = vec![0u8; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

/// The record of one nflog message's attributes; `None` without a prefix
/// or a packet. A conntrack entry that does not parse leaves the record
/// without a frontend.
pub fn log_of(nlas: &[PacketNla]) -> Option<RawLog> {
    let mut prefix = None;
    let mut in_ifindex = None;
    let mut out_ifindex = None;
    let mut payload = None;
    let (mut entry, mut info) = (None, None);
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => prefix = Some(p.to_string_lossy().into_owned()),
            PacketNla::IfIndexInDev(i) => in_ifindex = Some(*i),
            PacketNla::IfIndexOutDev(i) => out_ifindex = Some(*i),
            PacketNla::Payload(p) => payload = Some(p),
            PacketNla::Other(nla) if nla.kind() & NLA_TYPE_MASK == NFULA_CT => {
                entry = ct::parse_ct(&value_of(nla))
                    .inspect_err(|e| debug!("a log record's conntrack entry: {e}"))
                    .ok();
            }
            PacketNla::Other(nla) if nla.kind() & NLA_TYPE_MASK == NFULA_CT_INFO => {
                info = ct::parse_ct_info(&value_of(nla)).ok();
            }
            _ => {}
        }
    }
    let packet = packet::parse(payload?)?;
    Some(RawLog {
        prefix: prefix?,
        in_ifindex,
        out_ifindex,
        frontend: entry.and_then(|e| ct::frontend_of(&e, info, &packet.tuple)),
        packet,
    })
}

fn tuple_of(parts: &[Tuple]) -> Option<(IpAddr, IpAddr, u8, u16, u16)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for part in parts {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = *p,
                        ProtoTuple::DestinationPort(p) => dport = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let proto = proto?;
    if !matches!(proto, 6 | 17 | 132 | 136) {
        (sport, dport) = (0, 0);
    }
    Some((src?, dst?, proto, sport, dport))
}

/// Packets and bytes of a `CTA_COUNTERS_*` attribute.
fn counters(nla: &impl Nla) -> Option<(u64, u64)> {
    let value = value_of(nla);
    let (mut packets, mut bytes) = (None, None);
    for inner in NlasIterator::new(&value[..]) {
        let inner: NlaBuffer<&[u8]> = inner.ok()?;
        let v = inner.value();
        let n = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
        match inner.kind() {
            CTA_COUNTERS_PACKETS => packets = Some(n),
            CTA_COUNTERS_BYTES => bytes = Some(n),
            _ => {}
        }
    }
    Some((packets?, bytes?))
}

/// The entry a conntrack message describes.
pub fn entry_of(attributes: &[ConntrackAttribute]) -> Option<CtEntry> {
    let (mut orig, mut reply) = (None, None);
    let (mut fwd, mut rev) = (None, None);
    let mut closed = false;
    for a in attributes {
        match a {
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        closed |= tcp.iter().any(|t| {
                            matches!(t, ProtoInfoTCP::State(s) if *s == TCP_TIME_WAIT || *s == TCP_CLOSE)
                        });
                    }
                }
            }
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple_of(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_of(t),
            // The kind keeps the nested flag.
            ConntrackAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == CTA_COUNTERS_ORIG => {
                fwd = counters(nla);
            }
            ConntrackAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == CTA_COUNTERS_REPLY => {
                rev = counters(nla);
            }
            _ => {}
        }
    }
    let (src, dst, protocol, src_port, dst_port) = orig?;
    let (reply_src, _, _, reply_src_port, _) = reply?;
    let counts = match (fwd, rev) {
        (Some((pf, bf)), Some((pr, br))) => Some(FlowCounts {
            packets_forward: pf,
            bytes_forward: bf,
            packets_reverse: pr,
            bytes_reverse: br,
        }),
        _ => None,
    };
    Some(CtEntry {
        orig: FlowTuple {
            protocol,
            src,
            src_port,
            dst,
            dst_port,
        },
        reply_src,
        reply_src_port,
        counts,
        closed,
    })
}

/// The bounded queue between the reader thread and the driver.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<VecDeque<RawLog>>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// The flow sockets of one driver, and the thread reading them.
#[derive(Debug)]
pub struct FlowSockets {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    dump: Socket,
    with_ct: bool,
}

/// Records queued at most before the reader drops (and counts) more.
const QUEUE: usize = 262_144;

impl FlowSockets {
    /// Binds nflog `group` in this thread's network namespace and starts
    /// the reader.
    pub fn open(group: u16) -> Result<FlowSockets, FlowSocketError> {
        let (nflog, with_ct) = bind_nflog(group)?;
        let mut dump = Socket::new(NETLINK_NETFILTER).map_err(FlowSocketError::Open)?;
        dump.bind_auto().map_err(FlowSocketError::Open)?;
        let shared = Arc::new(Shared::default());
        let reader = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("nft-flows".into())
            .spawn(move || read_loop(&nflog, &reader))
            .map_err(FlowSocketError::Thread)?;
        Ok(FlowSockets {
            shared,
            thread: Some(thread),
            dump,
            with_ct,
        })
    }

    /// Where a connection's start finds its Service frontend: the log
    /// records' conntrack entries, or else the log before DNAT.
    pub fn frontend_source(&self) -> FrontendSource {
        if self.with_ct {
            FrontendSource::LogRecords
        } else {
            FrontendSource::ServiceLog
        }
    }

    /// Everything queued since the last call.
    pub fn drain(&self) -> Vec<RawLog> {
        let mut q = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        q.drain(..).collect()
    }

    /// Records dropped: the queue was full, or the socket's buffer overran.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Every conntrack entry of the namespace, IPv4 and IPv6.
    pub fn dump(&self) -> Result<Vec<CtEntry>, FlowSocketError> {
        dump_table(&self.dump)
    }
}

impl Drop for FlowSockets {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn push(shared: &Shared, batch: &mut Vec<RawLog>) {
    if batch.is_empty() {
        return;
    }
    let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    for e in batch.drain(..) {
        if q.len() >= QUEUE {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            q.push_back(e);
        }
    }
}

/// Reads the socket until it would block; `false` when it failed for
/// another reason than an overrun. Counts the messages read into `read`.
fn read_socket(
    socket: &Socket,
    buf: &mut [u8],
    shared: &Shared,
    batch: &mut Vec<RawLog>,
    read: &mut usize,
) -> bool {
    loop {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => {
                *read += 1;
                for m in messages(&buf[..n]) {
                    if let NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                        ..
                    }) = m.payload
                    {
                        batch.extend(log_of(&nlas));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                // The kernel dropped messages it could not queue.
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                warn!("reading flow events: {e}");
                return false;
            }
        }
    }
}

/// Waits until the socket is readable (or 200 ms passed, to see `stop`);
/// `false` when waiting failed.
fn wait(nflog: &Socket) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(nflog.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(200u16)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => true,
        Err(e) => {
            warn!("waiting for flow events: {e}");
            false
        }
    }
}

fn read_loop(nflog: &Socket, shared: &Shared) {
    let mut buf = vec![0u8; 1 << 18];
    let mut batch = Vec::new();
    // Whether the last read brought messages: then the next comes after
    // a sleep, not a wait on the socket (see the module doc).
    let mut busy = false;
    while !shared.stop.load(Ordering::Relaxed) {
        if busy {
            std::thread::sleep(DRAIN_INTERVAL);
        } else if !wait(nflog) {
            return;
        }
        let mut read = 0;
        let ok = read_socket(nflog, &mut buf, shared, &mut batch, &mut read);
        push(shared, &mut batch);
        if !ok {
            return;
        }
        busy = read > 0;
    }
}

/// Every conntrack entry of the socket's network namespace, IPv4 and
/// IPv6.
pub fn dump_table(socket: &Socket) -> Result<Vec<CtEntry>, FlowSocketError> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let msg = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            ConntrackMessage::Get(vec![]),
        )),
    );
    send(socket, msg).map_err(FlowSocketError::Dump)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(FlowSocketError::Dump)?;
        for m in messages(&buf[..n]) {
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(FlowSocketError::Dump(io(
                            std::io::Error::from_raw_os_error(-code.get()),
                        )));
                    }
                }
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                    ..
                }) => out.extend(entry_of(&attrs)),
                _ => {}
            }
        }
        if n == 0 {
            return Ok(out);
        }
    }
}
