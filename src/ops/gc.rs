//! `mlv gc`: repack a repository into a few packs, drop objects nothing needs any more, and
//! cut delta chains that grew past `delta.max_chain`.
//!
//! Safe with commands running at the same time: old packs are deleted only after the new ones
//! are installed (a reader that opened an old pack keeps its mapping; one that looks again finds
//! the objects in the new pack), objects written within the grace period are kept with all
//! they need, and packs that appear while gc runs are checked once more before anything is
//! deleted, so a concurrent commit that reuses an old object keeps it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::codec::EncodeOptions;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::object::ObjectId;
use crate::pack::{PackName, PackWriter};
use crate::progress::Progress;
use crate::reach::{self, Walk};
use crate::refs::{HEADS, Head, REMOTES, TAGS};
use crate::repo::Repository;
use crate::store::{LoadedPack, Odb, StoreError};

/// Unreachable objects younger than this are kept by default: a command may be about to
/// point at them.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(14 * 24 * 3600);

/// Packs written by `gc` stay below about this size (one larger object makes a larger one).
pub const DEFAULT_MAX_PACK_BYTES: u64 = 2 << 30;

/// How `gc` runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreachable objects in packs older than this are dropped (zero: all of them).
    pub grace: Duration,
    /// Largest pack written, in bytes.
    pub max_pack_bytes: u64,
    /// Choose every tensor's delta base again (slow: every tensor is decoded and encoded).
    pub aggressive: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { grace: DEFAULT_GRACE, max_pack_bytes: DEFAULT_MAX_PACK_BYTES, aggressive: false }
    }
}

/// What `gc` did.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Packs before and after.
    pub packs_before: usize,
    /// Packs after.
    pub packs_after: usize,
    /// Bytes of packs before.
    pub bytes_before: u64,
    /// Bytes of packs after.
    pub bytes_after: u64,
    /// Objects kept.
    pub objects_kept: usize,
    /// Unreachable objects dropped.
    pub objects_dropped: usize,
    /// Objects re-encoded without a base because their chain was too long.
    pub chains_cut: usize,
    /// With `--aggressive`: tensors encoded again.
    pub tensors_rewritten: usize,
    /// Of those, the ones whose base changed.
    pub bases_changed: usize,
    /// Bytes of spare files freed ([`crate::spare`]).
    pub spare_bytes_freed: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// True when there are more packs than `gc.auto_packs`: `commit` then runs gc.
pub fn needed(repo: &Repository) -> bool {
    let limit = repo.config.gc.auto_packs;
    limit > 0 && repo.odb.packs().len() > limit
}

/// Every object a ref, HEAD or the staging index needs.
fn live_tips(repo: &Repository) -> Result<Vec<ObjectId>> {
    let mut tips = Vec::new();
    for prefix in [HEADS, TAGS, REMOTES] {
        tips.extend(repo.refs.list(prefix)?.into_iter().map(|r| r.1));
    }
    if let Head::Detached(id) = repo.refs.head()? {
        tips.push(id);
    }
    if !repo.bare {
        tips.extend(repo.index()?.entries.values().map(|e| e.id));
    }
    Ok(tips)
}

/// True if the pack's file was written within `grace` of now.
fn is_young(repo: &Repository, pack: &LoadedPack, grace: Duration) -> bool {
    let path = repo.dir.join("objects/pack").join(format!("{}.pack", pack.name.stem()));
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
    SystemTime::now().duration_since(modified).map_or(true, |age| age < grace)
}

