//! The difference rebuild of 16- and 32-bit elements (BF16, FP16, FP32; codec
//! `bitx-diff-ctx`) with AVX-512, 16 elements per vector in 32-bit lanes, or 32 per vector in
//! 16-bit lanes for 2-byte elements of codec 3 ([`rebuild_16`]). Each element's raw-bit length
//! comes from its symbol, a prefix sum of the lengths gives each its bit offset, and one byte
//! permutation of the 64 bytes where a vector's raw bits start fetches them all (a gather
//! measured no faster than the scalar loop): elements with raw bits cost no more than those
//! without, where the scalar loop reads them one by one.

use std::arch::x86_64::*;

/// Elements per vector in 32-bit lanes.
const WIDTH: usize = 16;

/// Raw bits of a `W`-byte element at most: those of the largest symbol `check_symbols` lets
/// through (`0xffff` has 13 below its three leading bits, `0xffff_ffff` 29).
const fn max_bits(w: usize) -> usize {
    8 * w - 3
}

/// The CPU has what [`rebuild`] needs.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vbmi")
}

/// Vectors per step: the raw-bit position goes from one vector to the next as a vector (a
/// broadcast add), and is read out once per step for the bounds check.
const STEP: usize = 4;

/// The low bytes of codec `bitx-diff-low`, one per element with raw bits, and how many of
/// them the rebuild has taken.
pub(super) struct Lows<'l> {
    pub bytes: &'l [u8],
    pub used: usize,
}

/// Rebuilds `W`-byte elements (2 or 4) from the start, 64 at a time, while the raw bits (from
/// bit `start` on) and the low bytes, if given, surely last; appends them to `out` and returns
/// how many, with where their raw bits end. The scalar loop does the rest, from there, with its
/// own checks on running out and on low bytes out of range (where this stops). Symbols must
/// have been checked to be at most the `W`-byte largest.
///
/// Bounds: symbols are read below `n <= symbols.len()`, base elements below `n <= base.len() / W`;
/// a step runs only while the 64 bytes from the byte of its first raw bit, for each of its
/// vectors (each starting at most `64 * max_bits(W)` bits on), lie inside `raw_bits`, and the
/// 64 bytes from each vector's first low byte (at most 64 on) inside the low bytes. A lane's
/// raw bits start at most `15 * 29 + 7` bits into its vector's 64 bytes and take at most five
/// bytes from there, byte 59 at the latest.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
pub(super) fn rebuild<const W: usize, const FLOAT: bool>(
    symbols: &[u8],
    raw_bits: &[u8],
    start: usize,
    base: &[u8],
    mut lows: Option<&mut Lows<'_>>,
    out: &mut Vec<u8>,
) -> (usize, usize) {
    let n = symbols.len().min(base.len() / W) / (STEP * WIDTH) * (STEP * WIDTH);
    // Bit offsets live in 32-bit lanes; a stream too long for them is left to the scalar loop.
    if i32::try_from(start.saturating_add(8 * raw_bits.len())).is_err() {
        return (0, start);
    }
    let (mut i, mut bit) = (0, start);
    let mut at_bit = _mm512_set1_epi32(start as i32);
    let lows_last = |l: &Option<&mut Lows<'_>>| l.as_ref().is_none_or(|l| l.used + (STEP + 1) * 64 <= l.bytes.len());
    while i < n && (bit + STEP * WIDTH * max_bits(W)) / 8 + 64 <= raw_bits.len() && lows_last(&lows) {
        let mut bytes = [[0u8; 64]; STEP];
        let (mut step_bit, mut used) = (at_bit, lows.as_ref().map_or(0, |l| l.used));
        for (k, piece) in bytes.iter_mut().enumerate() {
            let at = i + k * WIDTH;
            // SAFETY: see the bounds above; loads and stores are unaligned.
            unsafe {
                let s = _mm512_cvtepu8_epi32(_mm_loadu_si128(symbols.as_ptr().add(at).cast()));
                let first = _mm512_cvtsi512_si32(step_bit) as usize;
                let window = _mm512_loadu_si512(raw_bits.as_ptr().add(first / 8).cast());
                let z = match lows.as_ref() {
                    None => z_of::<W>(s, window, first, &mut step_bit),
                    Some(l) => {
                        let low_window = _mm512_loadu_si512(l.bytes.as_ptr().add(used).cast());
                        match z_with_low::<W>(s, window, first, &mut step_bit, low_window) {
                            Some((z, taken)) => {
                                used += taken;
                                z
                            }
                            // A low byte out of range: the scalar loop reports it.
                            None => return (i, bit),
                        }
                    }
                };
                let b = base.as_ptr().add(W * at);
                if W == 2 {
                    // The low half of a 32-element vector: the upper lanes are left unused.
                    let (base, z) = (_mm256_loadu_si256(b.cast()), _mm512_cvtepi32_epi16(z));
                    let fine = add_difference_16::<FLOAT>(_mm512_castsi256_si512(base), _mm512_castsi256_si512(z));
                    _mm256_storeu_si256(piece.as_mut_ptr().cast(), _mm512_castsi512_si256(fine));
                } else {
                    _mm512_storeu_si512(
                        piece.as_mut_ptr().cast(),
                        add_difference_32::<FLOAT>(_mm512_loadu_si512(b.cast()), z),
                    );
                }
            }
        }
        bytes.iter().for_each(|piece| out.extend_from_slice(&piece[..W * WIDTH]));
        at_bit = step_bit;
        if let Some(l) = lows.as_deref_mut() {
            l.used = used;
        }
        bit = _mm_cvtsi128_si32(_mm512_castsi512_si128(at_bit)) as usize;
        i += STEP * WIDTH;
    }
    (i, bit)
}

