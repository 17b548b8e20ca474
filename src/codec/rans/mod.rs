//! Context-conditioned, interleaved rANS entropy coder for byte symbols.
//!
//! Every symbol is coded under a *context* byte that encoder and decoder both know (for weight
//! deltas: the exponent byte of the base weight). Models are static per block: the encoder counts
//! the exact (context, symbol) histogram, assigns contexts to frequency tables, normalises each
//! table to a power-of-two total and writes the tables in front of the rANS streams.
//!
//! # Design
//!
//! * **State**: 64-bit rANS state kept in `[2^31, 2^63)` with 32-bit renormalisation, as in ryg's
//!   `rans64`. At most one word moves per symbol, and the `2^18`-fold headroom over the largest
//!   table total (`2^13`) makes the coder's own redundancy negligible.
//! * **Interleaving**: symbol `i` is coded by lane `i % 8`, and all lanes share one word stream.
//!   Eight independent dependency chains let the CPU overlap the multiplies and table loads.
//! * **Encoding** is division-free: each (table, symbol) pair carries a precomputed reciprocal
//!   (Alverson's method, exact for 63-bit states). Its renormalisation is branch-free, which
//!   measured up to 1.5x faster at higher entropies.
//! * **Decoding** masks the state to a slot, maps the slot to its symbol through a per-table byte
//!   array of `2^scale` entries (one byte per slot keeps ~40 tables within L2), then fetches the
//!   symbol's `(freq, start)` from a 256-entry array. Renormalisation stays a branch: it is rare
//!   enough at these entropies that a branch-free refill measured slower.
//! * **Tables**: a context gets its own table only when that is cheaper than sharing; small
//!   contexts are merged into one fallback table whenever the entropy penalty of sharing is below
//!   the cost of describing a separate table. Each table's scale is the bit length of its symbol
//!   count, capped at 12 (what wide blocks code at; readers accept 13 in 8-lane blocks), so tiny
//!   tables stay tiny. Frequencies keep only as many mantissa bits as pay for themselves: the
//!   encoder picks the precision that minimises table bits plus coded bits.
//!
//! * **Wide blocks** (tag `0xA2`, [`wide`]): blocks that code to 8 KiB or more are coded by 64
//!   lanes of 32-bit states instead, which a vector decoder runs 16 at a time (AVX-512,
//!   detected at run time); the scalar decoder defines the format and serves other CPUs.
//!
//! # Encoded block layout
//!
//! All multi-byte integers are little-endian. `n` is the number of symbols (known to the caller).
//!
//! ```text
//! byte 0          tag 0xA1 ("rANS block, format version 1"); 0xA2: a wide block, see [`wide`]
//! table section   bit-packed like `BitWriter` (LSB-first), zero-padded to a whole byte
//! stream section  everything after the table section
//! ```
//!
//! In the table section, `gamma(v)` (for `v >= 1`) is `z` zero bits, a one bit, then the low `z`
//! bits of `v`, where `z = floor(log2 v) <= 20`; `zigzag(d)` is `2d` for `d >= 0`, else `-2d - 1`.
//!
//! ```text
//! nd         9 bits    number of dedicated tables, 0..=256
//! fb         1 bit     1 if a fallback table follows the dedicated ones
//! contexts   nd x gamma(c_k - c_(k-1)), c_(-1) = -1: the dedicated tables' context bytes, increasing
//! tables     nd + fb tables: the dedicated ones in context order, then the fallback, which serves
//!            every context not listed
//! ```
//!
//! Each table:
//!
//! ```text
//! scale      4 bits    0..=13; frequencies sum to M = 2^scale
//! symbols    runs over 0..=255: repeat { gamma(absent + 1), gamma(present) };
//!            stop when 256 is reached, else a 1-bit flag says whether another run follows
//! if only one symbol is present its frequency is M and the table ends here, otherwise:
//! prec       4 bits    mantissa bits kept per frequency
//! implicit   gamma(j + 1): index j (among present symbols, increasing) of the implied frequency
//! for every other present symbol, increasing:
//!   gamma(zigzag(b - b_prev) + 1)   b = bit length of the frequency, 1..=scale;
//!                                   b_prev = previous b, initially scale
//!   min(b - 1, prec) bits           the bits right below the leading one; lower bits are zero
//! the implied frequency is M minus the others' sum and must be >= 1
//! ```
//!
//! The sum of `2^scale` over all tables must not exceed `2n`, which bounds the decoder's memory.
//!
//! The stream section holds `min(n, 8)` initial states (u64, lane 0 first, each in
//! `[2^31, 2^63)`) followed by u32 renormalisation words, and must be consumed exactly. Symbol `i`
//! is decoded by lane `i % 8` with the table of `contexts[i]`: `slot = x mod M` selects the symbol
//! `s` with `start_s <= slot < start_s + f_s` (starts are cumulative in symbol order), then
//! `x = f_s * (x >> scale) + slot - start_s`. After symbols `8k..8k+8` are decoded, lanes 0, 1, ...
//! in that order whose state is below `2^31` read one word: `x = (x << 32) | word`. After the last
//! symbol every lane is back at its initial value `2^31`.

mod wide;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// First byte of every encoded block: rANS block, format version 1.
const TAG: u8 = 0xA1;
/// First byte of a wide block: 64 lanes of 32-bit states.
const TAG_WIDE: u8 = 0xA2;
/// Blocks whose symbols carry at least this many bytes of information are written wide: there
/// the wide block's larger states (192 bytes more) cost at most ~2.3%, and its vector decoders
/// pay off. At 64 KiB the 384×384 matrices of all-MiniLM-L6-v2's fine-tunes (~46 KB) stayed
/// narrow and their scalar decoding was 15% of a checkout; at 32 KiB those of ft-a-v2, which
/// code to less against ft-a, still were (12%). At 8 KiB they are not, for 0.1% of its size.
const WIDE_MIN_BYTES: f64 = 8192.0;
/// Number of interleaved rANS states.
const LANES: usize = 8;
/// Lower bound of the normalised state interval `[RANS_L, RANS_L << 32)`.
const RANS_L: u64 = 1 << 31;
/// Largest table scale: bounds the decoder's slot arrays and keeps `freq`, `start` in 16 bits.
const MAX_SCALE: u32 = 13;
/// Largest scale the encoder writes, for both block kinds: wide blocks code at `2^12`, and a
/// 13th bit of precision measured 0.03% of size.
const ENCODE_MAX_SCALE: u32 = wide::SCALE;
/// Largest number of leading zeros accepted in a gamma code.
const GAMMA_MAX_ZEROS: u32 = 20;
/// Chunks of `LANES` symbols the encoder runs between flushes of its scratch buffer.
const SEGMENT_CHUNKS: usize = 2048;
/// Contexts with more symbols than this always get a dedicated table (merging never pays off).
const MERGE_CAP: u64 = 1 << 14;
/// Blocks from this many symbols up are counted into four histograms: below it, zeroing and
/// summing the other three costs more than it saves.
const SPLIT_HISTOGRAM_MIN: usize = 1 << 18;

