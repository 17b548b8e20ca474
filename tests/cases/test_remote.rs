//! Push, fetch, pull and clone between repositories on this machine (the path transport).

use std::path::Path;

use crate::common::fixtures::family_repo;
use crate::common::{TestRepo, assert_clean_failure, assert_dirs_identical, dir_size, temp_files};

/// A bare repository beside `r`, added to it as `origin`, with everything pushed.
fn published(r: &TestRepo) -> std::path::PathBuf {
    let srv = r.beside("srv.mlv");
    r.ok(&["init", "--bare", srv.to_str().unwrap()]);
    r.ok(&["remote", "add", "origin", srv.to_str().unwrap()]);
    r.ok(&["push", "-u", "origin", "main", "--tags"]);
    srv
}

fn clone(r: &TestRepo, from: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let dest = r.beside(name);
    let mut args = vec!["clone", from.to_str().unwrap(), dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    r.ok_at(r.root.parent().unwrap(), &args);
    dest
}

#[test]
fn push_to_a_bare_repository_then_clone_gives_byte_identical_checkouts() {
    let (r, base, ft) = family_repo();
    let srv = published(&r);
    let b = clone(&r, &srv, "b", &[]);
    assert_dirs_identical(&ft, &b, &[".mlv"]);
    r.ok_at(&b, &["checkout", "v1"]);
    assert_dirs_identical(&base, &b, &[".mlv"]);
    let log = r.ok_at(&b, &["log", "--oneline", "main"]);
    assert_eq!(log.lines().count(), 2, "{log}");
    let status = r.ok_at(&b, &["switch", "main"]);
    assert!(status.contains("main"), "{status}");
    assert!(r.ok_at(&b, &["status"]).contains("up to date with 'origin/main'"));
}

#[test]
fn a_shallow_clone_has_the_tip_and_the_bases_it_needs_but_no_history() {
    let (r, _base, ft) = family_repo();
    let srv = published(&r);
    let full = clone(&r, &srv, "full", &[]);
    let shallow = clone(&r, &srv, "shallow", &["--depth", "1"]);
    assert_dirs_identical(&ft, &shallow, &[".mlv"]);
    let log = r.ok_at(&shallow, &["log", "--oneline"]);
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(dir_size(&shallow.join(".mlv")) < dir_size(&full.join(".mlv")));
    // The tip's deltas decode: the missing model is rewritten from the pack and verified.
    std::fs::remove_file(shallow.join("model.safetensors")).unwrap();
    r.ok_at(&shallow, &["checkout", "-f", "HEAD"]);
    assert_dirs_identical(&ft, &shallow, &[".mlv"]);
}

#[test]
fn a_push_sends_only_what_the_remote_lacks_as_stored() {
    let (r, _base, _ft) = family_repo();
    let srv = r.beside("srv.mlv");
    r.ok(&["init", "--bare", srv.to_str().unwrap()]);
    r.ok(&["remote", "add", "origin", srv.to_str().unwrap()]);
    r.ok(&["push", "origin", "main~1:refs/heads/main"]);
    let v = r.json(&["push", "origin", "main", "--json"]);
    let sent = v["stats"]["wire_bytes"].as_u64().unwrap();
    let log = r.json(&["log", "--json", "--stat", "-n", "1"]);
    let stored = log[0]["stored_bytes_added"].as_u64().unwrap();
    assert!(sent as f64 <= stored as f64 * 1.05 + 200.0, "sent {sent} for a commit that stores {stored}");
    let again = r.json(&["push", "origin", "main", "--json"]);
    assert_eq!(again["stats"]["wire_bytes"], 0, "{again}");
}

#[test]
fn fetch_and_pull_bring_new_commits_and_track_the_remote() {
    let (r, _base, _ft) = family_repo();
    let srv = published(&r);
    let b = clone(&r, &srv, "b", &[]);
    r.write("notes.txt", "more training\n");
    r.add_commit(&["notes.txt"], "notes");
    assert!(r.ok(&["status"]).contains("ahead of 'origin/main' by 1 commit"));
    r.ok(&["push"]);
    let out = r.ok_at(&b, &["fetch"]);
    assert!(out.contains("-> origin/main"), "{out}");
    assert!(r.ok_at(&b, &["status"]).contains("behind 'origin/main' by 1 commit"));
    let vv = r.ok_at(&b, &["branch", "-vv"]);
    assert!(vv.contains("[origin/main: behind 1]"), "{vv}");
    r.ok_at(&b, &["log", "-n", "1", "origin/main"]);
    let pulled = r.ok_at(&b, &["pull"]);
    assert!(pulled.contains("Fast-forward"), "{pulled}");
    assert_eq!(std::fs::read(b.join("notes.txt")).unwrap(), b"more training\n");
    assert!(r.ok_at(&b, &["pull"]).contains("Already up to date"));
}

#[test]
fn diverged_branches_are_refused_by_push_and_pull_until_forced() {
    let (r, _base, _ft) = family_repo();
    let srv = published(&r);
    let b = clone(&r, &srv, "b", &[]);
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "a");
    r.ok(&["push"]);
    std::fs::write(b.join("b.txt"), "b\n").unwrap();
    r.ok_at(&b, &["add", "b.txt"]);
    r.ok_at(&b, &["commit", "-m", "b"]);
    let out = r.run_at(&b, &["push"]);
    assert_clean_failure(&out);
    assert!(out.stdout.contains("non-fast-forward"), "{}", out.describe());
    // The lease is what b last fetched: older than the remote now, so it is stale.
    let out = r.run_at(&b, &["push", "--force-with-lease"]);
    assert_clean_failure(&out);
    assert!(out.stdout.contains("stale info"), "{}", out.describe());
    let out = r.run_at(&b, &["pull"]);
    assert_clean_failure(&out);
    assert!(out.stderr.contains("diverged"), "{}", out.describe());
    // After fetching, the lease matches and the force goes through; a later push from r is refused.
    r.ok_at(&b, &["push", "--force-with-lease"]);
    r.write("c.txt", "c\n");
    r.add_commit(&["c.txt"], "c");
    assert_clean_failure(&r.run(&["push"]));
    r.ok_at(&b, &["switch", "main"]);
}

