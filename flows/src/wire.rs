//! `FlowIngest.Push` messages decoded straight from their bytes into the
//! stored form ([`Flow`]), with no I/O: the strings of a record are looked
//! up in the stream's [`Interner`] by their bytes, so a record whose
//! values were seen before costs no allocation besides its place in the
//! batch, where decoding into `FlowRecord` made about 45 (strings, two
//! label maps, two trace vectors).
//!
//! It answers exactly what decoding the `PushRequest` of
//! `proto/flows.proto` and converting it would: a scalar field given twice
//! keeps its last value, unknown fields are skipped, a map's repeated key
//! keeps its last value, and a string that is not UTF-8 or a field of the
//! wrong wire type is an error. A message field given twice (which
//! protobuf merges; no encoder writes it) makes it decode that message
//! with prost and convert it, the slow way. It refuses nothing else.

use manul_proto::flows::{PushHello, PushRequest, push_request};
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::flow::Flow;
use crate::intern::{HitRef, Interner, NotUtf8, Wire};

/// A `PushRequest`, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    Hello(PushHello),
    Batch(Batch),
    /// A `PushRequest` with neither.
    Empty,
}

/// A `RecordBatch`, its records in the stored form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub seq: u64,
    pub records: Vec<Flow>,
}

/// A push message that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("a malformed push message")]
    Malformed(#[source] prost::DecodeError),
    #[error("a push message's string field is not UTF-8")]
    NotUtf8(#[source] NotUtf8),
    #[error("field {field} of {message} runs past its message")]
    Truncated { message: &'static str, field: u32 },
    #[error("field {field} of {message} has the wrong wire type")]
    WireType { message: &'static str, field: u32 },
}

/// Why the fast path stopped.
enum Stop {
    Error(WireError),
    /// A message field given twice: decode with prost.
    Merge,
}

impl From<prost::DecodeError> for Stop {
    fn from(e: prost::DecodeError) -> Stop {
        Stop::Error(WireError::Malformed(e))
    }
}

impl From<NotUtf8> for Stop {
    fn from(e: NotUtf8) -> Stop {
        Stop::Error(WireError::NotUtf8(e))
    }
}

/// The next field's number and wire type.
fn key(buf: &mut &[u8]) -> Result<(u32, WireType), Stop> {
    Ok(decode_key(buf)?)
}

fn expect(got: WireType, want: WireType, message: &'static str, field: u32) -> Result<(), Stop> {
    if got == want {
        Ok(())
    } else {
        Err(Stop::Error(WireError::WireType { message, field }))
    }
}

/// A length-delimited field's bytes.
fn delimited<'a>(
    buf: &mut &'a [u8],
    message: &'static str,
    field: u32,
    wt: WireType,
) -> Result<&'a [u8], Stop> {
    expect(wt, WireType::LengthDelimited, message, field)?;
    let len = decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= buf.len())
        .ok_or(Stop::Error(WireError::Truncated { message, field }))?;
    let (field_bytes, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field_bytes)
}

fn varint(buf: &mut &[u8], message: &'static str, field: u32, wt: WireType) -> Result<u64, Stop> {
    expect(wt, WireType::Varint, message, field)?;
    Ok(decode_varint(buf)?)
}

fn skip(buf: &mut &[u8], field: u32, wt: WireType) -> Result<(), Stop> {
    Ok(skip_field(wt, field, buf, DecodeContext::default())?)
}

/// Decodes a stream's push messages, its strings shared through the
/// stream's interner.
#[derive(Debug, Default)]
pub struct PushDecoder {
    interner: Interner,
}

impl PushDecoder {
    pub fn new() -> PushDecoder {
        PushDecoder::default()
    }