/// Errors from decoding untrusted rANS data.
#[derive(Debug, thiserror::Error)]
pub enum RansError {
    /// The data ended before everything it describes was read.
    #[error("rANS data is truncated")]
    Truncated,
    /// The first byte is not a known block tag.
    #[error("unknown rANS block tag {0:#04x}")]
    BadTag(u8),
    /// The table section is malformed.
    #[error("invalid rANS table: {0}")]
    BadTable(&'static str),
    /// The stream section is inconsistent with the tables or the contexts.
    #[error("corrupt rANS stream: {0}")]
    Corrupt(&'static str),
    /// `contexts` and the output buffer have different lengths.
    #[error("{contexts} contexts given for {symbols} symbols")]
    LengthMismatch {
        /// Number of symbols requested.
        symbols: usize,
        /// Number of contexts given.
        contexts: usize,
    },
}

/// Encodes `symbols[i]` under the model of `contexts[i]`; the output carries its own tables.
///
/// # Panics
///
/// If the slices differ in length or hold more than `u32::MAX` symbols.
pub fn encode(symbols: &[u8], contexts: &[u8]) -> Vec<u8> {
    assert_eq!(symbols.len(), contexts.len(), "one context per symbol");
    assert!(u32::try_from(symbols.len()).is_ok(), "rANS block too long");
    let (plan, specs, tables) = plan_block(symbols, contexts);
    if plan.tables.iter().map(entropy_bits).sum::<f64>() / 8.0 >= WIDE_MIN_BYTES {
        let mut out = vec![TAG_WIDE];
        out.extend_from_slice(&tables);
        wide::encode_streams(symbols, contexts, &specs, &plan.table_of, &mut out);
        return out;
    }
    let enc: Vec<[EncSymbol; 256]> = specs.iter().map(enc_table).collect();
    // Contexts that never occur may have no table; any entry will do for them.
    let unused = [EncSymbol::default(); 256];
    let by_ctx: [&[EncSymbol; 256]; 256] =
        std::array::from_fn(|c| enc.get(usize::from(plan.table_of[c])).unwrap_or(&unused));
    let (states, words) = encode_streams(symbols, contexts, &by_ctx);

    let mut out = Vec::with_capacity(1 + tables.len() + 8 * states.len() + 4 * words.len());
    out.push(TAG);
    out.extend_from_slice(&tables);
    for x in states {
        out.extend_from_slice(&x.to_le_bytes());
    }
    let body = out.len();
    out.resize(body + 4 * words.len(), 0);
    // The encoder emitted the words last-to-first.
    for (bytes, w) in out[body..].as_chunks_mut::<4>().0.iter_mut().zip(words.iter().rev()) {
        *bytes = w.to_le_bytes();
    }
    out
}

/// The tables of a block for `symbols` under `contexts`, and their encoded table section.
fn plan_block(symbols: &[u8], contexts: &[u8]) -> (Plan, Vec<TableSpec>, Vec<u8>) {
    let plan = with_histogram(symbols, contexts, plan_tables);
    let specs: Vec<TableSpec> = plan.tables.iter().map(build_table).collect();
    let mut bits = BitWriter::with_capacity(64 + 64 * specs.len());
    write_header(&mut bits, &plan, &specs);
    (plan, specs, bits.finish())
}

/// Decodes `out.len()` symbols written by [`encode`], given the same `contexts`.
pub fn decode(data: &[u8], contexts: &[u8], out: &mut [u8]) -> Result<(), RansError> {
    let mut decoder = Decoder::new(data, out.len())?;
    decoder.decode(contexts, out)?;
    decoder.finish()
}

/// Symbols of a part that [`Decoder::decode`] decodes fastest: a whole number of groups of
/// the wide block's lanes (and so of the narrow block's).
pub const PART: usize = 64;

/// A block decoded a part at a time, so that a caller can compute each part's contexts just
/// before it is decoded and use its symbols right after, while all of them are in cache.
pub struct Decoder<'d> {
    model: DecModel,
    lanes: Lanes<'d>,
    /// Symbols not decoded yet.
    left: usize,
}

enum Lanes<'d> {
    /// `next`: the lane of the group under way that decodes the next symbol.
    Narrow {
        tables: Vec<DecTable>,
        states: [u64; LANES],
        words: Words<'d>,
        used: usize,
        next: usize,
    },
    Wide(Box<wide::Lanes<'d>>),
}

impl<'d> Decoder<'d> {
    /// Parses the tables of a block of `n` symbols and its initial states.
    pub fn new(data: &'d [u8], n: usize) -> Result<Self, RansError> {
        let (tag, model, stream) = parse_block(data, n)?;
        let lanes = match tag {
            TAG => {
                let used = n.min(LANES);
                let (states, rest) = read_initial_states(stream, used)?;
                let (tables, words) = (model.narrow_tables(), Words { rest, overrun: false });
                Lanes::Narrow { tables, states, words, used, next: 0 }
            }
            _ => Lanes::Wide(Box::new(wide::Lanes::new(
                wide::DecTables::new(&model.parsed, &model.table_of),
                stream,
                n,
            )?)),
        };
        Ok(Decoder { model, lanes, left: n })
    }

    /// Decodes the next `out.len()` symbols under `contexts` (as many). Parts may be of any
    /// length; those of a multiple of [`PART`] symbols decode fastest.
    pub fn decode(&mut self, contexts: &[u8], out: &mut [u8]) -> Result<(), RansError> {
        if contexts.len() != out.len() || out.len() > self.left {
            return Err(RansError::LengthMismatch { symbols: out.len(), contexts: contexts.len() });
        }
        self.model.check_contexts(contexts)?;
        self.left -= out.len();
        let ends = self.left == 0;
        match &mut self.lanes {
            Lanes::Narrow { tables, states, words, next, .. } => {
                decode_lanes(&self.model.by_context(tables), states, words, next, ends, contexts, out);
            }
            Lanes::Wide(lanes) => lanes.decode(contexts, out, ends),
        }
        Ok(())
    }

    /// Checks that every symbol was decoded and the stream section consumed exactly.
    pub fn finish(self) -> Result<(), RansError> {
        if self.left > 0 {
            return Err(RansError::LengthMismatch { symbols: 0, contexts: self.left });
        }
        match self.lanes {
            Lanes::Narrow { states, words, used, .. } => {
                if words.overrun {
                    return Err(RansError::Truncated);
                }
                if states[..used].iter().any(|&x| x != RANS_L) {
                    return Err(RansError::Corrupt("final state mismatch"));
                }
                if !words.rest.is_empty() {
                    return Err(RansError::Corrupt("trailing bytes after the streams"));
                }
                Ok(())
            }
            Lanes::Wide(lanes) => lanes.finish(),
        }
    }
}

/// Splits a block of `n` symbols into its tag, its validated tables and its stream section.
fn parse_block(data: &[u8], n: usize) -> Result<(u8, DecModel, &[u8]), RansError> {
    let (&tag, rest) = data.split_first().ok_or(RansError::Truncated)?;
    let max_scale = match tag {
        TAG => MAX_SCALE,
        TAG_WIDE => wide::SCALE,
        _ => return Err(RansError::BadTag(tag)),
    };
    let mut bits = BitReader::new(rest);
    let model = DecModel::read(&mut bits, n, max_scale)?;
    let stream = rest.get(bits.byte_pos()..).ok_or(RansError::Truncated)?;
    Ok((tag, model, stream))
}

// ---------------------------------------------------------------------------------------------
// Bit packing

/// Packs bit fields LSB-first into little-endian u64 words.
#[derive(Debug, Default)]
pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl BitWriter {
    /// Creates an empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty writer with room for `bytes` bytes of output.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { out: Vec::with_capacity(bytes), ..Self::default() }
    }

    /// Appends the low `nbits` bits of `value` (`nbits` in 0..=64; higher bits are ignored).
    ///
    /// # Panics
    ///
    /// If `nbits > 64`.
    #[inline]
    pub fn push(&mut self, value: u64, nbits: u32) {
        assert!(nbits <= 64, "at most 64 bits per push");
        let value = value & low_mask(nbits);
        self.acc |= value << self.filled;
        let filled = self.filled + nbits;
        if filled < 64 {
            self.filled = filled;
        } else {
            self.out.extend_from_slice(&self.acc.to_le_bytes());
            // The bits of `value` that did not fit start the next word.
            self.acc = value.checked_shr(64 - self.filled).unwrap_or(0);
            self.filled = filled - 64;
        }
    }

    /// Returns the packed bytes; the last word is truncated to its used bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let tail = self.filled.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..tail]);
        self.out
    }
}

/// Reads bit fields written by [`BitWriter`].
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// Creates a reader positioned at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Reads the next `nbits` bits (0..=64); fails when they extend past the end of the data.
    ///
    /// # Panics
    ///
    /// If `nbits > 64`.
    #[inline]
    pub fn read(&mut self, nbits: u32) -> Result<u64, RansError> {
        assert!(nbits <= 64, "at most 64 bits per read");
        // Fast path: a whole unaligned u64 is in bounds and holds at least 57 bits from `pos`.
        if let Some(chunk) = self.data.get(self.pos / 8..).and_then(<[u8]>::first_chunk::<8>)
            && nbits <= 57
        {
            let value = (u64::from_le_bytes(*chunk) >> (self.pos % 8)) & ((1 << nbits) - 1);
            self.pos += nbits as usize;
            return Ok(value);
        }
        self.read_near_end(nbits)
    }

    /// [`BitReader::read`] for wide fields or the last bytes of the data.
    fn read_near_end(&mut self, nbits: u32) -> Result<u64, RansError> {
        if nbits as usize > self.remaining() {
            return Err(RansError::Truncated);
        }
        if nbits > 32 {
            let low = self.read(32)?;
            return Ok(low | self.read(nbits - 32)? << 32);
        }
        let value = self.peek() & low_mask(nbits);
        self.pos += nbits as usize;
        Ok(value)
    }

    /// Bits left before the end of the data.
    fn remaining(&self) -> usize {
        self.data.len().saturating_mul(8).saturating_sub(self.pos)
    }

    /// Index of the first byte not (even partly) consumed.
    fn byte_pos(&self) -> usize {
        self.pos.div_ceil(8)
    }

    /// The next 57 or more bits, zero-extended past the end of the data.
    #[inline]
    fn peek(&self) -> u64 {
        let byte = self.pos / 8;
        let tail = self.data.get(byte..).unwrap_or(&[]);
        let word = match tail.first_chunk::<8>() {
            Some(chunk) => u64::from_le_bytes(*chunk),
            None => {
                let mut buf = [0u8; 8];
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(buf)
            }
        };
        word >> (self.pos % 8)
    }
}

