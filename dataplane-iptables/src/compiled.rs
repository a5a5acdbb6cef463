//! nft as a compiler: the nf_tables messages `nft` would send for a
//! script, read back from `nft --check --debug=mnl` (which evaluates the
//! script against the kernel, sends the batch without its end so the
//! kernel checks it and applies nothing, and prints every message in
//! libmnl's dump format), so that the driver can send them itself, in one
//! batch with messages it built (`elements.rs`). Pure: the text in, the
//! messages out.
//!
//! libmnl prints a message's header fields in decimal, its `nfgenmsg`
//! and every 4-byte word of attribute data in hex, and each attribute
//! header decoded (length, the nested and byte-order flags, type); that
//! is enough to rebuild the bytes exactly, except the header's flags, of
//! which it shows only request, multi, ack and echo. They are restored
//! from the message type as `nft` sets them for the commands a whole-table
//! script uses (`add` and `delete`): create for new objects, append for
//! rules. A message whose rebuilt length differs from the length printed
//! (libmnl skips a word it cannot place) is an error, never a guess.

/// Why a dump cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("line {line} of nft's message dump: {what}")]
    Unreadable { line: usize, what: String },
    #[error("message {index} of nft's dump rebuilt as {got} bytes, not the {want} printed")]
    Length {
        index: usize,
        got: usize,
        want: usize,
    },
    #[error("nft's message dump has no batch")]
    NoBatch,
    #[error("nft's dump holds a message of type {kind:#06x}, not one a whole-table script sends")]
    Unexpected { kind: u16 },
}

/// One nf_tables message of the batch: its type and flags, and its body
/// (the `nfgenmsg` and the attributes), without the netlink header, which
/// the batch writer adds with its own sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u16,
    pub flags: u16,
    pub body: Vec<u8>,
}

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_SUBSYS_NFTABLES: u16 = 10;

// nf_tables message types a whole-table script sends.
const NEWTABLE: u16 = 0;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const NEWRULE: u16 = 6;
const NEWSET: u16 = 9;
const NEWSETELEM: u16 = 12;

/// The flags `nft` sets on a message of this type (see the module doc).
fn flags_of(kind: u16) -> Option<u16> {
    if kind >> 8 != NFNL_SUBSYS_NFTABLES {
        return None;
    }
    match kind & 0xff {
        NEWRULE => Some(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND),
        NEWTABLE | NEWCHAIN | NEWSET | NEWSETELEM => Some(NLM_F_REQUEST | NLM_F_CREATE),
        DELTABLE => Some(NLM_F_REQUEST),
        _ => None,
    }
}

/// The cells of a dump line: `|  0000000036  |\t| message length |` gives
/// `["0000000036", "message length"]`. Colour codes are dropped.
fn cells(line: &str) -> Vec<String> {
    let mut clean = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ ... m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            clean.push(c);
        }
    }
    clean
        .split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

