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
 * Castagnoli polynomial P. x^(8L) = x^(8 (L mod 256)) * x^(8 * 256 (L div
 * 256)), two constant tables of 256 powers (1 KiB each, read-only data);
 * a multiplication is 32 branchless shift-and-XOR steps in a global
 * function (verified once). So at most two multiplications per
 * rewritten port, whatever L (square-and-multiply over the bits of L, as
 * zlib's crc32_combine shifts, cost one more per bit set: twice as much
 * at 1452 bytes), and no byte of the payload read.
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
/* The SCTP common header: ports, verification tag, checksum. */
#define MANUL_SCTP_HDR_LEN 12
#define MANUL_SCTP_CSUM_OFF 8

/* The powers of x that append zero bytes to a CRC register's message
 * (multiplying by x^(8n) appends n), for n = L mod 256 and for
 * n = 256 * (L div 256): x^(8L) is one product of the two.
 * (tests/sctp_crc.rs checks them against a reference.) */
/* x^(8i) mod P, reflected, for i = 0..255: i zero bytes appended. */
static const __u32 sctp_x8_lo[256] = {
	0x80000000, 0x00800000, 0x00008000, 0x00000080, 0x82f63b78, 0xfbc3faf9,
	0x8b277743, 0x52a0c93f, 0x6ea2d55c, 0x1c08b7d6, 0xf56e0ef4, 0x34019664,
	0xa66805eb, 0x7a1f6b24, 0xe75d06aa, 0xc94ec098, 0x18b8ea18, 0x9a9f274a,
	0x2a03aaa3, 0xb13145f8, 0x790606ff, 0xad045557, 0x8542ba6d, 0xde6b9d0b,
	0x9957c0a6, 0x8473058e, 0x2e0af75a, 0x3ae9f81c, 0x5d27e147, 0x95ec5eb6,
	0x9421797f, 0x2f1f4950, 0x510ac59a, 0xf91bdeea, 0x882b9bfc, 0xbea58b3e,
	0x9c25531d, 0xafeaaeef, 0xbd8c7e90, 0x92157069, 0x19e65dde, 0x7fb2b8d1,
	0x21c7d010, 0x107f00bf, 0xec1631ed, 0x5cf4f2f8, 0x79ebc348, 0xcbdbaeb0,
	0xb2dea967, 0xb5be2920, 0x200830f7, 0x278403ae, 0x0e148e82, 0x63c35f01,
	0xf208405c, 0x1c941d43, 0x52377a55, 0x6486f9b5, 0x8780e02c, 0x6d79c1ee,
	0x4f256efc, 0xbe6285cb, 0x5abaef7a, 0x1a20c6da, 0xb82be955, 0x646ce526,
	0x067805d3, 0xc0856a5a, 0x3a077781, 0x70a7bf0c, 0x4d33686f, 0x3f989c2e,
	0x8cfaa965, 0x54bb7dd7, 0x074d3e3d, 0x8fcc485c, 0x1ce9d94b, 0xd8ee5f5e,
	0xfd858bab, 0x3b3f9b16, 0x36c41f1c, 0x5d2bcca0, 0xa2169e6a, 0x0a86adc4,
	0x041d3776, 0x573daed2, 0x32bfacf2, 0x1267a02e, 0x8cd75659, 0x291bd649,
	0x39e0dda6, 0x84d3b293, 0x817cdc51, 0xa3cf250c, 0x4de000f5, 0xc6d29b69,
	0x19b29a35, 0x050bef37, 0xe42c26b5, 0x87004af3, 0xe0b99ccb, 0x5ae43463,
	0x72cc84a2, 0x430209d5, 0xe661f7be, 0x1e8bac19, 0x68f2970f, 0x5e7bceb3,
	0xa11bfaf3, 0xe09f877b, 0xe8f160b1, 0x409600aa, 0xc9e90b9e, 0x3e19aa3b,
	0xa954fb20, 0x2014da25, 0x156c8e18, 0x9a92f32e, 0x8c5fa30a, 0x6b6e779b,
	0x0b4a395b, 0xc8a73bd1, 0x2170c593, 0x81d97f26, 0x069db049, 0x39cf5bc0,
	0xc3b4e99f, 0xcc7874da, 0xb8fdb1e7, 0x37423140, 0x414c5f8d, 0x3d9f3bf4,
	0x34c96751, 0xa37a90b7, 0x667c6cb2, 0x53487e52, 0xb04de25a, 0x3a77bf09,
	0x7888ac73, 0x62b02f55, 0x64b67ee0, 0xe3541e64, 0xa6bf5063, 0x7230dfc6,
	0xe55ef1f3, 0xe0dbc270, 0x71788fcf, 0x9def626f, 0x3f484024, 0xe7185181,
	0x707aa02a, 0x4b2fdc46, 0x6791d588, 0x0848f262, 0x80f5ab67, 0xb58c0222,
	0xc133722b, 0xb9f51697, 0x46db6dea, 0x88945b4f, 0x1fe0b5c3, 0xd0c23585,
	0xb7d7ed51, 0xa3f98e3d, 0x8f68fcec, 0xaefc0f36, 0x16ec5256, 0x7792d169,
	0x1903da7f, 0x2f926bf3, 0xe0110eea, 0x8832912c, 0x6d76739f, 0xccd6b640,
	0x41b7cb0a, 0x6ba39ff3, 0xe0553f1e, 0xbcc62d77, 0xa5eef6cb, 0x5aa16309,
	0x78e87aaf, 0xfc2061f8, 0x794b17db, 0x4a230187, 0x56767c92, 0x73c5fa9c,
	0xdf98f63d, 0x8f149d94, 0x55bd7f95, 0xa70c5574, 0xb6a5cf47, 0x9507dc98,
	0x18e4a304, 0xc78273bc, 0xff913f6a, 0x0adb2a65, 0x543d5c54, 0x96eb7090,
	0x923e1767, 0xb59ec99e, 0x3e65ddf9, 0x8be2d164, 0xa6d7e6ac, 0xefaead90,
	0x924752ba, 0xd9651da3, 0xb1c2234f, 0x1fd9e3bb, 0x2b830011, 0xe21ec76c,
	0x2c674275, 0x44452753, 0x42316c00, 0x0042316c, 0x2c851e83, 0x918a4d92,
	0x730206ad, 0x1d10fb73, 0x62d5b702, 0xe159a540, 0x419a4419, 0x68ad86e7,
	0x37926177, 0xa565a287, 0x56993a31, 0xc2de5388, 0x08edbde4, 0x24a2d2b8,
	0x38e888d4, 0x14719e3c, 0x7db4f7ff, 0xad00e7a6, 0x844752a9, 0xda7d2938,
	0xbae06c57, 0x85555e54, 0x963a1892, 0x7305b6f8, 0x79c4320c, 0x4d3a0be2,
	0x0246e2e6, 0xc5930910, 0x109b5466, 0x4777efde, 0x7fec2963, 0x72e98cbf,
	0xec74a761, 0x934164c6, 0xe5bf8048, 0xcb47faf3, 0xe0f5db7b, 0xe8f10aed,
	0x5cf015c3, 0xd0812525, 0x159c1be7, 0x37ef50ea,
};

