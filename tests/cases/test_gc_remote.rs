//! `mlv gc --remote`: two-phase gc of a shared repository over a path, HTTP and S3. Packs are
//! marked first and deleted by a later run; a ref moved meanwhile to objects that live only
//! in marked packs (a push that began before the marking) keeps them.

use std::path::Path;

use mlv::ObjectId;
use mlv::config::RemoteConfig;
use mlv::transport::{Location, Remote};

use crate::common::serve::{Server, http};
use crate::common::st;
use crate::common::{Out, TestRepo, seaweed};

/// Where the remote is and what reaching it needs.
struct Target {
    url: String,
    env: Vec<(String, String)>,
}

impl Target {
    fn run(&self, r: &TestRepo, dir: &Path, args: &[&str]) -> Out {
        let mut c = r.cmd_in(dir, args);
        for k in seaweed::FOREIGN_VARS {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        TestRepo::exec(&mut c, format!("mlv {}", args.join(" ")))
    }

    fn ok(&self, r: &TestRepo, dir: &Path, args: &[&str]) -> String {
        let out = self.run(r, dir, args);
        assert!(out.success(), "command failed:\n{}", out.describe());
        out.stdout
    }

    fn gc(&self, r: &TestRepo, prune: &str) -> serde_json::Value {
        let out = self.ok(r, &r.root, &["gc", "--remote", "origin", &format!("--prune={prune}"), "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("gc --json: {e}: {out}"))
    }

    fn open(&self) -> Remote {
        match Location::parse(&self.url) {
            Ok(Location::S3 { bucket, prefix }) => mlv::transport::s3::open_with_env(
                &self.url,
                &bucket,
                &prefix,
                &RemoteConfig::default(),
                self.env.clone(),
            )
            .unwrap(),
            _ => Remote::open(&self.url, &RemoteConfig::default()).unwrap(),
        }
    }
}

/// Commits a fine-tune step of `w` as model.safetensors; returns the commit and its bytes.
fn step(r: &TestRepo, w: &mut Vec<st::Weights>, seed: u64) -> (String, Vec<u8>) {
    *w = st::fine_tune(w, seed, 0.2);
    let tensors: Vec<_> = w.iter().map(st::Weights::to_bf16).collect();
    st::write(&r.path("model.safetensors"), &tensors, None);
    (r.add_commit(&["model.safetensors"], &format!("step {seed}")), r.read("model.safetensors"))
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Clones the remote and checks each (branch, bytes) out byte-exactly; fsck passes there too.
fn check_clone(t: &Target, r: &TestRepo, name: &str, want: &[(&str, &[u8])]) {
    let dir = r.scratch(name);
    t.ok(r, &r.home, &["clone", &t.url, dir.to_str().unwrap()]);
    for (branch, bytes) in want {
        t.ok(r, &dir, &["checkout", "-f", &format!("origin/{branch}")]);
        assert_eq!(&std::fs::read(dir.join("model.safetensors")).unwrap(), bytes, "{branch} in {name}");
    }
    t.ok(r, &dir, &["fsck"]);
}

fn two_phase_gc(t: &Target) {
    let r = TestRepo::init();
    t.ok(&r, &r.root, &["remote", "add", "origin", &t.url]);
    let mut w = st::base_model(3, 64, 2, 128);
    let (_, main1) = step(&r, &mut w, 1);
    t.ok(&r, &r.root, &["push", "origin", "main"]);
    let (_, main2) = step(&r, &mut w, 2);
    t.ok(&r, &r.root, &["push", "origin", "main"]);
    r.ok(&["switch", "-c", "tmp"]);
    let (tmp_id, tmp_bytes) = step(&r, &mut w, 3);
    t.ok(&r, &r.root, &["push", "origin", "tmp"]);
    t.ok(&r, &r.root, &["push", "origin", "--delete", "tmp"]);
    r.ok(&["switch", "main"]);
    let _ = main1;

    // Run 1 copies what main reaches and only marks the three pushed packs.
    let v = t.gc(&r, "now");
    assert_eq!((n(&v, "packs_before"), n(&v, "packs_written")), (3, 1), "{v}");
    assert_eq!((n(&v, "packs_marked"), n(&v, "packs_deleted"), n(&v, "packs_after")), (3, 0, 1), "{v}");
    // A push that read the refs before the marking moves a ref to a commit whose objects now
    // live only in marked packs: the receiving side finds them, as it must.
    let tmp: ObjectId = tmp_id.parse().unwrap();
    t.open().refs.update("refs/heads/late", tmp, None).unwrap();
    check_clone(t, &r, "clone-1", &[("main", &main2), ("late", &tmp_bytes)]);

    // Run 2 copies those objects out before it deletes the marked packs; here the copy is
    // the very pack `tmp` was pushed in, which is then kept rather than deleted.
    let v = t.gc(&r, "now");
    assert!(n(&v, "objects_rescued") > 0, "{v}");
    assert_eq!((n(&v, "packs_deleted"), n(&v, "packs_spared"), n(&v, "packs_waiting")), (2, 1, 0), "{v}");
    t.ok(&r, &r.root, &["fsck", "--remote", "origin"]);
    check_clone(t, &r, "clone-2", &[("main", &main2), ("late", &tmp_bytes)]);

    // The two small packs left become one; a default grace keeps marked packs for now.
    let v = t.gc(&r, "14");
    assert_eq!((n(&v, "packs_before"), n(&v, "packs_after"), n(&v, "packs_marked")), (2, 1, 2), "{v}");
    let v = t.gc(&r, "14");
    assert_eq!((n(&v, "packs_deleted"), n(&v, "packs_waiting"), n(&v, "packs_written")), (0, 2, 0), "{v}");
    let v = t.gc(&r, "now");
    assert_eq!((n(&v, "packs_deleted"), n(&v, "packs_after"), n(&v, "packs_marked")), (2, 1, 0), "{v}");
    t.ok(&r, &r.root, &["fsck", "--remote", "origin"]);
    check_clone(t, &r, "clone-3", &[("main", &main2), ("late", &tmp_bytes)]);
    let text = t.ok(&r, &r.root, &["gc", "--remote", "origin"]);
    assert!(text.contains("packs 1 -> 1") && text.contains("0 packs marked for deletion"), "{text}");
}

/// Sets the flag when dropped, also when a panic unwinds past it.
struct SetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Pushes one commit after another while gc runs again and again with a short grace period
/// (far longer than a push, even on a loaded machine: the two-phase guarantee needs pushes
/// to finish within it): every push succeeds, and afterwards the remote passes fsck and
/// every pushed commit checks out byte-exactly from a clone.
fn gc_while_pushing(t: &Target) {
    const GRACE_DAYS: &str = "0.0001"; // 8.6 s
    const PUSHING: std::time::Duration = std::time::Duration::from_secs(20);
    let r = TestRepo::init();
    t.ok(&r, &r.root, &["remote", "add", "origin", &t.url]);
    let mut w = st::base_model(5, 32, 2, 64);
    step(&r, &mut w, 0);
    t.ok(&r, &r.root, &["push", "origin", "main"]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut pushed = Vec::new();
    let runs = std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            let mut runs = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let out = t.run(&r, &r.home, &["gc", "--remote", &t.url, &format!("--prune={GRACE_DAYS}"), "--json"]);
                assert!(out.success(), "gc failed while pushes ran:\n{}", out.describe());
                runs.push(serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap());
            }
            runs
        });
        // A failing push must stop the gc loop too, or the scope would wait for it forever.
        let _stop = SetOnDrop(&done);
        let started = std::time::Instant::now();
        for k in 1.. {
            if started.elapsed() > PUSHING && k > 5 {
                break;
            }
            pushed.push(step(&r, &mut w, k));
            // Every other push rewrites the branch, leaving the previous commit unreachable.
            if k % 2 == 0 {
                t.ok(&r, &r.root, &["push", "--force", "origin", "main"]);
            } else {
                t.ok(&r, &r.root, &["push", "origin", "main"]);
            }
            if k % 4 == 3 {
                t.ok(&r, &r.root, &["tag", &format!("t{k}")]);
                t.ok(&r, &r.root, &["push", "origin", &format!("t{k}")]);
            }
        }
        drop(_stop);
        gc.join().unwrap()
    });
    let deleted: u64 = runs.iter().map(|v| n(v, "packs_deleted")).sum();
    assert!(deleted > 0, "no run deleted anything: {runs:?}");
    t.ok(&r, &r.root, &["fsck", "--remote", "origin"]);
    let dir = r.scratch("after");
    t.ok(&r, &r.home, &["clone", &t.url, dir.to_str().unwrap()]);
    let (last, bytes) = pushed.last().unwrap();
    let log: serde_json::Value = serde_json::from_str(&t.ok(&r, &dir, &["log", "-n", "1", "--json"])).unwrap();
    assert_eq!(log[0]["id"].as_str(), Some(last.as_str()));
    assert_eq!(&std::fs::read(dir.join("model.safetensors")).unwrap(), bytes);
    for (k, (id, bytes)) in pushed.iter().enumerate() {
        if (k + 1) % 4 == 3 {
            t.ok(&r, &dir, &["checkout", "-f", id]);
            assert_eq!(&std::fs::read(dir.join("model.safetensors")).unwrap(), bytes, "tag t{}", k + 1);
        }
    }
}