fn hex_word(text: &str) -> Option<[u8; 4]> {
    let bytes: Vec<u8> = text
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[derive(Default)]
struct Partial {
    kind: u16,
    flags_shown: String,
    len: usize,
    body: Vec<u8>,
}

/// The messages of the batch in `dump` (what follows the batch's begin
/// message), in order.
pub fn parse(dump: &str) -> Result<Vec<Message>, DumpError> {
    let mut all: Vec<Partial> = Vec::new();
    for (n, line) in dump.lines().enumerate() {
        let bad = |what: &str| DumpError::Unreadable {
            line: n + 1,
            what: what.to_string(),
        };
        let c = cells(line);
        if c.is_empty() || c[0].starts_with("---") {
            continue;
        }
        let legend = |text: &str| line.contains(text);
        if legend("message length") {
            let len = c[0].parse().map_err(|_| bad("a message length"))?;
            all.push(Partial {
                len,
                ..Partial::default()
            });
        } else if legend("type | flags") && c.len() >= 2 {
            let m = all
                .last_mut()
                .ok_or_else(|| bad("a type before a message"))?;
            m.kind = c[0].parse().map_err(|_| bad("a message type"))?;
            m.flags_shown = c[1].clone();
        } else if legend("sequence number") || legend("port ID") {
        } else if legend("extra header") {
            let m = all
                .last_mut()
                .ok_or_else(|| bad("a header before a message"))?;
            m.body
                .extend(hex_word(&c[0]).ok_or_else(|| bad("an extra header"))?);
        } else if legend("len |flags| type") && c.len() >= 3 {
            // Cells: length, flags, type, then the legend's.
            let m = all
                .last_mut()
                .ok_or_else(|| bad("an attribute before a message"))?;
            let len: u16 = c[0].parse().map_err(|_| bad("an attribute length"))?;
            let mut kind: u16 = c[2].parse().map_err(|_| bad("an attribute type"))?;
            if c[1].contains('N') {
                kind |= NLA_F_NESTED;
            }
            if c[1].contains('B') {
                kind |= NLA_F_NET_BYTEORDER;
            }
            m.body.extend(len.to_ne_bytes());
            m.body.extend(kind.to_ne_bytes());
        } else if c.len() >= 2 && c[1] == "data" {
            let m = all.last_mut().ok_or_else(|| bad("data before a message"))?;
            m.body
                .extend(hex_word(&c[0]).ok_or_else(|| bad("a data word"))?);
        } else {
            return Err(bad("a line of no known kind"));
        }
    }
    let begin = all
        .iter()
        .position(|m| m.kind == NFNL_MSG_BATCH_BEGIN)
        .ok_or(DumpError::NoBatch)?;
    all.into_iter()
        .enumerate()
        .skip(begin + 1)
        .map(|(index, m)| {
            let got = 16 + m.body.len();
            if got != m.len {
                return Err(DumpError::Length {
                    index,
                    got,
                    want: m.len,
                });
            }
            let mut flags = flags_of(m.kind).ok_or(DumpError::Unexpected { kind: m.kind })?;
            if m.flags_shown.contains('E') {
                flags |= 0x8;
            }
            Ok(Message {
                kind: m.kind,
                flags,
                body: m.body,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `add table inet x` and `add chain inet x c`, as nft 1.0.6 prints
    /// them with `-c --debug=mnl` (the cache queries first).
    const DUMP: &str = "----------------\t------------------
|  0000000020  |\t| message length |
| 02576 | R--- |\t|  type | flags  |
|  0000000000  |\t| sequence number|
|  0000000000  |\t|     port ID    |
----------------\t------------------
| 00 00 00 00  |\t|  extra header  |
----------------\t------------------
----------------\t------------------
|  0000000020  |\t| message length |
| 00016 | R--- |\t|  type | flags  |
|  0000000000  |\t| sequence number|
|  0000000000  |\t|     port ID    |
----------------\t------------------
| 00 00 00 0a  |\t|  extra header  |
----------------\t------------------
----------------\t------------------
|  0000000036  |\t| message length |
| 02560 | R--- |\t|  type | flags  |
|  0000000001  |\t| sequence number|
|  0000000000  |\t|     port ID    |
----------------\t------------------
| 01 00 00 00  |\t|  extra header  |
|\u{1b}[1;31m00006\u{1b}[0m|\u{1b}[1;32m--\u{1b}[0m|\u{1b}[1;34m00001\u{1b}[0m|\t|len |flags| type|
| 78 00 00 00  |\t|      data      |\t x      
|\u{1b}[1;31m00008\u{1b}[0m|\u{1b}[1;32m--\u{1b}[0m|\u{1b}[1;34m00002\u{1b}[0m|\t|len |flags| type|
| 00 00 00 00  |\t|      data      |\t        
----------------\t------------------
----------------\t------------------
|  0000000040  |\t| message length |
| 02563 | R--- |\t|  type | flags  |
|  0000000002  |\t| sequence number|
|  0000000000  |\t|     port ID    |
----------------\t------------------
| 01 00 00 00  |\t|  extra header  |
|\u{1b}[1;31m00006\u{1b}[0m|\u{1b}[1;32m--\u{1b}[0m|\u{1b}[1;34m00001\u{1b}[0m|\t|len |flags| type|
| 78 00 00 00  |\t|      data      |\t x      
|\u{1b}[1;31m00012\u{1b}[0m|\u{1b}[1;32mN-\u{1b}[0m|\u{1b}[1;34m00003\u{1b}[0m|\t|len |flags| type|
|\u{1b}[1;31m00006\u{1b}[0m|\u{1b}[1;32m--\u{1b}[0m|\u{1b}[1;34m00001\u{1b}[0m|\t|len |flags| type|
| 63 00 00 00  |\t|      data      |\t c      
----------------\t------------------
";

    #[test]
    fn a_dump_is_rebuilt_byte_for_byte() {
        let m = parse(DUMP).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].kind, 0x0a00);
        assert_eq!(m[0].flags, NLM_F_REQUEST | NLM_F_CREATE);
        assert_eq!(
            m[0].body,
            vec![
                1, 0, 0, 0, 6, 0, 1, 0, b'x', 0, 0, 0, 8, 0, 2, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(m[1].kind, 0x0a03);
        let mut want = vec![1, 0, 0, 0, 6, 0, 1, 0, b'x', 0, 0, 0];
        want.extend(12u16.to_ne_bytes());
        want.extend((3u16 | NLA_F_NESTED).to_ne_bytes());
        want.extend([6, 0, 1, 0, b'c', 0, 0, 0]);
        assert_eq!(m[1].body, want);
    }

    #[test]
    fn a_lost_word_or_a_stranger_is_an_error() {
        let lost = DUMP.replace("| 63 00 00 00  |\t|      data      |\t c      \n", "");
        assert!(matches!(parse(&lost), Err(DumpError::Length { .. })));
        let rule_del = DUMP.replace("| 02563 |", "| 02568 |");
        assert!(matches!(
            parse(&rule_del),
            Err(DumpError::Unexpected { kind: 0x0a08 })
        ));
        assert!(matches!(
            parse(&DUMP.replace("| 00016 |", "| 02577 |")),
            Err(DumpError::NoBatch)
        ));
        assert!(matches!(
            parse("| zz |\t| message length |"),
            Err(DumpError::Unreadable { line: 1, .. })
        ));
    }
}