#[test]
fn remote_refs_can_be_deleted_and_pruned_and_remotes_renamed() {
    let (r, _base, _ft) = family_repo();
    let srv = published(&r);
    r.ok(&["branch", "exp"]);
    r.ok(&["push", "origin", "exp"]);
    let b = clone(&r, &srv, "b", &[]);
    assert!(r.ok_at(&b, &["branch", "-r"]).contains("origin/exp"));
    r.ok(&["push", "origin", "--delete", "exp"]);
    r.ok_at(&b, &["fetch", "--prune"]);
    assert!(!r.ok_at(&b, &["branch", "-r"]).contains("origin/exp"));
    r.ok_at(&b, &["remote", "rename", "origin", "upstream"]);
    assert!(r.ok_at(&b, &["branch", "-r"]).contains("upstream/main"));
    assert!(r.ok_at(&b, &["branch", "-vv"]).contains("[upstream/main]"));
    r.ok_at(&b, &["remote", "remove", "upstream"]);
    assert_eq!(r.ok_at(&b, &["remote"]), "");
    assert!(r.ok_at(&b, &["branch", "-r"]).is_empty());
}

#[test]
fn a_push_never_moves_the_checked_out_branch_of_a_work_tree() {
    let (r, _base, _ft) = family_repo();
    let other = TestRepo::init();
    other.write("x.txt", "x\n");
    other.add_commit(&["x.txt"], "x");
    r.ok(&["remote", "add", "other", other.root.to_str().unwrap()]);
    let out = r.run(&["push", "--force", "other", "main"]);
    assert_clean_failure(&out);
    assert!(out.stdout.contains("checked out"), "{}", out.describe());
    r.ok(&["push", "other", "main:refs/heads/from-r"]);
    assert!(other.ok(&["branch"]).contains("from-r"));
}

