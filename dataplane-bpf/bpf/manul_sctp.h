/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Part of manul_tc.c (included once, after struct pkt and count(), before
 * the service NAT): SCTP's checksum patched for a port rewrite, without
 * reading the packet.
 *
 * SCTP's checksum is the CRC32c (Castagnoli) of the SCTP packet alone,
 * the checksum field counted as zero, stored little-endian. A CRC is
 * affine over GF(2): for two messages of equal length,
 * crc(a) ^ crc(b) = crc0(a ^ b), crc0 being the CRC with a zero initial
 * value and no final XOR. A port rewrite changes bytes 0..4 (the ports)
 * of an L-byte SCTP packet, so the checksum changes by crc0 of the 4-byte
 * difference followed by L - 4 zero bytes: the difference d (read
 * little-endian: the reflected polynomial) times x^(8L) modulo the
 * Castagnoli polynomial P. x^(8L) is the product of the constants
 * x^(8 * 2^k) mod P for the bits k set in L (L < 65536: 16 constants), as
 * zlib's crc32_combine computes its shift. Multiplying is 32 shift-and-XOR
 * steps in a global function (verified once, its loop bounded and
 * branchless), called at most 17 times per rewritten port: a few thousand
 * instructions, and no byte of the payload read.
 *
 * What cannot be patched:
 * - a fragment with more to come (`p->frag`): the CRC covers bytes that
 *   are not in this packet; refused (-1, MANUL_CNT_SVC_UNTRANSLATABLE).
 * - a packet whose CRC is not computed yet: an SCTP stack handing the
 *   CRC to the device (CHECKSUM_PARTIAL, csum_not_inet), or to GSO,
 *   leaves the field zero and the kernel computes it over the bytes as
 *   they are when the packet leaves (or its receiver on this host trusts
 *   it). So a zero field, and a GSO packet, keep their checksum field as
 *   it is. (A complete CRC that happens to be zero, one packet in 2^32,
 *   is then left wrong and dropped by its receiver; SCTP retransmits.)
 */
#ifndef MANUL_SCTP_H
#define MANUL_SCTP_H

/* The Castagnoli polynomial, reflected (bit 31 is x^0). */
#define MANUL_CRC32C_POLY 0x82f63b78
/* The polynomial 1, reflected. */
#define MANUL_CRC32C_ONE 0x80000000
/* The SCTP common header: ports, verification tag, checksum. */
#define MANUL_SCTP_HDR_LEN 12
#define MANUL_SCTP_CSUM_OFF 8

/* x^(8 * 2^k) mod P for k = 0..15, reflected: multiplying a CRC register
 * by the k-th appends 2^k zero bytes to its message. (tests/sctp_crc.rs
 * checks them against a reference.) */
#define MANUL_CRC32C_X8_0 0x00800000
#define MANUL_CRC32C_X8_1 0x00008000
#define MANUL_CRC32C_X8_2 0x82f63b78
#define MANUL_CRC32C_X8_3 0x6ea2d55c
#define MANUL_CRC32C_X8_4 0x18b8ea18
#define MANUL_CRC32C_X8_5 0x510ac59a
#define MANUL_CRC32C_X8_6 0xb82be955
#define MANUL_CRC32C_X8_7 0xb8fdb1e7
#define MANUL_CRC32C_X8_8 0x88e56f72
#define MANUL_CRC32C_X8_9 0x74c360a4
#define MANUL_CRC32C_X8_10 0xe4172b16
#define MANUL_CRC32C_X8_11 0x0d65762a
#define MANUL_CRC32C_X8_12 0x35d73a62
#define MANUL_CRC32C_X8_13 0x28461564
#define MANUL_CRC32C_X8_14 0xbf455269
#define MANUL_CRC32C_X8_15 0xe2ea32dc

/* a * b mod P, both reflected. A global function: verified once. */
__attribute__((noinline)) __u32 sctp_crc_mul(__u32 a, __u32 b)
{
	__u32 prod = 0;

	for (int i = 0; i < 32; i++) {
		/* a's coefficient of x^i times b * x^i */
		prod ^= b & -((a >> (31 - i)) & 1);
		b = (b >> 1) ^ (MANUL_CRC32C_POLY & -(b & 1));
	}
	return prod;
}

