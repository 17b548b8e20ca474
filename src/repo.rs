//! A repository: its directory layout, configuration, objects, refs and revision syntax.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::{Index, LockedIndex};
use crate::object::{Commit, EntryKind, MAX_TREE_DEPTH, ObjectId, ObjectKind, Signature, Tag, Tree, TreeEntry};
use crate::refs::{FsRefs, HEADS, Head, REMOTES, RefStore, TAGS};
use crate::store::{ObjectWriter, Odb};

/// How long a command waits for another one to release the index lock.
const INDEX_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Name of the repository directory at the work-tree root.
pub const DIR_NAME: &str = ".mlv";

/// An open repository.
pub struct Repository {
    /// The work-tree root (for a bare repository, its directory).
    pub root: PathBuf,
    /// `<root>/.mlv`, or the directory of a bare repository.
    pub dir: PathBuf,
    /// True for a repository without a work tree.
    pub bare: bool,
    /// `.mlv/config`.
    pub config: Config,
    /// All objects.
    pub odb: Odb,
    /// Branches, tags, remote-tracking branches, HEAD.
    pub refs: Box<dyn RefStore>,
}

/// A file in a flattened tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatEntry {
    /// Blob or tensor file.
    pub kind: EntryKind,
    /// Its object.
    pub id: ObjectId,
    /// Logical size.
    pub size: u64,
    /// Executable bit.
    pub executable: bool,
}

/// A tree flattened to `/`-separated paths.
pub type FlatTree = BTreeMap<String, FlatEntry>;

impl Repository {
    /// Creates an empty repository at `root`.
    pub fn init(root: &Path) -> Result<Repository> {
        let dir = root.join(DIR_NAME);
        if dir.exists() {
            return Err(Error::AlreadyARepository(root.to_path_buf()));
        }
        create_layout(root, &dir, &Config::default())?;
        Repository::open(root)
    }

    /// Creates an empty bare repository (no work tree) in the directory `dir`, which must be
    /// empty or not exist.
    pub fn init_bare(dir: &Path) -> Result<Repository> {
        std::fs::create_dir_all(dir)?;
        if std::fs::read_dir(dir)?.next().is_some() {
            return Err(Error::Usage(format!("{} already exists and is not empty", dir.display())));
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        let mut config = Config::default();
        config.core.bare = true;
        // The layout is built beside `dir` and renamed over it, so a crash leaves either
        // nothing or a whole repository.
        std::fs::remove_dir(dir)?;
        create_layout(parent, dir, &config)?;
        Repository::open_bare(dir)
    }

    /// Opens the repository whose work tree is `root`.
    pub fn open(root: &Path) -> Result<Repository> {
        let dir = root.join(DIR_NAME);
        Repository::open_at(root, &dir, false)
    }

    /// Opens the bare repository in `dir`.
    pub fn open_bare(dir: &Path) -> Result<Repository> {
        Repository::open_at(dir, dir, true)
    }

    fn open_at(root: &Path, dir: &Path, bare: bool) -> Result<Repository> {
        let config = Config::load(&dir.join("config"))?;
        let odb = Odb::open_dir(&dir.join("objects"))?;
        let refs = Box::new(FsRefs::new(dir));
        Ok(Repository { root: root.to_path_buf(), dir: dir.to_path_buf(), bare, refs, config, odb })
    }

    /// Opens the repository at `path`: a work tree holding `.mlv`, or a bare repository.
    pub fn open_any(path: &Path) -> Result<Repository> {
        if path.join(DIR_NAME).is_dir() {
            Repository::open(path)
        } else if is_bare(path) {
            Repository::open_bare(path)
        } else {
            Err(Error::NotARepository(path.to_path_buf()))
        }
    }

    /// Finds the repository containing `start` (searching parent directories).
    pub fn discover(start: &Path) -> Result<Repository> {
        let start = std::path::absolute(start)?;
        let mut cur = start.as_path();
        loop {
            if cur.join(DIR_NAME).is_dir() || is_bare(cur) {
                return Repository::open_any(cur);
            }
            cur = cur.parent().ok_or_else(|| Error::NotARepository(start.clone()))?;
        }
    }

    /// Fails for a bare repository: the operation needs a work tree.
    pub fn require_worktree(&self) -> Result<()> {
        if self.bare { Err(Error::Bare(self.dir.clone())) } else { Ok(()) }
    }

    /// Looks for packs other processes added since the repository was opened.
    pub fn reload(&mut self) -> Result<()> {
        self.odb.refresh()?;
        Ok(())
    }

    /// Writes `.mlv/config` back, atomically.
    pub fn save_config(&self) -> Result<()> {
        crate::fsutil::atomic_write(&self.dir.join("config"), self.config.to_toml().as_bytes())?;
        Ok(())
    }

    /// A writer for a new pack, configured from `.mlv/config`.
    pub fn writer(&self) -> Result<ObjectWriter<'_>> {
        let opts = crate::codec::EncodeOptions { zstd_level: self.config.delta.zstd_level };
        Ok(ObjectWriter::new(&self.odb, opts, self.config.pack.chunk_elems, self.config.delta.max_chain)?)
    }

