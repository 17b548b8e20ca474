//! Delta transforms of a chunk against its base: XOR (the paper's BitX) and the
//! zigzag difference of order-preserving integer keys, symbolised for context coding.
//!
//! The difference transform maps every float to an integer key that sorts like the float
//! (`key(u) = u | SIGN` for positive, `!u` for negative), subtracts the base's key and
//! zigzags the result, so a small change in value is a small number even when it crosses
//! a binade or changes sign. Each number `z` becomes a symbol (`z` itself below 4, else its
//! bit length and the two bits below the leading one) plus the remaining low bits raw:
//! the symbols carry nearly all the information and are entropy coded with the base's
//! exponent as context, because the same update is many more ULPs for a small weight.

use super::CodecError;
use super::planes::load;
use super::rans::{BitReader, BitWriter};
use crate::object::DType;

/// Symbols, their contexts and the raw low bits of a chunk's difference.
pub struct Symbolised {
    /// One symbol per element.
    pub symbols: Vec<u8>,
    /// One context per element (derived from the base only).
    pub contexts: Vec<u8>,
    /// The low bits below each symbol's top three bits.
    pub raw_bits: Vec<u8>,
}

/// XORs `fine` with `base` (same length).
pub fn xor(fine: &[u8], base: &[u8]) -> Vec<u8> {
    fine.iter().zip(base).map(|(a, b)| a ^ b).collect()
}

/// Per-dtype constants of the difference transform.
#[derive(Clone, Copy)]
struct Keying {
    bits: u32,
    float: bool,
    mantissa: u32,
    exponent: u32,
}

impl Keying {
    fn of(dtype: DType) -> Keying {
        let bits = dtype.width() as u32 * 8;
        match dtype.float_layout() {
            Some(l) if l.exponent + l.mantissa + 1 == bits => Keying {
                bits,
                float: true,
                mantissa: l.mantissa,
                exponent: l.exponent,
            },
            _ => Keying {
                bits,
                float: false,
                mantissa: 0,
                exponent: 0,
            },
        }
    }

    #[inline(always)]
    fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits)
    }

    /// Order-preserving key, without branches: the sign bit selects which bits to flip.
    #[inline(always)]
    fn key(self, u: u64) -> u64 {
        if !self.float {
            return u;
        }
        let negative = (u >> (self.bits - 1)) & 1;
        u ^ ((1u64 << (self.bits - 1)) | (self.mask() * negative))
    }

    #[inline(always)]
    fn unkey(self, k: u64) -> u64 {
        if !self.float {
            return k;
        }
        let positive = (k >> (self.bits - 1)) & 1;
        k ^ ((1u64 << (self.bits - 1)) | (self.mask() * (1 - positive)))
    }

    #[inline(always)]
    fn zigzag(self, d: u64) -> u64 {
        let negative = (d >> (self.bits - 1)) & 1;
        ((d << 1) ^ (self.mask() * negative)) & self.mask()
    }

    #[inline(always)]
    fn unzigzag(self, z: u64) -> u64 {
        (z >> 1) ^ (self.mask() * (z & 1))
    }

    /// The base's exponent field, folded to one byte, as the coding context.
    #[inline(always)]
    fn context(self, base: u64) -> u8 {
        if !self.float {
            return 0;
        }
        let exp = (base >> self.mantissa) & ((1u64 << self.exponent) - 1);
        (exp >> self.exponent.saturating_sub(8)) as u8
    }
}

/// Symbol of `z` and the number of raw low bits that follow it: `z` below 8, else
/// `4·n + (z >> n)` where `n = bitlen(z) − 3`, so `z >> n` is the leading one and two more bits.
#[inline(always)]
fn symbolise(z: u64) -> (u8, u32) {
    let nbits = (64 - z.leading_zeros()).saturating_sub(3);
    ((4 * nbits as u64 + (z >> nbits)) as u8, nbits)
}

/// Inverse of [`symbolise`]: the leading bits of `z` and how many raw bits complete it.
#[inline(always)]
fn unsymbolise(sym: u8) -> (u64, u32) {
    let nbits = (sym as u32 >> 2).saturating_sub(1);
    (sym as u64 - 4 * nbits as u64, nbits)
}

/// Largest symbol a `bits`-bit word can produce.
fn max_symbol(bits: u32) -> u8 {
    symbolise(u64::MAX >> (64 - bits)).0
}

#[inline(always)]
fn push_bits(w: &mut BitWriter, value: u64, nbits: u32) {
    if nbits > 32 {
        w.push(value & 0xFFFF_FFFF, 32);
        w.push(value >> 32, nbits - 32);
    } else {
        w.push(value, nbits);
    }
}

#[inline(always)]
fn read_bits(r: &mut BitReader<'_>, nbits: u32) -> Result<u64, CodecError> {
    Ok(if nbits > 32 {
        let lo = r.read(32)?;
        lo | (r.read(nbits - 32)? << 32)
    } else {
        r.read(nbits)?
    })
}

/// Dispatches to a loop monomorphised for the element width.
macro_rules! by_width {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype.width() {
            1 => $f::<1>(Keying::of($dtype), $($arg),*),
            2 => $f::<2>(Keying::of($dtype), $($arg),*),
            4 => $f::<4>(Keying::of($dtype), $($arg),*),
            _ => $f::<8>(Keying::of($dtype), $($arg),*),
        }
    };
}

