//! Chunk codecs: how one run of a tensor's elements is stored.
//!
//! A chunk is self-describing (codec id, stream codings, checksum, base id), so old packs stay
//! readable as codecs are added, and every chunk decodes independently of its neighbours.
//! Layout in `docs/FORMAT.md`.

pub mod convert;
pub mod delta;
pub mod lowrank;
pub mod mask;
pub mod planes;
pub mod rans;

use twox_hash::XxHash3_64;

use crate::encoding::{Reader, Writer};
use crate::object::{DType, ObjectId};
use planes::Grouping;

/// A chunk that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Structurally invalid chunk.
    #[error("corrupt chunk: {0}")]
    Corrupt(String),
    /// The entropy-coded stream is invalid.
    #[error("corrupt chunk: {0}")]
    Rans(#[from] rans::RansError),
    /// Decoded bytes do not match the stored checksum.
    #[error("chunk checksum mismatch")]
    Checksum,
    /// The base chunk a delta was decoded on (see [`Base::GroupedF32`]) is damaged.
    #[error("base chunk: {0}")]
    InBase(Box<CodecError>),
}

/// A delta chunk's base, as [`ChunkView::decode_on`] takes it.
#[derive(Clone)]
pub enum Base<'b> {
    /// Its elements in the fine-tune's dtype.
    Elements(&'b [u8]),
    /// A standalone F32 chunk under a BF16 fine-tune: if byte-grouped (and the fine-tune a
    /// difference), joined and rounded a part at a time as the fine-tune is decoded on it;
    /// otherwise decoded whole first.
    GroupedF32(&'b ChunkView<'b>),
    /// A difference chunk (`bitx-diff-ctx`) of the fine-tune's dtype and length, on its own
    /// base: if the fine-tune is a difference too, decoded a part at a time along with it,
    /// never whole; otherwise decoded whole first. A chain of fine-tunes decodes this way.
    Difference(&'b ChunkView<'b>, Box<Base<'b>>),
}

impl Base<'_> {
    /// Whether a difference chunk of `raw_len` bytes of `dtype` can be decoded on this base a
    /// part at a time.
    fn in_parts(&self, dtype: DType, raw_len: usize) -> bool {
        match self {
            Base::Elements(_) => true,
            Base::GroupedF32(b) => dtype == DType::BF16 && b.codec == Codec::Grouped && b.raw_len == 2 * raw_len,
            Base::Difference(v, below) => {
                v.codec.is_difference() && v.raw_len == raw_len && below.in_parts(dtype, raw_len)
            }
        }
    }

    /// The base decoded whole, in `dtype`, each chunk checked by its own checksum; errors are
    /// [`CodecError::InBase`], once per link below the fine-tune.
    fn whole(&self, dtype: DType) -> Result<std::borrow::Cow<'_, [u8]>, CodecError> {
        let in_base = |e| CodecError::InBase(Box::new(e));
        match self {
            Base::Elements(b) => Ok(std::borrow::Cow::Borrowed(b)),
            Base::GroupedF32(b) => b.decode_as(DType::F32, Some(dtype), None).map(Into::into).map_err(in_base),
            Base::Difference(v, below) => v.decode_on(dtype, Some((**below).clone())).map(Into::into).map_err(in_base),
        }
    }
}

/// The base of a delta chunk decoded a part at a time.
enum BaseParts<'b> {
    Elements(&'b [u8]),
    /// Byte planes of F32 elements, rounded to BF16 into `rounded` a part at a time (parts of
    /// one length, so that it is written over in place).
    F32Planes {
        planes: [&'b [u8]; 4],
        rounded: Vec<u8>,
    },
    /// A difference chunk rebuilt a part at a time on its own base's parts.
    Difference(Box<(LinkDecoder<'b>, BaseParts<'b>)>),
}

impl BaseParts<'_> {
    /// The base of elements `range`, `width` bytes each in the fine-tune's dtype (empty if out
    /// of bounds, which the decoded length then refuses). Parts come in order.
    fn part(&mut self, range: std::ops::Range<usize>, width: usize) -> Result<&[u8], CodecError> {
        match self {
            BaseParts::Elements(b) => Ok(b.get(range.start * width..range.end * width).unwrap_or_default()),
            BaseParts::F32Planes { planes, rounded } => {
                match planes.map(|p| p.get(range.clone())) {
                    [Some(e), Some(p0), Some(p1), Some(p2)] => {
                        planes::round_f32_planes_to_bf16([e, p0, p1, p2], rounded)
                    }
                    _ => rounded.clear(),
                }
                Ok(rounded)
            }
            BaseParts::Difference(d) => {
                let (decoder, below) = &mut **d;
                let base = below.part(range, width).map_err(|e| CodecError::InBase(Box::new(e)))?;
                decoder.part(base).map_err(|e| CodecError::InBase(Box::new(e)))
            }
        }
    }
}

