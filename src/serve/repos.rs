//! The repositories a server serves, and what it does to one: the [`RepoSource`] seam.
//!
//! A [`DirSource`] serves one repository at `/`, or a directory of them as `/<name>`, each
//! opened once and kept open. A later hub mode (one object store shared by every repository,
//! kept in S3) is another `RepoSource` whose [`ServedRepo`]s share one pack store; the routes
//! only ever see this trait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::object::ObjectId;
use crate::pack::{PackName, UnindexedPack};
use crate::refs::{HEADS, Head, RefError, RefStore, TAGS};
use crate::repo::Repository;
use crate::store::{PackStore, StoreError};
use crate::transport::wire::{Info, RefList, VERSION};
use crate::transport::{Receiver, ReceivingRefs};

/// True for a name a repository may be served under: `^[A-Za-z0-9][A-Za-z0-9._-]*$`, without
/// `..`, at most 100 bytes. Such a name is one path component that cannot leave the directory.
pub fn check_repo_name(name: &str) -> bool {
    name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !name.contains("..")
}

/// A request could not be served from the repositories.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The path names no repository this server serves.
    #[error("{0}")]
    NotFound(String),
    /// The name is not one a repository may have.
    #[error("{0:?} is not a repository name: use letters, digits, '.', '_' and '-'")]
    BadName(String),
    /// Something that is not a repository is in the way of creating one.
    #[error("{0}")]
    InTheWay(String),
    /// Opening or creating the repository failed.
    #[error("{0}")]
    Repo(#[from] crate::Error),
}

/// Where repositories come from.
pub trait RepoSource: Send + Sync {
    /// The name of the repository a request addresses: `requested` is the `{repo}` path
    /// component, None for a request to `/mlv/...`. Names are what tokens are granted on.
    fn name(&self, requested: Option<&str>) -> Result<String, SourceError>;

    /// The repository called `name` (from [`RepoSource::name`]), None if it does not exist.
    /// Blocking: call it off the async threads.
    fn open(&self, name: &str) -> Result<Option<Arc<ServedRepo>>, SourceError>;

    /// True if a push may create a missing repository.
    fn can_create(&self) -> bool;

    /// Creates the repository called `name` (or opens it, if another request just did).
    fn create(&self, name: &str) -> Result<Arc<ServedRepo>, SourceError>;
}

/// Repositories on this machine: DIR itself, or DIR's subdirectories.
pub struct DirSource {
    root: PathBuf,
    /// Set when DIR is one repository: its name.
    single: Option<String>,
    allow_create: bool,
    open: Mutex<HashMap<String, Arc<ServedRepo>>>,
    /// Held while creating a repository, so two pushes cannot both create one.
    creating: Mutex<()>,
}

impl DirSource {
    /// Serves `root`: one repository if it is one, else the repositories inside it.
    pub fn new(root: &Path, allow_create: bool) -> Result<DirSource, SourceError> {
        let root = std::path::absolute(root).map_err(crate::Error::from)?;
        if !root.is_dir() {
            return Err(SourceError::NotFound(format!("{} is not a directory", root.display())));
        }
        let mut source = DirSource {
            single: None,
            allow_create: false,
            open: Mutex::new(HashMap::new()),
            creating: Mutex::new(()),
            root: root.clone(),
        };
        match ServedRepo::open(&root) {
            Ok(repo) => {
                let name = root.file_name().map_or_else(|| "repo".into(), |n| n.to_string_lossy().into_owned());
                source.single = Some(name.clone());
                source.lock_open().insert(name, Arc::new(repo));
            }
            Err(crate::Error::NotARepository(_)) => source.allow_create = allow_create,
            Err(e) => return Err(e.into()),
        }
        Ok(source)
    }

    /// True when DIR is one repository served at `/`.
    pub fn is_single(&self) -> bool {
        self.single.is_some()
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ServedRepo>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self, name: &str) -> PathBuf {
        match &self.single {
            Some(_) => self.root.clone(),
            None => self.root.join(name),
        }
    }

    fn cached(&self, name: &str) -> Option<Arc<ServedRepo>> {
        let mut open = self.lock_open();
        let repo = open.get(name)?.clone();
        // Removed from disk since it was opened: forget it.
        if !repo.dir.is_dir() {
            open.remove(name);
            return None;
        }
        Some(repo)
    }
}

