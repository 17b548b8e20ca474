//! Byte grouping: splitting element words into streams of like bytes.
//!
//! Floats split into exponent planes and sign+mantissa planes (the sign moved to the top of
//! the mantissa field), because exponents are highly repetitive and compress well apart
//! from the near-random low mantissa bits. Other types split into plain byte planes.

use crate::object::DType;

/// How a dtype's words are cut into planes.
#[derive(Debug, Clone, Copy)]
pub struct Grouping {
    width: usize,
    /// Mantissa bits, or None for plain byte planes.
    mantissa: Option<u32>,
    exp_planes: usize,
    sm_planes: usize,
}

impl Grouping {
    /// The grouping for `dtype`.
    pub fn of(dtype: DType) -> Grouping {
        let width = dtype.width();
        match dtype.float_layout() {
            Some(l) => Grouping {
                width,
                mantissa: Some(l.mantissa),
                exp_planes: l.exponent.div_ceil(8) as usize,
                sm_planes: (l.mantissa + 1).div_ceil(8) as usize,
            },
            None => Grouping { width, mantissa: None, exp_planes: 0, sm_planes: width },
        }
    }

    /// True for one-byte elements that are not floats: the one plane is the data itself
    /// (blobs, U8 and I8 tensors), so splitting and joining are copies.
    fn is_bytes(&self) -> bool {
        self.width == 1 && self.mantissa.is_none()
    }

    /// Number of streams produced.
    pub fn planes(&self) -> usize {
        self.exp_planes + self.sm_planes
    }

    /// Number of exponent planes, which come first (none for non-floats).
    pub fn exponent_planes(&self) -> usize {
        self.exp_planes
    }

    /// Bytes per element.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Splits little-endian words into planes. `data.len()` must be a multiple of the width.
    pub fn split(&self, data: &[u8]) -> Vec<Vec<u8>> {
        if self.is_bytes() {
            return vec![data.to_vec()];
        }
        if self.is_bf16_like() {
            return split_bf16(data);
        }
        if self.is_f32_like() {
            return split_f32(data);
        }
        match self.width {
            1 => self.split_words::<1>(data),
            2 => self.split_words::<2>(data),
            4 => self.split_words::<4>(data),
            _ => self.split_words::<8>(data),
        }
    }

    /// Inverse of [`Grouping::split`]: `elements` words from planes of at least that many bytes
    /// each (a short plane gives a short result, which callers' length checks refuse).
    pub fn join<P: AsRef<[u8]>>(&self, planes: &[P], elements: usize) -> Vec<u8> {
        if planes.iter().any(|p| p.as_ref().len() < elements) {
            return Vec::new();
        }
        if self.is_bytes() {
            return planes.first().map_or(Vec::new(), |p| p.as_ref()[..elements].to_vec());
        }
        if self.is_bf16_like() {
            return join_bf16(planes[0].as_ref(), planes[1].as_ref(), elements);
        }
        if self.is_f32_like() {
            return join_f32(planes, elements);
        }
        match self.width {
            1 => self.join_words::<1, P>(planes, elements),
            2 => self.join_words::<2, P>(planes, elements),
            4 => self.join_words::<4, P>(planes, elements),
            _ => self.join_words::<8, P>(planes, elements),
        }
    }

    /// BF16 (8-bit exponent, 7-bit mantissa): the hot case gets a hand-written loop.
    fn is_bf16_like(&self) -> bool {
        self.width == 2 && self.mantissa == Some(7)
    }

    /// F32 (8-bit exponent, 23-bit mantissa), the other hot case.
    fn is_f32_like(&self) -> bool {
        self.width == 4 && self.mantissa == Some(23)
    }

    /// Maps a word to (exponent field, sign+mantissa field); identity split for non-floats.
    #[inline]
    fn fields<const W: usize>(&self, word: u64) -> (u64, u64) {
        match self.mantissa {
            Some(m) => {
                let sign_shift = W as u32 * 8 - 1;
                let sign = word >> sign_shift;
                let exp = (word >> m) & ((1u64 << (sign_shift - m)) - 1);
                (exp, (sign << m) | (word & ((1u64 << m) - 1)))
            }
            None => (0, word),
        }
    }

