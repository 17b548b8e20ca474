//! `mlv gc --aggressive`: choose every tensor's delta base again, as if the whole history were
//! added afresh with all of it known.
//!
//! Tensors are taken in the order of the commits that first hold them (oldest first). A
//! tensor's candidates are the latest earlier versions of it (same file path and tensor name,
//! on any branch), the bases `[delta.bases]` names or else tensors of the same shape found by
//! name, and its current bases — all among tensors first held by an earlier commit, so no two
//! tensors can become each other's base. Each tensor is decoded (and checked against its id)
//! into a scratch file and encoded again against the candidate that saves most by trial, or
//! alone; chains stay within `delta.max_chain`, counted as rewritten.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use memmap2::Mmap;

use super::bases::RepoBases;
use super::gc::RepackRules;
use super::tensors::{NamedTensor, named_tensors};
use crate::error::Result;
use crate::object::{EntryKind, ObjectId, ObjectKind};
use crate::pack::PackName;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::safetensors::TensorSpan;
use crate::store::{BaseChoice, NewObject, StoreError, TensorSource};
use crate::worktree::BaseFinder;

/// What re-choosing bases wrote.
#[derive(Debug, Default)]
pub struct Rebased {
    /// The packs holding the rewritten tensors.
    pub packs: Vec<PackName>,
    /// The tensors rewritten.
    pub ids: HashSet<ObjectId>,
    /// Of those, how many changed base (or went from alone to a delta, or back).
    pub changed: usize,
}

/// A tensor and the file that first holds it.
struct Birth {
    tensor: NamedTensor,
    path: String,
}

/// Every tensor of the commits in `keep`, in the order of the commit that first holds it:
/// commits by the time they were made (so separate histories interleave as they were
/// written), ties in the order of `keep`, which lists each commit after its parents.
fn births(repo: &Repository, keep: &[ObjectId]) -> Result<Vec<Birth>> {
    let mut commits = Vec::new();
    for &id in keep.iter().filter(|id| repo.odb.find(id).is_some_and(|f| f.1.kind == ObjectKind::Commit)) {
        commits.push((repo.odb.commit(&id)?.committer.time, id));
    }
    commits.sort_by_key(|c| c.0);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (_, commit) in commits {
        for (path, e) in repo.commit_files(Some(commit))? {
            if e.kind != EntryKind::TensorFile {
                continue;
            }
            for tensor in named_tensors(&repo.odb.tensor_file(&e.id)?) {
                if seen.insert(tensor.id) {
                    out.push(Birth { tensor, path: path.clone() });
                }
            }
        }
    }
    Ok(out)
}

/// Earlier versions of a tensor tried as its base, nearest first: enough to step over
/// versions whose chains are full.
const EARLIER_VERSIONS: usize = 4;

/// Rewrites every tensor that a commit in `keep` holds, choosing its base again.
pub fn rebase(repo: &Repository, keep: &[ObjectId], rules: &RepackRules, progress: &dyn Progress) -> Result<Rebased> {
    let births = births(repo, keep)?;
    let order: HashMap<ObjectId, usize> = births.iter().enumerate().map(|(k, b)| (b.tensor.id, k)).collect();
    let total = births.iter().filter_map(|b| repo.odb.find(&b.tensor.id)).map(|f| f.1.data_len).sum();
    progress.start("re-choosing delta bases", total);
    let mut done = Rebased::default();
    let mut writer = repo.writer()?.with_progress(progress).rewriting(HashMap::new());
    // Named bases and discovery, as `add` proposes them when there is no parent.
    let mut finder = RepoBases::new(repo, None, None)?;
    // Earlier versions of each (path, tensor name), oldest first.
    let mut versions: HashMap<(&str, &str), Vec<ObjectId>> = HashMap::new();
    for (k, birth) in births.iter().enumerate() {
        if progress.cancelled() {
            return Err(StoreError::Cancelled.into());
        }
        let old = repo.odb.bases(&birth.tensor.id)?;
        let span = TensorSpan {
            name: birth.tensor.name.clone(),
            dtype: birth.tensor.dtype,
            shape: birth.tensor.shape.clone(),
            start: 0,
            end: 0,
        };
        let earlier = versions.entry((birth.path.as_str(), birth.tensor.name.as_str())).or_default();
        let mut candidates: Vec<ObjectId> = earlier.iter().rev().take(EARLIER_VERSIONS).copied().collect();
        earlier.push(birth.tensor.id);
        candidates.extend(finder.candidates(&birth.path, &span));
        candidates.extend(old.iter().copied());
        candidates.retain(|c| order.get(c).is_some_and(|&o| o < k));
        let mut seen = HashSet::new();
        candidates.retain(|c| seen.insert(*c));
        let choice = rewrite(repo, &mut writer, birth.tensor.id, candidates)?;
        done.ids.insert(birth.tensor.id);
        let now: Vec<ObjectId> = match choice {
            BaseChoice::Delta(b) => vec![b],
            _ => Vec::new(),
        };
        done.changed += usize::from(now != old);
        if writer.written_bytes() >= rules.max_pack_bytes {
            let (name, depths) = writer.finish_rewriting()?;
            done.packs.extend(name);
            writer = repo.writer()?.with_progress(progress).rewriting(depths);
        }
    }
    done.packs.extend(writer.finish_rewriting()?.0);
    progress.finish();
    Ok(done)
}

/// Decodes one tensor into a scratch file beside the packs and stores it again.
fn rewrite(
    repo: &Repository,
    writer: &mut crate::store::ObjectWriter<'_>,
    id: ObjectId,
    candidates: Vec<ObjectId>,
) -> Result<BaseChoice> {
    let mut scratch = tempfile::Builder::new().prefix(".tmp-rebase-").tempfile_in(repo.odb.staging_dir())?;
    let header = {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, scratch.as_file_mut());
        let header = repo.odb.stream(&id, |bytes| out.write_all(bytes))?;
        out.flush()?;
        header
    };
    // SAFETY: a private temporary file that nothing else writes while it is mapped.
    let map = unsafe { Mmap::map(scratch.as_file()) }?;
    let item = NewObject {
        kind: ObjectKind::Tensor,
        src: TensorSource { map: &map, start: 0, meta: header.meta },
        id,
        candidates,
    };
    let mut choices = writer.put_all(vec![item])?;
    Ok(choices.pop().unwrap_or(BaseChoice::Duplicate))
}