/// A `bitx-diff-ctx` chunk decoded a part at a time: the contexts of the base's part, their
/// symbols, the elements rebuilt on the base's part.
struct PartDecoder<'s> {
    dtype: DType,
    symbols: rans::Decoder<'s>,
    rebuild: delta::DiffRebuild<'s>,
    contexts: Vec<u8>,
    part_symbols: Vec<u8>,
}

impl<'s> PartDecoder<'s> {
    /// A decoder of `n` elements from a chunk's symbol and raw-bit streams; with `keep`, the
    /// elements are gathered for [`PartDecoder::finish`], otherwise each part replaces the last.
    fn new(dtype: DType, n: usize, (coded, raw_bits): (&'s [u8], &'s [u8]), keep: bool) -> Result<Self, CodecError> {
        let part = n.min(PART_ELEMENTS);
        Ok(PartDecoder {
            dtype,
            symbols: rans::Decoder::new(coded, n)?,
            rebuild: delta::DiffRebuild::new(dtype, raw_bits, if keep { n } else { part }, keep),
            contexts: vec![0; part],
            part_symbols: vec![0; part],
        })
    }

    /// The next elements, as many as `base` holds (at most [`PART_ELEMENTS`]), rebuilt on it.
    fn part(&mut self, base: &[u8]) -> Result<&[u8], CodecError> {
        let m = (base.len() / self.dtype.width()).min(self.contexts.len());
        delta::contexts_into(self.dtype, base, &mut self.contexts[..m]);
        self.symbols.decode(&self.contexts[..m], &mut self.part_symbols[..m])?;
        self.rebuild.part(&self.part_symbols[..m], base)
    }

    /// The elements kept, once every symbol was decoded and the streams are used up.
    fn finish(self) -> Result<Vec<u8>, CodecError> {
        self.symbols.finish()?;
        Ok(self.rebuild.finish())
    }
}

