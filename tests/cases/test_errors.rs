//! Failures are reported as `error: ...` with a hint, exit non-zero, and never panic.

use crate::common::st::{self, T};
use crate::common::{Out, TestRepo, assert_clean_failure};

fn assert_hint(out: &Out, needle: &str) {
    assert_clean_failure(out);
    let hint = out
        .stderr
        .lines()
        .find(|l| l.starts_with("hint:"))
        .unwrap_or_else(|| panic!("no hint line:\n{}", out.describe()));
    assert!(hint.contains(needle), "the hint should mention {needle:?}:\n{}", out.describe());
}

#[test]
fn status_outside_a_repository_fails_with_an_init_hint() {
    let r = TestRepo::uninit();
    let out = r.fail(&["status"]);
    assert!(out.stderr.contains("not an mlv repository"), "{}", out.describe());
    assert_hint(&out, "mlv init");
    for args in [&["log"][..], &["add", "x"], &["commit", "-m", "x"], &["checkout", "main"], &["du"]] {
        let out = r.fail(args);
        assert!(out.stderr.contains("mlv init"), "{}", out.describe());
    }
}

#[test]
fn init_twice_fails() {
    let r = TestRepo::init();
    let out = r.fail(&["init"]);
    assert!(out.stderr.contains("already"), "{}", out.describe());
}

#[test]
fn init_with_a_directory_argument_creates_it() {
    let r = TestRepo::uninit();
    r.ok(&["init", "sub/dir"]);
    assert!(r.path("sub/dir/.mlv").is_dir());
    r.ok_in("sub/dir", &["status"]);
}

#[test]
fn init_with_an_existing_directory_argument_initializes_that_directory() {
    let r = TestRepo::uninit();
    std::fs::create_dir_all(r.path("models/bert")).unwrap();
    r.ok(&["init", "models/bert"]);
    assert!(r.path("models/bert/.mlv").is_dir(), "no repository in models/bert");
    assert!(!r.path("models/bert/models").exists(), "init DIR must not create DIR inside DIR");
}

#[test]
fn unknown_revision_fails_with_a_hint() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "one");
    for args in [
        &["checkout", "nosuch"][..],
        &["log", "nosuch"],
        &["show", "nosuch"],
        &["diff", "nosuch"],
        &["du", "nosuch"],
        &["show", "HEAD~5"],
        &["show", "HEAD^2"],
        &["branch", "b", "nosuch"],
        &["tag", "t", "nosuch"],
        &["checkout", "deadbeef"],
        &["restore", "--source", "nosuch", "a.txt"],
    ] {
        let out = r.fail(args);
        assert!(out.stderr.contains("unknown revision"), "{}", out.describe());
        assert_hint(&out, "mlv log");
    }
}

#[test]
fn commit_with_nothing_staged_fails() {
    let r = TestRepo::init();
    let out = r.fail(&["commit", "-m", "empty"]);
    assert!(out.stderr.contains("nothing to commit"), "{}", out.describe());
    r.write("a.txt", "a\n");
    // Untracked files are not staged by -a either.
    let out = r.fail(&["commit", "-a", "-m", "empty"]);
    assert!(out.stderr.contains("nothing to commit"), "{}", out.describe());
    r.add_commit(&["a.txt"], "one");
    let out = r.fail(&["commit", "-m", "again"]);
    assert!(out.stderr.contains("nothing to commit"), "{}", out.describe());
    assert_hint(&out, "mlv add");
}

/// A command with no identity anywhere: no MLV_AUTHOR_*, an empty HOME, no system git config.
fn without_identity(r: &TestRepo, args: &[&str]) -> Out {
    let mut cmd = r.cmd(args);
    cmd.env_remove("MLV_AUTHOR_NAME").env_remove("MLV_AUTHOR_EMAIL");
    TestRepo::exec(&mut cmd, format!("(no identity) mlv {}", args.join(" ")))
}

#[test]
fn commit_without_author_identity_fails_with_a_hint() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.ok(&["add", "a.txt"]);
    let before = r.mlv_snapshot();
    let out = without_identity(&r, &["commit", "-m", "anonymous"]);
    assert!(out.stderr.contains("no author identity"), "{}", out.describe());
    assert_hint(&out, "MLV_AUTHOR_NAME");
    assert_eq!(r.mlv_snapshot(), before, "a refused commit must not change the repository");
    // An annotated tag needs an identity too.
    r.commit("with identity");
    let out = without_identity(&r, &["tag", "-m", "release", "v1"]);
    assert_hint(&out, "MLV_AUTHOR_NAME");
}

