//! Spare files: checkout keeps the disk of the files it replaces in `.mlv/spare/` and writes
//! the next checkout's files into it, byte-exact; a spare that anything else can still see (an
//! open or mapped file, another link) is never written over; `gc` and the config free them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::TestRepo;
use crate::common::st::{self, Rng, Weights};

const MODEL: &str = "model.safetensors";

/// A repository with an F32 base (5 MB) tagged `v1` and a BF16 fine-tune of it tagged `v2`,
/// checked out; returns the folders they were copied from.
fn family() -> (TestRepo, PathBuf, PathBuf) {
    let r = TestRepo::init();
    let (base_dir, ft_dir) = (r.scratch("base"), r.scratch("ft"));
    let base = st::base_model(7, 256, 2, 1024);
    st::write(&base_dir.join(MODEL), &base.iter().map(Weights::to_f32).collect::<Vec<_>>(), None);
    let ft = st::fine_tune(&base, 8, 0.3);
    st::write(&ft_dir.join(MODEL), &ft.iter().map(Weights::to_bf16).collect::<Vec<_>>(), None);
    for (dir, tag) in [(&base_dir, "v1"), (&ft_dir, "v2")] {
        r.clear_worktree();
        r.copy_in(dir);
        r.add_commit(&["."], tag);
        r.ok(&["tag", tag]);
    }
    (r, base_dir, ft_dir)
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).ino()
}

/// The spare files there are, by inode.
fn spares(r: &TestRepo) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(r.root.join(".mlv/spare")) else { return Vec::new() };
    let mut inodes: Vec<u64> = entries.map(|e| e.unwrap().metadata().unwrap().ino()).collect();
    inodes.sort();
    inodes
}

fn spare_paths(r: &TestRepo) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(r.root.join(".mlv/spare")) else { return Vec::new() };
    entries.map(|e| e.unwrap().path()).collect()
}

/// True where spares can be kept and written into: the kernel grants file leases here and
/// the filesystem has a tenth of its space free. Elsewhere checkout frees files as before.
fn spares_work_here(dir: &Path) -> bool {
    let probe = dir.join("lease-probe");
    let file = std::fs::File::create(&probe).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an open descriptor; statvfs into a valid place with a valid C string.
    let leases = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) } == 0;
    drop(file);
    std::fs::remove_file(&probe).unwrap();
    let c_dir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut vfs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    let room = unsafe { libc::statvfs(c_dir.as_ptr(), vfs.as_mut_ptr()) } == 0 && {
        let vfs = unsafe { vfs.assume_init() };
        u128::from(vfs.f_bavail) * 10 >= u128::from(vfs.f_blocks)
    };
    if !(leases && room) {
        eprintln!("note: no leases or little free space in {}: spares are not used here", dir.display());
    }
    leases && room
}

#[test]
fn checkout_writes_into_the_spare_the_last_one_kept_and_gc_frees_it() {
    let (r, base, ft) = family();
    if !spares_work_here(&r.root) {
        return;
    }
    let ft_inode = inode(&r.path(MODEL));
    r.ok(&["checkout", "v1"]);
    r.assert_worktree_eq(&base);
    assert_eq!(spares(&r), vec![ft_inode], "the replaced fine-tune was not kept");
    let base_inode = inode(&r.path(MODEL));

    r.ok(&["checkout", "v2"]);
    r.assert_worktree_eq(&ft);
    assert_eq!(inode(&r.path(MODEL)), ft_inode, "the fine-tune was not written into the spare");
    assert_eq!(spares(&r), vec![base_inode], "the replaced base was not kept");
    let status = r.json(&["status", "--json"]);
    for list in ["staged", "unstaged", "untracked"] {
        assert_eq!(status[list], serde_json::json!([]), "{status}");
    }
    r.ok(&["fsck"]);

    // The longer base written into the shorter spare, and back into the longer one.
    r.ok(&["checkout", "v1"]);
    r.assert_worktree_eq(&base);
    assert_eq!(inode(&r.path(MODEL)), base_inode);
    r.ok(&["checkout", "v2"]);
    r.assert_worktree_eq(&ft);

    let du = r.ok(&["du"]);
    assert!(du.contains("spare files kept by checkout"), "{du}");
    let gc = r.ok(&["gc"]);
    assert!(gc.contains("of spare files freed"), "{gc}");
    assert_eq!(spares(&r), Vec::<u64>::new(), "gc left spares");
    r.assert_worktree_eq(&ft);
}

