//! Branches, tags, revision syntax, detached HEAD, orphan branches, log, show and diff.

use serde_json::Value;

use crate::common::fixtures::{self, family_repo};
use crate::common::st::{self, T};
use crate::common::{TestRepo, array};

/// Three commits of `n.txt` ("1", "2", "3") on main; returns their ids, oldest first.
fn three_commits() -> (TestRepo, [String; 3]) {
    let r = TestRepo::init();
    let mut ids = Vec::new();
    for i in 1..=3 {
        r.write("n.txt", format!("{i}\n"));
        ids.push(r.add_commit(&["n.txt"], &format!("commit {i}\n\nbody of {i}")));
    }
    (r, ids.try_into().unwrap())
}

fn branches(r: &TestRepo) -> Vec<(String, bool)> {
    let v = r.json(&["branch", "--json"]);
    array(&v, "branch --json")
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_string(), b["current"].as_bool().unwrap()))
        .collect()
}

#[test]
fn revision_syntax_resolves_parents_tags_and_id_prefixes() {
    let (r, [c1, c2, c3]) = three_commits();
    assert_eq!(r.rev_id("HEAD"), c3);
    assert_eq!(r.rev_id("@"), c3);
    assert_eq!(r.rev_id("main"), c3);
    assert_eq!(r.rev_id("HEAD~1"), c2);
    assert_eq!(r.rev_id("HEAD^"), c2);
    assert_eq!(r.rev_id("HEAD~2"), c1);
    assert_eq!(r.rev_id("HEAD^^"), c1);
    assert_eq!(r.rev_id("HEAD~1^"), c1);
    assert_eq!(r.rev_id("main~2"), c1);
    assert_eq!(r.rev_id(&c2[..7]), c2);
    assert_eq!(r.rev_id(&c2[..7].to_uppercase()), c2);
    assert_eq!(r.rev_id(&c1), c1);
    r.ok(&["tag", "v1", &c1]);
    r.ok(&["tag", "-m", "annotated release", "v2", &c2]);
    assert_eq!(r.rev_id("v1"), c1);
    assert_eq!(r.rev_id("v2"), c2, "an annotated tag resolves to its commit");
    assert_eq!(r.rev_id("v2~1"), c1);
    let out = r.fail(&["log", &c1[..3]]);
    assert!(out.stderr.contains("unknown revision"), "{}", out.describe());
}

#[test]
fn tags_lightweight_and_annotated() {
    let (r, [c1, _, c3]) = three_commits();
    r.ok(&["tag", "light", &c1]);
    let out = r.ok(&["tag", "-m", "release notes", "annotated"]);
    assert!(out.contains("Tagged annotated"), "{out}");
    let tags = r.json(&["tag", "--json"]);
    let tags = array(&tags, "tag --json");
    let get = |n: &str| tags.iter().find(|t| t["name"] == n).unwrap_or_else(|| panic!("{n} missing: {tags:?}"));
    assert_eq!(get("light")["id"], c1.as_str(), "a lightweight tag points at the commit");
    assert_ne!(get("annotated")["id"], c3.as_str(), "an annotated tag is its own object");
    let listing = r.ok(&["tag"]);
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["annotated", "light"]);
    let out = r.fail(&["tag", "light"]);
    assert!(out.stderr.contains("already exists"), "{}", out.describe());
    r.ok(&["checkout", "annotated"]);
    assert_eq!(r.rev_id("HEAD"), c3);
    r.ok(&["tag", "-d", "light"]);
    assert_eq!(r.ok(&["tag"]).trim(), "annotated");
    r.fail(&["log", "light"]);
}

