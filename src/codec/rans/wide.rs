//! The wide rANS block (tag `0xA2`): 64 interleaved lanes of 32-bit states with 16-bit
//! renormalisation, every table coded at `2^12`.
//!
//! The 8-lane block's decoder is bound by its scalar instruction count (~2 ns per symbol here).
//! Sixty-four independent lanes let a vector decoder keep four 16-lane registers in flight, so
//! that the latency of its two gathers per symbol is hidden: on the blocks of a real BF16
//! checkout it decodes 2.4x faster. Thirty-two lanes measured only 1.9x, 128 no better than 64.
//!
//! The stream section holds `min(n, 64)` initial states (u32, lane 0 first, each in
//! `[2^16, 2^32)`) followed by u16 renormalisation words, and must be consumed exactly. Every
//! table is used at scale 12: a table written at scale `s` has its frequencies and starts
//! multiplied by `2^(12 - s)`. Symbol `i` is decoded by lane `i % 64` with the table of
//! `contexts[i]`: `slot = x mod 2^12` selects the symbol `s` with
//! `start_s <= slot < start_s + f_s`, then `x = f_s * (x >> 12) + slot - start_s`. After
//! symbols `64k..64k+64` (or the last, shorter group) are decoded, the group's lanes in order
//! whose state is below `2^16` read one word: `x = (x << 16) | word`. After the last symbol
//! every lane is back at `2^16`.

use super::{RansError, TableSpec};

/// Interleaved lanes.
const LANES: usize = 64;
/// The scale every table is coded at.
pub(super) const SCALE: u32 = 12;
const M: u32 = 1 << SCALE;
/// Lower bound of the normalised state interval `[L, 2^32)`.
const L: u32 = 1 << 16;
/// Groups of `LANES` symbols the encoder runs between flushes of its scratch buffer.
const SEGMENT_GROUPS: usize = 256;

/// Frequency and start of every symbol of a table written at `scale`, scaled to `2^12`.
fn upscaled(scale: u32, freqs: &[u32; 256]) -> [(u32, u32); 256] {
    let up = SCALE - scale;
    let mut start = 0;
    freqs.map(|f| {
        let entry = (f << up, start);
        start += f << up;
        entry
    })
}

// ---------------------------------------------------------------------------------------------
// Encoder

/// Every table's encoding constants, one table after another: entry `base[c] + s` encodes
/// symbol `s` under the table of context `c`.
pub(super) struct EncTables {
    /// `freq | start << 16` (both at most `2^12`).
    fs: Vec<u32>,
    /// `ceil(2^44 / freq)` (0 for absent symbols): `(x * rcp) >> 44` is `x / freq` for every
    /// `x < 2^32` because the error, below `2^32 / 2^44`, never reaches `1 / freq`.
    rcp: Vec<u64>,
    /// Offset of each context's table. Contexts that never occur may have no table; they get
    /// an empty one after the others.
    base: [u32; 256],
    /// `base / 256`, when all fit a byte: the vector encoder looks them up with byte permutes.
    number: Option<[u8; 256]>,
}

impl EncTables {
    fn new(specs: &[TableSpec], table_of: &[u16; 256]) -> EncTables {
        let entries = specs.iter().flat_map(|spec| upscaled(spec.scale, &spec.freqs)).chain([(0, 0); 256]);
        let (fs, rcp) = entries
            .map(|(freq, start)| {
                (freq | start << 16, if freq == 0 { 0 } else { (1u64 << 44).div_ceil(u64::from(freq)) })
            })
            .unzip();
        let unused = specs.len() * 256;
        let base = table_of.map(|t| (usize::from(t) * 256).min(unused) as u32);
        EncTables { fs, rcp, base, number: byte_numbers(base.map(|b| b / 256)) }
    }

    /// Encodes a group's symbols into their lanes' states, from the last lane to the first.
    fn put_group(&self, states: &mut [u32; LANES], group: &[u8], contexts: &[u8], words: &mut [u16], pos: &mut usize) {
        for ((x, &s), &c) in states.iter_mut().zip(group).zip(contexts).rev() {
            self.put(x, s, c, words, pos);
        }
    }

    /// Encodes symbol `s` under context `c` into state `x`, first emitting a word if the state
    /// would overflow (`x >= freq << 20`, asked without overflow as `x >> 20 >= freq`).
    ///
    /// The word is stored unconditionally at `words[*pos]` and kept only if needed: the branch
    /// would be mispredicted too often to pay off.
    #[inline(always)]
    fn put(&self, x: &mut u32, s: u8, c: u8, words: &mut [u16], pos: &mut usize) {
        let i = self.base[usize::from(c)] as usize + usize::from(s);
        let (fs, rcp) = (self.fs[i], self.rcp[i]);
        let (freq, start) = (fs & 0xffff, fs >> 16);
        let flush = *x >> (32 - SCALE) >= freq;
        words[*pos] = *x as u16;
        *pos += usize::from(flush);
        *x = if flush { *x >> 16 } else { *x };
        let q = ((u128::from(*x) * u128::from(rcp)) >> 44) as u32;
        *x += start + q * (M - freq);
    }
}

/// Encodes whole groups, last to first, exactly as [`EncTables::put_group`] would, advancing
/// the states and storing the words emitted at `words[*pos..]`; false, having changed
/// nothing, if its bounds do not hold (the scalar loop then runs). Unsafe to call on a CPU
/// without the encoder's features.
type VectorEncoder = unsafe fn(&EncTables, &mut [u32; LANES], &[u8], &[u8], &mut [u16], &mut usize) -> bool;

