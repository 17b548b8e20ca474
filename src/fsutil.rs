//! File helpers: crash-safe writes (temporary file, fsync, rename, fsync the directory),
//! work-tree removals, and page release for memory maps.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Flushes a directory's entries so a rename inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: readers see the old or the new content, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}

/// Deletes `path` if it is there; the error names the path.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(path, e)),
        _ => Ok(()),
    }
}

/// Deletes the work-tree file `root/rel` if it is there, then the directories that leaves
/// empty, up to `root`, so the path is free again (e.g. for a file where a directory was).
pub fn remove_file_and_empty_dirs(root: &Path, rel: impl AsRef<Path>) -> io::Result<()> {
    let path = root.join(rel);
    match std::fs::remove_file(&path) {
        // NotADirectory: a parent is a file now, so there is no such file to remove.
        Err(e) if !matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Err(with_path(&path, e));
        }
        _ => {}
    }
    let mut dir = path.parent();
    // remove_dir fails on the first directory that still holds something: stop there.
    while let Some(d) = dir.filter(|d| *d != root && std::fs::remove_dir(d).is_ok()) {
        dir = d.parent();
    }
    Ok(())
}

/// Removes directory `dir` if it holds nothing but (nested) empty directories. A file inside
/// stops it with a DirectoryNotEmpty error naming that file: it may be someone's work.
pub fn remove_empty_dir_tree(dir: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(dir).contents_first(true) {
        let entry = entry.map_err(io::Error::from)?;
        if !entry.file_type().is_dir() {
            let why = io::Error::new(io::ErrorKind::DirectoryNotEmpty, "in the way of a directory being removed");
            return Err(with_path(entry.path(), why));
        }
        std::fs::remove_dir(entry.path()).map_err(|e| with_path(entry.path(), e))?;
    }
    Ok(())
}

/// Bytes read from a mapping between two releases of its pages, when a whole file is read in
/// order (hashed, copied): large enough that hashing a piece spreads over every core.
pub const READ_PIECE: u64 = 16 << 20;

/// `start..end` as consecutive ranges of at most [`READ_PIECE`] bytes, so that a long read of
/// a mapping can give its pages back as it goes: peak memory stays flat in the file's size.
pub fn pieces(start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    (start..end).step_by(READ_PIECE as usize).map(move |p| (p, (p + READ_PIECE).min(end)))
}

/// Gives back the pages behind a reader that moves forward through a mapping, a
/// [`READ_PIECE`] at a time, through `release(start, len)`.
pub struct ReleaseBehind<'r> {
    from: u64,
    release: &'r dyn Fn(u64, u64),
}

impl<'r> ReleaseBehind<'r> {
    /// A reader starting at `start`.
    pub fn new(start: u64, release: &'r dyn Fn(u64, u64)) -> ReleaseBehind<'r> {
        ReleaseBehind { from: start, release }
    }

    /// The reader has read everything before `pos`.
    pub fn reached(&mut self, pos: u64) {
        if pos.saturating_sub(self.from) >= READ_PIECE {
            (self.release)(self.from, pos - self.from);
            self.from = pos;
        }
    }

    /// The reader goes back to `pos` to read again what it may have given back already.
    pub fn back_to(&mut self, pos: u64) {
        self.from = self.from.min(pos);
    }

    /// The reader has read everything before `end`, and stops.
    pub fn finish(self, end: u64) {
        if end > self.from {
            (self.release)(self.from, end - self.from);
        }
    }
}

/// Bytes of read ranges a [`PageReleaser`] gathers before it gives them back. A BF16
/// fine-tune's checkout on an F32 base reads four bytes of the base's planes for every two it
/// writes: at 16 MiB, MiniLM's spent 2-3% more CPU than at 32 or 64. Every batch stays
/// resident until it is given back: `fsck` and `clone` of a 192 MB pack peaked at 37-41 MiB
/// with 16, 55-57 with 32, 88-92 with 64.
const RELEASE_BATCH: u64 = 32 << 20;
/// Gathered ranges at most this far apart are given back in one call, with the bytes between.
const RELEASE_MERGE_GAP: u64 = 64 << 10;

/// Gives back the pages of read-only file mappings once read, in batches. Each release is a
/// `madvise` that shoots down the mapping's TLB entries on every core the process runs on; in
/// a VM each costs tens of microseconds, so a checkout of many small chunks spent 8% of its
/// time there. Ranges of all mappings share one budget, so resident pages stay within
/// [`RELEASE_BATCH`] however many mappings are read, and adjacent ones are merged: one call
/// covers many chunks.
#[derive(Default)]
pub struct PageReleaser {
    /// The ranges read and not yet given back, and their total length.
    pending: std::sync::Mutex<(Vec<Pending>, u64)>,
}

/// A range of a mapping read and not yet given back.
struct Pending {
    map: std::sync::Arc<memmap2::Mmap>,
    start: u64,
    end: u64,
}

impl PageReleaser {
    /// Notes that bytes `start..start + len` of `map` were read and will not be needed again
    /// soon; gives back everything gathered once that reaches [`RELEASE_BATCH`].
    pub fn release(&self, map: &std::sync::Arc<memmap2::Mmap>, start: u64, len: u64) {
        let due = {
            let Ok(mut pending) = self.pending.lock() else { return };
            pending.0.push(Pending { map: map.clone(), start, end: start.saturating_add(len) });
            pending.1 = pending.1.saturating_add(len);
            if pending.1 < RELEASE_BATCH {
                return;
            }
            pending.1 = 0;
            std::mem::take(&mut pending.0)
        };
        for range in merged(due, RELEASE_MERGE_GAP) {
            release_pages(&range.map, range.start, range.end - range.start);
        }
    }

