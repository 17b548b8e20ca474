//! The library's top-level error: every failure a command can report, each with a hint.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::index::IndexError;
use crate::lock::LockError;
use crate::ops::config::ConfigKeyError;
use crate::pack::PackError;
use crate::refs::RefError;
use crate::store::StoreError;
use crate::transport::TransportError;
use crate::worktree::WorktreeError;

/// Anything an mlv operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `.mlv` directory here or above.
    #[error("not an mlv repository (or any parent up to /): {0}")]
    NotARepository(PathBuf),
    /// A work-tree command in a bare repository.
    #[error("{0} is a bare repository: this command needs a work tree")]
    Bare(PathBuf),
    /// `init` where a repository exists.
    #[error("{0} is already an mlv repository")]
    AlreadyARepository(PathBuf),
    /// A revision that names nothing.
    #[error("unknown revision {0:?}")]
    UnknownRevision(String),
    /// HEAD (or the current branch) named in a repository with no commit on that branch yet.
    #[error("no commits yet on branch {0:?}")]
    NoCommitsYet(String),
    /// `switch` to something that is not a branch (a tag, a commit, a remote-tracking branch).
    #[error("{name:?} is {what}, not a branch")]
    NotABranch {
        /// What the user named.
        name: String,
        /// What it is instead: "a tag", "a commit", "a remote-tracking branch".
        what: &'static str,
    },
    /// A prefix matching several objects.
    #[error("ambiguous revision {0:?}: it is a prefix of several object ids")]
    AmbiguousRevision(String),
    /// Commit with no change.
    #[error("nothing to commit, working tree clean")]
    NothingToCommit,
    /// Checkout would lose work.
    #[error("your local changes would be overwritten: {}", .0.join(", "))]
    DirtyWorktree(Vec<String>),
    /// `rm` would delete changes that exist nowhere else.
    #[error("not removing {}: uncommitted changes would be lost", .0.join(", "))]
    UncommittedChanges(Vec<String>),
    /// No author configured.
    #[error("no author identity: set MLV_AUTHOR_NAME and MLV_AUTHOR_EMAIL, or git's user.name and user.email")]
    NoIdentity,
    /// A path outside the work tree or not matching anything.
    #[error("pathspec {0:?} did not match any files")]
    NoMatch(String),
    /// A path that is no file of a revision.
    #[error("{path:?} is not a file in {rev}")]
    NoSuchFile {
        /// The path, relative to the root.
        path: String,
        /// The revision as given.
        rev: String,
    },
    /// Tensors asked of a file that is not a safetensors file.
    #[error("{path} in {rev} is not a safetensors file")]
    NotSafetensors {
        /// The path, relative to the root.
        path: String,
        /// The revision as given.
        rev: String,
    },
    /// A tensor name a safetensors file does not have.
    #[error("{path} in {rev} has no tensor named {name:?}")]
    NoSuchTensor {
        /// The tensor name.
        name: String,
        /// The file, relative to the root.
        path: String,
        /// The revision as given.
        rev: String,
    },
    /// The path is outside the repository.
    #[error("{0}: outside the repository")]
    OutsideRepository(PathBuf),
    /// A branch that exists already.
    #[error("a branch or tag named {0:?} already exists")]
    RefExists(String),
    /// Deleting a branch whose commits are on no other branch.
    #[error("branch {branch:?} ({id}) is not fully merged: its commits are not in HEAD or its upstream")]
    NotMerged {
        /// The branch.
        branch: String,
        /// Its commit, short.
        id: String,
    },
    /// Removing the current branch.
    #[error("cannot delete branch {0:?}: it is checked out")]
    CurrentBranch(String),
    /// A remote name that is not configured.
    #[error("no remote named {0:?}")]
    NoSuchRemote(String),
    /// A push that would lose commits on the remote.
    #[error("{0}")]
    Rejected(String),
    /// Invalid use that is the user's to fix.
    #[error("{0}")]
    Usage(String),
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configuration key that cannot be read or set as asked.
    #[error(transparent)]
    ConfigKey(#[from] ConfigKeyError),
    /// Object store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Refs problem.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// A lock is held by another running command.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// Index problem.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Work tree problem.
    #[error(transparent)]
    Worktree(#[from] WorktreeError),
    /// A remote could not be reached or used.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A remote sent objects that are damaged, missing or hostile; they were refused.
    #[error("{url}: {source}")]
    RemoteData {
        /// The remote.
        url: String,
        /// What is wrong with its data.
        source: StoreError,
    },
    /// Other I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<PackError> for Error {
    fn from(e: PackError) -> Self {
        Error::Store(e.into())
    }
}

impl Error {
    /// A suggestion of what to do next, when there is one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotARepository(_) => "run `mlv init` to create one, or cd into a repository".into(),
            Error::NotMerged { branch, .. } => {
                format!("delete it anyway with `mlv branch -D {branch}` (its commits then stay only until gc)")
            }
            Error::NoSuchRemote(_) => {
                "`mlv remote -v` lists the remotes; `mlv remote add <name> <url>` adds one".into()
            }
            Error::Bare(_) => "clone it (`mlv clone <dir> <new dir>`) to get a work tree".into(),
            Error::UnknownRevision(_) => {
                "use a branch, a tag, HEAD~N or a commit id; `mlv log` and `mlv branch` list them".into()
            }
            Error::AmbiguousRevision(_) => "give more characters of the id".into(),
            Error::ConfigKey(ConfigKeyError::Unknown(_)) => {
                "`mlv config --help` lists every key; `mlv config --list` shows those with a value".into()
            }
            Error::ConfigKey(ConfigKeyError::NotSet(key)) => format!("`mlv config --set {key} <value>` sets it"),
            Error::NoCommitsYet(_) => "make the first commit: `mlv add <path>`, then `mlv commit -m <message>`".into(),
            Error::NotABranch { name, what: "a remote-tracking branch" } => {
                let local = name.split_once('/').map_or(name.as_str(), |(_, b)| b);
                format!(
                    "`mlv switch -c {local} {name}` makes a local branch from it; `mlv checkout {name}` looks at it with a detached HEAD"
                )
            }
            Error::NotABranch { name, .. } => format!(
                "`mlv checkout {name}` checks it out with a detached HEAD; `mlv switch -c <new-branch> {name}` starts a branch there"
            ),
            Error::NothingToCommit => "use `mlv add <path>` to stage changes, or `mlv commit -a`".into(),
            Error::DirtyWorktree(_) => "commit your changes, or pass --force to discard them".into(),
            Error::UncommittedChanges(_) => {
                "commit them first, use --cached to only unstage (keeping the file), or -f/--force to remove anyway"
                    .into()
            }
            Error::NoIdentity => "e.g. `mlv config --set user.name 'Your Name'` and `mlv config --set user.email \
                                  you@example.com`, or export MLV_AUTHOR_NAME and MLV_AUTHOR_EMAIL"
                .into(),
            Error::NoMatch(_) => "check the path; `mlv status` shows what mlv sees".into(),
            Error::NoSuchFile { rev, .. } => {
                format!("paths are relative to the repository root; `mlv du {rev}` lists the files of {rev}")
            }
            Error::NotSafetensors { .. } => "only `.safetensors` files are stored as tensors".into(),
            Error::NoSuchTensor { rev, .. } => format!("`mlv du --tensors {rev}` lists the tensors of every file"),
            _ if matches!(self.lock_error(), Some(LockError::Held { .. })) => {
                "another mlv command is changing this repository; wait for it to finish, then retry".into()
            }
            Error::Ref(RefError::Clash { .. }) => "choose another name, or delete the ref in the way first".into(),
            Error::RemoteData { url, .. } => format!(
                "the remote's data is damaged or hostile and was refused (nothing damaged was kept here); \
                 `mlv fsck --remote {url}` lists what is wrong there"
            ),
            Error::Worktree(WorktreeError::BadPath(_)) => "rename the file, or list it in .mlvignore".into(),
            Error::Worktree(WorktreeError::Safetensors { .. }) => {
                "the file is not valid safetensors (a crashed save?); nothing was written. Restore the committed \
                 version with `mlv checkout HEAD -- <path>`, re-save it, or list it in .mlvignore"
                    .into()
            }
            _ if matches!(self.store_error(), Some(StoreError::Unreadable { .. })) => {
                "a pack of this repository is damaged: `mlv fsck` lists what is wrong; restore the pack from a \
                 backup or another clone"
                    .into()
            }
            _ if matches!(self.store_error(), Some(StoreError::Corrupt { .. })) => {
                "the repository is damaged; restore the named pack from a backup or another clone".into()
            }
            // By kind, not errno: an error that had its path added keeps the kind only.
            _ if self.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull) => {
                "the disk is full; free space and retry (nothing was changed)".into()
            }
            _ => return None,
        })
    }

    /// The object-store error underneath, also when a work-tree operation wraps it.
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            Error::Store(e) | Error::Worktree(WorktreeError::Store(e)) => Some(e),
            _ => None,
        }
    }

    /// The lock error underneath, whichever lock it was.
    fn lock_error(&self) -> Option<&LockError> {
        match self {
            Error::Lock(e) | Error::Index(IndexError::Locked(e)) | Error::Ref(RefError::Locked(e)) => Some(e),
            _ => None,
        }
    }

    /// The I/O error underneath, whichever layer reported it.
    fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Error::Io(e)
            | Error::Worktree(WorktreeError::Io { source: e, .. })
            | Error::Index(IndexError::Io(e))
            | Error::Ref(RefError::Io(e)) => Some(e),
            _ => match (self.store_error(), self.lock_error()) {
                (Some(StoreError::Io(e) | StoreError::Pack(PackError::Io { source: e, .. })), _) => Some(e),
                (_, Some(LockError::Io(e))) => Some(e),
                _ => None,
            },
        }
    }
}

/// Result with the library error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