/// A difference chunk decoded a part at a time, each part on the same elements of its base.
enum LinkDecoder<'s> {
    /// `bitx-diff-ctx`.
    Context(PartDecoder<'s>),
    /// `bitx-diff-mask`.
    Masked(MaskedDecoder<'s>),
}

impl<'s> LinkDecoder<'s> {
    /// A decoder of `n` elements of a `codec` chunk from its [`ChunkView::link_streams`]; with
    /// `keep`, the elements are gathered for [`LinkDecoder::finish`], otherwise each part
    /// replaces the last.
    fn new(codec: Codec, dtype: DType, n: usize, streams: [&'s [u8]; 3], keep: bool) -> Result<Self, CodecError> {
        let [coded, raw_bits, mask] = streams;
        Ok(match codec {
            Codec::DiffMasked => LinkDecoder::Masked(MaskedDecoder::new(dtype, n, (coded, raw_bits, mask), keep)?),
            _ => LinkDecoder::Context(PartDecoder::new(dtype, n, (coded, raw_bits), keep)?),
        })
    }

    fn part(&mut self, base: &[u8]) -> Result<&[u8], CodecError> {
        match self {
            LinkDecoder::Context(d) => d.part(base),
            LinkDecoder::Masked(d) => d.part(base),
        }
    }

    /// The elements kept, once every symbol was decoded and the streams are used up.
    fn finish(self) -> Result<Vec<u8>, CodecError> {
        match self {
            LinkDecoder::Context(d) => d.finish(),
            LinkDecoder::Masked(d) => d.finish(),
        }
    }
}

/// A `bitx-diff-mask` chunk decoded a part at a time: the blocks of each part its mask sets
/// are a part of a `bitx-diff-ctx` difference on the same blocks of the base, the others the
/// base's own. Parts begin on block boundaries.
struct MaskedDecoder<'s> {
    mask: &'s [u8],
    kept: PartDecoder<'s>,
    width: usize,
    /// The block the next part begins with.
    block: usize,
    base_kept: Vec<u8>,
    /// Every part so far with `keep`, else the last.
    out: Vec<u8>,
    keep: bool,
}

impl<'s> MaskedDecoder<'s> {
    /// A decoder of `n` elements of `dtype` from a chunk's symbols, raw bits and mask; `keep`
    /// as for [`LinkDecoder::new`].
    fn new(
        dtype: DType,
        n: usize,
        (coded, raw_bits, mask): (&'s [u8], &'s [u8], &'s [u8]),
        keep: bool,
    ) -> Result<Self, CodecError> {
        let kept = mask::kept(mask, n).map_err(CodecError::Corrupt)?;
        Ok(MaskedDecoder {
            mask,
            kept: PartDecoder::new(dtype, kept, (coded, raw_bits), false)?,
            width: dtype.width(),
            block: 0,
            base_kept: Vec::new(),
            out: Vec::with_capacity(if keep { n * dtype.width() } else { 0 }),
            keep,
        })
    }

    /// The next elements, as many as `base` holds (a whole number of blocks but for the
    /// chunk's last part), rebuilt on it.
    fn part(&mut self, base: &[u8]) -> Result<&[u8], CodecError> {
        let (mask, width) = (self.mask, self.width);
        self.base_kept.clear();
        mask::gather_into(base, mask, self.block, width, &mut self.base_kept);
        let fine = self.kept.part(&self.base_kept)?;
        if !self.keep {
            self.out.clear();
        }
        let from = self.out.len();
        // Refuses `fine` unless it holds exactly the part's kept blocks, as long as `base_kept`.
        if !mask::scatter_into(base, mask, self.block, fine, width, &mut self.out) {
            return Err(CodecError::Corrupt("the masked blocks decoded to another length".into()));
        }
        self.block += (base.len() / width).div_ceil(mask::BLOCK);
        Ok(&self.out[from..])
    }

    /// The elements kept, once every symbol was decoded and the streams are used up.
    fn finish(self) -> Result<Vec<u8>, CodecError> {
        self.kept.finish()?;
        Ok(self.out)
    }
}

impl From<crate::encoding::DecodeError> for CodecError {
    fn from(e: crate::encoding::DecodeError) -> Self {
        CodecError::Corrupt(e.to_string())
    }
}

/// How a chunk's elements were transformed before its streams were coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Codec {
    /// The bytes themselves.
    Raw,
    /// Byte-grouped planes of the elements.
    Grouped,
    /// Byte-grouped planes of the XOR with the base (the paper's BitX).
    Xor,
    /// Zigzag key difference from the base, entropy coded by base exponent.
    DiffContext,
    /// As `DiffContext`, with the top byte of each difference's raw bits entropy coded too,
    /// by symbol and the base's high mantissa bits (FP32 weight decay moves a weight by a
    /// number of ULPs that depends on its mantissa).
    DiffLow,
    /// As `DiffContext` over only the blocks of elements that differ from the base, which a
    /// mask names ([`mask`]): fine-tunes leave whole rows exactly as they were.
    DiffMasked,
    /// As `DiffContext` on a prediction of the base plus a low-rank product ([`lowrank`]):
    /// merged LoRA adapters.
    LowRank,
}

impl Codec {
    fn code(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Grouped => 1,
            Codec::Xor => 2,
            Codec::DiffContext => 3,
            Codec::DiffLow => 4,
            Codec::DiffMasked => 5,
            Codec::LowRank => 6,
        }
    }

    fn from_code(c: u8) -> Option<Codec> {
        Some(match c {
            0 => Codec::Raw,
            1 => Codec::Grouped,
            2 => Codec::Xor,
            3 => Codec::DiffContext,
            4 => Codec::DiffLow,
            5 => Codec::DiffMasked,
            6 => Codec::LowRank,
            _ => return None,
        })
    }

    /// True if the chunk needs its base to decode.
    pub fn is_delta(self) -> bool {
        matches!(self, Codec::Xor | Codec::DiffContext | Codec::DiffLow | Codec::DiffMasked | Codec::LowRank)
    }

    /// Whether the chunk is the difference coder's (`bitx-diff-ctx`, or `bitx-diff-mask` on
    /// the blocks it keeps), which a chain decodes a part at a time.
    pub fn is_difference(self) -> bool {
        matches!(self, Codec::DiffContext | Codec::DiffMasked)
    }

    /// Name for output.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Grouped => "grouped",
            Codec::Xor => "bitx-xor",
            Codec::DiffContext => "bitx-diff-ctx",
            Codec::DiffLow => "bitx-diff-low",
            Codec::DiffMasked => "bitx-diff-mask",
            Codec::LowRank => "bitx-lowrank",
        }
    }
}

const STREAM_RAW: u8 = 0;
const STREAM_ZSTD: u8 = 1;

/// Tunables for encoding.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// zstd level for byte streams.
    pub zstd_level: i32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { zstd_level: 1 }
    }
}

/// A parsed chunk header plus its still-coded streams.
pub struct ChunkView<'a> {
    /// Transform used.
    pub codec: Codec,
    /// Decoded length in bytes.
    pub raw_len: usize,
    /// Base tensor for delta codecs.
    pub base: Option<ObjectId>,
    checksum: u64,
    streams: Vec<(u8, &'a [u8])>,
}

/// The largest decoded chunk accepted from disk (bounds allocations on hostile input).
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Elements decoded together in a part of a delta chunk: with their base, contexts and
/// symbols about 100 KB for 16-bit elements, well within a core's second-level cache.
const PART_ELEMENTS: usize = 256 * rans::PART;
// Parts of a masked chunk begin on its blocks.
const _: () = assert!(PART_ELEMENTS.is_multiple_of(mask::BLOCK));