/// The whole groups of `symbols` a vector encoder may encode into `words` from `pos`: None if
/// `words` lacks a slot for every step or the tables disagree in length.
fn vector_groups(tables: &EncTables, symbols: &[u8], contexts: &[u8], words: &[u16], pos: usize) -> Option<usize> {
    let groups = symbols.len().min(contexts.len()) / LANES;
    (groups * LANES <= words.len().saturating_sub(pos) && tables.fs.len() == tables.rcp.len()).then_some(groups)
}

/// The fastest vector encoder this CPU can run, if any.
fn vector_encoder() -> Option<VectorEncoder> {
    vector_encoders().next()
}

/// Every vector encoder this CPU has the features for, fastest first.
#[cfg(target_arch = "x86_64")]
fn vector_encoders() -> impl Iterator<Item = VectorEncoder> {
    supported::<VectorEncoder>(avx512::encode_groups, avx2::encode_groups)
}

#[cfg(not(target_arch = "x86_64"))]
fn vector_encoders() -> impl Iterator<Item = VectorEncoder> {
    std::iter::empty()
}

/// Of an AVX-512 and an AVX2 version of a coder, those this CPU has the features for, fastest
/// first (asked once per block: nothing is allocated).
#[cfg(target_arch = "x86_64")]
fn supported<T>(with_avx512: T, with_avx2: T) -> impl Iterator<Item = T> {
    [avx512::available().then_some(with_avx512), avx2::available().then_some(with_avx2)].into_iter().flatten()
}

/// Encodes `symbols` under the tables `specs` (the table of context `c` is
/// `specs[table_of[c]]`) and appends the stream section to `out`.
pub(super) fn encode_streams(
    symbols: &[u8],
    contexts: &[u8],
    specs: &[TableSpec],
    table_of: &[u16; 256],
    out: &mut Vec<u8>,
) {
    encode_streams_with(symbols, contexts, &EncTables::new(specs, table_of), out, vector_encoder());
}

fn encode_streams_with(
    symbols: &[u8],
    contexts: &[u8],
    tables: &EncTables,
    out: &mut Vec<u8>,
    vector: Option<VectorEncoder>,
) {
    let mut states = [L; LANES];
    let mut words: Vec<u16> = Vec::with_capacity(symbols.len() / 8);
    // Every step may emit a word, so segments go through a scratch buffer with a slot per step;
    // only the words actually emitted are kept.
    let mut scratch = vec![0u16; symbols.len().min(SEGMENT_GROUPS * LANES)];
    // Segments start at multiples of the group length, as groups do.
    let segments = symbols.chunks(SEGMENT_GROUPS * LANES).zip(contexts.chunks(SEGMENT_GROUPS * LANES));
    for (segment, segment_contexts) in segments.rev() {
        let mut pos = 0;
        // The block's shorter last group, if it is in this segment, comes first.
        let whole = segment.len() / LANES * LANES;
        tables.put_group(&mut states, &segment[whole..], &segment_contexts[whole..], &mut scratch, &mut pos);
        let (segment, segment_contexts) = (&segment[..whole], &segment_contexts[..whole]);
        // SAFETY: `vector_encoder` returns only an encoder whose features this CPU has.
        let encoded = vector.is_some_and(|encode_groups| unsafe {
            encode_groups(tables, &mut states, segment, segment_contexts, &mut scratch, &mut pos)
        });
        if !encoded {
            for (group, group_contexts) in segment.chunks(LANES).zip(segment_contexts.chunks(LANES)).rev() {
                tables.put_group(&mut states, group, group_contexts, &mut scratch, &mut pos);
            }
        }
        words.extend_from_slice(&scratch[..pos]);
    }
    out.reserve(4 * LANES + 2 * words.len());
    for x in &states[..symbols.len().min(LANES)] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    // The words were emitted last-to-first.
    out.extend(words.iter().rev().flat_map(|w| w.to_le_bytes()));
}

// ---------------------------------------------------------------------------------------------
// Decoder

/// Every table's slots, each `freq - 1 | (slot - start) << 12 | symbol << 24`, one table after
/// another, so that one load per symbol gives its symbol and the state update.
pub(super) struct DecTables {
    entries: Vec<u32>,
    /// Offset of each context's table in `entries` (0 for contexts without one, which
    /// `DecModel::check_contexts` rejects before decoding).
    base: [u32; 256],
    /// Each context's table number, when all fit a byte (always, in blocks this crate writes):
    /// the vector decoder looks them up with byte permutes, as a gather is slow.
    number: Option<[u8; 256]>,
}

impl DecTables {
    /// Lays out validated tables (frequencies summing to `2^scale`, `scale <= 12`).
    pub(super) fn new(parsed: &[(u32, [u32; 256])], table_of: &[Option<u16>; 256]) -> DecTables {
        let mut entries = Vec::with_capacity(parsed.len() * M as usize);
        for (scale, freqs) in parsed {
            for (symbol, (freq, _)) in upscaled(*scale, freqs).into_iter().enumerate() {
                entries.extend((0..freq).map(|k| (freq - 1) | k << 12 | (symbol as u32) << 24));
            }
        }
        let base = table_of.map(|t| t.map_or(0, |t| u32::from(t) * M));
        DecTables { entries, base, number: byte_numbers(base.map(|b| b / M)) }
    }

