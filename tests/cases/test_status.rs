//! `mlv status`: new, modified, deleted and untracked files, tensor counts, JSON.

use serde_json::Value;

use crate::common::TestRepo;
use crate::common::st::{self, T};

fn model(values: [f32; 3]) -> Vec<u8> {
    st::serialize(&(0..3).map(|i| T::f32(&format!("w{i}"), &[64], &[values[i]; 64])).collect::<Vec<_>>(), None)
}

/// A committed repository with `a.txt`, `gone.txt` and a three-tensor `model.safetensors`.
fn committed() -> TestRepo {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.write("gone.txt", "soon deleted\n");
    r.write("model.safetensors", model([1.0, 2.0, 3.0]));
    r.add_commit(&["."], "initial");
    r
}

fn find<'a>(list: &'a Value, path: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|c| c["path"] == path)
        .unwrap_or_else(|| panic!("{path} not listed in {list}"))
}

fn line_with<'a>(text: &'a str, needles: &[&str]) -> &'a str {
    text.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{text}"))
}

#[test]
fn status_reports_new_modified_deleted_and_untracked_files() {
    let r = committed();
    r.write("a.txt", "a changed\n");
    r.write("model.safetensors", model([1.0, 2.5, 3.0]));
    std::fs::remove_file(r.path("gone.txt")).unwrap();
    r.write("new.txt", "untracked\n");
    r.write("staged.txt", "staged\n");
    r.ok(&["add", "staged.txt"]);

    let text = r.ok(&["status"]);
    assert!(text.contains("On branch main"), "{text}");
    let staged_at = text.find("Changes to be committed").unwrap_or_else(|| panic!("{text}"));
    let unstaged_at = text.find("Changes not staged for commit").unwrap_or_else(|| panic!("{text}"));
    let untracked_at = text.find("Untracked files").unwrap_or_else(|| panic!("{text}"));
    assert!(staged_at < unstaged_at && unstaged_at < untracked_at, "{text}");
    let pos = |l: &str| text.find(l).unwrap();
    let staged_line = line_with(&text, &["new file:", "staged.txt"]);
    assert!(pos(staged_line) > staged_at && pos(staged_line) < unstaged_at, "{text}");
    line_with(&text, &["modified:", "a.txt"]);
    line_with(&text, &["deleted:", "gone.txt"]);
    let m = line_with(&text, &["modified:", "model.safetensors"]);
    assert!(m.contains("(1 tensor changed)"), "{text}");
    assert!(pos(line_with(&text, &["new.txt"])) > untracked_at, "{text}");
    assert!(!text.contains("working tree clean"), "{text}");

    let v = r.json(&["status", "--json"]);
    assert_eq!(v["branch"], "main");
    assert!(v["head"].as_str().is_some_and(|h| h.len() == 64), "head should be a full id: {v}");
    assert_eq!(v["staged"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(find(&v["staged"], "staged.txt")["kind"], "new");
    assert_eq!(find(&v["unstaged"], "a.txt")["kind"], "modified");
    assert_eq!(find(&v["unstaged"], "gone.txt")["kind"], "deleted");
    let m = find(&v["unstaged"], "model.safetensors");
    assert_eq!(m["kind"], "modified");
    assert_eq!(m["tensors"], serde_json::json!({"changed": 1, "added": 0, "removed": 0}), "{v}");
    assert_eq!(v["untracked"], serde_json::json!(["new.txt"]));
}

#[test]
fn staged_safetensors_change_counts_changed_added_and_removed_tensors() {
    let r = committed();
    // w1 changed, w2 removed, w3 added: each counted apart, as diff counts them.
    let ts = vec![T::f32("w0", &[64], &[1.0; 64]), T::f32("w1", &[64], &[9.0; 64]), T::f32("w3", &[64], &[4.0; 64])];
    r.write("model.safetensors", st::serialize(&ts, None));
    r.ok(&["add", "model.safetensors"]);
    let text = r.ok(&["status"]);
    let line = line_with(&text, &["modified:", "model.safetensors"]);
    assert!(line.contains("(1 tensor changed, 1 added, 1 removed)"), "{text}");
    let v = r.json(&["status", "--json"]);
    let counts = &find(&v["staged"], "model.safetensors")["tensors"];
    assert_eq!(*counts, serde_json::json!({"changed": 1, "added": 1, "removed": 1}), "{v}");
    assert!(v["unstaged"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn status_is_clean_after_commit_and_after_rewriting_identical_bytes() {
    let r = committed();
    let text = r.ok(&["status"]);
    assert!(text.contains("nothing to commit, working tree clean"), "{text}");
    let v = r.json(&["status", "--json"]);
    for k in ["staged", "unstaged", "untracked"] {
        assert!(v[k].as_array().unwrap().is_empty(), "{k} not empty: {v}");
    }
    // New mtime (and inode), same content: still clean.
    std::fs::remove_file(r.path("model.safetensors")).unwrap();
    r.write("model.safetensors", model([1.0, 2.0, 3.0]));
    r.write("a.txt", "a\n");
    let v = r.json(&["status", "--json"]);
    assert!(v["unstaged"].as_array().unwrap().is_empty(), "rewriting the same bytes is not a change: {v}");
}

#[test]
fn same_size_in_place_edit_right_after_add_is_detected() {
    // A file changed in place within the same instant as the index write must not be missed.
    let r = committed();
    for i in 0..5u8 {
        r.write("a.txt", format!("{i}\n"));
        r.ok(&["add", "a.txt"]);
        r.write("a.txt", format!("{}\n", i + 5));
        let v = r.json(&["status", "--json"]);
        assert_eq!(find(&v["unstaged"], "a.txt")["kind"], "modified", "round {i}: {v}");
    }
}

#[test]
fn status_in_a_new_repository_says_no_commits_yet() {
    let r = TestRepo::init();
    let text = r.ok(&["status"]);
    assert!(text.contains("No commits yet"), "{text}");
    let v = r.json(&["status", "--json"]);
    assert_eq!(v["head"], Value::Null);
    r.write("x.txt", "x\n");
    r.ok(&["add", "x.txt"]);
    let v = r.json(&["status", "--json"]);
    assert_eq!(find(&v["staged"], "x.txt")["kind"], "new");
}

#[test]
fn status_on_detached_head_names_the_commit() {
    let r = committed();
    let id = r.rev_id("HEAD");
    r.ok(&["checkout", &id]);
    let text = r.ok(&["status"]);
    assert!(text.contains(&format!("HEAD detached at {}", &id[..12])), "{text}");
    let v = r.json(&["status", "--json"]);
    assert_eq!(v["branch"], Value::Null);
    assert_eq!(v["head"], id.as_str());
}

#[test]
fn deleting_a_file_and_adding_its_path_stages_the_removal() {
    let r = committed();
    std::fs::remove_file(r.path("gone.txt")).unwrap();
    let out = r.ok(&["add", "gone.txt"]);
    assert!(out.contains("staged removal of gone.txt"), "{out}");
    let v = r.json(&["status", "--json"]);
    assert_eq!(find(&v["staged"], "gone.txt")["kind"], "deleted");
}

#[test]
fn executable_bit_changes_are_reported_staged_and_committed() {
    use std::os::unix::fs::PermissionsExt;
    let r = committed();
    std::fs::set_permissions(r.path("a.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = r.json(&["status", "--json"]);
    assert_eq!(find(&s["unstaged"], "a.txt")["kind"], "modified", "{s}");
    // status must not stage the mode change while refreshing its stat cache.
    assert_eq!(find(&r.json(&["status", "--json"])["unstaged"], "a.txt")["kind"], "modified");
    r.ok(&["add", "a.txt"]);
    let s = r.json(&["status", "--json"]);
    assert_eq!(find(&s["staged"], "a.txt")["kind"], "modified", "{s}");
    assert!(s["unstaged"].as_array().unwrap().is_empty(), "{s}");
    r.commit("make a.txt executable");
    assert!(r.json(&["status", "--json"])["staged"].as_array().unwrap().is_empty());
    r.clear_worktree();
    r.ok(&["checkout", "--force", "HEAD"]);
    assert_eq!(std::fs::metadata(r.path("a.txt")).unwrap().permissions().mode() & 0o777, 0o755);
}