    /// Drops what was gathered for `map`, whose file is being removed, so that the mapping
    /// (and the removed file's disk space) is not kept until the next batch.
    pub fn forget(&self, map: &std::sync::Arc<memmap2::Mmap>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.0.retain(|r| !std::sync::Arc::ptr_eq(&r.map, map));
            pending.1 = pending.0.iter().map(|r| r.end - r.start).sum();
        }
    }
}

/// `ranges` sorted by mapping and start, and joined where they overlap or lie at most `gap`
/// apart in the same mapping.
fn merged(mut ranges: Vec<Pending>, gap: u64) -> Vec<Pending> {
    ranges.sort_unstable_by_key(|r| (std::sync::Arc::as_ptr(&r.map), r.start));
    let mut out: Vec<Pending> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last)
                if std::sync::Arc::ptr_eq(&last.map, &range.map) && range.start <= last.end.saturating_add(gap) =>
            {
                last.end = last.end.max(range.end)
            }
            _ => out.push(range),
        }
    }
    out
}

/// Asks that the pages of a file mapping read from disk come into the page cache in
/// huge-page-sized folios (`MADV_HUGEPAGE`): a fault then maps a whole folio. Once the packs
/// were read so, a checkout of the large ft-2 took 6,300 page faults instead of 26,000 and
/// half the system time; an add of ft-1 with its file and the packs out of the page cache
/// spent 0.3-0.4 s in the kernel instead of 0.9-1.5 s. Only advice, ignored where transparent
/// huge pages are off; pages already cached keep their size.
pub fn prefer_large_folios(map: &memmap2::Mmap) {
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

/// Drops resident pages of a read-only file mapping so peak memory stays flat.
pub fn release_pages(map: &memmap2::Mmap, start: u64, len: u64) {
    let page = 4096u64;
    let aligned = start / page * page;
    let len = (len + start - aligned) as usize;
    if len > 0 && (aligned as usize).saturating_add(len) <= map.len() {
        // SAFETY: the mapping is a private read-only file mapping: dropped pages are re-read from
        // the file on the next access, so no data visible through it changes.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, aligned as usize, len) };
    }
}

/// Tells the kernel that bytes `start..start + len` of `file` will not be read again, so that
/// their cached pages are freed now, by the caller, rather than all at once when the file is
/// deleted. Only advice: the file's data is untouched, and a later read fetches it again.
pub fn drop_cached(file: &std::fs::File, start: u64, len: u64) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) {
        use std::os::fd::AsRawFd;
        // SAFETY: the call reads no memory of this process; the descriptor is open throughout.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (file, start, len);
}

/// Starts writeback of bytes `start..start + len` of `file` and returns without waiting for
/// it. For a file that is about to replace another by rename and whose disk is not reserved
/// ([`preallocate`]): ext4 (`auto_da_alloc`) would otherwise allocate and flush its delayed
/// blocks inside the rename, synchronously (0.47 s per GB here).
pub fn start_writeback(file: &std::fs::File, start: u64, len: u64) {
    #[cfg(target_os = "linux")]
    if let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) {
        use std::os::fd::AsRawFd;
        // SAFETY: the call reads no memory of this process; the descriptor is open throughout.
        let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, start, len);
}

/// Reserves `len` bytes of disk for `file` before it is written, leaving its size as it is,
/// where that was measured to help: on ext4, which then skips the delayed-allocation
/// bookkeeping of every page written (a 1 GB checkout spent 0.12 s less system time). On tmpfs
/// the same call allocates and zeroes every page up front (0.6 s more), so other filesystems
/// are left alone. Only advice: errors (a full disk) are left for the writes to report.
/// Returns true if the disk was reserved.
pub fn preallocate(file: &std::fs::File, len: u64) -> bool {
    #[cfg(target_os = "linux")]
    if let Ok(len) = i64::try_from(len)
        && len > 0
        && is_ext4(file)
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the call reads no memory of this process; the descriptor is open throughout.
        return unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) } == 0;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
    false
}

/// True if `file` lies on an ext4 filesystem.
#[cfg(target_os = "linux")]
fn is_ext4(file: &std::fs::File) -> bool {
    filesystem_magic(file).is_some_and(|m| u64::try_from(libc::EXT4_SUPER_MAGIC).ok() == Some(m))
}

