#![allow(clippy::expect_used, clippy::unwrap_used)]

//! The arithmetic the programs use to patch SCTP's CRC32c for a port
//! rewrite (`bpf/manul_sctp.h`), checked in Rust against the `crc32c`
//! crate: a reference of the same algorithm (the difference of the first
//! 4 bytes times x^(8L) modulo the Castagnoli polynomial, x^(8L) the
//! product of the constants x^(8·2^k) for the bits of L), its constants
//! equal to the ones the C header ships, and for random SCTP packets of
//! any length and random port changes the patched checksum equal to a
//! full recomputation. Needs no privileges.

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
fn table() -> [u32; 16] {
    let mut x2n = 1u32 << 30; // x^1
    let mut squares = Vec::new();
    for _ in 0..19 {
        squares.push(x2n);
        x2n = mul(x2n, x2n);
    }
    std::array::from_fn(|k| squares[k + 3])
}

/// x^(8n) mod P for n < 65536, as `sctp_crc_x8n`.
fn x8n(n: u32) -> u32 {
    let t = table();
    (0..16)
        .filter(|k| n & (1 << k) != 0)
        .fold(ONE, |r, k| mul(r, t[k]))
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

#[test]
fn the_headers_constants_are_the_powers_of_x() {
    let header = include_str!("../bpf/manul_sctp.h");
    let shipped = |name: &str| -> u32 {
        let line = header
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} not defined"));
        let hex = line.split_whitespace().nth(2).unwrap();
        u32::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
    };
    for (k, want) in table().into_iter().enumerate() {
        assert_eq!(
            shipped(&format!("MANUL_CRC32C_X8_{k}")),
            want,
            "x^(8*2^{k})"
        );
    }
    assert_eq!(shipped("MANUL_CRC32C_POLY"), POLY);
    assert_eq!(shipped("MANUL_CRC32C_ONE"), ONE);
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
