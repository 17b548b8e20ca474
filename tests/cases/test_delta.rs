//! The BitX delta engine end to end: base selection (parent, `--base`, discovery by shape and
//! name), resized tensors, unrelated models, chain limits, FP16/FP32 saves.

use serde_json::Value;

use crate::common::st::{self, T, Weights};
use crate::common::{TestRepo, array};

fn rows(r: &TestRepo, rev: &str, path: &str) -> Vec<Value> {
    let du = r.json(&["du", "--tensors", "--json", rev]);
    let file = array(&du["files"], "files").iter().find(|f| f["path"] == path).cloned();
    let file = file.unwrap_or_else(|| panic!("{path} not in {du}"));
    array(&file["tensors"], "tensors").clone()
}

fn how(rows: &[Value], name: &str) -> String {
    let row = rows.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("{name} not in {rows:?}"));
    row["storage"]["how"].as_str().unwrap_or_default().to_string()
}

fn stored(r: &TestRepo, rev: &str) -> u64 {
    r.json(&["du", "--json", rev])["stored"].as_u64().unwrap_or(0)
}

fn base() -> Vec<Weights> {
    st::base_model(7, 64, 2, 256)
}

fn as_bf16(ws: &[Weights]) -> Vec<T> {
    ws.iter().map(Weights::to_bf16).collect()
}

fn as_f32(ws: &[Weights]) -> Vec<T> {
    ws.iter().map(Weights::to_f32).collect()
}

/// Writes the F32 base model at `path` and commits it.
fn committed_base(r: &TestRepo, path: &str) -> Vec<Weights> {
    let b = base();
    st::write(&r.path(path), &as_f32(&b), None);
    r.add_commit(&[path], "base");
    b
}

/// Commits the modified `path` (on `main`) and checks that its embedding is stored as a delta
/// and that both this commit and its parent check out byte for byte.
fn commit_all_as_delta_and_round_trip(r: &TestRepo, path: &str, message: &str) {
    let expected = r.read(path);
    r.ok(&["commit", "-am", message]);
    let rows = rows(r, "HEAD", path);
    assert_eq!(how(&rows, "embeddings.word.weight"), "delta", "{message}: {rows:?}");
    r.ok(&["checkout", "HEAD~1"]);
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read(path), expected, "{message}");
}

/// A repository with small chunks, so chunk-level behaviour shows up on small tensors.
fn repo_with_small_chunks() -> TestRepo {
    let r = TestRepo::init();
    set_config(&r, "chunk_elems = 1048576", "chunk_elems = 1024");
    r
}

/// Rewrites one line of `.mlv/config`.
fn set_config(r: &TestRepo, from: &str, to: &str) {
    let config = std::fs::read_to_string(r.path(".mlv/config")).unwrap();
    assert!(config.contains(from), "{from:?} not in {config}");
    std::fs::write(r.path(".mlv/config"), config.replace(from, to)).unwrap();
}

#[test]
fn fine_tune_of_parent_is_stored_as_deltas_and_round_trips() {
    let r = TestRepo::init();
    let b = committed_base(&r, "m/model.safetensors");
    let ft = st::fine_tune(&b, 11, 0.5);
    st::write(&r.path("m/model.safetensors"), &as_bf16(&ft), None);
    commit_all_as_delta_and_round_trip(&r, "m/model.safetensors", "ft");
}

#[test]
fn resized_vocabulary_deltas_the_overlapping_rows() {
    let r = repo_with_small_chunks();
    let b = committed_base(&r, "model.safetensors");
    let mut ft = st::fine_tune(&b, 3, 0.3);
    let mut rng = st::Rng::new(5);
    // 32 new vocabulary rows appended to the embedding.
    ft[0].shape[0] += 32;
    ft[0].values.extend((0..32 * 64).map(|_| rng.normal(0.02)));
    st::write(&r.path("model.safetensors"), &as_bf16(&ft), None);
    commit_all_as_delta_and_round_trip(&r, "model.safetensors", "resized");
}