    /// Path of the staging index.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index")
    }

    /// Loads the staging index for reading only.
    pub fn index(&self) -> Result<Index> {
        Ok(Index::load(&self.index_path())?)
    }

    /// Loads the staging index to change it, holding its lock until the result is dropped.
    /// Waits a few seconds for another command that holds it, then fails naming the lock.
    pub fn lock_index(&self) -> Result<LockedIndex> {
        Ok(LockedIndex::open(&self.index_path(), INDEX_LOCK_PATIENCE)?)
    }

    /// The spare files a checkout writes into and keeps ([`crate::spare`]); call with the
    /// staging index locked.
    pub fn spares(&self) -> crate::spare::Spares {
        crate::spare::Spares::open(&self.dir, self.config.checkout.keep_spares)
    }

    /// The commit HEAD points at, if any.
    pub fn head_commit(&self) -> Result<Option<ObjectId>> {
        Ok(match self.refs.head()? {
            Head::Branch(b) => self.refs.read(&format!("{HEADS}{b}"))?,
            Head::Detached(id) => Some(id),
        })
    }

    /// Reads a commit object.
    pub fn commit(&self, id: &ObjectId) -> Result<Commit> {
        Ok(self.odb.commit(id)?)
    }

    /// The parents of a commit that are here: a shallow clone lacks those past its boundary.
    pub fn parents(&self, id: &ObjectId) -> Result<Vec<ObjectId>> {
        Ok(self.commit(id)?.parents.into_iter().filter(|p| self.odb.contains(p)).collect())
    }

    /// Reads a tree object.
    pub fn tree(&self, id: &ObjectId) -> Result<Tree> {
        Ok(self.odb.tree(id)?)
    }

    /// Reads an annotated tag object.
    pub fn tag(&self, id: &ObjectId) -> Result<Tag> {
        Ok(self.odb.tag(id)?)
    }

    /// All files of a tree, by path.
    pub fn flatten(&self, tree: &ObjectId) -> Result<FlatTree> {
        let mut out = FlatTree::new();
        self.flatten_into(tree, "", &mut out, 0)?;
        Ok(out)
    }

    fn flatten_into(&self, tree: &ObjectId, prefix: &str, out: &mut FlatTree, depth: usize) -> Result<()> {
        if depth > MAX_TREE_DEPTH {
            let what = format!("directories nested deeper than {MAX_TREE_DEPTH} levels");
            return Err(crate::store::StoreError::Corrupt { id: *tree, what }.into());
        }
        for e in self.tree(tree)?.entries {
            let path = format!("{prefix}{}", e.name);
            match e.kind {
                EntryKind::Tree => self.flatten_into(&e.id, &format!("{path}/"), out, depth + 1)?,
                kind => {
                    out.insert(path, FlatEntry { kind, id: e.id, size: e.size, executable: e.executable });
                }
            }
        }
        Ok(())
    }

    /// The flattened tree of a commit, or empty for None.
    pub fn commit_files(&self, commit: Option<ObjectId>) -> Result<FlatTree> {
        match commit {
            Some(c) => self.flatten(&self.commit(&c)?.tree),
            None => Ok(FlatTree::new()),
        }
    }

    /// Writes nested tree objects for a flat file list; returns the root tree id.
    pub fn write_tree(&self, writer: &mut ObjectWriter<'_>, files: &FlatTree) -> Result<ObjectId> {
        Ok(write_dir(writer, files, "")?.0)
    }

    /// Resolves a revision to a commit id: `HEAD`, `HEAD~N`, `HEAD^`, `<branch>`, `<tag>`,
    /// a full id or a unique id prefix, with any number of `~N`/`^` suffixes.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId> {
        let unknown = || Error::UnknownRevision(rev.to_string());
        let split = rev.find(['~', '^']).unwrap_or(rev.len());
        let (name, mut suffix) = rev.split_at(split);
        let mut id = self.resolve_name(name)?.ok_or_else(unknown)?;
        while let Some(c) = suffix.chars().next() {
            suffix = &suffix[1..];
            let digits: String = suffix.chars().take_while(char::is_ascii_digit).collect();
            suffix = &suffix[digits.len()..];
            let n: usize = if digits.is_empty() { 1 } else { digits.parse().map_err(|_| unknown())? };
            match c {
                '~' => {
                    for _ in 0..n {
                        id = *self.commit(&id)?.parents.first().ok_or_else(unknown)?;
                    }
                }
                _ => {
                    if n > 0 {
                        id = *self.commit(&id)?.parents.get(n - 1).ok_or_else(unknown)?;
                    }
                }
            }
        }
        Ok(id)
    }

    /// Resolves a revision as a push sends it: like [`Repository::resolve`], except that a tag
    /// names the tag object itself, not the commit it points at.
    pub fn resolve_ref_target(&self, rev: &str) -> Result<ObjectId> {
        let full = if rev.starts_with("refs/") { Some(rev.to_string()) } else { Some(format!("{TAGS}{rev}")) };
        if let Some(full) = full.filter(|f| crate::refs::check_full_name(f).is_ok())
            && let Some(id) = self.refs.read(&full)?
        {
            return Ok(id);
        }
        self.resolve(rev)
    }

    fn resolve_name(&self, name: &str) -> Result<Option<ObjectId>> {
        let head = self.refs.head()?;
        if name == "HEAD" || name == "@" {
            return self.head_commit()?.map(Some).ok_or_else(|| no_commits_yet(&head));
        }
        for prefix in [HEADS, TAGS, REMOTES] {
            if crate::refs::check_name(name).is_ok()
                && let Some(id) = self.refs.read(&format!("{prefix}{name}"))?
            {
                return self.peel(id).map(Some);
            }
        }
        if head == Head::Branch(name.to_string()) {
            return Err(no_commits_yet(&head));
        }
        if name.len() >= 4 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            return self.resolve_prefix(&name.to_ascii_lowercase());
        }
        Ok(None)
    }

    fn resolve_prefix(&self, prefix: &str) -> Result<Option<ObjectId>> {
        match self.odb.commits_with_prefix(prefix).as_slice() {
            // A whole id no readable pack holds may be in one that cannot be read: say so.
            [] => match prefix.parse::<ObjectId>().map(|id| self.odb.locate(&id)) {
                Ok(Err(e @ crate::store::StoreError::Unreadable { .. })) => Err(e.into()),
                _ => Ok(None),
            },
            [id] => self.peel(*id).map(Some),
            _ => Err(Error::AmbiguousRevision(prefix.into())),
        }
    }

    /// Follows annotated tags to the commit they name.
    pub fn peel(&self, mut id: ObjectId) -> Result<ObjectId> {
        for _ in 0..16 {
            match self.odb.header(&id)?.kind {
                ObjectKind::Tag => id = self.tag(&id)?.object,
                _ => return Ok(id),
            }
        }
        Err(Error::Usage(format!("tag chain too long at {}", id.short())))
    }

    /// Name and e-mail from `[user]` in the config, each completed from git's configuration
    /// when missing.
    fn configured_identity(&self) -> Result<(String, String)> {
        let user = self.config.user.clone().unwrap_or_default();
        let some = |s: String| Some(s).filter(|s| !s.is_empty());
        match (some(user.name), some(user.email)) {
            (Some(n), Some(e)) => Ok((n, e)),
            (n, e) => {
                let (git_name, git_email) = crate::provenance::git_identity(&self.root).ok_or(Error::NoIdentity)?;
                Ok((n.unwrap_or(git_name), e.unwrap_or(git_email)))
            }
        }
    }

    /// Commit author: `MLV_AUTHOR_NAME`/`MLV_AUTHOR_EMAIL`, then `[user]` in the config, then git config.
    pub fn signature(&self) -> Result<Signature> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (name, email) = match (env("MLV_AUTHOR_NAME"), env("MLV_AUTHOR_EMAIL")) {
            (Some(n), Some(e)) => (n, e),
            _ => self.configured_identity()?,
        };
        if !Signature::is_valid_part(&name) || !Signature::is_valid_part(&email) {
            return Err(Error::Usage("author name and e-mail must not contain '<', '>' or newlines".into()));
        }
        let (time, tz_minutes) = crate::provenance::now_with_zone();
        Ok(Signature { name, email, time, tz_minutes })
    }
}

