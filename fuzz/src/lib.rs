//! Fuzz entry points for every mlv parser and decoder that reads untrusted bytes.
//!
//! Each `pub fn` takes the fuzzer's bytes, feeds them to one family of decoders and checks
//! that they fail cleanly or return something consistent. The cargo-fuzz targets in
//! `fuzz_targets/` call these; `tests/cases/test_fuzz.rs` includes this file and replays every
//! input under `tests/fuzz-regressions/<target>/` through the same function, so CI needs no
//! fuzzer. Only mlv's public API is used.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use mlv::codec::{self, Base, ChunkView, rans};
use mlv::object::{Commit, DType, ObjectId, Tag, TensorFile, Tree};
use mlv::pack::{EntryView, PACK_MAGIC, PackIndex, PackName, SealedPack, VERSION};
use mlv::store::{MemoryPacks, Odb, PackInfo, PackStore, StoreError, index_from_content};
use mlv::transport::wire;

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test and the corpus generator.
pub const TARGETS: &[(&str, Target)] = &[
    ("safetensors_header", safetensors_header),
    ("pack_entry", pack_entry),
    ("pack_index", pack_index),
    ("chunk_decode", chunk_decode),
    ("rans", rans),
    ("objects", objects),
    ("pack_walk", pack_walk),
    ("wire", wire),
];

/// A deterministic stand-in for a delta base: `len` bytes, a 4 KiB pattern from a small
/// generator seeded by `seed` repeated, varied enough that float bases give many coding
/// contexts. Seed chunks in the corpus are encoded against it, so the fuzzer starts from chunks
/// that decode.
pub fn fake_base(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    let pattern: Vec<u8> = (0..len.min(4096))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    pattern.iter().copied().cycle().take(len).collect()
}

/// Chunks decoded by the targets are at most this long. Decoding costs time in proportion to
/// the decoded length, which a 20-byte header may set to 64 MiB; larger chunks run the same
/// code and are only parsed, so the fuzzer spends its time on inputs that differ.
pub const DECODE_LIMIT: usize = 1 << 20;

/// `u32 data_len` then the JSON header of a safetensors file whose data region is that long.
pub fn safetensors_header(data: &[u8]) {
    let Some((len, header)) = data.split_first_chunk::<4>() else { return };
    let data_start = 8 + header.len() as u64;
    let file_len = data_start + u64::from(u32::from_le_bytes(*len));
    let Ok(spans) = mlv::safetensors::parse_header(header, file_len) else { return };
    // The spans tile the data region exactly, in order.
    let mut cursor = data_start;
    for span in &spans {
        let (start, end) = match span {
            mlv::safetensors::Span::Tensor(t) => (t.start, t.end),
            mlv::safetensors::Span::Bytes { start, end } => (*start, *end),
        };
        assert_eq!(start, cursor, "spans leave a hole or overlap");
        assert!(start <= end);
        cursor = end;
    }
    assert_eq!(cursor, file_len, "spans do not reach the end of the file");
}

/// One pack entry: parsed, then every chunk parsed and decoded without a base and with a base
/// of the right length.
pub fn pack_entry(data: &[u8]) {
    let Ok(view) = EntryView::parse(data) else { return };
    let (again, used) = EntryView::parse_prefix(data).expect("a whole entry parses as a prefix");
    assert_eq!((used, again.chunk_count()), (data.len(), view.chunk_count()));
    let h = &view.header;
    assert_eq!(view.chunk_count() as u64, h.chunk_count());
    for i in 0..view.chunk_count() {
        let Some(stored) = view.chunk(i) else { panic!("chunk {i} of {} missing", view.chunk_count()) };
        let (start, end) = h.chunk_range(i as u64);
        assert!(start < end && end <= h.meta.data_len, "chunk {i} range {start}..{end}");
        let Ok(chunk) = ChunkView::parse(stored) else { continue };
        if chunk.raw_len as u64 != end - start {
            continue;
        }
        decode_both(&chunk, h.meta.dtype, i as u8);
    }
}