#[test]
fn commit_takes_the_identity_from_git_config_when_no_env_is_set() {
    let r = TestRepo::init();
    std::fs::write(r.home.join(".gitconfig"), "[user]\n\tname = Git Person\n\temail = git@example.com\n").unwrap();
    r.write("a.txt", "a\n");
    r.ok(&["add", "a.txt"]);
    let out = without_identity(&r, &["commit", "-m", "from git"]);
    assert!(out.success(), "{}", out.describe());
    let log = r.json(&["log", "--json"]);
    assert_eq!(log[0]["author"]["name"], "Git Person", "{log}");
    assert_eq!(log[0]["author"]["email"], "git@example.com", "{log}");
}

#[test]
fn commit_takes_the_identity_from_mlv_config_when_no_env_is_set() {
    let r = TestRepo::init();
    let config = r.path(".mlv/config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[user]\nname = \"Config Person\"\nemail = \"config@example.com\"\n");
    std::fs::write(&config, text).unwrap();
    r.write("a.txt", "a\n");
    r.ok(&["add", "a.txt"]);
    let out = without_identity(&r, &["commit", "-m", "from config"]);
    assert!(out.success(), "{}", out.describe());
    let log = r.json(&["log", "--json"]);
    assert_eq!(log[0]["author"]["name"], "Config Person", "{log}");
}

/// Two commits of `notes.txt` and `model.safetensors`; HEAD on main at the second.
fn two_versions() -> (TestRepo, String, String) {
    let r = TestRepo::init();
    r.write("notes.txt", "one\n");
    st::write(&r.path("model.safetensors"), &[T::f32("w", &[8], &[1.0; 8])], None);
    let c1 = r.add_commit(&["."], "one");
    r.write("notes.txt", "two\n");
    st::write(&r.path("model.safetensors"), &[T::f32("w", &[8], &[2.0; 8])], None);
    let c2 = r.add_commit(&["."], "two");
    (r, c1, c2)
}

#[test]
fn checkout_refuses_to_overwrite_modified_file() {
    let (r, c1, c2) = two_versions();
    r.write("notes.txt", "local edit\n");
    let out = r.fail(&["checkout", &c1]);
    assert!(out.stderr.contains("notes.txt"), "the error must name the file:\n{}", out.describe());
    assert_hint(&out, "--force");
    assert_eq!(r.read("notes.txt"), b"local edit\n", "a refused checkout must not touch the file");
    assert_eq!(r.rev_id("HEAD"), c2, "a refused checkout must not move HEAD");
    let status = r.json(&["status", "--json"]);
    assert_eq!(status["branch"], "main");
    r.ok(&["checkout", "--force", &c1]);
    assert_eq!(r.read("notes.txt"), b"one\n");
    assert_eq!(r.rev_id("HEAD"), c1);
}

#[test]
fn checkout_refuses_to_overwrite_modified_safetensors_file() {
    let (r, c1, _) = two_versions();
    let local = st::serialize(&[T::f32("w", &[8], &[3.0; 8])], None);
    r.write("model.safetensors", &local);
    r.fail(&["checkout", &c1]);
    assert_eq!(r.read("model.safetensors"), local);
    r.ok(&["checkout", "-f", &c1]);
    assert_eq!(r.read("model.safetensors"), st::serialize(&[T::f32("w", &[8], &[1.0; 8])], None));
}

#[test]
fn checkout_refuses_to_overwrite_staged_change() {
    let (r, c1, _) = two_versions();
    r.write("notes.txt", "staged edit\n");
    r.ok(&["add", "notes.txt"]);
    r.fail(&["checkout", &c1]);
    assert_eq!(r.read("notes.txt"), b"staged edit\n");
}

#[test]
fn checkout_refuses_to_overwrite_untracked_file_in_the_way() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    let c1 = r.add_commit(&["a.txt"], "one");
    r.write("b.txt", "b\n");
    r.add_commit(&["b.txt"], "two");
    r.ok(&["checkout", &c1]);
    assert!(!r.exists("b.txt"));
    r.write("b.txt", "precious untracked\n");
    r.fail(&["checkout", "main"]);
    assert_eq!(r.read("b.txt"), b"precious untracked\n");
}

#[test]
fn switch_refuses_to_overwrite_modified_file() {
    let (r, c1, _) = two_versions();
    r.ok(&["branch", "old", &c1]);
    r.write("notes.txt", "local edit\n");
    r.fail(&["switch", "old"]);
    assert_eq!(r.read("notes.txt"), b"local edit\n");
    r.ok(&["switch", "--force", "old"]);
    assert_eq!(r.read("notes.txt"), b"one\n");
}

