//! Push, fetch and clone through `mlv serve` on a loopback port: the built binary serves a
//! temporary directory, and the tests drive it with `mlv` commands and raw HTTP requests.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::serve::{Server, http};
use super::common::{
    Out, TestRepo, assert_clean_failure, assert_dirs_identical, fixtures, snapshot, snapshot_excluding,
};

/// Runs `mlv ARGS` in `dir` with `token` (or none) in MLV_TOKEN.
fn mlv(r: &TestRepo, dir: &Path, token: Option<&str>, args: &[&str]) -> Out {
    let mut c = r.cmd_in(dir, args);
    c.env_remove("MLV_TOKEN");
    if let Some(t) = token {
        c.env("MLV_TOKEN", t);
    }
    TestRepo::exec(&mut c, format!("(in {}) mlv {}", dir.display(), args.join(" ")))
}

fn mlv_ok(r: &TestRepo, dir: &Path, token: Option<&str>, args: &[&str]) -> String {
    let out = mlv(r, dir, token, args);
    assert!(out.success(), "command failed:\n{}", out.describe());
    out.stdout
}

fn mlv_fail(r: &TestRepo, dir: &Path, token: Option<&str>, args: &[&str]) -> Out {
    let out = mlv(r, dir, token, args);
    assert_clean_failure(&out);
    out
}

