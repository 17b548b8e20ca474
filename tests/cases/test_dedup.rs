//! Identical tensors are stored once, whatever path, file or commit they appear in.

use crate::common::TestRepo;
use crate::common::st::{self, T, Weights};

/// A model of about 3 MB as F32.
fn model() -> Vec<T> {
    st::base_model(42, 192, 2, 1024).iter().map(Weights::to_f32).collect()
}

fn assert_growth_below_one_percent(before: u64, after: u64, what: &str) {
    assert!(before > 1_000_000, "the first commit should have stored over 1 MB, stored {before} bytes");
    let growth = after.saturating_sub(before);
    assert!(growth * 100 < before, "{what}: .mlv grew by {growth} bytes from {before} (limit 1%)");
}

#[test]
fn same_model_under_two_paths_grows_repository_by_less_than_one_percent() {
    let r = TestRepo::init();
    let bytes = st::serialize(&model(), Some(&[("format", "pt")]));
    r.write("runs/a/model.safetensors", &bytes);
    r.add_commit(&["runs/a"], "first copy");
    let before = r.mlv_size();
    r.write("runs/b/model.safetensors", &bytes);
    r.add_commit(&["runs/b"], "second copy");
    assert_growth_below_one_percent(before, r.mlv_size(), "a second copy of the same model");
}

#[test]
fn same_tensors_in_a_differently_laid_out_file_are_deduplicated() {
    let r = TestRepo::init();
    let tensors = model();
    r.write("model.safetensors", st::serialize(&tensors, None));
    r.add_commit(&["model.safetensors"], "canonical");
    let before = r.mlv_size();
    // Same tensors, different header text and order: only the header is new.
    let mut layout =
        st::Layout { metadata: Some(r#"{"format": "pt", "converted": "yes"}"#.into()), ..Default::default() };
    layout.json_order = Some((0..tensors.len()).rev().collect());
    r.write("resaved.safetensors", st::hand_written(&tensors, &layout));
    r.add_commit(&["resaved.safetensors"], "resaved");
    assert_growth_below_one_percent(before, r.mlv_size(), "the same tensors in a re-saved file");
}

#[test]
fn reverting_to_an_earlier_version_stores_almost_nothing() {
    let r = TestRepo::init();
    let v1 = st::serialize(&model(), None);
    let mut t2 = model();
    t2[0].data[0] ^= 0xff;
    let v2 = st::serialize(&t2, None);
    r.write("model.safetensors", &v1);
    r.add_commit(&["model.safetensors"], "v1");
    r.write("model.safetensors", &v2);
    r.add_commit(&["model.safetensors"], "v2");
    let before = r.mlv_size();
    r.write("model.safetensors", &v1);
    r.add_commit(&["model.safetensors"], "back to v1");
    assert_growth_below_one_percent(before, r.mlv_size(), "re-committing an earlier version");
}

#[test]
fn two_copies_in_one_add_are_reported_as_duplicates() {
    let r = TestRepo::init();
    let bytes = st::serialize(&st::base_model(5, 32, 1, 64).iter().map(Weights::to_f32).collect::<Vec<_>>(), None);
    r.write("a.safetensors", &bytes);
    r.write("b.safetensors", &bytes);
    let report = r.json(&["add", "--json", "a.safetensors", "b.safetensors"]);
    let n = st::describe(&bytes).len() as u64;
    assert_eq!(report["staged"].as_array().map(Vec::len), Some(2), "{report}");
    assert_eq!(report["tensors_duplicate"].as_u64(), Some(n), "the second file's tensors are all duplicates: {report}");
    assert_eq!(report["tensors_delta"].as_u64(), Some(0), "{report}");
}