    /// The `PushRequest` in `buf`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Push, WireError> {
        let out = match self.fast(buf) {
            Ok(p) => Ok(p),
            Err(Stop::Error(e)) => Err(e),
            Err(Stop::Merge) => self.slow(buf),
        };
        self.interner.maybe_prune();
        out
    }

    /// With prost, then converted.
    fn slow(&mut self, buf: &[u8]) -> Result<Push, WireError> {
        let m = PushRequest::decode(buf).map_err(WireError::Malformed)?;
        Ok(match m.msg {
            None => Push::Empty,
            Some(push_request::Msg::Hello(h)) => Push::Hello(h),
            Some(push_request::Msg::Batch(b)) => Push::Batch(Batch {
                seq: b.seq,
                records: b
                    .records
                    .iter()
                    .map(|r| Flow::from_record(r, &mut self.interner))
                    .collect(),
            }),
        })
    }

    fn fast(&mut self, mut buf: &[u8]) -> Result<Push, Stop> {
        const M: &str = "PushRequest";
        // The oneof: each field given replaces the other; the same one
        // given again would be merged into it.
        let mut push = Push::Empty;
        while !buf.is_empty() {
            let (field, wt) = key(&mut buf)?;
            match field {
                1 => {
                    let b = delimited(&mut buf, M, field, wt)?;
                    if matches!(push, Push::Hello(_)) {
                        return Err(Stop::Merge);
                    }
                    push = Push::Hello(PushHello::decode(b)?);
                }
                2 => {
                    let b = delimited(&mut buf, M, field, wt)?;
                    if matches!(push, Push::Batch(_)) {
                        return Err(Stop::Merge);
                    }
                    push = Push::Batch(self.batch(b)?);
                }
                _ => skip(&mut buf, field, wt)?,
            }
        }
        Ok(push)
    }

    fn batch(&mut self, mut buf: &[u8]) -> Result<Batch, Stop> {
        const M: &str = "RecordBatch";
        let mut batch = Batch::default();
        let mut scratch = Scratch::default();
        while !buf.is_empty() {
            let (field, wt) = key(&mut buf)?;
            match field {
                1 => batch.seq = varint(&mut buf, M, field, wt)?,
                2 => {
                    let r = delimited(&mut buf, M, field, wt)?;
                    batch.records.push(self.record(r, &mut scratch)?);
                }
                _ => skip(&mut buf, field, wt)?,
            }
        }
        Ok(batch)
    }

    fn record<'a>(&mut self, mut buf: &'a [u8], s: &mut Scratch<'a>) -> Result<Flow, Stop> {
        const M: &str = "FlowRecord";
        let mut f = RecordRef::default();
        s.enforced.clear();
        s.pending.clear();
        while !buf.is_empty() {
            let (field, wt) = key(&mut buf)?;
            let b = &mut buf;
            match field {
                1 => f.start_unix_s = varint(b, M, field, wt)?,
                2 => f.end_unix_s = varint(b, M, field, wt)?,
                3 => f.node = Wire(delimited(b, M, field, wt)?),
                4 => f.reporter = Wire(delimited(b, M, field, wt)?),
                5 | 6 => {
                    let e = delimited(b, M, field, wt)?;
                    let slot = if field == 5 { &mut f.src } else { &mut f.dst };
                    if slot.replace(e).is_some() {
                        return Err(Stop::Merge);
                    }
                }
                7 => f.protocol = varint(b, M, field, wt)? as u32,
                8 => f.dst_port = varint(b, M, field, wt)? as u32,
                9 => f.action = Wire(delimited(b, M, field, wt)?),
                10 => s.enforced.push(hit(delimited(b, M, field, wt)?)?),
                11 => s.pending.push(hit(delimited(b, M, field, wt)?)?),
                12 => f.service_namespace = Wire(delimited(b, M, field, wt)?),
                13 => f.service_name = Wire(delimited(b, M, field, wt)?),
                14 => f.service_port = varint(b, M, field, wt)? as u32,
                15 => f.packets_forward = varint(b, M, field, wt)?,
                16 => f.bytes_forward = varint(b, M, field, wt)?,
                17 => f.packets_reverse = varint(b, M, field, wt)?,
                18 => f.bytes_reverse = varint(b, M, field, wt)?,
                19 => f.flows_started = varint(b, M, field, wt)?,
                20 => f.flows_completed = varint(b, M, field, wt)?,
                21 => f.flows_denied = varint(b, M, field, wt)?,
                22 => f.num_flows = varint(b, M, field, wt)?,
                23 => f.pending_action = Wire(delimited(b, M, field, wt)?),
                _ => skip(b, field, wt)?,
            }
        }
        let i = &mut self.interner;
        let src = match f.src {
            Some(e) => Some(endpoint(e, i, &mut s.labels)?),
            None => None,
        };
        let dst = match f.dst {
            Some(e) => Some(endpoint(e, i, &mut s.labels)?),
            None => None,
        };
        Ok(Flow {
            start_unix_s: f.start_unix_s,
            end_unix_s: f.end_unix_s,
            node: i.sym(f.node)?,
            reporter: i.sym(f.reporter)?,
            src,
            dst,
            protocol: f.protocol,
            dst_port: f.dst_port,
            action: i.sym(f.action)?,
            enforced: i.trace(&s.enforced)?,
            pending: i.trace(&s.pending)?,
            service_namespace: i.sym(f.service_namespace)?,
            service_name: i.sym(f.service_name)?,
            service_port: f.service_port,
            packets_forward: f.packets_forward,
            bytes_forward: f.bytes_forward,
            packets_reverse: f.packets_reverse,
            bytes_reverse: f.bytes_reverse,
            flows_started: f.flows_started,
            flows_completed: f.flows_completed,
            flows_denied: f.flows_denied,
            num_flows: f.num_flows,
            pending_action: i.sym(f.pending_action)?,
        })
    }
}

