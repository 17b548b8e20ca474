//! Facts about the environment a commit is made in, read with gix: the user's git identity
//! and the source-code commit that produced the checkpoint.

use std::path::Path;

use crate::object::GitProvenance;

/// `user.name`/`user.email` from the enclosing git repository's config, or the global git config.
pub fn git_identity(root: &Path) -> Option<(String, String)> {
    if let Ok(repo) = gix::discover(root)
        && let Some(Ok(sig)) = repo.author()
    {
        return Some((sig.name.to_string(), sig.email.to_string()));
    }
    let globals = gix::config::File::from_globals().ok()?;
    let name = globals.string("user.name")?.to_string();
    let email = globals.string("user.email")?.to_string();
    Some((name, email))
}

/// The HEAD commit of the git work tree containing `root`, and whether it has uncommitted changes.
pub fn git_source(root: &Path) -> Option<GitProvenance> {
    let repo = gix::discover(root).ok()?;
    let head = repo.head_id().ok()?;
    let dirty = repo.is_dirty().unwrap_or(true);
    Some(GitProvenance { commit: head.to_string(), dirty })
}

/// Now, in seconds since the epoch, with the local UTC offset in minutes.
pub fn now_with_zone() -> (i64, i32) {
    let t = gix::date::Time::now_local_or_utc();
    (t.seconds, t.offset / 60)
}

/// A commit time as git shows it, e.g. `Fri Nov 27 10:43:39 2026 +0000`.
pub fn format_time(seconds: i64, tz_minutes: i32) -> String {
    let time = gix::date::Time::new(seconds, tz_minutes.saturating_mul(60));
    time.format(gix::date::time::format::DEFAULT).unwrap_or_else(|_| format!("{seconds} {tz_minutes:+}min"))
}
