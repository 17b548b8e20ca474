//! Staging: `rm`, `rm --cached`, `restore`, `restore --staged`, `commit -a`, `.mlvignore`,
//! and running from a subdirectory.

use serde_json::Value;

use crate::common::st::{self, T};
use crate::common::{TestRepo, array};

fn paths(list: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        array(list, "list").iter().map(|c| c.get("path").unwrap_or(c).as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

fn kind_of(list: &Value, path: &str) -> Option<String> {
    array(list, "list").iter().find(|c| c["path"] == path).map(|c| c["kind"].as_str().unwrap().to_string())
}

/// Paths of the files in a commit, from `mlv du --json`.
fn files_at(r: &TestRepo, rev: &str) -> Vec<String> {
    let du = r.json(&["du", "--json", rev]);
    paths(&du["files"])
}

fn repo_with_files() -> TestRepo {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.write("b.txt", "b\n");
    r.write("sub/c.txt", "c\n");
    st::write(&r.path("sub/m.safetensors"), &[T::f32("w", &[4], &[1.0; 4])], None);
    r.add_commit(&["."], "initial");
    r
}

#[test]
fn rm_deletes_the_file_and_stages_its_removal() {
    let r = repo_with_files();
    let out = r.ok(&["rm", "a.txt"]);
    assert!(out.contains("rm a.txt"), "{out}");
    assert!(!r.exists("a.txt"));
    let s = r.json(&["status", "--json"]);
    assert_eq!(kind_of(&s["staged"], "a.txt").as_deref(), Some("deleted"), "{s}");
    assert!(s["unstaged"].as_array().unwrap().is_empty(), "{s}");
    r.commit("remove a");
    assert_eq!(files_at(&r, "HEAD"), ["b.txt", "sub/c.txt", "sub/m.safetensors"]);
}

#[test]
fn rm_of_a_directory_removes_everything_under_it() {
    let r = repo_with_files();
    let out = r.ok(&["rm", "sub"]);
    assert!(out.contains("rm sub/c.txt") && out.contains("rm sub/m.safetensors"), "{out}");
    assert!(!r.exists("sub/c.txt") && !r.exists("sub/m.safetensors"));
    r.commit("remove sub");
    assert_eq!(files_at(&r, "HEAD"), ["a.txt", "b.txt"]);
}

#[test]
fn rm_cached_keeps_the_file_as_untracked() {
    let r = repo_with_files();
    r.ok(&["rm", "--cached", "b.txt"]);
    assert_eq!(r.read("b.txt"), b"b\n");
    let s = r.json(&["status", "--json"]);
    assert_eq!(kind_of(&s["staged"], "b.txt").as_deref(), Some("deleted"), "{s}");
    assert_eq!(paths(&s["untracked"]), ["b.txt"]);
    r.commit("untrack b");
    assert_eq!(files_at(&r, "HEAD"), ["a.txt", "sub/c.txt", "sub/m.safetensors"]);
    assert_eq!(r.read("b.txt"), b"b\n");
}

#[test]
fn restore_staged_unstages_but_keeps_the_work_tree() {
    let r = repo_with_files();
    r.write("a.txt", "a modified\n");
    r.write("new.txt", "new\n");
    r.ok(&["add", "a.txt", "new.txt"]);
    let s = r.json(&["status", "--json"]);
    assert_eq!(paths(&s["staged"]), ["a.txt", "new.txt"]);
    let out = r.ok(&["restore", "--staged", "a.txt", "new.txt"]);
    assert!(out.contains("unstaged a.txt") && out.contains("unstaged new.txt"), "{out}");
    assert_eq!(r.read("a.txt"), b"a modified\n");
    let s = r.json(&["status", "--json"]);
    assert!(s["staged"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(kind_of(&s["unstaged"], "a.txt").as_deref(), Some("modified"), "{s}");
    assert_eq!(paths(&s["untracked"]), ["new.txt"]);
    r.fail(&["commit", "-m", "nothing staged"]);
}

#[test]
fn commit_after_restore_staged_records_true_file_sizes() {
    let r = repo_with_files();
    r.write("a.txt", "a modified\n");
    r.ok(&["add", "a.txt"]);
    r.ok(&["restore", "--staged", "a.txt"]);
    r.write("b.txt", "b changed\n");
    r.ok(&["add", "b.txt"]);
    let v = r.json(&["commit", "-m", "only b", "--json"]);
    let model_len = st::serialize(&[T::f32("w", &[4], &[1.0; 4])], None).len();
    assert_eq!(v["logical_bytes"], 2 + 10 + 2 + model_len, "{v}");
    let du = r.json(&["du", "--json"]);
    let a = array(&du["files"], "files").iter().find(|f| f["path"] == "a.txt").unwrap();
    assert_eq!(a["logical"], 2, "a.txt is 2 bytes in HEAD: {du}");
    let show = r.json(&["show", "--json"]);
    assert_eq!(kind_of_change(&show["diff"], "a.txt"), None, "a.txt did not change in this commit: {show}");
}

#[test]
fn restore_staged_undoes_a_staged_removal() {
    let r = repo_with_files();
    r.ok(&["rm", "--cached", "b.txt"]);
    r.ok(&["restore", "--staged", "b.txt"]);
    let s = r.json(&["status", "--json"]);
    assert!(s["staged"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["untracked"].as_array().unwrap().is_empty(), "{s}");
}

#[test]
fn restore_brings_back_committed_content() {
    let r = repo_with_files();
    r.write("a.txt", "a v2\n");
    r.add_commit(&["a.txt"], "a v2");
    r.write("a.txt", "scribble\n");
    std::fs::remove_file(r.path("sub/m.safetensors")).unwrap();
    let out = r.ok(&["restore", "a.txt", "sub"]);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(r.read("a.txt"), b"a v2\n");
    assert_eq!(r.read("sub/m.safetensors"), st::serialize(&[T::f32("w", &[4], &[1.0; 4])], None));
    r.ok(&["restore", "--source", "HEAD~1", "a.txt"]);
    assert_eq!(r.read("a.txt"), b"a\n");
}

#[test]
fn commit_all_picks_up_modifications_and_deletions_but_not_untracked_files() {
    let r = repo_with_files();
    r.write("a.txt", "a changed\n");
    st::write(&r.path("sub/m.safetensors"), &[T::f32("w", &[4], &[2.0; 4])], None);
    std::fs::remove_file(r.path("b.txt")).unwrap();
    r.write("untracked.txt", "u\n");
    let v = r.json(&["commit", "-a", "-m", "all", "--json"]);
    let mut staged: Vec<&str> = array(&v["staged"]["staged"], "staged").iter().map(|s| s.as_str().unwrap()).collect();
    staged.sort();
    assert_eq!(staged, ["a.txt", "sub/m.safetensors"], "{v}");
    assert_eq!(v["files"], 3, "{v}");
    assert_eq!(files_at(&r, "HEAD"), ["a.txt", "sub/c.txt", "sub/m.safetensors"]);
    let s = r.json(&["status", "--json"]);
    assert!(s["staged"].as_array().unwrap().is_empty() && s["unstaged"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(paths(&s["untracked"]), ["untracked.txt"]);
    let show = r.json(&["show", "--json"]);
    assert_eq!(kind_of_change(&show["diff"], "b.txt"), Some("deleted".into()));
    assert_eq!(kind_of_change(&show["diff"], "a.txt"), Some("modified".into()));
}

fn kind_of_change(diff: &Value, path: &str) -> Option<String> {
    array(diff, "diff").iter().find(|f| f["path"] == path).map(|f| f["change"].as_str().unwrap().to_string())
}

#[test]
fn mlvignore_excludes_files_from_add_and_status() {
    let r = TestRepo::init();
    r.write(".mlvignore", "*.log\ncheckpoints/tmp/\n/scratch.bin\n");
    r.write("train.log", "noise\n");
    r.write("keep.txt", "keep\n");
    r.write("checkpoints/tmp/step-1.safetensors", "not even valid safetensors");
    r.write("checkpoints/final/model.txt", "final\n");
    r.write("scratch.bin", "x");
    r.write("nested/scratch.bin", "kept: the pattern is anchored\n");
    r.write("nested/.mlvignore", "secret.txt\n");
    r.write("nested/secret.txt", "hidden\n");
    r.write("nested/debug.log", "also ignored\n");
    let s = r.json(&["status", "--json"]);
    assert_eq!(
        paths(&s["untracked"]),
        [".mlvignore", "checkpoints/final/model.txt", "keep.txt", "nested/.mlvignore", "nested/scratch.bin"]
    );
    let report = r.json(&["add", "--json", "."]);
    let mut staged: Vec<&str> = array(&report["staged"], "staged").iter().map(|s| s.as_str().unwrap()).collect();
    staged.sort();
    assert_eq!(
        staged,
        [".mlvignore", "checkpoints/final/model.txt", "keep.txt", "nested/.mlvignore", "nested/scratch.bin"]
    );
    r.commit("with ignores");
    let s = r.json(&["status", "--json"]);
    assert!(s["untracked"].as_array().unwrap().is_empty(), "{s}");
}

#[test]
fn commands_work_from_a_subdirectory() {
    let r = repo_with_files();
    r.write("sub/deep/new.txt", "new\n");
    let s = r.ok_in("sub/deep", &["status"]);
    assert!(s.contains("sub/deep/new.txt"), "paths are shown from the root:\n{s}");
    r.ok_in("sub/deep", &["add", "new.txt"]);
    let st = r.json(&["status", "--json"]);
    assert_eq!(kind_of(&st["staged"], "sub/deep/new.txt").as_deref(), Some("new"), "{st}");
    r.write("a.txt", "changed from below\n");
    r.ok_in("sub/deep", &["add", "../../a.txt"]);
    r.ok_in("sub/deep", &["commit", "-m", "from a subdirectory"]);
    assert_eq!(files_at(&r, "HEAD"), ["a.txt", "b.txt", "sub/c.txt", "sub/deep/new.txt", "sub/m.safetensors"]);
    r.ok_in("sub", &["log", "--oneline"]);
    // Paths given below the root are relative to the current directory.
    r.write("sub/c.txt", "scribble\n");
    r.ok_in("sub", &["checkout", "HEAD", "--", "c.txt"]);
    assert_eq!(r.read("sub/c.txt"), b"c\n");
    r.ok_in("sub", &["rm", "c.txt"]);
    assert!(!r.exists("sub/c.txt"));
    // -C runs as if started elsewhere.
    let s = r.ok(&["-C", "sub/deep", "status", "--json"]);
    assert!(s.contains("sub/c.txt"), "{s}");
    // Paths outside the work tree are refused.
    let out = r.run_in("sub", &["add", "../../outside.txt"]);
    assert!(!out.success(), "{}", out.describe());
}

#[test]
fn rm_removes_directories_it_empties() {
    let r = repo_with_files();
    r.ok(&["rm", "sub"]);
    assert!(!r.path("sub").exists(), "`mlv rm sub` left an empty directory behind");
    // The path is free again for a file.
    r.write("sub", "now a file\n");
    r.add_commit(&["sub"], "sub is a file");
}

#[test]
fn rm_refuses_to_delete_uncommitted_changes() {
    // Like `git rm`: a file whose content exists nowhere else is not deleted without force.
    let r = repo_with_files();
    r.write("a.txt", "hours of unsaved work\n");
    let out = r.run(&["rm", "a.txt"]);
    assert_eq!(
        std::fs::read(r.path("a.txt")).ok().as_deref(),
        Some(&b"hours of unsaved work\n"[..]),
        "`mlv rm` deleted a file with unstaged changes:\n{}",
        out.describe()
    );
    r.write("new.txt", "staged, never committed\n");
    r.ok(&["add", "new.txt"]);
    let out = r.run(&["rm", "new.txt"]);
    assert!(r.exists("new.txt"), "`mlv rm` deleted a staged file that was never committed:\n{}", out.describe());
}

#[test]
fn tracked_file_matching_mlvignore_stays_tracked() {
    // Ignore rules are for untracked files: a tracked file must not look deleted.
    let r = TestRepo::init();
    r.write("train.log", "important log\n");
    r.write("keep.txt", "keep\n");
    r.add_commit(&["."], "track the log");
    r.write(".mlvignore", "*.log\n");
    r.ok(&["add", ".mlvignore"]);
    let s = r.json(&["status", "--json"]);
    assert_eq!(kind_of(&s["unstaged"], "train.log"), None, "a tracked ignored file shows as deleted: {s}");
    r.ok(&["commit", "-a", "-m", "add ignore file"]);
    assert_eq!(files_at(&r, "HEAD"), [".mlvignore", "keep.txt", "train.log"]);
}

#[test]
fn untracked_file_with_non_utf8_name_does_not_block_the_repository() {
    use std::os::unix::ffi::OsStrExt;
    let r = repo_with_files();
    r.write("a.txt", "a v2\n");
    r.ok(&["commit", "-a", "-m", "a v2"]);
    let odd = r.root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&odd, "latin-1 name\n").unwrap();
    for args in [&["status"][..], &["checkout", "HEAD~1"], &["diff"]] {
        let out = r.run(args);
        assert!(out.success(), "an unrelated untracked file blocks `mlv {}`:\n{}", args.join(" "), out.describe());
    }
}

#[test]
fn concurrent_adds_never_lose_staged_files_silently() {
    // Each `mlv add` either stages its file or fails with an error (e.g. the index is locked);
    // none may report success and then be overwritten by another writer.
    let r = TestRepo::init();
    let n = 8;
    for i in 0..n {
        r.write(&format!("f{i}.txt"), format!("{i}\n"));
    }
    let children: Vec<_> = (0..n)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_mlv"))
                .args(["add", &format!("f{i}.txt")])
                .current_dir(&r.root)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let succeeded: Vec<String> = children
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let out = c.wait_with_output().unwrap();
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
            out.status.success().then(|| format!("f{i}.txt"))
        })
        .collect();
    let s = r.json(&["status", "--json"]);
    let staged = paths(&s["staged"]);
    let lost: Vec<&String> = succeeded.iter().filter(|f| !staged.contains(f)).collect();
    assert!(lost.is_empty(), "`mlv add` reported success but {lost:?} are not staged: {s}");
}

#[test]
fn add_skips_non_utf8_names_with_a_warning_but_refuses_them_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let r = repo_with_files();
    std::fs::write(r.root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")), "latin-1 name\n").unwrap();
    r.write("new.txt", "new\n");
    let out = r.run(&["add", "."]);
    assert!(out.success() && out.stderr.contains("warning: skipped caf"), "{}", out.describe());
    let s = r.json(&["status", "--json"]);
    assert_eq!(paths(&s["staged"]), ["new.txt"], "{s}");
    assert_eq!(array(&s["skipped"], "skipped").len(), 1, "{s}");
    let args = [std::ffi::OsStr::new("add"), std::ffi::OsStr::from_bytes(b"caf\xe9.txt")];
    let out = TestRepo::exec(&mut r.cmd_in(&r.root, args), "mlv add caf\\xe9.txt".into());
    assert!(!out.success() && out.stderr.contains("UTF-8"), "{}", out.describe());
}
