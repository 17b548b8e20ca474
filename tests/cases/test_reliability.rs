//! What a killed process, a stale lock or a concurrent command leaves behind never needs
//! hand repair.

use std::time::{Duration, Instant};

use crate::common::TestRepo;

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over_at_once_with_a_note() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    std::fs::write(r.root.join(".mlv/index.lock"), "4194000\n").unwrap();
    let start = Instant::now();
    let out = r.run(&["add", "a.txt"]);
    assert!(out.success(), "{}", out.describe());
    assert!(start.elapsed() < Duration::from_secs(5), "waited for a dead process's lock");
    assert!(out.stderr.contains("note: took over") && out.stderr.contains("4194000"), "{}", out.describe());
    assert!(!r.root.join(".mlv/index.lock").exists());
    r.commit("a");
}

#[test]
fn a_commit_killed_at_any_point_leaves_a_repository_the_next_commit_can_use() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "first");
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for trial in 0..8u64 {
        r.write("big.bin", &big[trial as usize..]);
        let mut child = r
            .std_cmd_in(&r.root, ["commit", "-a", "-m", "killed"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2 + 3 * trial));
        child.kill().ok();
        child.wait().unwrap();
        let start = Instant::now();
        r.ok(&["add", "big.bin"]);
        assert!(start.elapsed() < Duration::from_secs(5), "the next command waited for a lock");
        r.ok(&["status"]);
        r.ok(&["log", "-n", "1"]);
    }
    r.write("b.txt", "b\n");
    r.add_commit(&["b.txt"], "after the kills");
    r.clear_worktree();
    r.ok(&["checkout", "-f", "HEAD"]);
    assert_eq!(r.read("big.bin"), &big[7..]);
    assert_eq!(r.read("a.txt"), b"a\n");
}

#[test]
fn deleting_an_unmerged_branch_needs_capital_d_and_says_what_it_pointed_at() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "first");
    r.ok(&["switch", "-c", "dev"]);
    r.write("b.txt", "b\n");
    let dev = r.add_commit(&["b.txt"], "only on dev");
    r.ok(&["switch", "main"]);
    let out = r.fail(&["branch", "-d", "dev"]);
    assert!(out.stderr.contains("not fully merged") && out.stderr.contains("-D dev"), "{}", out.describe());
    assert_eq!(r.rev_id("dev"), dev);
    let out = r.ok(&["branch", "-D", "dev"]);
    assert_eq!(out.trim(), format!("Deleted branch dev (was {})", &dev[..12]));
}

#[test]
fn mlv_refuses_to_track_its_own_directory() {
    let r = TestRepo::init();
    r.write("a.txt", "a\n");
    r.add_commit(&["a.txt"], "first");
    for path in [".mlv", ".mlv/objects", "./.mlv/../.mlv"] {
        let out = r.fail(&["add", path]);
        assert!(out.stderr.contains("refusing to add"), "{}", out.describe());
    }
    r.ok(&["add", "."]);
    r.ok(&["status"]);
    r.ok(&["log"]);
}

#[test]
fn a_truncated_safetensors_file_shows_as_modified_with_the_way_back() {
    let (r, _base, ft) = crate::common::fixtures::family_repo();
    let path = r.path("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let out = r.ok(&["status"]);
    assert!(out.contains("modified:") && out.contains("not valid safetensors"), "{out}");
    assert!(out.contains("mlv checkout HEAD -- model.safetensors"), "{out}");
    let v = r.json(&["status", "--json"]);
    assert!(v["unstaged"][0]["problem"].as_str().is_some_and(|p| p.contains("not valid")), "{v}");
    let out = r.fail(&["commit", "-a", "-m", "broken"]);
    assert!(out.stderr.contains("checkout HEAD --"), "{}", out.describe());
    r.ok(&["checkout", "HEAD", "--", "model.safetensors"]);
    r.assert_worktree_eq(&ft);
}
