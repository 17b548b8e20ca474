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

#[cfg(target_arch = "x86_64")]
mod avx512;

use super::CodecError;
use super::planes::load;
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

/// The difference transform for one element layout, fixed at compile time so every mask
/// and shift is a constant in the hot loops: `BITS` per element, `FLOAT` for IEEE-style
/// sign-magnitude floats with `MANT` mantissa and `EXP` exponent bits.
#[derive(Clone, Copy)]
struct Keying<const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>;

impl<const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32> Keying<BITS, FLOAT, MANT, EXP> {
    const MASK: u64 = u64::MAX >> (64 - BITS);
    const SIGN: u64 = 1 << (BITS - 1);

    /// Order-preserving key, without branches: the sign bit selects which bits to flip.
    #[inline(always)]
    fn key(u: u64) -> u64 {
        if !FLOAT {
            return u;
        }
        let negative = (u >> (BITS - 1)) & 1;
        u ^ (Self::SIGN | (Self::MASK * negative))
    }

    #[inline(always)]
    fn zigzag(d: u64) -> u64 {
        let negative = (d >> (BITS - 1)) & 1;
        ((d << 1) ^ (Self::MASK * negative)) & Self::MASK
    }

    /// The base's exponent field, folded to one byte, as the coding context.
    #[inline(always)]
    fn context(base: u64) -> u8 {
        if !FLOAT {
            return 0;
        }
        let exp = (base >> MANT) & ((1u64 << EXP) - 1);
        (exp >> EXP.saturating_sub(8)) as u8
    }

    /// The base's three highest mantissa bits: with decoupled weight decay, how many ULPs a
    /// weight moves depends on where in its binade it sits.
    #[inline(always)]
    fn high_mantissa(base: u64) -> u8 {
        if !FLOAT {
            return 0;
        }
        ((base >> MANT.saturating_sub(3)) & 7) as u8
    }

    /// `z` of each element: the zigzagged difference of keys.
    #[inline(always)]
    fn diff(fine: u64, base: u64) -> u64 {
        Self::zigzag(Self::key(fine).wrapping_sub(Self::key(base)) & Self::MASK)
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

/// Packs the raw low bits LSB-first into little-endian 64-bit words (the last word cut to
/// its used bytes). Specialised here because it runs once per element.
struct RawBits {
    out: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl RawBits {
    fn with_capacity(bytes: usize) -> RawBits {
        RawBits { out: Vec::with_capacity(bytes), acc: 0, filled: 0 }
    }

    /// Appends `value`, which must be below `2^nbits`, `nbits <= 61`.
    #[inline(always)]
    fn push(&mut self, value: u64, nbits: u32) {
        self.acc |= value << self.filled;
        self.filled += nbits;
        if self.filled >= 64 {
            self.out.extend_from_slice(&self.acc.to_le_bytes());
            self.filled -= 64;
            // The bits of `value` that did not fit (none when it ended exactly on the word).
            self.acc = value >> (nbits - self.filled);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let tail = self.filled.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..tail]);
        self.out
    }
}

/// Reads what [`RawBits`] wrote.
struct RawBitsReader<'a> {
    data: &'a [u8],
    /// Where `data` starts in the whole stream, in bytes.
    origin: usize,
    next: usize,
    acc: u64,
    avail: u32,
}

impl<'a> RawBitsReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        RawBitsReader { data, origin: 0, next: 0, acc: 0, avail: 0 }
    }

    /// A reader starting `bit` bits into `data`.
    fn at(data: &'a [u8], bit: usize) -> Self {
        let origin = bit / 8;
        let mut reader = RawBitsReader { origin, ..RawBitsReader::new(data.get(origin..).unwrap_or_default()) };
        // Past the end, the first read fails as it should.
        let _ = reader.read((bit % 8) as u32);
        reader
    }

    /// Bits read from the start of the whole stream.
    fn position(&self) -> usize {
        8 * (self.origin + self.next) - self.avail as usize
    }

    #[inline(always)]
    fn refill(&mut self) {
        if let Some(bytes) = self.data.get(self.next..self.next + 8) {
            // Take whole bytes that fit above the bits still held.
            let take = (63 - self.avail) / 8;
            if take == 0 {
                return;
            }
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            let w = u64::from_le_bytes(word) & (u64::MAX >> (64 - 8 * take));
            self.acc |= w << self.avail;
            self.avail += 8 * take;
            self.next += take as usize;
        } else {
            while self.avail <= 56 && self.next < self.data.len() {
                self.acc |= (self.data[self.next] as u64) << self.avail;
                self.avail += 8;
                self.next += 1;
            }
        }
    }

    /// Reads `nbits <= 61` bits.
    #[inline(always)]
    fn read(&mut self, nbits: u32) -> Result<u64, CodecError> {
        if nbits == 0 {
            return Ok(0);
        }
        if self.avail < nbits {
            self.refill();
            if self.avail < nbits {
                return self.read_split(nbits);
            }
        }
        let v = self.acc & (u64::MAX >> (64 - nbits));
        self.acc = self.acc.checked_shr(nbits).unwrap_or(0);
        self.avail -= nbits;
        Ok(v)
    }

    /// Reads more bits than one refill can hold (only for 64-bit elements).
    fn read_split(&mut self, nbits: u32) -> Result<u64, CodecError> {
        if nbits <= 32 {
            return Err(CodecError::Corrupt("raw bit stream ended early".into()));
        }
        let lo = self.read(32)?;
        Ok(lo | (self.read(nbits - 32)? << 32))
    }
}

