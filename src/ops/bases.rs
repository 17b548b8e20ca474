//! Finding delta bases for the tensors being added: (a) the same file and tensor name in the
//! parent commit, (b) the same in a revision the user names, (c) any stored tensor of the same
//! shape, ranked by name similarity. The writer then trial-encodes each and keeps the smallest.

use std::collections::HashMap;

use super::tensors::{NamedTensor, named_tensors};
use crate::error::Result;
use crate::object::{EntryKind, ObjectId};
use crate::refs::{HEADS, TAGS};
use crate::repo::{FlatTree, Repository};
use crate::safetensors::TensorSpan;
use crate::worktree::BaseFinder;

/// Candidates proposed by discovery.
const DISCOVERY_CANDIDATES: usize = 3;

/// Base finder over a repository's history.
pub struct RepoBases<'r> {
    repo: &'r Repository,
    parents: Vec<FlatTree>,
    named: Vec<(String, FlatTree)>,
    files: HashMap<ObjectId, Vec<NamedTensor>>,
    catalog: Option<Vec<NamedTensor>>,
    discover: bool,
}

impl<'r> RepoBases<'r> {
    /// Bases from `parent` plus `base_rev` (for every path) and the config's per-path bases.
    pub fn new(repo: &'r Repository, parent: Option<ObjectId>, base_rev: Option<&str>) -> Result<RepoBases<'r>> {
        let parents = match parent {
            Some(p) => vec![repo.commit_files(Some(p))?],
            None => Vec::new(),
        };
        let mut named = Vec::new();
        if let Some(rev) = base_rev {
            named.push((String::new(), repo.commit_files(Some(repo.resolve(rev)?))?));
        }
        for (path, rev) in &repo.config.delta.bases {
            named.push((path.trim_end_matches('/').to_string(), repo.commit_files(Some(repo.resolve(rev)?))?));
        }
        Ok(RepoBases {
            repo,
            parents,
            named,
            files: HashMap::new(),
            catalog: None,
            discover: repo.config.delta.discover,
        })
    }

    fn tensors_of(&mut self, id: ObjectId) -> &[NamedTensor] {
        let repo = self.repo;
        self.files
            .entry(id)
            .or_insert_with(|| repo.odb.tensor_file(&id).map(|tf| named_tensors(&tf)).unwrap_or_default())
    }

    fn by_name(&mut self, file: ObjectId, t: &TensorSpan) -> Option<ObjectId> {
        let want = normalise(&t.name);
        self.tensors_of(file).iter().find(|c| c.name == t.name || normalise(&c.name) == want).map(|c| c.id)
    }

    /// Same path in `tree`, else any tensor file of `tree` with a tensor of that name.
    fn in_tree(&mut self, tree: &FlatTree, rel: &str, t: &TensorSpan, any_file: bool) -> Option<ObjectId> {
        let files: Vec<ObjectId> = match tree.get(rel) {
            Some(e) if e.kind == EntryKind::TensorFile => vec![e.id],
            _ if any_file => tree.values().filter(|e| e.kind == EntryKind::TensorFile).map(|e| e.id).collect(),
            _ => Vec::new(),
        };
        files.into_iter().find_map(|f| self.by_name(f, t))
    }

    fn catalog(&mut self) -> &[NamedTensor] {
        if self.catalog.is_none() {
            let built = self.build_catalog().unwrap_or_default();
            self.catalog = Some(built);
        }
        self.catalog.as_deref().unwrap_or_default()
    }

    /// Every tensor in the tensor files of every branch and tag tip.
    fn build_catalog(&mut self) -> Result<Vec<NamedTensor>> {
        let mut tips = Vec::new();
        for prefix in [HEADS, TAGS] {
            for (_, id) in self.repo.refs.list(prefix)? {
                tips.push(self.repo.peel(id)?);
            }
        }
        tips.sort();
        tips.dedup();
        let mut out: Vec<NamedTensor> = Vec::new();
        let mut seen_files = std::collections::HashSet::new();
        for tip in tips {
            for e in self.repo.commit_files(Some(tip))?.into_values() {
                if e.kind == EntryKind::TensorFile && seen_files.insert(e.id) {
                    out.extend(self.tensors_of(e.id).iter().cloned());
                }
            }
        }
        out.sort_by_key(|t| t.id);
        out.dedup_by_key(|t| t.id);
        Ok(out)
    }

    fn discovered(&mut self, t: &TensorSpan) -> Vec<ObjectId> {
        let elements: u64 = t.shape.iter().product();
        let name = normalise(&t.name);
        let mut scored: Vec<((usize, usize), ObjectId)> = self
            .catalog()
            .iter()
            .filter(|c| {
                c.shape.iter().product::<u64>() == elements || c.shape.get(1..) == t.shape.get(1..) && t.shape.len() > 1
            })
            .map(|c| (similarity(normalise(&c.name), name), c.id))
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(DISCOVERY_CANDIDATES).map(|s| s.1).collect()
    }
}

impl BaseFinder for RepoBases<'_> {
    fn candidates(&mut self, rel: &str, t: &TensorSpan) -> Vec<ObjectId> {
        let mut out = Vec::new();
        let parents = std::mem::take(&mut self.parents);
        out.extend(parents.iter().filter_map(|p| self.in_tree(p, rel, t, false)));
        self.parents = parents;
        let named = std::mem::take(&mut self.named);
        for (path, tree) in &named {
            if path.is_empty() || rel == path || rel.starts_with(&format!("{path}/")) {
                out.extend(self.in_tree(tree, rel, t, true));
            }
        }
        self.named = named;
        if out.is_empty() && self.discover {
            out = self.discovered(t);
        }
        out.dedup();
        out
    }
}

/// A tensor name without the wrapper prefixes that task heads add (`bert.`, `model.`, ...).
fn normalise(name: &str) -> &str {
    const WRAPPERS: [&str; 6] = ["bert.", "roberta.", "model.", "transformer.", "base_model.model.", "module."];
    let mut n = name;
    while let Some(rest) = WRAPPERS.iter().find_map(|w| n.strip_prefix(w)) {
        n = rest;
    }
    n
}

/// How alike two names are: equal trailing dot-separated components, then equal components
/// anywhere when aligned from the end (so `layer.3.q` prefers `layer.3.q` over `layer.4.q`).
fn similarity(a: &str, b: &str) -> (usize, usize) {
    let pairs = || a.rsplit('.').zip(b.rsplit('.'));
    (pairs().take_while(|(x, y)| x == y).count(), pairs().filter(|(x, y)| x == y).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_prefixes_are_ignored() {
        assert_eq!(normalise("bert.encoder.layer.0.weight"), "encoder.layer.0.weight");
        assert_eq!(normalise("module.model.embed"), "embed");
        assert_eq!(normalise("classifier.weight"), "classifier.weight");
    }

    #[test]
    fn similarity_prefers_longer_shared_suffixes() {
        let s = |a, b| similarity(a, b);
        assert!(
            s("layer.0.attn.q.weight", "layer.1.attn.q.weight") > s("layer.0.attn.q.weight", "layer.0.attn.k.weight")
        );
        assert!(s("a.3.q", "a.3.q") > s("a.4.q", "a.3.q"));
    }
}
