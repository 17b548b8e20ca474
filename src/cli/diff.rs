//! `mlv diff`.

use std::io::Write;

use mlv::ops::diff::{FileDiff, Side};
use mlv::ops::status::ChangeKind;

use super::{open_repo, print_json};

/// Compare revisions, or a revision and the work tree.
///
/// With no revision: HEAD against the work tree. With one: that revision against the work
/// tree. With two: the first against the second. Safetensors files are compared tensor by
/// tensor (elements changed, max and mean |Δ|, changes confined to the low mantissa bits);
/// text files get a unified diff.
#[derive(clap::Args)]
pub struct Args {
    /// Old side.
    old: Option<String>,
    /// New side (default: the work tree).
    new: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = open_repo()?;
    let old = Side::Commit(repo.resolve(args.old.as_deref().unwrap_or("HEAD"))?);
    let new = match &args.new {
        Some(r) => Side::Commit(repo.resolve(r)?),
        None => Side::WorkTree,
    };
    let files = mlv::ops::diff::diff(&repo, &old, &new)?;
    if args.json {
        return print_json(&files);
    }
    print_files(&files)?;
    Ok(())
}

/// Prints file diffs for people.
pub fn print_files(files: &[FileDiff]) -> std::io::Result<()> {
    for f in files {
        let what = match f.change {
            ChangeKind::New => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        };
        outln!("{what}: {}", f.path)?;
        if let Some(t) = &f.tensors {
            outln!(
                "  tensors: {} changed, {} added, {} removed, {} unchanged",
                t.changed.len(),
                t.added.len(),
                t.removed.len(),
                t.unchanged
            )?;
            for a in &t.added {
                outln!("  + {a}")?;
            }
            for r in &t.removed {
                outln!("  - {r}")?;
            }
            for c in &t.changed {
                let pct = if c.elements > 0 { 100.0 * c.changed as f64 / c.elements as f64 } else { 0.0 };
                outln!(
                    "  ~ {} {} {:?}: {} of {} elements changed ({pct:.1}%), max |Δ| {:.3e}, mean |Δ| {:.3e}, {} in low mantissa bits only",
                    c.name,
                    c.dtype,
                    c.shape.1,
                    c.changed,
                    c.elements,
                    c.max_abs_diff,
                    c.mean_abs_diff,
                    c.low_mantissa_only
                )?;
            }
        }
        if let Some(text) = &f.text {
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}