#[test]
fn orphan_branch_with_named_base_finds_its_base() {
    let r = TestRepo::init();
    let b = committed_base(&r, "base/model.safetensors");
    r.ok(&["switch", "--orphan", "ft"]);
    assert!(!r.exists("base/model.safetensors"), "an orphan branch starts empty");
    let ft = st::fine_tune(&b, 9, 0.5);
    st::write(&r.path("tuned/model.safetensors"), &as_bf16(&ft), None);
    let expected = r.read("tuned/model.safetensors");
    r.ok(&["add", "--base", "main", "tuned"]);
    r.ok(&["commit", "-m", "fine-tune"]);
    let rows = rows(&r, "HEAD", "tuned/model.safetensors");
    assert_eq!(how(&rows, "layers.0.attn.q.weight"), "delta", "{rows:?}");
    r.ok(&["switch", "main"]);
    r.ok(&["switch", "ft"]);
    assert_eq!(r.read("tuned/model.safetensors"), expected);
}

#[test]
fn renamed_tensors_are_discovered_by_shape_and_name() {
    let r = TestRepo::init();
    let b = committed_base(&r, "base/model.safetensors");
    let ft: Vec<T> = st::fine_tune(&b, 4, 0.5)
        .iter()
        .map(|w| Weights { name: format!("bert.{}", w.name), ..w.clone() }.to_bf16())
        .collect();
    st::write(&r.path("classifier/model.safetensors"), &ft, None);
    r.add_commit(&["classifier"], "classification fine-tune");
    let rows = rows(&r, "HEAD", "classifier/model.safetensors");
    for name in ["bert.embeddings.word.weight", "bert.layers.1.mlp.up.weight"] {
        assert_eq!(how(&rows, name), "delta", "{name}: {rows:?}");
    }
}

#[test]
fn unrelated_model_costs_no_more_than_standalone() {
    let alone = TestRepo::init();
    let other = st::base_model(99, 64, 2, 256);
    st::write(&alone.path("other.safetensors"), &as_bf16(&other), None);
    alone.add_commit(&["other.safetensors"], "alone");
    let standalone = stored(&alone, "HEAD");

    let r = TestRepo::init();
    st::write(&r.path("base.safetensors"), &as_f32(&base()), None);
    r.add_commit(&["base.safetensors"], "base");
    st::write(&r.path("other.safetensors"), &as_bf16(&other), None);
    r.add_commit(&["other.safetensors"], "unrelated");
    let with_base = stored(&r, "HEAD");
    assert!(with_base <= standalone + 512, "unrelated model stored in {with_base} bytes, {standalone} alone");
    let rows = rows(&r, "HEAD", "other.safetensors");
    assert!(rows.iter().all(|t| t["storage"]["how"] != "delta"), "{rows:?}");
}

#[test]
fn chain_depth_is_capped_by_config() {
    let r = TestRepo::init();
    set_config(&r, "max_chain = 8", "max_chain = 1");
    let mut w = base();
    st::write(&r.path("model.safetensors"), &as_bf16(&w), None);
    r.add_commit(&["model.safetensors"], "v0");
    let mut versions = vec![r.read("model.safetensors")];
    for k in 1..4 {
        w = st::fine_tune(&w, k, 0.5);
        st::write(&r.path("model.safetensors"), &as_bf16(&w), None);
        versions.push(r.read("model.safetensors"));
        r.ok(&["commit", "-am", &format!("v{k}")]);
    }
    // With max_chain = 1 a delta's base must itself be stored whole.
    for rev in ["HEAD", "HEAD~1", "HEAD~2"] {
        for row in rows(&r, rev, "model.safetensors").iter().filter(|t| t["storage"]["how"] == "delta") {
            let base = &row["storage"]["base"];
            let (commit, name) =
                (base["commit"].as_str().unwrap_or_default(), base["tensor"].as_str().unwrap_or_default());
            let base_rows = rows(&r, commit, "model.safetensors");
            assert_ne!(how(&base_rows, name), "delta", "{rev}: {row} is a delta of a delta");
        }
    }
    for (k, expected) in versions.iter().enumerate() {
        r.ok(&["checkout", &format!("HEAD~{}", 3 - k.min(3))]);
        assert_eq!(&r.read("model.safetensors"), expected, "version {k}");
        r.ok(&["checkout", "main"]);
    }
}