/// Calls `$f::<W, BITS, FLOAT, MANT, EXP>` for the dtype's layout.
macro_rules! by_layout {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match ($dtype.width(), $dtype.float_layout()) {
            (2, Some(l)) if l.mantissa == 7 => $f::<2, 16, true, 7, 8>($($arg),*),
            (2, Some(_)) => $f::<2, 16, true, 10, 5>($($arg),*),
            (4, Some(_)) => $f::<4, 32, true, 23, 8>($($arg),*),
            (8, Some(_)) => $f::<8, 64, true, 52, 11>($($arg),*),
            (1, Some(l)) if l.mantissa == 3 => $f::<1, 8, true, 3, 4>($($arg),*),
            (1, Some(_)) => $f::<1, 8, true, 2, 5>($($arg),*),
            (1, None) => $f::<1, 8, false, 0, 0>($($arg),*),
            (2, None) => $f::<2, 16, false, 0, 0>($($arg),*),
            (4, None) => $f::<4, 32, false, 0, 0>($($arg),*),
            _ => $f::<8, 64, false, 0, 0>($($arg),*),
        }
    };
}

/// Symbolises the difference of `fine` against `base` (same length, `dtype` elements).
pub fn symbolise_diff(dtype: DType, fine: &[u8], base: &[u8]) -> Symbolised {
    by_layout!(dtype, symbolise_words, fine, base)
}

fn symbolise_words<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    fine: &[u8],
    base: &[u8],
) -> Symbolised {
    type K<const B: u32, const F: bool, const M: u32, const E: u32> = Keying<B, F, M, E>;
    if W == 2 || W == 4 {
        return symbolise_narrow::<W, BITS, FLOAT, MANT, EXP>(fine, base);
    }
    let n = fine.len() / W;
    let mut symbols = vec![0u8; n];
    let mut contexts = vec![0u8; n];
    let mut bits = RawBits::with_capacity(n / 2);
    let words = fine.chunks_exact(W).zip(base.chunks_exact(W));
    for ((f, b), (sym, ctx)) in words.zip(symbols.iter_mut().zip(contexts.iter_mut())) {
        let b = load::<W>(b);
        let z = K::<BITS, FLOAT, MANT, EXP>::diff(load::<W>(f), b);
        let (s, nbits) = symbolise(z);
        *sym = s;
        *ctx = K::<BITS, FLOAT, MANT, EXP>::context(b);
        // Most differences are small enough to need no raw bits: skip the serial bit packing.
        if nbits > 0 {
            bits.push(z & ((1u64 << nbits) - 1), nbits);
        }
    }
    Symbolised { symbols, contexts, raw_bits: bits.finish() }
}

/// [`symbolise_words`] for 16- and 32-bit elements (BF16, FP16, FP32), the hot cases, in two
/// passes: symbols and contexts per element in 32-bit arithmetic, which vectorises, then the
/// raw bits of the elements whose symbols say they have some.
fn symbolise_narrow<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    fine: &[u8],
    base: &[u8],
) -> Symbolised {
    let (fine, base) = (fine.as_chunks::<W>().0, base.as_chunks::<W>().0);
    let (symbols, contexts) = narrow_symbols::<W, BITS, FLOAT, MANT, EXP>(fine, base);
    let mut bits = RawBits::with_capacity(symbols.len() / 8);
    for_each_large(&symbols, |i, sym| {
        let nbits = unsymbolise(sym).1;
        bits.push(u64::from(narrow_z::<W, FLOAT>(&fine[i], &base[i])) & ((1u64 << nbits) - 1), nbits);
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    Symbolised { symbols, contexts, raw_bits: bits.finish() }
}

/// The symbol and the context of every element, for 16- and 32-bit elements.
#[multiversion::multiversion(targets = "simd")]
fn narrow_symbols<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    fine: &[[u8; W]],
    base: &[[u8; W]],
) -> (Vec<u8>, Vec<u8>) {
    let symbol = |z: u32| if W == 2 { symbol_of_short(z) } else { symbol_of_word(z) };
    let symbols = fine.iter().zip(base).map(|(f, b)| symbol(narrow_z::<W, FLOAT>(f, b))).collect();
    let contexts = base.iter().map(|b| Keying::<BITS, FLOAT, MANT, EXP>::context(load::<W>(b))).collect();
    (symbols, contexts)
}

/// [`Keying::diff`] for elements of at most 32 bits, in 32-bit arithmetic.
#[inline(always)]
fn narrow_z<const W: usize, const FLOAT: bool>(fine: &[u8; W], base: &[u8; W]) -> u32 {
    let top = 8 * W as u32 - 1;
    let mask = u32::MAX >> (31 - top);
    let key = |u: u32| if FLOAT { u ^ ((1 << top) | (0u32.wrapping_sub(u >> top) & mask)) } else { u };
    let d = key(load::<W>(fine) as u32).wrapping_sub(key(load::<W>(base) as u32)) & mask;
    ((d << 1) ^ (0u32.wrapping_sub(d >> top) & mask)) & mask
}

/// [`symbolise`]'s symbol for `z < 2^24`, from the exponent and top mantissa bits of `z` as an
/// `f32` (exact there), so that it vectorises: no bit scan, no variable shift.
#[inline(always)]
fn symbol_of_short(z: u32) -> u8 {
    let bits = (z as f32).to_bits();
    // For z >= 8: 4 * (bit length - 2) plus the two bits below the leading one.
    let large = ((bits >> 23) as u8).wrapping_sub(128).wrapping_mul(4).wrapping_add(((bits >> 21) & 3) as u8);
    if z < 8 { z as u8 } else { large }
}

/// [`symbol_of_short`] for any 32-bit `z`, through an `f64` built from its bits (exact, and
/// without a conversion instruction that older vector units lack).
#[inline(always)]
fn symbol_of_word(z: u32) -> u8 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    let bits = (f64::from_bits(TWO_52.to_bits() | u64::from(z)) - TWO_52).to_bits();
    // The exponent field is 1023 + bit length - 1.
    let large = ((bits >> 52) as u32).wrapping_sub(1024).wrapping_mul(4).wrapping_add(((bits >> 50) & 3) as u32);
    if z < 8 { z as u8 } else { large as u8 }
}