/// Symbolises the difference of `fine` against `base` (same length, `dtype` elements).
pub fn symbolise_diff(dtype: DType, fine: &[u8], base: &[u8]) -> Symbolised {
    by_width!(dtype, symbolise_words, fine, base)
}

fn symbolise_words<const W: usize>(k: Keying, fine: &[u8], base: &[u8]) -> Symbolised {
    let n = fine.len() / W;
    let mut symbols = vec![0u8; n];
    let mut contexts = vec![0u8; n];
    let mut bits = BitWriter::with_capacity(n / 2);
    let words = fine.chunks_exact(W).zip(base.chunks_exact(W));
    for ((f, b), (sym, ctx)) in words.zip(symbols.iter_mut().zip(contexts.iter_mut())) {
        let (f, b) = (load::<W>(f), load::<W>(b));
        let z = k.zigzag(k.key(f).wrapping_sub(k.key(b)) & k.mask());
        let (s, nbits) = symbolise(z);
        *sym = s;
        *ctx = k.context(b);
        push_bits(&mut bits, z, nbits);
    }
    Symbolised {
        symbols,
        contexts,
        raw_bits: bits.finish(),
    }
}

/// The contexts the decoder needs, computed from the base alone.
pub fn contexts(dtype: DType, base: &[u8]) -> Vec<u8> {
    by_width!(dtype, contexts_words, base)
}

fn contexts_words<const W: usize>(k: Keying, base: &[u8]) -> Vec<u8> {
    base.chunks_exact(W).map(|c| k.context(load::<W>(c))).collect()
}

/// Rebuilds the fine elements from decoded symbols, raw bits and the base.
pub fn unsymbolise_diff(
    dtype: DType,
    symbols: &[u8],
    raw_bits: &[u8],
    base: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    by_width!(dtype, unsymbolise_words, symbols, raw_bits, base, out)
}

fn unsymbolise_words<const W: usize>(
    k: Keying,
    symbols: &[u8],
    raw_bits: &[u8],
    base: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let limit = max_symbol(k.bits);
    if let Some(bad) = symbols.iter().find(|&&s| s > limit) {
        return Err(CodecError::Corrupt(format!("difference symbol {bad} out of range")));
    }
    let mut bits = BitReader::new(raw_bits);
    let start = out.len();
    out.resize(start + symbols.len() * W, 0);
    let words = out[start..].chunks_exact_mut(W).zip(base.chunks_exact(W));
    for ((o, b), &sym) in words.zip(symbols) {
        let (top, nbits) = unsymbolise(sym);
        let z = (top << nbits) | read_bits(&mut bits, nbits)?;
        let f = k.unkey(k.key(load::<W>(b)).wrapping_add(k.unzigzag(z)) & k.mask());
        o.copy_from_slice(&f.to_le_bytes()[..W]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(dtype: DType, fine: &[u8], base: &[u8]) -> Vec<u8> {
        let s = symbolise_diff(dtype, fine, base);
        assert_eq!(s.contexts, contexts(dtype, base));
        let mut out = Vec::new();
        unsymbolise_diff(dtype, &s.symbols, &s.raw_bits, base, &mut out).unwrap();
        out
    }

    proptest! {
        #[test]
        fn difference_round_trips_any_bits(which in 0usize..DType::ALL.len(), pairs in proptest::collection::vec(any::<(u64, u64)>(), 0..64)) {
            let dtype = DType::ALL[which];
            let w = dtype.width();
            let fine: Vec<u8> = pairs.iter().flat_map(|p| p.0.to_le_bytes()[..w].to_vec()).collect();
            let base: Vec<u8> = pairs.iter().flat_map(|p| p.1.to_le_bytes()[..w].to_vec()).collect();
            prop_assert_eq!(round_trip(dtype, &fine, &base), fine);
        }
    }

    #[test]
    fn special_floats_round_trip() {
        let specials = [
            0u32,
            0x8000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0001,
            0xFFFF_FFFF,
            1,
            0x8000_0001,
        ];
        let fine: Vec<u8> = specials.iter().flat_map(|v| v.to_le_bytes()).collect();
        let base: Vec<u8> = specials.iter().rev().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(round_trip(DType::F32, &fine, &base), fine);
    }

    #[test]
    fn symbols_invert_and_stay_in_range() {
        for z in (0..5000u64).chain([u64::MAX, u64::MAX >> 1, 1 << 40, 65535]) {
            let (sym, nbits) = symbolise(z);
            let (top, n) = unsymbolise(sym);
            assert_eq!(n, nbits);
            assert_eq!((top << n) | (z & ((1u64 << n) - 1)), z, "z={z}");
        }
        assert_eq!(max_symbol(16), 59);
        assert_eq!(max_symbol(64), 251);
    }

    #[test]
    fn small_changes_become_small_symbols() {
        // One ULP up and one down across zero: both tiny differences.
        let fine: Vec<u8> = [0x3F81u16, 0x8001].iter().flat_map(|v| v.to_le_bytes()).collect();
        let base: Vec<u8> = [0x3F80u16, 0x0000].iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = symbolise_diff(DType::BF16, &fine, &base);
        assert!(s.symbols.iter().all(|&x| x < 4), "{:?}", s.symbols);
        assert!(s.raw_bits.iter().all(|&b| b == 0));
    }
}
