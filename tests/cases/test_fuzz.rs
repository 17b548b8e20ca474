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