/// Calls `f(i, symbol)` for every element whose symbol is 8 or more (it has raw bits), in
/// order. A branch-free mask of 64 symbols at a time leads to them, so elements without raw
/// bits cost next to nothing.
fn for_each_large<E>(symbols: &[u8], mut f: impl FnMut(usize, u8) -> Result<(), E>) -> Result<(), E> {
    for (k, block) in symbols.chunks(64).enumerate() {
        let mut large = large_mask(block);
        while large != 0 {
            let j = large.trailing_zeros() as usize;
            large &= large - 1;
            f(64 * k + j, block[j])?;
        }
    }
    Ok(())
}

/// The contexts the decoder needs, computed from the base alone.
pub fn contexts(dtype: DType, base: &[u8]) -> Vec<u8> {
    let mut out = vec![0; base.len() / dtype.width()];
    contexts_into(dtype, base, &mut out);
    out
}

/// [`contexts`] into `out`, which holds one per element of `base`.
pub fn contexts_into(dtype: DType, base: &[u8], out: &mut [u8]) {
    by_layout!(dtype, contexts_words, base, out)
}

#[multiversion::multiversion(targets = "simd")]
fn contexts_words<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    base: &[u8],
    out: &mut [u8],
) {
    for (o, c) in out.iter_mut().zip(base.as_chunks::<W>().0) {
        *o = Keying::<BITS, FLOAT, MANT, EXP>::context(load::<W>(c));
    }
}

/// Rebuilds the fine elements from decoded symbols, raw bits and the base.
pub fn unsymbolise_diff(dtype: DType, symbols: &[u8], raw_bits: &[u8], base: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut rebuild = DiffRebuild::new(dtype, raw_bits, symbols.len(), true);
    rebuild.part(symbols, base)?;
    Ok(rebuild.finish())
}

/// The rebuild of a chunk's difference (codec `bitx-diff-ctx`) a part at a time, each part's
/// symbols used while they are in cache (see [`crate::codec::rans::Decoder`]).
pub struct DiffRebuild<'r> {
    dtype: DType,
    raw_bits: &'r [u8],
    /// Raw bits taken by the parts so far.
    bit: usize,
    out: Vec<u8>,
    /// Whether `out` gathers every part, or holds the last one only.
    keep: bool,
}

impl<'r> DiffRebuild<'r> {
    /// A rebuild of elements of `dtype` whose raw bits are `raw_bits`, gathering them all
    /// (`keep`, room made for `capacity` elements) or holding one part at a time (room for a
    /// part of `capacity`).
    pub fn new(dtype: DType, raw_bits: &'r [u8], capacity: usize, keep: bool) -> Self {
        let out = Vec::with_capacity(capacity.saturating_mul(dtype.width()));
        DiffRebuild { dtype, raw_bits, bit: 0, out, keep }
    }

    /// Rebuilds the next elements, one per symbol, on `base` (as many elements); returns
    /// their bytes.
    pub fn part(&mut self, symbols: &[u8], base: &[u8]) -> Result<&[u8], CodecError> {
        if !self.keep {
            self.out.clear();
        }
        let from = self.out.len();
        self.bit = by_layout!(self.dtype, unsymbolise_words, symbols, self.raw_bits, self.bit, base, &mut self.out)?;
        Ok(&self.out[from..])
    }

    /// The elements rebuilt (gathered ones; with `keep` false, the last part).
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Appends the elements of `symbols` on `base` to `out`, their raw bits starting `bit` bits
/// into `raw_bits`; returns where they end.
fn unsymbolise_words<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    symbols: &[u8],
    raw_bits: &[u8],
    bit: usize,
    base: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    check_symbols(symbols, BITS)?;
    let (done, bit, _) = rebuild_vectors::<W, FLOAT>(symbols, raw_bits, bit, base, None, out);
    let mut bits = RawBitsReader::at(raw_bits, bit);
    rebuild::<W, FLOAT>(
        symbols.get(done..).unwrap_or_default(),
        base.get(done * W..).unwrap_or_default(),
        #[inline(always)]
        |sym| raw_z(sym, &mut bits),
        out,
    )?;
    Ok(bits.position())
}

/// `z` of an element with raw bits (codec `bitx-diff-ctx`): its symbol's leading bits, then
/// the next raw bits.
#[inline(always)]
fn raw_z(sym: u8, bits: &mut RawBitsReader<'_>) -> Result<u64, CodecError> {
    let (top, nbits) = unsymbolise(sym);
    Ok((top << nbits) | bits.read(nbits)?)
}

