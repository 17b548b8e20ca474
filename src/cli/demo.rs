//! `mlv demo`.

use std::path::PathBuf;

use mlv::demo::Member;
use mlv::demo::synth::{FamilySpec, write_family};

use super::{human, print_json, progress};

/// Build a model family (or use yours), commit, check out, verify, and report sizes and speed.
///
/// Without --from, generates a realistic family (an FP32 base plus BF16 fine-tunes trained
/// AdamW-style, each from the previous one, and the first fine-tune saved in FP32 too, whose
/// rows that got no gradient only decayed) in a temporary directory. With --from, uses your
/// checkpoint folders in order (the first is the base). Prints logical vs stored bytes and
/// throughput for each member.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folders to commit in order, instead of generating a family.
    #[arg(long, num_args = 1.., value_name = "DIR")]
    from: Vec<PathBuf>,
    /// Size of the generated base model in MB.
    #[arg(long, default_value_t = 64)]
    size_mb: u64,
    /// Number of generated fine-tunes.
    #[arg(long, default_value_t = 2)]
    finetunes: usize,
    /// Keep everything in this directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Only write the generated family to DIR/family (with --keep) and exit; for benchmarks.
    #[arg(long, requires = "keep")]
    generate_only: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("mlv-demo-").tempdir()?;
    let work = match &args.keep {
        Some(k) => {
            std::fs::create_dir_all(k)?;
            std::path::absolute(k)?
        }
        None => tmp.path().to_path_buf(),
    };
    let members = if args.from.is_empty() {
        let spec = FamilySpec::with_base_size(args.size_mb * 1_000_000, args.finetunes);
        if !args.json {
            eprintln!(
                "generating a model family: base {} MB FP32 + {}{} ...",
                args.size_mb,
                super::count(args.finetunes, "BF16 fine-tune"),
                if spec.fp32_save { " + ft-1 saved in FP32" } else { "" }
            );
        }
        let family = write_family(&spec, &work.join("family"))?;
        if args.generate_only {
            for d in &family.dirs {
                outln!("{}", d.display())?;
            }
            return Ok(());
        }
        family.dirs.into_iter().zip(family.bases).map(|(dir, base)| Member { dir, base }).collect()
    } else {
        let dirs: Vec<PathBuf> = args.from.iter().map(std::path::absolute).collect::<Result<_, _>>()?;
        dirs.into_iter().map(|dir| Member { dir, base: None }).collect::<Vec<_>>()
    };
    let report = mlv::demo::run(&members, &work, progress::for_stderr().as_ref())?;
    if args.json {
        return print_json(&report);
    }
    outln!("{:<12} {:>12} {:>12} {:>7} {:>10}", "commit", "logical", "stored", "ratio", "ingest")?;
    for i in &report.ingests {
        let ratio = i.logical as f64 / i.stored.max(1) as f64;
        let speed = i.logical as f64 / 1e6 / i.seconds.max(1e-9);
        outln!("{:<12} {:>12} {:>12} {:>6.2}x {:>6.0} MB/s", i.tag, human(i.logical), human(i.stored), ratio, speed)?;
    }
    let (logical, stored): (u64, u64) = report.ingests.iter().fold((0, 0), |a, i| (a.0 + i.logical, a.1 + i.stored));
    outln!(
        "{:<12} {:>12} {:>12} {:>6.2}x",
        "total",
        human(logical),
        human(stored),
        logical as f64 / stored.max(1) as f64
    )?;
    outln!()?;
    let mut all_ok = true;
    for r in &report.restores {
        let speed = r.bytes as f64 / 1e6 / r.seconds.max(1e-9);
        outln!(
            "checkout {:<12} {:>12} {:>6.0} MB/s  {}",
            r.tag,
            human(r.bytes),
            speed,
            if r.identical { "byte-identical" } else { "MISMATCH" }
        )?;
        all_ok &= r.identical;
    }
    if let Some(k) = &args.keep {
        outln!("\nrepository kept in {}", k.join("repo").display())?;
    }
    anyhow::ensure!(all_ok, "a checked-out file differs from its original");
    Ok(())
}