    #[inline]
    fn unfields<const W: usize>(&self, exp: u64, sm: u64) -> u64 {
        match self.mantissa {
            Some(m) => {
                let sign_shift = W as u32 * 8 - 1;
                ((sm >> m) << sign_shift) | (exp << m) | (sm & ((1u64 << m) - 1))
            }
            None => sm,
        }
    }

    /// A block at a time (see [`SPLIT_BLOCK`]), one pass per plane over the block's words.
    fn split_words<const W: usize>(&self, data: &[u8]) -> Vec<Vec<u8>> {
        let words = data.as_chunks::<W>().0;
        let mut planes = vec![vec![0u8; words.len()]; self.planes()];
        for (start, block) in (0..words.len()).step_by(SPLIT_BLOCK).zip(words.chunks(SPLIT_BLOCK)) {
            for (k, plane) in planes.iter_mut().enumerate() {
                let out = &mut plane[start..start + block.len()];
                let (exponent, shift) =
                    if k < self.exp_planes { (true, 8 * k) } else { (false, 8 * (k - self.exp_planes)) };
                for (o, w) in out.iter_mut().zip(block) {
                    let (exp, sm) = self.fields::<W>(load::<W>(w));
                    *o = (if exponent { exp } else { sm } >> shift) as u8;
                }
            }
        }
        planes
    }

    /// Gathers the planes into exponent and sign+mantissa fields, then reassembles each word,
    /// a block at a time (see [`SPLIT_BLOCK`]) so that the fields stay in cache.
    fn join_words<const W: usize, P: AsRef<[u8]>>(&self, planes: &[P], elements: usize) -> Vec<u8> {
        let mut out = vec![0u8; elements * W];
        let (mut exp, mut sm) = (vec![0u64; SPLIT_BLOCK.min(elements)], vec![0u64; SPLIT_BLOCK.min(elements)]);
        let blocks = out.as_chunks_mut::<W>().0.chunks_mut(SPLIT_BLOCK);
        for (start, block) in (0..elements).step_by(SPLIT_BLOCK).zip(blocks) {
            let (exp, sm) = (&mut exp[..block.len()], &mut sm[..block.len()]);
            exp.fill(0);
            sm.fill(0);
            for (k, p) in planes.iter().enumerate() {
                let (field, shift) =
                    if k < self.exp_planes { (&mut *exp, 8 * k) } else { (&mut *sm, 8 * (k - self.exp_planes)) };
                let bytes = &p.as_ref()[start..start + field.len()];
                field.iter_mut().zip(bytes).for_each(|(f, &b)| *f |= (b as u64) << shift);
            }
            for ((o, &e), &m) in block.iter_mut().zip(&*exp).zip(&*sm) {
                let w = self.unfields::<W>(e, m).to_le_bytes();
                *o = std::array::from_fn(|i| w[i]);
            }
        }
        out
    }
}

/// Elements split into planes a block at a time: each plane's pass over a block reads it from
/// the first-level cache, and each pass is a loop over two slices that vectorises.
const SPLIT_BLOCK: usize = 4096;

#[multiversion::multiversion(targets = "simd")]
fn split_bf16(data: &[u8]) -> Vec<Vec<u8>> {
    let words = data.as_chunks::<2>().0;
    let (mut exp, mut sm) = (vec![0u8; words.len()], vec![0u8; words.len()]);
    let blocks = words.chunks(SPLIT_BLOCK).zip(exp.chunks_mut(SPLIT_BLOCK)).zip(sm.chunks_mut(SPLIT_BLOCK));
    for ((words, exp), sm) in blocks {
        exp.iter_mut().zip(words).for_each(|(o, w)| *o = (u16::from_le_bytes(*w) >> 7) as u8);
        sm.iter_mut().zip(words).for_each(|(o, w)| *o = w[1] & 0x80 | w[0] & 0x7F);
    }
    vec![exp, sm]
}

