//! Property tests: random valid files round trip exactly; randomly damaged files are either
//! stored and restored exactly, or refused cleanly (file name, byte offset, `.mlv` untouched).

use proptest::prelude::*;

use crate::common::st::{self, Layout, Rng, T};
use crate::common::{TestRepo, byte_offset_in};

const DTYPES: &[&str] = &[
    "F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL",
    "C64", "F4", "F6_E2M3",
];

fn tensor(i: usize, dtype: &str, mut shape: Vec<u64>, seed: u64) -> T {
    let elems: u64 = shape.iter().product();
    if !(elems * st::dtype_bits(dtype)).is_multiple_of(8) {
        shape.push(4);
    }
    let bytes = (shape.iter().product::<u64>() * st::dtype_bits(dtype) / 8) as usize;
    T::new(&format!("layer.{i}.{}", dtype.to_lowercase()), dtype, &shape, Rng::new(seed).bytes(bytes))
}

fn tensors() -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec((prop::sample::select(DTYPES), prop::collection::vec(0u64..6, 0..4), any::<u64>()), 1..6)
        .prop_map(|specs| specs.into_iter().enumerate().map(|(i, (d, s, seed))| tensor(i, d, s, seed)).collect())
}

fn file() -> impl Strategy<Value = (Vec<T>, Layout)> {
    tensors().prop_flat_map(|ts| {
        let n = ts.len();
        let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        let meta = prop::option::of(Just(r#"{"format": "pt"}"#.to_string()));
        (Just(ts), order, meta, prop::sample::select(vec![0usize, 8]), prop::sample::select(vec![0usize, 3])).prop_map(
            |(ts, order, metadata, pad_to, gap)| (ts, Layout { json_order: Some(order), metadata, pad_to, gap }),
        )
    })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn random_valid_files_round_trip_across_commits((ts, layout) in file(), flip_seed in any::<u64>()) {
        let r = TestRepo::init();
        let v1 = st::hand_written(&ts, &layout);
        let mut ts2 = ts.clone();
        let mut rng = Rng::new(flip_seed);
        for t in ts2.iter_mut().filter(|t| !t.data.is_empty()) {
            if rng.uniform() < 0.6 {
                let i = (rng.next_u64() % t.data.len() as u64) as usize;
                t.data[i] ^= 1 + (rng.next_u64() % 255) as u8;
            }
        }
        let v2 = st::hand_written(&ts2, &layout);
        r.write("f.safetensors", &v1);
        let c1 = r.add_commit(&["f.safetensors"], "v1");
        r.write("f.safetensors", &v2);
        r.ok(&["add", "f.safetensors"]);
        let out = r.run(&["commit", "-m", "v2"]);
        prop_assert!(out.success() || (v1 == v2 && out.stderr.contains("nothing to commit")), "{}", out.describe());
        r.ok(&["checkout", &c1]);
        prop_assert!(r.read("f.safetensors") == v1, "v1 differs after checkout");
        r.ok(&["checkout", "main"]);
        prop_assert!(r.read("f.safetensors") == v2, "v2 differs after checkout");
    }

    #[test]
    fn damaged_files_are_stored_exactly_or_refused_cleanly(
        (ts, layout) in file(),
        kind in 0u8..4,
        pos_seed in any::<u64>(),
        byte in any::<u8>(),
    ) {
        let r = TestRepo::init();
        r.write("keep.txt", "keep\n");
        r.add_commit(&["keep.txt"], "initial");
        let mut bytes = st::hand_written(&ts, &layout);
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        match kind {
            // A byte of the length prefix or the JSON header changed.
            0 => bytes[(pos_seed % header_end as u64) as usize] = byte,
            // Cut anywhere.
            1 => bytes.truncate((pos_seed % bytes.len() as u64) as usize),
            // A byte inserted into the header.
            2 => bytes.insert(8 + (pos_seed % (header_end as u64 - 8)) as usize, byte),
            // The length prefix off by a little.
            _ => {
                let len = (header_end - 8) as i64 + (pos_seed % 17) as i64 - 8;
                bytes[..8].copy_from_slice(&(len.max(0) as u64).to_le_bytes());
            }
        }
        r.write("bad.safetensors", &bytes);
        let before = r.mlv_snapshot();
        let out = r.run(&["add", "bad.safetensors"]);
        if out.success() {
            r.commit("accepted");
            std::fs::remove_file(r.path("bad.safetensors")).unwrap();
            r.ok(&["checkout", "--force", "HEAD"]);
            prop_assert!(r.read("bad.safetensors") == bytes, "an accepted file must come back byte for byte");
        } else {
            prop_assert!(out.stderr.contains("bad.safetensors"), "{}", out.describe());
            prop_assert!(byte_offset_in(&out.stderr).is_some(), "no byte offset:\n{}", out.describe());
            prop_assert!(r.mlv_snapshot() == before, ".mlv changed although add failed");
        }
    }
}

/// Encodes F32 values as `dtype`.
fn encode(dtype: &str, v: &[f32]) -> Vec<u8> {
    match dtype {
        "F32" => st::f32_le(v),
        "BF16" => st::bf16_le(v),
        "F16" => st::f16_le(v),
        "F64" => st::f64_le(&v.iter().map(|&x| x as f64).collect::<Vec<_>>()),
        other => panic!("{other}"),
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// Small chunks and short delta chains push every tensor through the multi-chunk and
    /// chain-limit paths of the codecs, with fine-tune-like changes and dtype conversions.
    #[test]
    fn fine_tune_chains_round_trip_with_small_chunks_and_short_delta_chains(
        seed in any::<u64>(),
        chunk_elems in 1u64..3000,
        max_chain in 1u8..4,
        zstd_level in 1i32..6,
        elems in 1usize..6000,
        dtypes in prop::collection::vec(prop::sample::select(vec!["F32", "BF16", "F16", "F64"]), 3..6),
        fraction in 0.0f32..1.0,
    ) {
        let r = TestRepo::init();
        std::fs::write(
            r.path(".mlv/config"),
            format!(
                "[core]\nformat = 1\n\n[delta]\nmax_chain = {max_chain}\nzstd_level = {zstd_level}\ndiscover = true\n\n\
                 [pack]\nchunk_elems = {chunk_elems}\n"
            ),
        )
        .unwrap();
        let mut rng = Rng::new(seed);
        let mut values: Vec<f32> = (0..elems).map(|_| rng.normal(0.02)).collect();
        let mut counter: Vec<u8> = (0..elems).flat_map(|i| (i as i32).to_le_bytes()).collect();
        let mut versions = Vec::new();
        for (k, dtype) in dtypes.iter().enumerate() {
            let ts = vec![
                T::new("w", dtype, &[elems as u64], encode(dtype, &values)),
                T::new("zeros", dtype, &[elems as u64], encode(dtype, &vec![0.0; elems])),
                T::new("steps", "I32", &[elems as u64], counter.clone()),
            ];
            let bytes = st::serialize(&ts, None);
            r.write("model.safetensors", &bytes);
            r.ok(&["add", "model.safetensors"]);
            let out = r.run(&["commit", "-m", &format!("v{k}"), "--json"]);
            if out.success() {
                let id = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["commit"].as_str().unwrap().to_string();
                versions.push((id, bytes));
            } else {
                prop_assert!(out.stderr.contains("nothing to commit"), "{}", out.describe());
            }
            for v in values.iter_mut() {
                if rng.uniform() < fraction {
                    *v += rng.normal(1e-3);
                }
            }
            let i = (rng.next_u64() % elems as u64) as usize * 4;
            counter[i] = counter[i].wrapping_add(1);
        }
        for (id, bytes) in versions.iter().rev() {
            r.ok(&["checkout", id]);
            prop_assert!(r.read("model.safetensors") == *bytes, "commit {} differs after checkout", id);
        }
    }
}

/// The fuzz targets' entry points (`fuzz/src/lib.rs`), run here on saved inputs so CI needs
/// no fuzzer.
#[path = "../../fuzz/src/lib.rs"]
mod harness;

mod replay {
    use std::path::{Path, PathBuf};

    use super::harness;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
    }

    /// Runs `target`'s entry point on every file of `tests/fuzz-regressions/<target>/` (the
    /// inputs that once crashed it, and a few interesting ones) and of its seed corpus; none
    /// may panic. Returns how many ran.
    fn replay(target: &str) -> usize {
        let (_, run) = harness::TARGETS.iter().find(|(name, _)| *name == target).expect("known target");
        let mut failed = Vec::new();
        let mut ran = 0;
        for dir in [root().join("tests/fuzz-regressions").join(target), root().join("fuzz/corpus").join(target)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("directory entry").path()).collect();
            paths.sort();
            for path in paths {
                let data = std::fs::read(&path).expect("readable input");
                if std::panic::catch_unwind(|| run(&data)).is_err() {
                    failed.push(path.display().to_string());
                }
                ran += 1;
            }
        }
        assert!(failed.is_empty(), "{target}: these inputs panic:\n{}", failed.join("\n"));
        ran
    }

    #[test]
    fn safetensors_headers_from_the_fuzzer_parse_or_fail_cleanly() {
        assert!(replay("safetensors_header") > 0);
    }

    #[test]
    fn pack_entries_from_the_fuzzer_decode_or_fail_cleanly() {
        assert!(replay("pack_entry") > 0);
    }

    #[test]
    fn pack_indexes_from_the_fuzzer_load_or_fail_cleanly() {
        assert!(replay("pack_index") > 0);
    }

    #[test]
    fn chunks_from_the_fuzzer_decode_or_fail_cleanly() {
        assert!(replay("chunk_decode") > 0);
    }

    #[test]
    fn rans_blocks_from_the_fuzzer_decode_or_fail_cleanly() {
        assert!(replay("rans") > 0);
    }

    #[test]
    fn objects_from_the_fuzzer_decode_or_fail_cleanly() {
        assert!(replay("objects") > 0);
    }

    #[test]
    fn packs_from_the_fuzzer_verify_or_fail_cleanly() {
        assert!(replay("pack_walk") > 0);
    }

    #[test]
    fn wire_messages_from_the_fuzzer_parse_or_fail_cleanly() {
        assert!(replay("wire") > 0);
    }
}

/// Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) from a tiny
/// repository and hand-made objects. Run it after a format change:
/// `cargo test --test runner write_fuzz_seed_corpus -- --ignored`.
mod seeds {
    use std::path::{Path, PathBuf};

    use mlv::codec::{Codec, EncodeOptions, encode_with, rans};
    use mlv::object::{
        Commit, DType, EntryKind, GitProvenance, ObjectId, ObjectKind, Segment, Signature, Tag, TensorFile, TensorMeta,
        Tree, TreeEntry,
    };
    use mlv::pack::{EntryHeader, EntryView, PACK_HEADER_LEN, TRAILER_LEN};
    use mlv::transport::wire;

    use super::harness::{self, fake_base, rans_contexts};
    use crate::common::TestRepo;
    use crate::common::st::{self, Layout, Rng, T};

    struct Corpus(PathBuf);

    impl Corpus {
        fn new(target: &str) -> Corpus {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Corpus(dir)
        }

        fn put(&self, name: &str, bytes: &[u8]) {
            std::fs::write(self.0.join(name), bytes).unwrap();
        }
    }

    fn tensors(seed: u64) -> Vec<T> {
        let mut rng = Rng::new(seed);
        let v: Vec<f32> = (0..96).map(|_| rng.normal(0.02)).collect();
        vec![
            T::f32("a.weight", &[8, 12], &v),
            T::bf16("b.weight", &[96], &v),
            T::new("c.f16", "F16", &[4, 24], st::f16_le(&v)),
            T::new("d.steps", "I32", &[3], vec![1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]),
            T::new("e.mask", "BOOL", &[2], vec![0, 1]),
        ]
    }

    /// A tiny repository with two commits of a small model (the second one stored as deltas),
    /// its chunks cut small so entries have several.
    fn repository() -> TestRepo {
        let r = TestRepo::init();
        let config = std::fs::read_to_string(r.path(".mlv/config")).unwrap();
        let config = config.replace("chunk_elems = 1048576", "chunk_elems = 40");
        std::fs::write(r.path(".mlv/config"), config).unwrap();
        r.write("model.safetensors", st::serialize(&tensors(1), Some(&[("format", "pt")])));
        r.write("README.md", "a tiny model\n");
        r.add_commit(&["model.safetensors", "README.md"], "base");
        let mut fine = tensors(1);
        for t in &mut fine {
            if let Some(b) = t.data.get_mut(5) {
                *b ^= 1;
            }
        }
        r.write("model.safetensors", st::serialize(&fine, None));
        r.ok(&["add", "model.safetensors"]);
        r.commit("fine-tune");
        r.ok(&["tag", "v1", "-m", "first release"]);
        r
    }

    fn files(dir: &Path, ext: &str) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    fn signature() -> Signature {
        Signature { name: "A U Thor".into(), email: "a@example.com".into(), time: 1_700_000_000, tz_minutes: -330 }
    }

    /// The packs and indexes of `r` as they are, then after `gc` put everything (deltas and
    /// their bases) into one pack.
    fn packs_and_indexes(r: &TestRepo) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let dir = r.path(".mlv/objects/pack");
        let (mut packs, mut indexes) = (files(&dir, "pack"), files(&dir, "idx"));
        r.ok(&["gc", "--prune=now"]);
        packs.extend(files(&dir, "pack"));
        indexes.extend(files(&dir, "idx"));
        (packs, indexes)
    }

    fn write_pack_seeds(r: &TestRepo) {
        let (walk, entries, index) = (Corpus::new("pack_walk"), Corpus::new("pack_entry"), Corpus::new("pack_index"));
        let (packs, indexes) = packs_and_indexes(r);
        for (k, pack) in packs.iter().enumerate() {
            let body = &pack[PACK_HEADER_LEN as usize..pack.len() - TRAILER_LEN as usize];
            walk.put(&format!("repo-{k}"), body);
            let mut pos = 0;
            while pos < body.len() {
                let (view, used) = EntryView::parse_prefix(&body[pos..]).unwrap();
                let kind = view.header.kind.name();
                entries.put(&format!("repo-{k}-{pos}-{kind}"), &body[pos..pos + used]);
                pos += used;
            }
        }
        // The repacked one holds every delta base it needs: it verifies on its own.
        let last = packs.last().unwrap();
        let empty = mlv::store::Odb::open(std::sync::Arc::new(mlv::store::MemoryPacks::default())).unwrap();
        let name = mlv::pack::PackName(last[last.len() - 32..].try_into().unwrap());
        mlv::store::index_from_content(&empty, Path::new("gc.pack"), name, last, &|_, _| {}).unwrap();
        for (k, idx) in indexes.iter().enumerate() {
            index.put(&format!("repo-{k}"), &idx[..idx.len() - 32]);
        }
        // Entries whose delta chunks decode against the fuzz targets' stand-in base.
        for (name, dtype, codec) in [
            ("diff-bf16", DType::BF16, Codec::DiffContext),
            ("diff-f32", DType::F32, Codec::DiffContext),
            ("xor-f16", DType::F16, Codec::Xor),
            ("grouped-f64", DType::F64, Codec::Grouped),
            ("mask-bf16", DType::BF16, Codec::DiffMasked),
        ] {
            let data = fake_base(48 * dtype.width(), 200);
            let meta = TensorMeta { dtype, shape: vec![48], data_len: data.len() as u64 };
            let header = EntryHeader { kind: ObjectKind::Tensor, id: ObjectId([7; 32]), meta, chunk_elems: 20 };
            let mut entry = header.encode();
            for i in 0..header.chunk_count() {
                let (start, end) = header.chunk_range(i);
                let chunk = &data[start as usize..end as usize];
                let base = fake_base(chunk.len(), i as u8);
                let stored = encode_with(codec, dtype, chunk, Some((ObjectId([9; 32]), &base)), Default::default());
                entry.extend_from_slice(&(stored.len() as u32).to_le_bytes());
                entry.extend_from_slice(&stored);
            }
            entries.put(name, &entry);
        }
    }

    fn write_chunk_seeds() {
        let c = Corpus::new("chunk_decode");
        for (pick, &dtype) in DType::ALL.iter().enumerate() {
            let n = 64 * dtype.width();
            let mut rng = Rng::new(pick as u64);
            let base = fake_base(n, pick as u8);
            // Close to the base, as a fine-tune is: a few low bits changed.
            let data: Vec<u8> = base
                .iter()
                .enumerate()
                .map(|(i, &b)| if i % 3 == 0 { b ^ (rng.next_u64() as u8 & 3) } else { b })
                .collect();
            // Only the second block of 16 elements moved: what a block mask leaves out.
            let mut sparse = base.clone();
            sparse[16 * dtype.width()] ^= 1;
            let codecs = [Codec::Raw, Codec::Grouped, Codec::Xor, Codec::DiffContext, Codec::DiffMasked];
            for codec in codecs {
                put_chunk_seed(&c, pick, codec, &data, &base, "");
            }
            put_chunk_seed(&c, pick, Codec::DiffMasked, &sparse, &base, "-sparse");
        }
        // Every element moved by up to `spread` ULPs, so nearly all carry raw bits (and, with
        // `bitx-diff-low`, low bytes): enough of them for the vector rebuilds to run, which the
        // 64-element seeds above never reach.
        for (dtype, spread, codecs) in [
            (DType::BF16, 1 << 8, &[Codec::DiffContext, Codec::DiffMasked][..]),
            (DType::F16, 1 << 8, &[Codec::DiffContext, Codec::DiffMasked]),
            (DType::F32, 1 << 16, &[Codec::DiffContext, Codec::DiffLow, Codec::DiffMasked]),
        ] {
            let pick = DType::ALL.iter().position(|&d| d == dtype).unwrap();
            let base = fake_base(512 * dtype.width(), pick as u8);
            let mut rng = Rng::new(pick as u64);
            let data: Vec<u8> = base
                .chunks_exact(dtype.width())
                .flat_map(|w| {
                    let mut word = [0u8; 8];
                    word[..w.len()].copy_from_slice(w);
                    let moved =
                        u64::from_le_bytes(word).wrapping_add(rng.next_u64() % (2 * spread)).wrapping_sub(spread);
                    moved.to_le_bytes()[..w.len()].to_vec()
                })
                .collect();
            for &codec in codecs {
                put_chunk_seed(&c, pick, codec, &data, &base, "-wide");
            }
        }
        write_low_rank_seeds(&c);
    }

    /// Codec 6 chunks of each float dtype it takes: 40 rows of 16 from column 3 on, predicted
    /// by rank-2 factors, a few elements off the prediction.
    fn write_low_rank_seeds(c: &Corpus) {
        use mlv::codec::lowrank::Factors;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let pick = DType::ALL.iter().position(|&d| d == dtype).unwrap();
            let (n, w) = (37 * 16, dtype.width());
            let base = fake_base(n * w, pick as u8);
            let mut rng = Rng::new(pick as u64);
            let mut stream = [16u32.to_le_bytes(), 3u32.to_le_bytes()].concat();
            stream.push(2);
            for _ in 0..(38 + 16) * 2 {
                stream.extend_from_slice(&((rng.next_u64() % 1000) as f32 * 1e-5).to_le_bytes());
            }
            let factors = Factors::parse(&stream, n).unwrap();
            let mut data = factors.predict(dtype, &base);
            for k in (0..n).step_by(7) {
                data[k * w] ^= rng.next_u64() as u8 & 3;
            }
            let stored = mlv::codec::encode_low_rank(
                dtype,
                &data,
                (ObjectId([3; 32]), &base),
                &factors,
                EncodeOptions::default(),
            );
            let view = mlv::codec::ChunkView::parse(&stored).unwrap();
            assert_eq!(view.codec, Codec::LowRank);
            assert_eq!(view.decode(dtype, Some(&base)).unwrap(), data, "{dtype}");
            let mut input = vec![pick as u8];
            input.extend_from_slice(&stored);
            c.put(&format!("{}-bitx-lowrank", dtype.name()), &input);
        }
    }

    /// Stores `data` on `base` with `codec` as the `chunk_decode` input that decodes it as
    /// `DType::ALL[pick]`, checking first that it decodes back.
    fn put_chunk_seed(c: &Corpus, pick: usize, codec: Codec, data: &[u8], base: &[u8], suffix: &str) {
        let dtype = DType::ALL[pick];
        let stored = encode_with(codec, dtype, data, Some((ObjectId([3; 32]), base)), EncodeOptions::default());
        let view = mlv::codec::ChunkView::parse(&stored).unwrap();
        assert_eq!(view.decode(dtype, Some(base)).unwrap(), data, "{dtype} {}", codec.name());
        let mut input = vec![pick as u8];
        input.extend_from_slice(&stored);
        c.put(&format!("{}-{}{suffix}", dtype.name(), codec.name()), &input);
    }

    fn write_rans_seeds() {
        let c = Corpus::new("rans");
        for (k, (n, mode, param)) in
            [(0u16, 0u8, 0u8), (1, 0, 7), (9, 1, 2), (300, 2, 5), (2000, 3, 1), (700, 1, 40)].into_iter().enumerate()
        {
            let contexts = rans_contexts(n as usize, mode, param);
            let mut rng = Rng::new(k as u64);
            let symbols: Vec<u8> = contexts.iter().map(|&c| (rng.next_u64() % (u64::from(c % 7) + 2)) as u8).collect();
            let mut input = n.to_le_bytes().to_vec();
            input.extend_from_slice(&[mode, param]);
            input.extend_from_slice(&rans::encode(&symbols, &contexts));
            c.put(&format!("block-{k}"), &input);
        }
    }

    fn write_object_seeds(r: &TestRepo) {
        let c = Corpus::new("objects");
        let id = |b: u8| ObjectId([b; 32]);
        let entry = |name: &str, kind, size| TreeEntry { name: name.into(), kind, executable: false, id: id(1), size };
        let tree = Tree {
            entries: vec![
                entry("README.md", EntryKind::Blob, 13),
                entry("model.safetensors", EntryKind::TensorFile, 900),
                entry("sub", EntryKind::Tree, 4),
            ],
        };
        c.put("tree", &tree.encode());
        let git = Some(GitProvenance { commit: "ab".repeat(20), dirty: true });
        let (author, committer) = (signature(), Signature { tz_minutes: 60, ..signature() });
        let commit = Commit { tree: id(2), parents: vec![id(3), id(4)], author, committer, git, message: "m\n".into() };
        c.put("commit", &commit.encode());
        let tag = Tag { object: id(5), name: "v1".into(), tagger: signature(), message: "release\n".into() };
        c.put("tag", &tag.encode());
        let file = TensorFile {
            prefix: st::serialize(&tensors(2), None)[..40].to_vec(),
            segments: vec![Segment::Tensor { id: id(6), len: 384 }, Segment::Bytes { id: id(7), len: 3 }],
        };
        c.put("tensor-file", &file.encode());
        let staged = std::fs::read(r.path(".mlv/index")).unwrap();
        c.put("staging-index-json", &staged[12..staged.len() - 32]);
    }

    fn write_header_seeds() {
        let c = Corpus::new("safetensors_header");
        let put = |name: &str, file: Vec<u8>| {
            let hlen = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
            let mut input = ((file.len() - 8 - hlen) as u32).to_le_bytes().to_vec();
            input.extend_from_slice(&file[8..8 + hlen]);
            c.put(name, &input);
        };
        put("canonical", st::serialize(&tensors(3), Some(&[("format", "pt")])));
        let layout = Layout { json_order: Some(vec![4, 2, 0, 1, 3]), metadata: None, pad_to: 8, gap: 3 };
        put("gaps-and-order", st::hand_written(&tensors(4), &layout));
        put("empty", st::serialize(&[], None));
        put("scalar", st::serialize(&[T::new("s", "F64", &[], vec![0; 8])], None));
    }

    fn write_wire_seeds() {
        let c = Corpus::new("wire");
        let json = |v: &dyn erased::Json| v.json();
        let id = ObjectId([0xab; 32]);
        let head = Some(wire::WireHead::Branch("main".into()));
        c.put("info", json(&wire::Info { protocol: 1, exists: true, bare: false, head: head.clone() }).as_bytes());
        let refs = [("refs/heads/main".to_string(), id), ("refs/tags/v1".to_string(), id)].into_iter().collect();
        c.put("refs", json(&wire::RefList { head, refs }).as_bytes());
        let update = wire::RefUpdate { name: "refs/heads/exp/v2".into(), old: None, new: Some(id) };
        c.put("ref-update", json(&update).as_bytes());
        let packs = wire::PackList { packs: vec![wire::WirePack { name: format!("pack-{id}"), len: 12345 }] };
        c.put("packs", json(&packs).as_bytes());
        c.put("error", json(&wire::ErrorBody { error: "conflict".into(), found: Some(None) }).as_bytes());
        c.put("detached", json(&wire::WireHead::Detached(id)).as_bytes());
        c.put("head-file", b"ref: refs/heads/main\n");
        c.put("names", format!("main\nexp/v2\nrefs/remotes/origin/main\npack-{id}\n{id}\n").as_bytes());
        c.put("range", b"bytes=100-");
    }

    /// Serialises any wire message (the seeds hold one of each).
    mod erased {
        pub trait Json {
            fn json(&self) -> String;
        }

        impl<T: serde::Serialize> Json for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    #[test]
    #[ignore = "writes fuzz/corpus; run by hand after a format change"]
    fn write_fuzz_seed_corpus() {
        let r = repository();
        write_pack_seeds(&r);
        write_chunk_seeds();
        write_rans_seeds();
        write_object_seeds(&r);
        write_header_seeds();
        write_wire_seeds();
        // Every seed is a valid input: none may panic.
        for (name, run) in harness::TARGETS {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
            for entry in std::fs::read_dir(dir).unwrap() {
                run(&std::fs::read(entry.unwrap().path()).unwrap());
            }
        }
    }
}