/// Decodes a chunk without a base and against [`fake_base`]; a success has the promised length.
fn decode_both(chunk: &ChunkView<'_>, dtype: DType, seed: u8) {
    if chunk.raw_len > DECODE_LIMIT {
        return;
    }
    if let Ok(out) = chunk.decode(dtype, None) {
        assert_eq!(out.len(), chunk.raw_len);
    }
    let base = fake_base(chunk.raw_len, seed);
    // On elements, and on the chunk itself as a link of a chain (see `codec::Base::Difference`).
    for base in [Base::Elements(&base), Base::Difference(chunk, Box::new(Base::Elements(&base)))] {
        if let Ok(out) = chunk.decode_on(dtype, Some(base)) {
            assert_eq!(out.len(), chunk.raw_len);
        }
    }
    if dtype == DType::BF16 {
        decode_on_f32_bases(chunk, seed);
    }
}

/// Decodes a chunk as BF16 on F32 base chunks given whole (see [`codec::Base::GroupedF32`]):
/// a byte-grouped one of the right length, the chunk itself, and the chunk as a link on the
/// byte-grouped one.
fn decode_on_f32_bases(chunk: &ChunkView<'_>, seed: u8) {
    let words = fake_base(2 * chunk.raw_len, seed);
    let grouped = codec::encode_chunk(DType::F32, &words, None, codec::EncodeOptions::default());
    let Ok(grouped) = ChunkView::parse(&grouped) else { return };
    let link = Base::Difference(chunk, Box::new(Base::GroupedF32(&grouped)));
    for base in [Base::GroupedF32(&grouped), Base::GroupedF32(chunk), link] {
        if let Ok(out) = chunk.decode_on(DType::BF16, Some(base)) {
            assert_eq!(out.len(), chunk.raw_len);
        }
    }
}

/// A pack index body; the trailing checksum is appended here so the parser gets past it (the
/// bytes as given are tried too).
pub fn pack_index(data: &[u8]) {
    let path = Path::new("fuzz.idx");
    let _ = PackIndex::decode(path, data);
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(blake3_of(data).as_slice());
    let Ok(index) = PackIndex::decode(path, &bytes) else { return };
    for rec in &index.records {
        assert_eq!(index.find(&rec.id), Some(rec));
        assert!(index.bases_of(rec).len() <= usize::from(rec.base_count));
    }
    if index.bases_known {
        let back = PackIndex::decode(path, &index.encode()).expect("an encoded index decodes");
        assert_eq!((back.records, back.bases), (index.records, index.bases));
    }
}

/// The dtypes every chunk is decoded as, besides the one the input picks.
const CHUNK_DTYPES: &[DType] = &[DType::BF16, DType::F32, DType::F64, DType::U8, DType::I16, DType::F8_E4M3];

/// `u8 dtype index` then a stored chunk, decoded as that dtype and a few others.
pub fn chunk_decode(data: &[u8]) {
    let Some((&pick, stored)) = data.split_first() else { return };
    let Ok(chunk) = ChunkView::parse(stored) else { return };
    let chosen = DType::ALL[usize::from(pick) % DType::ALL.len()];
    decode_both(&chunk, chosen, pick);
    for &dtype in CHUNK_DTYPES.iter().filter(|&&d| d != chosen) {
        decode_both(&chunk, dtype, pick);
    }
}

/// Symbols decoded by the `rans` target at most (its inputs are small).
const RANS_MAX_SYMBOLS: usize = 1 << 16;

/// `u16 n`, `u8 context mode`, `u8 context parameter`, then an rANS block of `n` symbols whose
/// contexts the mode generates, decoded whole and in parts of lengths the parameter picks
/// (which must agree). The same bytes also go through the encoder as symbol and context
/// pairs, which must decode back exactly.
pub fn rans(data: &[u8]) {
    if let Some((head, block)) = data.split_first_chunk::<4>() {
        let n = usize::from(u16::from_le_bytes([head[0], head[1]])).min(RANS_MAX_SYMBOLS);
        let contexts = rans_contexts(n, head[2], head[3]);
        let mut out = vec![0u8; n];
        let whole = rans::decode(block, &contexts, &mut out).map(|()| out);
        let in_parts = rans_in_parts(block, &contexts, head[3]);
        assert_eq!(whole.ok(), in_parts, "a block decoded in parts differs from the whole");
    }
    let (symbols, contexts) = data.split_at(data.len() / 2);
    let symbols = &symbols[..contexts.len().min(symbols.len())];
    let contexts = &contexts[..symbols.len()];
    let encoded = rans::encode(symbols, contexts);
    let mut out = vec![0u8; symbols.len()];
    rans::decode(&encoded, contexts, &mut out).expect("an encoded block decodes");
    assert_eq!(out, symbols);
}

