//! `mlv fsck`: check that everything a repository holds is what it claims to be.
//!
//! Every pack index is rebuilt from its pack and compared (never trusted); every object
//! reachable from a ref (or, with `--unreachable`, every object) is decoded, its chunks'
//! checksums and its id checked, its delta bases found; every ref must name an object that
//! is there; the staging index must be readable. The checks are those a received pack goes
//! through, so a repository that passes can be pushed, fetched and checked out.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::index::Index;
use crate::object::{ObjectId, ObjectKind};
use crate::pack::PackError;
use crate::progress::Progress;
use crate::reach::{self, Walk};
use crate::refs::{HEADS, Head, REMOTES, RefStore, TAGS};
use crate::store::{MAX_DECODE_DEPTH, Odb, PackStore, StoreError, check_stored_pack};

/// What to check.
#[derive(Debug, Default, Clone)]
pub struct FsckOptions {
    /// Check every object, not only those reachable from a ref.
    pub unreachable: bool,
    /// Do not read whole packs to rebuild their indexes (for remotes: only what is reachable is
    /// downloaded).
    pub skip_pack_content: bool,
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub what: String,
    /// The object concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectId>,
    /// The file (pack, index, ref) concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The byte offset in that file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// What `fsck` found.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    /// Packs examined.
    pub packs: usize,
    /// Objects decoded and checked.
    pub objects: usize,
    /// Logical bytes decoded.
    pub bytes: u64,
    /// Refs examined.
    pub refs: usize,
    /// Everything wrong; empty when the repository is sound.
    pub problems: Vec<Problem>,
}

impl FsckReport {
    fn problem(&mut self, what: String, object: Option<ObjectId>, file: Option<String>, offset: Option<u64>) {
        self.problems.push(Problem { what, object, file, offset });
    }

    /// Records a store error, with the file and offset when it names them.
    fn store_problem(&mut self, object: Option<ObjectId>, fallback: Option<(String, u64)>, e: &StoreError) {
        let (file, offset) = match e {
            StoreError::Pack(PackError::CorruptAt { path, offset, .. }) => {
                (Some(path.display().to_string()), Some(*offset))
            }
            StoreError::Pack(PackError::Corrupt { path, .. } | PackError::Io { path, .. }) => {
                (Some(path.display().to_string()), fallback.as_ref().map(|f| f.1))
            }
            _ => fallback.map_or((None, None), |(f, o)| (Some(f), Some(o))),
        };
        self.problem(e.to_string(), object, file, offset);
    }
}

/// Checks the objects of `store` and the refs of `refs`; `index` is the staging index of a
/// repository with a work tree.
pub fn fsck(
    store: Arc<dyn PackStore>,
    refs: &dyn RefStore,
    index: Option<&std::path::Path>,
    opts: &FsckOptions,
    progress: &dyn Progress,
) -> Result<FsckReport> {
    let mut report = FsckReport::default();
    let odb = Odb::open(store.clone())?;
    let failed = odb.broken();
    for (info, why) in &failed {
        let file = format!("{}/{}.idx", store.describe(), info.name.stem());
        report.problem(format!("pack {} cannot be read: {why}", info.name.stem()), None, Some(file), None);
    }
    let packs = odb.packs();
    report.packs = packs.len() + failed.len();
    if !opts.skip_pack_content {
        for p in packs.iter() {
            let info = crate::store::PackInfo { name: p.name, len: p.len };
            if let Err(e) = check_stored_pack(&odb, info, &p.index) {
                report.store_problem(None, None, &e);
            }
        }
    }
    let tips = check_refs(&odb, refs, &mut report)?;
    let ids = objects_to_check(&odb, &tips, opts, &mut report)?;
    check_objects(&odb, &ids, &mut report, progress)?;
    if let Some(path) = index {
        check_staging_index(&odb, path, &mut report);
    }
    Ok(report)
}