impl<'a> ChunkView<'a> {
    /// Parses a stored chunk without decoding it.
    pub fn parse(stored: &'a [u8]) -> Result<ChunkView<'a>, CodecError> {
        let mut r = Reader::new(stored);
        let code = r.u8()?;
        let codec = Codec::from_code(code).ok_or_else(|| CodecError::Corrupt(format!("unknown codec id {code}")))?;
        let count = r.u8()? as usize;
        let raw_len = r.u32()? as usize;
        if raw_len > MAX_CHUNK_BYTES {
            return Err(CodecError::Corrupt(format!("chunk claims {raw_len} bytes")));
        }
        let checksum = r.u64()?;
        let base = if codec.is_delta() { Some(r.id()?) } else { None };
        let mut lens = Vec::with_capacity(count);
        for _ in 0..count {
            lens.push((r.u8()?, r.u32()? as usize));
        }
        let mut streams = Vec::with_capacity(count);
        for (coding, len) in lens {
            streams.push((coding, r.bytes(len)?));
        }
        r.finish()?;
        Ok(ChunkView { codec, raw_len, base, checksum, streams })
    }

    /// XXH3-64 of the decoded bytes.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Decodes the chunk; `base` must be the base's elements converted to `dtype`, same length.
    pub fn decode(&self, dtype: DType, base: Option<&[u8]>) -> Result<Vec<u8>, CodecError> {
        self.decode_on(dtype, base.map(Base::Elements))
    }

    /// Decodes the chunk on `base` (None for chunks that have none).
    pub fn decode_on(&self, dtype: DType, base: Option<Base<'_>>) -> Result<Vec<u8>, CodecError> {
        let n = self.elements(dtype)?;
        if self.codec.is_difference()
            && let Some(base) = base.as_ref().filter(|b| b.in_parts(dtype, self.raw_len))
        {
            return self.decode_in_parts(dtype, n, base);
        }
        let base = base.map(|b| b.whole(dtype).map(std::borrow::Cow::into_owned)).transpose()?;
        let (out, hashed) = match self.codec {
            Codec::Raw => (self.stream(0, self.raw_len)?.into_owned(), None),
            Codec::Grouped => (self.join_planes(dtype, n)?, None),
            Codec::Xor => {
                let base = self.base_bytes(base.as_deref())?;
                let mut out = self.join_planes(dtype, n)?;
                out.iter_mut().zip(base).for_each(|(o, b)| *o ^= b);
                (out, None)
            }
            Codec::DiffContext | Codec::DiffMasked => {
                let base = self.base_bytes(base.as_deref())?;
                let (out, checksum) = self.rebuild_difference(dtype, n, &mut BaseParts::Elements(base))?;
                (out, Some(checksum))
            }
            Codec::DiffLow => {
                let base = self.base_bytes(base.as_deref())?;
                let symbols = self.difference_symbols(dtype, base)?;
                let low_contexts = delta::low_contexts(dtype, &symbols, base);
                let mut lows = vec![0u8; low_contexts.len()];
                rans::decode(&self.stream(1, usize::MAX)?, &low_contexts, &mut lows)?;
                let rest_bits = self.stream(2, usize::MAX)?;
                (delta::unsymbolise_diff_low(dtype, &symbols, &lows, &rest_bits, base)?, None)
            }
            Codec::LowRank => {
                let (out, checksum) = self.rebuild_low_rank(dtype, n, self.base_bytes(base.as_deref())?)?;
                (out, Some(checksum))
            }
        };
        self.checked(out, hashed)
    }

    /// A `bitx-diff-ctx` chunk of `n` elements decoded on `base` a part at a time, with every
    /// link of its chain of differences down to elements or F32 planes: each part of each link
    /// stays in the core's cache, and no link is ever whole in memory. The links' own
    /// checksums are not taken: what comes out is checked by this chunk's checksum (and the
    /// object's id), and only if that fails is the base decoded whole and checked, to name the
    /// damaged chunk.
    fn decode_in_parts(&self, dtype: DType, n: usize, base: &Base<'_>) -> Result<Vec<u8>, CodecError> {
        self.decode_on_chain(dtype, n, base).map_err(|e| base.whole(dtype).err().unwrap_or(e))
    }

    fn decode_on_chain(&self, dtype: DType, n: usize, base: &Base<'_>) -> Result<Vec<u8>, CodecError> {
        // The links top down, then what the lowest stands on.
        let (mut links, mut link) = (Vec::new(), base);
        let planes;
        let mut parts = loop {
            match link {
                Base::Difference(view, below) => {
                    links.push(*view);
                    link = below;
                }
                Base::Elements(b) => break BaseParts::Elements(self.base_bytes(Some(b))?),
                Base::GroupedF32(b) => {
                    planes = b.planes(DType::F32, n)?;
                    break BaseParts::F32Planes {
                        planes: std::array::from_fn(|k| planes.get(k).map_or(&[][..], |p| &p[..])),
                        rounded: Vec::new(),
                    };
                }
            }
        };
        let streams: Vec<_> = links.iter().map(|v| v.link_streams(n)).collect::<Result<_, CodecError>>()?;
        for (view, streams) in links.iter().zip(&streams).rev() {
            let decoder = LinkDecoder::new(view.codec, dtype, n, streams.each_ref().map(|s| &s[..]), false)?;
            parts = BaseParts::Difference(Box::new((decoder, parts)));
        }
        let (out, checksum) = self.rebuild_difference(dtype, n, &mut parts)?;
        self.checked(out, Some(checksum))
    }

    /// The streams a difference chunk of `n` elements is decoded from a part at a time:
    /// symbols, raw bits, and the mask of `bitx-diff-mask` (empty for others).
    fn link_streams(&self, n: usize) -> Result<[std::borrow::Cow<'a, [u8]>; 3], CodecError> {
        let mask = match self.codec {
            Codec::DiffMasked => self.stream(2, mask::len_for(n))?,
            _ => std::borrow::Cow::Borrowed(&[][..]),
        };
        Ok([self.stream(0, usize::MAX)?, self.stream(1, usize::MAX)?, mask])
    }

    /// `out`, if it has the chunk's length and checksum (`hashed`, or taken now).
    fn checked(&self, out: Vec<u8>, hashed: Option<u64>) -> Result<Vec<u8>, CodecError> {
        if out.len() != self.raw_len {
            return Err(CodecError::Corrupt(format!("decoded {} bytes, expected {}", out.len(), self.raw_len)));
        }
        if hashed.unwrap_or_else(|| XxHash3_64::oneshot(&out)) != self.checksum {
            return Err(CodecError::Checksum);
        }
        Ok(out)
    }

    /// Rebuilds a difference chunk (`bitx-diff-ctx`, `bitx-diff-mask`, or the difference of
    /// `bitx-lowrank`) of `n` elements on `base` a part at a time (base, contexts, symbols,
    /// elements, checksum), so that each part's intermediate bytes stay in the core's cache;
    /// returns the elements and their XXH3-64.
    fn rebuild_difference(
        &self,
        dtype: DType,
        n: usize,
        base: &mut BaseParts<'_>,
    ) -> Result<(Vec<u8>, u64), CodecError> {
        let streams = self.link_streams(n)?;
        let mut decoder = LinkDecoder::new(self.codec, dtype, n, streams.each_ref().map(|s| &s[..]), true)?;
        let mut hasher = XxHash3_64::new();
        for start in (0..n).step_by(PART_ELEMENTS) {
            let part_base = base.part(start..(start + PART_ELEMENTS).min(n), dtype.width())?;
            std::hash::Hasher::write(&mut hasher, decoder.part(part_base)?);
        }
        Ok((decoder.finish()?, std::hash::Hasher::finish(&hasher)))
    }

    /// Rebuilds a `bitx-lowrank` chunk of `n` elements: a `bitx-diff-ctx` difference on the
    /// prediction its factors (stream 2) make from `base`.
    fn rebuild_low_rank(&self, dtype: DType, n: usize, base: &[u8]) -> Result<(Vec<u8>, u64), CodecError> {
        if !lowrank::applies(dtype) {
            return Err(CodecError::Corrupt(format!("a low-rank chunk of {dtype} elements")));
        }
        let factors = lowrank::Factors::parse(&self.stream(2, usize::MAX)?, n).map_err(CodecError::Corrupt)?;
        self.rebuild_difference(dtype, n, &mut BaseParts::Elements(&factors.predict(dtype, base)))
    }

    /// The number of `dtype` elements the chunk holds, refusing a length that is not whole.
    fn elements(&self, dtype: DType) -> Result<usize, CodecError> {
        if !self.raw_len.is_multiple_of(dtype.width()) {
            return Err(CodecError::Corrupt(format!(
                "{} bytes is not a whole number of {dtype} elements",
                self.raw_len
            )));
        }
        Ok(self.raw_len / dtype.width())
    }

    /// Decodes the chunk (elements of `dtype`) converted to `to` (None: as it is). Byte-grouped
    /// F32 goes to BF16 a block at a time, its checksum taken on the way, so the F32 chunk is
    /// never whole in memory: how an F32 base serves BF16 fine-tunes.
    pub fn decode_as(&self, dtype: DType, to: Option<DType>, base: Option<&[u8]>) -> Result<Vec<u8>, CodecError> {
        match to.filter(|&t| t != dtype) {
            None => self.decode(dtype, base),
            Some(DType::BF16) if dtype == DType::F32 && self.codec == Codec::Grouped => self.join_f32_as_bf16(),
            Some(t) => convert::convert(&self.decode(dtype, base)?, dtype, t)
                .ok_or_else(|| CodecError::Corrupt(format!("{dtype} elements do not convert to {t}"))),
        }
    }

    fn join_f32_as_bf16(&self) -> Result<Vec<u8>, CodecError> {
        let n = self.elements(DType::F32)?;
        let planes = self.planes(DType::F32, n)?;
        let (out, checksum) = planes::join_f32_as_bf16(std::array::from_fn(|k| &planes[k][..]));
        if checksum != self.checksum {
            return Err(CodecError::Checksum);
        }
        Ok(out)
    }

    /// Stream 0 of the difference codecs: one symbol per element, under the base's contexts.
    fn difference_symbols(&self, dtype: DType, base: &[u8]) -> Result<Vec<u8>, CodecError> {
        let contexts = delta::contexts(dtype, base);
        let mut symbols = vec![0u8; contexts.len()];
        rans::decode(&self.stream(0, usize::MAX)?, &contexts, &mut symbols)?;
        Ok(symbols)
    }

    fn base_bytes<'b>(&self, base: Option<&'b [u8]>) -> Result<&'b [u8], CodecError> {
        match base {
            Some(b) if b.len() == self.raw_len => Ok(b),
            Some(b) => Err(CodecError::Corrupt(format!("base has {} bytes, chunk {}", b.len(), self.raw_len))),
            None => Err(CodecError::Corrupt("delta chunk decoded without its base".into())),
        }
    }

    fn join_planes(&self, dtype: DType, n: usize) -> Result<Vec<u8>, CodecError> {
        Ok(Grouping::of(dtype).join(&self.planes(dtype, n)?, n))
    }

    /// The byte planes of `n` elements of `dtype`, each checked to hold `n` bytes.
    fn planes(&self, dtype: DType, n: usize) -> Result<Vec<std::borrow::Cow<'a, [u8]>>, CodecError> {
        let count = Grouping::of(dtype).planes();
        if self.streams.len() != count {
            return Err(CodecError::Corrupt(format!("{} streams, {dtype} needs {count}", self.streams.len())));
        }
        let planes = (0..count).map(|i| self.stream(i, n)).collect::<Result<Vec<_>, _>>()?;
        if planes.iter().any(|p| p.len() != n) {
            return Err(CodecError::Corrupt("plane length mismatch".into()));
        }
        Ok(planes)
    }

    /// Decodes stream `i`, refusing to inflate beyond `limit` bytes (or the chunk bound).
    fn stream(&self, i: usize, limit: usize) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
        let (coding, bytes) = self.streams.get(i).ok_or_else(|| CodecError::Corrupt(format!("missing stream {i}")))?;
        let limit = limit.min(MAX_CHUNK_BYTES * 2);
        match *coding {
            STREAM_RAW => Ok(std::borrow::Cow::Borrowed(bytes)),
            STREAM_ZSTD => {
                let data =
                    zstd_decompress(bytes, limit).map_err(|e| CodecError::Corrupt(format!("zstd stream {i}: {e}")))?;
                Ok(std::borrow::Cow::Owned(data))
            }
            c => Err(CodecError::Corrupt(format!("unknown stream coding {c}"))),
        }
    }
}