/// A mask of the low `nbits` bits, for `nbits` in 0..=64.
#[inline]
fn low_mask(nbits: u32) -> u64 {
    u64::MAX.checked_shr(64 - nbits).unwrap_or(0)
}

/// Where table descriptions go: a real writer, or a counter used to price candidate tables.
trait BitSink {
    /// Appends the low `nbits` bits of `value`.
    fn put(&mut self, value: u64, nbits: u32);
}

impl BitSink for BitWriter {
    fn put(&mut self, value: u64, nbits: u32) {
        self.push(value, nbits);
    }
}

/// Counts bits instead of storing them.
#[derive(Default)]
struct BitCount(u64);

impl BitSink for BitCount {
    fn put(&mut self, _value: u64, nbits: u32) {
        self.0 += u64::from(nbits);
    }
}

/// Writes the Elias gamma code of `v >= 1`.
fn put_gamma(sink: &mut impl BitSink, v: u32) {
    debug_assert!(v >= 1 && v.ilog2() <= GAMMA_MAX_ZEROS);
    let zeros = v.ilog2();
    sink.put(1 << zeros, zeros + 1);
    sink.put(u64::from(v), zeros);
}

/// Reads an Elias gamma code written by [`put_gamma`].
fn get_gamma(bits: &mut BitReader) -> Result<u32, RansError> {
    let zeros = bits.peek().trailing_zeros();
    if zeros > GAMMA_MAX_ZEROS {
        return Err(if bits.remaining() <= GAMMA_MAX_ZEROS as usize {
            RansError::Truncated
        } else {
            RansError::BadTable("oversized integer code")
        });
    }
    bits.read(zeros + 1)?;
    let low = bits.read(zeros)?;
    // `zeros <= 20`, so the value fits easily.
    Ok((1 << zeros) | low as u32)
}

// ---------------------------------------------------------------------------------------------
// Encoder: statistics and table planning

/// `hist[context][symbol]` counts.
type Histogram = [[u32; 256]; 256];

/// Counts every (context, symbol) pair and hands the counts to `use_counts`.
///
/// The counters are the thread's own, reused from block to block and cleared by writing to
/// them. Freshly allocated zeroed memory (`calloc`) would be read first by the counting, which
/// maps the shared zero page, and each page's first increment would then fault again to
/// replace it, shooting down that page's TLB entries on every core the process runs on: in a
/// VM those interrupts were 7–13% of a MiniLM fine-tune's `add`.
fn with_histogram<T>(symbols: &[u8], contexts: &[u8], use_counts: impl FnOnce(&Histogram) -> T) -> T {
    thread_local! {
        static COUNTERS: std::cell::RefCell<Counters> =
            const { std::cell::RefCell::new(Counters { rows: Vec::new(), ways: Vec::new() }) };
    }
    COUNTERS.with_borrow_mut(|Counters { rows, ways }| {
        rows.clear();
        rows.resize(256, [0; 256]);
        let hist = <&mut Histogram>::try_from(rows.as_mut_slice()).expect("256 rows were just made");
        count(symbols, contexts, hist, ways);
        use_counts(hist)
    })
}

/// A thread's counters for [`with_histogram`]: the histogram's rows, and the four-way counts
/// of long blocks.
struct Counters {
    rows: Vec<[u32; 256]>,
    ways: Vec<[u32; 4]>,
}

/// Adds every (context, symbol) pair to `hist` (all zeros), using `ways` for long blocks.
fn count(symbols: &[u8], contexts: &[u8], hist: &mut Histogram, ways: &mut Vec<[u32; 4]>) {
    if symbols.len() < SPLIT_HISTOGRAM_MIN {
        for (&s, &c) in symbols.iter().zip(contexts) {
            hist[usize::from(c)][usize::from(s)] += 1;
        }
        return;
    }
    // Neighbouring pairs are mostly equal, and in one table each increment would wait for the
    // store of the one before; four counters per pair, used in turn, let four run at once.
    ways.clear();
    ways.resize(1 << 16, [0; 4]);
    // A slice of known length, so that indexing by a `u16` needs no bounds check.
    let ways = &mut ways[..1 << 16];
    let key = |c: u8, s: u8| usize::from(u16::from_le_bytes([s, c]));
    let (sym4, sym_rest) = symbols.as_chunks::<4>();
    let (ctx4, ctx_rest) = contexts.as_chunks::<4>();
    for (s, c) in sym4.iter().zip(ctx4) {
        for way in 0..4 {
            ways[key(c[way], s[way])][way] += 1;
        }
    }
    for (&s, &c) in sym_rest.iter().zip(ctx_rest) {
        ways[key(c, s)][0] += 1;
    }
    for (n, way) in hist.as_flattened_mut().iter_mut().zip(ways) {
        *n = way.iter().sum();
    }
}

/// Which contexts get which table.
struct Plan {
    /// Aggregated counts per table: the dedicated ones in context order, then the fallback.
    tables: Vec<[u32; 256]>,
    /// Context bytes with a dedicated table, increasing.
    dedicated: Vec<u8>,
    has_fallback: bool,
    /// Table index of every context (unused contexts point at the fallback or table 0).
    table_of: [u16; 256],
}

/// Decides which contexts share the fallback table, by comparing estimated total bit costs.
fn plan_tables(hist: &Histogram) -> Plan {
    let mut by_size: Vec<(u64, u8)> = (0..=255u8)
        .map(|c| (hist[usize::from(c)].iter().map(|&n| u64::from(n)).sum(), c))
        .filter(|&(n, _)| n > 0)
        .collect();
    by_size.sort_unstable();

    let mut dedicated = [false; 256];
    let mut fallback = [0u32; 256];
    let mut fallback_cost = 0.0;
    let mut has_fallback = false;
    for (n, c) in by_size {
        let row = &hist[usize::from(c)];
        if n > MERGE_CAP {
            dedicated[usize::from(c)] = true;
            continue;
        }
        // A dedicated table also costs its entry in the context list.
        let own = estimate_table_bits(row) + entropy_bits(row) + 8.0;
        let mut merged = fallback;
        for (m, &r) in merged.iter_mut().zip(row) {
            *m += r;
        }
        let merged_cost = estimate_table_bits(&merged) + entropy_bits(&merged);
        if merged_cost - fallback_cost <= own {
            fallback = merged;
            fallback_cost = merged_cost;
            has_fallback = true;
        } else {
            dedicated[usize::from(c)] = true;
        }
    }

    let dedicated: Vec<u8> = (0..=255u8).filter(|&c| dedicated[usize::from(c)]).collect();
    let mut tables: Vec<[u32; 256]> = dedicated.iter().map(|&c| hist[usize::from(c)]).collect();
    let fallback_index = tables.len() as u16;
    if has_fallback {
        tables.push(fallback);
    }
    let mut table_of = [fallback_index; 256];
    for (t, &c) in dedicated.iter().enumerate() {
        table_of[usize::from(c)] = t as u16;
    }
    Plan { tables, dedicated, has_fallback, table_of }
}

/// Empirical entropy of `counts` in bits: `sum n_s * log2(N / n_s)`.
fn entropy_bits(counts: &[u32; 256]) -> f64 {
    let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return 0.0;
    }
    let sum_nlogn: f64 = counts.iter().filter(|&&n| n > 1).map(|&n| f64::from(n) * f64::from(n).log2()).sum();
    total as f64 * (total as f64).log2() - sum_nlogn
}

