//! Spare files: the disk of work-tree files that a checkout replaced or deleted, kept in
//! `.mlv/spare/` for the next checkout to write its files into instead of being freed.
//!
//! Freeing a file is not free: on ext4 mounted with `discard` (common on cloud VMs) it waits
//! for the device to discard the blocks, 0.13–0.19 s per GB on the machine of
//! docs/BENCHMARKS.md, and a checkout over another version paid that for every file it
//! replaced. A checkout instead takes the spares there when it starts, writes files into them
//! (each renamed into place only once written whole, as a fresh temporary file would be),
//! keeps the files it replaces or deletes as the next spares, and then frees the spares it did
//! not use. So `spare/` holds at most what the last checkout that replaced anything replaced,
//! nothing while its filesystem has less than a tenth of its space available, and nothing
//! after `mlv gc` or with `checkout.keep_spares = false`.
//!
//! A spare is written over only when nothing else can see it: a regular file of this user with
//! a single link (its name here) that no process has open or mapped (the kernel grants a write
//! lease only then). A program still reading the old version of a checkpoint keeps it whole;
//! that spare is freed instead, as the file would have been.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The directory of spares under `.mlv/`.
pub const SPARE_DIR: &str = "spare";

/// Smaller files are freed as before: freeing them costs little, and they would crowd the list.
const MIN_SPARE: u64 = 1 << 20;

/// The spare files of a repository, for one checkout.
pub struct Spares {
    dir: PathBuf,
    /// Whether files may be kept and spares written into.
    enabled: bool,
    /// Spares found when the checkout started and not taken yet: (path, size).
    ready: Mutex<Vec<(PathBuf, u64)>>,
    /// A file was kept: the spares not taken are freed at the end, as the new ones replace them.
    kept: AtomicBool,
}

/// A spare taken to write one file into; renamed into place by the caller.
pub struct Spare {
    /// Where it is.
    pub path: PathBuf,
    /// Open for writing, at its start.
    pub file: File,
}

impl Spares {
    /// The spares under `mlv_dir`. With `enabled` false nothing is kept or taken, and the
    /// spares there are freed by [`Spares::finish`].
    pub fn open(mlv_dir: &Path, enabled: bool) -> Spares {
        let dir = mlv_dir.join(SPARE_DIR);
        let ready = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.path(), e.metadata().ok().filter(|m| m.is_file())?.len())))
            .collect();
        Spares { dir, enabled: enabled && reuse_is_safe_here(), ready: Mutex::new(ready), kept: AtomicBool::new(false) }
    }

    /// Takes the spare closest in size to `size` (the smallest that holds it, else the
    /// largest) that may be written over and lies on the filesystem of `dest_dir`; None if
    /// there is none, and the file is written fresh.
    pub fn take(&self, dest_dir: &Path, size: u64) -> Option<Spare> {
        if !self.enabled || size < MIN_SPARE {
            return None;
        }
        let dev = device_of(dest_dir)?;
        let mut ready = self.ready.lock().ok()?;
        loop {
            let k = closest(&ready, size)?;
            let (path, _) = ready.swap_remove(k);
            match open_unshared(&path, dev) {
                Some(file) => return Some(Spare { path, file }),
                // Seen by someone else, or not ours: freed as the file would have been.
                None => drop(std::fs::remove_file(&path)),
            }
        }
    }

    /// Keeps the disk of the work-tree file at `path`, which the caller is about to replace
    /// or delete, by linking it here; files that are small, shared with other links, or that
    /// would leave the filesystem short of space are not kept.
    pub fn keep(&self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        if !self.enabled || !meta.is_file() || meta.nlink() != 1 || meta.len() < MIN_SPARE {
            return;
        }
        if std::fs::create_dir_all(&self.dir).is_err() || !room_on(&self.dir) {
            return;
        }
        // The inode names the spare: unique while the spare holds it.
        let name = self.dir.join(format!("{}-{}", meta.dev(), meta.ino()));
        if std::fs::hard_link(path, name).is_ok() {
            self.kept.store(true, Ordering::Relaxed);
        }
    }

    /// Bytes of the spares not taken.
    fn bytes(&self) -> u64 {
        self.ready.lock().map(|r| r.iter().map(|(_, size)| size).sum()).unwrap_or(0)
    }

    /// Frees the spares this checkout did not take if it kept others (a checkout that replaced
    /// nothing leaves them for the next), or if spares are off.
    pub fn finish(self) {
        if self.enabled && !self.kept.into_inner() {
            return;
        }
        for (path, _) in self.ready.into_inner().unwrap_or_default() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Frees every spare under `mlv_dir`; returns the bytes freed.
pub fn free_all(mlv_dir: &Path) -> u64 {
    let spares = Spares::open(mlv_dir, false);
    let bytes = spares.bytes();
    spares.finish();
    bytes
}

/// Bytes held by the spares under `mlv_dir`.
pub fn held(mlv_dir: &Path) -> u64 {
    Spares::open(mlv_dir, false).bytes()
}

/// Index of the spare closest in size to `size`: the smallest that holds it, else the largest.
fn closest(ready: &[(PathBuf, u64)], size: u64) -> Option<usize> {
    let holds = ready.iter().enumerate().filter(|(_, r)| r.1 >= size).min_by_key(|(_, r)| r.1);
    holds.or_else(|| ready.iter().enumerate().max_by_key(|(_, r)| r.1)).map(|(k, _)| k)
}

/// The device of `path`.
fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reuse_is_safe_here() -> bool {
    true
}

/// Without the lease check below nothing tells whether another process reads a spare.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reuse_is_safe_here() -> bool {
    false
}

