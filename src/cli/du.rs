//! `mlv du`.

use mlv::ops::du::{CodecChunks, Location, Storage, Usage};

use super::{count, human, open_repo_any, print_json};

/// Disk usage: logical vs stored bytes per file and tensor, and how each is stored
///
/// Logical bytes are what checkout writes. Stored bytes are what the commit added to the
/// repository: what it shares with earlier commits costs it nothing. The header also gives
/// the whole repository's stored size.
///
/// How a tensor is stored (with --tensors):
///   duplicate   the same content is stored already (an earlier commit, file or tensor): free.
///   delta       stored as its difference from a base tensor, which it needs to be read: the
///               parent's same tensor, a --base revision's, or a similar tensor mlv found.
///   standalone  compressed on its own.
///   raw         stored as is (compression did not help).
///
/// The codecs of its chunks, in brackets:
///   grouped        bytes split into planes (sign and exponent apart from mantissa), then zstd.
///   bitx-xor       XOR with the base, grouped, then zstd: the ZipLLM paper's BitX.
///   bitx-diff-ctx  the integer difference from the base, entropy coded with tables picked
///                  by the base weight's exponent; usually the smallest for fine-tunes.
///   bitx-diff-low  the same, with the top raw bits of each difference entropy coded too,
///                  by the base weight's mantissa: FP32 fine-tunes under weight decay.
///   bitx-diff-mask the difference of only the blocks of 16 weights that changed, with a
///                  bit per block: fine-tunes that leave whole rows as they were.
///   bitx-lowrank   the difference from the base plus a low-rank product of factors
///                  stored with it: merged LoRA adapters.
///   raw            the bytes themselves.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    after_long_help = "\
Examples:
  mlv du                          this commit's files
  mlv du --tensors v2             every tensor of tag v2, and how it is stored
  mlv du --json --tensors | jq '.files[].tensors[] | select(.storage.how == \"standalone\")'"
)]
pub struct Args {
    /// The commit (default HEAD).
    rev: Option<String>,
    /// One row per tensor, with how it is stored.
    #[arg(long)]
    tensors: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `[bitx-diff-ctx: 3 chunks, grouped: 1 chunk]`.
fn codecs(c: &[CodecChunks]) -> String {
    let parts: Vec<String> = c.iter().map(|c| format!("{}: {}", c.codec, count(c.chunks, "chunk"))).collect();
    format!("[{}]", parts.join(", "))
}

/// How a tensor at `here` is stored, naming its base as briefly as is clear.
fn describe(s: &Storage, here: &Location) -> String {
    match s {
        Storage::Duplicate { of } if of.same_place(here) => format!("duplicate: unchanged since {}", of.commit.short()),
        Storage::Duplicate { of } => format!("duplicate of {of}"),
        Storage::Delta { parent_tensor: true, codecs: c, .. } => {
            format!("delta against the parent's tensor {}", codecs(c))
        }
        Storage::Delta { base: Some(b), codecs: c, .. } if b.same_place(here) => {
            format!("delta against the same tensor in {} {}", b.commit.short(), codecs(c))
        }
        Storage::Delta { base: Some(b), codecs: c, .. } => format!("delta against {b} {}", codecs(c)),
        Storage::Delta { base: None, base_id, codecs: c, .. } => {
            format!("delta against object {} {}", base_id.short(), codecs(c))
        }
        Storage::Standalone { codecs: c } => format!("standalone {}", codecs(c)),
        Storage::Raw => "raw".into(),
    }
}

fn print_usage(u: &Usage, tensors: bool) -> std::io::Result<()> {
    outln!(
        "commit {}: {} logical; this commit added {} stored; the repository holds {}",
        u.commit.short(),
        human(u.logical),
        human(u.stored),
        human(u.repository_stored)
    )?;
    if u.spare_bytes > 0 {
        outln!("spare files kept by checkout for the next: {} (`mlv gc` frees them)", human(u.spare_bytes))?;
    }
    let name_header = if tensors { "path / tensor" } else { "path" };
    let width = u
        .files
        .iter()
        .flat_map(|f| std::iter::once(f.path.len()).chain(f.tensors.iter().map(|t| t.name.len() + 2)))
        .chain([name_header.len()])
        .max()
        .unwrap_or(0);
    let row = |logical: &str, stored: &str, name: &str, storage: &str| {
        format!("{logical:>12} {stored:>12}  {name:<width$}  {storage}").trim_end().to_string()
    };
    outln!("{}", row("logical", "stored", name_header, if tensors { "storage" } else { "" }))?;
    for f in &u.files {
        outln!("{}", row(&human(f.logical), &human(f.stored), &f.path, ""))?;
        for t in &f.tensors {
            let here = Location { commit: u.commit, path: f.path.clone(), tensor: Some(t.name.clone()) };
            let name = format!("  {}", t.name);
            outln!("{}", row(&human(t.logical), &human(t.stored), &name, &describe(&t.storage, &here)))?;
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
    print_usage(&usage, args.tensors)?;
    Ok(())
}