/// How a stream is handed to zstd.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Zstd {
    /// The configured level: blobs, integers, the sign and mantissa planes of floats.
    Level(i32),
    /// Exponent planes of floats (with the configured level). Short repeats in them are chance
    /// (exponents are few), and cost more as matches than as Huffman-coded literals, so short
    /// matches are all but off (fast strategy, 7-byte minimum, a 64-slot table) and only long
    /// ones are sought (long-distance matching: repeated rows, runs). On the exponent planes of
    /// real F32 models that is 10% smaller than level 1 (as small as level 19) and decodes
    /// twice as fast. Planes below [`LITERALS_TRIAL`] are also coded at the level, keeping the
    /// smaller: in a small plane the Huffman table weighs more than chance repeats.
    Literals(i32),
}

/// Exponent planes shorter than this are coded both ways (see [`Zstd::Literals`]).
const LITERALS_TRIAL: usize = 64 << 10;

thread_local! {
    // zstd contexts are costly to create and chunks are small: keep one of each kind per
    // thread (the kinds alternate on small exponent planes).
    static COMPRESSORS: std::cell::RefCell<[Option<(Zstd, zstd::bulk::Compressor<'static>)>; 2]> = const { std::cell::RefCell::new([None, None]) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

fn compressor(how: Zstd) -> std::io::Result<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::{CParameter, Strategy};
    match how {
        Zstd::Level(level) => zstd::bulk::Compressor::new(level),
        Zstd::Literals(_) => {
            let mut c = zstd::bulk::Compressor::new(1)?;
            c.set_parameter(CParameter::Strategy(Strategy::ZSTD_fast))?;
            c.set_parameter(CParameter::MinMatch(7))?;
            c.set_parameter(CParameter::HashLog(6))?;
            c.set_parameter(CParameter::EnableLongDistanceMatching(true))?;
            Ok(c)
        }
    }
}

fn zstd_compress(data: &[u8], how: Zstd) -> std::io::Result<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut slots = cell.borrow_mut();
        let slot = &mut slots[usize::from(matches!(how, Zstd::Literals(_)))];
        let (_, c) = match slot {
            Some(kept) if kept.0 == how => kept,
            _ => slot.insert((how, compressor(how)?)),
        };
        c.compress(data)
    })
}

