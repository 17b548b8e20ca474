//! Moving objects between repositories: what the other side lacks is worked out by walking
//! the object graph against what it has, then sent as packs whose entries keep their stored
//! encoding (a delta travels as a delta), in units of bounded size, each verified by the
//! receiver before anything may point at it. An interrupted transfer resumes: units that
//! arrived whole are not sent again.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;

use crate::object::ObjectId;
use crate::pack::{PackName, PackWriter};
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
    /// Seconds spent.
    pub seconds: f64,
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
    let mut unit: Vec<Run> = Vec::new();
    let mut unit_bytes = 0u64;
    for (k, id) in ids.iter().enumerate() {
        if progress.cancelled() {
            return Err(StoreError::Cancelled);
        }
        let (pack, rec) = from.locate(id)?;
        stats.objects += 1;
        stats.logical_bytes += rec.data_len;
        unit_bytes += rec.len;
        match unit.last_mut() {
            Some(run) if run.pack == pack.name && run.end == rec.offset => run.end += rec.len,
            _ => unit.push(Run { pack: pack.name, start: rec.offset, end: rec.offset + rec.len }),
        }
        if k + 1 == ids.len() || unit_bytes >= limit {
            receive_unit(to, from, &std::mem::take(&mut unit), &mut stats, progress)?;
            unit_bytes = 0;
        }
    }
    progress.finish();
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Downloads one unit's runs into a new local pack, verifies it and installs it.
fn receive_unit(
    to: &Odb,
    from: &Odb,
    runs: &[Run],
    stats: &mut TransferStats,
    progress: &dyn Progress,
) -> Result<(), StoreError> {
    let mut writer = PackWriter::new(&to.staging_dir())?;
    for run in runs {
        let mut sink = writer.raw_sink(progress);
        from.store().copy_range(&run.pack, run.start, run.end - run.start, &mut sink)?;
    }
    let Some(pack) = writer.finish_unindexed()? else { return Ok(()) };
    stats.wire_bytes += pack.len;
    stats.packs += 1;
    let sealed = verify_pack(to, pack, progress)?;
    to.install(sealed)?;
    Ok(())
}