/* x^(8 * 256i) mod P, reflected, for i = 0..255: 256i zero bytes
 * appended. */
static const __u32 sctp_x8_hi[256] = {
	0x80000000, 0x88e56f72, 0x74c360a4, 0x631bb273, 0xe4172b16, 0x71892b1b,
	0x835305c9, 0x196b1eae, 0x0d65762a, 0xafc81338, 0xb5a50ab7, 0xf373c3ac,
	0x5f60970f, 0xd46d3063, 0x3a5275ea, 0x02331c01, 0x35d73a62, 0x2600ffa6,
	0xf65e86d6, 0x68e46ea2, 0x8eeafe04, 0xaca289d5, 0x84e3f8c8, 0xda17456b,
	0x481bee08, 0xa8b4118b, 0x59f4852c, 0x717a8910, 0xefcf4f49, 0xecbbe106,
	0xda1c4087, 0xdc2ced79, 0x28461564, 0xeccb4578, 0x6d8f49d8, 0x9b7ad6c5,
	0xce2c905d, 0xa32be27a, 0xde8a8e12, 0x8c117538, 0x8778fbde, 0xd8c96934,
	0x9b9e9037, 0xafc0eb67, 0x8a898a05, 0x6e971abe, 0x186d1391, 0xc2d95be8,
	0x43eefc9f, 0xb8868422, 0xde5a3422, 0x2082707c, 0x456ea1c5, 0x3ed57030,
	0x3b1d89ea, 0xb158055f, 0xba8dd573, 0xbd9b04e0, 0x86162060, 0xc9f6cbf5,
	0x9714afd1, 0xe45901d7, 0x5282b1be, 0xd847ebfd, 0xbf455269, 0xb031d46e,
	0x1409a35b, 0x9dfd8341, 0xa335d306, 0x68e38fb7, 0x2144743e, 0xbcf65005,
	0x57ac1403, 0x0cfe7f1c, 0x0f121b5e, 0xecb4c29e, 0x80295058, 0x20f3da38,
	0xb6afd2ff, 0x778fcc50, 0x5edcdeb9, 0x187953cc, 0x7479c4c7, 0xed137dd7,
	0x087ff103, 0xa3b2a824, 0xa6b9d5fb, 0xfb260ce6, 0x0cebb5b1, 0x35045674,
	0x209c6e45, 0x2e7b0cec, 0x22c5adcc, 0x88c913f0, 0x208e2ea9, 0x4bd8d801,
	0x65059450, 0xb76e2d72, 0xb9e80571, 0x0788eab5, 0x78d4b491, 0xd578ef9e,
	0x50a06c86, 0x8d34099a, 0x0d69c0ac, 0x16e43bc4, 0x36c9680c, 0xb06470d4,
	0xa22ceb86, 0x1137a0bd, 0xb041c5a6, 0x8d92f930, 0x4e6f41a4, 0x8ee01bfc,
	0xa71bd31a, 0x088ca01f, 0xd3e49f36, 0xcc9e356a, 0x3644c1b4, 0xa03f4f11,
	0x2e7776e1, 0xa2fdc76c, 0x346f98da, 0xf40277fe, 0x6381067f, 0x80ed08da,
	0xec3fda46, 0x1a8124d4, 0xe2ea32dc, 0x8f5302d6, 0x1c2f57d2, 0xbb78612e,
	0x05f6b022, 0x88317045, 0xe426ba19, 0xadd38f2b, 0x504a4b48, 0x3a0b2256,
	0xf67036b8, 0xb2a1474b, 0x3829b75e, 0x4746bb56, 0x2364630b, 0xd0394222,
	0xf5b95b32, 0x29e89c99, 0xbf0c695a, 0xbd1488dc, 0x7de96c1b, 0x6964405e,
	0x20766722, 0x02b36975, 0xbd0d968d, 0x22a0cd12, 0x0839f3ed, 0xd73e4ac8,
	0x85b7f30f, 0x9f3722be, 0xa20285ee, 0xfe7530cd, 0x695a4c87, 0x448e7bda,
	0x96b1761e, 0x9447b8ff, 0x0385a49d, 0xc71e1e96, 0xfbfa074f, 0xa2ccde30,
	0xa74fc7bd, 0x0212ecfe, 0x94923908, 0x01d9badb, 0x9548f5f8, 0x6bf1bbe5,
	0x5d91d42c, 0x7c7016b8, 0xf204502c, 0x31911140, 0x68645de4, 0x0a2cf292,
	0x323e42ec, 0x67c226c5, 0x5b575c57, 0x1ceb6eb0, 0x4cccbb63, 0x86be4c0b,
	0xc6b7c3bc, 0x9c6e7cf1, 0xc534a11c, 0xad653be3, 0x275ebea9, 0xab3620bc,
	0x9a4f01b6, 0xf8cd9b71, 0xc3c0ad48, 0x737faaf8, 0xfb51cf31, 0x7db26281,
	0xda347829, 0xcf21e0b7, 0xc73054ad, 0xab23597f, 0x0320b658, 0x774b30fe,
	0xa66a47c4, 0x6f2a1385, 0x3c884fa0, 0x9441fdfb, 0x941a0916, 0xf8e7d20a,
	0x951e116b, 0x9c5c8fdb, 0xde0a51de, 0x46760adc, 0x33764417, 0xd44c2980,
	0x4b4eec48, 0xa4d0f239, 0xccd68c23, 0xf244c119, 0xe29278a3, 0xb7a8320b,
	0xe2b3b949, 0xea7f1c7b, 0x4303cb97, 0x168d4703, 0xb8d9ec73, 0xa29ef54f,
	0x9a80cc59, 0x2604c3ea, 0x8b662cc9, 0xd5453e55, 0xa98112a7, 0x5f369ea5,
	0xee7d1674, 0xa4f34d2d, 0xa41aaa68, 0x089d6d00, 0x66ac1f55, 0x6d98601a,
	0x4c3d3d65, 0xd860d327, 0xb3091735, 0x4610220e, 0x13c6ed5f, 0xee604a48,
	0x4a39e877, 0xc2850474, 0x9049aab7, 0xa7a82bae, 0xfa2b26d8, 0x9ad84164,
	0x4d227ac3, 0x9d5073df, 0x05f3f11e, 0x73411e5c,
};

/* a * b mod P, both reflected (zlib's multmodp without its early exit).
 * A global function: verified once. */
__attribute__((noinline)) __u32 sctp_crc_mul(__u32 a, __u32 b)
{
	__u32 prod = 0;

	/* A loop, not unrolled: unrolled, clang's selects become branches
	 * whose states the verifier cannot prune. */
	for (int i = 0; i < 32; i++) {
		/* a's coefficient of x^i times b * x^i */
		prod ^= b & -((a >> (31 - i)) & 1);
		b = (b >> 1) ^ (MANUL_CRC32C_POLY & -(b & 1));
	}
	return prod;
}

/* x^(8n) mod P, reflected, for n < 65536. */
static __always_inline __u32 sctp_crc_x8n(__u32 n)
{
	__u32 lo = n, hi = n >> 8;

	/* The indices masked where the verifier sees it: clang knows n is
	 * below 65536 and would drop the masks. */
	asm volatile("" : "+r"(lo), "+r"(hi));
	lo = sctp_x8_lo[lo & 0xff];
	if (!hi)
		return lo;
	return sctp_crc_mul(lo, sctp_x8_hi[hi & 0xff]);
}

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
