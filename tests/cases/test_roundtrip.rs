//! Whatever is committed comes back byte for byte: checkpoints, every dtype, odd headers, shards.

use crate::common::fixtures::{self, family_repo};
use crate::common::st::{self, Layout, Rng, T};
use crate::common::{TestRepo, assert_files_identical};

#[test]
fn base_and_fine_tune_check_out_byte_identical() {
    let (r, base, ft) = family_repo();
    r.ok(&["checkout", "v1"]);
    r.assert_worktree_eq(&base);
    r.ok(&["checkout", "v2"]);
    r.assert_worktree_eq(&ft);
    r.ok(&["checkout", "v1"]);
    r.assert_worktree_eq(&base);
    r.ok(&["checkout", "main"]);
    r.assert_worktree_eq(&ft);
}

#[test]
fn checkout_single_path_restores_only_that_file() {
    let (r, base, ft) = family_repo();
    let head = r.rev_id("HEAD");
    r.ok(&["checkout", "v1", "--", "model.safetensors"]);
    assert_files_identical(&base.join("model.safetensors"), &r.path("model.safetensors"));
    assert_files_identical(&ft.join("config.json"), &r.path("config.json"));
    assert_files_identical(&ft.join("tokenizer.json"), &r.path("tokenizer.json"));
    assert_eq!(r.rev_id("HEAD"), head, "a path checkout must not move HEAD");
    let status = r.json(&["status", "--json"]);
    assert_eq!(status["branch"], "main");
}

#[test]
fn checkout_force_recreates_deleted_work_tree() {
    let (r, base, _ft) = family_repo();
    r.clear_worktree();
    r.ok(&["checkout", "--force", "v1"]);
    r.assert_worktree_eq(&base);
}

/// Every dtype the safetensors format knows, with edge-case payloads.
pub fn all_dtypes(seed: u64) -> Vec<T> {
    let mut rng = Rng::new(seed);
    let f64s: Vec<f64> = [
        f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001),
        f64::from_bits(0xfff0_0000_0000_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::from_bits(1),
        f64::MIN_POSITIVE,
        f64::MAX,
    ]
    .into_iter()
    .chain((0..23).map(|_| rng.normal(1.0) as f64))
    .collect();
    let mut f32s: Vec<f32> = (0..16 * 64).map(|_| rng.normal(0.02)).collect();
    let specials = [
        f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffc0_0000),
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x807f_ffff),
        f32::MAX,
    ];
    f32s[..specials.len()].copy_from_slice(&specials);
    let half_specials: [u16; 6] = [0x7c00, 0xfc00, 0x7e01, 0x8000, 0x0001, 0x83ff];
    let mut f16 = st::f16_le(&(0..32 * 16).map(|_| rng.normal(0.5)).collect::<Vec<_>>());
    let mut bf16 = st::bf16_le(&(0..32 * 32).map(|_| rng.normal(0.02)).collect::<Vec<_>>());
    for (i, s) in half_specials.iter().enumerate() {
        f16[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
        let b: u16 = [0x7f80, 0xff80, 0x7fc1, 0x8000, 0x0001, 0x807f][i];
        bf16[2 * i..2 * i + 2].copy_from_slice(&b.to_le_bytes());
    }
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let i64s: Vec<u8> = [i64::MIN, i64::MAX, -1, 0, 1]
        .into_iter()
        .chain((0..28).map(|_| rng.next_u64() as i64))
        .flat_map(i64::to_le_bytes)
        .collect();
    let u64s: Vec<u8> = [u64::MAX, 0, 1, 1 << 63, 42, 7, 9].into_iter().flat_map(u64::to_le_bytes).collect();
    let i32s: Vec<u8> = [i32::MIN, i32::MAX, -1]
        .into_iter()
        .chain((0..30).map(|_| rng.next_u64() as i32))
        .flat_map(i32::to_le_bytes)
        .collect();
    let u32s: Vec<u8> =
        [u32::MAX, 0].into_iter().chain((0..10).map(|_| rng.next_u64() as u32)).flat_map(u32::to_le_bytes).collect();
    let i16s: Vec<u8> = [i16::MIN, i16::MAX, -1]
        .into_iter()
        .chain((0..10).map(|_| rng.next_u64() as i16))
        .flat_map(i16::to_le_bytes)
        .collect();
    let u16s: Vec<u8> =
        [u16::MAX, 0].into_iter().chain((0..9).map(|_| rng.next_u64() as u16)).flat_map(u16::to_le_bytes).collect();
    let i8s: Vec<u8> =
        [i8::MIN, i8::MAX, -1, 0].into_iter().chain((0..21).map(|_| rng.next_u64() as i8)).map(|v| v as u8).collect();
    vec![
        T::new("f64", "F64", &[4, 8], st::f64_le(&f64s)),
        T::new("f32", "F32", &[16, 64], st::f32_le(&f32s)),
        T::new("f16", "F16", &[32, 16], f16),
        T::new("bf16", "BF16", &[32, 32], bf16),
        T::new("f8_e4m3", "F8_E4M3", &[16, 16], all_bytes.clone()),
        T::new("f8_e5m2", "F8_E5M2", &[256], all_bytes.clone()),
        T::new("f8_e8m0", "F8_E8M0", &[64], rng.bytes(64)),
        T::new("f8_e4m3fnuz", "F8_E4M3FNUZ", &[2, 32], rng.bytes(64)),
        T::new("f8_e5m2fnuz", "F8_E5M2FNUZ", &[64], rng.bytes(64)),
        T::new("i64", "I64", &[33], i64s),
        T::new("u64", "U64", &[7], u64s),
        T::new("i32", "I32", &[3, 11], i32s),
        T::new("u32", "U32", &[12], u32s),
        T::new("i16", "I16", &[13], i16s),
        T::new("u16", "U16", &[11], u16s),
        T::new("i8", "I8", &[5, 5], i8s),
        T::new("u8_odd", "U8", &[7], vec![1, 2, 3, 4, 5, 6, 7]),
        T::new("bool", "BOOL", &[9], vec![0, 1, 1, 0, 1, 0, 0, 0, 1]),
        T::new("scalar", "F32", &[], st::f32_le(&[std::f32::consts::PI])),
        T::new("empty", "F32", &[0, 4], Vec::new()),
        T::new("empty_i8", "I8", &[0], Vec::new()),
        T::new("c64", "C64", &[4], rng.bytes(32)),
        T::new("f4", "F4", &[6], rng.bytes(3)),
        T::new("f6_e2m3", "F6_E2M3", &[4], rng.bytes(3)),
        T::new("f6_e3m2", "F6_E3M2", &[8], rng.bytes(6)),
    ]
}

