//! SIGKILL at random moments of commands that write (`gc --remote` included, whose remote must
//! pass `fsck` too): afterwards `fsck` passes, every commit
//! that finished is intact, and the next command works at once. CI runs a few kills per
//! command; `cargo test --release -- --ignored kill` runs fifty each.

use std::time::{Duration, Instant};

use crate::common::TestRepo;
use crate::common::st::{self, Rng};

/// A repository with two BF16 fine-tune commits of a small model; returns their files.
fn two_commits(r: &TestRepo) -> Vec<(String, Vec<u8>)> {
    let mut w = st::base_model(11, 96, 3, 256);
    let mut out = Vec::new();
    for k in 0..2 {
        w = st::fine_tune(&w, 50 + k, 0.3);
        let t: Vec<_> = w.iter().map(st::Weights::to_bf16).collect();
        st::write(&r.path("model.safetensors"), &t, None);
        let id = r.add_commit(&["model.safetensors"], &format!("ft {k}"));
        out.push((id, r.read("model.safetensors")));
    }
    out
}

/// Runs `args` in `dir`, kills it after a random delay below `max_ms`, and checks that the
/// repository is sound and usable at once.
fn kill_once(r: &TestRepo, dir: &std::path::Path, args: &[&str], rng: &mut Rng, max_ms: u64) {
    let mut child = r
        .std_cmd_in(dir, args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mlv");
    std::thread::sleep(Duration::from_micros(rng.next_u64() % (max_ms * 1000 + 1)));
    child.kill().ok();
    child.wait().unwrap();
    let start = Instant::now();
    let fsck = r.run_at(dir, &["fsck"]);
    assert!(fsck.success(), "fsck after killing `mlv {}`:\n{}", args.join(" "), fsck.describe());
    assert!(start.elapsed() < Duration::from_secs(30));
}

fn kills(n: usize) {
    let r = TestRepo::init();
    let commits = two_commits(&r);
    let srv = r.beside("srv");
    r.ok(&["init", "--bare", srv.to_str().unwrap()]);
    let mut rng = Rng::new(2026);
    let mut w = st::base_model(12, 96, 3, 256);
    for k in 0..n {
        // commit -a of a new fine-tune
        w = st::fine_tune(&w, 900 + k as u64, 0.3);
        let t: Vec<_> = w.iter().map(st::Weights::to_bf16).collect();
        st::write(&r.path("model.safetensors"), &t, None);
        kill_once(&r, &r.root, &["commit", "-a", "-m", "killed"], &mut rng, 60);
        r.ok(&["status"]);
        // checkout between the two first commits
        let target = &commits[k % 2].0;
        kill_once(&r, &r.root, &["checkout", "-f", target], &mut rng, 40);
        r.ok(&["checkout", "-f", target]);
        assert_eq!(r.read("model.safetensors"), commits[k % 2].1);
        // push, then gc
        kill_once(&r, &r.root, &["push", "--force", srv.to_str().unwrap(), "HEAD:refs/heads/main"], &mut rng, 60);
        kill_once(&r, &r.root, &["gc", "--prune=now"], &mut rng, 40);
        // two-phase gc of the remote: whatever run is cut off, the remote stays sound
        kill_once(&r, &r.root, &["gc", "--remote", srv.to_str().unwrap(), "--prune=now"], &mut rng, 60);
        r.ok_at(&srv, &["fsck"]);
        r.ok(&["switch", "-f", "main"]);
    }
    r.ok(&["push", "--force", srv.to_str().unwrap(), "main"]);
    for _ in 0..2 {
        r.ok(&["gc", "--remote", srv.to_str().unwrap(), "--prune=now"]);
    }
    r.ok_at(&srv, &["fsck"]);
    let main = r.rev_id("main");
    let clone = r.beside("clone");
    r.ok_at(&r.home, &["clone", srv.to_str().unwrap(), clone.to_str().unwrap()]);
    r.ok_at(&clone, &["checkout", "-f", &main]);
    for (id, bytes) in &commits {
        r.ok(&["checkout", "-f", id]);
        assert_eq!(&r.read("model.safetensors"), bytes, "commit {id}");
    }
}

#[test]
fn killing_commit_checkout_push_and_gc_never_damages_the_repository() {
    kills(3);
}

#[test]
#[ignore = "heavy: fifty kills per command; run with --ignored"]
fn fifty_kills_per_command() {
    kills(50);
}