/// The start of a 16- or 32-bit rebuild in vectors, where the CPU has them (see
/// [`avx512::rebuild`]), appended to `out`: how many elements, and where their raw bits end.
/// With `lows` (codec `bitx-diff-low`), also how many low bytes it took.
fn rebuild_vectors<const W: usize, const FLOAT: bool>(
    symbols: &[u8],
    raw_bits: &[u8],
    bit: usize,
    base: &[u8],
    lows: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> (usize, usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if (W == 2 || W == 4) && avx512::available() {
        if W == 2 && lows.is_none() {
            // SAFETY: the CPU has the features the function is compiled for.
            let (done, bit) = unsafe { avx512::rebuild_16::<FLOAT>(symbols, raw_bits, bit, base, out) };
            return (done, bit, 0);
        }
        let mut lows = lows.map(|bytes| avx512::Lows { bytes, used: 0 });
        // SAFETY: the CPU has the features the function is compiled for.
        let (done, bit) = unsafe { avx512::rebuild::<W, FLOAT>(symbols, raw_bits, bit, base, lows.as_mut(), out) };
        return (done, bit, lows.map_or(0, |l| l.used));
    }
    (0, bit, 0)
}

/// Rebuilds the fine elements from their symbols and the base, for `W`-byte elements.
/// `large_z` gives `z` of each element with raw bits (symbol 8 and up, about one in twelve in
/// real fine-tunes), in element order.
fn rebuild<const W: usize, const FLOAT: bool>(
    symbols: &[u8],
    base: &[u8],
    large_z: impl FnMut(u8) -> Result<u64, CodecError>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    match W {
        1 => rebuild_u8::<FLOAT>(symbols, base, large_z, out),
        2 => rebuild_u16::<FLOAT>(symbols, base, large_z, out),
        4 => rebuild_u32::<FLOAT>(symbols, base, large_z, out),
        _ => rebuild_u64::<FLOAT>(symbols, base, large_z, out),
    }
}

/// [`rebuild`] per element in its native width, 64 elements at a time so that each block's
/// `z` stays in registers or L1 and the output is written once, in order: `z` is the symbol
/// itself below 8, else `large_z`'s; the fine element is the base plus the unzigzagged `z`,
/// in order-preserving keys for floats. Compiled for each x86-64 level too (the portable
/// build has only SSE2), chosen at run time.
macro_rules! rebuild_words {
    ($name:ident, $t:ty) => {
        #[multiversion::multiversion(targets = "simd")]
        fn $name<const FLOAT: bool>(
            symbols: &[u8],
            base: &[u8],
            mut large_z: impl FnMut(u8) -> Result<u64, CodecError>,
            out: &mut Vec<u8>,
        ) -> Result<(), CodecError> {
            const W: usize = std::mem::size_of::<$t>();
            const SIGN: $t = 1 << (<$t>::BITS - 1);
            let key = |u: $t| if FLOAT { u ^ (SIGN | (0 as $t).wrapping_sub(u >> (<$t>::BITS - 1))) } else { u };
            let unkey = |k: $t| if FLOAT { k ^ (SIGN | (k >> (<$t>::BITS - 1)).wrapping_sub(1)) } else { k };
            let mut fine = [[0u8; W]; 64];
            for (block, bases) in symbols.chunks(64).zip(base.as_chunks::<W>().0.chunks(64)) {
                let mut z = [0 as $t; 64];
                z.iter_mut().zip(block).for_each(|(z, &s)| *z = <$t>::from(s));
                let mut large = large_mask(block);
                while large != 0 {
                    let j = large.trailing_zeros() as usize;
                    large &= large - 1;
                    // Valid symbols give a `z` that fits; invalid ones were refused before.
                    z[j] = large_z(block[j])? as $t;
                }
                for ((f, &z), b) in fine.iter_mut().zip(&z).zip(bases) {
                    let d = (z >> 1) ^ (0 as $t).wrapping_sub(z & 1);
                    *f = unkey(key(<$t>::from_le_bytes(*b)).wrapping_add(d)).to_le_bytes();
                }
                out.extend_from_slice(fine[..bases.len()].as_flattened());
            }
            Ok(())
        }
    };
}
rebuild_words!(rebuild_u8, u8);
rebuild_words!(rebuild_u16, u16);
rebuild_words!(rebuild_u32, u32);
rebuild_words!(rebuild_u64, u64);

/// Bit `j` set if symbol `j` of a block of at most 64 is 8 or more (has raw bits).
#[inline(always)]
fn large_mask(block: &[u8]) -> u64 {
    let mask = |block: &[u8; 64]| block.as_chunks::<8>().0.iter().rev().fold(0, |m, w| m << 8 | large_symbols(w));
    match <&[u8; 64]>::try_from(block) {
        Ok(full) => mask(full),
        Err(_) => mask(&std::array::from_fn(|i| block.get(i).copied().unwrap_or(0))),
    }
}

/// Bit `j` set if symbol `j` of the eight is 8 or more (has raw bits), without branches.
#[inline(always)]
fn large_symbols(symbols: &[u8; 8]) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of 8 and up has a bit of 0xF8 set; adding 0x7F to its low seven bits carries into
    // its high bit exactly when one of those is set.
    let w = u64::from_le_bytes(*symbols) & 0xF8F8_F8F8_F8F8_F8F8;
    let high = ((w & !HIGH).wrapping_add(!HIGH) | w) & HIGH;
    // Gathers the eight high bits into the top byte (the products never overlap).
    (high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// The difference with the top byte of each element's raw bits split off (codec
/// `bitx-diff-low`): the symbols as in [`Symbolised`], one "low" byte per element that has raw
/// bits (its highest raw bits, at most 8), entropy coded by symbol and the base's high mantissa
/// bits, and the remaining raw bits packed.
pub struct SplitLow {
    /// One symbol per element.
    pub symbols: Vec<u8>,
    /// One context per element (derived from the base only).
    pub contexts: Vec<u8>,
    /// One byte per element with raw bits.
    pub lows: Vec<u8>,
    /// The context of each low byte (see [`low_contexts`]).
    pub low_contexts: Vec<u8>,
    /// The raw bits below each low byte.
    pub rest_bits: Vec<u8>,
}

/// Raw bits of an element that go into its low byte.
#[inline(always)]
fn low_len(nbits: u32) -> u32 {
    nbits.min(8)
}

/// Context of a low byte: the element's symbol (8 and up, as it has raw bits) and the base's
/// high mantissa bits, folded into one byte.
#[inline(always)]
fn low_context(sym: u8, high_mantissa: u8) -> u8 {
    (sym.saturating_sub(8).min(31) << 3) | high_mantissa
}

/// Splits the difference of `fine` against `base` for `bitx-diff-low`.
pub fn symbolise_diff_low(dtype: DType, fine: &[u8], base: &[u8]) -> SplitLow {
    by_layout!(dtype, symbolise_low_words, fine, base)
}

fn symbolise_low_words<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    fine: &[u8],
    base: &[u8],
) -> SplitLow {
    type K<const B: u32, const F: bool, const M: u32, const E: u32> = Keying<B, F, M, E>;
    if W == 2 || W == 4 {
        return symbolise_low_narrow::<W, BITS, FLOAT, MANT, EXP>(fine, base);
    }
    let n = fine.len() / W;
    let mut out = SplitLow {
        symbols: Vec::with_capacity(n),
        contexts: Vec::with_capacity(n),
        lows: Vec::new(),
        low_contexts: Vec::new(),
        rest_bits: Vec::new(),
    };
    let mut rest = RawBits::with_capacity(n / 4);
    for (f, b) in fine.chunks_exact(W).zip(base.chunks_exact(W)) {
        let b = load::<W>(b);
        let z = K::<BITS, FLOAT, MANT, EXP>::diff(load::<W>(f), b);
        let (sym, nbits) = symbolise(z);
        out.symbols.push(sym);
        out.contexts.push(K::<BITS, FLOAT, MANT, EXP>::context(b));
        if nbits > 0 {
            push_low::<BITS, FLOAT, MANT, EXP>(&mut out, &mut rest, sym, z, b);
        }
    }
    out.rest_bits = rest.finish();
    out
}

/// [`symbolise_low_words`] for 16- and 32-bit elements, in the two passes of
/// [`symbolise_narrow`].
fn symbolise_low_narrow<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    fine: &[u8],
    base: &[u8],
) -> SplitLow {
    let (fine, base) = (fine.as_chunks::<W>().0, base.as_chunks::<W>().0);
    let (symbols, contexts) = narrow_symbols::<W, BITS, FLOAT, MANT, EXP>(fine, base);
    let mut out =
        SplitLow { symbols: Vec::new(), contexts, lows: Vec::new(), low_contexts: Vec::new(), rest_bits: Vec::new() };
    let mut rest = RawBits::with_capacity(symbols.len() / 16);
    for_each_large(&symbols, |i, sym| {
        let z = u64::from(narrow_z::<W, FLOAT>(&fine[i], &base[i]));
        push_low::<BITS, FLOAT, MANT, EXP>(&mut out, &mut rest, sym, z, load::<W>(&base[i]));
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    out.symbols = symbols;
    out.rest_bits = rest.finish();
    out
}

/// Splits the raw bits of an element (symbol `sym` of 8 and up, difference `z`, base word `b`)
/// into its low byte, that byte's context and the rest.
#[inline(always)]
fn push_low<const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    out: &mut SplitLow,
    rest: &mut RawBits,
    sym: u8,
    z: u64,
    b: u64,
) {
    let nbits = unsymbolise(sym).1;
    let below = nbits - low_len(nbits);
    out.lows.push(((z & ((1u64 << nbits) - 1)) >> below) as u8);
    out.low_contexts.push(low_context(sym, Keying::<BITS, FLOAT, MANT, EXP>::high_mantissa(b)));
    if below > 0 {
        rest.push(z & ((1u64 << below) - 1), below);
    }
}

/// The contexts of the low bytes, from the decoded symbols and the base.
pub fn low_contexts(dtype: DType, symbols: &[u8], base: &[u8]) -> Vec<u8> {
    by_layout!(dtype, low_contexts_words, symbols, base)
}

fn low_contexts_words<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    symbols: &[u8],
    base: &[u8],
) -> Vec<u8> {
    // Every element's context is written and kept only where the element has raw bits
    // (symbol 8 and up): no branch to mispredict, and no vector growing as it goes.
    let mut out = vec![0u8; symbols.len()];
    let mut kept = 0;
    for (&s, b) in symbols.iter().zip(base.as_chunks::<W>().0) {
        if let Some(slot) = out.get_mut(kept) {
            *slot = low_context(s, Keying::<BITS, FLOAT, MANT, EXP>::high_mantissa(load::<W>(b)));
        }
        kept += usize::from(s >= 8);
    }
    out.truncate(kept);
    out
}

