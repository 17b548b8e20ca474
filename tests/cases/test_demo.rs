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
    assert_eq!(restores.len(), 2, "{v}");
    assert!(restores.iter().all(|x| x["identical"] == true), "{v}");
    let ingests = v["ingests"].as_array().unwrap();
    assert_eq!(ingests.len(), 2, "{v}");
    // The kept repository is an ordinary mlv repository.
    let repo = keep.join("repo");
    assert!(repo.join(".mlv").is_dir(), "--keep should leave the repository in {}", repo.display());
    let mut cmd = r.cmd_in(&repo, ["log", "--json", "ft-1"]);
    let out = TestRepo::exec(&mut cmd, "mlv log --json ft-1 (in the kept demo repo)".into());
    assert!(out.success(), "{}", out.describe());
    let log: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(log.as_array().map(Vec::len), Some(2), "{log}");
}
