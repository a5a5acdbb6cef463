//! The connect-time load balancer's object, made loadable (no I/O): aya
//! 0.14 does not relocate kfunc calls, so `bpf/manul_ctlb.c` writes its
//! call to `bpf_sock_destroy` as a raw instruction with a placeholder
//! immediate ([`crate::abi::MANUL_CTLB_KFUNC_MAGIC`]); the placeholder is
//! replaced here with the function's BTF id in the running kernel. The
//! instruction already has `src_reg` `BPF_PSEUDO_KFUNC_CALL`, which aya
//! leaves alone, and `off` 0 (the kernel's own BTF).

/// `BPF_JMP | BPF_CALL`, then `src_reg` 2 (`BPF_PSEUDO_KFUNC_CALL`) and
/// `dst_reg` 0, then `off` 0.
const CALL_HEAD: [u8; 4] = [0x85, 0x20, 0x00, 0x00];

/// The placeholder instruction, as it is in the object (little-endian).
fn placeholder() -> [u8; 8] {
    let mut insn = [0u8; 8];
    insn[..4].copy_from_slice(&CALL_HEAD);
    insn[4..].copy_from_slice(&crate::abi::MANUL_CTLB_KFUNC_MAGIC.to_le_bytes());
    insn
}

/// `object` with every placeholder call (at an instruction boundary of
/// the object, 8-byte aligned) aimed at BTF id `kfunc`; and how many it
/// replaced.
pub fn patch_kfunc(object: &[u8], kfunc: u32) -> (Vec<u8>, usize) {
    let want = placeholder();
    let mut out = object.to_vec();
    let mut replaced = 0;
    for (i, insn) in object.chunks_exact(8).enumerate() {
        if insn == want {
            out[i * 8 + 4..i * 8 + 8].copy_from_slice(&kfunc.to_le_bytes());
            replaced += 1;
        }
    }
    (out, replaced)
}

/// A copy of `bytes` that starts on an 8-byte boundary (the ELF parser
/// reads the object in place): the buffer and where the copy starts in it.
pub fn aligned(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; bytes.len() + 8];
    let start = buf.as_ptr().align_offset(8).min(8);
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    (buf, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aligned_placeholders_are_replaced() {
        let mut object = vec![0u8; 40];
        object[8..16].copy_from_slice(&placeholder());
        // Not on an instruction boundary: left alone.
        object[28..36].copy_from_slice(&placeholder());
        let (out, n) = patch_kfunc(&object, 65185);
        assert_eq!(n, 1);
        assert_eq!(&out[8..12], &CALL_HEAD);
        assert_eq!(&out[12..16], &65185u32.to_le_bytes());
        assert_eq!(&out[28..36], &placeholder());
        assert_eq!(out.len(), object.len());
    }

    #[test]
    fn the_built_object_has_one_placeholder_per_iterator() {
        let (_, n) = patch_kfunc(super::super::OBJECT, 1);
        assert_eq!(
            n, 2,
            "iter/tcp and iter/udp each call bpf_sock_destroy once"
        );
    }

    #[test]
    fn aligned_copies_are_aligned_and_equal() {
        let bytes: Vec<u8> = (0..=255).collect();
        let (buf, start) = aligned(&bytes);
        assert_eq!(buf[start..].as_ptr().align_offset(8), 0);
        assert_eq!(&buf[start..start + bytes.len()], &bytes[..]);
    }
}