/// [`rebuild`] for 2-byte elements without low bytes, 32 per vector in 16-bit lanes: twice the
/// elements per instruction of the 32-bit lanes, whose widths 16-bit offsets need not (a
/// vector's raw bits, at most `32 * 13`, start at most 7 bits into its 64-byte window).
///
/// Bounds: symbols are read below `n <= symbols.len()`, base elements below `n <= base.len() / 2`;
/// a step runs only while the 64 bytes from the byte of each of its vectors' first raw bit
/// (at most `STEP16 * 32 * 13` bits on) lie inside `raw_bits`. A lane's raw bits start at most
/// `31 * 13 + 7` bits into its window and take at most three bytes, byte 52 at the latest; the
/// fourth byte fetched with them is byte 54 at the latest.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
pub(super) fn rebuild_16<const FLOAT: bool>(
    symbols: &[u8],
    raw_bits: &[u8],
    start: usize,
    base: &[u8],
    out: &mut Vec<u8>,
) -> (usize, usize) {
    const LANES: usize = 32;
    const STEP16: usize = 2;
    let n = symbols.len().min(base.len() / 2) / (STEP16 * LANES) * (STEP16 * LANES);
    let (mut i, mut bit) = (0, start);
    while i < n && (bit + STEP16 * LANES * max_bits(2)) / 8 + 64 <= raw_bits.len() {
        let mut bytes = [[0u8; 64]; STEP16];
        for (k, piece) in bytes.iter_mut().enumerate() {
            let at = i + k * LANES;
            // SAFETY: see the bounds above; loads and stores are unaligned.
            unsafe {
                let s = _mm512_cvtepu8_epi16(_mm256_loadu_si256(symbols.as_ptr().add(at).cast()));
                let window = _mm512_loadu_si512(raw_bits.as_ptr().add(bit / 8).cast());
                let (z, taken) = z_of_16(s, window, bit % 8);
                let fine = add_difference_16::<FLOAT>(_mm512_loadu_si512(base.as_ptr().add(2 * at).cast()), z);
                _mm512_storeu_si512(piece.as_mut_ptr().cast(), fine);
                bit += taken;
            }
        }
        bytes.iter().for_each(|piece| out.extend_from_slice(piece));
        i += STEP16 * LANES;
    }
    (i, bit)
}

/// `z` of the 32 elements of symbols `s` (one per 16-bit lane), whose raw bits start `skip`
/// bits into `window`; and how many raw bits they take.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn z_of_16(s: __m512i, window: __m512i, skip: usize) -> (__m512i, usize) {
    let one = _mm512_set1_epi16(1);
    let nbits = _mm512_sub_epi16(_mm512_max_epu16(_mm512_srli_epi16::<2>(s), one), one);
    let top = _mm512_sub_epi16(s, _mm512_slli_epi16::<2>(nbits));
    let (end, total) = running_sum_16(nbits);
    let from = _mm512_add_epi16(_mm512_set1_epi16(skip as i16), _mm512_sub_epi16(end, nbits));
    // Byte indices `b, b + 1` in each lane's two bytes, then `b + 2, b + 3`: the lane's first
    // two bytes and the two after them, little-endian.
    let byte = _mm512_srli_epi16::<3>(from);
    let first_two = _mm512_or_si512(byte, _mm512_slli_epi16::<8>(_mm512_add_epi16(byte, one)));
    let next_two = _mm512_add_epi16(first_two, _mm512_set1_epi16(0x0202));
    let shift = _mm512_and_si512(from, _mm512_set1_epi16(7));
    let low = _mm512_srlv_epi16(_mm512_permutexvar_epi8(first_two, window), shift);
    // Up to 13 bits from bit 7 of a byte reach into a third byte (shifted out entirely where
    // `shift` is 0, as a shift by 16 clears the lane).
    let high =
        _mm512_sllv_epi16(_mm512_permutexvar_epi8(next_two, window), _mm512_sub_epi16(_mm512_set1_epi16(16), shift));
    let raw = _mm512_and_si512(_mm512_or_si512(low, high), _mm512_sub_epi16(_mm512_sllv_epi16(one, nbits), one));
    (_mm512_or_si512(_mm512_sllv_epi16(top, nbits), raw), total)
}

