//! Shared helpers for the integration tests: a throw-away repository that runs the built
//! `mlv` binary, safetensors writers (see [`st`]), and directory snapshots.

#![allow(dead_code)]

pub mod fixtures;
pub mod seaweed;
pub mod serve;
pub mod st;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// Author identity every [`TestRepo`] command runs with.
pub const AUTHOR_NAME: &str = "Test Author";
/// E-mail of [`AUTHOR_NAME`].
pub const AUTHOR_EMAIL: &str = "test@example.com";

/// The result of one `mlv` run, with stdout and stderr as text.
#[derive(Debug)]
pub struct Out {
    /// What was run, for messages.
    pub cmdline: String,
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// True on exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The whole run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "$ {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }
}

/// A temporary directory holding a work tree (`root`) and an empty home directory, so no
/// identity or configuration leaks in from the machine running the tests.
pub struct TestRepo {
    tmp: TempDir,
    /// The work-tree root (where `mlv init` ran, unless created with [`TestRepo::uninit`]).
    pub root: PathBuf,
    /// An empty `$HOME` for every command.
    pub home: PathBuf,
}

impl TestRepo {
    /// A fresh repository (`mlv init` already run).
    pub fn init() -> TestRepo {
        let r = TestRepo::uninit();
        r.ok(&["init"]);
        assert!(r.root.join(".mlv").is_dir(), "mlv init did not create .mlv");
        r
    }

    /// A fresh directory with no repository.
    pub fn uninit() -> TestRepo {
        let tmp = tempfile::Builder::new().prefix("mlv-it-").tempdir().expect("tempdir");
        let root = tmp.path().join("repo");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        TestRepo { tmp, root, home }
    }

    /// Scratch space beside the work tree (not inside it), e.g. for original files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// An `mlv` process in `dir`, with a test identity and an isolated environment.
    pub fn std_cmd_in<I, S>(&self, dir: &Path, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mlv"));
        c.current_dir(dir)
            .args(args)
            .env("MLV_AUTHOR_NAME", AUTHOR_NAME)
            .env("MLV_AUTHOR_EMAIL", AUTHOR_EMAIL)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_CONFIG_GLOBAL")
            .env_remove("RUST_BACKTRACE")
            .env_remove("MLV_TOKEN")
            .env_remove("MLV_TRANSFER_UNIT");
        c
    }