/// Every ref must name an object that is here, of the right kind. Returns the ref targets.
fn check_refs(odb: &Odb, refs: &dyn RefStore, report: &mut FsckReport) -> Result<Vec<ObjectId>> {
    let mut tips = Vec::new();
    let mut all: Vec<(String, ObjectId)> = Vec::new();
    for prefix in [HEADS, TAGS, REMOTES] {
        all.extend(refs.list(prefix)?.into_iter().map(|(n, id)| (format!("{prefix}{n}"), id)));
    }
    if let Ok(Head::Detached(id)) = refs.head() {
        all.push(("HEAD".into(), id));
    }
    report.refs = all.len();
    for (name, id) in all {
        let kinds: &[ObjectKind] =
            if name.starts_with(TAGS) { &[ObjectKind::Commit, ObjectKind::Tag] } else { &[ObjectKind::Commit] };
        match odb.find(&id) {
            Some((_, rec)) if kinds.contains(&rec.kind) => tips.push(id),
            Some((_, rec)) => report.problem(
                format!("{name} points at a {}, not a commit", rec.kind.name()),
                Some(id),
                Some(name),
                None,
            ),
            None => report.problem(
                format!("{name} points at {}, which is not here", id.short()),
                Some(id),
                Some(name),
                None,
            ),
        }
    }
    Ok(tips)
}

/// The objects to decode: what the refs reach (bases included), or everything.
fn objects_to_check(
    odb: &Odb,
    tips: &[ObjectId],
    opts: &FsckOptions,
    report: &mut FsckReport,
) -> Result<Vec<ObjectId>> {
    let mut broken = Vec::new();
    let none = HashSet::new();
    let walk = Walk { stop: &|_| false, parents: true, shallow: &none };
    let reached = reach::closure_with(odb, tips, &walk, &mut |id, e| {
        broken.push((*id, e));
        Ok(())
    })?;
    for (id, e) in &broken {
        let at = odb.find(id).map(|(p, r)| (p.path().display().to_string(), r.offset));
        report.store_problem(Some(*id), at, e);
    }
    if !opts.unreachable {
        return Ok(reached.objects);
    }
    let all: BTreeSet<ObjectId> = odb.packs().iter().flat_map(|p| p.index.records.iter().map(|r| r.id)).collect();
    Ok(all.into_iter().collect())
}

/// Decodes every object in `ids`, checking chunk checksums, delta bases and ids.
fn check_objects(odb: &Odb, ids: &[ObjectId], report: &mut FsckReport, progress: &dyn Progress) -> Result<()> {
    let total = ids.iter().filter_map(|id| odb.find(id)).map(|(_, r)| r.data_len).sum();
    progress.start("checking", total);
    for id in ids {
        if progress.cancelled() {
            return Err(StoreError::Cancelled.into());
        }
        let Some((pack, rec)) = odb.find(id) else { continue };
        let at = Some((pack.path().display().to_string(), rec.offset));
        if rec.depth as usize > MAX_DECODE_DEPTH {
            report.problem(
                format!("delta chain of {} links", rec.depth),
                Some(*id),
                at.clone().map(|a| a.0),
                Some(rec.offset),
            );
        }
        let result = odb
            .stream(id, |b| {
                progress.advance(b.len() as u64);
                Ok(())
            })
            .and_then(|_| odb.check_parses(id, rec.kind));
        match result {
            Ok(_) => {
                report.objects += 1;
                report.bytes += rec.data_len;
            }
            Err(StoreError::Cancelled) => return Err(StoreError::Cancelled.into()),
            Err(e) => report.store_problem(Some(*id), at, &e),
        }
    }
    progress.finish();
    Ok(())
}

/// The staging index must be readable and name only objects that are here.
fn check_staging_index(odb: &Odb, path: &std::path::Path, report: &mut FsckReport) {
    match Index::load(path) {
        Err(e) => report.problem(e.to_string(), None, Some(path.display().to_string()), None),
        Ok(index) => {
            for (p, e) in &index.entries {
                if !odb.contains(&e.id) {
                    let what = format!("the staging index names {} for {p}, which is not here", e.id.short());
                    report.problem(what, Some(e.id), Some(path.display().to_string()), None);
                }
            }
        }
    }
}
