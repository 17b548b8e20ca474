//! `mlv diff` across dtypes (an F32 base, a BF16 fine-tune), figures that do not apply, and
//! agreement with `mlv status` on what changed.

use serde_json::Value;

use crate::common::fixtures::family_repo;
use crate::common::st::{self, T};
use crate::common::{TestRepo, array};

fn bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

fn changed_tensor<'a>(diff: &'a Value, name: &str) -> &'a Value {
    array(&diff[0]["tensors"]["changed"], "changed")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not among the changed tensors: {diff}"))
}

#[test]
fn diff_across_dtypes_counts_only_changes_beyond_rounding() {
    let r = TestRepo::init();
    let base: Vec<f32> = (0..1024).map(|i| 0.01 + i as f32 * 1.0e-4).collect();
    let frozen: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 * 1.0e-3).collect();
    let f32_model = [T::f32("w", &[32, 32], &base), T::f32("frozen", &[64], &frozen)];
    r.write("m.safetensors", st::serialize(&f32_model, None));
    r.add_commit(&["m.safetensors"], "F32 base");
    // The fine-tune is the base rounded to BF16, with five elements trained further.
    let mut tuned: Vec<f32> = base.iter().map(|v| bf16(*v)).collect();
    for i in [0, 7, 100, 512, 1023] {
        tuned[i] += 0.25;
    }
    let bf16_model = [T::bf16("w", &[32, 32], &tuned), T::bf16("frozen", &[64], &frozen)];
    r.write("m.safetensors", st::serialize(&bf16_model, None));
    let rounded = |vs: &[f32]| vs.iter().filter(|v| bf16(**v) != **v).count() as u64;

    let v = r.json(&["diff", "--json"]);
    let w = changed_tensor(&v, "w");
    assert_eq!((w["old_dtype"].as_str(), w["dtype"].as_str()), (Some("F32"), Some("BF16")), "{w}");
    assert_eq!(w["changed"], 5, "only the trained elements changed: {w}");
    let untouched: Vec<f32> =
        base.iter().enumerate().filter(|(i, _)| ![0, 7, 100, 512, 1023].contains(i)).map(|(_, v)| *v).collect();
    assert_eq!(w["rounding_only"], rounded(&untouched), "{w}");
    assert!((w["max_abs_diff"].as_f64().unwrap() - 0.25).abs() < 0.01, "{w}");
    let f = changed_tensor(&v, "frozen");
    assert_eq!(f["changed"], 0, "{f}");
    assert_eq!(f["rounding_only"], rounded(&frozen), "{f}");

    let text = r.ok(&["diff"]);
    let line = text.lines().find(|l| l.contains(" w ")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.trim_start().starts_with("~ w F32 → BF16 [32, 32]: 5 of 1024 elements changed"), "{line}");
    assert!(line.contains("only rounded to BF16"), "{line}");
    assert!(!text.contains("~ frozen"), "a tensor with no changed element is listed as changed:\n{text}");
    let frozen_line = text.lines().find(|l| l.contains("frozen")).unwrap_or_else(|| panic!("{text}"));
    assert!(frozen_line.contains("= frozen F32 → BF16") && frozen_line.contains("beyond rounding"), "{frozen_line}");
    assert!(text.contains("tensors: 2 changed (1 only in dtype or shape), 0 added"), "{text}");
}

#[test]
fn diff_prints_na_where_a_figure_does_not_apply() {
    let r = TestRepo::init();
    let ids = |k: i32| T::new("ids", "I32", &[8], (0..8).flat_map(|i| (i * k).to_le_bytes()).collect());
    r.write("m.safetensors", st::serialize(&[ids(1)], None));
    r.add_commit(&["m.safetensors"], "one");
    r.write("m.safetensors", st::serialize(&[ids(2)], None));
    let v = r.json(&["diff", "--json"]);
    let c = changed_tensor(&v, "ids");
    assert_eq!(c["changed"], 7, "{c}");
    assert!(c["low_mantissa_only"].is_null(), "integers have no mantissa: {c}");
    assert!(c["rounding_only"].is_null(), "same dtype, nothing rounded: {c}");
    assert_eq!(c["max_abs_diff"], 7.0, "{c}");
    let text = r.ok(&["diff"]);
    assert!(text.contains("low mantissa bits: n/a"), "{text}");
}

#[test]
fn status_and_diff_agree_on_tensor_counts() {
    let (r, _base, ft) = family_repo();
    r.ok(&["checkout", "v1"]);
    r.copy_in(&ft);
    let status = r.json(&["status", "--json"]);
    let model = array(&status["unstaged"], "unstaged").iter().find(|c| c["path"] == "model.safetensors").unwrap();
    let counts = &model["tensors"];
    let diff = r.json(&["diff", "--json"]);
    let t = &array(&diff, "diff").iter().find(|f| f["path"] == "model.safetensors").unwrap()["tensors"];
    for k in ["changed", "added", "removed"] {
        assert_eq!(counts[k].as_u64(), Some(array(&t[k], k).len() as u64), "{k}: status {counts}, diff {t}");
    }
    assert_eq!(counts["added"], 2, "{counts}");
    let text = r.ok(&["status"]);
    let changed = counts["changed"].as_u64().unwrap();
    assert!(text.contains(&format!("({changed} tensors changed, 2 added)")), "{text}");
    let d = r.ok(&["diff"]);
    assert!(d.contains(&format!("tensors: {changed} changed")) && d.contains("2 added, 0 removed"), "{d}");
}