#[test]
fn branch_create_list_switch_and_delete() {
    let (r, [c1, _, c3]) = three_commits();
    let out = r.ok(&["branch", "exp"]);
    assert!(out.contains("Created branch exp"), "{out}");
    r.ok(&["branch", "old", &c1]);
    assert_eq!(branches(&r), vec![("exp".into(), false), ("main".into(), true), ("old".into(), false)]);
    let listing = r.ok(&["branch"]);
    assert!(listing.lines().any(|l| l.starts_with("* main")), "{listing}");
    r.fail(&["branch", "exp"]);
    // Nothing to write: only where HEAD went is said.
    assert_eq!(r.ok(&["switch", "exp"]).trim(), "Switched to branch 'exp'");
    r.ok(&["switch", "main"]);

    let out = r.ok(&["switch", "old"]);
    assert!(out.contains("Switched to branch 'old'"), "{out}");
    assert_eq!(r.read("n.txt"), b"1\n");
    assert_eq!(r.json(&["status", "--json"])["branch"], "old");
    r.write("n.txt", "on old\n");
    let c4 = r.add_commit(&["n.txt"], "on old");
    assert_eq!(r.rev_id("old"), c4);
    assert_eq!(r.rev_id("main"), c3, "committing on old must not move main");
    r.ok(&["switch", "main"]);
    assert_eq!(r.read("n.txt"), b"3\n");

    r.ok(&["switch", "-c", "feature"]);
    assert_eq!(r.json(&["status", "--json"])["branch"], "feature");
    assert_eq!(r.rev_id("feature"), c3);
    let out = r.fail(&["branch", "-d", "feature"]);
    assert!(out.stderr.contains("checked out"), "{}", out.describe());
    r.ok(&["switch", "main"]);
    r.ok(&["branch", "-d", "feature"]);
    assert!(!branches(&r).iter().any(|(n, _)| n == "feature"));
    // Checking out a branch by name attaches HEAD to it.
    r.ok(&["checkout", "old"]);
    assert_eq!(r.json(&["status", "--json"])["branch"], "old");
}

#[test]
fn detached_head_checkout_and_commit() {
    let (r, [c1, c2, c3]) = three_commits();
    let out = r.ok(&["checkout", &c2[..10]]);
    assert!(out.contains(&format!("HEAD is now detached at {}", &c2[..12])), "{out}");
    assert_eq!(r.read("n.txt"), b"2\n");
    let s = r.json(&["status", "--json"]);
    assert_eq!(s["branch"], Value::Null);
    assert_eq!(s["head"], c2.as_str());
    r.write("n.txt", "detached work\n");
    let out = r.ok(&["commit", "-a", "-m", "detached"]);
    assert!(out.contains("detached HEAD"), "{out}");
    let d = r.rev_id("HEAD");
    assert_ne!(d, c2);
    assert_eq!(r.rev_id("HEAD~1"), c2);
    assert_eq!(r.rev_id("main"), c3, "a detached commit must not move any branch");
    r.ok(&["checkout", "main"]);
    assert_eq!(r.read("n.txt"), b"3\n");
    // The detached commit is still reachable by id.
    r.ok(&["checkout", &d]);
    assert_eq!(r.read("n.txt"), b"detached work\n");
    r.ok(&["checkout", "HEAD~2"]);
    assert_eq!(r.rev_id("HEAD"), c1);
}

#[test]
fn switch_orphan_empties_the_tree_and_starts_a_new_history() {
    let (r, c4) = fixture_with_subdir();
    r.ok(&["switch", "--orphan", "base"]);
    assert!(r.worktree_snapshot().is_empty(), "orphan switch must empty the work tree: {:?}", r.worktree_snapshot());
    let s = r.json(&["status", "--json"]);
    assert_eq!(s["branch"], "base");
    assert_eq!(s["head"], Value::Null);
    for k in ["staged", "unstaged", "untracked"] {
        assert!(s[k].as_array().unwrap().is_empty(), "{k}: {s}");
    }
    r.write("base.txt", "base\n");
    let b = r.add_commit(&["base.txt"], "orphan root");
    let log = r.json(&["log", "--json"]);
    assert_eq!(array(&log, "log").len(), 1, "{log}");
    assert_eq!(log[0]["id"], b.as_str());
    assert!(log[0]["parents"].as_array().unwrap().is_empty());
    r.ok(&["switch", "main"]);
    assert!(!r.exists("base.txt"));
    assert_eq!(r.rev_id("HEAD"), c4);
    assert!(r.exists("sub/deep/file.txt"));
}

/// [`three_commits`] plus a fourth adding `sub/deep/file.txt`; returns the fourth's id.
fn fixture_with_subdir() -> (TestRepo, String) {
    let (r, _) = three_commits();
    r.write("sub/deep/file.txt", "deep\n");
    let c4 = r.add_commit(&["sub"], "subdir");
    (r, c4)
}