/// The pack and index files in a repository directory (`.mlv` or bare), with temporary ones.
fn pack_files(repo_dir: &Path) -> Vec<String> {
    let dir = repo_dir.join("objects/pack");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The commit a ref names in the repository at `dir`.
fn rev(r: &TestRepo, dir: &Path, rev: &str) -> String {
    let out = mlv_ok(r, dir, None, &["log", "--json", "-n", "1", rev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn push_clone_and_pull_through_a_directory_of_repositories() {
    let (r, _base, ft) = fixtures::family_repo();
    let srv = r.scratch("srv");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    let url = server.url("models");
    r.ok(&["remote", "add", "origin", &url]);
    r.ok(&["push", "-u", "origin", "main"]);
    r.ok(&["push", "origin", "--tags"]);
    assert!(srv.join("models/HEAD").is_file(), "the push created a bare repository");
    assert!(server.log().contains("models: created"), "{}", server.log());

    let clone = r.scratch("clone");
    mlv_ok(&r, &r.root, None, &["clone", &url, clone.to_str().unwrap()]);
    assert_dirs_identical(&ft, &clone, &[".mlv"]);
    let tags = mlv_ok(&r, &clone, None, &["tag"]);
    assert!(tags.contains("v1") && tags.contains("v2"), "{tags}");

    let shallow = r.scratch("shallow");
    mlv_ok(&r, &r.root, None, &["clone", "--depth", "1", &url, shallow.to_str().unwrap()]);
    assert_dirs_identical(&ft, &shallow, &[".mlv"]);
    assert!(shallow.join(".mlv/shallow").is_file());

    // A new commit travels to the clone with pull.
    r.write("config.json", fixtures::FT_CONFIG.replace("\"num_labels\": 3", "\"num_labels\": 4"));
    r.ok(&["commit", "-a", "-m", "four labels"]);
    r.ok(&["push"]);
    mlv_ok(&r, &clone, None, &["pull"]);
    assert_eq!(std::fs::read(clone.join("config.json")).unwrap(), r.read("config.json"));
    assert_eq!(rev(&r, &clone, "main"), r.rev_id("main"));
    let fetched = mlv_ok(&r, &shallow, None, &["fetch"]);
    assert!(fetched.contains("origin/main"), "{fetched}");
    assert_eq!(rev(&r, &shallow, "origin/main"), r.rev_id("main"));
}

#[test]
fn one_repository_is_served_at_the_root_and_its_checked_out_branch_is_kept() {
    let (r, _base, ft) = fixtures::family_repo();
    // A bare repository.
    let bare = r.scratch("bare.mlv");
    r.ok(&["init", "--bare", bare.to_str().unwrap()]);
    let server = Server::start(&r, &bare, &[]);
    r.ok(&["push", &server.url(""), "main"]);
    let clone = r.scratch("clone");
    mlv_ok(&r, &r.root, None, &["clone", &server.url(""), clone.to_str().unwrap()]);
    assert_dirs_identical(&ft, &clone, &[".mlv"]);
    let (status, _) = http(&server.addr, "GET", "/bare.mlv/mlv/v1/info", &[], b"");
    assert_eq!(status, 404, "a single repository has no name in its URLs");

    // A work tree: its checked-out branch does not move under it; other branches do.
    let work = Server::start(&r, &r.root, &[]);
    let other = r.scratch("other");
    mlv_ok(&r, &r.root, None, &["clone", &work.url(""), other.to_str().unwrap()]);
    std::fs::write(other.join("notes.txt"), "more training\n").unwrap();
    mlv_ok(&r, &other, None, &["add", "notes.txt"]);
    mlv_ok(&r, &other, None, &["commit", "-m", "notes"]);
    let refused = mlv_fail(&r, &other, None, &["push", "origin", "main"]);
    assert!(refused.stdout.contains("checked out") || refused.stderr.contains("checked out"), "{}", refused.describe());
    mlv_ok(&r, &other, None, &["push", "origin", "main:refs/heads/feature"]);
    assert_eq!(r.rev_id("feature"), rev(&r, &other, "main"));
    assert!(!r.exists("notes.txt"), "the served work tree was not touched");
}

const TOKENS: &str = r#"
[[token]]
token = "rw-token-1"
access = "read-write"
repos = ["*"]

[[token]]
token = "ro-token-2"
access = "read"
repos = ["models"]
"#;

#[test]
fn tokens_decide_who_reads_and_who_writes() {
    let (r, _base, ft) = fixtures::family_repo();
    let srv = r.scratch("srv");
    let tokens = r.scratch("conf").join("tokens.toml");
    std::fs::write(&tokens, TOKENS).unwrap();
    let server = Server::start(&r, &srv, &["--allow-create", "--tokens-file", tokens.to_str().unwrap()]);
    let url = server.url("models");

    for token in [None, Some("wrong-token")] {
        let out = mlv_fail(&r, &r.root, token, &["push", &url, "main"]);
        assert!(out.stderr.contains("MLV_TOKEN"), "{}", out.describe());
        assert!(out.stderr.contains("401"), "{}", out.describe());
        assert!(std::fs::read_dir(&srv).unwrap().next().is_none(), "a refused push created something");
    }
    // Read-only tokens cannot create either.
    mlv_fail(&r, &r.root, Some("ro-token-2"), &["push", &url, "main"]);
    assert!(std::fs::read_dir(&srv).unwrap().next().is_none());

    mlv_ok(&r, &r.root, Some("rw-token-1"), &["push", &url, "main"]);
    let before = snapshot(&srv);

    let clone = r.scratch("clone");
    mlv_ok(&r, &r.root, Some("ro-token-2"), &["clone", &url, clone.to_str().unwrap()]);
    assert_dirs_identical(&ft, &clone, &[".mlv"]);

    std::fs::write(clone.join("notes.txt"), "read-only\n").unwrap();
    mlv_ok(&r, &clone, None, &["add", "notes.txt"]);
    mlv_ok(&r, &clone, None, &["commit", "-m", "notes"]);
    let out = mlv_fail(&r, &clone, Some("ro-token-2"), &["push"]);
    assert!(out.stderr.contains("403") && out.stderr.contains("may only read"), "{}", out.describe());
    assert!(!out.stderr.contains("ro-token-2") && !server.log().contains("token-"), "a token was printed");
    assert_eq!(snapshot(&srv), before, "a refused push changed the server");

    let (status, _) = http(&server.addr, "GET", "/models/mlv/v1/refs", &[], b"");
    assert_eq!(status, 401);
    let (status, _) = http(&server.addr, "GET", "/other/mlv/v1/refs", &[("Authorization", "Bearer ro-token-2")], b"");
    assert_eq!(status, 403, "the read token covers only `models`");
    let (status, body) =
        http(&server.addr, "GET", "/models/mlv/v1/refs", &[("Authorization", "Bearer ro-token-2")], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&r.rev_id("main")), "{body}");

    // gc of the remote writes too: a read token may neither mark nor delete packs.
    mlv_ok(&r, &clone, Some("rw-token-1"), &["push"]);
    let before = snapshot(&srv);
    let out = mlv_fail(&r, &r.root, Some("ro-token-2"), &["gc", "--remote", &url, "--prune=now"]);
    assert!(out.stderr.contains("403"), "{}", out.describe());
    let ro = [("Authorization", "Bearer ro-token-2")];
    let (_, body) = http(&server.addr, "GET", "/models/mlv/v1/packs", &ro, b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pack = v["packs"][0]["name"].as_str().unwrap().to_string();
    for (method, file, body) in
        [("PUT", "doomed", &b"{\"marked\":1}"[..]), ("DELETE", "pack", b""), ("DELETE", "doomed", b"")]
    {
        let (status, _) = http(&server.addr, method, &format!("/models/mlv/v1/packs/{pack}.{file}"), &ro, body);
        assert_eq!(status, 403, "{method} {file}");
    }
    assert_eq!(snapshot(&srv), before, "a refused gc changed the server");
    mlv_ok(&r, &r.root, Some("rw-token-1"), &["gc", "--remote", &url, "--prune=now"]);
}

#[test]
fn concurrent_pushes_to_one_branch_let_exactly_one_win() {
    let (r, _base, _ft) = fixtures::family_repo();
    let srv = r.scratch("srv");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    let url = server.url("models");
    r.ok(&["push", &url, "main"]);
    let (a, b) = (r.scratch("a"), r.scratch("b"));
    for (dir, file) in [(&a, "a.txt"), (&b, "b.txt")] {
        mlv_ok(&r, &r.root, None, &["clone", &url, dir.to_str().unwrap()]);
        std::fs::write(dir.join(file), format!("{file}\n")).unwrap();
        mlv_ok(&r, dir, None, &["add", file]);
        mlv_ok(&r, dir, None, &["commit", "-m", file]);
    }
    let (out_a, out_b) = std::thread::scope(|s| {
        let pa = s.spawn(|| mlv(&r, &a, None, &["push"]));
        let pb = s.spawn(|| mlv(&r, &b, None, &["push"]));
        (pa.join().unwrap(), pb.join().unwrap())
    });
    assert!(out_a.success() != out_b.success(), "exactly one push wins:\n{}\n{}", out_a.describe(), out_b.describe());
    let (winner, loser) = if out_a.success() { (&a, &out_b) } else { (&b, &out_a) };
    assert_clean_failure(loser);
    assert!(loser.stdout.contains("rejected"), "{}", loser.describe());

    let (status, body) = http(&server.addr, "GET", "/models/mlv/v1/refs", &[], b"");
    assert_eq!(status, 200);
    assert!(body.contains(&rev(&r, winner, "main")), "main is the winner's commit: {body}");
    let fresh = r.scratch("fresh");
    mlv_ok(&r, &r.root, None, &["clone", &url, fresh.to_str().unwrap()]);
    assert_eq!(snapshot_excluding(&fresh, &[".mlv"]), snapshot_excluding(winner, &[".mlv"]));
}

#[test]
fn urls_cannot_reach_outside_the_served_directory() {
    let (r, _base, _ft) = fixtures::family_repo();
    let top = r.scratch("top");
    let srv = top.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let outside = top.join("outside");
    r.ok(&["init", "--bare", outside.to_str().unwrap()]);
    r.ok(&["push", outside.to_str().unwrap(), "main"]);
    let secret = r.rev_id("main");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    let before = snapshot(&top);
    for path in [
        "/../outside/mlv/v1/refs",
        "/%2e%2e/outside/mlv/v1/refs",
        "/%2e%2e%2foutside/mlv/v1/refs",
        "/..%2Foutside/mlv/v1/refs",
        "/%2E%2E/mlv/v1/refs",
        "/srv/../outside/mlv/v1/refs",
        "/outside%00/mlv/v1/refs",
        "/.hidden/mlv/v1/refs",
    ] {
        let (status, body) = http(&server.addr, "GET", path, &[], b"");
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        assert!(!body.contains(&secret), "{path} leaked {body}");
        let (status, body) = http(&server.addr, "PUT", &path.replace("refs", "packs/x.pack"), &[], b"junk");
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
    }
    let (status, _) = http(&server.addr, "GET", "/outside/mlv/v1/packs/..%2f..%2fconfig", &[], b"");
    assert!(status == 400 || status == 404);
    assert_eq!(snapshot(&top), before, "nothing was created or changed");
    let out = mlv_fail(&r, &r.root, None, &["clone", &server.url("%2e%2e"), r.scratch("c").to_str().unwrap()]);
    assert!(!out.stderr.contains(&secret));
}

/// A TCP proxy in front of a server that forwards `limit` bytes of requests, then holds
/// everything, as a transfer whose server hangs; [`Proxy::cut`] then drops every connection.
struct Proxy {
    addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str, limit: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            forwarded: Arc::new(AtomicU64::new(0)),
            cut: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let (forwarded, cut, conns, upstream) =
            (proxy.forwarded.clone(), proxy.cut.clone(), proxy.conns.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let server = match TcpStream::connect(&upstream) {
                    Ok(s) if !cut.load(Ordering::SeqCst) => s,
                    _ => continue,
                };
                conns.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (forwarded, cut) = (forwarded.clone(), cut.clone());
                std::thread::spawn(move || pipe(client, server, Some((limit, forwarded, cut))));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        proxy
    }

    /// Waits until the limit is reached (or `deadline` passes).
    fn wait_for_limit(&self, limit: u64, deadline: Duration) -> bool {
        let start = Instant::now();
        while self.forwarded.load(Ordering::SeqCst) < limit {
            if start.elapsed() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to`; with a limit, stops forwarding (but keeps the connection) once
/// `limit` bytes went through in all.
fn pipe(mut from: TcpStream, mut to: TcpStream, limit: Option<(u64, Arc<AtomicU64>, Arc<AtomicBool>)>) {
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n as u64;
        if let Some((limit, forwarded, cut)) = &limit {
            let before = forwarded.fetch_add(n, Ordering::SeqCst);
            if before + n > *limit {
                n = limit.saturating_sub(before);
                let _ = to.write_all(&buf[..n as usize]);
                while !cut.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                break;
            }
        }
        if to.write_all(&buf[..n as usize]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn pack_bytes(repo_dir: &Path) -> u64 {
    let dir = repo_dir.join("objects/pack");
    std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn a_push_cut_off_by_a_dying_server_fails_cleanly_and_resumes() {
    let (r, _base, ft) = fixtures::family_repo();
    let srv = r.scratch("srv");
    let mut server = Server::start(&r, &srv, &["--allow-create"]);
    let limit = pack_bytes(&r.root.join(".mlv")) / 2;
    let proxy = Proxy::start(&server.addr, limit);
    let url = format!("http://{}/models", proxy.addr);
    let out = std::thread::scope(|s| {
        let push = s.spawn(|| {
            let mut c = r.cmd(&["push", &url, "main"]);
            c.env("MLV_TRANSFER_UNIT", "16384");
            TestRepo::exec(&mut c, "mlv push (through the proxy)".into())
        });
        assert!(proxy.wait_for_limit(limit, Duration::from_secs(60)), "the push never got half way");
        server.kill();
        proxy.cut();
        push.join().unwrap()
    });
    assert_clean_failure(&out);
    assert!(out.stderr.contains("/models"), "the error names the remote:\n{}", out.describe());
    let arrived = pack_files(&srv.join("models")).iter().filter(|f| f.ends_with(".idx")).count();
    assert!(arrived > 0, "some units arrived before the server died");

    let server = Server::start(&r, &srv, &["--allow-create"]);
    let mut c = r.cmd(&["push", "--json", &server.url("models"), "main"]);
    c.env("MLV_TRANSFER_UNIT", "16384");
    let out = TestRepo::exec(&mut c, "mlv push --json (again)".into());
    assert!(out.success(), "{}", out.describe());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(report["stats"]["packs_skipped"].as_u64().unwrap() > 0, "units that arrived are not sent again: {report}");
    let clone = r.scratch("clone");
    mlv_ok(&r, &r.root, None, &["clone", &server.url("models"), clone.to_str().unwrap()]);
    assert_dirs_identical(&ft, &clone, &[".mlv"]);
}

#[test]
fn a_stalled_server_ends_in_an_error_not_a_hang() {
    let r = TestRepo::init();
    let srv = r.scratch("srv");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    let proxy = Proxy::start(&server.addr, 0);
    let started = Instant::now();
    let mut c = r.cmd(&["clone", &format!("http://{}/models", proxy.addr), r.scratch("c").to_str().unwrap()]);
    c.env("MLV_HTTP_TIMEOUT", "1");
    let out = TestRepo::exec(&mut c, "mlv clone (through a stalled proxy)".into());
    proxy.cut();
    assert_clean_failure(&out);
    assert!(out.stderr.contains("stalled"), "{}", out.describe());
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn damaged_packs_are_refused_and_nothing_is_kept() {
    let (r, _base, _ft) = fixtures::family_repo();
    let srv = r.scratch("srv");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    let (status, body) = http(&server.addr, "PUT", "/fresh/mlv/v1/refs", &[], b"");
    assert_eq!(status, 405, "{body}");
    let packs = r.root.join(".mlv/objects/pack");
    let biggest = crate::common::largest_pack(&packs);
    let good = std::fs::read(&biggest).unwrap();
    let stem = biggest.file_stem().unwrap().to_str().unwrap().to_string();
    let put =
        |name: &str, bytes: &[u8]| http(&server.addr, "PUT", &format!("/fresh/mlv/v1/packs/{name}.pack"), &[], bytes);

    // A byte flipped on the way: the content no longer matches the name.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let (status, body) = put(&stem, &flipped);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("damaged on the way"), "{body}");

    // Damaged before it was named: the name matches, the content does not verify.
    let body_len = flipped.len() - 32;
    let hash = blake3::hash(&flipped[..body_len]);
    flipped[body_len..].copy_from_slice(hash.as_bytes());
    let (status, body) = put(&format!("pack-{}", hash.to_hex()), &flipped);
    assert_eq!(status, 422, "{body}");
    assert!(!body.contains(".tmp-upload"), "the server's temporary file is not named: {body}");

    // An upload that breaks off leaves nothing behind.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let head =
        format!("PUT /fresh/mlv/v1/packs/{stem}.pack HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", good.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&good[..good.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);

    let repo = srv.join("fresh");
    let start = Instant::now();
    while !pack_files(&repo).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pack_files(&repo), Vec::<String>::new(), "no pack, index or temporary file is left");
    let (status, body) = http(&server.addr, "GET", "/fresh/mlv/v1/packs", &[], b"");
    assert_eq!((status, body.as_str()), (200, r#"{"packs":[]}"#));

    // The intact pack is taken.
    let (status, body) = put(&stem, &good);
    assert_eq!(status, 200, "{body}");
    assert_eq!(pack_files(&repo), vec![format!("{stem}.idx"), format!("{stem}.pack")]);
    let (status, _) = http(&server.addr, "HEAD", &format!("/fresh/mlv/v1/packs/{stem}.pack"), &[], b"");
    assert_eq!(status, 200);
}

#[test]
fn ranges_of_a_pack_are_served_as_asked() {
    let (r, _base, _ft) = fixtures::family_repo();
    let srv = r.scratch("srv");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    r.ok(&["push", &server.url("models"), "main"]);
    let (_, listing) = http(&server.addr, "GET", "/models/mlv/v1/packs", &[], b"");
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let name = listing["packs"][0]["name"].as_str().unwrap().to_string();
    let whole = std::fs::read(srv.join(format!("models/objects/pack/{name}.pack"))).unwrap();
    let path = format!("/models/mlv/v1/packs/{name}.pack");
    let (status, body) = http(&server.addr, "GET", &path, &[("Range", "bytes=0-7")], b"");
    assert_eq!((status, body.as_bytes()), (206, &whole[..8]));
    let (status, _) = http(&server.addr, "GET", &path, &[("Range", &format!("bytes={}-", whole.len()))], b"");
    assert_eq!(status, 416);
    let (status, _) =
        http(&server.addr, "GET", &format!("/models/mlv/v1/packs/pack-{}.pack", "0".repeat(64)), &[], b"");
    assert_eq!(status, 404);
}

#[test]
fn ref_updates_are_compare_and_swap_and_never_point_at_missing_objects() {
    let (r, _base, _ft) = fixtures::family_repo();
    let srv = r.scratch("srv");
    let server = Server::start(&r, &srv, &["--allow-create"]);
    r.ok(&["push", &server.url("models"), "main"]);
    let (main, v1) = (r.rev_id("main"), r.rev_id("v1"));
    let post = |body: String| http(&server.addr, "POST", "/models/mlv/v1/refs", &[], body.as_bytes());

    let (status, body) = post(format!(r#"{{"name":"refs/heads/main","old":null,"new":"{v1}"}}"#));
    assert_eq!(status, 409, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["found"], main.as_str(), "a conflict says what the ref holds: {body}");
    let (status, body) = post(format!(r#"{{"name":"refs/heads/gone","old":"{main}","new":null}}"#));
    assert_eq!(status, 409, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["found"].is_null(), "{body}");

    let missing = "ab".repeat(32);
    let (status, body) = post(format!(r#"{{"name":"refs/heads/x","old":null,"new":"{missing}"}}"#));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("was not received"), "{body}");
    let (status, _) = post(format!(r#"{{"name":"refs/heads/../x","old":null,"new":"{main}"}}"#));
    assert_eq!(status, 400);
    let (status, _) = post("{not json".into());
    assert_eq!(status, 400);

    let (status, body) = post(format!(r#"{{"name":"refs/heads/old","old":null,"new":"{v1}"}}"#));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(format!(r#"{{"name":"refs/heads/old","old":"{v1}","new":null}}"#));
    assert_eq!(status, 200, "{body}");
    let (_, refs) = http(&server.addr, "GET", "/models/mlv/v1/refs", &[], b"");
    assert!(!refs.contains("refs/heads/old") && refs.contains(&main), "{refs}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let r = TestRepo::init();
    let mut server = Server::start(&r, &r.root, &[]);
    let (status, body) = http(&server.addr, "GET", "/mlv/v1/info", &[], b"");
    assert_eq!(status, 200, "{body}");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "mlv serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "mlv serve exited with {status}; log:\n{}", server.log());
}
