//! Moving objects between repositories: what the other side lacks is worked out by walking
//! the object graph against what it has, then sent as packs whose entries keep their stored
//! encoding (a delta travels as a delta), in units of bounded size, each verified by the
//! receiver before anything may point at it. An interrupted transfer resumes: units that
//! arrived whole are not sent again.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;

use crate::object::ObjectId;
use crate::pack::{PackError, PackName, PackWriter, UnindexedPack};
use crate::progress::Progress;
use crate::reach::{self, Walk};
use crate::store::{Odb, PackStore, StoreError, verify_pack};

/// Largest transfer unit by default: a pack of about this many bytes (one larger object makes
/// a larger one). An interrupted transfer loses at most one unit of work.
pub const DEFAULT_UNIT_BYTES: u64 = 256 << 20;

/// The transfer unit size: [`DEFAULT_UNIT_BYTES`], or `MLV_TRANSFER_UNIT` bytes (tests use
/// small units to exercise resuming).
pub fn unit_bytes() -> u64 {
    std::env::var("MLV_TRANSFER_UNIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_UNIT_BYTES)
}

/// What a transfer moved.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TransferStats {
    /// Objects in the packs.
    pub objects: u64,
    /// Their logical size (decoded bytes).
    pub logical_bytes: u64,
    /// Bytes of packs actually sent or received.
    pub wire_bytes: u64,
    /// Packs sent or received.
    pub packs: u64,
    /// Packs the other side had already (an earlier, interrupted transfer).
    pub packs_skipped: u64,
    /// Seconds spent, all told.
    pub seconds: f64,
    /// Of those, seconds spent verifying what was received (decoding every object).
    pub verify_seconds: f64,
}

/// Where a unit ends: at the size limit, or past a quarter of it after an object whose id
/// ends a run (one in eight). The cut points depend only on the objects, so a retried
/// transfer of the same objects rebuilds the same packs, which the receiver already has.
fn cut_here(unit_bytes: u64, limit: u64, id: &ObjectId) -> bool {
    unit_bytes >= limit || (unit_bytes >= limit / 4 && id.0[0].is_multiple_of(8))
}

/// The objects reachable from `wants` that are not reachable from `haves` (both in `odb`),
/// each after the objects it needs.
pub fn missing_objects(
    odb: &Odb,
    wants: &[ObjectId],
    haves: &[ObjectId],
    shallow: &HashSet<ObjectId>,
) -> Result<Vec<ObjectId>, StoreError> {
    let have_set = reach::reachable_set(odb, haves, shallow)?;
    let walk = Walk { stop: &|id| have_set.contains(id), parents: true, shallow };
    Ok(reach::closure(odb, wants, &walk)?.objects)
}

