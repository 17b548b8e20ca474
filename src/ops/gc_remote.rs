//! `mlv gc --remote`: repack a shared repository (a path, `mlv serve` or S3) that others push
//! to while it runs, in two phases, after restic's and rustic's prune.
//!
//! A run copies every object the remote's refs reach out of the packs it retires into new
//! packs, then only **marks** the retired packs for deletion; they stay readable. A later run
//! deletes packs marked at least the grace period earlier, after copying out whatever the refs
//! reach by then that lives only in marked packs. So a push that read the refs before the
//! marking — and sends only what they did not reach — finds every object it relies on still
//! there when it moves its ref, and the next run rescues those objects before it deletes
//! anything. Pushes must finish within the grace period; unreachable objects live at least
//! that long after the first run that found them unreachable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::gc::{RepackRules, write_packs};
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::pack::PackName;
use crate::progress::Progress;
use crate::reach::{self, Walk};
use crate::refs::{HEADS, Head, RefStore, TAGS};
use crate::store::{LoadedPack, Odb};
use crate::transport::Remote;

/// A pack at least this fraction of the largest pack size, holding only reachable objects,
/// is left as it is: a run rewrites small packs and packs with garbage, not the whole store.
const SETTLED_FRACTION: u64 = 32;

/// What a remote gc did.
#[derive(Debug, Default, Serialize)]
pub struct RemoteGcReport {
    /// The remote.
    pub url: String,
    /// Packs not marked for deletion, before and after.
    pub packs_before: usize,
    /// After.
    pub packs_after: usize,
    /// Their bytes before.
    pub bytes_before: u64,
    /// After.
    pub bytes_after: u64,
    /// Objects the refs reach.
    pub objects_live: usize,
    /// Objects copied into new packs.
    pub objects_copied: usize,
    /// Of those, objects that lived only in packs marked by an earlier run: a push that began
    /// before the marking moved a ref to them.
    pub objects_rescued: usize,
    /// Objects re-encoded without a base because their chain was too long.
    pub chains_cut: usize,
    /// New packs written.
    pub packs_written: usize,
    /// Packs marked for deletion by this run.
    pub packs_marked: usize,
    /// Packs deleted (marked by an earlier run at least the grace period ago).
    pub packs_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Marked packs this run wrote again byte for byte, so kept after all.
    pub packs_spared: usize,
    /// Packs marked and still within the grace period.
    pub packs_waiting: usize,
    /// Seconds spent.
    pub seconds: f64,
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The commits and tags the remote's refs name.
fn tips(refs: &dyn RefStore) -> Result<Vec<ObjectId>> {
    let mut tips = Vec::new();
    for prefix in [HEADS, TAGS] {
        tips.extend(refs.list(prefix)?.into_iter().map(|r| r.1));
    }
    if let Head::Detached(id) = refs.head()? {
        tips.push(id);
    }
    Ok(tips)
}

/// Packs left as they are: unmarked, nothing unreachable in them, and large (or the only
/// small one, which nothing would improve).
fn settled(packs: &[Arc<LoadedPack>], live: &HashSet<ObjectId>, max_pack_bytes: u64) -> Vec<Arc<LoadedPack>> {
    let clean: Vec<&Arc<LoadedPack>> =
        packs.iter().filter(|p| p.index.records.iter().all(|r| live.contains(&r.id))).collect();
    let small = packs.iter().filter(|p| p.len < max_pack_bytes / SETTLED_FRACTION).count();
    clean.into_iter().filter(|p| p.len >= max_pack_bytes / SETTLED_FRACTION || small == 1).cloned().collect()
}

/// Runs one gc of a shared repository. One with a work tree is refused: the objects its
/// staging index needs are named by no ref.
pub fn gc_remote(
    remote: &Remote,
    rules: &RepackRules,
    grace: Duration,
    progress: &dyn Progress,
) -> Result<RemoteGcReport> {
    let (url, store, refs) = (remote.url.as_str(), remote.packs.clone(), remote.refs.as_ref());
    if remote.work_tree {
        return Err(Error::Usage(format!(
            "{url} has a work tree, whose staged files no ref names: run `mlv gc` in that repository instead"
        )));
    }
    let started = Instant::now();
    let now = now_secs();
    let odb = Odb::open(store.clone())?;
    if let Some((info, why)) = odb.broken().first() {
        return Err(Error::Usage(format!(
            "{url}: {} cannot be read ({why}): run `mlv fsck --remote` and repair it before gc",
            info.name
        )));
    }
    let marks: HashMap<PackName, u64> = store.doomed()?.into_iter().map(|d| (d.name, d.marked)).collect();
    let all = odb.packs();
    let (marked, unmarked): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|p| marks.contains_key(&p.name));
    let mut report = RemoteGcReport {
        url: url.to_string(),
        packs_before: unmarked.len(),
        bytes_before: unmarked.iter().map(|p| p.len).sum(),
        ..RemoteGcReport::default()
    };
    // Strict: an object the refs reach that cannot be read stops gc before anything changes.
    let live = reach::closure(&odb, &tips(refs)?, &Walk::everything(&HashSet::new()))?.objects;
    let live_set: HashSet<ObjectId> = live.iter().copied().collect();
    let keep = settled(&unmarked, &live_set, rules.max_pack_bytes);
    let in_kept = |id: &ObjectId| keep.iter().any(|p| p.index.find(id).is_some());
    let in_unmarked = |id: &ObjectId| unmarked.iter().any(|p| p.index.find(id).is_some());
    let copy: Vec<ObjectId> = live.iter().filter(|id| !in_kept(id)).copied().collect();
    report.objects_live = live.len();
    report.objects_copied = copy.len();
    report.objects_rescued = copy.iter().filter(|id| !in_unmarked(id)).count();
    let written = write_packs(&odb, &copy, rules, &mut report.chains_cut, progress)?;
    report.packs_written = written.len();
    // Only now that the copies are in place: retire the rest, then delete what waited enough.
    let kept: HashSet<PackName> = keep.iter().map(|p| p.name).chain(written.iter().copied()).collect();
    let retired: HashSet<PackName> = unmarked.iter().map(|p| p.name).filter(|n| !kept.contains(n)).collect();
    for name in &retired {
        store.doom(name, now)?;
    }
    report.packs_marked = retired.len();
    let due = |name: &PackName| marks.get(name).is_some_and(|&t| now.saturating_sub(t) >= grace.as_secs());
    for p in &marked {
        if kept.contains(&p.name) {
            // Written again, byte for byte (packs are named by their content): keep it.
            store.spare(&p.name)?;
            report.packs_spared += 1;
        } else if due(&p.name) {
            store.delete(&p.name)?;
            report.packs_deleted += 1;
            report.bytes_deleted += p.len;
        } else {
            report.packs_waiting += 1;
        }
    }
    // Marks left by a deletion that was cut off after the pack went.
    let listed: HashSet<PackName> = all.iter().map(|p| p.name).collect();
    for name in marks.keys().filter(|n| !listed.contains(n) && due(n)) {
        store.delete(name)?;
    }
    let after = store.list()?;
    // Kept and written packs, and any a push installed meanwhile.
    let remaining: Vec<_> = after
        .iter()
        .filter(|p| kept.contains(&p.name) || !(marks.contains_key(&p.name) || retired.contains(&p.name)))
        .collect();
    report.packs_after = remaining.len();
    report.bytes_after = remaining.iter().map(|p| p.len).sum();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