#define SCTP_X8_STEP(k)                                                                          \
	if (n & (1u << (k)))                                                                     \
		r = sctp_crc_mul(r, MANUL_CRC32C_X8_##k)

/* x^(8n) mod P, reflected, for n < 65536. */
static __always_inline __u32 sctp_crc_x8n(__u32 n)
{
	__u32 r = MANUL_CRC32C_ONE;

	SCTP_X8_STEP(0);
	SCTP_X8_STEP(1);
	SCTP_X8_STEP(2);
	SCTP_X8_STEP(3);
	SCTP_X8_STEP(4);
	SCTP_X8_STEP(5);
	SCTP_X8_STEP(6);
	SCTP_X8_STEP(7);
	SCTP_X8_STEP(8);
	SCTP_X8_STEP(9);
	SCTP_X8_STEP(10);
	SCTP_X8_STEP(11);
	SCTP_X8_STEP(12);
	SCTP_X8_STEP(13);
	SCTP_X8_STEP(14);
	SCTP_X8_STEP(15);
	return r;
}

#undef SCTP_X8_STEP

/* Patches the CRC32c of SCTP packet `p` (IPv4 or IPv6, its L4 header at
 * p->l4_off) for its first 4 bytes (the ports, read little-endian)
 * changing by `diff`; the ports themselves are the caller's to write.
 * 0, or -1: the packet cannot be patched (a fragment, a length that does
 * not hold the SCTP header, a failed access). A global function, so its
 * stack is not the caller's. */
__attribute__((noinline)) int sctp_crc_patch(struct __sk_buff *skb, const struct pkt *p,
					     __u32 diff)
{
	__u32 len, ip_len, hdr, crc;
	__u16 field;

	if (!skb || !p)
		return -1;
	if (!diff)
		return 0;
	if (p->frag) {
		count(MANUL_CNT_SVC_UNTRANSLATABLE);
		return -1;
	}
	/* The SCTP packet's length, from the IP header: IPv4's total length
	 * less its header, IPv6's payload length less its extension
	 * headers (never the frame's, which may be padded). */
	if (bpf_skb_load_bytes(skb, ETH_HLEN + (p->version == 4 ? 2 : 4), &field, 2))
		return -1;
	ip_len = bpf_ntohs(field);
	hdr = p->l4_off - ETH_HLEN;
	if (p->version == 4) {
		len = ip_len - hdr;
		if (ip_len < hdr + MANUL_SCTP_HDR_LEN)
			return -1;
	} else {
		len = ip_len + 40 - hdr;
		if (ip_len + 40 < hdr + MANUL_SCTP_HDR_LEN)
			return -1;
	}
	if (len > 0xffff)
		return -1;
	/* GSO: each segment's CRC is computed when it is cut. */
	if (skb->gso_size)
		return 0;
	if (bpf_skb_load_bytes(skb, p->l4_off + MANUL_SCTP_CSUM_OFF, &crc, 4))
		return -1;
	/* Not computed yet (offloaded): computed over the new ports later. */
	if (!crc)
		return 0;
	/* The field is little-endian, as the program reads it (BPF is
	 * little-endian here): the CRC itself. */
	crc ^= sctp_crc_mul(diff, sctp_crc_x8n(len));
	return bpf_skb_store_bytes(skb, p->l4_off + MANUL_SCTP_CSUM_OFF, &crc, 4,
				   BPF_F_RECOMPUTE_CSUM)
		       ? -1
		       : 0;
}

/* Rewrites the source (`is_src`) or destination port of SCTP packet `p`
 * from old_port to new_port (network order) with its CRC32c. 0, or -1:
 * not rewritten (the packet is to be dropped). */
static __always_inline int sctp_rewrite_port(struct __sk_buff *skb, const struct pkt *p,
					     int is_src, __u16 old_port, __u16 new_port)
{
	/* The ports as the first 4 bytes read little-endian: the source
	 * port's bytes are the low half. */
	__u32 diff = (__u32)(old_port ^ new_port) << (is_src ? 0 : 16);

	if (old_port == new_port)
		return 0;
	if (sctp_crc_patch(skb, p, diff))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + (is_src ? 0 : 2), &new_port, 2,
				   BPF_F_RECOMPUTE_CSUM)
		       ? -1
		       : 0;
}

#endif /* MANUL_SCTP_H */