/// `block` decoded through [`rans::Decoder`] in parts of 1 to 200 symbols, their lengths
/// drawn from `seed`; None if any step fails.
fn rans_in_parts(block: &[u8], contexts: &[u8], seed: u8) -> Option<Vec<u8>> {
    let mut decoder = rans::Decoder::new(block, contexts.len()).ok()?;
    let mut out = vec![0u8; contexts.len()];
    let lengths = fake_base(64, seed);
    let (mut at, mut k) = (0, 0);
    while at < out.len() {
        let end = (at + 1 + usize::from(lengths[k % lengths.len()]) % 200).min(out.len());
        decoder.decode(&contexts[at..end], &mut out[at..end]).ok()?;
        (at, k) = (end, k + 1);
    }
    decoder.finish().ok().map(|()| out)
}

/// The contexts of `n` symbols: one constant, a cycle, a pseudo-random walk, or a few
/// exponent-like values, as `mode` says.
pub fn rans_contexts(n: usize, mode: u8, param: u8) -> Vec<u8> {
    match mode % 4 {
        0 => vec![param; n],
        1 => (0..n).map(|i| (i % (usize::from(param) + 1)) as u8).collect(),
        2 => fake_base(n, param),
        _ => fake_base(n, param).into_iter().map(|b| 120 + b % 8).collect(),
    }
}

/// The same bytes through every object decoder (tree, commit, tag, tensor file) and the
/// staging index; whatever decodes must encode back to something that decodes the same.
pub fn objects(data: &[u8]) {
    if let Ok(tree) = Tree::decode(data) {
        assert_eq!(tree.encode(), data, "a tree has one encoding");
    }
    if let Ok(file) = TensorFile::decode(data) {
        assert_eq!(file.encode(), data, "a tensor file has one encoding");
    }
    if let Ok(commit) = Commit::decode(data) {
        assert_eq!(Commit::decode(&commit.encode()).ok(), Some(commit), "commit does not survive re-encoding");
    }
    if let Ok(tag) = Tag::decode(data) {
        assert_eq!(Tag::decode(&tag.encode()).ok(), Some(tag), "tag does not survive re-encoding");
    }
    let _ = mlv::index::Index::decode(data, "fuzz-index");
    let mut staged = mlv::index::INDEX_MAGIC.to_vec();
    staged.extend_from_slice(&mlv::index::INDEX_VERSION.to_le_bytes());
    staged.extend_from_slice(data);
    staged.extend_from_slice(blake3_of(&staged).as_slice());
    let _ = mlv::index::Index::decode(&staged, "fuzz-index");
}

/// An empty object database: every delta base a walked pack names must be in the pack.
static EMPTY: LazyLock<Odb> =
    LazyLock::new(|| Odb::open(Arc::new(MemoryPacks::default())).expect("an empty store opens"));

/// The entries of a pack (the bytes between its header and trailer, which are added here),
/// walked as a received pack is; a pack that is accepted is then decoded whole, object by
/// object, as `verify_pack` does.
pub fn pack_walk(data: &[u8]) {
    let pack = pack_bytes(data);
    let name = PackName(blake3_of(&pack[..pack.len() - 32]));
    let Ok(index) = index_from_content(&EMPTY, Path::new("fuzz.pack"), name, &pack, &|_, _| {}) else { return };
    if index.records.iter().fold(0u64, |sum, r| sum.saturating_add(r.data_len)) > DECODE_LIMIT as u64 {
        return;
    }
    let info = PackInfo { name, len: pack.len() as u64 };
    let source = Arc::new(OnePack { name, bytes: Bytes::from(pack) });
    let mut records: Vec<_> = index.records.iter().collect();
    records.sort_by_key(|r| r.offset);
    let order: Vec<ObjectId> = records.iter().map(|r| r.id).collect();
    let Ok(overlay) = EMPTY.overlay(source, info, index.clone()) else { return };
    let bases_here = index.bases.iter().filter(|b| index.find(b).is_some()).copied().collect();
    let _ = overlay.stream_all_keeping(&order, &bases_here, |_| Ok(()));
}