/// Rebuilds the fine elements from symbols, low bytes, the remaining raw bits and the base.
pub fn unsymbolise_diff_low(
    dtype: DType,
    symbols: &[u8],
    lows: &[u8],
    rest_bits: &[u8],
    base: &[u8],
) -> Result<Vec<u8>, CodecError> {
    by_layout!(dtype, unsymbolise_low_words, symbols, lows, rest_bits, base)
}

fn unsymbolise_low_words<const W: usize, const BITS: u32, const FLOAT: bool, const MANT: u32, const EXP: u32>(
    symbols: &[u8],
    lows: &[u8],
    rest_bits: &[u8],
    base: &[u8],
) -> Result<Vec<u8>, CodecError> {
    check_symbols(symbols, BITS)?;
    let mut out = Vec::with_capacity(symbols.len() * W);
    let (done, bit, used) = rebuild_vectors::<W, FLOAT>(symbols, rest_bits, 0, base, Some(lows), &mut out);
    let mut bits = RawBitsReader::at(rest_bits, bit);
    let mut lows = lows.get(used..).unwrap_or_default().iter();
    rebuild::<W, FLOAT>(
        symbols.get(done..).unwrap_or_default(),
        base.get(done * W..).unwrap_or_default(),
        #[inline(always)]
        |sym| low_z(sym, &mut lows, &mut bits),
        &mut out,
    )?;
    if lows.next().is_some() {
        return Err(CodecError::Corrupt("more low bytes than elements with raw bits".into()));
    }
    Ok(out)
}