/// Opens the spare at `path` for writing over, if it is a regular file of this user on
/// device `dev` with no other link and open nowhere else.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn open_unshared(path: &Path, dev: u64) -> Option<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let ours = meta.is_file() && meta.nlink() == 1 && meta.dev() == dev && meta.uid() == uid;
    (ours && open_nowhere_else(&file)).then_some(file)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn open_unshared(_path: &Path, _dev: u64) -> Option<File> {
    None
}

/// True if no other descriptor or mapping, in any process, holds the file: only then does
/// the kernel grant a write lease (`fcntl(2)`). The lease is given back at once, so no
/// signal ever comes of it; the file has no other name for anyone to open it by afterwards.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn open_nowhere_else(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor that stays open throughout; no memory is passed.
    unsafe {
        libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) == 0 && libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) == 0
    }
}

/// True if the filesystem of `dir` has at least a tenth of its space available.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn room_on(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid C string and `st` a valid place for one `statvfs`.
    if unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: the call succeeded, so it filled `st` in.
    let st = unsafe { st.assume_init() };
    u128::from(st.f_bavail) * 10 >= u128::from(st.f_blocks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn room_on(_dir: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_spare_is_the_smallest_that_holds_the_file_else_the_largest() {
        let ready: Vec<(PathBuf, u64)> =
            [5u64, 9, 7, 3].iter().map(|&n| (PathBuf::from(n.to_string()), n << 20)).collect();
        let pick = |size: u64| closest(&ready, size << 20).map(|k| ready[k].1 >> 20);
        assert_eq!(pick(6), Some(7));
        assert_eq!(pick(7), Some(7));
        assert_eq!(pick(1), Some(3));
        assert_eq!(pick(10), Some(9));
        assert_eq!(closest(&[], 1), None);
    }

    #[test]
    fn small_and_shared_files_are_not_kept_and_nothing_is_with_spares_off() {
        let dir = tempfile::tempdir().unwrap();
        let mlv = dir.path().join(".mlv");
        let small = dir.path().join("small");
        std::fs::write(&small, vec![1u8; 4096]).unwrap();
        let shared = dir.path().join("shared");
        std::fs::write(&shared, vec![2u8; 2 << 20]).unwrap();
        std::fs::hard_link(&shared, dir.path().join("other-link")).unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![3u8; 2 << 20]).unwrap();
        Spares::open(&mlv, false).keep(&big);
        assert_eq!(held(&mlv), 0, "kept with spares off");
        let spares = Spares::open(&mlv, true);
        for path in [&small, &shared, &big] {
            spares.keep(path);
        }
        let expected = if reuse_is_safe_here() && room_on(dir.path()) { 2 << 20 } else { 0 };
        assert_eq!(held(&mlv), expected);
        assert_eq!(free_all(&mlv), expected);
        assert_eq!(held(&mlv), 0);
    }
}
