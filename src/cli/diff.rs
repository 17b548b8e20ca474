//! `mlv diff`.

use std::io::Write;

use mlv::ops::diff::{FileDiff, Side, TensorChange, TensorsDiff};
use mlv::ops::status::ChangeKind;

use super::{open_repo, print_json};

/// Compare two revisions, or a revision with the work tree: tensors and text.
///
/// What is compared: with no revision, the last commit (HEAD) against the work tree, that is
/// every change not committed yet, staged or not. With one revision, that revision against the
/// work tree. With two, the first against the second.
///
/// Safetensors files are compared tensor by tensor. A tensor is changed when its content
/// (values, dtype or shape) differs, as `mlv status` counts it. For each, an element counts as
/// changed when its value differs; when the dtype changed (an F32 base, a BF16 fine-tune), the
/// old value is first rounded to the new dtype, and elements equal after that rounding are
/// reported apart ("only rounded"), not as changed. max |Δ| is the largest absolute
/// difference of a changed element, mean |Δ| the mean absolute difference over all elements
/// compared (unchanged ones count as 0). "Low mantissa bits only" counts changed elements with the same sign and exponent
/// whose mantissa differs only in its lower half: the small steps fine-tuning takes, which mlv
/// stores cheaply. `n/a` marks a figure that does not apply (|Δ| for non-numeric dtypes,
/// mantissa bits for integers). Text files get a unified diff.
#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  mlv diff                        uncommitted changes (HEAD against the work tree)
  mlv diff v1                     tag v1 against the work tree
  mlv diff HEAD~1 HEAD            what the last commit changed
  mlv diff --json base ft | jq '.[].tensors.changed[] | {name, changed, rounding_only}'

A line per changed tensor:
  ~ name F32 → BF16 [256, 64]: 4915 of 16384 elements changed (30.0%), 11469 only rounded
    to BF16; max |Δ| 1.221e-3, mean |Δ| 3.436e-5; 4100 in low mantissa bits only
  = name F32 → BF16 [64]: no element changed beyond rounding to BF16 (64 rounded)")]
pub struct Args {
    /// Old side (default: HEAD).
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
            print_tensors(t)?;
        }
        if let Some(text) = &f.text {
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn print_tensors(t: &TensorsDiff) -> std::io::Result<()> {
    let only_retyped = t.changed.iter().filter(|c| !c.values_changed()).count();
    let retyped = if only_retyped > 0 { format!(" ({only_retyped} only in dtype or shape)") } else { String::new() };
    outln!(
        "  tensors: {} changed{retyped}, {} added, {} removed, {} unchanged",
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
        outln!("  {}", tensor_line(c))?;
    }
    Ok(())
}

/// `F32 → BF16 [256, 64]`, or just `BF16 [256, 64]` when neither changed.
fn dtype_and_shape(c: &TensorChange) -> String {
    let dtype = if c.old_dtype == c.dtype { c.dtype.clone() } else { format!("{} → {}", c.old_dtype, c.dtype) };
    let shape = if c.shape.0 == c.shape.1 {
        format!("{:?}", c.shape.1)
    } else {
        format!("{:?} → {:?}", c.shape.0, c.shape.1)
    };
    format!("{dtype} {shape}")
}

/// A figure, or `n/a` where it does not apply.
fn or_na<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".to_string(), f)
}

/// One line for a changed tensor: `~` when values changed, `=` when only its dtype or shape did.
fn tensor_line(c: &TensorChange) -> String {
    let what = dtype_and_shape(c);
    if !c.values_changed() {
        let why = match c.rounding_only {
            Some(n) if n > 0 => format!("no element changed beyond rounding to {} ({n} rounded)", c.dtype),
            _ => "no element value changed".to_string(),
        };
        return format!("= {} {what}: {why}", c.name);
    }
    let pct = 100.0 * c.changed as f64 / c.elements.max(1) as f64;
    let rounded = c.rounding_only.map(|r| format!(", {r} only rounded to {}", c.dtype)).unwrap_or_default();
    let sci = |v: f64| format!("{v:.3e}");
    format!(
        "~ {} {what}: {} of {} elements changed ({pct:.1}%){rounded}; max |Δ| {}, mean |Δ| {}; {}",
        c.name,
        c.changed,
        c.elements,
        or_na(c.max_abs_diff, sci),
        or_na(c.mean_abs_diff, sci),
        c.low_mantissa_only
            .map_or_else(|| "low mantissa bits: n/a".to_string(), |n| format!("{n} in low mantissa bits only")),
    )
}