#[multiversion::multiversion(targets = "simd")]
fn join_bf16(exp: &[u8], sm: &[u8], elements: usize) -> Vec<u8> {
    // Collecting arrays from zipped slices writes in place without zeroing first, and vectorises.
    let words = exp[..elements].iter().zip(&sm[..elements]).map(|(&e, &s)| {
        let (e, s) = (e as u16, s as u16);
        (((s & 0x80) << 8) | (e << 7) | (s & 0x7F)).to_le_bytes()
    });
    words.collect::<Vec<_>>().into_flattened()
}

#[multiversion::multiversion(targets = "simd")]
fn split_f32(data: &[u8]) -> Vec<Vec<u8>> {
    let words = data.as_chunks::<4>().0;
    let [mut exp, mut p0, mut p1, mut p2] = std::array::from_fn(|_| vec![0u8; words.len()]);
    let blocks = words.chunks(SPLIT_BLOCK).zip(exp.chunks_mut(SPLIT_BLOCK)).zip(p0.chunks_mut(SPLIT_BLOCK));
    let blocks = blocks.zip(p1.chunks_mut(SPLIT_BLOCK)).zip(p2.chunks_mut(SPLIT_BLOCK));
    for ((((words, exp), p0), p1), p2) in blocks {
        exp.iter_mut().zip(words).for_each(|(o, w)| *o = (u32::from_le_bytes(*w) >> 23) as u8);
        p0.iter_mut().zip(words).for_each(|(o, w)| *o = w[0]);
        p1.iter_mut().zip(words).for_each(|(o, w)| *o = w[1]);
        p2.iter_mut().zip(words).for_each(|(o, w)| *o = w[2] & 0x7F | w[3] & 0x80);
    }
    vec![exp, p0, p1, p2]
}

#[multiversion::multiversion(targets = "simd")]
fn join_f32<P: AsRef<[u8]>>(planes: &[P], elements: usize) -> Vec<u8> {
    let plane = |k: usize| &planes[k].as_ref()[..elements];
    join_f32_words([plane(0), plane(1), plane(2), plane(3)]).collect::<Vec<_>>().into_flattened()
}

/// F32 elements joined from their byte planes and rounded to BF16 (an F32 base of a BF16
/// fine-tune), with the XXH3-64 of the F32 bytes, which the F32 chunk's checksum covers.
pub fn join_f32_as_bf16(planes: [&[u8]; 4]) -> (Vec<u8>, u64) {
    let mut hasher = twox_hash::XxHash3_64::new();
    let mut out = Vec::new();
    join_f32_as_bf16_hashing(planes, &mut hasher, &mut out);
    (out, std::hash::Hasher::finish(&hasher))
}

/// Elements rounded to BF16 a block at a time, so that each block's planes stay in the
/// first-level cache between the hash of their words and the rounding.
const ROUND_BLOCK: usize = 4096;

/// [`join_f32_as_bf16`] appending to `out`, the F32 bytes added to `hasher`.
#[multiversion::multiversion(targets = "simd")]
fn join_f32_as_bf16_hashing(planes: [&[u8]; 4], hasher: &mut twox_hash::XxHash3_64, out: &mut Vec<u8>) {
    let n = planes.iter().map(|p| p.len()).min().unwrap_or(0);
    let mut words: Vec<[u8; 4]> = Vec::with_capacity(ROUND_BLOCK.min(n));
    let mut rounded = vec![[0; 2]; ROUND_BLOCK.min(n)];
    // Appended a block at a time rather than zero-filled first: the fill was a pass of its own.
    out.reserve(2 * n);
    for start in (0..n).step_by(ROUND_BLOCK) {
        let block = planes.map(|p| &p[start..(start + ROUND_BLOCK).min(n)]);
        words.clear();
        words.extend(join_f32_words(block));
        std::hash::Hasher::write(hasher, words.as_flattened());
        let rounded = &mut rounded[..block[0].len()];
        round_block(block, rounded);
        out.extend_from_slice(rounded.as_flattened());
    }
}