/// The running sum of 32 16-bit lanes, each lane's own included, and the sum of all. Pairs
/// are summed inside their 32-bit lane, then the pairs' totals run across the 32-bit lanes
/// (whole-vector shifts come in 32-bit steps); sums stay far below 2^16, so no lane carries.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn running_sum_16(v: __m512i) -> (__m512i, usize) {
    let zero = _mm512_setzero_si512();
    // Low half: the pair's first; high half: both.
    let pairs = _mm512_add_epi16(v, _mm512_slli_epi32::<16>(v));
    // The pair's total in both halves.
    let totals = _mm512_or_si512(_mm512_srli_epi32::<16>(pairs), _mm512_and_si512(pairs, _mm512_set1_epi32(-65536)));
    let mut sum = totals;
    sum = _mm512_add_epi16(sum, _mm512_alignr_epi32::<15>(sum, zero));
    sum = _mm512_add_epi16(sum, _mm512_alignr_epi32::<14>(sum, zero));
    sum = _mm512_add_epi16(sum, _mm512_alignr_epi32::<12>(sum, zero));
    sum = _mm512_add_epi16(sum, _mm512_alignr_epi32::<8>(sum, zero));
    let all = _mm_extract_epi16::<7>(_mm512_extracti32x4_epi32::<3>(sum)) as usize;
    (_mm512_add_epi16(pairs, _mm512_sub_epi16(sum, totals)), all)
}

/// `unsymbolise` in every lane: the raw-bit length and the leading bits (symbols below 8 have
/// no raw bits and are `z`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn unsymbolise(s: __m512i) -> (__m512i, __m512i) {
    let one = _mm512_set1_epi32(1);
    let nbits = _mm512_sub_epi32(_mm512_max_epu32(_mm512_srli_epi32::<2>(s), one), one);
    (nbits, _mm512_sub_epi32(s, _mm512_slli_epi32::<2>(nbits)))
}

/// The running sum of the lanes, each lane's own included.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn running_sum(v: __m512i) -> __m512i {
    let zero = _mm512_setzero_si512();
    let mut sum = v;
    sum = _mm512_add_epi32(sum, _mm512_alignr_epi32::<15>(sum, zero));
    sum = _mm512_add_epi32(sum, _mm512_alignr_epi32::<14>(sum, zero));
    sum = _mm512_add_epi32(sum, _mm512_alignr_epi32::<12>(sum, zero));
    _mm512_add_epi32(sum, _mm512_alignr_epi32::<8>(sum, zero))
}

/// `z` of the 16 elements of symbols `s` (one per 32-bit lane), whose raw bits start `first`
/// bits into the stream, `window` being its 64 bytes from byte `first / 8`; moves `at_bit`
/// (every lane the same) past them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn z_of<const W: usize>(s: __m512i, window: __m512i, first: usize, at_bit: &mut __m512i) -> __m512i {
    let (nbits, top) = unsymbolise(s);
    _mm512_or_si512(_mm512_sllv_epi32(top, nbits), raw_values::<W>(nbits, window, first, at_bit))
}

