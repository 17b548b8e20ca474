//! `mlv demo`: commit a model family, check every member out again, verify every byte, and
//! measure logical versus stored size and throughput. Needs no data: it can build the family.

pub mod synth;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::User;
use crate::error::{Error, Result};
use crate::ops::checkout::{Target, checkout};
use crate::ops::commit::{CommitOptions, commit};
use crate::progress::Progress;
use crate::repo::Repository;

/// One member committed.
#[derive(Debug, Serialize)]
pub struct Ingest {
    /// Tag given to the commit (the folder name).
    pub tag: String,
    /// Bytes of the member's files.
    pub logical: u64,
    /// Growth of `.mlv/` on disk.
    pub stored: u64,
    /// Seconds for add + commit.
    pub seconds: f64,
}

/// One member checked out and compared.
#[derive(Debug, Serialize)]
pub struct Restore {
    /// Tag checked out.
    pub tag: String,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds for the checkout.
    pub seconds: f64,
    /// Every file identical to the original.
    pub identical: bool,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// The repository used.
    pub repo: PathBuf,
    /// Per member, in commit order.
    pub ingests: Vec<Ingest>,
    /// Per member, checked out in reverse order.
    pub restores: Vec<Restore>,
}

/// Total bytes of regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    for e in walkdir::WalkDir::new(from).sort_by_file_name() {
        let e = e.map_err(std::io::Error::from)?;
        let rel = e.path().strip_prefix(from).map_err(|_| Error::OutsideRepository(e.path().to_path_buf()))?;
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// Byte-compares two files, streaming.
fn same_file(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    for e in walkdir::WalkDir::new(a).sort_by_file_name() {
        let e = e.map_err(std::io::Error::from)?;
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(a).map_err(|_| Error::OutsideRepository(e.path().to_path_buf()))?;
            if !same_file(e.path(), &b.join(rel))? {
                return Ok(false);
            }
        }
    }
    Ok(dir_size(a) == dir_size(b))
}

/// A folder to commit, and the tag to store it against (None: its parent commit).
#[derive(Debug, Clone)]
pub struct Member {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// A tag committed before it whose tensors are its delta bases.
    pub base: Option<String>,
}

/// Commits each folder of `members` in turn as `model/` of a new repository in `work`
/// (tagged with the folder name), then checks each tag out and compares every byte.
pub fn run(members: &[Member], work: &Path, progress: &dyn Progress) -> Result<DemoReport> {
    let root = work.join("repo");
    std::fs::create_dir_all(&root)?;
    let mut repo = Repository::init(&root)?;
    repo.config.user = Some(User { name: "mlv demo".into(), email: "demo@mlv.invalid".into() });
    crate::fsutil::atomic_write(&repo.dir.join("config"), repo.config.to_toml().as_bytes())?;
    let model = root.join("model");
    let mut ingests = Vec::new();
    for Member { dir, base } in members {
        let tag = dir.file_name().map_or("member".into(), |n| n.to_string_lossy().to_string());
        copy_tree(dir, &model)?;
        let before = dir_size(&repo.dir);
        let start = Instant::now();
        crate::ops::add::add(&repo, &root, &[PathBuf::from("model")], base.as_deref(), progress)?;
        repo.reload()?;
        commit(&mut repo, &CommitOptions { message: &tag, all: false, base: None }, progress)?;
        let seconds = start.elapsed().as_secs_f64();
        crate::ops::branch::create_tag(&mut repo, &tag, None, None)?;
        ingests.push(Ingest { logical: dir_size(dir), stored: dir_size(&repo.dir) - before, seconds, tag });
    }
    let mut restores = Vec::new();
    for (Member { dir, .. }, ing) in members.iter().zip(&ingests).rev() {
        let commit_id = repo.resolve(&ing.tag)?;
        let start = Instant::now();
        let report = checkout(&repo, Target::Detached(commit_id), Some(commit_id), true, progress)?;
        let seconds = start.elapsed().as_secs_f64();
        restores.push(Restore {
            tag: ing.tag.clone(),
            bytes: report.bytes,
            seconds,
            identical: same_tree(dir, &model)?,
        });
    }
    Ok(DemoReport { repo: root, ingests, restores })
}