/// A new bare repository as a path remote.
fn bare_repo(r: &TestRepo) -> Target {
    let dir = r.scratch("shared");
    r.ok_at(&r.home, &["init", "--bare", dir.to_str().unwrap()]);
    Target { url: dir.display().to_string(), env: Vec::new() }
}

#[test]
fn a_path_remote_is_collected_in_two_phases() {
    two_phase_gc(&bare_repo(&TestRepo::uninit()));
}

#[test]
fn a_served_remote_is_collected_in_two_phases_and_deletes_only_marked_packs() {
    let r = TestRepo::uninit();
    let dir = r.scratch("served");
    r.ok_at(&r.home, &["init", "--bare", dir.to_str().unwrap()]);
    let server = Server::start(&r, &dir, &[]);
    two_phase_gc(&Target { url: server.url(""), env: Vec::new() });

    // A pack nobody marked cannot be deleted over HTTP.
    let packs = http(&server.addr, "GET", "/mlv/v1/packs", &[], b"");
    let v: serde_json::Value = serde_json::from_str(&packs.1).unwrap();
    let name = v["packs"][0]["name"].as_str().unwrap().to_string();
    let (status, body) = http(&server.addr, "DELETE", &format!("/mlv/v1/packs/{name}.pack"), &[], b"");
    assert_eq!(status, 409, "{body}");
    let (status, body) = http(&server.addr, "PUT", &format!("/mlv/v1/packs/{name}.doomed"), &[], b"{\"when\":1}");
    assert_eq!(status, 400, "{body}");
    assert_eq!(http(&server.addr, "GET", "/mlv/v1/doomed", &[], b"").1, "{\"doomed\":[]}");
}