/// Rough size in bits of a table for `counts`, used only to decide merges.
fn estimate_table_bits(counts: &[u32; 256]) -> f64 {
    let present = counts.iter().filter(|&&n| n > 0);
    let k = present.clone().count() as u32;
    if k == 0 {
        return 0.0;
    }
    // Mantissas end up around half the bit length of the counts, plus the length code.
    let freqs: u32 = present.map(|&n| 2 + (32 - n.leading_zeros()) / 2).sum();
    f64::from(12 + 2 * (32 - k.leading_zeros()) + freqs)
}

// ---------------------------------------------------------------------------------------------
// Encoder: table normalisation and description

/// A normalised frequency table and how it is described.
struct TableSpec {
    scale: u32,
    prec: u32,
    /// Index, among the present symbols, of the symbol whose frequency is implied.
    implicit: usize,
    freqs: [u32; 256],
}

/// Chooses scale, precision and frequencies minimising table bits plus coded bits.
fn build_table(counts: &[u32; 256]) -> TableSpec {
    let present: Vec<u8> = (0..=255u8).filter(|&s| counts[usize::from(s)] > 0).collect();
    let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    let mut freqs = [0u32; 256];
    if let [only] = present[..] {
        // A certain symbol costs no bits at scale 0.
        freqs[usize::from(only)] = 1;
        return TableSpec { scale: 0, prec: 0, implicit: 0, freqs };
    }
    // Precision beyond the symbol count buys nothing; beyond the cap it costs decode speed.
    let scale = (total.ilog2() + 1).min(ENCODE_MAX_SCALE);
    let normal = normalize(counts, &present, total, scale);
    let implicit =
        (0..present.len()).max_by_key(|&i| (normal[usize::from(present[i])], std::cmp::Reverse(i))).unwrap_or(0);
    let exact = TableSpec { scale, prec: scale - 1, implicit, freqs: normal };
    // Coarser mantissas shrink the table but grow the coded size; the total is roughly convex
    // in the precision, so walk down until it stops improving.
    let mut best = (total_bits(counts, &present, &exact), exact);
    for prec in (0..scale - 1).rev() {
        let Some(freqs) = quantize(&normal, &present, implicit, prec, scale) else {
            break;
        };
        let spec = TableSpec { scale, prec, implicit, freqs };
        let cost = total_bits(counts, &present, &spec);
        if cost > best.0 + 16.0 {
            break;
        }
        if cost < best.0 {
            best = (cost, spec);
        }
    }
    best.1
}

/// Table description bits plus coded bits for `counts` under `spec`.
fn total_bits(counts: &[u32; 256], present: &[u8], spec: &TableSpec) -> f64 {
    let mut table_bits = BitCount::default();
    write_table(&mut table_bits, spec);
    let coded: f64 = present
        .iter()
        .map(|&s| {
            let (n, f) = (counts[usize::from(s)], spec.freqs[usize::from(s)]);
            f64::from(n) * (f64::from(spec.scale) - f64::from(f).log2())
        })
        .sum();
    coded + table_bits.0 as f64
}

/// A candidate change of one frequency, ordered by its benefit in bits.
struct Step {
    benefit: f64,
    symbol: u8,
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Step {}
impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        self.benefit.total_cmp(&other.benefit).then(other.symbol.cmp(&self.symbol))
    }
}

/// Scales `counts` to frequencies summing to `2^scale`, every present symbol at least 1, with the
/// smallest coded size (greedy fix-up of the rounded values, optimal for this convex problem).
fn normalize(counts: &[u32; 256], present: &[u8], total: u64, scale: u32) -> [u32; 256] {
    let target = 1u64 << scale;
    let mut freqs = [0u32; 256];
    let mut sum = 0u64;
    for &s in present {
        let n = u64::from(counts[usize::from(s)]);
        let f = ((2 * n * target + total) / (2 * total)).max(1);
        freqs[usize::from(s)] = f as u32;
        sum += f;
    }
    let grow = |s: u8, f: u32| Step {
        benefit: f64::from(counts[usize::from(s)]) * (f64::from(f + 1) / f64::from(f)).log2(),
        symbol: s,
    };
    let shrink = |s: u8, f: u32| Step {
        benefit: -f64::from(counts[usize::from(s)]) * (f64::from(f) / f64::from(f - 1)).log2(),
        symbol: s,
    };
    if sum < target {
        let mut heap: BinaryHeap<Step> = present.iter().map(|&s| grow(s, freqs[usize::from(s)])).collect();
        for _ in sum..target {
            let Some(step) = heap.pop() else { break };
            let f = &mut freqs[usize::from(step.symbol)];
            *f += 1;
            heap.push(grow(step.symbol, *f));
        }
    } else if sum > target {
        let mut heap: BinaryHeap<Step> =
            present.iter().filter(|&&s| freqs[usize::from(s)] > 1).map(|&s| shrink(s, freqs[usize::from(s)])).collect();
        for _ in target..sum {
            let Some(step) = heap.pop() else { break };
            let f = &mut freqs[usize::from(step.symbol)];
            *f -= 1;
            if *f > 1 {
                heap.push(shrink(step.symbol, *f));
            }
        }
    }
    debug_assert_eq!(freqs.iter().map(|&f| u64::from(f)).sum::<u64>(), target);
    freqs
}

/// Rounds all but the implicit frequency to `prec` mantissa bits; the implicit one absorbs the
/// difference. Returns `None` if nothing would be left for it.
fn quantize(normal: &[u32; 256], present: &[u8], implicit: usize, prec: u32, scale: u32) -> Option<[u32; 256]> {
    let mut freqs = [0u32; 256];
    let mut sum = 0u32;
    for (i, &s) in present.iter().enumerate() {
        if i != implicit {
            let f = round_to_precision(normal[usize::from(s)], prec);
            freqs[usize::from(s)] = f;
            sum += f;
        }
    }
    let rest = (1u32 << scale).checked_sub(sum).filter(|&r| r > 0)?;
    freqs[usize::from(present[implicit])] = rest;
    Some(freqs)
}

/// Rounds `f >= 1` to the nearest value with at most `prec` bits below its leading one.
fn round_to_precision(f: u32, prec: u32) -> u32 {
    let below = f.ilog2();
    if below <= prec {
        return f;
    }
    let step = 1 << (below - prec);
    let down = f & !(step - 1);
    if f - down >= step / 2 { down + step } else { down }
}

/// Writes the context list and all tables.
fn write_header(sink: &mut impl BitSink, plan: &Plan, specs: &[TableSpec]) {
    sink.put(plan.dedicated.len() as u64, 9);
    sink.put(u64::from(plan.has_fallback), 1);
    let mut prev = -1i32;
    for &c in &plan.dedicated {
        put_gamma(sink, (i32::from(c) - prev) as u32);
        prev = i32::from(c);
    }
    for spec in specs {
        write_table(sink, spec);
    }
}

/// Writes one table in the layout documented at the top of the module.
fn write_table(sink: &mut impl BitSink, spec: &TableSpec) {
    sink.put(u64::from(spec.scale), 4);
    write_symbol_set(sink, &spec.freqs);
    let present: Vec<u8> = (0..=255u8).filter(|&s| spec.freqs[usize::from(s)] > 0).collect();
    if present.len() < 2 {
        return;
    }
    sink.put(u64::from(spec.prec), 4);
    put_gamma(sink, spec.implicit as u32 + 1);
    let mut prev_len = spec.scale;
    for (i, &s) in present.iter().enumerate() {
        if i == spec.implicit {
            continue;
        }
        let f = spec.freqs[usize::from(s)];
        let len = f.ilog2() + 1;
        put_gamma(sink, zigzag(len as i32 - prev_len as i32) + 1);
        prev_len = len;
        let kept = (len - 1).min(spec.prec);
        debug_assert_eq!(f & ((1 << (len - 1 - kept)) - 1), 0, "frequency off its grid");
        sink.put(u64::from(f >> (len - 1 - kept)), kept);
    }
}

/// Writes which symbols have a nonzero frequency, as alternating absent/present runs.
fn write_symbol_set(sink: &mut impl BitSink, freqs: &[u32; 256]) {
    let mut pos = 0;
    while let Some(start) = (pos..256).find(|&s| freqs[s] > 0) {
        if pos > 0 {
            sink.put(1, 1);
        }
        let end = (start..256).find(|&s| freqs[s] == 0).unwrap_or(256);
        put_gamma(sink, (start - pos + 1) as u32);
        put_gamma(sink, (end - start) as u32);
        pos = end;
        if pos == 256 {
            return;
        }
    }
    sink.put(0, 1);
}

/// Maps a signed difference to an unsigned code, small magnitudes first.
fn zigzag(d: i32) -> u32 {
    if d >= 0 { (2 * d) as u32 } else { (-2 * d - 1) as u32 }
}

