//! `mlv du`.

use mlv::ops::du::{Storage, Usage};

use super::{human, open_repo_any, print_json};

/// Disk usage of a commit.
///
/// Logical bytes are what checkout writes; stored bytes are what the commit added to the
/// repository. Each tensor is a duplicate of an earlier one (free), a delta against a base
/// (named as file:tensor@commit), standalone (compressed alone) or raw.
#[derive(clap::Args)]
pub struct Args {
    /// The commit (default HEAD).
    rev: Option<String>,
    /// One row per tensor.
    #[arg(long)]
    tensors: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn describe(s: &Storage) -> String {
    match s {
        Storage::Duplicate { of } => format!("duplicate of {of}"),
        Storage::Delta { base, base_id, codecs } => {
            let b = base.as_ref().map_or_else(|| base_id.short(), |l| l.to_string());
            format!("delta against {b} [{}]", codecs.join(", "))
        }
        Storage::Standalone { codecs } => format!("standalone [{}]", codecs.join(", ")),
        Storage::Raw => "raw".into(),
    }
}

fn print_usage(u: &Usage) -> std::io::Result<()> {
    outln!("commit {}: {} logical, {} stored", u.commit.short(), human(u.logical), human(u.stored))?;
    for f in &u.files {
        outln!("  {:>12} {:>12}  {}", human(f.logical), human(f.stored), f.path)?;
        for t in &f.tensors {
            outln!("      {:>12} {:>12}  {}  {}", human(t.logical), human(t.stored), t.name, describe(&t.storage))?;
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let repo = open_repo_any()?;
    let id = repo.resolve(args.rev.as_deref().unwrap_or("HEAD"))?;
    let usage = mlv::ops::du::du(&repo, id, args.tensors)?;
    if args.json {
        return print_json(&usage);
    }
    print_usage(&usage)?;
    Ok(())
}