/// The error for a revision naming a branch that has no commit yet (HEAD in a new repository).
fn no_commits_yet(head: &Head) -> Error {
    match head {
        Head::Branch(b) => Error::NoCommitsYet(b.clone()),
        Head::Detached(id) => Error::UnknownRevision(id.to_string()),
    }
}

/// True if `dir` looks like a bare repository: HEAD, config, objects and refs, no `.mlv`.
fn is_bare(dir: &Path) -> bool {
    ["HEAD", "config"].iter().all(|f| dir.join(f).is_file())
        && ["objects", "refs"].iter().all(|d| dir.join(d).is_dir())
        && Config::load(&dir.join("config")).is_ok_and(|c| c.core.bare)
}

/// Builds a repository directory's layout in a temporary directory inside `parent` and renames
/// it to `dir`, so a crash never leaves half a repository.
fn create_layout(parent: &Path, dir: &Path, config: &Config) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix(".mlv-init-").tempdir_in(parent)?;
    std::fs::create_dir_all(tmp.path().join("objects/pack"))?;
    std::fs::create_dir_all(tmp.path().join("refs/heads"))?;
    std::fs::create_dir_all(tmp.path().join("refs/tags"))?;
    crate::fsutil::atomic_write(&tmp.path().join("HEAD"), format!("ref: {HEADS}main\n").as_bytes())?;
    crate::fsutil::atomic_write(&tmp.path().join("config"), config.to_toml().as_bytes())?;
    crate::fsutil::fsync_dir(tmp.path())?;
    std::fs::rename(tmp.keep(), dir)?;
    crate::fsutil::fsync_dir(parent)?;
    Ok(())
}