    /// An `mlv` command in `dir`, with a test identity and an isolated environment.
    pub fn cmd_in<I, S>(&self, dir: &Path, args: I) -> assert_cmd::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = assert_cmd::Command::from_std(self.std_cmd_in(dir, args));
        c.timeout(std::time::Duration::from_secs(120));
        c
    }

    /// Starts `mlv ARGS` in `dir` without waiting, output captured.
    pub fn spawn_at(&self, dir: &Path, args: &[&str]) -> std::process::Child {
        self.std_cmd_in(dir, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("failed to start mlv")
    }

    /// An `mlv` command in the work-tree root.
    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        self.cmd_in(&self.root, args)
    }

    /// Runs a prepared command and checks that it did not panic.
    pub fn exec(cmd: &mut assert_cmd::Command, cmdline: String) -> Out {
        let o = cmd.output().expect("failed to run mlv");
        let out = Out {
            cmdline,
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        assert_no_panic(&out);
        out
    }

    /// Runs `mlv ARGS` in the root; any exit code, but never a panic.
    pub fn run(&self, args: &[&str]) -> Out {
        Self::exec(&mut self.cmd(args), format!("mlv {}", args.join(" ")))
    }

    /// Runs `mlv ARGS` in `dir` (relative to the root).
    pub fn run_in(&self, dir: &str, args: &[&str]) -> Out {
        Self::exec(&mut self.cmd_in(&self.root.join(dir), args), format!("(cd {dir}) mlv {}", args.join(" ")))
    }

    /// Runs `mlv ARGS` in any directory (another repository beside this one, say).
    pub fn run_at(&self, dir: &Path, args: &[&str]) -> Out {
        Self::exec(&mut self.cmd_in(dir, args), format!("(cd {}) mlv {}", dir.display(), args.join(" ")))
    }

    /// Runs `mlv ARGS` in `dir`, which must succeed; returns stdout.
    pub fn ok_at(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.run_at(dir, args);
        assert!(out.success(), "command failed:\n{}", out.describe());
        out.stdout
    }

    /// Runs `mlv ARGS` in `dir` and parses stdout as JSON.
    pub fn json_at(&self, dir: &Path, args: &[&str]) -> serde_json::Value {
        let stdout = self.ok_at(dir, args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("`mlv {}` printed invalid JSON ({e}):\n{stdout}", args.join(" ")))
    }

    /// A path beside the work tree (not created), for clones and bare repositories.
    pub fn beside(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Runs `mlv ARGS`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success(), "command failed:\n{}", out.describe());
        out.stdout
    }

    /// Runs `mlv ARGS` in `dir` (relative to the root), which must succeed; returns stdout.
    pub fn ok_in(&self, dir: &str, args: &[&str]) -> String {
        let out = self.run_in(dir, args);
        assert!(out.success(), "command failed:\n{}", out.describe());
        out.stdout
    }

    /// Runs `mlv ARGS`, which must fail cleanly (exit code 1, an `error:` line).
    pub fn fail(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert_clean_failure(&out);
        out
    }

    /// Runs `mlv ARGS` (adding `--json` is the caller's job) and parses stdout as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("`mlv {}` printed invalid JSON ({e}):\n{stdout}", args.join(" ")))
    }

    /// `mlv add PATHS` then `mlv commit -m MSG`; returns the new commit id.
    pub fn add_commit(&self, paths: &[&str], msg: &str) -> String {
        let mut args = vec!["add"];
        args.extend_from_slice(paths);
        self.ok(&args);
        self.commit(msg)
    }

    /// `mlv commit -m MSG --json`; returns the new commit id.
    pub fn commit(&self, msg: &str) -> String {
        let v = self.json(&["commit", "-m", msg, "--json"]);
        v["commit"].as_str().unwrap_or_else(|| panic!("commit --json has no commit id: {v}")).to_string()
    }

    /// The full id of a revision, read from `mlv log --json -n 1 REV`.
    pub fn rev_id(&self, rev: &str) -> String {
        let v = self.json(&["log", "--json", "-n", "1", rev]);
        v[0]["id"].as_str().unwrap_or_else(|| panic!("log --json has no id: {v}")).to_string()
    }

    /// Absolute path of a work-tree file.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a work-tree file (creating directories).
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }

    /// Reads a work-tree file.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// True if the work-tree file exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// Copies every file of `src` into the work tree (overwriting).
    pub fn copy_in(&self, src: &Path) {
        copy_dir(src, &self.root);
    }

    /// Deletes every work-tree file and directory except `.mlv`.
    pub fn clear_worktree(&self) {
        for e in std::fs::read_dir(&self.root).unwrap() {
            let e = e.unwrap();
            if e.file_name() == ".mlv" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                std::fs::remove_dir_all(e.path()).unwrap();
            } else {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }

    /// Content hashes of every file under `.mlv`.
    pub fn mlv_snapshot(&self) -> BTreeMap<String, String> {
        snapshot(&self.root.join(".mlv"))
    }

    /// Total bytes of all files under `.mlv`.
    pub fn mlv_size(&self) -> u64 {
        dir_size(&self.root.join(".mlv"))
    }

    /// Content hashes of the work tree, without `.mlv`.
    pub fn worktree_snapshot(&self) -> BTreeMap<String, String> {
        snapshot_excluding(&self.root, &[".mlv"])
    }

    /// Asserts the work tree (without `.mlv`) holds exactly the files of `expected`, byte for byte.
    pub fn assert_worktree_eq(&self, expected: &Path) {
        assert_dirs_identical(expected, &self.root, &[".mlv"]);
    }
}