#[test]
fn checkout_keeps_local_changes_to_files_it_does_not_touch() {
    let r = TestRepo::init();
    r.write("a.txt", "a1\n");
    r.write("same.txt", "same\n");
    r.add_commit(&["."], "one");
    r.write("a.txt", "a2\n");
    r.add_commit(&["."], "two");
    r.write("same.txt", "local edit\n");
    r.write("untracked.txt", "mine\n");
    r.ok(&["checkout", "HEAD~1"]);
    assert_eq!(r.read("a.txt"), b"a1\n");
    assert_eq!(r.read("same.txt"), b"local edit\n");
    assert_eq!(r.read("untracked.txt"), b"mine\n");
}

#[test]
fn odd_commands_fail_cleanly_and_never_panic() {
    let r = TestRepo::init();
    // In an empty repository.
    for args in [
        &["log"][..],
        &["show"],
        &["diff"],
        &["du"],
        &["du", "--tensors", "--json"],
        &["branch", "b"],
        &["tag", "t"],
        &["checkout", "HEAD"],
        &["switch", "nosuch"],
        &["rm", "nosuch"],
        &["restore", "nosuch"],
        &["add", "nosuch"],
        &["add", "../outside"],
        &["branch", "-d"],
        &["tag", "-d"],
        &["checkout", "HEAD~999"],
    ] {
        r.fail(args);
    }
    for args in
        [&["status"][..], &["status", "--json"], &["branch"], &["tag"], &["branch", "--json"], &["tag", "--json"]]
    {
        r.ok(args);
    }
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "one");
    for args in [
        &["branch", "-d", "main"][..],
        &["branch", "..bad"],
        &["branch", "-x"],
        &["tag", "bad name"],
        &["branch", "HEAD"],
        &["switch", "-c", "main"],
        &["switch", "--orphan", "main"],
        &["checkout", "HEAD~1"],
        &["checkout", "HEAD^^"],
        &["checkout", "HEAD~99999999999999999999999"],
        &["show", "HEAD~1"],
        &["diff", "HEAD~1"],
        &["rm", "../a.txt"],
        &["checkout", "HEAD", "--", "nosuch"],
        &["restore", "--staged", "nosuch"],
    ] {
        r.fail(args);
    }
    for args in [
        &["log", "-n", "0"][..],
        &["log", "--oneline"],
        &["log", "--stat"],
        &["show"],
        &["show", "--json"],
        &["show", "@"],
        &["du"],
        &["du", "--tensors"],
        &["diff", "HEAD", "HEAD"],
        &["checkout", "HEAD"],
        &["checkout", "HEAD^0"],
        &["log", "HEAD~0"],
    ] {
        r.ok(args);
    }
    let out = r.run(&["-C", "/nonexistent/dir", "status"]);
    assert!(!out.success(), "{}", out.describe());
    let out = r.run(&["frobnicate"]);
    assert!(!out.success(), "{}", out.describe());
}

#[test]
fn corrupt_repository_files_are_reported_not_panicked_on() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "one");
    // A garbage index.
    let index = r.path(".mlv/index");
    let saved = std::fs::read(&index).unwrap();
    std::fs::write(&index, b"garbage").unwrap();
    let out = r.fail(&["status"]);
    assert!(out.stderr.contains("index"), "{}", out.describe());
    std::fs::write(&index, saved).unwrap();
    // A garbage ref.
    std::fs::write(r.path(".mlv/refs/heads/main"), "not an id\n").unwrap();
    r.fail(&["log"]);
    // A garbage config.
    std::fs::write(r.path(".mlv/config"), "[core]\nformat = 99\n").unwrap();
    let out = r.fail(&["status"]);
    assert!(out.stderr.contains("config"), "{}", out.describe());
}

