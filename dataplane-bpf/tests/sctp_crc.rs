#![allow(clippy::expect_used, clippy::unwrap_used)]

//! The arithmetic the programs use to patch SCTP's CRC32c for a port
//! rewrite (`bpf/manul_sctp.h`), checked in Rust against the `crc32c`
//! crate: a reference of the same algorithm (the difference of the first
//! 4 bytes times x^(8L) modulo the Castagnoli polynomial, x^(8L) the
//! product of x^(8·(L mod 256)) and x^(8·256·(L div 256)) from two
//! tables), the tables equal to the ones the C header ships (and to
//! square-and-multiply over the bits of the length), and for random SCTP
//! packets of any length and random port changes the patched checksum
//! equal to a full recomputation. Needs no privileges.

use proptest::prelude::*;

/// The Castagnoli polynomial, reflected.
const POLY: u32 = 0x82f6_3b78;
/// The polynomial 1, reflected (bit 31 is x^0).
const ONE: u32 = 0x8000_0000;

/// a · b mod P, both reflected (zlib's multmodp), as `sctp_crc_mul`.
fn mul(a: u32, mut b: u32) -> u32 {
    let mut prod = 0;
    for i in 0..32 {
        prod ^= b & 0u32.wrapping_sub((a >> (31 - i)) & 1);
        b = (b >> 1) ^ (POLY & 0u32.wrapping_sub(b & 1));
    }
    prod
}

/// x^(8·2^k) mod P for k = 0..16, computed by squaring x.
fn powers() -> [u32; 16] {
    let mut x2n = 1u32 << 30; // x^1
    let mut squares = Vec::new();
    for _ in 0..19 {
        squares.push(x2n);
        x2n = mul(x2n, x2n);
    }
    std::array::from_fn(|k| squares[k + 3])
}

/// x^(8n) mod P for n < 65536 by square-and-multiply over the bits of n
/// (as zlib's crc32_combine shifts).
fn x8n_by_squares(n: u32) -> u32 {
    let t = powers();
    (0..16)
        .filter(|k| n & (1 << k) != 0)
        .fold(ONE, |r, k| mul(r, t[k]))
}

/// The header's tables: x^(8i) and x^(8·256i) for i = 0..256.
fn tables() -> &'static (Vec<u32>, Vec<u32>) {
    static TABLES: std::sync::OnceLock<(Vec<u32>, Vec<u32>)> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        (
            (0..256).map(x8n_by_squares).collect(),
            (0..256).map(|i| x8n_by_squares(256 * i)).collect(),
        )
    })
}

/// x^(8n) mod P for n < 65536 from the tables, as `sctp_crc_x8n`.
fn x8n(n: u32) -> u32 {
    let (lo, hi) = tables();
    let lo = lo[(n & 0xff) as usize];
    if n >> 8 == 0 {
        lo
    } else {
        mul(lo, hi[((n >> 8) & 0xff) as usize])
    }
}

/// The CRC32c field after the first 4 bytes of an `len`-byte SCTP packet
/// changed by `diff` (read little-endian), as `sctp_crc_patch`.
fn patched(crc: u32, diff: u32, len: usize) -> u32 {
    crc ^ mul(diff, x8n(u32::try_from(len).unwrap()))
}

/// An SCTP packet's CRC32c: its checksum field counted as zero.
fn crc_of(packet: &[u8]) -> u32 {
    let mut copy = packet.to_vec();
    copy[8..12].fill(0);
    crc32c::crc32c(&copy)
}

/// The values of `static const __u32 NAME[256] = { ... };` in the header.
fn shipped_table(header: &str, name: &str) -> Vec<u32> {
    let start = header
        .find(&format!("{name}[256] = {{"))
        .unwrap_or_else(|| panic!("{name} not defined"));
    let body = &header[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
    body.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap())
        .collect()
}

#[test]
fn the_headers_tables_are_the_powers_of_x() {
    let header = include_str!("../bpf/manul_sctp.h");
    let (lo, hi) = tables();
    assert_eq!(&shipped_table(header, "sctp_x8_lo"), lo);
    assert_eq!(&shipped_table(header, "sctp_x8_hi"), hi);
    let define = |name: &str| -> u32 {
        let line = header
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} not defined"));
        let hex = line.split_whitespace().nth(2).unwrap();
        u32::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
    };
    assert_eq!(define("MANUL_CRC32C_POLY"), POLY);
    // The tables' product is square-and-multiply's power for every
    // length an IP header can give.
    for n in 0..65536u32 {
        let from_tables = if n >> 8 == 0 {
            lo[n as usize & 0xff]
        } else {
            mul(lo[n as usize & 0xff], hi[n as usize >> 8])
        };
        assert_eq!(from_tables, x8n_by_squares(n), "{n}");
    }
}

#[test]
fn a_power_of_x_appends_zero_bytes() {
    // crc0(m followed by n zero bytes) = crc0(m) · x^(8n): from the
    // crate, crc0 is crc ^ crc(zeros) (affine over GF(2)).
    let crc0 = |m: &[u8]| crc32c::crc32c(m) ^ crc32c::crc32c(&vec![0; m.len()]);
    let m = [0x12, 0x34, 0x56, 0x78, 0x9a];
    for n in [0usize, 1, 2, 3, 7, 64, 1000, 65535 - 5] {
        let mut long = m.to_vec();
        long.resize(m.len() + n, 0);
        assert_eq!(
            mul(crc0(&m), x8n(u32::try_from(n).unwrap())),
            crc0(&long),
            "{n}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any SCTP packet (12 bytes of common header and up to a jumbo
    /// frame's payload), any new ports: the patch is the recomputation.
    #[test]
    fn a_port_rewrite_patched_is_the_crc_recomputed(
        body in proptest::collection::vec(any::<u8>(), 12..9000),
        sport in any::<u16>(),
        dport in any::<u16>(),
    ) {
        let mut packet = body;
        let crc = crc_of(&packet);
        packet[8..12].copy_from_slice(&crc.to_le_bytes());
        let old = u32::from_le_bytes(packet[0..4].try_into().unwrap());
        packet[0..2].copy_from_slice(&sport.to_be_bytes());
        packet[2..4].copy_from_slice(&dport.to_be_bytes());
        let new = u32::from_le_bytes(packet[0..4].try_into().unwrap());
        prop_assert_eq!(patched(crc, old ^ new, packet.len()), crc_of(&packet));
    }

    /// The largest lengths an IP header can give (up to 65535 bytes).
    #[test]
    fn long_packets_too(len in 60_000usize..65_536, diff in 1u32..) {
        let packet: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let crc = crc_of(&packet);
        let mut changed = packet.clone();
        for (b, d) in changed[0..4].iter_mut().zip(diff.to_le_bytes()) {
            *b ^= d;
        }
        prop_assert_eq!(patched(crc, diff, len), crc_of(&changed));
    }
}