/// F32 byte planes rounded to BF16 exactly as [`super::convert::bf16_of_f32`] rounds their
/// words, into `out`, made as long as they need: in 16-bit arithmetic straight from the
/// planes, so a vector holds twice the elements it would as words, and no words are built (2.2x
/// faster than through them). Written in place, so that a buffer reused for parts of one
/// length is neither filled nor copied into first.
#[multiversion::multiversion(targets = "simd")]
pub fn round_f32_planes_to_bf16(planes: [&[u8]; 4], out: &mut Vec<u8>) {
    let n = planes.iter().map(|p| p.len()).min().unwrap_or(0);
    out.resize(2 * n, 0);
    round_block(planes.map(|p| &p[..n]), out.as_chunks_mut::<2>().0);
}

/// Rounds the planes' elements (each plane at least as long as the first) into `out` (as
/// long). A plain index loop: iterator adapters here were left to a generic copy of their
/// `fold` that a multiversioned caller's features did not reach, and did not vectorise.
#[inline(always)]
fn round_block([e, p0, p1, p2]: [&[u8]; 4], out: &mut [[u8; 2]]) {
    let n = e.len();
    let (p0, p1, p2, out) = (&p0[..n], &p1[..n], &p2[..n], &mut out[..n]);
    for i in 0..n {
        out[i] = bf16_of_f32_bytes(e[i], p0[i], p1[i], p2[i]).to_le_bytes();
    }
}

/// The BF16 of the F32 with exponent byte `e`, mantissa bytes `p0` (lowest) and `p1`, and
/// `hi` (sign in bit 7, the top seven mantissa bits below it): round to nearest even, a NaN
/// kept a NaN with its quiet bit set, as [`super::convert::bf16_of_f32`].
#[inline(always)]
fn bf16_of_f32_bytes(e: u8, p0: u8, p1: u8, hi: u8) -> u16 {
    let (e, hi) = (u16::from(e), u16::from(hi));
    let top = ((hi & 0x80) << 8) | (e << 7) | (hi & 0x7F);
    let low = (u16::from(p1) << 8) | u16::from(p0);
    // Above half an ULP rounds up, and exactly half when that makes the result even.
    let carry = u16::from(low.saturating_add(top & 1) > 0x8000);
    let is_nan = e == 0xFF && (hi & 0x7F) | low != 0;
    // Select without a branch.
    let mask = 0u16.wrapping_sub(u16::from(is_nan));
    let rounded = top.wrapping_add(carry);
    rounded ^ ((rounded ^ (top | 0x40)) & mask)
}

/// The F32 words of byte planes (exponent, low, middle, sign and high mantissa bits), all of
/// the same length; an exact-size iterator, so collecting it writes in place and vectorises.
#[inline(always)]
pub fn join_f32_words<'a>([e, p0, p1, p2]: [&'a [u8]; 4]) -> impl Iterator<Item = [u8; 4]> + 'a {
    let low = p0.iter().zip(p1);
    let high = e.iter().zip(p2);
    low.zip(high).map(|((&p0, &p1), (&e, &hi))| {
        let hi = hi as u32;
        (((hi & 0x80) << 24) | ((e as u32) << 23) | ((hi & 0x7F) << 16) | ((p1 as u32) << 8) | p0 as u32).to_le_bytes()
    })
}