/// A whole pack around `entries`: header, the entries, and the trailer.
pub fn pack_bytes(entries: &[u8]) -> Vec<u8> {
    let mut pack = PACK_MAGIC.to_vec();
    pack.extend_from_slice(&VERSION.to_le_bytes());
    pack.extend_from_slice(&0u32.to_le_bytes());
    pack.extend_from_slice(entries);
    let sum = blake3_of(&pack);
    pack.extend_from_slice(&sum);
    pack
}

fn blake3_of(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The pack being walked, readable like any store.
struct OnePack {
    name: PackName,
    bytes: Bytes,
}

impl PackStore for OnePack {
    fn describe(&self) -> String {
        "fuzz".into()
    }

    fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        Ok(vec![PackInfo { name: self.name, len: self.bytes.len() as u64 }])
    }

    fn read_index(&self, _: &PackName) -> Result<PackIndex, StoreError> {
        Err(StoreError::Backend("no index".into()))
    }

    fn read_range(&self, _: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError> {
        match start.checked_add(len).filter(|&e| e <= self.bytes.len() as u64) {
            Some(end) => Ok(self.bytes.slice(start as usize..end as usize)),
            None => Err(StoreError::Backend(format!("range {start}+{len} outside the pack"))),
        }
    }

    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError> {
        Ok(*pack == self.name)
    }

    fn install(&self, _: SealedPack) -> Result<(), StoreError> {
        Err(StoreError::Backend("read-only".into()))
    }
}

/// The same bytes as every JSON message of the HTTP protocol (each one that parses must
/// survive a round trip), and as text: a HEAD file, ref names, repository and pack names, an
/// object id and a `Range` header.
pub fn wire(data: &[u8]) {
    round_trip::<wire::Info>(data);
    round_trip::<wire::WireHead>(data);
    round_trip::<wire::RefList>(data);
    round_trip::<wire::RefUpdate>(data);
    round_trip::<wire::RefUpdated>(data);
    round_trip::<wire::PackList>(data);
    round_trip::<wire::WirePack>(data);
    round_trip::<wire::PackReceived>(data);
    round_trip::<wire::ErrorBody>(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(head) = mlv::refs::Head::decode(text, "HEAD") {
        let encoded = head.encode().expect("a decoded HEAD encodes");
        assert_eq!(mlv::refs::Head::decode(&encoded, "HEAD").ok(), Some(head));
    }
    for line in text.lines() {
        if mlv::refs::check_name(line).is_ok() {
            assert!(mlv::refs::check_full_name(&format!("refs/heads/{line}")).is_ok(), "{line:?}");
        }
        let _ = mlv::refs::check_full_name(line);
        let _ = mlv::serve::check_repo_name(line);
        if let Some(name) = PackName::from_stem(line) {
            assert_eq!(name.stem(), line);
        }
        if let Ok(id) = line.parse::<ObjectId>() {
            assert_eq!(id.to_hex(), line.to_ascii_lowercase());
        }
    }
    let _ = mlv::refs::find_clash(text.lines().next().unwrap_or(""), text.lines().skip(1));
    let len = data.len() as u64 * 977;
    if let Some((start, end)) = mlv::serve::routes::parse_range(Some(text), len) {
        assert!(start < end && end <= len, "range {start}..{end} of {len}");
    }
}

/// Parses `data` as `T`; whatever parses must serialise and parse back to the same JSON.
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else { return };
    let json = serde_json::to_string(&value).expect("a parsed message serialises");
    let back: T = serde_json::from_str(&json).expect("a serialised message parses");
    assert_eq!(serde_json::to_string(&back).ok(), Some(json));
}