// ---------------------------------------------------------------------------------------------
// Encoder: rANS streams

/// Precomputed constants for encoding one symbol without division (ryg's `RansEncSymbol`).
#[derive(Clone, Copy, Default)]
struct EncSymbol {
    /// States at or above this must renormalise before encoding.
    x_max: u64,
    /// Fixed-point reciprocal of the frequency.
    rcp_freq: u64,
    bias: u32,
    /// `M - freq`.
    cmpl_freq: u32,
    rcp_shift: u32,
}

impl EncSymbol {
    /// Constants for a symbol occupying slots `start..start + freq` of `2^scale`.
    fn new(start: u32, freq: u32, scale: u32) -> Self {
        let total = 1u32 << scale;
        let x_max = ((RANS_L >> scale) << 32) * u64::from(freq);
        if freq < 2 {
            // The reciprocal of 1 is not representable; q = x - 1 with bias compensating.
            Self { x_max, rcp_freq: u64::MAX, bias: start + total - 1, cmpl_freq: total - freq, rcp_shift: 0 }
        } else {
            let shift = freq.next_power_of_two().ilog2();
            let rcp = (1u128 << (shift + 63)).div_ceil(u128::from(freq));
            Self { x_max, rcp_freq: rcp as u64, bias: start, cmpl_freq: total - freq, rcp_shift: shift - 1 }
        }
    }
}

/// Encoder constants for every symbol of a table (absent symbols stay zeroed and unused).
fn enc_table(spec: &TableSpec) -> [EncSymbol; 256] {
    let mut table = [EncSymbol::default(); 256];
    let mut start = 0;
    for (e, &f) in table.iter_mut().zip(&spec.freqs) {
        if f > 0 {
            *e = EncSymbol::new(start, f, spec.scale);
            start += f;
        }
    }
    table
}

/// Encodes one symbol into state `x`, first emitting a word if the state would overflow.
///
/// The word is stored unconditionally at `words[*pos]` and kept only if needed: the branch
/// would be mispredicted too often to pay off.
#[inline(always)]
fn enc_put(x: &mut u64, sym: &EncSymbol, words: &mut [u32], pos: &mut usize) {
    let flush = *x >= sym.x_max;
    words[*pos] = *x as u32;
    *pos += usize::from(flush);
    *x = if flush { *x >> 32 } else { *x };
    let q = ((u128::from(*x) * u128::from(sym.rcp_freq)) >> 64) as u64 >> sym.rcp_shift;
    *x += u64::from(sym.bias) + q * u64::from(sym.cmpl_freq);
}

/// Runs the lanes backwards over the block; returns the final states of the used lanes and the
/// words in reverse decode order.
///
/// Kept out of line so that its register allocation does not depend on the caller.
#[inline(never)]
fn encode_streams(symbols: &[u8], contexts: &[u8], by_ctx: &[&[EncSymbol; 256]; 256]) -> (Vec<u64>, Vec<u32>) {
    // Every step may write a word, so segments of the block go through a scratch buffer with a
    // slot per step; only the words actually emitted are kept.
    let mut scratch = vec![0u32; symbols.len().min(SEGMENT_CHUNKS * LANES)];
    let mut words = Vec::new();
    let mut states = [RANS_L; LANES];
    let (sym_chunks, sym_tail) = symbols.as_chunks::<LANES>();
    let (ctx_chunks, ctx_tail) = contexts.as_chunks::<LANES>();

    let mut pos = 0;
    for ((x, &s), &c) in states.iter_mut().zip(sym_tail).zip(ctx_tail).rev() {
        enc_put(x, &by_ctx[usize::from(c)][usize::from(s)], &mut scratch, &mut pos);
    }
    words.extend_from_slice(&scratch[..pos]);
    let segments = sym_chunks.rchunks(SEGMENT_CHUNKS).zip(ctx_chunks.rchunks(SEGMENT_CHUNKS));
    for (sym_seg, ctx_seg) in segments {
        let mut pos = 0;
        for (s, c) in sym_seg.iter().zip(ctx_seg).rev() {
            for ((x, &s), &c) in states.iter_mut().zip(s).zip(c).rev() {
                enc_put(x, &by_ctx[usize::from(c)][usize::from(s)], &mut scratch, &mut pos);
            }
        }
        words.extend_from_slice(&scratch[..pos]);
    }
    let used = symbols.len().min(LANES);
    (states[..used].to_vec(), words)
}

// ---------------------------------------------------------------------------------------------
// Decoder

/// Number of slots a decoding table has room for.
const SLOTS: usize = 1 << MAX_SCALE;

/// Everything needed to decode under one table, in one place so that a lane needs a single
/// pointer per symbol; the fixed sizes let masked and byte indices go unchecked.
struct DecTable {
    scale: u32,
    /// `2^scale - 1`.
    mask: u64,
    /// `freq | start << 16` per symbol.
    freq_start: [u32; 256],
    /// Slot -> symbol; only the first `2^scale` entries are used.
    slot_syms: [u8; SLOTS],
}

/// Stand-in for contexts without a table, which `DecModel::check_contexts` rejects up front.
static NO_TABLE: DecTable = DecTable { scale: 0, mask: 0, freq_start: [0; 256], slot_syms: [0; SLOTS] };

/// The table section of a block: every table's scale and frequencies, validated.
struct DecModel {
    parsed: Vec<(u32, [u32; 256])>,
    /// Table index per context, `None` if the context has no table.
    table_of: [Option<u16>; 256],
}

impl DecModel {
    /// Parses and validates the table section for a block of `n` symbols whose tables' scales
    /// are at most `max_scale`.
    fn read(bits: &mut BitReader, n: usize, max_scale: u32) -> Result<Self, RansError> {
        let (table_of, count) = read_context_map(bits)?;
        let mut parsed = Vec::with_capacity(count);
        let mut slots = 0u64;
        for _ in 0..count {
            let (scale, freqs) = read_table(bits, max_scale)?;
            slots += 1 << scale;
            parsed.push((scale, freqs));
        }
        // Honest encoders keep every table within twice its symbol count; this also bounds the
        // number of tables, and so the memory below, by the block length.
        if slots > 2 * n as u64 {
            return Err(RansError::BadTable("tables too large for the block"));
        }
        Ok(Self { parsed, table_of })
    }

    /// Decoding tables for the 8-lane block.
    fn narrow_tables(&self) -> Vec<DecTable> {
        self.parsed.iter().map(|(scale, freqs)| DecTable::new(*scale, freqs)).collect()
    }