/// The same tensors with a few elements changed in some of them.
fn modified(mut ts: Vec<T>) -> Vec<T> {
    for t in &mut ts {
        match t.name.as_str() {
            "f32" => {
                for i in (100..t.data.len()).step_by(97) {
                    t.data[i] ^= 0x01;
                }
            }
            "bf16" | "f16" => {
                for i in (20..t.data.len()).step_by(31) {
                    t.data[i] ^= 0x03;
                }
            }
            "f64" => t.data[100] ^= 0x10,
            "i32" | "u8_odd" | "f8_e4m3" | "scalar" => t.data[1] = t.data[1].wrapping_add(1),
            _ => {}
        }
    }
    ts
}

/// Data in list order, header entries in a shuffled order, `__metadata__`, loose spacing.
pub fn odd_layout(n: usize) -> Layout {
    let mut order: Vec<usize> = (0..n).rev().collect();
    order.swap(0, n / 2);
    Layout {
        json_order: Some(order),
        metadata: Some(r#"{ "format" : "pt",   "note": "hand written \u00e9" }"#.into()),
        pad_to: 8,
        gap: 0,
    }
}

#[test]
fn every_dtype_and_odd_header_round_trip_across_two_commits() {
    let r = TestRepo::init();
    let v1 = r.scratch("v1");
    let v2 = r.scratch("v2");
    let ts = all_dtypes(7);
    let n = ts.len();
    let hand1 = st::hand_written(&ts, &odd_layout(n));
    let ts2 = modified(ts.clone());
    let hand2 = st::hand_written(&ts2, &odd_layout(n));
    // Sanity: the fixtures are valid safetensors, and all dtypes made it in.
    assert_eq!(st::describe(&hand1).len(), n);
    assert_eq!(st::describe(&hand2).len(), n);
    std::fs::write(v1.join("hand.safetensors"), &hand1).unwrap();
    std::fs::write(v2.join("hand.safetensors"), &hand2).unwrap();
    st::write(&v1.join("canonical.safetensors"), &ts, Some(&[("format", "pt"), ("k", "v")]));
    st::write(&v2.join("canonical.safetensors"), &ts2, Some(&[("format", "pt"), ("k", "v")]));

    r.copy_in(&v1);
    let c1 = r.add_commit(&["."], "all dtypes");
    r.copy_in(&v2);
    let c2 = r.add_commit(&["."], "all dtypes, some tensors changed");
    let show = r.json(&["diff", "--json", &c1, &c2]);
    assert!(!show.as_array().unwrap().is_empty(), "the second commit must differ from the first");

    r.ok(&["checkout", &c1]);
    r.assert_worktree_eq(&v1);
    r.ok(&["checkout", &c2]);
    r.assert_worktree_eq(&v2);
}

#[test]
fn gaps_between_tensors_and_trailing_bytes_round_trip() {
    let r = TestRepo::init();
    let orig = r.scratch("orig");
    let ts = all_dtypes(11);
    let mut bytes = st::hand_written(&ts, &Layout { gap: 5, pad_to: 0, ..odd_layout(ts.len()) });
    bytes.extend_from_slice(b"trailing bytes after the last tensor");
    std::fs::write(orig.join("gappy.safetensors"), &bytes).unwrap();
    r.copy_in(&orig);
    let c = r.add_commit(&["gappy.safetensors"], "gaps");
    r.ok(&["rm", "gappy.safetensors"]);
    r.commit("remove");
    assert!(!r.exists("gappy.safetensors"));
    r.ok(&["checkout", &c]);
    r.assert_worktree_eq(&orig);
}

#[test]
fn sharded_checkpoint_round_trips() {
    let r = TestRepo::init();
    let v1 = r.scratch("v1");
    let v2 = r.scratch("v2");
    let write_shards = |dir: &std::path::Path, tensors: Vec<T>| {
        let (a, b) = tensors.split_at(tensors.len() / 2);
        let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
        let mut weight_map = serde_json::Map::new();
        let mut total = 0;
        for (name, part) in names.iter().zip([a, b]) {
            st::write(&dir.join(name), part, Some(&[("format", "pt")]));
            for t in part {
                weight_map.insert(t.name.clone(), (*name).into());
                total += t.data.len();
            }
        }
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap())
            .unwrap();
        std::fs::write(dir.join("config.json"), fixtures::BASE_CONFIG).unwrap();
    };
    let base = fixtures::base_weights();
    write_shards(&v1, base.iter().map(|w| w.to_f32()).collect());
    write_shards(&v2, fixtures::finetune_weights(&base).iter().map(|w| w.to_bf16()).collect());

    r.copy_in(&v1);
    let c1 = r.add_commit(&["."], "sharded base");
    r.clear_worktree();
    r.copy_in(&v2);
    let c2 = r.add_commit(&["."], "sharded fine-tune");
    r.ok(&["checkout", &c1]);
    r.assert_worktree_eq(&v1);
    r.ok(&["checkout", &c2]);
    r.assert_worktree_eq(&v2);
}