#[test]
fn fp16_and_fp32_saves_delta_against_an_fp32_base() {
    let r = TestRepo::init();
    let b = committed_base(&r, "model.safetensors");
    let ft = st::fine_tune(&b, 21, 0.5);
    let fp16: Vec<T> = ft.iter().map(|w| T::new(&w.name, "F16", &w.shape, st::f16_le(&w.values))).collect();
    for (tag, tensors) in [("fp16", fp16), ("fp32", as_f32(&ft))] {
        st::write(&r.path("model.safetensors"), &tensors, None);
        commit_all_as_delta_and_round_trip(&r, "model.safetensors", tag);
    }
}

/// A merged LoRA adapter is stored as its factors (codec 6), in a fraction of what its
/// difference costs weight by weight, and checks out byte for byte.
#[test]
fn a_merged_lora_adapter_is_stored_as_its_factors() {
    let r = TestRepo::init();
    let b = committed_base(&r, "model.safetensors");
    st::write(&r.path("model.safetensors"), &as_f32(&st::lora_merge(&b, 5, 4)), None);
    let merged = r.read("model.safetensors");
    r.ok(&["commit", "-am", "lora"]);
    r.ok(&["checkout", "HEAD~1"]);
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read("model.safetensors"), merged);
    let rows = rows(&r, "HEAD", "model.safetensors");
    for name in ["layers.0.attn.q.weight", "layers.1.attn.v.weight"] {
        let row = rows.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("{name} not in {rows:?}"));
        assert_eq!(row["storage"]["codecs"][0]["codec"], "bitx-lowrank", "{row}");
        let (stored, logical) = (row["stored"].as_u64().unwrap_or(0), row["logical"].as_u64().unwrap_or(0));
        assert!(stored * 4 < logical, "{name}: {stored} of {logical} bytes");
    }
    assert_eq!(how(&rows, "layers.0.attn.k.weight"), "duplicate");
    r.ok(&["fsck"]);
}

/// Commits the F32 base at `path`, then a BF16 fine-tune of it; returns the fine-tune's bytes.
fn base_then_fine_tune(r: &TestRepo, path: &str) -> Vec<u8> {
    let b = committed_base(r, path);
    st::write(&r.path(path), &as_bf16(&st::fine_tune(&b, 11, 0.5)), None);
    r.ok(&["commit", "-am", "ft"]);
    r.read(path)
}

/// A checkout over the base reads the base's tensors from the work tree instead of decoding
/// them: it succeeds even with the base's pack damaged. A work-tree copy changed behind the
/// index's back (same size, inode and mtime) fails the chunk checksums of the deltas decoded
/// on it, and those are decoded again on the base from the packs. Here the F32 base is
/// converted to the fine-tune's BF16 as it is read.
#[test]
fn checkout_over_the_base_reads_it_from_the_work_tree_and_checks_it() {
    let r = repo_with_small_chunks();
    let path = "m/model.safetensors";
    let ft_bytes = base_then_fine_tune(&r, path);
    let base_pack = crate::common::largest_pack(&r.path(".mlv/objects/pack"));
    reads_the_base_from_the_work_tree_and_checks_it(&r, path, &ft_bytes, &base_pack);
}

/// As above, with a base of the fine-tune's own dtype (a BF16 fine-tune of a BF16 fine-tune),
/// which is read into the buffer it is decoded on without a conversion.
#[test]
fn checkout_over_a_base_of_the_same_dtype_reads_it_from_the_work_tree_and_checks_it() {
    let r = repo_with_small_chunks();
    let path = "m/model.safetensors";
    let first = st::fine_tune(&committed_base(&r, path), 11, 0.5);
    st::write(&r.path(path), &as_bf16(&first), None);
    r.ok(&["commit", "-am", "ft"]);
    let base_pack = crate::common::largest_pack(&r.path(".mlv/objects/pack"));
    st::write(&r.path(path), &as_bf16(&st::fine_tune(&first, 12, 0.5)), None);
    r.ok(&["commit", "-am", "ft of ft"]);
    let ft = r.rev_id("HEAD~1");
    let rows = rows(&r, "HEAD", path);
    let on_ft = |t: &&Value| t["storage"]["base"]["commit"].as_str().is_some_and(|c| ft.starts_with(c));
    assert!(rows.iter().filter(|t| t["storage"]["how"] == "delta").filter(on_ft).count() > 0, "{rows:?}");
    let ft_bytes = r.read(path);
    reads_the_base_from_the_work_tree_and_checks_it(&r, path, &ft_bytes, &base_pack);
}