#[test]
fn log_lists_commits_newest_first() {
    let (r, [c1, c2, c3]) = three_commits();
    let log = r.json(&["log", "--json"]);
    let ids: Vec<&str> = array(&log, "log").iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [c3.as_str(), c2.as_str(), c1.as_str()]);
    assert_eq!(log[0]["parents"], serde_json::json!([c2]));
    assert_eq!(log[2]["parents"], serde_json::json!([]));
    assert_eq!(log[0]["message"], "commit 3\n\nbody of 3\n");
    assert_eq!(log[0]["author"]["name"], crate::common::AUTHOR_NAME);
    assert_eq!(log[0]["author"]["email"], crate::common::AUTHOR_EMAIL);
    assert!(log[0]["author"]["time"].as_i64().is_some_and(|t| t > 1_600_000_000));
    let oneline = r.ok(&["log", "--oneline"]);
    let lines: Vec<&str> = oneline.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{} (HEAD -> main) commit 3", &c3[..12]),
            format!("{} commit 2", &c2[..12]),
            format!("{} commit 1", &c1[..12])
        ]
    );
    let two = r.json(&["log", "--json", "-n", "2"]);
    assert_eq!(array(&two, "log").len(), 2);
    let from = r.json(&["log", "--json", "HEAD~1"]);
    assert_eq!(from[0]["id"], c2.as_str());
    let text = r.ok(&["log"]);
    assert!(text.contains(&format!("commit {c3}")), "{text}");
    assert!(text.contains("Author: Test Author <test@example.com>"), "{text}");
    assert!(text.contains("    body of 3"), "{text}");
    let stat = r.json(&["log", "--json", "--stat"]);
    assert!(stat[0]["stored_bytes_added"].as_u64().is_some_and(|s| s > 0), "{stat}");
}

#[test]
fn show_prints_the_commit_and_its_changes() {
    let (r, [_, c2, c3]) = three_commits();
    let text = r.ok(&["show"]);
    assert!(text.contains(&format!("commit {c3}")), "{text}");
    assert!(text.contains("Author: Test Author <test@example.com>"), "{text}");
    assert!(text.contains("    commit 3"), "{text}");
    assert!(text.contains("modified: n.txt"), "{text}");
    assert!(text.contains("-2") && text.contains("+3"), "show should include the text diff:\n{text}");
    let v = r.json(&["show", "--json", "HEAD~1"]);
    assert_eq!(v["commit"]["id"], c2.as_str());
    assert_eq!(v["diff"][0]["path"], "n.txt");
    assert_eq!(v["diff"][0]["change"], "modified");
    // The root commit shows its files as added.
    let root = r.json(&["show", "--json", "HEAD~2"]);
    assert_eq!(root["diff"][0]["change"], "new");
}

#[test]
fn diff_between_base_and_fine_tune_reports_tensors_and_config() {
    let (r, _, _) = family_repo();
    let text = r.ok(&["diff", "HEAD~1", "HEAD"]);
    assert!(text.contains("modified: model.safetensors"), "{text}");
    assert!(text.contains("modified: config.json"), "{text}");
    assert!(!text.contains("tokenizer.json"), "unchanged files are not listed:\n{text}");
    assert!(text.contains("+ classifier.weight"), "{text}");
    assert!(text.contains("+ classifier.bias"), "{text}");
    let embed = text.lines().find(|l| l.contains("~ embeddings.word.weight")).unwrap_or_else(|| panic!("{text}"));
    assert!(embed.contains("of 16384 elements changed"), "{embed}");
    assert!(text.contains("--- a/config.json") && text.contains("+++ b/config.json"), "{text}");
    assert!(text.contains("-  \"torch_dtype\": \"float32\","), "{text}");
    assert!(text.contains("+  \"torch_dtype\": \"bfloat16\","), "{text}");
    assert!(text.contains("+  \"num_labels\": 3,"), "{text}");

    let v = r.json(&["diff", "--json", "v1", "v2"]);
    let files = array(&v, "diff --json");
    assert_eq!(files.len(), 2, "{v}");
    let model = files.iter().find(|f| f["path"] == "model.safetensors").unwrap();
    assert_eq!(model["change"], "modified");
    let t = &model["tensors"];
    let mut added: Vec<&str> = array(&t["added"], "added").iter().map(|a| a.as_str().unwrap()).collect();
    added.sort();
    assert_eq!(added, ["classifier.bias", "classifier.weight"]);
    assert!(array(&t["removed"], "removed").is_empty());
    let changed = array(&t["changed"], "changed");
    assert_eq!(changed.len() as u64 + t["unchanged"].as_u64().unwrap(), fixtures::base_weights().len() as u64);
    let e = changed.iter().find(|c| c["name"] == "embeddings.word.weight").unwrap();
    assert_eq!(e["dtype"], "BF16");
    assert_eq!(e["shape"], serde_json::json!([[256, 64], [256, 64]]));
    assert_eq!(e["elements"], 16384);
    for k in ["changed", "max_abs_diff", "mean_abs_diff", "low_mantissa_only"] {
        assert!(e[k].is_number(), "{k} missing: {e}");
    }
    let config = files.iter().find(|f| f["path"] == "config.json").unwrap();
    assert!(config["text"].as_str().unwrap().contains("+  \"num_labels\": 3,"), "{config}");
    assert!(config.get("tensors").is_none() || config["tensors"].is_null());
}

