//! Crash-safe file writes: temporary file, fsync, rename, fsync the directory.

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

/// Deletes the work-tree file `root/rel` if it is there, then the directories that leaves
/// empty, up to `root`, so the path is free again (e.g. for a file where a directory was).
pub fn remove_file_and_empty_dirs(root: &Path, rel: &str) -> io::Result<()> {
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

/// Attaches the path to an I/O error so messages say which file failed.
pub fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
