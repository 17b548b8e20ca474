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

    #[inline]
    fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits)
    }

    #[inline]
    fn sign(self) -> u64 {
        1u64 << (self.bits - 1)
    }

    #[inline]
    fn key(self, u: u64) -> u64 {
        if !self.float {
            u
        } else if u & self.sign() != 0 {
            !u & self.mask()
        } else {
            u | self.sign()
        }
    }

    #[inline]
    fn unkey(self, k: u64) -> u64 {
        if !self.float {
            k
        } else if k & self.sign() != 0 {
            k & !self.sign()
        } else {
            !k & self.mask()
        }
    }

    #[inline]
    fn zigzag(self, d: u64) -> u64 {
        let neg = if d & self.sign() != 0 { self.mask() } else { 0 };
        ((d << 1) & self.mask()) ^ neg
    }

    #[inline]
    fn unzigzag(self, z: u64) -> u64 {
        let neg = if z & 1 != 0 { self.mask() } else { 0 };
        (z >> 1) ^ neg
    }

    /// The base's exponent field, folded to one byte, as the coding context.
    #[inline]
    fn context(self, base: u64) -> u8 {
        if !self.float {
            return 0;
        }
        let exp = (base >> self.mantissa) & ((1u64 << self.exponent) - 1);
        (exp >> self.exponent.saturating_sub(8)) as u8
    }
}

#[inline]
fn symbolise(z: u64) -> (u8, u32) {
    if z < 4 {
        return (z as u8, 0);
    }
    let nbits = 64 - z.leading_zeros() - 3;
    (4 + (nbits * 4) as u8 + ((z >> nbits) & 3) as u8, nbits)
}

#[inline]
fn push_bits(w: &mut BitWriter, value: u64, nbits: u32) {
    if nbits > 32 {
        w.push(value & 0xFFFF_FFFF, 32);
        w.push(value >> 32, nbits - 32);
    } else if nbits > 0 {
        w.push(value, nbits);
    }
}

#[inline]
fn read_bits(r: &mut BitReader<'_>, nbits: u32) -> Result<u64, CodecError> {
    Ok(if nbits > 32 {
        let lo = r.read(32)?;
        lo | (r.read(nbits - 32)? << 32)
    } else if nbits > 0 {
        r.read(nbits)?
    } else {
        0
    })
}

/// Symbolises the difference of `fine` against `base` (same length, `dtype` elements).
pub fn symbolise_diff(dtype: DType, fine: &[u8], base: &[u8]) -> Symbolised {
    match dtype.width() {
        1 => symbolise_words::<1>(Keying::of(dtype), fine, base),
        2 => symbolise_words::<2>(Keying::of(dtype), fine, base),
        4 => symbolise_words::<4>(Keying::of(dtype), fine, base),
        _ => symbolise_words::<8>(Keying::of(dtype), fine, base),
    }
}

fn symbolise_words<const W: usize>(k: Keying, fine: &[u8], base: &[u8]) -> Symbolised {
    let n = fine.len() / W;
    let mut symbols = Vec::with_capacity(n);
    let mut contexts = Vec::with_capacity(n);
    let mut bits = BitWriter::with_capacity(n / 2);
    for (f, b) in fine.chunks_exact(W).zip(base.chunks_exact(W)) {
        let (f, b) = (load::<W>(f), load::<W>(b));
        let z = k.zigzag(k.key(f).wrapping_sub(k.key(b)) & k.mask());
        let (sym, nbits) = symbolise(z);
        symbols.push(sym);
        contexts.push(k.context(b));
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
    fn of_words<const W: usize>(k: Keying, base: &[u8]) -> Vec<u8> {
        base.chunks_exact(W).map(|c| k.context(load::<W>(c))).collect()
    }
    let k = Keying::of(dtype);
    match dtype.width() {
        1 => of_words::<1>(k, base),
        2 => of_words::<2>(k, base),
        4 => of_words::<4>(k, base),
        _ => of_words::<8>(k, base),
    }
}

/// Rebuilds the fine elements from decoded symbols, raw bits and the base.
pub fn unsymbolise_diff(
    dtype: DType,
    symbols: &[u8],
    raw_bits: &[u8],
    base: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    match dtype.width() {
        1 => unsymbolise_words::<1>(Keying::of(dtype), symbols, raw_bits, base, out),
        2 => unsymbolise_words::<2>(Keying::of(dtype), symbols, raw_bits, base, out),
        4 => unsymbolise_words::<4>(Keying::of(dtype), symbols, raw_bits, base, out),
        _ => unsymbolise_words::<8>(Keying::of(dtype), symbols, raw_bits, base, out),
    }
}

fn unsymbolise_words<const W: usize>(
    k: Keying,
    symbols: &[u8],
    raw_bits: &[u8],
    base: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let max_symbol = 4 + (k.bits - 3) * 4 + 3;
    let mut bits = BitReader::new(raw_bits);
    out.reserve(base.len());
    for (&sym, b) in symbols.iter().zip(base.chunks_exact(W)) {
        let z = if sym < 4 {
            sym as u64
        } else if sym as u32 > max_symbol {
            return Err(CodecError::Corrupt(format!("difference symbol {sym} out of range")));
        } else {
            let t = (sym - 4) as u32;
            let nbits = t / 4;
            ((4 | (t & 3) as u64) << nbits) | read_bits(&mut bits, nbits)?
        };
        let b = load::<W>(b);
        let f = k.unkey(k.key(b).wrapping_add(k.unzigzag(z)) & k.mask());
        out.extend_from_slice(&f.to_le_bytes()[..W]);
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
    fn small_changes_become_small_symbols() {
        // One ULP up and one down across zero: both tiny differences.
        let fine: Vec<u8> = [0x3F81u16, 0x8001].iter().flat_map(|v| v.to_le_bytes()).collect();
        let base: Vec<u8> = [0x3F80u16, 0x0000].iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = symbolise_diff(DType::BF16, &fine, &base);
        assert!(s.symbols.iter().all(|&x| x < 4), "{:?}", s.symbols);
        assert!(s.raw_bits.iter().all(|&b| b == 0));
    }
}