#[test]
fn diff_counts_exactly_the_changed_elements() {
    let r = TestRepo::init();
    let base: Vec<f32> = (0..4096).map(|i| i as f32 * 0.001).collect();
    let other = T::f32("other", &[16], &[0.5; 16]);
    r.write("m.safetensors", st::serialize(&[T::f32("w", &[64, 64], &base), other.clone()], None));
    r.add_commit(&["m.safetensors"], "one");
    let mut changed = base.clone();
    for i in [0, 10, 100, 1000, 4095] {
        changed[i] += 0.5;
    }
    r.write("m.safetensors", st::serialize(&[T::f32("w", &[64, 64], &changed), other], None));
    // Work tree against HEAD first, then commit and compare two commits.
    for args in [&["diff", "--json"][..], &["diff", "--json", "HEAD"]] {
        let v = r.json(args);
        let c = &v[0]["tensors"]["changed"][0];
        assert_eq!(c["name"], "w", "{v}");
        assert_eq!(c["elements"], 4096, "{v}");
        assert_eq!(c["changed"], 5, "{v}");
        assert!((c["max_abs_diff"].as_f64().unwrap() - 0.5).abs() < 1e-6, "{v}");
        assert_eq!(v[0]["tensors"]["unchanged"], 1, "{v}");
    }
    r.add_commit(&["m.safetensors"], "two");
    let text = r.ok(&["diff", "HEAD~1", "HEAD"]);
    let line = text.lines().find(|l| l.contains("~ w ")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("5 of 4096 elements changed"), "{line}");
    assert!(text.contains("tensors: 1 changed, 0 added, 0 removed, 1 unchanged"), "{text}");
    assert_eq!(r.ok(&["diff"]).trim(), "", "no difference with a clean work tree");
}

#[test]
fn checkout_head_keeps_the_branch_attached() {
    // `mlv checkout --force HEAD` is the usual way to discard local changes; it must not
    // detach HEAD, or the next commit would not advance the branch.
    let (r, [_, _, c3]) = three_commits();
    r.write("n.txt", "scribble\n");
    r.ok(&["checkout", "--force", "HEAD"]);
    assert_eq!(r.read("n.txt"), b"3\n");
    assert_eq!(r.json(&["status", "--json"])["branch"], "main", "checkout HEAD detached HEAD");
    r.write("n.txt", "4\n");
    let c4 = r.add_commit(&["n.txt"], "commit 4");
    assert_eq!(r.rev_id("main"), c4, "the commit after `checkout HEAD` did not advance main (was {c3})");
}

#[test]
fn branch_names_with_slashes_and_their_prefixes() {
    let (r, [c1, ..]) = three_commits();
    r.ok(&["branch", "exp/lr-1e-4", &c1]);
    r.ok(&["switch", "exp/lr-1e-4"]);
    assert_eq!(r.json(&["status", "--json"])["branch"], "exp/lr-1e-4");
    assert_eq!(r.read("n.txt"), b"1\n");
    r.ok(&["switch", "main"]);
    let out = r.fail(&["branch", "exp"]);
    assert!(!out.stderr.contains("os error"), "a clear message, not a raw OS error:\n{}", out.describe());
    r.ok(&["branch", "-d", "exp/lr-1e-4"]);
    // Once exp/lr-1e-4 is gone, the name `exp` is free.
    r.ok(&["branch", "exp"]);
    assert!(branches(&r).iter().any(|(n, _)| n == "exp"));
}