impl RepoSource for DirSource {
    fn name(&self, requested: Option<&str>) -> Result<String, SourceError> {
        match (&self.single, requested) {
            (Some(name), None) => Ok(name.clone()),
            (Some(_), Some(_)) => {
                Err(SourceError::NotFound("this server serves one repository, at / (no name in the path)".into()))
            }
            (None, None) => Err(SourceError::NotFound(
                "this server serves a directory of repositories: put the name in the URL, http://host:port/<name>"
                    .into(),
            )),
            (None, Some(n)) if check_repo_name(n) => Ok(n.to_string()),
            (None, Some(n)) => Err(SourceError::BadName(n.to_string())),
        }
    }

    fn open(&self, name: &str) -> Result<Option<Arc<ServedRepo>>, SourceError> {
        if let Some(repo) = self.cached(name) {
            return Ok(Some(repo));
        }
        if self.single.is_none() && !check_repo_name(name) {
            return Err(SourceError::BadName(name.to_string()));
        }
        let repo = match ServedRepo::open(&self.path(name)) {
            Ok(r) => Arc::new(r),
            Err(crate::Error::NotARepository(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(self.lock_open().entry(name.to_string()).or_insert(repo).clone()))
    }

    fn can_create(&self) -> bool {
        self.allow_create
    }

    fn create(&self, name: &str) -> Result<Arc<ServedRepo>, SourceError> {
        if !self.allow_create || !check_repo_name(name) {
            return Err(SourceError::NotFound(format!("no repository {name:?}")));
        }
        let _creating = self.creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(repo) = self.open(name)? {
            return Ok(repo);
        }
        if self.path(name).exists() {
            return Err(SourceError::InTheWay(format!("{name:?} exists on the server and is not a repository")));
        }
        Repository::init_bare(&self.path(name))?;
        self.open(name)?.ok_or_else(|| SourceError::NotFound(format!("repository {name:?} vanished")))
    }
}

/// One repository being served: its receiving side, kept open between requests.
pub struct ServedRepo {
    /// The repository directory (`.mlv`, or the bare repository).
    dir: PathBuf,
    bare: bool,
    receiver: Arc<Receiver>,
    /// Held while a ref is checked and moved, so concurrent pushes to one repository take turns.
    refs_lock: Mutex<()>,
}

/// A ref update that was not made.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The ref does not hold what the update expected; `found` is what it holds.
    #[error("{error}")]
    Conflict {
        /// The message.
        error: RefError,
        /// The ref's value now.
        found: Option<ObjectId>,
    },
    /// Another failure.
    #[error(transparent)]
    Ref(#[from] RefError),
}

impl ServedRepo {
    /// Opens the repository at `path` (a work tree or a bare repository).
    pub fn open(path: &Path) -> Result<ServedRepo, crate::Error> {
        let repo = Repository::open_any(path)?;
        let checked_out = match (repo.bare, repo.refs.head()) {
            (false, Ok(Head::Branch(b))) => Some(b),
            _ => None,
        };
        let receiver = Arc::new(Receiver { odb: repo.odb, refs: repo.refs, checked_out });
        Ok(ServedRepo { dir: repo.dir, bare: repo.bare, receiver, refs_lock: Mutex::new(()) })
    }

    /// Its packs.
    pub fn packs(&self) -> &Arc<dyn PackStore> {
        self.receiver.odb.store()
    }

    /// Where an upload is written before it is verified: a directory on the same filesystem
    /// as the packs, so installing it is a rename.
    pub fn staging_dir(&self) -> PathBuf {
        self.receiver.odb.staging_dir()
    }

    /// The length of a complete pack, None if there is no such pack.
    pub fn pack_len(&self, pack: &PackName) -> Result<Option<u64>, StoreError> {
        let find = || self.receiver.odb.packs().iter().find(|p| p.name == *pack).map(|p| p.len);
        if let Some(len) = find() {
            return Ok(Some(len));
        }
        self.receiver.odb.refresh()?;
        Ok(find())
    }

    /// Marks a pack for deletion by a later gc; false if there is no such pack.
    pub fn doom(&self, pack: &PackName, marked: u64) -> Result<bool, StoreError> {
        if self.pack_len(pack)?.is_none() {
            return Ok(false);
        }
        self.packs().doom(pack, marked)?;
        Ok(true)
    }

    /// Deletes a pack that a gc marked; false if it is not marked (then nothing happens).
    pub fn delete_marked(&self, pack: &PackName) -> Result<bool, StoreError> {
        if !self.packs().doomed()?.iter().any(|d| d.name == *pack) {
            return Ok(false);
        }
        self.packs().delete(pack)?;
        self.receiver.odb.refresh()?;
        Ok(true)
    }

    /// What `info` reports.
    pub fn info(&self) -> Result<Info, RefError> {
        Ok(Info { protocol: VERSION, exists: true, bare: self.bare, head: Some(self.receiver.refs.head()?.into()) })
    }

    /// Every branch and tag, and HEAD.
    pub fn refs(&self) -> Result<RefList, RefError> {
        let mut list = RefList { head: Some(self.receiver.refs.head()?.into()), ..RefList::default() };
        for prefix in [HEADS, TAGS] {
            for (name, id) in self.receiver.refs.list(prefix)? {
                list.refs.insert(format!("{prefix}{name}"), id);
            }
        }
        Ok(list)
    }

    /// Verifies an uploaded pack and installs it.
    pub fn receive(&self, pack: UnindexedPack) -> Result<PackName, StoreError> {
        self.receiver.receive(pack)
    }

    /// Moves `full` from `old` to `new` (None deletes it) by compare-and-swap, after the
    /// receiver's checks: the target and its history are all here, and a branch checked out
    /// in the served work tree stays where it is.
    pub fn update_ref(&self, full: &str, old: Option<ObjectId>, new: Option<ObjectId>) -> Result<(), UpdateError> {
        let _turn = self.refs_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check_not_checked_out_now(full)?;
        let refs = ReceivingRefs(self.receiver.clone());
        let moved = match (new, old) {
            (Some(new), old) => refs.update(full, new, old),
            (None, Some(old)) => refs.delete(full, old),
            (None, None) => return Err(RefError::Refused(format!("{full}: deleting needs the value it holds")).into()),
        };
        match moved {
            Err(error @ RefError::Conflict { .. }) => Err(UpdateError::Conflict { error, found: refs.read(full)? }),
            other => Ok(other?),
        }
    }

    /// The receiver knows the branch checked out when the repository was opened; this checks
    /// the one checked out now, in case the work tree switched since.
    fn check_not_checked_out_now(&self, full: &str) -> Result<(), RefError> {
        if self.bare {
            return Ok(());
        }
        match self.receiver.refs.head() {
            Ok(Head::Branch(b)) if full.strip_prefix(HEADS) == Some(b.as_str()) => Err(RefError::Refused(format!(
                "{full} is checked out in the served work tree; push to another branch, or serve a bare repository"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_harmless_component() {
        for good in ["llama", "Llama-3.1_8B", "a", "v1.0"] {
            assert!(check_repo_name(good), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "-x", "a/b", "a..b", "a\\b", "%2e%2e", "a b", &"x".repeat(101)] {
            assert!(!check_repo_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_directory_serves_the_repositories_inside_it_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        Repository::init_bare(&tmp.path().join("served/one")).unwrap();
        Repository::init_bare(&tmp.path().join("outside")).unwrap();
        let source = DirSource::new(&tmp.path().join("served"), true).unwrap();
        assert!(!source.is_single());
        assert!(source.open("one").unwrap().is_some());
        assert!(source.open("two").unwrap().is_none());
        assert!(matches!(source.name(Some("../outside")), Err(SourceError::BadName(_))));
        assert!(matches!(source.open(".."), Err(SourceError::BadName(_))));
        assert!(matches!(source.name(None), Err(SourceError::NotFound(_))));
        source.create("two").unwrap();
        std::fs::create_dir_all(tmp.path().join("served/notes")).unwrap();
        assert!(matches!(source.create("notes"), Err(SourceError::InTheWay(_))));
        assert!(tmp.path().join("served/two/HEAD").is_file());
        assert!(source.create("../three").is_err());
    }

    #[test]
    fn one_repository_is_served_at_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        Repository::init_bare(&tmp.path().join("solo")).unwrap();
        let source = DirSource::new(&tmp.path().join("solo"), true).unwrap();
        assert!(source.is_single() && !source.can_create());
        assert_eq!(source.name(None).unwrap(), "solo");
        assert!(source.name(Some("solo")).is_err());
        assert!(source.open("solo").unwrap().is_some());
    }
}