    /// Fails if some context has no table; cheapest when no table-less context lies between
    /// the smallest and the largest context used.
    fn check_contexts(&self, contexts: &[u8]) -> Result<(), RansError> {
        let covered = |c: u8| self.table_of[usize::from(c)].is_some();
        if (0..=255).all(covered) {
            return Ok(());
        }
        if contexts.is_empty() {
            return Ok(());
        }
        // One pass of byte-wise minima and maxima, which the compiler vectorises (`Iterator::min`
        // and `max` were two scalar passes: 43% of decoding a block without a fallback table).
        let (lo, hi) = contexts.iter().fold((u8::MAX, u8::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        if (lo..=hi).all(covered) {
            return Ok(());
        }
        // Without an early exit, so that no branch waits on each byte.
        let missing: [u8; 256] = std::array::from_fn(|c| u8::from(!covered(c as u8)));
        match contexts.iter().fold(0, |any, &c| any | missing[usize::from(c)]) {
            0 => Ok(()),
            _ => Err(RansError::Corrupt("context without a table")),
        }
    }

    /// The table of every context.
    fn by_context<'t>(&self, tables: &'t [DecTable]) -> [&'t DecTable; 256] {
        std::array::from_fn(|c| self.table_of[c].and_then(|t| tables.get(usize::from(t))).unwrap_or(&NO_TABLE))
    }
}

impl DecTable {
    /// Lays out a validated table (frequencies summing to `2^scale`) for decoding.
    fn new(scale: u32, freqs: &[u32; 256]) -> Self {
        let mut table = DecTable { scale, mask: (1 << scale) - 1, freq_start: [0; 256], slot_syms: [0; SLOTS] };
        let mut start = 0;
        for (s, (fs, &f)) in table.freq_start.iter_mut().zip(freqs).enumerate() {
            if f > 0 {
                *fs = f | (start as u32) << 16;
                table.slot_syms[start..start + f as usize].fill(s as u8);
                start += f as usize;
            }
        }
        table
    }
}

/// Reads the context list; returns the table index of every context and the number of tables.
fn read_context_map(bits: &mut BitReader) -> Result<([Option<u16>; 256], usize), RansError> {
    let dedicated = bits.read(9)? as usize;
    if dedicated > 256 {
        return Err(RansError::BadTable("more than 256 dedicated tables"));
    }
    let has_fallback = bits.read(1)? == 1;
    let mut table_of = [None; 256];
    let mut prev = -1i64;
    for t in 0..dedicated {
        let c = prev + i64::from(get_gamma(bits)?);
        let entry = table_of.get_mut(c as usize).ok_or(RansError::BadTable("context id out of range"))?;
        *entry = Some(t as u16);
        prev = c;
    }
    if has_fallback {
        for entry in table_of.iter_mut().filter(|t| t.is_none()) {
            *entry = Some(dedicated as u16);
        }
    }
    Ok((table_of, dedicated + usize::from(has_fallback)))
}

/// Reads and validates one table; returns its scale and frequencies.
fn read_table(bits: &mut BitReader, max_scale: u32) -> Result<(u32, [u32; 256]), RansError> {
    let scale = bits.read(4)? as u32;
    if scale > max_scale {
        return Err(RansError::BadTable("scale too large"));
    }
    let total = 1u32 << scale;
    let (present, k) = read_symbol_set(bits)?;
    let present = &present[..k];
    let mut freqs = [0u32; 256];
    if let [only] = present {
        freqs[usize::from(*only)] = total;
        return Ok((scale, freqs));
    }
    let prec = bits.read(4)? as u32;
    let implicit = get_gamma(bits)? as usize - 1;
    if implicit >= k {
        return Err(RansError::BadTable("implicit symbol out of range"));
    }
    let mut sum = 0u32;
    let mut prev_len = i64::from(scale);
    for (i, &s) in present.iter().enumerate() {
        if i == implicit {
            continue;
        }
        let code = i64::from(get_gamma(bits)? - 1);
        let len = prev_len + if code % 2 == 0 { code / 2 } else { -(code + 1) / 2 };
        if !(1..=i64::from(scale)).contains(&len) {
            return Err(RansError::BadTable("frequency length out of range"));
        }
        prev_len = len;
        let len = len as u32;
        let kept = (len - 1).min(prec);
        let mantissa = bits.read(kept)? as u32;
        let f = (1 << (len - 1)) | mantissa << (len - 1 - kept);
        sum += f;
        if sum >= total {
            return Err(RansError::BadTable("frequencies exceed the scale"));
        }
        freqs[usize::from(s)] = f;
    }
    freqs[usize::from(present[implicit])] = total - sum;
    Ok((scale, freqs))
}

/// Reads the present-symbol runs; returns the symbols (increasing) and their count.
fn read_symbol_set(bits: &mut BitReader) -> Result<([u8; 256], usize), RansError> {
    let mut present = [0u8; 256];
    let mut k = 0;
    let mut pos = 0usize;
    loop {
        let start = pos + get_gamma(bits)? as usize - 1;
        let end = start + get_gamma(bits)? as usize;
        if end > 256 {
            return Err(RansError::BadTable("symbol run past 255"));
        }
        for s in start..end {
            present[k] = s as u8;
            k += 1;
        }
        pos = end;
        if pos == 256 || bits.read(1)? == 0 {
            return Ok((present, k));
        }
    }
}

/// Sequential reader of the renormalisation words.
struct Words<'a> {
    rest: &'a [u8],
    /// Set once a read ran past the end; reads then yield zeros. Checking this once at the end
    /// keeps error exits out of the hot loop.
    overrun: bool,
}

impl Words<'_> {
    /// The next word, or 0 past the end.
    #[inline(always)]
    fn next(&mut self) -> u32 {
        match self.rest.split_first_chunk::<4>() {
            Some((word, rest)) => {
                self.rest = rest;
                u32::from_le_bytes(*word)
            }
            None => {
                self.overrun = true;
                0
            }
        }
    }
}

/// Decodes one symbol from state `x` under `table`.
#[inline(always)]
fn dec_get(x: &mut u64, table: &DecTable) -> u8 {
    let slot = *x & table.mask;
    // `mask < SLOTS` already; masking again lets the compiler drop the bounds check.
    let sym = table.slot_syms[slot as usize & (SLOTS - 1)];
    let fs = table.freq_start[usize::from(sym)];
    *x = u64::from(fs & 0xffff) * (*x >> table.scale) + slot - u64::from(fs >> 16);
    sym
}

/// Refills state `x` from the word stream if it fell below the normalised interval.
#[inline(always)]
fn dec_renorm(x: &mut u64, words: &mut Words) {
    if *x < RANS_L {
        *x = (*x << 32) | u64::from(words.next());
    }
}

/// Reads the initial states of the first `used` lanes; returns all states and the rest.
fn read_initial_states(stream: &[u8], used: usize) -> Result<([u64; LANES], &[u8]), RansError> {
    let mut states = [RANS_L; LANES];
    let mut rest = stream;
    for x in &mut states[..used] {
        let (bytes, tail) = rest.split_first_chunk::<8>().ok_or(RansError::Truncated)?;
        *x = u64::from_le_bytes(*bytes);
        rest = tail;
        if !(RANS_L..RANS_L << 32).contains(x) {
            return Err(RansError::Corrupt("initial state out of range"));
        }
    }
    Ok((states, rest))
}

/// Runs the lanes forward over a part of the stream section (see [`Decoder::decode`]), lane
/// `*next` first.
///
/// Kept out of line so that its register allocation, which decides its speed, does not depend on
/// the caller.
#[inline(never)]
fn decode_lanes(
    by_ctx: &[&DecTable; 256],
    states: &mut [u64; LANES],
    words: &mut Words,
    next: &mut usize,
    ends: bool,
    contexts: &[u8],
    out: &mut [u8],
) {
    let step = |x: &mut u64, c: u8| dec_get(x, by_ctx[usize::from(c)]);
    // A group a part before this one began, then whole groups, then the start of the next.
    let head = out.len().min((LANES - *next) % LANES);
    let (head_out, out) = out.split_at_mut(head);
    let (head_contexts, contexts) = contexts.split_at(head);
    step_lanes(states, next, head_contexts, head_out, false, step, |x| dec_renorm(x, words));
    let (out_chunks, out_tail) = out.as_chunks_mut::<LANES>();
    let (ctx_chunks, ctx_tail) = contexts.as_chunks::<LANES>();
    for (o, c) in out_chunks.iter_mut().zip(ctx_chunks) {
        for ((x, o), &c) in states.iter_mut().zip(o).zip(c) {
            *o = dec_get(x, by_ctx[usize::from(c)]);
        }
        for x in states.iter_mut() {
            dec_renorm(x, words);
        }
    }
    step_lanes(states, next, ctx_tail, out_tail, ends, step, |x| dec_renorm(x, words));
}