fn pack_files(r: &TestRepo) -> std::collections::BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(r.path(".mlv/objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect()
}

/// Commits a random model, then flips one byte in the middle of the pack holding its tensor
/// data and deletes the work-tree copy. Returns the repo, the commit and the original bytes.
fn repo_with_damaged_tensor_pack() -> (TestRepo, String, Vec<u8>) {
    let r = TestRepo::init();
    let mut rng = st::Rng::new(77);
    let values: Vec<f32> = (0..4096).map(|_| rng.normal(1.0)).collect();
    let bytes = st::serialize(&[T::f32("w", &[4096], &values)], None);
    r.write("model.safetensors", &bytes);
    r.ok(&["add", "model.safetensors"]);
    let data_packs = pack_files(&r);
    assert_eq!(data_packs.len(), 1, "expected one pack after add: {data_packs:?}");
    let c = r.commit("one");
    let pack = data_packs.into_iter().next().unwrap();
    let mut data = std::fs::read(&pack).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x5a;
    std::fs::write(&pack, data).unwrap();
    std::fs::remove_file(r.path("model.safetensors")).unwrap();
    (r, c, bytes)
}

#[test]
fn corrupted_pack_is_detected_on_checkout() {
    let (r, c, bytes) = repo_with_damaged_tensor_pack();
    let out = r.fail(&["checkout", "--force", &c]);
    assert!(out.stderr.contains("corrupt"), "{}", out.describe());
    if r.exists("model.safetensors") {
        assert_eq!(r.read("model.safetensors"), bytes, "a damaged pack produced a wrong file");
    }
    let out = r.fail(&["restore", "model.safetensors"]);
    assert!(out.stderr.contains("corrupt"), "{}", out.describe());
    assert!(!r.exists("model.safetensors"), "no partial file may be left behind");
}

#[test]
fn a_checkout_that_fails_on_a_damaged_object_leaves_the_files_it_would_remove() {
    let (r, c, _) = repo_with_damaged_tensor_pack();
    r.ok(&["switch", "--force", "--orphan", "notes"]);
    r.write("notes/old.txt", "written by hand\n");
    r.add_commit(&["notes"], "notes");
    let out = r.fail(&["checkout", "--force", &c]);
    assert!(out.stderr.contains("corrupt"), "{}", out.describe());
    assert_eq!(r.read("notes/old.txt"), b"written by hand\n", "a failed checkout deleted a file first");
    let status = r.json(&["status", "--json"]);
    let changes = ["staged", "unstaged"].map(|k| status[k].as_array().map_or(0, Vec::len));
    assert_eq!(changes, [0, 0], "the work tree no longer matches HEAD: {status}");
}

#[test]
fn corrupted_pack_error_has_a_repair_hint() {
    let (r, c, _) = repo_with_damaged_tensor_pack();
    let out = r.fail(&["checkout", "--force", &c]);
    assert_hint(&out, "damaged");
}

#[test]
fn checkout_never_deletes_untracked_files_in_a_directory_it_replaces() {
    // c1 tracks a file `x`; c2 removes it; then the user keeps notes in a directory `x/`.
    let r = TestRepo::init();
    r.write("x", "tracked file\n");
    r.write("keep.txt", "keep\n");
    let c1 = r.add_commit(&["."], "x is a file");
    r.ok(&["rm", "x"]);
    r.commit("x removed");
    r.write("x/notes.txt", "precious untracked notes\n");
    let out = r.run(&["checkout", &c1]);
    assert!(r.path("x/notes.txt").is_file(), "checkout deleted the untracked file x/notes.txt:\n{}", out.describe());
    assert_eq!(r.read("x/notes.txt"), b"precious untracked notes\n");
    assert!(!out.success(), "the checkout should have refused:\n{}", out.describe());
}

#[test]
fn checkout_refuses_to_delete_ignored_files_in_a_directory_it_replaces_unless_forced() {
    let r = TestRepo::init();
    r.write("x", "tracked file\n");
    let c1 = r.add_commit(&["x"], "x is a file");
    r.ok(&["rm", "x"]);
    r.write(".mlvignore", "*.log\n");
    r.add_commit(&[".mlvignore"], "x removed");
    r.write("x/train.log", "ignored, but still someone's file\n");
    let out = r.fail(&["checkout", &c1]);
    assert!(out.stderr.contains("x/train.log"), "{}", out.describe());
    assert!(r.path("x/train.log").is_file());
    r.ok(&["checkout", "--force", &c1]);
    assert_eq!(r.read("x"), b"tracked file\n");
}

#[test]
fn output_to_a_closed_pipe_does_not_panic() {
    // `mlv show | head -1`: the reader goes away while mlv is still printing.
    use std::io::Read;
    let r = TestRepo::init();
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    r.write("big.txt", &big);
    r.add_commit(&["big.txt"], "a big text file");
    for args in [&["show"][..], &["diff", "HEAD~0", "HEAD"], &["log"]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mlv"))
            .args(args)
            .current_dir(&r.root)
            .env("MLV_AUTHOR_NAME", "x")
            .env("MLV_AUTHOR_EMAIL", "x@example.com")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        let _ = stdout.read(&mut first);
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && out.status.code() != Some(101),
            "`mlv {}` panicked when its output pipe closed:\n{stderr}",
            args.join(" ")
        );
    }
}