/// Reads a little-endian word of `W` bytes.
#[inline]
pub fn load<const W: usize>(c: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..W].copy_from_slice(&c[..W]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_join_round_trips_every_dtype(seed in proptest::collection::vec(any::<u8>(), 0..512), which in 0usize..DType::ALL.len()) {
            let dtype = DType::ALL[which];
            let g = Grouping::of(dtype);
            let n = seed.len() / g.width();
            let data = &seed[..n * g.width()];
            let planes = g.split(data);
            prop_assert!(planes.iter().all(|p| p.len() == n));
            prop_assert_eq!(g.join(&planes, n), data);
        }
    }

    #[test]
    fn split_join_round_trips_across_blocks() {
        for &dtype in DType::ALL {
            let g = Grouping::of(dtype);
            let n = 3 * SPLIT_BLOCK + 17;
            // Not periodic: every block differs from the others.
            let data: Vec<u8> =
                (0..(n * g.width()) as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
            let planes = g.split(&data);
            assert!(planes.iter().all(|p| p.len() == n), "{dtype}");
            assert_eq!(g.join(&planes, n), data, "{dtype}");
        }
    }

    #[test]
    fn fast_paths_match_the_general_layout() {
        let data: Vec<u8> = (0..4096u32).map(|i| i.wrapping_mul(2_654_435_761) as u8).collect();
        for dtype in [DType::BF16, DType::F32] {
            let g = Grouping::of(dtype);
            let general = match dtype {
                DType::BF16 => g.split_words::<2>(&data),
                _ => g.split_words::<4>(&data),
            };
            assert_eq!(g.split(&data), general, "{dtype}");
        }
    }

    /// Rounds F32 `words` to BF16 both ways: from their planes, and word by word.
    fn rounded_both_ways(words: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let planes = Grouping::of(DType::F32).split(words);
        // Stale bytes in the buffer, which the rounding must replace.
        let mut from_planes = vec![0xA5; 2 * words.len() / 4 + 3];
        round_f32_planes_to_bf16(std::array::from_fn(|k| &planes[k][..]), &mut from_planes);
        let by_word = words
            .as_chunks::<4>()
            .0
            .iter()
            .flat_map(|w| super::super::convert::bf16_of_f32(u32::from_le_bytes(*w)))
            .collect();
        (from_planes, by_word)
    }

    proptest! {
        #[test]
        fn planes_round_to_bf16_as_words_do(words in proptest::collection::vec(any::<u32>(), 0..10_000)) {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let (from_planes, by_word) = rounded_both_ways(&bytes);
            prop_assert_eq!(from_planes, by_word);
        }
    }

    #[test]
    fn planes_round_ties_infinities_and_nans_as_words_do() {
        // Around every tie, carry into the exponent, the largest finite values, infinities and
        // NaNs (quiet and signalling, both signs), and the extremes of the low half.
        let tops = [0x0000u32, 0x0001, 0x3F80, 0x3F81, 0x7F7F, 0x7F80, 0x7F81, 0x7FBF, 0x7FC0, 0x7FFF];
        let lows = [0x0000u32, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF];
        let words: Vec<u8> = tops
            .iter()
            .flat_map(|&t| [t, t | 0x8000])
            .flat_map(|t| lows.map(|l| (t << 16) | l))
            .flat_map(u32::to_le_bytes)
            .collect();
        let (from_planes, by_word) = rounded_both_ways(&words);
        assert_eq!(from_planes, by_word);
    }

    /// Speed of rounding F32 planes to BF16 a 4096-element part at a time, with and without
    /// the hash of their words (a standalone chunk, a part of a chain).
    #[test]
    #[ignore = "benchmark; run with --release --nocapture"]
    fn planes_to_bf16_throughput() {
        let words: Vec<u8> = (0..(4u64 << 20)).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
        let planes = Grouping::of(DType::F32).split(&words);
        let n = words.len() / 4;
        let rounds = 100;
        let time = |round: fn([&[u8]; 4], &mut Vec<u8>)| {
            let mut out = Vec::with_capacity(8192);
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                for start in (0..n).step_by(4096) {
                    round(std::array::from_fn(|k| &planes[k][start..start + 4096]), &mut out);
                }
            }
            t.elapsed().as_secs_f64() * 1e9 / (rounds * n) as f64
        };
        let hashing = time(|p, out| {
            out.clear();
            join_f32_as_bf16_hashing(p, &mut twox_hash::XxHash3_64::new(), out)
        });
        let from_planes = time(round_f32_planes_to_bf16);
        println!("ns per element: joined, hashed and rounded {hashing:.3}, rounded from planes {from_planes:.3}");
    }

    #[test]
    fn bf16_splits_into_exponent_and_sign_mantissa() {
        let g = Grouping::of(DType::BF16);
        // -1.0 in BF16 is 0xBF80: sign 1, exponent 0x7F, mantissa 0.
        let planes = g.split(&0xBF80u16.to_le_bytes());
        assert_eq!(planes, vec![vec![0x7F], vec![0x80]]);
    }
}
