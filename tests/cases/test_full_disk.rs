//! A full disk: `add`, `commit -a` and `checkout` on a 2 MiB tmpfs fail with the OS's "no
//! space" error naming a path, leave no temporary file or half-written object, and the
//! repository stays sound (fsck clean, the last commit checks out). Mounting needs root; the
//! test says so and passes without it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::st::Rng;
use crate::common::{Out, TestRepo, assert_clean_failure, temp_files};

/// A tmpfs mounted over a directory, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts `size` of tmpfs over `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        match out.status.success() {
            true => Ok(Tmpfs(dir.to_path_buf())),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A safetensors file of one U8 tensor of `n` noise bytes, which take their size in a pack.
fn model(seed: u64, n: usize) -> Vec<u8> {
    crate::common::st::serialize(&[crate::common::st::T::new("w", "U8", &[n as u64], Rng::new(seed).bytes(n))], None)
}

/// Fills the file system holding `path` with a file there, then frees `room` bytes of it.
fn fill_leaving(path: &Path, room: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let _ = f.flush();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(room)).unwrap();
}

/// A command that ran out of space failed cleanly, said so, and named a path.
fn assert_no_space(out: &Out) {
    assert_clean_failure(out);
    let said = out.stderr.to_lowercase();
    assert!(said.contains("no space left"), "the error must say the disk is full:\n{}", out.describe());
    assert!(out.stderr.contains('/'), "the error must name a path:\n{}", out.describe());
    assert!(out.stderr.contains("hint: the disk is full"), "the hint must say what to do:\n{}", out.describe());
}

/// The repository is sound after a failure: no temporary file under `.mlv` or in the work tree,
/// fsck clean, HEAD where it was.
fn assert_sound(r: &TestRepo, head: &str) {
    assert_eq!(temp_files(&r.root), Vec::<String>::new(), "temporary files or locks left behind");
    let out = r.run(&["fsck", "--unreachable"]);
    assert!(out.success() && out.stdout.contains("no problems"), "{}", out.describe());
    assert_eq!(r.rev_id("HEAD"), head, "HEAD moved although the command failed");
}

/// A 2 MiB tmpfs over the work tree of `r` (not yet initialised), then a repository there
/// with one commit of `keep.txt` and a small model; None, with a note, where it cannot be
/// mounted. Declare the mount after `r`, so that it is unmounted before `r` is deleted.
fn small_disk(r: &TestRepo) -> Option<(Tmpfs, String)> {
    let mount = match Tmpfs::mount(&r.root, "2m") {
        Ok(m) => m,
        Err(why) => {
            println!("note: skipping a full-disk test: a 2 MiB tmpfs cannot be mounted here ({why})");
            return None;
        }
    };
    r.ok(&["init"]);
    r.write("keep.txt", "keep\n");
    r.write("small.safetensors", model(1, 16 << 10));
    Some((mount, r.add_commit(&["."], "v1")))
}

#[test]
fn a_full_disk_fails_add_commit_and_checkout_cleanly_and_keeps_the_repository_sound() {
    let r = TestRepo::uninit();
    let Some((_mount, v1)) = small_disk(&r) else { return };
    let mlv_before = r.mlv_snapshot();

    // 1.2 MB in the work tree leaves no room for its 1.2 MB in a pack.
    r.write("big.safetensors", model(2, 1200 << 10));
    assert_no_space(&r.fail(&["add", "big.safetensors"]));
    assert_eq!(r.mlv_snapshot(), mlv_before, "a failed add must leave .mlv as it was");
    assert_sound(&r, &v1);
    std::fs::remove_file(r.path("big.safetensors")).unwrap();

    // The same through commit -a, with a tracked file grown past the free space.
    let small = r.read("small.safetensors");
    r.write("small.safetensors", model(3, 1200 << 10));
    assert_no_space(&r.fail(&["commit", "-a", "-m", "too big"]));
    assert_sound(&r, &v1);
    r.write("small.safetensors", &small);

    // A checkout that cannot write its file leaves the work tree and HEAD as they were.
    let mid = model(4, 600 << 10);
    r.write("mid.safetensors", &mid);
    let v2 = r.add_commit(&["mid.safetensors"], "v2");
    r.ok(&["checkout", &v1]);
    let filler = r.path("filler.bin");
    fill_leaving(&filler, 200 << 10);
    let tree_before = r.worktree_snapshot();
    assert_no_space(&r.fail(&["checkout", &v2]));
    assert_eq!(r.worktree_snapshot(), tree_before, "a failed checkout changed the work tree");
    assert_sound(&r, &v1);

    // With room again, every commit checks out byte for byte.
    std::fs::remove_file(&filler).unwrap();
    r.ok(&["checkout", &v2]);
    assert_eq!(r.read("mid.safetensors"), mid);
    r.ok(&["checkout", &v1]);
    assert_eq!(r.read("small.safetensors"), small);
    assert!(!r.exists("mid.safetensors"));
}

#[test]
fn a_commit_that_runs_out_of_space_at_any_step_leaves_a_sound_repository() {
    let r = TestRepo::uninit();
    let Some((_mount, v1)) = small_disk(&r) else { return };
    let filler = r.path("filler.bin");
    let (mut head, mut committed) = (v1, None);
    let mut failed = 0;
    // From no room to room for everything, 4 KiB (a tmpfs page) at a time: the space runs out
    // in the pack, its index, the staging index, the commit's pack or the ref.
    for room_kib in (0..=120).step_by(4) {
        let _ = std::fs::remove_file(&filler);
        let bytes = model(100 + room_kib, 40 << 10);
        r.write("grow.safetensors", &bytes);
        fill_leaving(&filler, room_kib << 10);
        let out = r.run(&["add", "grow.safetensors"]);
        let out = if out.success() { r.run(&["commit", "-m", &format!("room {room_kib} KiB")]) } else { out };
        if out.success() {
            committed = Some(bytes);
            head = r.rev_id("HEAD");
        } else {
            failed += 1;
            assert_no_space(&out);
        }
        assert_sound(&r, &head);
    }
    let committed = committed.expect("no commit fitted: widen the range");
    assert!(failed > 0, "no commit ran out of space: narrow the range");
    std::fs::remove_file(&filler).unwrap();
    r.ok(&["checkout", "--force", "HEAD"]);
    assert_eq!(r.read("grow.safetensors"), committed, "the last commit checks out byte for byte");
}