/// With `main` at a fine-tune (`ft_bytes` at `path`) of `HEAD~1`: checks out `main` over a
/// damaged work-tree copy of `HEAD~1`, then over a sound copy with `base_pack` (the pack
/// `HEAD~1` needs, of the F32 base) damaged.
fn reads_the_base_from_the_work_tree_and_checks_it(
    r: &TestRepo,
    path: &str,
    ft_bytes: &[u8],
    base_pack: &std::path::Path,
) {
    use std::os::unix::fs::FileExt;
    r.ok(&["checkout", "HEAD~1"]);
    let file = std::fs::OpenOptions::new().write(true).open(r.path(path)).unwrap();
    let mtime = file.metadata().unwrap().modified().unwrap();
    let middle = std::fs::metadata(r.path(path)).unwrap().len() / 2;
    file.write_all_at(&[0x55; 8192], middle).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    assert!(r.ok(&["status"]).contains("nothing to commit"), "the change is invisible to the index");
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read(path), ft_bytes, "decoded on the base from the packs where the copy was wrong");

    r.ok(&["checkout", "HEAD~1"]);
    // Damage spread over the pack, so that every tensor decoded from it meets some.
    let pack = std::fs::OpenOptions::new().write(true).open(base_pack).unwrap();
    let len = pack.metadata().unwrap().len();
    for k in 1..16 {
        pack.write_all_at(&[0xAA; 64], len * k / 16).unwrap();
    }
    drop(pack);
    assert!(!r.run(&["fsck"]).success(), "the base's pack is damaged");
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read(path), ft_bytes, "the base came from the work tree");
    r.clear_worktree();
    assert!(!r.run(&["checkout", "-f", "HEAD~1"]).success(), "without the work tree the damage shows");
}

/// A FIFO where a base file was is not opened for its tensors (opening it would block): a
/// forced checkout replaces it and finishes.
#[test]
fn a_fifo_in_place_of_a_base_file_does_not_block_checkout() {
    let r = TestRepo::init();
    let path = "m/model.safetensors";
    let ft_bytes = base_then_fine_tune(&r, path);
    r.ok(&["checkout", "HEAD~1"]);
    std::fs::remove_file(r.path(path)).unwrap();
    let made = std::process::Command::new("mkfifo").arg(r.path(path)).status().unwrap();
    assert!(made.success());
    let mut child = r.spawn_at(&r.root, &["checkout", "-f", "main"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("checkout blocked on the FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());
    assert_eq!(r.read(path), ft_bytes);
}

/// A fine-tune large enough that its delta chunks code to more than 64 KiB each, which are
/// written as wide (64-lane) rANS blocks: it checks out byte for byte over its base and into
/// an empty work tree.
#[test]
fn a_large_fine_tune_round_trips() {
    let r = TestRepo::init();
    let path = "model.safetensors";
    let b = st::base_model(5, 512, 1, 4096);
    st::write(&r.path(path), &as_f32(&b), None);
    r.add_commit(&[path], "base");
    let base_bytes = r.read(path);
    st::write(&r.path(path), &as_bf16(&st::fine_tune(&b, 3, 0.5)), None);
    let ft_bytes = r.read(path);
    r.ok(&["commit", "-am", "ft"]);
    r.ok(&["checkout", "HEAD~1"]);
    assert_eq!(r.read(path), base_bytes);
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read(path), ft_bytes, "over the base");
    r.clear_worktree();
    r.ok(&["checkout", "-f", "main"]);
    assert_eq!(r.read(path), ft_bytes, "into an empty work tree");
}