/// Writes the trees for all files under `prefix`; returns (tree id, total size).
fn write_dir(writer: &mut ObjectWriter<'_>, files: &FlatTree, prefix: &str) -> Result<(ObjectId, u64)> {
    let mut entries: Vec<TreeEntry> = Vec::new();
    let mut subdirs: Vec<String> = Vec::new();
    for (path, e) in files.range(prefix.to_string()..) {
        let Some(rest) = path.strip_prefix(prefix) else { break };
        match rest.split_once('/') {
            Some((dir, _)) if !crate::object::is_valid_name(dir) => {
                return Err(Error::Usage(format!("{path:?} cannot be stored: a tree entry cannot be named {dir:?}")));
            }
            Some((dir, _)) => {
                if subdirs.last().map(String::as_str) != Some(dir) {
                    subdirs.push(dir.to_string());
                }
            }
            None if !crate::object::is_valid_name(rest) => {
                return Err(Error::Usage(format!("{path:?} cannot be stored: a tree entry cannot be named {rest:?}")));
            }
            None => entries.push(TreeEntry {
                name: rest.into(),
                kind: e.kind,
                executable: e.executable,
                id: e.id,
                size: e.size,
            }),
        }
    }
    for dir in subdirs {
        let (id, size) = write_dir(writer, files, &format!("{prefix}{dir}/"))?;
        entries.push(TreeEntry { name: dir, kind: EntryKind::Tree, executable: false, id, size });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let size = entries.iter().map(|e| e.size).sum();
    let tree = Tree { entries };
    Ok((writer.put(ObjectKind::Tree, &tree.encode())?, size))
}