    /// Decodes one symbol from state `x` under the table of context `c`.
    #[inline(always)]
    fn step(&self, x: &mut u32, c: u8) -> u8 {
        let slot = *x & (M - 1);
        let e = self.entries.get((self.base[usize::from(c)] + slot) as usize).copied().unwrap_or(0);
        *x = ((e & 0xfff) + 1) * (*x >> SCALE) + ((e >> 12) & 0xfff);
        (e >> 24) as u8
    }
}

/// Table numbers as bytes, if they all fit one.
fn byte_numbers(numbers: [u32; 256]) -> Option<[u8; 256]> {
    let mut bytes = [0u8; 256];
    for (b, n) in bytes.iter_mut().zip(numbers) {
        *b = u8::try_from(n).ok()?;
    }
    Some(bytes)
}

/// Sequential reader of the renormalisation words; past the end it yields zeros and notes it.
struct Words<'a> {
    rest: &'a [u8],
    overrun: bool,
}

impl Words<'_> {
    #[inline(always)]
    fn refill(&mut self, x: &mut u32) {
        if *x < L {
            let word = match self.rest.split_first_chunk::<2>() {
                Some((word, rest)) => {
                    self.rest = rest;
                    u16::from_le_bytes(*word)
                }
                None => {
                    self.overrun = true;
                    0
                }
            };
            *x = (*x << 16) | u32::from(word);
        }
    }
}

/// The 64 lanes of a wide block being decoded, a part at a time (see [`super::Decoder`]).
pub(super) struct Lanes<'d> {
    tables: DecTables,
    states: [u32; LANES],
    words: Words<'d>,
    used: usize,
    /// The lane of the group under way that decodes the next symbol.
    next: usize,
    vector: Option<VectorDecoder>,
}

impl<'d> Lanes<'d> {
    /// Reads the initial states of a block of `n` symbols from its stream section.
    pub(super) fn new(tables: DecTables, stream: &'d [u8], n: usize) -> Result<Self, RansError> {
        Lanes::with_vector(tables, stream, n, vector_decoder())
    }

    fn with_vector(
        tables: DecTables,
        stream: &'d [u8],
        n: usize,
        vector: Option<VectorDecoder>,
    ) -> Result<Self, RansError> {
        let used = n.min(LANES);
        let mut states = [L; LANES];
        let mut rest = stream;
        for x in &mut states[..used] {
            let (bytes, tail) = rest.split_first_chunk::<4>().ok_or(RansError::Truncated)?;
            *x = u32::from_le_bytes(*bytes);
            rest = tail;
            if *x < L {
                return Err(RansError::Corrupt("initial state out of range"));
            }
        }
        Ok(Lanes { tables, states, words: Words { rest, overrun: false }, used, next: 0, vector })
    }

    /// Decodes the next `out.len()` symbols under `contexts` (as many); `ends` if they are the
    /// block's last (see [`super::step_lanes`]).
    pub(super) fn decode(&mut self, contexts: &[u8], out: &mut [u8], ends: bool) {
        let Lanes { tables, states, words, next, .. } = self;
        // A group a part before this one began, then whole groups, then whatever is left.
        let head = out.len().min((LANES - *next) % LANES);
        let (head_out, out) = out.split_at_mut(head);
        let (head_contexts, contexts) = contexts.split_at(head);
        let step = |x: &mut u32, c: u8| tables.step(x, c);
        super::step_lanes(states, next, head_contexts, head_out, false, step, |x| words.refill(x));
        // The vector decoder needs at least one whole table to gather from.
        let done = match self.vector {
            // SAFETY: `vector_decoders` lists only decoders whose features this CPU has.
            Some(decode_groups) if *next == 0 && tables.entries.len() >= M as usize => unsafe {
                decode_groups(tables, states, &mut words.rest, contexts, out)
            },
            _ => 0,
        };
        let (rest_contexts, rest_out) = (&contexts[done..], &mut out[done..]);
        super::step_lanes(states, next, rest_contexts, rest_out, ends, step, |x| words.refill(x));
    }

    /// Checks that the stream section was consumed exactly.
    pub(super) fn finish(self) -> Result<(), RansError> {
        if self.words.overrun {
            return Err(RansError::Truncated);
        }
        if self.states[..self.used].iter().any(|&x| x != L) {
            return Err(RansError::Corrupt("final state mismatch"));
        }
        if !self.words.rest.is_empty() {
            return Err(RansError::Corrupt("trailing bytes after the streams"));
        }
        Ok(())
    }
}

/// The fastest vector decoder this CPU can run, if any.
fn vector_decoder() -> Option<VectorDecoder> {
    vector_decoders().next()
}

/// Every vector decoder this CPU has the features for, fastest first.
#[cfg(target_arch = "x86_64")]
fn vector_decoders() -> impl Iterator<Item = VectorDecoder> {
    supported::<VectorDecoder>(avx512::decode_groups, avx2::decode_groups)
}

#[cfg(not(target_arch = "x86_64"))]
fn vector_decoders() -> impl Iterator<Item = VectorDecoder> {
    std::iter::empty()
}