fn zstd_decompress(data: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(data, limit),
            None => zstd::bulk::decompress(data, limit),
        }
    })
}

/// Codes a byte stream with zstd, or keeps it raw when that is not smaller.
fn code_stream(data: Vec<u8>, how: Zstd) -> (u8, Vec<u8>) {
    let mut best = zstd_compress(&data, how).ok();
    if let Zstd::Literals(level) = how
        && data.len() < LITERALS_TRIAL
        && let Ok(z) = zstd_compress(&data, Zstd::Level(level))
        && best.as_ref().is_none_or(|b| z.len() < b.len())
    {
        best = Some(z);
    }
    match best {
        Some(z) if z.len() < data.len() => (STREAM_ZSTD, z),
        _ => (STREAM_RAW, data),
    }
}

fn assemble(codec: Codec, raw: &[u8], base: Option<ObjectId>, streams: Vec<(u8, Vec<u8>)>) -> Vec<u8> {
    let body: usize = streams.iter().map(|s| s.1.len()).sum();
    let mut out = Vec::with_capacity(14 + 32 + 5 * streams.len() + body);
    out.push(codec.code());
    out.push(streams.len() as u8);
    out.put_u32(raw.len() as u32);
    out.put_u64(XxHash3_64::oneshot(raw));
    if let Some(id) = base {
        out.extend_from_slice(&id.0);
    }
    for (coding, s) in &streams {
        out.push(*coding);
        out.put_u32(s.len() as u32);
    }
    for (_, s) in streams {
        out.extend_from_slice(&s);
    }
    out
}

