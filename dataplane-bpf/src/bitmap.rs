//! Rule bitmaps: one bit per slot of a compiled table, laid out as the
//! kernel's `struct manul_bitmap`.

use crate::abi;

/// Words per bitmap (`MANUL_BITMAP_WORDS`).
pub const WORDS: usize = abi::MANUL_BITMAP_WORDS as usize;
/// Slots per table (`MANUL_MAX_RULES`): rules plus sentinels.
pub const MAX_SLOTS: usize = abi::MANUL_MAX_RULES as usize;

/// A set of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bitmap(pub [u64; WORDS]);

impl Default for Bitmap {
    fn default() -> Self {
        Self([0; WORDS])
    }
}

impl Bitmap {
    /// Sets slot `i` (ignored beyond [`MAX_SLOTS`]; the compiler refuses
    /// such tables first).
    pub fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn and(&mut self, other: &Bitmap) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a &= b;
        }
    }

    /// The lowest set slot at or after `from`.
    pub fn first_from(&self, from: usize) -> Option<usize> {
        (from..MAX_SLOTS).find(|&i| self.get(i))
    }

    pub fn to_abi(&self) -> abi::manul_bitmap {
        abi::manul_bitmap { w: self.0 }
    }
}