#[test]
fn an_s3_remote_is_collected_in_two_phases() {
    let Some(s3) = seaweed::repo("gc-remote") else { return };
    two_phase_gc(&Target { url: s3.url.clone(), env: s3.env.clone() });
}

#[test]
fn pushes_to_a_path_remote_never_fail_or_lose_objects_while_gc_runs() {
    gc_while_pushing(&bare_repo(&TestRepo::uninit()));
}

#[test]
fn pushes_to_s3_never_fail_or_lose_objects_while_gc_runs() {
    let Some(s3) = seaweed::repo("gc-pushing") else { return };
    gc_while_pushing(&Target { url: s3.url.clone(), env: s3.env.clone() });
}

#[test]
fn a_remote_with_a_work_tree_is_not_collected_from_elsewhere() {
    let r = TestRepo::init();
    r.write("notes.txt", "staged, never committed\n");
    r.ok(&["add", "notes.txt"]);
    let other = TestRepo::uninit();
    let out = other.run_at(&other.home, &["gc", "--remote", r.root.to_str().unwrap(), "--prune=now"]);
    assert!(!out.success() && out.stderr.contains("has a work tree"), "{}", out.describe());
    let server = Server::start(&other, &r.root, &[]);
    let out = other.run_at(&other.home, &["gc", "--remote", &server.url(""), "--prune=now"]);
    assert!(!out.success() && out.stderr.contains("has a work tree"), "{}", out.describe());
    r.ok(&["commit", "-m", "the staged file is still there"]);
    assert_eq!(r.read("notes.txt"), b"staged, never committed\n");
}