#[test]
fn a_corrupt_pack_on_the_remote_is_refused_and_nothing_is_kept() {
    let (r, _base, _ft) = family_repo();
    let srv = published(&r);
    let packs = srv.join("objects/pack");
    let biggest = crate::common::largest_pack(&packs);
    let mut bytes = std::fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&biggest, bytes).unwrap();
    let dest = r.beside("b");
    let out = r.run_at(r.root.parent().unwrap(), &["clone", srv.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_clean_failure(&out);
    assert!(out.stderr.contains("corrupt") || out.stderr.contains("checksum"), "{}", out.describe());
    assert!(!dest.exists(), "a failed clone leaves its directory behind");
}

#[test]
fn concurrent_pushes_to_one_branch_have_exactly_one_winner() {
    let (r, _base, _ft) = family_repo();
    let srv = published(&r);
    let clones: Vec<_> = (0..4).map(|i| clone(&r, &srv, &format!("c{i}"), &[])).collect();
    for (i, c) in clones.iter().enumerate() {
        std::fs::write(c.join("who.txt"), format!("clone {i}\n")).unwrap();
        r.ok_at(c, &["add", "who.txt"]);
        r.ok_at(c, &["commit", "-m", &format!("clone {i}")]);
    }
    let children: Vec<_> = clones.iter().map(|c| r.spawn_at(c, &["push"])).collect();
    let codes: Vec<bool> = children.into_iter().map(|c| c.wait_with_output().unwrap().status.success()).collect();
    assert_eq!(codes.iter().filter(|ok| **ok).count(), 1, "{codes:?}");
    let winner = clones[codes.iter().position(|ok| *ok).unwrap()].clone();
    let check = clone(&r, &srv, "check", &[]);
    assert_eq!(std::fs::read(check.join("who.txt")).unwrap(), std::fs::read(winner.join("who.txt")).unwrap());
}

/// Files in a pack directory with the given extension.
fn count(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |d| d.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == ext))).count())
}

#[test]
fn a_push_killed_midway_resumes_without_resending_what_arrived() {
    let (r, _base, ft) = family_repo();
    let mut resumed = 0;
    for trial in 0..6 {
        let srv = r.beside(&format!("srv{trial}"));
        r.ok(&["init", "--bare", srv.to_str().unwrap()]);
        let packs = srv.join("objects/pack");
        let mut child = r
            .std_cmd_in(&r.root, ["push", srv.to_str().unwrap(), "main"])
            .env("MLV_TRANSFER_UNIT", "4000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while count(&packs, "idx") == 0 && start.elapsed().as_secs() < 20 && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        child.kill().ok();
        child.wait().unwrap();
        let out = r
            .cmd(&["push", srv.to_str().unwrap(), "main", "--json"])
            .env("MLV_TRANSFER_UNIT", "4000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["stats"]["packs_skipped"].as_u64().unwrap_or(0) > 0 {
            resumed += 1;
        }
        let b = clone(&r, &srv, &format!("b{trial}"), &[]);
        assert_dirs_identical(&ft, &b, &[".mlv"]);
    }
    assert!(resumed > 0, "no trial resumed a push that had delivered packs");
}

#[test]
fn a_fetch_killed_midway_completes_on_the_next_fetch() {
    let (r, _base, ft) = family_repo();
    let srv = r.beside("srv");
    r.ok(&["init", "--bare", srv.to_str().unwrap()]);
    r.ok(&["push", srv.to_str().unwrap(), "main", "--tags"]);
    for trial in 0..4 {
        let b = r.beside(&format!("b{trial}"));
        r.ok(&["init", b.to_str().unwrap()]);
        r.ok_at(&b, &["remote", "add", "origin", srv.to_str().unwrap()]);
        let mut child = r
            .std_cmd_in(&b, ["fetch"])
            .env("MLV_TRANSFER_UNIT", "4000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 + 10 * trial));
        child.kill().ok();
        child.wait().unwrap();
        r.ok_at(&b, &["fetch"]);
        r.ok_at(&b, &["switch", "--force-create", "main", "origin/main"]);
        assert_dirs_identical(&ft, &b, &[".mlv"]);
    }
}

#[test]
fn ctrl_c_stops_a_push_cleanly_and_the_next_push_completes() {
    let (r, _base, ft) = family_repo();
    let mut interrupted = 0;
    for trial in 0..4 {
        let srv = r.beside(&format!("srv{trial}"));
        r.ok(&["init", "--bare", srv.to_str().unwrap()]);
        let child = r
            .std_cmd_in(&r.root, ["push", srv.to_str().unwrap(), "main"])
            .env("MLV_TRANSFER_UNIT", "4000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while count(&srv.join("objects/pack"), "idx") == 0 && start.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.code() == Some(130) {
            interrupted += 1;
            assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
        } else {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(temp_files(&srv), Vec::<String>::new());
        assert_eq!(temp_files(&r.root.join(".mlv")), Vec::<String>::new());
        r.ok(&["push", srv.to_str().unwrap(), "main"]);
        let b = clone(&r, &srv, &format!("b{trial}"), &[]);
        assert_dirs_identical(&ft, &b, &[".mlv"]);
    }
    assert!(interrupted > 0, "no push was still running when interrupted");
}