/// `z` of an element with raw bits (codec `bitx-diff-low`): its symbol's leading bits, its
/// low byte (the next one), then the raw bits below it.
#[inline(always)]
fn low_z(sym: u8, lows: &mut std::slice::Iter<'_, u8>, bits: &mut RawBitsReader<'_>) -> Result<u64, CodecError> {
    let (top, nbits) = unsymbolise(sym);
    let below = nbits - low_len(nbits);
    let low = u64::from(*lows.next().ok_or_else(|| CodecError::Corrupt("too few low bytes".into()))?);
    if low >> low_len(nbits) != 0 {
        return Err(CodecError::Corrupt(format!("low byte {low} wider than {nbits} bits")));
    }
    Ok((top << nbits) | (low << below) | bits.read(below)?)
}

/// Refuses symbols that no `bits`-bit difference produces. A maximum rather than a search:
/// it vectorises.
#[multiversion::multiversion(targets = "simd")]
fn check_symbols(symbols: &[u8], bits: u32) -> Result<(), CodecError> {
    let largest = symbols.iter().fold(0, |m, &s| m.max(s));
    if largest > max_symbol(bits) {
        return Err(CodecError::Corrupt(format!("difference symbol {largest} out of range")));
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
        unsymbolise_diff(dtype, &s.symbols, &s.raw_bits, base).unwrap()
    }

    /// The rebuild without the vector path, as a CPU without AVX-512 runs it; with `lows`,
    /// that of codec `bitx-diff-low`.
    fn scalar_unsymbolise(
        dtype: DType,
        symbols: &[u8],
        lows: Option<&[u8]>,
        raw_bits: &[u8],
        base: &[u8],
    ) -> Result<Vec<u8>, CodecError> {
        let mut bits = RawBitsReader::new(raw_bits);
        let mut low_bytes = lows.unwrap_or_default().iter();
        let large_z = |sym| match lows {
            Some(_) => low_z(sym, &mut low_bytes, &mut bits),
            None => raw_z(sym, &mut bits),
        };
        let mut out = Vec::new();
        match dtype {
            DType::BF16 | DType::F16 => rebuild::<2, true>(symbols, base, large_z, &mut out),
            DType::F32 => rebuild::<4, true>(symbols, base, large_z, &mut out),
            DType::I32 => rebuild::<4, false>(symbols, base, large_z, &mut out),
            _ => rebuild::<2, false>(symbols, base, large_z, &mut out),
        }?;
        match low_bytes.next() {
            Some(_) => Err(CodecError::Corrupt("more low bytes than elements with raw bits".into())),
            None => Ok(out),
        }
    }

    proptest! {
        /// Any symbols (up to the element's largest), any raw bits, any base: the vector
        /// rebuild of 16- and 32-bit elements gives the scalar one's bytes, or both fail.
        #[test]
        fn the_vector_rebuild_matches_the_scalar_one(
            which in 0usize..5,
            elements in proptest::collection::vec((any::<u8>(), any::<u32>(), 0u8..10), 0..400),
            raw_bits in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let dtype = [DType::BF16, DType::F16, DType::I16, DType::F32, DType::I32][which];
            let (w, largest) = (dtype.width(), max_symbol(8 * dtype.width() as u32));
            // Mostly symbols below 8, as in real fine-tunes, some with raw bits.
            let symbols: Vec<u8> =
                elements.iter().map(|&(s, _, small)| if small < 7 { s % 8 } else { s % (largest + 1) }).collect();
            let base: Vec<u8> = elements.iter().flat_map(|e| e.1.to_le_bytes()[..w].to_vec()).collect();
            let vector = unsymbolise_diff(dtype, &symbols, &raw_bits, &base);
            let scalar = scalar_unsymbolise(dtype, &symbols, None, &raw_bits, &base);
            prop_assert_eq!(format!("{vector:?}"), format!("{scalar:?}"));
        }

        /// The same for codec `bitx-diff-low`, with low bytes mostly in range for their
        /// elements (a few not, which both must refuse) and as many as the elements with raw
        /// bits, or a few more or fewer.
        #[test]
        fn the_vector_rebuild_with_low_bytes_matches_the_scalar_one(
            which in 0usize..5,
            elements in proptest::collection::vec((any::<u8>(), any::<u32>(), 0u8..10, any::<u8>()), 0..1500),
            raw_bits in proptest::collection::vec(any::<u8>(), 0..3000),
            wide_low in 0u32..2000,
            extra in -2i32..3,
        ) {
            let dtype = [DType::BF16, DType::F16, DType::I16, DType::F32, DType::I32][which];
            let (w, largest) = (dtype.width(), max_symbol(8 * dtype.width() as u32));
            let symbols: Vec<u8> =
                elements.iter().map(|&(s, _, small, _)| if small < 5 { s % 8 } else { s % (largest + 1) }).collect();
            let base: Vec<u8> = elements.iter().flat_map(|e| e.1.to_le_bytes()[..w].to_vec()).collect();
            let mut lows: Vec<u8> = symbols
                .iter()
                .zip(&elements)
                .filter(|(s, _)| **s >= 8)
                .map(|(&s, e)| e.3 & ((1u16 << low_len(unsymbolise(s).1)) - 1) as u8)
                .collect();
            if let Some(low) = lows.get_mut(wide_low as usize) {
                *low = 0xFF;
            }
            let count = (lows.len() as i32 + extra).max(0) as usize;
            lows.resize(count, 0);
            let vector = unsymbolise_diff_low(dtype, &symbols, &lows, &raw_bits, &base);
            let scalar = scalar_unsymbolise(dtype, &symbols, Some(&lows), &raw_bits, &base);
            prop_assert_eq!(format!("{vector:?}"), format!("{scalar:?}"));
        }
    }

    /// A small deterministic generator of 32-bit values (a 64-bit LCG's high bits).
    fn lcg(seed: u64) -> impl FnMut() -> u32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        }
    }

    /// On a CPU with AVX-512 the vector rebuild does take valid low bytes (a lane that only
    /// fell back to the scalar loop would go unseen by the comparisons above), and gets them
    /// right.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vector_rebuild_takes_the_low_bytes_it_can() {
        let mut next = lcg(0x9E37_79B9_7F4A_7C15);
        for dtype in [DType::F32, DType::BF16] {
            let (n, w, largest) = (4096, dtype.width(), u32::from(max_symbol(8 * dtype.width() as u32)));
            let symbols: Vec<u8> = (0..n)
                .map(|_| if next().is_multiple_of(4) { next() % 8 } else { 8 + next() % (largest - 7) } as u8)
                .collect();
            let base: Vec<u8> = (0..n).flat_map(|_| next().to_le_bytes()[..w].to_vec()).collect();
            let lows: Vec<u8> = symbols
                .iter()
                .filter(|s| **s >= 8)
                .map(|&s| (next() & ((1 << low_len(unsymbolise(s).1)) - 1)) as u8)
                .collect();
            let raw_bits: Vec<u8> = (0..n * w).map(|_| next() as u8).collect();
            let mut out = Vec::new();
            let (done, _, used) = match dtype {
                DType::F32 => rebuild_vectors::<4, true>(&symbols, &raw_bits, 0, &base, Some(&lows), &mut out),
                _ => rebuild_vectors::<2, true>(&symbols, &raw_bits, 0, &base, Some(&lows), &mut out),
            };
            if avx512::available() {
                assert!(done >= n - 512, "{dtype:?}: only {done} of {n} elements in vectors");
                assert_eq!(used, symbols[..done].iter().filter(|s| **s >= 8).count());
            }
            let scalar = scalar_unsymbolise(dtype, &symbols, Some(&lows), &raw_bits, &base).expect("valid");
            assert_eq!(out, scalar[..out.len()]);
            assert_eq!(unsymbolise_diff_low(dtype, &symbols, &lows, &raw_bits, &base).expect("valid"), scalar);
        }
    }

    /// On a CPU with AVX-512 the 16-bit rebuild in 16-bit lanes (2-byte elements without low
    /// bytes) takes all but the last elements, whose raw bits it cannot be sure of, and gets
    /// them right: the proptests above would not see it fall back to the scalar loop.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_16_bit_lane_rebuild_takes_the_elements_it_can() {
        let mut next = lcg(0x2545_F491_4F6C_DD1D);
        let (n, largest) = (4096, u32::from(max_symbol(16)));
        for dtype in [DType::BF16, DType::I16] {
            // Every raw-bit length, most of all the longest, so the windows are tested full.
            let symbols: Vec<u8> = (0..n)
                .map(|_| if next().is_multiple_of(4) { next() % 8 } else { largest - next() % (largest - 7) } as u8)
                .collect();
            let base: Vec<u8> = (0..2 * n).map(|_| next() as u8).collect();
            let raw_bits: Vec<u8> = (0..2 * n).map(|_| next() as u8).collect();
            let mut out = Vec::new();
            let (done, bit) = if !avx512::available() {
                (0, 0)
            } else if dtype == DType::BF16 {
                // SAFETY: the CPU has the features the function is compiled for.
                unsafe { avx512::rebuild_16::<true>(&symbols, &raw_bits, 0, &base, &mut out) }
            } else {
                // SAFETY: as above.
                unsafe { avx512::rebuild_16::<false>(&symbols, &raw_bits, 0, &base, &mut out) }
            };
            if avx512::available() {
                assert!(done >= n - 256, "{dtype:?}: only {done} of {n} elements in vectors");
                let taken: usize = symbols[..done].iter().map(|&s| unsymbolise(s).1 as usize).sum();
                assert_eq!(bit, taken);
            }
            let scalar = scalar_unsymbolise(dtype, &symbols, None, &raw_bits, &base).expect("valid");
            assert_eq!(out, scalar[..out.len()], "{dtype:?}");
            assert_eq!(unsymbolise_diff(dtype, &symbols, &raw_bits, &base).expect("valid"), scalar);
        }
    }

    proptest! {
        #[test]
        fn difference_round_trips_any_bits(which in 0usize..DType::ALL.len(), pairs in proptest::collection::vec(any::<(u64, u64)>(), 0..200)) {
            let dtype = DType::ALL[which];
            let w = dtype.width();
            let fine: Vec<u8> = pairs.iter().flat_map(|p| p.0.to_le_bytes()[..w].to_vec()).collect();
            let base: Vec<u8> = pairs.iter().flat_map(|p| p.1.to_le_bytes()[..w].to_vec()).collect();
            prop_assert_eq!(round_trip(dtype, &fine, &base), fine);
        }
    }

    /// A base of `(base, _, _)` words and a fine-tune that adds `d` to each, or is `other`
    /// itself where `other` is a multiple of `every`: mostly small differences, some large.
    fn mixed_pair(dtype: DType, elems: &[(u64, i64, u64)], every: u64) -> (Vec<u8>, Vec<u8>) {
        let w = dtype.width();
        let base = elems.iter().flat_map(|e| e.0.to_le_bytes()[..w].to_vec()).collect();
        let fine = elems
            .iter()
            .flat_map(|&(b, d, other)| {
                let v = if other % every == 0 { other } else { b.wrapping_add_signed(d) };
                v.to_le_bytes()[..w].to_vec()
            })
            .collect();
        (base, fine)
    }

    proptest! {
        /// Mostly small differences (no raw bits) with some large ones, across several
        /// 64-element blocks of the decoder's first pass.
        #[test]
        fn mixed_differences_round_trip(which in 0usize..DType::ALL.len(), elems in proptest::collection::vec((any::<u64>(), -9i64..9, any::<u64>()), 0..300)) {
            let dtype = DType::ALL[which];
            let (base, fine) = mixed_pair(dtype, &elems, 5);
            prop_assert_eq!(&round_trip(dtype, &fine, &base), &fine);
            let s = symbolise_diff_low(dtype, &fine, &base);
            prop_assert_eq!(unsymbolise_diff_low(dtype, &s.symbols, &s.lows, &s.rest_bits, &base).unwrap(), fine);
        }
    }

    proptest! {
        /// Rebuilt a part at a time, with parts of any length (the vector path starting at any
        /// raw bit), a difference comes back as it does whole.
        #[test]
        fn a_rebuild_in_parts_gives_the_whole_rebuild(
            which in 0usize..DType::ALL.len(),
            elems in proptest::collection::vec((any::<u64>(), -40i64..40, any::<u64>()), 0..1200),
            cuts in proptest::collection::vec(1usize..300, 1..12),
        ) {
            let dtype = DType::ALL[which];
            let w = dtype.width();
            let (base, fine) = mixed_pair(dtype, &elems, 7);
            let s = symbolise_diff(dtype, &fine, &base);
            let mut rebuild = DiffRebuild::new(dtype, &s.raw_bits, elems.len(), true);
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < elems.len() {
                let end = (at + cut.next().copied().unwrap_or(1)).min(elems.len());
                let part = rebuild.part(&s.symbols[at..end], &base[at * w..end * w]).unwrap();
                prop_assert_eq!(part, &fine[at * w..end * w]);
                at = end;
            }
            prop_assert_eq!(rebuild.finish(), fine);
        }
    }

    proptest! {
        #[test]
        fn split_low_difference_round_trips_any_bits(which in 0usize..DType::ALL.len(), pairs in proptest::collection::vec(any::<(u64, u64)>(), 0..200)) {
            let dtype = DType::ALL[which];
            let w = dtype.width();
            let fine: Vec<u8> = pairs.iter().flat_map(|p| p.0.to_le_bytes()[..w].to_vec()).collect();
            let base: Vec<u8> = pairs.iter().flat_map(|p| p.1.to_le_bytes()[..w].to_vec()).collect();
            let s = symbolise_diff_low(dtype, &fine, &base);
            prop_assert_eq!(&s.low_contexts, &low_contexts(dtype, &s.symbols, &base));
            let out = unsymbolise_diff_low(dtype, &s.symbols, &s.lows, &s.rest_bits, &base).unwrap();
            prop_assert_eq!(out, fine);
        }
    }

    #[test]
    fn special_floats_round_trip() {
        let specials = [0u32, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0001, 0xFFFF_FFFF, 1, 0x8000_0001];
        let fine: Vec<u8> = specials.iter().flat_map(|v| v.to_le_bytes()).collect();
        let base: Vec<u8> = specials.iter().rev().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(round_trip(DType::F32, &fine, &base), fine);
    }

    #[test]
    fn float_derived_symbols_match_the_bit_scan() {
        for z in (0..1u32 << 17).chain((17..24).map(|b| (1 << b) - 1)).chain([(1 << 24) - 2, 3 << 22]) {
            assert_eq!(symbol_of_short(z), symbolise(u64::from(z)).0, "z={z}");
        }
        let wide = (0..1u32 << 17)
            .chain((17..=32).flat_map(|b| [(1u64 << b) - 1, 1 << (b - 1), 3 << (b - 2)]).map(|z| z as u32));
        for z in wide {
            assert_eq!(symbol_of_word(z), symbolise(u64::from(z)).0, "z={z}");
        }
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