/// Encodes `data` with one specific codec. `base` is required for delta codecs.
pub fn encode_with(
    codec: Codec,
    dtype: DType,
    data: &[u8],
    base: Option<(ObjectId, &[u8])>,
    opts: EncodeOptions,
) -> Vec<u8> {
    let level = Zstd::Level(opts.zstd_level);
    let grouped = |bytes: &[u8]| -> Vec<(u8, Vec<u8>)> {
        let grouping = Grouping::of(dtype);
        let how = |k: usize| if k < grouping.exponent_planes() { Zstd::Literals(opts.zstd_level) } else { level };
        grouping.split(bytes).into_iter().enumerate().map(|(k, p)| code_stream(p, how(k))).collect()
    };
    let (streams, base_id) = match (codec, base) {
        (Codec::Xor, Some((id, b))) => (grouped(&delta::xor(data, b)), Some(id)),
        (Codec::DiffContext, Some((id, b))) => (difference_streams(dtype, data, b), Some(id)),
        (Codec::DiffMasked, Some((id, b))) => {
            let width = dtype.width();
            let mask = mask::of(data, b, width);
            let mut streams =
                difference_streams(dtype, &mask::gather(data, &mask, width), &mask::gather(b, &mask, width));
            streams.push(code_stream(mask, level));
            (streams, Some(id))
        }
        (Codec::DiffLow, Some((id, b))) => {
            let s = delta::symbolise_diff_low(dtype, data, b);
            let streams = vec![
                (STREAM_RAW, rans::encode(&s.symbols, &s.contexts)),
                (STREAM_RAW, rans::encode(&s.lows, &s.low_contexts)),
                (STREAM_RAW, s.rest_bits),
            ];
            (streams, Some(id))
        }
        (Codec::Grouped, _) => (grouped(data), None),
        _ => (vec![code_stream(data.to_vec(), level)], None),
    };
    let codec = if base_id.is_none() && codec.is_delta() { Codec::Raw } else { codec };
    assemble(codec, data, base_id, streams)
}

/// A `bitx-lowrank` chunk of `data` on `base` with `factors` (see [`lowrank::fit`]).
pub fn encode_low_rank(
    dtype: DType,
    data: &[u8],
    (id, base): (ObjectId, &[u8]),
    factors: &lowrank::Factors,
    opts: EncodeOptions,
) -> Vec<u8> {
    let mut streams = difference_streams(dtype, data, &factors.predict(dtype, base));
    streams.push(code_stream(factors.to_bytes(), Zstd::Level(opts.zstd_level)));
    assemble(Codec::LowRank, data, Some(id), streams)
}

/// Stored bytes of codec 3's streams for `fine` on `base`.
fn difference_size(dtype: DType, fine: &[u8], base: &[u8]) -> usize {
    difference_streams(dtype, fine, base).iter().map(|s| s.1.len()).sum()
}

/// The streams of codec 3 for `fine` on `base`: the symbols, rANS coded, and the raw bits.
fn difference_streams(dtype: DType, fine: &[u8], base: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let s = delta::symbolise_diff(dtype, fine, base);
    vec![(STREAM_RAW, rans::encode(&s.symbols, &s.contexts)), (STREAM_RAW, s.raw_bits)]
}