/// The magic number that tells the kind of filesystem `file` lies on (`statfs(2)`).
#[cfg(target_os = "linux")]
fn filesystem_magic(file: &std::fs::File) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `stat` is a valid place for the call to write one `statfs` into.
    if unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: the call succeeded, so it filled `stat` in.
    u64::try_from(unsafe { stat.assume_init() }.f_type).ok()
}

/// Attaches the path to an I/O error so messages say which file failed.
pub fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_keeps_the_size_and_reserves_blocks_on_ext4_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let reserved = preallocate(&file, 1 << 20);
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 0, "preallocation changed the file's size");
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(meta.blocks() >= 2048, is_ext4(&file), "blocks: {}", meta.blocks());
            assert_eq!(reserved, is_ext4(&file), "the result does not say what was done");
        }
    }

    /// tmpfs would allocate and zero the pages up front: nothing is reserved there.
    #[cfg(target_os = "linux")]
    #[test]
    fn nothing_is_preallocated_on_tmpfs() {
        use std::os::unix::fs::MetadataExt;
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else { return };
        let file = File::create(dir.path().join("f")).unwrap();
        if filesystem_magic(&file) != u64::try_from(libc::TMPFS_MAGIC).ok() {
            return;
        }
        assert!(!is_ext4(&file));
        assert!(!preallocate(&file, 1 << 20));
        assert_eq!(file.metadata().unwrap().blocks(), 0);
    }

    #[test]
    fn an_empty_directory_tree_is_removed_but_a_file_in_it_is_kept() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("x/a/b")).unwrap();
        remove_empty_dir_tree(&root.path().join("x")).unwrap();
        assert!(!root.path().join("x").exists());
        std::fs::create_dir_all(root.path().join("y/a")).unwrap();
        std::fs::write(root.path().join("y/a/notes.txt"), "keep").unwrap();
        let err = remove_empty_dir_tree(&root.path().join("y")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::DirectoryNotEmpty);
        assert!(root.path().join("y/a/notes.txt").is_file());
    }

    #[test]
    fn removing_a_file_prunes_the_directories_it_empties_up_to_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/f"), "").unwrap();
        std::fs::write(root.path().join("a/g"), "").unwrap();
        remove_file_and_empty_dirs(root.path(), "a/b/f").unwrap();
        assert!(!root.path().join("a/b").exists() && root.path().join("a/g").is_file());
        remove_file_and_empty_dirs(root.path(), "a/b/f").unwrap();
        remove_file_and_empty_dirs(root.path(), "a/g/h").unwrap();
    }

    /// A read-only mapping of `bytes`, in a file kept while the mapping is used.
    fn mapped(bytes: &[u8]) -> (tempfile::NamedTempFile, std::sync::Arc<memmap2::Mmap>) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        // SAFETY: the file is private to the test and not changed while mapped.
        let map = unsafe { memmap2::Mmap::map(file.as_file()) }.unwrap();
        (file, std::sync::Arc::new(map))
    }

    #[test]
    fn released_ranges_are_sorted_and_joined_across_small_gaps_of_one_mapping_only() {
        let ((_a, a), (_b, b)) = (mapped(b"a"), mapped(b"b"));
        let at = |map: &std::sync::Arc<memmap2::Mmap>, start, end| Pending { map: map.clone(), start, end };
        let ranges = vec![at(&a, 300, 400), at(&b, 0, 10), at(&a, 100, 200), at(&a, 0, 50), at(&a, 40, 60)];
        let got = merged(ranges, 40);
        let spans = |map: &std::sync::Arc<memmap2::Mmap>| -> Vec<(u64, u64)> {
            got.iter().filter(|r| std::sync::Arc::ptr_eq(&r.map, map)).map(|r| (r.start, r.end)).collect()
        };
        assert_eq!(spans(&a), [(0, 200), (300, 400)]);
        assert_eq!(spans(&b), [(0, 10)]);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_mapping_reads_the_same_bytes_after_its_pages_are_given_back_in_batches() {
        const MIB: usize = 1 << 20;
        let bytes: Vec<u8> = (0..RELEASE_BATCH as usize + MIB).map(|i| (i % 251) as u8).collect();
        let (_file, map) = mapped(&bytes);
        let releaser = PageReleaser::default();
        for start in (0..bytes.len()).step_by(MIB) {
            assert_eq!(map[start..start + MIB], bytes[start..start + MIB]);
            releaser.release(&map, start as u64, MIB as u64);
        }
        // The first 16 MiB were given back in one batch; the last MiB waits for the next.
        let pending =
            |r: &PageReleaser| r.pending.lock().unwrap().0.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
        assert_eq!(pending(&releaser), [(RELEASE_BATCH, RELEASE_BATCH + MIB as u64)]);
        assert!(map[..] == bytes[..]);
        // A mapping whose file is removed is let go of at once.
        let (_other_file, other) = mapped(b"other");
        releaser.release(&other, 0, 5);
        releaser.forget(&map);
        assert_eq!(pending(&releaser), [(0, 5)]);
        assert_eq!(std::sync::Arc::strong_count(&map), 1, "the releaser still holds the mapping");
    }
}