/// Fails the test if a command panicked.
pub fn assert_no_panic(out: &Out) {
    assert!(!out.stderr.contains("panicked"), "mlv panicked:\n{}", out.describe());
    assert_ne!(out.code, Some(101), "mlv exited with the panic code 101:\n{}", out.describe());
    assert!(out.code.is_some(), "mlv was killed by a signal:\n{}", out.describe());
}

/// Asserts a command failed the way users expect: exit code 1 and an `error:` message.
pub fn assert_clean_failure(out: &Out) {
    assert!(!out.success(), "command unexpectedly succeeded:\n{}", out.describe());
    assert!(out.stderr.contains("error"), "failure without an error message:\n{}", out.describe());
}

/// Temporary files and locks left anywhere under `dir` (`.tmp-*`, `.mlv-tmp-*`, `*.lock`).
pub fn temp_files(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp") || n.starts_with(".mlv-tmp") || n.ends_with(".lock"))
        .collect()
}

/// Relative `/`-separated path -> blake3 hex of every regular file under `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    snapshot_excluding(dir, &[])
}

/// Like [`snapshot`], skipping top-level entries named in `exclude`.
pub fn snapshot_excluding(dir: &Path, exclude: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, exclude, &mut |rel, abs| {
        let bytes = std::fs::read(abs).unwrap();
        out.insert(rel.to_string(), blake3::hash(&bytes).to_hex().to_string());
    });
    out
}

/// Total size of the regular files under `dir`.
/// The largest pack file in a `pack` directory (the one holding a family's base).
pub fn largest_pack(packs: &Path) -> PathBuf {
    std::fs::read_dir(packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    walk(dir, dir, &[], &mut |_, abs| total += std::fs::metadata(abs).unwrap().len());
    total
}

fn walk(root: &Path, dir: &Path, exclude: &[&str], f: &mut dyn FnMut(&str, &Path)) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if dir == root && exclude.iter().any(|x| OsStr::new(x) == e.file_name()) {
            continue;
        }
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(root, &path, exclude, f);
        } else if ft.is_file() {
            f(&rel, &path);
        }
    }
}

/// Asserts `actual` holds the same files as `expected` with identical bytes (ignoring the
/// top-level names in `exclude` on the `actual` side). Reports the first differing byte.
pub fn assert_dirs_identical(expected: &Path, actual: &Path, exclude: &[&str]) {
    let want = snapshot(expected);
    let got = snapshot_excluding(actual, exclude);
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "file sets differ: missing {missing:?}, unexpected {extra:?}");
    for (rel, h) in &want {
        if got[rel] != *h {
            assert_files_identical(&expected.join(rel), &actual.join(rel));
        }
    }
}

/// Asserts two files are byte-identical; the message names the first differing offset.
pub fn assert_files_identical(expected: &Path, actual: &Path) {
    let a = std::fs::read(expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    let b = std::fs::read(actual).unwrap_or_else(|e| panic!("{}: {e}", actual.display()));
    if a == b {
        return;
    }
    let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    panic!(
        "{} differs from {}: lengths {} vs {}, first difference at byte {first}",
        actual.display(),
        expected.display(),
        b.len(),
        a.len()
    );
}

/// Copies every file under `src` into `dst`, creating directories.
pub fn copy_dir(src: &Path, dst: &Path) {
    walk(src, src, &[], &mut |rel, abs| {
        let to = dst.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(abs, &to).unwrap();
    });
}

/// Finds the number after the word "byte" in a message (e.g. "at byte 123: ...").
pub fn byte_offset_in(text: &str) -> Option<u64> {
    let mut rest = text;
    while let Some(i) = rest.find("byte") {
        rest = &rest[i + 4..];
        let after = rest.trim_start_matches(['s', ' ']);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            return digits.parse().ok();
        }
    }
    None
}

/// The entries of a JSON array, or a test failure naming what was expected.
pub fn array<'a>(v: &'a serde_json::Value, what: &str) -> &'a Vec<serde_json::Value> {
    v.as_array().unwrap_or_else(|| panic!("{what} is not a JSON array: {v}"))
}