/// Codecs worth a trial for a chunk of `elements`: with a base, the difference coder (with and
/// without a block mask) against byte grouping, plus XOR for small chunks (the only place it
/// has been seen to win, where the coder's tables cost more than they save) and the low-byte
/// coder for floats with mantissas long enough to leave raw bits (FP16, FP32, FP64); without a
/// base, byte grouping alone (raw is the fallback of every encoding).
pub fn candidates(dtype: DType, has_base: bool, elements: usize) -> &'static [Codec] {
    let long_mantissa = dtype.float_layout().is_some_and(|l| l.mantissa >= 10);
    match (has_base, elements <= SMALL_CHUNK, long_mantissa) {
        (true, true, true) => &[Codec::DiffContext, Codec::DiffMasked, Codec::DiffLow, Codec::Xor, Codec::Grouped],
        (true, true, false) => &[Codec::DiffContext, Codec::DiffMasked, Codec::Xor, Codec::Grouped],
        (true, false, true) => &[Codec::DiffContext, Codec::DiffMasked, Codec::DiffLow, Codec::Grouped],
        (true, false, false) => &[Codec::DiffContext, Codec::DiffMasked, Codec::Grouped],
        (false, _, _) => &[Codec::Grouped],
    }
}

/// Chunks up to this many elements also try XOR.
const SMALL_CHUNK: usize = 1 << 14;
/// Elements per sample window, and windows per sample, used to choose a chunk's codec.
const SAMPLE_WINDOW: usize = 1024;
const SAMPLE_WINDOWS: usize = 4;

/// Evenly spaced windows of `data` (`width`-byte elements), or all of it when small.
pub fn sample(data: &[u8], width: usize) -> std::borrow::Cow<'_, [u8]> {
    let n = data.len() / width;
    if n <= SAMPLE_WINDOW * SAMPLE_WINDOWS {
        return std::borrow::Cow::Borrowed(data);
    }
    let step = n / SAMPLE_WINDOWS * width;
    let window = SAMPLE_WINDOW * width;
    std::borrow::Cow::Owned(
        (0..SAMPLE_WINDOWS).flat_map(|i| data[i * step..i * step + window].iter().copied()).collect(),
    )
}

/// The candidate codecs ranked by the size of their encoding of a sample, smallest first.
pub fn rank(dtype: DType, data: &[u8], base: Option<(ObjectId, &[u8])>, opts: EncodeOptions) -> Vec<(Codec, usize)> {
    let options = candidates(dtype, base.is_some(), data.len() / dtype.width());
    if let [only] = options {
        return vec![(*only, 0)];
    }
    let width = dtype.width();
    let data_sample = sample(data, width);
    let base_sample = base.map(|(id, b)| (id, sample(b, width)));
    let base_ref = base_sample.as_ref().map(|(id, b)| (*id, b.as_ref()));
    let mut ranked: Vec<(Codec, usize)> =
        options.iter().map(|&c| (c, encode_with(c, dtype, &data_sample, base_ref, opts).len())).collect();
    ranked.sort_by_key(|r| r.1);
    ranked
}

/// A runner-up within this fraction of the winner on the sample is also encoded in full.
const CLOSE_CALL: f64 = 0.1;

/// [`encode_chunk`] for a chunk of a matrix (`geometry`), which may also be predicted from its
/// base by a low-rank product (codec 6) when [`lowrank::fit`] finds one that pays.
pub fn encode_matrix_chunk(
    dtype: DType,
    data: &[u8],
    base: Option<(ObjectId, &[u8])>,
    geometry: lowrank::Geometry,
    opts: EncodeOptions,
) -> Vec<u8> {
    let best = encode_chunk(dtype, data, base, opts);
    let Some((id, b)) = base else { return best };
    match lowrank::fit(dtype, data, b, geometry) {
        Some(factors) => {
            let low = encode_low_rank(dtype, data, (id, b), &factors, opts);
            if low.len() < best.len() { low } else { best }
        }
        None => best,
    }
}

/// Encodes a chunk with the codec that wins on a sample (and with the runner-up when the
/// sample cannot tell them apart, keeping the smaller), or raw when nothing beats raw.
pub fn encode_chunk(dtype: DType, data: &[u8], base: Option<(ObjectId, &[u8])>, opts: EncodeOptions) -> Vec<u8> {
    let ranked = rank(dtype, data, base, opts);
    let winner = ranked.first().map_or(Codec::Raw, |r| r.0);
    let mut best = encode_with(winner, dtype, data, base, opts);
    // The difference coder with and without a mask differ by what the sample measures well
    // (the zeros left out and the mask's bits): a close call between them is not tried twice.
    let mut others = ranked.iter().skip(1).filter(|r| !(r.0.is_difference() && winner.is_difference()));
    if let (Some(&(_, first)), Some(&(second, size))) = (ranked.first(), others.next())
        && size as f64 <= first as f64 * (1.0 + CLOSE_CALL)
    {
        let other = encode_with(second, dtype, data, base, opts);
        if other.len() < best.len() {
            best = other;
        }
    }
    if best.len() > data.len() + RAW_OVERHEAD { encode_with(Codec::Raw, dtype, data, None, opts) } else { best }
}

/// Header bytes of a raw chunk with one stream: codec, count, length, checksum, stream header.
const RAW_OVERHEAD: usize = 1 + 1 + 4 + 8 + 5;

#[cfg(test)]
mod tests;
