//! `mlv du`: how each tensor of a commit is stored (duplicate, delta, standalone, raw).

use serde_json::Value;

use crate::common::fixtures::{self, family_repo};
use crate::common::st::{self, Weights};
use crate::common::{TestRepo, array};

fn tensor_rows(du: &Value, path: &str) -> Vec<Value> {
    let f =
        array(&du["files"], "files").iter().find(|f| f["path"] == path).unwrap_or_else(|| panic!("{path} not in {du}"));
    array(&f["tensors"], "tensors").clone()
}

fn how(row: &Value) -> &str {
    row["storage"]["how"].as_str().unwrap_or_else(|| panic!("no storage.how in {row}"))
}

#[test]
fn du_reports_fine_tune_tensors_stored_as_deltas() {
    let (r, _, _) = family_repo();
    let du = r.json(&["du", "--tensors", "--json"]);
    assert_eq!(du["commit"], r.rev_id("HEAD").as_str());
    let rows = tensor_rows(&du, "model.safetensors");
    assert_eq!(rows.len(), fixtures::finetune_weights(&fixtures::base_weights()).len(), "{du}");
    let deltas: Vec<&Value> = rows.iter().filter(|t| how(t) == "delta").collect();
    assert!(!deltas.is_empty(), "a fine-tune should store some tensors as deltas: {du}");
    for d in &deltas {
        assert!(d["storage"]["base_id"].as_str().is_some_and(|b| b.len() == 64), "{d}");
        let (stored, logical) = (d["stored"].as_u64().unwrap(), d["logical"].as_u64().unwrap());
        // Tiny tensors (norms, biases) may cost more than their bytes in framing.
        if logical >= 4096 {
            assert!(stored < logical, "a delta should be smaller than the tensor: {d}");
        }
    }
    let embed = rows.iter().find(|t| t["name"] == "embeddings.word.weight").unwrap();
    assert_eq!(how(embed), "delta", "{embed}");
    assert_eq!(embed["storage"]["base"]["path"], "model.safetensors", "{embed}");
    assert_eq!(embed["storage"]["base"]["tensor"], "embeddings.word.weight", "{embed}");
    // The unchanged tokenizer costs nothing.
    let tok = array(&du["files"], "files").iter().find(|f| f["path"] == "tokenizer.json").unwrap();
    assert_eq!(tok["stored"], 0, "{tok}");
    let text = r.ok(&["du", "--tensors"]);
    assert!(text.contains("delta against"), "{text}");
}

#[test]
fn fine_tune_stores_much_less_than_its_size() {
    let (r, _, ft) = family_repo();
    let du = r.json(&["du", "--json", "v2"]);
    let logical = du["logical"].as_u64().unwrap();
    let stored = du["stored"].as_u64().unwrap();
    let model_size = std::fs::metadata(ft.join("model.safetensors")).unwrap().len();
    assert!(logical >= model_size, "{du}");
    assert!(stored * 2 < logical, "the fine-tune added {stored} bytes for {logical} logical bytes: {du}");
}

#[test]
fn du_reports_unchanged_tensors_as_duplicates() {
    let r = TestRepo::init();
    let base = fixtures::base_weights();
    st::write(&r.path("model.safetensors"), &base.iter().map(Weights::to_f32).collect::<Vec<_>>(), None);
    let c1 = r.add_commit(&["model.safetensors"], "base");
    // Layer 0 frozen, everything else trained a little.
    let trained = st::fine_tune(&base, 9, 0.2);
    let mixed: Vec<Weights> = base
        .iter()
        .zip(&trained)
        .map(|(b, t)| if b.name.starts_with("layers.0.") { b.clone() } else { t.clone() })
        .collect();
    st::write(&r.path("model.safetensors"), &mixed.iter().map(Weights::to_f32).collect::<Vec<_>>(), None);
    r.add_commit(&["model.safetensors"], "partly frozen fine-tune");
    let du = r.json(&["du", "--tensors", "--json"]);
    let rows = tensor_rows(&du, "model.safetensors");
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        if name.starts_with("layers.0.") {
            assert_eq!(how(row), "duplicate", "{row}");
            assert_eq!(row["stored"], 0, "{row}");
            let of = &row["storage"]["of"];
            assert_eq!(of["commit"], c1.as_str(), "{row}");
            assert_eq!(of["tensor"], name, "{row}");
        } else {
            assert_eq!(how(row), "delta", "a trained tensor should be a delta against its base: {row}");
        }
    }
    assert!(rows.iter().filter(|t| how(t) == "duplicate").count() == 7, "{du}");
}

