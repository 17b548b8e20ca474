//! `mlv demo` builds a model family, commits it, checks it out and verifies every byte.

use crate::common::TestRepo;

#[test]
fn demo_runs_and_reports_byte_identical_checkouts() {
    let r = TestRepo::uninit();
    let out = r.run(&["demo", "--size-mb", "2", "--finetunes", "1"]);
    assert!(out.success(), "{}", out.describe());
    assert!(out.stdout.contains("byte-identical"), "{}", out.describe());
    assert!(!out.stdout.contains("MISMATCH"), "{}", out.describe());
    assert!(out.stdout.contains("ft-1") && out.stdout.contains("base"), "{}", out.describe());
}

#[test]
fn demo_json_reports_every_member_identical() {
    let r = TestRepo::uninit();
    let keep = r.root.join("kept");
    let v = r.json(&["demo", "--size-mb", "1", "--finetunes", "1", "--json", "--keep", keep.to_str().unwrap()]);
    let restores = v["restores"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(restores.len(), 3, "{v}");
    assert!(restores.iter().all(|x| x["identical"] == true), "{v}");
    let ingests = v["ingests"].as_array().unwrap();
    let tags: Vec<&str> = ingests.iter().filter_map(|i| i["tag"].as_str()).collect();
    assert_eq!(tags, ["base", "ft-1", "ft-1-f32"], "{v}");
    // The kept repository is an ordinary mlv repository.
    let repo = keep.join("repo");
    assert!(repo.join(".mlv").is_dir(), "--keep should leave the repository in {}", repo.display());
    let mut cmd = r.cmd_in(&repo, ["log", "--json", "ft-1"]);
    let out = TestRepo::exec(&mut cmd, "mlv log --json ft-1 (in the kept demo repo)".into());
    assert!(out.success(), "{}", out.describe());
    let log: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(log.as_array().map(Vec::len), Some(2), "{log}");
}

#[test]
fn the_demo_fp32_save_stores_its_decay_only_rows_by_the_low_difference_codec() {
    let r = TestRepo::uninit();
    let keep = r.root.join("kept");
    r.json(&["demo", "--size-mb", "2", "--finetunes", "1", "--json", "--keep", keep.to_str().unwrap()]);
    let repo = keep.join("repo");
    let mut cmd = r.cmd_in(&repo, ["du", "--tensors", "--json", "ft-1-f32"]);
    let out = TestRepo::exec(&mut cmd, "mlv du --tensors --json ft-1-f32".into());
    assert!(out.success(), "{}", out.describe());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    let tensors = files.iter().find_map(|f| f["tensors"].as_array()).unwrap_or_else(|| panic!("{v}"));
    let word = tensors.iter().find(|t| t["name"] == "embeddings.word_embeddings.weight").unwrap();
    // Stored against the base (not the BF16 ft-1 committed before it), mostly by codec 4:
    // 65% of its rows got no gradient and only decayed.
    let mut cmd = r.cmd_in(&repo, ["log", "--json", "-n", "1", "base"]);
    let log: serde_json::Value = serde_json::from_str(&TestRepo::exec(&mut cmd, "mlv log base".into()).stdout).unwrap();
    assert_eq!(word["storage"]["base"]["commit"], log[0]["id"], "{word}");
    assert!(word.to_string().contains("bitx-diff-low"), "{word}");
    let (logical, stored) = (word["logical"].as_u64().unwrap(), word["stored"].as_u64().unwrap());
    assert!(stored * 2 < logical, "{stored} of {logical} bytes");
}