/// Vectors reused from record to record of a batch.
#[derive(Default)]
struct Scratch<'a> {
    enforced: Vec<HitRef<Wire<'a>>>,
    pending: Vec<HitRef<Wire<'a>>>,
    labels: Vec<(Wire<'a>, Wire<'a>)>,
}

/// A record's fields as bytes of the message.
#[derive(Default)]
struct RecordRef<'a> {
    start_unix_s: u64,
    end_unix_s: u64,
    node: Wire<'a>,
    reporter: Wire<'a>,
    src: Option<&'a [u8]>,
    dst: Option<&'a [u8]>,
    protocol: u32,
    dst_port: u32,
    action: Wire<'a>,
    service_namespace: Wire<'a>,
    service_name: Wire<'a>,
    service_port: u32,
    packets_forward: u64,
    bytes_forward: u64,
    packets_reverse: u64,
    bytes_reverse: u64,
    flows_started: u64,
    flows_completed: u64,
    flows_denied: u64,
    num_flows: u64,
    pending_action: Wire<'a>,
}

/// A `PolicyHit`.
fn hit(mut buf: &[u8]) -> Result<HitRef<Wire<'_>>, Stop> {
    const M: &str = "PolicyHit";
    let mut h = HitRef::<Wire<'_>>::default();
    while !buf.is_empty() {
        let (field, wt) = key(&mut buf)?;
        let b = &mut buf;
        match field {
            1 => h.tier = Wire(delimited(b, M, field, wt)?),
            2 => h.kind = Wire(delimited(b, M, field, wt)?),
            3 => h.namespace = Wire(delimited(b, M, field, wt)?),
            4 => h.name = Wire(delimited(b, M, field, wt)?),
            5 => h.rule_index = Some(varint(b, M, field, wt)? as u32),
            6 => h.action = Wire(delimited(b, M, field, wt)?),
            _ => skip(b, field, wt)?,
        }
    }
    Ok(h)
}

/// A `FlowEndpoint`, shared through `interner`.
fn endpoint<'a>(
    mut buf: &'a [u8],
    interner: &mut Interner,
    labels: &mut Vec<(Wire<'a>, Wire<'a>)>,
) -> Result<std::sync::Arc<crate::flow::Endpoint>, Stop> {
    const M: &str = "FlowEndpoint";
    let (mut kind, mut namespace, mut workload) = (Wire(b""), Wire(b""), Wire(b""));
    labels.clear();
    while !buf.is_empty() {
        let (field, wt) = key(&mut buf)?;
        let b = &mut buf;
        match field {
            1 => kind = Wire(delimited(b, M, field, wt)?),
            2 => namespace = Wire(delimited(b, M, field, wt)?),
            3 => workload = Wire(delimited(b, M, field, wt)?),
            4 => labels.push(label(delimited(b, M, field, wt)?)?),
            _ => skip(b, field, wt)?,
        }
    }
    Ok(interner.endpoint(kind, namespace, workload, labels)?)
}

/// A map entry of `labels`: key 1, value 2, either absent means empty.
fn label(mut buf: &[u8]) -> Result<(Wire<'_>, Wire<'_>), Stop> {
    const M: &str = "FlowEndpoint.LabelsEntry";
    let (mut k, mut v) = (Wire(b""), Wire(b""));
    while !buf.is_empty() {
        let (field, wt) = key(&mut buf)?;
        let b = &mut buf;
        match field {
            1 => k = Wire(delimited(b, M, field, wt)?),
            2 => v = Wire(delimited(b, M, field, wt)?),
            _ => skip(b, field, wt)?,
        }
    }
    Ok((k, v))
}