#[test]
fn files_leaving_the_tree_are_kept_and_unused_spares_go_when_new_ones_come() {
    let (r, base, ft) = family();
    if !spares_work_here(&r.root) {
        return;
    }
    r.ok(&["rm", MODEL]);
    r.write("notes.txt", "the model moved elsewhere\n");
    r.add_commit(&["notes.txt"], "no model");
    r.ok(&["tag", "v3"]);
    r.ok(&["checkout", "v1"]);
    r.assert_worktree_eq(&base);
    // `rm` freed the fine-tune; the checkout replaced nothing big. A no-op switch keeps it so.
    assert_eq!(spares(&r), Vec::<u64>::new());
    r.ok(&["checkout", "v2"]);
    let base_spare = spares(&r);
    assert_eq!(base_spare.len(), 1, "the replaced base was not kept");
    r.ok(&["switch", "-c", "other"]);
    assert_eq!(spares(&r), base_spare, "a checkout that replaced nothing freed the spares");
    // The model leaves (kept), and the base's spare, not needed, is freed.
    r.ok(&["checkout", "v3"]);
    assert!(!r.exists(MODEL));
    assert_eq!(spares(&r).len(), 1);
    assert_ne!(spares(&r), base_spare, "an unused spare outlived the next checkout that kept files");
    r.ok(&["checkout", "v2"]);
    r.assert_worktree_eq(&ft);
}

#[test]
fn keep_spares_false_keeps_nothing_and_frees_what_is_there() {
    let (r, base, ft) = family();
    r.ok(&["checkout", "v1"]);
    r.ok(&["config", "--set", "checkout.keep_spares", "false"]);
    r.ok(&["checkout", "v2"]);
    r.assert_worktree_eq(&ft);
    assert_eq!(spares(&r), Vec::<u64>::new());
    r.ok(&["checkout", "v1"]);
    r.assert_worktree_eq(&base);
    assert_eq!(spares(&r), Vec::<u64>::new());
}

#[test]
fn a_file_with_another_link_is_never_kept() {
    let (r, base, ft) = family();
    let outside = r.scratch("elsewhere").join("linked.safetensors");
    std::fs::hard_link(r.path(MODEL), &outside).unwrap();
    for rev in ["v1", "v2", "v1", "v2"] {
        r.ok(&["checkout", rev]);
        assert!(!spares(&r).contains(&inode(&outside)), "a file with two links was kept");
    }
    r.assert_worktree_eq(&ft);
    assert_eq!(std::fs::read(&outside).unwrap(), std::fs::read(ft.join(MODEL)).unwrap(), "the other link changed");
    r.ok(&["checkout", "v1"]);
    r.assert_worktree_eq(&base);
}

#[test]
fn a_spare_mapped_by_another_process_is_freed_not_written_over() {
    let (r, _base, ft) = family();
    if !spares_work_here(&r.root) {
        return;
    }
    let ft_inode = inode(&r.path(MODEL));
    r.ok(&["checkout", "v1"]);
    let [spare] = &spare_paths(&r)[..] else { panic!("no spare kept") };
    // A program that loaded the old checkpoint with mmap (as safetensors does) and closed it.
    let map = {
        let file = std::fs::File::open(spare).unwrap();
        // SAFETY: the test only reads the map, and asserts its bytes are what it expects.
        unsafe { memmap2::Mmap::map(&file).unwrap() }
    };
    r.ok(&["checkout", "v2"]);
    r.assert_worktree_eq(&ft);
    assert_ne!(inode(&r.path(MODEL)), ft_inode, "a mapped spare was written into");
    assert!(!spare.exists(), "a spare that could not be used was kept");
    assert!(map[..] == std::fs::read(ft.join(MODEL)).unwrap()[..], "what another process maps changed");
}

#[test]
fn a_spare_with_another_link_is_freed_not_written_over() {
    let (r, _base, ft) = family();
    if !spares_work_here(&r.root) {
        return;
    }
    r.ok(&["checkout", "v1"]);
    let [spare] = &spare_paths(&r)[..] else { panic!("no spare kept") };
    let outside = r.scratch("elsewhere").join("rescued.safetensors");
    std::fs::hard_link(spare, &outside).unwrap();
    r.ok(&["checkout", "v2"]);
    r.assert_worktree_eq(&ft);
    assert_ne!(inode(&r.path(MODEL)), inode(&outside), "a spare with another link was written into");
    assert_eq!(std::fs::read(&outside).unwrap(), std::fs::read(ft.join(MODEL)).unwrap());
}

/// SIGKILL while a checkout writes into a spare: the work tree holds one version or the
/// other, whole, the repository passes fsck, and the next checkout is byte-exact.
#[test]
fn killing_a_checkout_that_writes_into_spares_leaves_whole_files() {
    let (r, base, ft) = family();
    let versions = [std::fs::read(base.join(MODEL)).unwrap(), std::fs::read(ft.join(MODEL)).unwrap()];
    let mut rng = Rng::new(77);
    for k in 0..4 {
        let (rev, dir) = if k % 2 == 0 { ("v1", &base) } else { ("v2", &ft) };
        let mut child = r
            .std_cmd_in(&r.root, ["checkout", "-f", rev])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 150_000));
        child.kill().ok();
        child.wait().unwrap();
        let now = r.read(MODEL);
        assert!(versions.contains(&now), "after a kill the model is neither version ({} bytes)", now.len());
        r.ok(&["fsck"]);
        r.ok(&["checkout", "-f", rev]);
        r.assert_worktree_eq(dir);
    }
}