/// Decodes one symbol per lane from lane `*next` on, as [`Decoder::decode`]'s lanes do: a
/// group's lanes renormalise in lane order once its last lane has decoded, or, in the block's
/// shorter last group, once the block ends (`ends`). Parts that end inside a group thus
/// decode exactly what whole groups do.
pub(super) fn step_lanes<S, const N: usize>(
    states: &mut [S; N],
    next: &mut usize,
    contexts: &[u8],
    out: &mut [u8],
    ends: bool,
    mut step: impl FnMut(&mut S, u8) -> u8,
    mut renorm: impl FnMut(&mut S),
) {
    for (o, &c) in out.iter_mut().zip(contexts) {
        let Some(x) = states.get_mut(*next) else { return };
        *o = step(x, c);
        *next += 1;
        if *next == N {
            states.iter_mut().for_each(&mut renorm);
            *next = 0;
        }
    }
    if ends {
        states.iter_mut().take(*next).for_each(renorm);
        *next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Deterministic splitmix64 generator for synthetic blocks.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1].
        fn unit(&mut self) -> f64 {
            ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
        }

        /// Geometric variate with ratio `r`, capped at 255.
        fn geometric(&mut self, r: f64) -> u8 {
            (self.unit().ln() / r.ln()).min(255.0) as u8
        }
    }

    /// A block shaped like weight deltas: `nctx` contexts of geometrically falling sizes, each
    /// with its own decay and offset.
    fn synthetic(n: usize, nctx: u8, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rng = Rng(seed);
        let mut symbols = Vec::with_capacity(n);
        let mut contexts = Vec::with_capacity(n);
        for _ in 0..n {
            let k = rng.geometric(0.8) % nctx;
            let decay = 0.3 + 0.6 * f64::from(k) / f64::from(nctx);
            symbols.push(rng.geometric(decay).saturating_add(k % 3));
            contexts.push(100 + k);
        }
        (symbols, contexts)
    }

    /// Sum over contexts of `n_c * H_c`, in bytes.
    fn conditional_entropy_bytes(symbols: &[u8], contexts: &[u8]) -> f64 {
        with_histogram(symbols, contexts, |h| h.iter().map(entropy_bits).sum::<f64>()) / 8.0
    }

    fn roundtrip(symbols: &[u8], contexts: &[u8]) -> Vec<u8> {
        let encoded = encode(symbols, contexts);
        let mut out = vec![0u8; symbols.len()];
        decode(&encoded, contexts, &mut out).expect("valid block decodes");
        assert_eq!(out, symbols);
        encoded
    }

    /// Decodes `encoded` through [`Decoder`] in parts of the lengths `parts` gives, in turn.
    fn decode_in_parts(encoded: &[u8], contexts: &[u8], parts: &[usize]) -> Result<Vec<u8>, RansError> {
        let mut decoder = Decoder::new(encoded, contexts.len())?;
        let mut out = vec![0u8; contexts.len()];
        let (mut at, mut k) = (0, 0);
        while at < out.len() {
            let end = (at + parts[k % parts.len()]).min(out.len());
            decoder.decode(&contexts[at..end], &mut out[at..end])?;
            (at, k) = (end, k + 1);
        }
        decoder.finish().map(|()| out)
    }

    #[test]
    fn parts_decode_as_the_whole_block_does() {
        // A narrow and a wide block, each with a last part shorter than the others; parts of
        // whole groups, and parts that end inside groups (of 8 lanes and of 64).
        for (n, tag) in [(5_000, TAG), (300_001, TAG_WIDE)] {
            let (symbols, contexts) = synthetic(n, 9, 3);
            let encoded = encode(&symbols, &contexts);
            assert_eq!(encoded[0], tag);
            for parts in [&[PART][..], &[7 * PART], &[16_384], &[PART + 1], &[1, 3, 60, 200, 0, 7_000, 64, 4_095]] {
                let decoded = decode_in_parts(&encoded, &contexts, parts).expect("decodes");
                assert_eq!(decoded, symbols, "{n} by {parts:?}");
            }
            // Finishing early is refused.
            let mut decoder = Decoder::new(&encoded, n).expect("parses");
            let mut out = vec![0u8; PART];
            decoder.decode(&contexts[..PART], &mut out).expect("decodes");
            assert!(decoder.finish().is_err());
        }
    }

    #[test]
    fn split_histogram_counts_every_pair() {
        // Long enough for the four-way count, with a remainder past the last group of four.
        let n = SPLIT_HISTOGRAM_MIN + 3;
        let (symbols, contexts) = synthetic(n, 9, 5);
        let mut want = Box::new([[0u32; 256]; 256]);
        for (&s, &c) in symbols.iter().zip(&contexts) {
            want[usize::from(c)][usize::from(s)] += 1;
        }
        with_histogram(&symbols, &contexts, |h| assert_eq!(h, &*want));
        // The remainder alone, in a context no group of four touches; and the thread's counters,
        // used again, start from zero.
        let (mut symbols, mut contexts) = (symbols, contexts);
        let (c, s) = (usize::from(contexts[n - 1]), usize::from(symbols[n - 1]));
        (want[c][s], want[3][250]) = (want[c][s] - 1, 1);
        contexts[n - 1] = 3;
        symbols[n - 1] = 250;
        with_histogram(&symbols, &contexts, |h| assert_eq!(h, &*want));
        // A short block after a long one.
        with_histogram(&symbols[..5], &contexts[..5], |h| assert_eq!(h.as_flattened().iter().sum::<u32>(), 5));
    }

    /// Decodes into a fresh buffer; for corrupted input, where only the absence of panics counts.
    fn try_decode(data: &[u8], contexts: &[u8]) -> Result<Vec<u8>, RansError> {
        let mut out = vec![0u8; contexts.len()];
        decode(data, contexts, &mut out).map(|()| out)
    }

    #[test]
    fn empty_block() {
        let encoded = roundtrip(&[], &[]);
        assert!(encoded.len() <= 3);
    }

    #[test]
    fn single_symbol() {
        roundtrip(&[42], &[7]);
    }

    #[test]
    fn identical_symbols_cost_almost_nothing() {
        let encoded = roundtrip(&[9; 10_000], &[3; 10_000]);
        assert!(encoded.len() < 80, "{} bytes", encoded.len());
    }

    #[test]
    fn every_symbol_and_context() {
        let symbols: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let contexts: Vec<u8> = (0..70_000u32).map(|i| (i / 3 % 256) as u8).collect();
        roundtrip(&symbols, &contexts);
        roundtrip(&contexts, &symbols);
    }

    #[test]
    fn lone_symbols_per_context() {
        let symbols: Vec<u8> = (0..=255).collect();
        let contexts: Vec<u8> = (0..=255).rev().collect();
        roundtrip(&symbols, &contexts);
        let mut rng = Rng(5);
        let symbols: Vec<u8> = (0..5000).map(|_| rng.geometric(0.4)).collect();
        let mut contexts = vec![0u8; 5000];
        for (i, c) in contexts.iter_mut().enumerate().step_by(97) {
            *c = i as u8;
        }
        roundtrip(&symbols, &contexts);
    }

    #[test]
    fn random_contexts() {
        let mut rng = Rng(11);
        let symbols: Vec<u8> = (0..20_000).map(|_| rng.geometric(0.7)).collect();
        let contexts: Vec<u8> = (0..20_000).map(|_| rng.next() as u8).collect();
        roundtrip(&symbols, &contexts);
    }

    #[test]
    fn uniform_bytes_cost_eight_bits() {
        let mut rng = Rng(13);
        let symbols: Vec<u8> = (0..50_000).map(|_| rng.next() as u8).collect();
        let encoded = roundtrip(&symbols, &vec![1; 50_000]);
        assert!(encoded.len() < 50_000 + 600, "{} bytes", encoded.len());
    }

    #[test]
    fn all_lengths_around_lane_count() {
        let (symbols, contexts) = synthetic(40, 5, 3);
        for n in 0..40 {
            roundtrip(&symbols[..n], &contexts[..n]);
        }
    }

    #[test]
    fn size_close_to_conditional_entropy() {
        let (symbols, contexts) = synthetic(200_000, 40, 1);
        let size = roundtrip(&symbols, &contexts).len() as f64;
        let entropy = conditional_entropy_bytes(&symbols, &contexts);
        assert!(size <= entropy * 1.01 + 4096.0, "{size} bytes vs entropy {entropy:.0}");
    }

    #[test]
    fn tables_stay_small() {
        let (symbols, contexts) = synthetic(200_000, 40, 4);
        let encoded = encode(&symbols, &contexts);
        let mut bits = BitReader::new(&encoded[1..]);
        DecModel::read(&mut bits, symbols.len(), MAX_SCALE).expect("valid tables");
        assert!(bits.byte_pos() < 600, "{} table bytes", bits.byte_pos());
    }

    #[test]
    fn rejects_mismatched_arguments() {
        let (symbols, contexts) = synthetic(1000, 4, 6);
        let encoded = encode(&symbols, &contexts);
        let mut short = vec![0u8; 999];
        assert!(matches!(decode(&encoded, &contexts, &mut short), Err(RansError::LengthMismatch { .. })));
        let mut bad_tag = encoded.clone();
        bad_tag[0] ^= 1;
        assert!(matches!(try_decode(&bad_tag, &contexts), Err(RansError::BadTag(_))));
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(try_decode(&longer, &contexts).is_err());
        assert!(try_decode(&encoded, &contexts[..999]).is_err());
    }

    #[test]
    fn rejects_context_without_table() {
        // Contexts this large always get dedicated tables, so no fallback exists.
        let n = 2 * (MERGE_CAP as usize + 1);
        let symbols: Vec<u8> = (0..n).map(|i| (i % 5) as u8).collect();
        let mut contexts: Vec<u8> = (0..n).map(|i| if i % 2 == 0 { 10 } else { 20 }).collect();
        let encoded = roundtrip(&symbols, &contexts);
        contexts[77] = 15;
        assert!(matches!(try_decode(&encoded, &contexts), Err(RansError::Corrupt("context without a table"))));
    }

    #[test]
    fn every_truncation_fails() {
        let (symbols, contexts) = synthetic(3000, 6, 7);
        let encoded = encode(&symbols, &contexts);
        for len in 0..encoded.len() {
            assert!(try_decode(&encoded[..len], &contexts).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn bit_flips_never_panic() {
        let (symbols, contexts) = synthetic(600, 6, 8);
        let encoded = encode(&symbols, &contexts);
        let mut wrong = 0;
        for bit in 0..encoded.len() * 8 {
            let mut data = encoded.clone();
            data[bit / 8] ^= 1 << (bit % 8);
            if try_decode(&data, &contexts).is_ok_and(|out| out != symbols) {
                wrong += 1;
            }
        }
        // rANS has no redundancy beyond the final states: a flip that moves a slot between two
        // symbols of equal frequency rejoins the original state path. Such flips stay rare.
        assert!(wrong * 20 < encoded.len() * 8, "{wrong} silent corruptions");
    }

    #[test]
    fn bit_writer_handles_edge_widths() {
        let mut w = BitWriter::new();
        w.push(u64::MAX, 64);
        w.push(0, 0);
        w.push(0b101, 3);
        w.push(u64::MAX, 61);
        w.push(0x1234_5678_9ABC_DEF0, 64);
        w.push(0xFF, 4);
        let bytes = w.finish();
        assert_eq!(bytes.len(), (64 + 3 + 61 + 64 + 4usize).div_ceil(8));
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read(64).ok(), Some(u64::MAX));
        assert_eq!(r.read(0).ok(), Some(0));
        assert_eq!(r.read(3).ok(), Some(0b101));
        assert_eq!(r.read(61).ok(), Some(u64::MAX >> 3));
        assert_eq!(r.read(64).ok(), Some(0x1234_5678_9ABC_DEF0));
        assert_eq!(r.read(4).ok(), Some(0xF));
        assert_eq!(r.read(4).ok(), Some(0), "zero padding up to the byte");
        assert!(matches!(r.read(1), Err(RansError::Truncated)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn roundtrip_random_blocks(
            len in 0usize..3000,
            alphabet in 1u32..=256,
            nctx in 1u32..=256,
            decay in 0.05f64..0.99,
            seed in any::<u64>(),
        ) {
            let mut rng = Rng(seed);
            let symbols: Vec<u8> =
                (0..len).map(|_| (u32::from(rng.geometric(decay)) % alphabet) as u8).collect();
            let contexts: Vec<u8> =
                (0..len).map(|_| (u32::from(rng.geometric(0.9)) % nctx) as u8).collect();
            roundtrip(&symbols, &contexts);
        }

        #[test]
        fn parts_of_any_length_decode_as_the_whole(
            len in 0usize..40_000,
            // Empty parts are allowed, but not only empty ones: the parts repeat until the
            // block is decoded, so one of them must move on.
            parts in (vec(0usize..300, 0..5), 1usize..300).prop_map(|(mut parts, last)| {
                parts.push(last);
                parts
            }),
            seed in any::<u64>(),
        ) {
            // Long skewed blocks are wide, short ones narrow.
            let (symbols, contexts) = synthetic(len, 9, seed);
            let encoded = encode(&symbols, &contexts);
            prop_assert_eq!(decode_in_parts(&encoded, &contexts, &parts).ok(), Some(symbols));
        }

        #[test]
        fn roundtrip_arbitrary_bytes(pairs in vec(any::<(u8, u8)>(), 0..1500)) {
            let (symbols, contexts): (Vec<u8>, Vec<u8>) = pairs.into_iter().unzip();
            roundtrip(&symbols, &contexts);
        }

        #[test]
        fn random_data_never_panics(
            mut data in vec(any::<u8>(), 0..300),
            n in 0usize..200,
            ctx in any::<u8>(),
            tagged in any::<bool>(),
        ) {
            if tagged && !data.is_empty() {
                data[0] = TAG;
            }
            let _ = try_decode(&data, &vec![ctx; n]);
        }

        #[test]
        fn corrupted_blocks_never_panic(
            seed in any::<u64>(),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let (symbols, contexts) = synthetic(500, 5, seed);
            let mut data = encode(&symbols, &contexts);
            for (at, byte) in edits {
                let i = at.index(data.len());
                data[i] = byte;
            }
            let _ = try_decode(&data, &contexts);
            let _ = try_decode(&data[..cut.index(data.len())], &contexts);
        }

        #[test]
        fn bits_roundtrip(fields in vec((any::<u64>(), 0u32..=64), 0..200)) {
            let mut w = BitWriter::with_capacity(16);
            for &(v, n) in &fields {
                w.push(v, n);
            }
            let bytes = w.finish();
            let total: u32 = fields.iter().map(|&(_, n)| n).sum();
            prop_assert_eq!(bytes.len(), total.div_ceil(8) as usize);
            let mut r = BitReader::new(&bytes);
            for &(v, n) in &fields {
                prop_assert_eq!(r.read(n).ok(), Some(v & low_mask(n)));
            }
            prop_assert!(r.read(8).is_err());
        }
    }

    #[test]
    #[ignore = "large; run with --release"]
    fn size_close_to_conditional_entropy_1m() {
        let (symbols, contexts) = synthetic(1_000_000, 40, 2);
        let size = roundtrip(&symbols, &contexts).len() as f64;
        let entropy = conditional_entropy_bytes(&symbols, &contexts);
        println!("{size} bytes, entropy {entropy:.0} bytes, overhead {:.3}%", 100.0 * (size / entropy - 1.0));
        assert!(size <= entropy * 1.005 + 4096.0, "{size} bytes vs entropy {entropy:.0}");
    }

    /// Prints single-threaded encode and decode speed on 4M symbols from 40 contexts, at about
    /// 1.5 and 3.7 bits per symbol.
    #[test]
    #[ignore = "benchmark; run with --release --nocapture"]
    fn throughput() {
        let n = 4 << 20;
        let (low, contexts) = synthetic(n, 40, 9);
        let mut rng = Rng(12345);
        let high: Vec<u8> = low.iter().map(|&s| s.wrapping_mul(3) ^ (rng.next() as u8 & 7)).collect();
        // The last under one context: a block without a fallback table, whose contexts the
        // decoder checks (it ran at a quarter of the speed while that check was scalar).
        let one_context = vec![7u8; n];
        for (symbols, contexts) in [(low, &contexts), (high.clone(), &contexts), (high, &one_context)] {
            let encoded = encode(&symbols, contexts);
            let mut out = vec![0u8; n];
            let (mut enc, mut dec) = (f64::MAX, f64::MAX);
            for _ in 0..20 {
                let t = std::time::Instant::now();
                std::hint::black_box(encode(&symbols, contexts));
                enc = enc.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                decode(&encoded, contexts, &mut out).expect("decodes");
                dec = dec.min(t.elapsed().as_secs_f64());
            }
            assert_eq!(out, symbols);
            let entropy = conditional_entropy_bytes(&symbols, contexts);
            println!(
                "{:.2} bits/symbol: encode {:.0} Msym/s, decode {:.0} Msym/s, {:.3}% over entropy",
                encoded.len() as f64 * 8.0 / n as f64,
                n as f64 / enc / 1e6,
                n as f64 / dec / 1e6,
                100.0 * (encoded.len() as f64 / entropy - 1.0)
            );
        }

        // Field widths cycle through 3..=9 bits, as raw low bits of weights would.
        let width = |i: usize| 3 + (i % 7) as u32;
        let (mut push, mut read) = (f64::MAX, f64::MAX);
        for _ in 0..20 {
            let t = std::time::Instant::now();
            let mut w = BitWriter::with_capacity(n);
            for i in 0..n {
                w.push(i as u64 * 0x9E37_79B9, width(i));
            }
            let bytes = w.finish();
            push = push.min(t.elapsed().as_secs_f64());
            let t = std::time::Instant::now();
            let mut r = BitReader::new(&bytes);
            let mut sum = 0u64;
            for i in 0..n {
                sum = sum.wrapping_add(r.read(width(i)).expect("written"));
            }
            read = read.min(t.elapsed().as_secs_f64());
            std::hint::black_box(sum);
        }
        println!(
            "bit packing (3..9-bit fields): push {:.0} M/s, read {:.0} M/s",
            n as f64 / push / 1e6,
            n as f64 / read / 1e6
        );
    }
}