/// Sends `ids` (in order) from `odb` to `dest` as packs of about `limit` bytes.
pub fn send_objects(
    odb: &Odb,
    ids: &[ObjectId],
    dest: &dyn PackStore,
    limit: u64,
    progress: &dyn Progress,
) -> Result<TransferStats, StoreError> {
    let started = Instant::now();
    let mut stats = TransferStats::default();
    progress.start("sending", ids.iter().filter_map(|id| odb.stored_len(id)).sum());
    let mut writer = PackWriter::new(&odb.staging_dir())?;
    for (k, id) in ids.iter().enumerate() {
        if progress.cancelled() {
            return Err(StoreError::Cancelled);
        }
        let rec = odb.copy_entry(id, &mut writer)?;
        stats.objects += 1;
        stats.logical_bytes += rec.data_len;
        if k + 1 == ids.len() || cut_here(writer.offset(), limit, id) {
            let full = std::mem::replace(&mut writer, PackWriter::new(&odb.staging_dir())?);
            deliver(full, dest, &mut stats, progress)?;
        }
    }
    progress.finish();
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Seals a unit and installs it at `dest`, unless it is there already.
fn deliver(
    writer: PackWriter,
    dest: &dyn PackStore,
    stats: &mut TransferStats,
    progress: &dyn Progress,
) -> Result<(), StoreError> {
    let Some(sealed) = writer.finish()? else { return Ok(()) };
    let len = sealed.len;
    if dest.has_pack(&sealed.name)? {
        stats.packs_skipped += 1;
    } else {
        dest.install(sealed)?;
        stats.packs += 1;
        stats.wire_bytes += len;
    }
    progress.advance(len);
    Ok(())
}

/// A run of entries lying back to back in one remote pack.
struct Run {
    pack: PackName,
    start: u64,
    end: u64,
}

/// Copies `ids` (in order) from the remote database `from` into `to`: entries are read in
/// runs of adjacent bytes, gathered into units of about `limit` bytes, and each unit is
/// verified against what `to` holds and installed before the next.
pub fn receive_objects(
    to: &Odb,
    from: &Odb,
    ids: &[ObjectId],
    limit: u64,
    progress: &dyn Progress,
) -> Result<TransferStats, StoreError> {
    let started = Instant::now();
    let mut stats = TransferStats::default();
    progress.start("receiving", ids.iter().filter_map(|id| from.stored_len(id)).sum());
    let mut unit: Vec<ObjectId> = Vec::new();
    let mut unit_bytes = 0u64;
    for (k, id) in ids.iter().enumerate() {
        if progress.cancelled() {
            return Err(StoreError::Cancelled);
        }
        let (_, rec) = from.locate(id)?;
        stats.objects += 1;
        stats.logical_bytes += rec.data_len;
        unit_bytes += rec.len;
        unit.push(*id);
        if k + 1 == ids.len() || unit_bytes >= limit {
            receive_unit(to, from, &std::mem::take(&mut unit), &mut stats, progress)?;
            unit_bytes = 0;
        }
    }
    progress.finish();
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Where `ids` lie in `from`'s packs, as runs of adjacent entries.
fn runs_of(from: &Odb, ids: &[ObjectId]) -> Result<Vec<Run>, StoreError> {
    let mut runs: Vec<Run> = Vec::new();
    for id in ids {
        let (pack, rec) = from.locate(id)?;
        match runs.last_mut() {
            Some(run) if run.pack == pack.name && run.end == rec.offset => run.end += rec.len,
            _ => runs.push(Run { pack: pack.name, start: rec.offset, end: rec.offset + rec.len }),
        }
    }
    Ok(runs)
}

/// Downloads `runs` into a new local pack, not yet verified.
fn download(to: &Odb, from: &Odb, runs: &[Run], progress: &dyn Progress) -> Result<Option<UnindexedPack>, StoreError> {
    let mut writer = PackWriter::new(&to.staging_dir())?;
    for run in runs {
        let mut sink = writer.raw_sink(progress);
        from.store().copy_range(&run.pack, run.start, run.end - run.start, &mut sink)?;
    }
    Ok(writer.finish_unindexed()?)
}

/// Downloads one unit's objects into a new local pack, verifies it and installs it. If a gc
/// on the remote deleted a pack the unit was read from (its objects moved to other packs),
/// the unit is read once more from where they are now.
fn receive_unit(
    to: &Odb,
    from: &Odb,
    ids: &[ObjectId],
    stats: &mut TransferStats,
    progress: &dyn Progress,
) -> Result<(), StoreError> {
    let runs = runs_of(from, ids)?;
    let downloaded = match download(to, from, &runs, progress) {
        Err(e) if !matches!(e, StoreError::Cancelled) => {
            let read_from: Vec<PackName> = runs.iter().map(|r| r.pack).collect();
            if !from.dropped(&read_from)? {
                return Err(e);
            }
            download(to, from, &runs_of(from, ids)?, progress)?
        }
        done => done?,
    };
    let Some(pack) = downloaded else { return Ok(()) };
    stats.wire_bytes += pack.len;
    stats.packs += 1;
    let started = Instant::now();
    let tmp = pack.file.to_path_buf();
    let sealed = verify_pack(to, pack, progress).map_err(|e| as_received(e, &tmp))?;
    to.install(sealed)?;
    stats.verify_seconds += started.elapsed().as_secs_f64();
    Ok(())
}

/// An error about the unit being verified names it as received, not by its temporary file,
/// which is gone by the time anyone reads the message.
fn as_received(e: StoreError, tmp: &std::path::Path) -> StoreError {
    let received = || std::path::PathBuf::from("the pack received");
    match e {
        StoreError::Pack(PackError::CorruptAt { path, offset, what }) if path == tmp => {
            PackError::CorruptAt { path: received(), offset, what }.into()
        }
        StoreError::Pack(PackError::Corrupt { path, what }) if path == tmp => {
            PackError::Corrupt { path: received(), what }.into()
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Commit, EntryKind, ObjectKind, Signature, Tree, TreeEntry};
    use crate::progress::Silent;
    use crate::refs::RefError;
    use crate::repo::Repository;
    use crate::transport::Remote;

    fn sig() -> Signature {
        Signature { name: "t".into(), email: "t@x".into(), time: 0, tz_minutes: 0 }
    }

    /// Commits one blob `content` on top of `parent`; returns (commit, tree, blob).
    fn commit(repo: &Repository, content: &[u8], parent: Option<ObjectId>) -> (ObjectId, ObjectId, ObjectId) {
        let mut w = repo.writer().unwrap();
        let blob = w.put(ObjectKind::Blob, content).unwrap();
        let entry = TreeEntry { name: "f".into(), kind: EntryKind::Blob, executable: false, id: blob, size: 1 };
        let tree = w.put(ObjectKind::Tree, &Tree { entries: vec![entry] }.encode()).unwrap();
        let c = Commit {
            tree,
            parents: parent.into_iter().collect(),
            author: sig(),
            committer: sig(),
            git: None,
            message: "m\n".into(),
        };
        let id = w.put(ObjectKind::Commit, &c.encode()).unwrap();
        w.finish().unwrap();
        (id, tree, blob)
    }

    #[test]
    fn a_remote_gets_exactly_the_missing_objects_and_a_ref_only_to_complete_history() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let remote = Remote::memory().unwrap();
        let (c1, _, _) = commit(&repo, b"one", None);
        let (c2, t2, b2) = commit(&repo, b"two", Some(c1));
        let none = HashSet::new();

        // Only the commit object: the receiver refuses a ref to a commit whose tree is missing.
        send_objects(&repo.odb, &[c1], remote.packs.as_ref(), DEFAULT_UNIT_BYTES, &Silent).unwrap();
        let refused = remote.refs.update("refs/heads/main", c1, None);
        assert!(matches!(refused, Err(RefError::Refused(_))), "{refused:?}");

        let all = missing_objects(&repo.odb, &[c1], &[], &none).unwrap();
        send_objects(&repo.odb, &all, remote.packs.as_ref(), DEFAULT_UNIT_BYTES, &Silent).unwrap();
        remote.refs.update("refs/heads/main", c1, None).unwrap();

        let missing = missing_objects(&repo.odb, &[c2], &[c1], &none).unwrap();
        assert_eq!(missing, vec![b2, t2, c2], "dependencies first, nothing the remote has");
        let stats = send_objects(&repo.odb, &missing, remote.packs.as_ref(), DEFAULT_UNIT_BYTES, &Silent).unwrap();
        assert_eq!((stats.objects, stats.packs), (3, 1));
        assert!(matches!(remote.refs.update("refs/heads/main", c2, None), Err(RefError::Conflict { .. })));
        remote.refs.update("refs/heads/main", c2, Some(c1)).unwrap();

        // Sending the same units again costs nothing: the remote has those packs.
        let again = send_objects(&repo.odb, &missing, remote.packs.as_ref(), DEFAULT_UNIT_BYTES, &Silent).unwrap();
        assert_eq!((again.packs, again.packs_skipped, again.wire_bytes), (0, 1, 0));

        // And everything comes back, verified, into an empty repository.
        let other = tempfile::tempdir().unwrap();
        let copy = Repository::init(other.path()).unwrap();
        let theirs = Odb::open(remote.packs.clone()).unwrap();
        let wanted = missing_objects(&theirs, &[c2], &[], &none).unwrap();
        receive_objects(&copy.odb, &theirs, &wanted, 64, &Silent).unwrap();
        assert_eq!(copy.odb.read(&b2).unwrap().1, b"two");
        assert!(reach::is_ancestor(&copy.odb, &c1, &c2).unwrap());
    }

    #[test]
    fn a_fetch_reads_objects_from_where_a_gc_moved_them_after_it_listed_the_packs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let (c, t, b) = commit(&repo, b"one", None);
        let first = repo.odb.packs()[0].name;
        // The fetching side lists the packs (only their indexes are read) ...
        let theirs = Odb::open(repo.odb.store().clone()).unwrap();
        // ... then a gc copies the objects into a new pack and deletes the old one.
        let mut w = PackWriter::new(&repo.odb.staging_dir()).unwrap();
        for id in [c, t, b] {
            repo.odb.copy_entry(&id, &mut w).unwrap();
        }
        repo.odb.install(w.finish().unwrap().unwrap()).unwrap();
        repo.odb.store().delete(&first).unwrap();

        let other = tempfile::tempdir().unwrap();
        let copy = Repository::init(other.path()).unwrap();
        let stats = receive_objects(&copy.odb, &theirs, &[b, t, c], DEFAULT_UNIT_BYTES, &Silent).unwrap();
        assert_eq!((stats.objects, stats.packs), (3, 1));
        assert_eq!(copy.odb.read(&b).unwrap().1, b"one");
    }

    #[test]
    fn a_read_that_raced_another_threads_refresh_still_sees_its_pack_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        commit(&repo, b"one", None);
        let first = repo.odb.packs()[0].name;
        repo.odb.store().delete(&first).unwrap();
        // The other thread refreshed first: this one's refresh changes nothing, yet the pack
        // it failed to read is gone, so its read must be retried.
        assert!(repo.odb.refresh().unwrap());
        assert!(!repo.odb.refresh().unwrap());
        assert!(repo.odb.dropped(&[first]).unwrap());
    }

    #[test]
    fn units_are_cut_by_size_and_only_at_content_defined_points_past_a_quarter() {
        let low = ObjectId([8; 32]);
        let high = ObjectId([9; 32]);
        assert!(cut_here(100, 100, &high));
        assert!(cut_here(30, 100, &low) && !cut_here(30, 100, &high));
        assert!(!cut_here(20, 100, &low));
    }
}