/// Repacks.
pub fn gc(repo: &mut Repository, opts: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
    let started = Instant::now();
    let _lock = Lock::acquire(&repo.dir.join("gc"))?;
    repo.odb.refresh()?;
    let old = repo.odb.packs();
    let mut report =
        GcReport { packs_before: old.len(), bytes_before: old.iter().map(|p| p.len).sum(), ..GcReport::default() };
    // Spares are taken under the index's lock; while a checkout holds it they are its own.
    if !repo.bare
        && let Ok(_index) = Lock::acquire(&repo.index_path())
    {
        report.spare_bytes_freed = crate::spare::free_all(&repo.dir);
    }
    if !repo.odb.broken().is_empty() {
        return Err(Error::Usage("some packs cannot be read: run `mlv fsck` and repair them before gc".into()));
    }
    let mut roots = live_tips(repo)?;
    for p in old.iter().filter(|p| is_young(repo, p, opts.grace)) {
        roots.extend(p.index.records.iter().map(|r| r.id));
    }
    let shallow = super::remote::shallow(repo)?;
    // Strict: an object that cannot be read stops gc before anything is deleted.
    let keep = reach::closure(&repo.odb, &roots, &Walk::everything(&shallow))?.objects;
    let rules = RepackRules::of(repo, opts.max_pack_bytes);
    let mut written = Vec::new();
    let mut copy = keep.clone();
    if opts.aggressive {
        let rebased = super::gc_aggressive::rebase(repo, &keep, &rules, progress)?;
        copy.retain(|id| !rebased.ids.contains(id));
        (report.tensors_rewritten, report.bases_changed) = (rebased.ids.len(), rebased.changed);
        written.extend(rebased.packs);
    }
    written.extend(write_packs(&repo.odb, &copy, &rules, &mut report.chains_cut, progress)?);
    // Packs that appeared meanwhile may need objects that were not kept: keep those too.
    let ours: HashSet<PackName> = old.iter().map(|p| p.name).chain(written.iter().copied()).collect();
    repo.odb.refresh()?;
    let newcomers: Vec<ObjectId> = repo
        .odb
        .packs()
        .iter()
        .filter(|p| !ours.contains(&p.name))
        .flat_map(|p| p.index.records.iter().map(|r| r.id))
        .collect();
    if !newcomers.is_empty() {
        let kept: HashSet<ObjectId> = keep.iter().copied().collect();
        let walk = Walk { stop: &|id| kept.contains(id), parents: true, shallow: &shallow };
        let rescued = reach::closure(&repo.odb, &newcomers, &walk)?.objects;
        let in_old: Vec<ObjectId> = rescued.into_iter().filter(|id| is_in(&old, id)).collect();
        written.extend(write_packs(&repo.odb, &in_old, &rules, &mut report.chains_cut, progress)?);
    }
    // A pack gc rewrote identically has the same name: it is not old any more.
    let doomed: Vec<_> = old.iter().filter(|p| !written.contains(&p.name)).cloned().collect();
    delete_packs(repo, &doomed)?;
    repo.odb = crate::store::Odb::open_dir(&repo.dir.join("objects"))?;
    let after = repo.odb.packs();
    report.objects_kept = keep.len();
    let total: HashSet<ObjectId> = old.iter().flat_map(|p| p.index.records.iter().map(|r| r.id)).collect();
    report.objects_dropped = total.len().saturating_sub(keep.len());
    report.packs_after = after.len();
    report.bytes_after = after.iter().map(|p| p.len).sum();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn is_in(packs: &[std::sync::Arc<LoadedPack>], id: &ObjectId) -> bool {
    packs.iter().any(|p| p.index.find(id).is_some())
}

/// How `gc` rewrites packs.
#[derive(Debug, Clone, Copy)]
pub struct RepackRules {
    /// Longest delta chain kept (`delta.max_chain`).
    pub max_chain: u8,
    /// How an object whose chain is cut is re-encoded.
    pub encode: EncodeOptions,
    /// Largest pack written.
    pub max_pack_bytes: u64,
}

impl RepackRules {
    /// The rules a repository's configuration sets.
    pub fn of(repo: &Repository, max_pack_bytes: u64) -> RepackRules {
        RepackRules::of_config(&repo.config, max_pack_bytes)
    }

    /// The rules a configuration sets.
    pub fn of_config(config: &crate::config::Config, max_pack_bytes: u64) -> RepackRules {
        RepackRules {
            max_chain: config.delta.max_chain,
            encode: EncodeOptions { zstd_level: config.delta.zstd_level },
            max_pack_bytes,
        }
    }
}

/// Writes `ids` (each after what it needs) into new packs of bounded size, copying entries
/// as stored except where a delta chain would exceed `delta.max_chain`.
pub(super) fn write_packs(
    odb: &Odb,
    ids: &[ObjectId],
    rules: &RepackRules,
    chains_cut: &mut usize,
    progress: &dyn Progress,
) -> Result<Vec<PackName>> {
    let RepackRules { max_chain, encode, max_pack_bytes } = *rules;
    // Bases not rewritten here keep the depth their pack records.
    let mut depth: HashMap<ObjectId, u8> = HashMap::new();
    let mut names = Vec::new();
    let new_pack = || PackWriter::new(&odb.staging_dir()).map(PackWriter::bypassing_cache);
    let mut writer = new_pack()?;
    progress.start("repacking", ids.iter().filter_map(|id| odb.stored_len(id)).sum());
    for (k, id) in ids.iter().enumerate() {
        if progress.cancelled() {
            return Err(StoreError::Cancelled.into());
        }
        let bases = odb.bases(id)?;
        let base_depth = |b: &ObjectId| depth.get(b).copied().or_else(|| odb.find(b).map(|f| f.1.depth)).unwrap_or(0);
        let d = bases.iter().map(|b| base_depth(b).saturating_add(1)).max().unwrap_or(0);
        let before = writer.offset();
        if d > max_chain {
            odb.copy_standalone(id, &mut writer, encode)?;
            *chains_cut += 1;
            depth.insert(*id, 0);
        } else {
            let rec = odb.copy_entry_with_depth(id, d, &mut writer)?;
            depth.insert(*id, rec);
        }
        progress.advance(writer.offset() - before);
        if writer.offset() >= max_pack_bytes || k + 1 == ids.len() {
            let full = std::mem::replace(&mut writer, new_pack()?);
            if let Some(sealed) = full.finish()? {
                names.push(odb.install(sealed)?);
            }
        }
    }
    progress.finish();
    Ok(names)
}

/// Deletes packs: the index first, so no reader opens a pack being deleted.
fn delete_packs(repo: &Repository, packs: &[std::sync::Arc<LoadedPack>]) -> Result<()> {
    let dir = repo.dir.join("objects/pack");
    let files = crate::store::LocalPacks::new(&dir);
    for p in packs {
        files.remove_files(&p.name)?;
    }
    // One directory sync for all of them, not one per pack.
    crate::fsutil::fsync_dir(&dir)?;
    Ok(())
}
