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
use crate::pack::{IndexRecord, PackError, PackName};
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
    fn checked(&mut self, rec: &IndexRecord) {
        self.objects += 1;
        self.bytes += rec.data_len;
    }

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

/// Objects decoded together at most, and their logical bytes: the chunks of a batch decode on
/// all cores at once.
const BATCH_OBJECTS: usize = 1024;
const BATCH_BYTES: u64 = 256 << 20;

/// An object to check, where it is stored.
struct ToCheck {
    rec: IndexRecord,
    file: String,
}

/// Decodes every object in `ids`, checking chunk checksums, delta bases and ids.
///
/// Objects go in batches whose chunks decode in parallel (a repository of small tensors keeps
/// every core busy), each delta chain together and from its root down, so that a delta finds
/// the base checked just before it in the cache instead of decoding it again. A batch that
/// fails is checked again one object at a time, to name every object that is wrong.
fn check_objects(odb: &Odb, ids: &[ObjectId], report: &mut FsckReport, progress: &dyn Progress) -> Result<()> {
    let order = chains_together(odb, ids);
    progress.start("checking", order.iter().map(|c| c.rec.data_len).sum());
    for batch in batches(&order) {
        if progress.cancelled() {
            return Err(StoreError::Cancelled.into());
        }
        for c in batch.iter().filter(|c| c.rec.depth as usize > MAX_DECODE_DEPTH) {
            let what = format!("delta chain of {} links", c.rec.depth);
            report.problem(what, Some(c.rec.id), Some(c.file.clone()), Some(c.rec.offset));
        }
        match check_batch(odb, batch, progress) {
            Ok(()) => batch.iter().for_each(|c| report.checked(&c.rec)),
            Err(StoreError::Cancelled) => return Err(StoreError::Cancelled.into()),
            Err(_) => {
                for c in batch {
                    match check_batch(odb, std::slice::from_ref(c), &crate::progress::Silent) {
                        Ok(()) => report.checked(&c.rec),
                        Err(StoreError::Cancelled) => return Err(StoreError::Cancelled.into()),
                        Err(e) => report.store_problem(Some(c.rec.id), Some((c.file.clone(), c.rec.offset)), &e),
                    }
                }
            }
        }
    }
    progress.finish();
    Ok(())
}

/// Decodes the objects of `batch` and checks their ids, and that each parses as its kind.
/// The objects that are bases of others in the batch keep their decoded chunks in the cache.
fn check_batch(odb: &Odb, batch: &[ToCheck], progress: &dyn Progress) -> std::result::Result<(), StoreError> {
    let ids: Vec<ObjectId> = batch.iter().map(|c| c.rec.id).collect();
    let mut bases = HashSet::new();
    for id in &ids {
        bases.extend(odb.bases(id)?);
    }
    let keep: HashSet<ObjectId> = ids.iter().filter(|id| bases.contains(*id)).copied().collect();
    odb.stream_all_keeping(&ids, &keep, |b| {
        progress.advance(b.len() as u64);
        Ok(())
    })?;
    batch.iter().try_for_each(|c| odb.check_parses(&c.rec.id, c.rec.kind))
}

/// The objects of `ids` that are here, each delta chain together from its root down, the
/// chains in the order their roots lie in the packs (the order their bytes are read best).
fn chains_together(odb: &Odb, ids: &[ObjectId]) -> Vec<ToCheck> {
    let mut keyed: Vec<((PackName, u64, u8), ToCheck)> = ids
        .iter()
        .filter_map(|id| {
            let (pack, rec) = odb.find(id)?;
            let (root_pack, root) = odb.find(&chain_root(odb, id)).unwrap_or((pack.clone(), rec));
            let check = ToCheck { rec, file: pack.path().display().to_string() };
            Some(((root_pack.name, root.offset, rec.depth), check))
        })
        .collect();
    keyed.sort_by_key(|(key, c)| (*key, c.rec.offset));
    keyed.into_iter().map(|(_, c)| c).collect()
}

/// The object at the bottom of `id`'s delta chain, following each link's first base that is
/// here (a missing base is reported when the object fails to decode).
fn chain_root(odb: &Odb, id: &ObjectId) -> ObjectId {
    let mut at = *id;
    for _ in 0..=MAX_DECODE_DEPTH {
        match odb.bases(&at).ok().and_then(|b| b.first().copied()) {
            Some(base) if odb.contains(&base) && base != at => at = base,
            _ => break,
        }
    }
    at
}

/// `order` cut into consecutive batches of at most [`BATCH_OBJECTS`] objects and, unless one
/// object is larger, [`BATCH_BYTES`].
fn batches(order: &[ToCheck]) -> impl Iterator<Item = &[ToCheck]> {
    let mut rest = order;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let len = rest
            .iter()
            .take(BATCH_OBJECTS)
            .take_while(|c| {
                bytes += c.rec.data_len;
                bytes <= BATCH_BYTES
            })
            .count()
            .max(1);
        let (batch, next) = rest.split_at(len);
        rest = next;
        Some(batch)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn to_check(data_len: u64) -> ToCheck {
        let rec = IndexRecord {
            id: ObjectId([0; 32]),
            offset: 0,
            len: 0,
            data_len,
            kind: ObjectKind::Tensor,
            depth: 0,
            base_count: 0,
            first_base: 0,
        };
        ToCheck { rec, file: String::new() }
    }

    #[test]
    fn batches_keep_order_and_bounds_and_give_a_large_object_its_own() {
        let sizes = [BATCH_BYTES / 2, BATCH_BYTES / 2, 1, 3 * BATCH_BYTES, 5, 7];
        let order: Vec<ToCheck> = sizes.iter().map(|&n| to_check(n)).collect();
        let cut: Vec<Vec<u64>> = batches(&order).map(|b| b.iter().map(|c| c.rec.data_len).collect()).collect();
        let want = vec![vec![BATCH_BYTES / 2, BATCH_BYTES / 2], vec![1], vec![3 * BATCH_BYTES], vec![5, 7]];
        assert_eq!(cut, want);

        let many: Vec<ToCheck> = (0..2 * BATCH_OBJECTS + 1).map(|_| to_check(1)).collect();
        let lens: Vec<usize> = batches(&many).map(<[ToCheck]>::len).collect();
        assert_eq!(lens, [BATCH_OBJECTS, BATCH_OBJECTS, 1]);
        assert_eq!(batches(&[]).count(), 0);
    }
}