/// A repository whose first commit is the fixture base, with the fine-tune written (not added)
/// to a scratch folder; returns the repository and both folders.
fn base_committed_with_finetune_aside() -> (TestRepo, std::path::PathBuf, std::path::PathBuf) {
    let r = TestRepo::init();
    let base_dir = r.scratch("base");
    let ft_dir = r.scratch("ft");
    let w = fixtures::write_base(&base_dir);
    fixtures::write_finetune(&ft_dir, &w);
    r.copy_in(&base_dir);
    r.add_commit(&["."], "base");
    (r, base_dir, ft_dir)
}

#[test]
fn add_with_base_on_an_orphan_branch_stores_deltas() {
    let (r, base_dir, ft_dir) = base_committed_with_finetune_aside();
    r.ok(&["switch", "--orphan", "ft"]);
    r.copy_in(&ft_dir);
    let report = r.json(&["add", "--json", "--base", "main", "."]);
    assert!(report["tensors_delta"].as_u64().unwrap() > 0, "--base should give delta bases: {report}");
    r.commit("fine-tune on its own branch");
    let du = r.json(&["du", "--tensors", "--json"]);
    assert!(tensor_rows(&du, "model.safetensors").iter().any(|t| how(t) == "delta"), "{du}");
    r.ok(&["checkout", "main"]);
    r.assert_worktree_eq(&base_dir);
    r.ok(&["checkout", "ft"]);
    r.assert_worktree_eq(&ft_dir);
}

#[test]
fn long_delta_chains_still_check_out_exactly() {
    // Ten successive small fine-tunes: each is a delta on the previous one (chains are capped).
    let r = TestRepo::init();
    let mut w = st::base_model(21, 32, 1, 64);
    let mut versions = Vec::new();
    for i in 0..10u64 {
        let bytes = st::serialize(&w.iter().map(Weights::to_bf16).collect::<Vec<_>>(), None);
        r.write("model.safetensors", &bytes);
        versions.push((r.add_commit(&["model.safetensors"], &format!("step {i}")), bytes));
        w = st::fine_tune(&w, 100 + i, 0.1);
    }
    for (id, bytes) in versions.iter().rev() {
        r.ok(&["checkout", id]);
        assert!(r.read("model.safetensors") == *bytes, "version {id} differs after checkout");
    }
}

#[test]
fn configured_delta_bases_work_like_the_base_flag() {
    let (r, _, ft_dir) = base_committed_with_finetune_aside();
    r.ok(&["tag", "base-model"]);
    let config = r.path(".mlv/config");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("[delta.bases]", "[delta.bases]\n\"\" = \"base-model\"");
    assert!(text.contains("base-model"), "the default config has no [delta.bases] table:\n{text}");
    std::fs::write(&config, text).unwrap();
    r.ok(&["switch", "--orphan", "ft"]);
    r.copy_in(&ft_dir);
    let report = r.json(&["add", "--json", "."]);
    assert!(report["tensors_delta"].as_u64().unwrap() > 0, "[delta.bases] should give delta bases: {report}");
}

#[test]
fn du_shows_columns_totals_and_names_the_parents_tensor() {
    let (r, _, _) = family_repo();
    let text = r.ok(&["du", "--tensors"]);
    let mut lines = text.lines();
    let title = lines.next().unwrap();
    assert!(title.contains("this commit added") && title.contains("the repository holds"), "{text}");
    let header = lines.next().unwrap();
    for col in ["logical", "stored", "path / tensor", "storage"] {
        assert!(header.contains(col), "no {col:?} column:\n{text}");
    }
    let storage_at = header.find("storage").unwrap();
    let embed = text.lines().find(|l| l.contains("embeddings.word.weight")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(embed.find("delta against the parent's tensor"), Some(storage_at), "columns not aligned:\n{text}");
    assert!(!embed.contains("model.safetensors:"), "the base is named in full again:\n{text}");
    assert!(embed.contains("chunk"), "{embed}");

    let du = r.json(&["du", "--tensors", "--json"]);
    assert!(du["repository_stored"].as_u64().unwrap() >= du["stored"].as_u64().unwrap(), "{du}");
    let rows = tensor_rows(&du, "model.safetensors");
    let e = rows.iter().find(|t| t["name"] == "embeddings.word.weight").unwrap();
    assert_eq!(e["storage"]["parent_tensor"], true, "{e}");
    assert_eq!(e["storage"]["base"]["commit"], r.rev_id("v1").as_str(), "full ids in JSON: {e}");
    for c in array(&e["storage"]["codecs"], "codecs") {
        assert!(c["codec"].is_string() && c["chunks"].as_u64().is_some_and(|n| n > 0), "{e}");
    }
}