/// Decodes whole groups from the start of a block while at least a group's worth of words is
/// left, advancing the states and the words; returns the number of symbols decoded. Unsafe
/// to call on a CPU without the decoder's features.
type VectorDecoder = unsafe fn(&DecTables, &mut [u32; LANES], &mut &[u8], &[u8], &mut [u8]) -> usize;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{DecTables, EncTables, L, LANES, M};

    /// Lanes per vector.
    const WIDTH: usize = 16;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vbmi")
            && is_x86_feature_detected!("avx512vbmi2")
            && is_x86_feature_detected!("popcnt")
    }

    /// Decodes whole groups of 64 symbols in four vectors of 16 lanes, exactly as the scalar
    /// loop does: each vector decodes its lanes, then refills them in lane order. The table of
    /// each context is found by byte permutes over the 256 table numbers, so one gather per
    /// vector remains (of the table entry). The four vectors' refill offsets are summed from
    /// all four masks at once, so no vector's refill waits for the one before it.
    ///
    /// Bounds: contexts and output are touched only within `groups * 64 <= out.len()` (and
    /// `contexts.len() == out.len()`); a group reads at most 64 words (each vector loads 16 from
    /// its offset, which is at most 48) and runs only while `words` holds 64; every gathered
    /// index is a table offset plus a slot (< `entries.len()`, as every context's table number
    /// is that of a whole table).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    pub(super) fn decode_groups(
        tables: &DecTables,
        states: &mut [u32; LANES],
        words: &mut &[u8],
        contexts: &[u8],
        out: &mut [u8],
    ) -> usize {
        let Some(number) = tables.number else { return 0 };
        let groups = out.len().min(contexts.len()) / LANES;
        let entries = tables.entries.as_ptr().cast::<i32>();
        let numbers = table_numbers(&number);
        // SAFETY (all blocks below): see the bounds above; loads and stores are unaligned.
        let [mut x0, mut x1, mut x2, mut x3]: [__m512i; LANES / WIDTH] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_si512(states.as_ptr().add(v * WIDTH).cast()) });
        let mut g = 0;
        while g < groups && words.len() >= 2 * LANES {
            let at = g * LANES;
            // SAFETY: the group's 64 contexts are in bounds.
            let tables_of_group = unsafe { look_up(&numbers, contexts.as_ptr().add(at)) };
            let mut step = |x: __m512i, v: usize| unsafe {
                let (next, symbols) = decode_step(x, quarter(tables_of_group, v), entries);
                _mm_storeu_si128(out.as_mut_ptr().add(at + v * WIDTH).cast(), symbols);
                (next, _mm512_cmplt_epu32_mask(next, _mm512_set1_epi32(L as i32)))
            };
            let ((n0, m0), (n1, m1), (n2, m2), (n3, m3)) = (step(x0, 0), step(x1, 1), step(x2, 2), step(x3, 3));
            let (r1, r2, r3) = (m0.count_ones() as usize, m1.count_ones() as usize, m2.count_ones() as usize);
            let (o1, o2, o3) = (2 * r1, 2 * (r1 + r2), 2 * (r1 + r2 + r3));
            let refill = |next: __m512i, mask: __mmask16, offset: usize| unsafe {
                let fresh =
                    _mm256_maskz_expand_epi16(mask, in_register(_mm256_loadu_si256(words.as_ptr().add(offset).cast())));
                _mm512_mask_or_epi32(next, mask, _mm512_slli_epi32::<16>(next), _mm512_cvtepu16_epi32(fresh))
            };
            (x0, x1, x2, x3) = (refill(n0, m0, 0), refill(n1, m1, o1), refill(n2, m2, o2), refill(n3, m3, o3));
            *words = &words[o3 + 2 * m3.count_ones() as usize..];
            g += 1;
        }
        for (v, x) in [x0, x1, x2, x3].iter().enumerate() {
            unsafe { _mm512_storeu_si512(states.as_mut_ptr().add(v * WIDTH).cast(), *x) };
        }
        g * LANES
    }

    /// `v`, which the compiler must then hold in a register: left to itself, LLVM folds a load
    /// feeding `vpexpandw` into the instruction's memory form, which AMD's Zen cores run
    /// microcoded (the decoder ran 25-40% faster on Zen 5 with the load apart).
    #[target_feature(enable = "avx")]
    #[inline]
    fn in_register(mut v: __m256i) -> __m256i {
        // SAFETY: an empty template: nothing is executed, read or written.
        unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) v, options(pure, nomem, nostack, preserves_flags)) };
        v
    }

    /// One symbol from each of 16 lanes with the tables numbered in `tables`: the lanes'
    /// states before renormalisation, and the symbols.
    ///
    /// SAFETY: every table number must be that of a whole table in `entries`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn decode_step(x: __m512i, tables: __m128i, entries: *const i32) -> (__m512i, __m128i) {
        let field = _mm512_set1_epi32(0xfff);
        let table = _mm512_slli_epi32::<{ super::SCALE }>(_mm512_cvtepu8_epi32(tables));
        let slot = _mm512_and_si512(x, _mm512_set1_epi32(M as i32 - 1));
        // SAFETY: the caller's.
        let e = unsafe { _mm512_i32gather_epi32::<4>(_mm512_add_epi32(table, slot), entries) };
        let freq = _mm512_add_epi32(_mm512_and_si512(e, field), _mm512_set1_epi32(1));
        let bias = _mm512_and_si512(_mm512_srli_epi32::<12>(e), field);
        let next = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32::<12>(x)), bias);
        (next, _mm512_cvtepi32_epi8(_mm512_srli_epi32::<24>(e)))
    }

    /// The 256 table numbers of a block in four vectors.
    #[target_feature(enable = "avx512f")]
    fn table_numbers(number: &[u8; 256]) -> [__m512i; 4] {
        // SAFETY: four 64-byte loads within the array.
        std::array::from_fn(|k| unsafe { _mm512_loadu_si512(number.as_ptr().add(k * 64).cast()) })
    }

    /// The table numbers of the 64 contexts at `contexts`: two 128-byte permutes, one for
    /// contexts below 128 and one for the rest, blended on the context's top bit.
    ///
    /// SAFETY: `contexts` must be valid for 64 bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn look_up(numbers: &[__m512i; 4], contexts: *const u8) -> __m512i {
        // SAFETY: the caller's.
        let c = unsafe { _mm512_loadu_si512(contexts.cast()) };
        let low = _mm512_permutex2var_epi8(numbers[0], c, numbers[1]);
        let high = _mm512_permutex2var_epi8(numbers[2], c, numbers[3]);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), low, high)
    }

    /// Bytes `16 v .. 16 v + 16` of a vector.
    #[target_feature(enable = "avx512f")]
    fn quarter(bytes: __m512i, v: usize) -> __m128i {
        match v {
            0 => _mm512_extracti32x4_epi32::<0>(bytes),
            1 => _mm512_extracti32x4_epi32::<1>(bytes),
            2 => _mm512_extracti32x4_epi32::<2>(bytes),
            _ => _mm512_extracti32x4_epi32::<3>(bytes),
        }
    }

    /// Encodes whole groups of 64 symbols, last to first, exactly as the scalar loop does:
    /// lanes in descending order, each emitting its word before it encodes. A vector holds 16
    /// lanes in descending order, so that a compressing store emits their words in that order.
    ///
    /// Bounds: `symbols` and `contexts` are read only within `groups * 64` of both lengths;
    /// `words` has a slot for every symbol past `*pos` (the caller's scratch); every gathered
    /// index is a table offset plus a symbol (< `fs.len()`, as every context's table number
    /// is that of a whole table).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    pub(super) fn encode_groups(
        tables: &EncTables,
        states: &mut [u32; LANES],
        symbols: &[u8],
        contexts: &[u8],
        words: &mut [u16],
        pos: &mut usize,
    ) -> bool {
        let (Some(groups), Some(number)) =
            (super::vector_groups(tables, symbols, contexts, words, *pos), tables.number)
        else {
            return false;
        };
        let reverse_bytes = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let reverse = _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let low_half = _mm512_set1_epi32(0xffff);
        let m = _mm512_set1_epi32(M as i32);
        let (fs, rcp) = (tables.fs.as_ptr().cast::<i32>(), tables.rcp.as_ptr().cast::<i64>());
        let numbers = table_numbers(&number);
        // SAFETY (all blocks below): see the bounds above; loads and stores are unaligned.
        let mut x: [__m512i; LANES / WIDTH] = std::array::from_fn(|v| unsafe {
            _mm512_permutexvar_epi32(reverse, _mm512_loadu_si512(states.as_ptr().add(v * WIDTH).cast()))
        });
        let load_reversed = |bytes: &[u8], at: usize| unsafe {
            _mm512_cvtepu8_epi32(_mm_shuffle_epi8(_mm_loadu_si128(bytes.as_ptr().add(at).cast()), reverse_bytes))
        };
        for g in (0..groups).rev() {
            let tables_of_group = unsafe { look_up(&numbers, contexts.as_ptr().add(g * LANES)) };
            // Every vector's flush is known before any is stored: their offsets are summed at once
            // rather than each store waiting for the count of the one before.
            let flushes: [_; LANES / WIDTH] = std::array::from_fn(|v| unsafe {
                let at = g * LANES + v * WIDTH;
                let table = _mm512_cvtepu8_epi32(_mm_shuffle_epi8(quarter(tables_of_group, v), reverse_bytes));
                let i = _mm512_add_epi32(_mm512_slli_epi32::<8>(table), load_reversed(symbols, at));
                let e = _mm512_i32gather_epi32::<4>(i, fs);
                let (freq, start) = (_mm512_and_si512(e, low_half), _mm512_srli_epi32::<16>(e));
                (i, freq, start, _mm512_cmpge_epu32_mask(_mm512_srli_epi32::<20>(x[v]), freq))
            });
            for (x, (i, freq, start, flush)) in x.iter_mut().zip(flushes).rev() {
                unsafe {
                    _mm256_mask_compressstoreu_epi16(
                        words.as_mut_ptr().add(*pos).cast(),
                        flush,
                        _mm512_cvtepi32_epi16(*x),
                    );
                    *pos += flush.count_ones() as usize;
                    let y = _mm512_mask_srli_epi32::<16>(*x, flush, *x);
                    let q = quotient(y, i, rcp);
                    *x = _mm512_add_epi32(_mm512_add_epi32(y, start), _mm512_mullo_epi32(q, _mm512_sub_epi32(m, freq)));
                }
            }
        }
        for (v, x) in x.iter().enumerate() {
            unsafe {
                _mm512_storeu_si512(states.as_mut_ptr().add(v * WIDTH).cast(), _mm512_permutexvar_epi32(reverse, *x))
            };
        }
        true
    }

    /// `(x * rcp[i]) >> 44` in every lane, as the scalar encoder computes it, in two halves of
    /// 64-bit lanes: with `rcp = hi << 32 | lo`, it is `(x * hi + (x * lo >> 32)) >> 12`, as the
    /// bits dropped from `x * lo` cannot carry past the twelve shifted out.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2")]
    unsafe fn quotient(x: __m512i, i: __m512i, rcp: *const i64) -> __m512i {
        let half = |x: __m256i, i: __m256i| {
            // SAFETY: the caller's bounds hold for every index in `i`.
            let r = unsafe { _mm512_i32gather_epi64::<8>(i, rcp) };
            let x = _mm512_cvtepu32_epi64(x);
            let lo = _mm512_mul_epu32(x, r);
            let hi = _mm512_mul_epu32(x, _mm512_srli_epi64::<32>(r));
            _mm512_cvtepi64_epi32(_mm512_srli_epi64::<12>(_mm512_add_epi64(hi, _mm512_srli_epi64::<32>(lo))))
        };
        let low = half(_mm512_castsi512_si256(x), _mm512_castsi512_si256(i));
        let high = half(_mm512_extracti64x4_epi64::<1>(x), _mm512_extracti64x4_epi64::<1>(i));
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{DecTables, EncTables, L, LANES, M};

    /// Lanes per vector.
    const WIDTH: usize = 8;

    /// For each mask of lanes that flush, the byte shuffle that moves their 16-bit words, from
    /// the highest lane down (the scalar encoder's order), to the front.
    static COMPACT: [[u8; 16]; 256] = compact_table();

    const fn compact_table() -> [[u8; 16]; 256] {
        let mut table = [[0x80u8; 16]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut lane, mut next) = (WIDTH, 0);
            while lane > 0 {
                lane -= 1;
                if mask >> lane & 1 == 1 {
                    table[mask][2 * next] = 2 * lane as u8;
                    table[mask][2 * next + 1] = 2 * lane as u8 + 1;
                    next += 1;
                }
            }
            mask += 1;
        }
        table
    }

    /// For each mask of lanes that refill, the byte shuffle that moves the next words (one per
    /// refilling lane, in lane order) to those lanes' 16-bit positions; other lanes get zero.
    static SPREAD: [[u8; 16]; 256] = spread_table();

    const fn spread_table() -> [[u8; 16]; 256] {
        let mut table = [[0x80u8; 16]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut lane, mut next) = (0, 0u8);
            while lane < WIDTH {
                if mask >> lane & 1 == 1 {
                    table[mask][2 * lane] = 2 * next;
                    table[mask][2 * lane + 1] = 2 * next + 1;
                    next += 1;
                }
                lane += 1;
            }
            mask += 1;
        }
        table
    }

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt")
    }

    /// The table offset of each of a group's 64 contexts. Scalar loads: on Zen 3 an 8-lane
    /// gather costs more than eight loads (rANS decode 556 → 650 Msym/s with this alone).
    #[inline(always)]
    fn group_offsets(base: &[u32; 256], contexts: &[u8]) -> [u32; LANES] {
        let mut offsets = [0u32; LANES];
        for (o, &c) in offsets.iter_mut().zip(contexts) {
            *o = base[usize::from(c)];
        }
        offsets
    }

    /// `table[i]` for each lane's index `i`, by scalar loads (see [`group_offsets`]).
    ///
    /// SAFETY: every index must be within `table`'s allocation.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load_each(table: *const u32, indices: __m256i) -> __m256i {
        let mut at = [0u32; WIDTH];
        // SAFETY: `at` holds 32 bytes; the indices are the caller's.
        unsafe {
            _mm256_storeu_si256(at.as_mut_ptr().cast(), indices);
            let values = at.map(|i| *table.add(i as usize));
            _mm256_loadu_si256(values.as_ptr().cast())
        }
    }

    /// As the AVX-512 decoder, in eight vectors of 8 lanes, with table offsets and entries read
    /// by scalar loads; the words a vector's refilling lanes read are spread to them by a byte
    /// shuffle from a 16-byte load.
    ///
    /// Bounds: as for the AVX-512 decoder; the 16-byte load of a vector starts at most 112
    /// bytes into the 128 that a group may read.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) fn decode_groups(
        tables: &DecTables,
        states: &mut [u32; LANES],
        words: &mut &[u8],
        contexts: &[u8],
        out: &mut [u8],
    ) -> usize {
        let groups = out.len().min(contexts.len()) / LANES;
        let slot_mask = _mm256_set1_epi32(M as i32 - 1);
        let field = _mm256_set1_epi32(0xfff);
        let one = _mm256_set1_epi32(1);
        let below = _mm256_set1_epi32(L as i32 - 1);
        // Byte 3 of each 32-bit lane to the low four bytes of its 128-bit half, then both
        // halves' four bytes together.
        let top_bytes = _mm256_setr_epi8(
            3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1,
        );
        let halves = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
        let entries = tables.entries.as_ptr();
        // SAFETY (all blocks below): see the bounds above; loads and stores are unaligned.
        let mut x: [__m256i; LANES / WIDTH] =
            std::array::from_fn(|v| unsafe { _mm256_loadu_si256(states.as_ptr().add(v * WIDTH).cast()) });
        let mut g = 0;
        while g < groups && words.len() >= 2 * LANES {
            let offsets = group_offsets(&tables.base, &contexts[g * LANES..]);
            let words_now = *words;
            // Called once per vector by name, so that the eight states stay in registers.
            let mut step = |x: &mut __m256i, v: usize, read: usize| -> usize {
                let at = g * LANES + v * WIDTH;
                unsafe {
                    let table = _mm256_loadu_si256(offsets.as_ptr().add(v * WIDTH).cast());
                    let e = load_each(entries, _mm256_add_epi32(table, _mm256_and_si256(*x, slot_mask)));
                    let freq = _mm256_add_epi32(_mm256_and_si256(e, field), one);
                    let bias = _mm256_and_si256(_mm256_srli_epi32::<12>(e), field);
                    let next = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srli_epi32::<12>(*x)), bias);
                    let symbols = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(e, top_bytes), halves);
                    _mm_storel_epi64(out.as_mut_ptr().add(at).cast(), _mm256_castsi256_si128(symbols));
                    // Unsigned `next < L`: the minimum with `L - 1` is `next` itself.
                    let refill = _mm256_cmpeq_epi32(_mm256_min_epu32(next, below), next);
                    let mask = _mm256_movemask_ps(_mm256_castsi256_ps(refill)) as usize;
                    let loaded = _mm_loadu_si128(words_now.as_ptr().add(read).cast());
                    let spread = _mm_shuffle_epi8(loaded, _mm_loadu_si128(SPREAD[mask].as_ptr().cast()));
                    let shifted = _mm256_or_si256(_mm256_slli_epi32::<16>(next), _mm256_cvtepu16_epi32(spread));
                    *x = _mm256_blendv_epi8(next, shifted, refill);
                    read + 2 * mask.count_ones() as usize
                }
            };
            let [x0, x1, x2, x3, x4, x5, x6, x7] = &mut x;
            let mut read = step(x0, 0, 0);
            read = step(x1, 1, read);
            read = step(x2, 2, read);
            read = step(x3, 3, read);
            read = step(x4, 4, read);
            read = step(x5, 5, read);
            read = step(x6, 6, read);
            read = step(x7, 7, read);
            *words = &words[read..];
            g += 1;
        }
        for (v, x) in x.iter().enumerate() {
            unsafe { _mm256_storeu_si256(states.as_mut_ptr().add(v * WIDTH).cast(), *x) };
        }
        g * LANES
    }

    /// As the AVX-512 encoder, in eight vectors of 8 lanes from the highest: each vector's
    /// flushing lanes' words are moved to the front by a byte shuffle and stored at once, and
    /// the table entries are read by scalar loads (see [`group_offsets`]).
    ///
    /// Bounds: as for the AVX-512 encoder; a vector stores 16 bytes at `words[*pos..]`, within
    /// the slots of the steps not yet taken.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) fn encode_groups(
        tables: &EncTables,
        states: &mut [u32; LANES],
        symbols: &[u8],
        contexts: &[u8],
        words: &mut [u16],
        pos: &mut usize,
    ) -> bool {
        let Some(groups) = super::vector_groups(tables, symbols, contexts, words, *pos) else { return false };
        let low_half = _mm256_set1_epi32(0xffff);
        let m = _mm256_set1_epi32(M as i32);
        let (fs, rcp) = (tables.fs.as_ptr(), tables.rcp.as_ptr());
        // SAFETY (all blocks below): see the bounds above; loads and stores are unaligned.
        let mut x: [__m256i; LANES / WIDTH] =
            std::array::from_fn(|v| unsafe { _mm256_loadu_si256(states.as_ptr().add(v * WIDTH).cast()) });
        for g in (0..groups).rev() {
            let mut at = group_offsets(&tables.base, &contexts[g * LANES..]);
            for (i, &s) in at.iter_mut().zip(&symbols[g * LANES..]) {
                *i += u32::from(s);
            }
            for (x, at) in x.iter_mut().zip(at.as_chunks::<WIDTH>().0).rev() {
                unsafe {
                    let e = _mm256_loadu_si256(at.map(|i| *fs.add(i as usize)).as_ptr().cast());
                    let (freq, start) = (_mm256_and_si256(e, low_half), _mm256_srli_epi32::<16>(e));
                    // Both sides are below 2^13, so the signed comparison is the unsigned one.
                    let keep = _mm256_cmpgt_epi32(freq, _mm256_srli_epi32::<20>(*x));
                    let flush = !_mm256_movemask_ps(_mm256_castsi256_ps(keep)) as usize & 0xff;
                    let low = _mm256_and_si256(*x, low_half);
                    let packed = _mm_packus_epi32(_mm256_castsi256_si128(low), _mm256_extracti128_si256::<1>(low));
                    let compact = _mm_shuffle_epi8(packed, _mm_loadu_si128(COMPACT[flush].as_ptr().cast()));
                    _mm_storeu_si128(words.as_mut_ptr().add(*pos).cast(), compact);
                    *pos += flush.count_ones() as usize;
                    let y = _mm256_blendv_epi8(_mm256_srli_epi32::<16>(*x), *x, keep);
                    let q = quotient(y, at, rcp);
                    *x = _mm256_add_epi32(_mm256_add_epi32(y, start), _mm256_mullo_epi32(q, _mm256_sub_epi32(m, freq)));
                }
            }
        }
        for (v, x) in x.iter().enumerate() {
            unsafe { _mm256_storeu_si256(states.as_mut_ptr().add(v * WIDTH).cast(), *x) };
        }
        true
    }

    /// `(y * rcp[i]) >> 44` in every lane, as the AVX-512 encoder computes it, in two halves of
    /// 64-bit lanes.
    ///
    /// SAFETY: every index in `at` must be within `rcp`'s allocation.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn quotient(y: __m256i, at: &[u32; WIDTH], rcp: *const u64) -> __m256i {
        let half = |y: __m128i, at: &[u32]| {
            // SAFETY: the caller's.
            let r = unsafe { [0, 1, 2, 3].map(|k| *rcp.add(at[k] as usize)) };
            // SAFETY: `r` holds 32 bytes.
            let r = unsafe { _mm256_loadu_si256(r.as_ptr().cast()) };
            let y = _mm256_cvtepu32_epi64(y);
            let lo = _mm256_mul_epu32(y, r);
            let hi = _mm256_mul_epu32(y, _mm256_srli_epi64::<32>(r));
            _mm256_srli_epi64::<12>(_mm256_add_epi64(hi, _mm256_srli_epi64::<32>(lo)))
        };
        let low = half(_mm256_castsi256_si128(y), &at[..4]);
        let high = half(_mm256_extracti128_si256::<1>(y), &at[4..]);
        // The low 32 bits of each 64-bit lane: per 128-bit half [low 0, low 1, high 0, high 1]
        // and [low 2, low 3, high 2, high 3], then put in order.
        let mixed = _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(
            _mm256_castsi256_ps(low),
            _mm256_castsi256_ps(high),
        ));
        _mm256_permutevar8x32_epi32(mixed, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// The stream section of a wide block for `symbols`, and its header (tag and tables). The
    /// scalar encoder and every vector one the CPU has must write the same bytes.
    fn encode_parts(symbols: &[u8], contexts: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (plan, specs, tables) = super::super::plan_block(symbols, contexts);
        let header = [&[super::super::TAG_WIDE][..], &tables].concat();
        let enc = EncTables::new(&specs, &plan.table_of);
        let mut streams = Vec::new();
        encode_streams_with(symbols, contexts, &enc, &mut streams, None);
        for vector in vector_encoders() {
            let mut fast = Vec::new();
            encode_streams_with(symbols, contexts, &enc, &mut fast, Some(vector));
            assert!(fast == streams, "vector and scalar encoders disagree on {} symbols", symbols.len());
        }
        (header, streams)
    }

    /// Encodes wide whatever the length, as `encode` does for blocks of 8 KiB or more.
    fn encode_wide(symbols: &[u8], contexts: &[u8]) -> Vec<u8> {
        let (header, streams) = encode_parts(symbols, contexts);
        [header, streams].concat()
    }

    /// Decodes with the scalar loop only, and with the vector decoder where the CPU has one;
    /// both must agree, on corrupt input too.
    fn decode_both(data: &[u8], contexts: &[u8]) -> Result<Vec<u8>, RansError> {
        let decode = |vector| {
            let (tag, model, stream) = super::super::parse_block(data, contexts.len())?;
            if tag != super::super::TAG_WIDE {
                return Err(RansError::BadTag(tag));
            }
            model.check_contexts(contexts)?;
            let mut out = vec![0u8; contexts.len()];
            let tables = DecTables::new(&model.parsed, &model.table_of);
            let mut lanes = Lanes::with_vector(tables, stream, contexts.len(), vector)?;
            lanes.decode(contexts, &mut out, true);
            lanes.finish().map(|()| out)
        };
        let scalar = decode(None);
        for vector in vector_decoders() {
            let fast = decode(Some(vector));
            assert_eq!(format!("{scalar:?}"), format!("{fast:?}"), "vector and scalar decoders disagree");
        }
        scalar
    }

    fn skewed(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        // Either side of 128: the vector coders look tables up in two halves.
        let contexts: Vec<u8> = (0..n).map(|_| 122 + (next() % 13) as u8).collect();
        let symbols = contexts
            .iter()
            .map(|&c| {
                let r = next() % 1000;
                if r < 800 { 0 } else { (r % u32::from(c - 117)) as u8 }
            })
            .collect();
        (symbols, contexts)
    }

    #[test]
    fn long_skewed_block_round_trips_through_both_decoders() {
        let (symbols, contexts) = skewed(600_000, 7);
        let encoded = encode_wide(&symbols, &contexts);
        assert_eq!(decode_both(&encoded, &contexts).expect("decodes"), symbols);
        // `encode` picks the wide block for blocks this long.
        assert_eq!(super::super::encode(&symbols, &contexts)[0], super::super::TAG_WIDE);
    }

    #[test]
    fn damage_anywhere_in_the_streams_is_caught() {
        let (symbols, contexts) = skewed(10_000, 3);
        let (header, streams) = encode_parts(&symbols, &contexts);
        for at in (0..streams.len()).step_by(37) {
            let mut bad = streams.clone();
            bad[at] ^= 0x5a;
            let block = [header.as_slice(), &bad].concat();
            assert_ne!(decode_both(&block, &contexts).ok(), Some(symbols.clone()), "stream byte {at}");
        }
    }

    proptest! {
        #[test]
        fn wide_blocks_round_trip(pairs in vec((0u8..6, 0u8..4), 0..3000), skew in 0u8..4) {
            let symbols: Vec<u8> = pairs.iter().map(|&(s, c)| if c < skew { 0 } else { s }).collect();
            let contexts: Vec<u8> = pairs.iter().map(|&(_, c)| c * 70).collect();
            let encoded = encode_wide(&symbols, &contexts);
            prop_assert_eq!(decode_both(&encoded, &contexts).expect("decodes"), symbols);
        }

        #[test]
        fn corrupt_wide_blocks_never_panic(
            pairs in vec((0u8..6, 0u8..4), 200..3000),
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let symbols: Vec<u8> = pairs.iter().map(|&(s, _)| s).collect();
            let contexts: Vec<u8> = pairs.iter().map(|&(_, c)| c).collect();
            let mut encoded = encode_wide(&symbols, &contexts);
            for (at, x) in flips {
                let i = at.index(encoded.len());
                encoded[i] ^= x;
            }
            let _ = decode_both(&encoded, &contexts);
            encoded.truncate(encoded.len() / 2);
            let _ = decode_both(&encoded, &contexts);
        }
    }
}