/// [`z_of`] for codec `bitx-diff-low`: the top raw bits of each element that has any (at most
/// 8) are its next low byte, from `low_window` on; returns how many low bytes it took, or None
/// if one is wider than its element's raw bits.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn z_with_low<const W: usize>(
    s: __m512i,
    window: __m512i,
    first: usize,
    at_bit: &mut __m512i,
    low_window: __m512i,
) -> Option<(__m512i, usize)> {
    let (nbits, top) = unsymbolise(s);
    let large = _mm512_cmpgt_epu32_mask(nbits, _mm512_setzero_si512());
    let taken = _mm512_maskz_mov_epi32(large, _mm512_set1_epi32(1));
    // Each lane's low byte is the one after those of the lanes before it: its rank among
    // them, in the lane's lowest byte, picks it; the lane's other bytes pick byte 0, cut off.
    let rank = _mm512_sub_epi32(running_sum(taken), taken);
    let low = _mm512_maskz_and_epi32(large, _mm512_permutexvar_epi8(rank, low_window), _mm512_set1_epi32(0xFF));
    let low_len = _mm512_min_epu32(nbits, _mm512_set1_epi32(8));
    if _mm512_test_epi32_mask(_mm512_srlv_epi32(low, low_len), _mm512_srlv_epi32(low, low_len)) != 0 {
        return None;
    }
    let below = _mm512_sub_epi32(nbits, low_len);
    let rest = raw_values::<W>(below, window, first, at_bit);
    let z = _mm512_or_si512(_mm512_sllv_epi32(top, nbits), _mm512_or_si512(_mm512_sllv_epi32(low, below), rest));
    Some((z, large.count_ones() as usize))
}

/// The values of the next `len` raw bits of every lane (at most 29), one lane's after the
/// other's, from bit `first` of the stream, `window` being its 64 bytes from byte `first / 8`;
/// moves `at_bit` (every lane the same) past them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn raw_values<const W: usize>(len: __m512i, window: __m512i, first: usize, at_bit: &mut __m512i) -> __m512i {
    let one = _mm512_set1_epi32(1);
    let end = running_sum(len);
    let from = _mm512_add_epi32(_mm512_set1_epi32((first % 8) as i32), _mm512_sub_epi32(end, len));
    *at_bit = _mm512_add_epi32(*at_bit, _mm512_permutexvar_epi32(_mm512_set1_epi32(WIDTH as i32 - 1), end));
    // A byte index `b` in every byte of a lane, plus 0, 1, 2, 3: the lane's little-endian word.
    let bytes = _mm512_add_epi32(
        _mm512_mullo_epi32(_mm512_srli_epi32::<3>(from), _mm512_set1_epi32(0x0101_0101)),
        _mm512_set1_epi32(0x0302_0100),
    );
    let shift = _mm512_and_si512(from, _mm512_set1_epi32(7));
    let mut raw = _mm512_srlv_epi32(_mm512_permutexvar_epi8(bytes, window), shift);
    if W > 2 {
        // Up to 29 bits from bit 7 of a byte reach into a fifth byte: the next word's low bits
        // (shifted out entirely where `shift` is 0).
        let next = _mm512_permutexvar_epi8(_mm512_add_epi32(bytes, _mm512_set1_epi32(0x0404_0404)), window);
        raw = _mm512_or_si512(raw, _mm512_sllv_epi32(next, _mm512_sub_epi32(_mm512_set1_epi32(32), shift)));
    }
    _mm512_and_si512(raw, _mm512_sub_epi32(_mm512_sllv_epi32(one, len), one))
}

/// The 32 fine 16-bit elements from their base and `z`: the base plus the unzigzagged `z`, in
/// the order-preserving keys of `Keying` for floats (negative floats have every bit flipped,
/// the others only the sign).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn add_difference_16<const FLOAT: bool>(base: __m512i, z: __m512i) -> __m512i {
    let d = _mm512_xor_si512(
        _mm512_srli_epi16::<1>(z),
        _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_and_si512(z, _mm512_set1_epi16(1))),
    );
    if !FLOAT {
        return _mm512_add_epi16(base, d);
    }
    let sign = _mm512_set1_epi16(i16::MIN);
    let key = _mm512_xor_si512(base, _mm512_or_si512(_mm512_srai_epi16::<15>(base), sign));
    let k = _mm512_add_epi16(key, d);
    let flip = _mm512_or_si512(_mm512_xor_si512(_mm512_srai_epi16::<15>(k), _mm512_set1_epi16(-1)), sign);
    _mm512_xor_si512(k, flip)
}

/// [`add_difference_16`] for 16 32-bit elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn add_difference_32<const FLOAT: bool>(base: __m512i, z: __m512i) -> __m512i {
    let d = _mm512_xor_si512(
        _mm512_srli_epi32::<1>(z),
        _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_and_si512(z, _mm512_set1_epi32(1))),
    );
    if !FLOAT {
        return _mm512_add_epi32(base, d);
    }
    let sign = _mm512_set1_epi32(i32::MIN);
    let key = _mm512_xor_si512(base, _mm512_or_si512(_mm512_srai_epi32::<31>(base), sign));
    let k = _mm512_add_epi32(key, d);
    let flip = _mm512_or_si512(_mm512_xor_si512(_mm512_srai_epi32::<31>(k), _mm512_set1_epi32(-1)), sign);
    _mm512_xor_si512(k, flip)
}