#[test]
fn nested_directories_round_trip() {
    let r = TestRepo::init();
    let orig = r.scratch("orig");
    let w = fixtures::write_base(&orig.join("runs/base"));
    fixtures::write_finetune(&orig.join("runs/ft/checkpoint-100"), &w);
    std::fs::write(orig.join("README.md"), "# models\n").unwrap();
    r.copy_in(&orig);
    let c = r.add_commit(&["."], "nested");
    r.clear_worktree();
    r.ok(&["checkout", "--force", &c]);
    r.assert_worktree_eq(&orig);
}

#[test]
fn unusual_but_valid_headers_round_trip() {
    // Each header is accepted by the reference `safetensors` library (checked below), so mlv
    // must store it and give it back byte for byte.
    let cases: [(&str, &[u8]); 5] = [
        ("null_metadata", br#"{"__metadata__": null, "a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#),
        ("extra_field", br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#),
        ("leading_space", br#"   {"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#),
        ("newlines", b"{\n\t\"a\" :\n {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}\n}\n\n"),
        ("empty_metadata", br#"{"__metadata__":{},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#),
    ];
    let mut failures = Vec::new();
    for (name, header) in cases {
        let bytes = st::raw(header, &1.5f32.to_le_bytes());
        assert!(
            safetensors::SafeTensors::deserialize(&bytes).is_ok(),
            "{name}: the fixture should be valid for the safetensors crate"
        );
        let r = TestRepo::init();
        let file = format!("{name}.safetensors");
        r.write(&file, &bytes);
        let out = r.run(&["add", &file]);
        if !out.success() {
            failures.push(out.describe());
            continue;
        }
        let c = r.commit(name);
        std::fs::remove_file(r.path(&file)).unwrap();
        r.ok(&["checkout", "--force", &c]);
        assert_eq!(r.read(&file), bytes, "{name}: differs after checkout");
    }
    assert!(failures.is_empty(), "mlv refused files the safetensors library accepts:\n{}", failures.join("\n"));
}

#[test]
fn executable_bit_round_trips() {
    use std::os::unix::fs::PermissionsExt;
    let r = TestRepo::init();
    r.write("train.sh", "#!/bin/sh\necho train\n");
    r.write("notes.txt", "plain\n");
    std::fs::set_permissions(r.path("train.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = r.add_commit(&["."], "script");
    r.clear_worktree();
    r.ok(&["checkout", "--force", &c]);
    let mode = |p: &str| std::fs::metadata(r.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("train.sh"), 0o755);
    assert_eq!(mode("notes.txt"), 0o644);
}

#[test]
fn checkout_removes_directories_it_empties() {
    let r = TestRepo::init();
    r.write("keep.txt", "keep\n");
    let c1 = r.add_commit(&["keep.txt"], "one");
    r.write("runs/ft/checkpoint-1/model.txt", "weights\n");
    r.add_commit(&["runs"], "two");
    r.ok(&["checkout", &c1]);
    assert!(!r.path("runs").exists(), "empty directories should be removed");
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read("runs/ft/checkpoint-1/model.txt"), b"weights\n");
}

/// Commits `x` as a file, then `x/inner.txt` under a directory `x` (or the reverse).
fn file_and_directory_commits(file_first: bool) -> (TestRepo, String, String) {
    let r = TestRepo::init();
    r.write("keep.txt", "keep\n");
    let as_file = |r: &TestRepo| {
        r.write("x", "x is a file\n");
        r.add_commit(&["."], "x is a file")
    };
    let as_dir = |r: &TestRepo| {
        r.write("x/inner.txt", "x is a directory\n");
        r.add_commit(&["."], "x is a directory")
    };
    let switch = |r: &TestRepo| {
        r.ok(&["rm", "x"]);
        if r.path("x").is_dir() {
            std::fs::remove_dir_all(r.path("x")).unwrap();
        }
    };
    if file_first {
        let a = as_file(&r);
        switch(&r);
        let b = as_dir(&r);
        (r, a, b)
    } else {
        let a = as_dir(&r);
        switch(&r);
        let b = as_file(&r);
        (r, a, b)
    }
}

#[test]
fn checkout_replaces_a_directory_with_a_file() {
    // HEAD has x/inner.txt; the target has a file x.
    let (r, file_commit, dir_commit) = file_and_directory_commits(true);
    assert_eq!(r.rev_id("HEAD"), dir_commit);
    r.ok(&["checkout", &file_commit]);
    assert_eq!(r.read("x"), b"x is a file\n");
    assert_eq!(r.rev_id("HEAD"), file_commit);
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read("x/inner.txt"), b"x is a directory\n");
}

#[test]
fn checkout_replaces_a_file_with_a_directory() {
    // HEAD has a file x; the target has x/inner.txt.
    let (r, dir_commit, file_commit) = file_and_directory_commits(false);
    assert_eq!(r.rev_id("HEAD"), file_commit);
    r.ok(&["checkout", &dir_commit]);
    assert_eq!(r.read("x/inner.txt"), b"x is a directory\n");
    assert_eq!(r.rev_id("HEAD"), dir_commit);
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read("x"), b"x is a file\n");
}
