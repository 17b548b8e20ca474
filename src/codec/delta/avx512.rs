//! The difference rebuild of 16- and 32-bit elements (BF16, FP16, FP32; codec
//! `bitx-diff-ctx`) with AVX-512, 16 elements per vector. Each element's raw-bit length comes
//! from its symbol, a prefix sum of the lengths gives each its bit offset, and one byte
//! permutation of the 64 bytes where a vector's raw bits start fetches them all (a gather
//! measured no faster than the scalar loop): elements with raw bits cost no more than those
//! without, where the scalar loop reads them one by one.

use std::arch::x86_64::*;

/// Elements per vector.
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

/// Rebuilds `W`-byte elements (2 or 4) from the start, 64 at a time, while the raw bits (from
/// bit `start` on) surely last; appends them to `out` and returns how many, with where their
/// raw bits end. The scalar loop does the rest, from there, with its own checks on running out.
/// Symbols must have been checked to be at most the `W`-byte largest.
///
/// Bounds: symbols are read below `n <= symbols.len()`, base elements below `n <= base.len() / W`;
/// a step runs only while the 64 bytes from the byte of its first raw bit, for each of its
/// vectors (each starting at most `64 * max_bits(W)` bits on), lie inside `raw_bits`. A lane's
/// raw bits start at most `15 * 29 + 7` bits into its vector's 64 bytes and take at most five
/// bytes from there, byte 59 at the latest.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
pub(super) fn rebuild<const W: usize, const FLOAT: bool>(
    symbols: &[u8],
    raw_bits: &[u8],
    start: usize,
    base: &[u8],
    out: &mut Vec<u8>,
) -> (usize, usize) {
    let n = symbols.len().min(base.len() / W) / (STEP * WIDTH) * (STEP * WIDTH);
    // Bit offsets live in 32-bit lanes; a stream too long for them is left to the scalar loop.
    if i32::try_from(start.saturating_add(8 * raw_bits.len())).is_err() {
        return (0, start);
    }
    let (mut i, mut bit) = (0, start);
    let mut at_bit = _mm512_set1_epi32(start as i32);
    while i < n && (bit + STEP * WIDTH * max_bits(W)) / 8 + 64 <= raw_bits.len() {
        let mut bytes = [[0u8; 64]; STEP];
        for (k, piece) in bytes.iter_mut().enumerate() {
            let at = i + k * WIDTH;
            // SAFETY: see the bounds above; loads and stores are unaligned.
            unsafe {
                let s = _mm512_cvtepu8_epi32(_mm_loadu_si128(symbols.as_ptr().add(at).cast()));
                let first = _mm512_cvtsi512_si32(at_bit) as usize;
                let window = _mm512_loadu_si512(raw_bits.as_ptr().add(first / 8).cast());
                let z = z_of::<W>(s, window, first, &mut at_bit);
                let b = base.as_ptr().add(W * at);
                if W == 2 {
                    let fine = add_difference_16::<FLOAT>(_mm256_loadu_si256(b.cast()), _mm512_cvtepi32_epi16(z));
                    _mm256_storeu_si256(piece.as_mut_ptr().cast(), fine);
                } else {
                    _mm512_storeu_si512(
                        piece.as_mut_ptr().cast(),
                        add_difference_32::<FLOAT>(_mm512_loadu_si512(b.cast()), z),
                    );
                }
            }
        }
        bytes.iter().for_each(|piece| out.extend_from_slice(&piece[..W * WIDTH]));
        bit = _mm_cvtsi128_si32(_mm512_castsi512_si128(at_bit)) as usize;
        i += STEP * WIDTH;
    }
    (i, bit)
}

/// `z` of the 16 elements of symbols `s` (one per 32-bit lane), whose raw bits start `first`
/// bits into the stream, `window` being its 64 bytes from byte `first / 8`; moves `at_bit`
/// (every lane the same) past them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn z_of<const W: usize>(s: __m512i, window: __m512i, first: usize, at_bit: &mut __m512i) -> __m512i {
    let (zero, one) = (_mm512_setzero_si512(), _mm512_set1_epi32(1));
    // `unsymbolise` in every lane: symbols below 8 have no raw bits and are `z`.
    let nbits = _mm512_sub_epi32(_mm512_max_epu32(_mm512_srli_epi32::<2>(s), one), one);
    let top = _mm512_sub_epi32(s, _mm512_slli_epi32::<2>(nbits));
    let mut end = nbits;
    end = _mm512_add_epi32(end, _mm512_alignr_epi32::<15>(end, zero));
    end = _mm512_add_epi32(end, _mm512_alignr_epi32::<14>(end, zero));
    end = _mm512_add_epi32(end, _mm512_alignr_epi32::<12>(end, zero));
    end = _mm512_add_epi32(end, _mm512_alignr_epi32::<8>(end, zero));
    let from = _mm512_add_epi32(_mm512_set1_epi32((first % 8) as i32), _mm512_sub_epi32(end, nbits));
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
    let low = _mm512_and_si512(raw, _mm512_sub_epi32(_mm512_sllv_epi32(one, nbits), one));
    _mm512_or_si512(_mm512_sllv_epi32(top, nbits), low)
}

/// The fine elements from their base and `z`: the base plus the unzigzagged `z`, in the
/// order-preserving keys of `Keying` for floats (negative floats have every bit flipped, the
/// others only the sign).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn add_difference_16<const FLOAT: bool>(base: __m256i, z: __m256i) -> __m256i {
    let d = _mm256_xor_si256(
        _mm256_srli_epi16::<1>(z),
        _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_and_si256(z, _mm256_set1_epi16(1))),
    );
    if !FLOAT {
        return _mm256_add_epi16(base, d);
    }
    let sign = _mm256_set1_epi16(i16::MIN);
    let key = _mm256_xor_si256(base, _mm256_or_si256(_mm256_srai_epi16::<15>(base), sign));
    let k = _mm256_add_epi16(key, d);
    let flip = _mm256_or_si256(_mm256_xor_si256(_mm256_srai_epi16::<15>(k), _mm256_set1_epi16(-1)), sign);
    _mm256_xor_si256(k, flip)
}

/// [`add_difference_16`] for 32-bit elements.
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
