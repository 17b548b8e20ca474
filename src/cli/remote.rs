//! `mlv remote`.

use clap::Subcommand;

use super::{open_repo_any, print_json};

/// Manage remotes: other repositories (path, HTTP or S3) to push to and fetch from.
///
/// A remote's URL is a path to another repository (or `file:///path`), the address of
/// `mlv serve` (`http://host:port/<name>`, or https), or an S3 bucket and prefix
/// (`s3://bucket/prefix`; credentials and endpoint from AWS_* variables or `.mlv/config`).
/// Fetching a remote keeps its branches as remote-tracking refs, `<remote>/<branch>`,
/// usable wherever a revision is.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// List with URLs.
    #[arg(short, long)]
    verbose: bool,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Action {
    /// Add a remote.
    Add {
        /// Its name, e.g. origin.
        name: String,
        /// Its URL.
        url: String,
    },
    /// Remove a remote with its remote-tracking refs.
    #[command(alias = "rm")]
    Remove {
        /// The remote.
        name: String,
    },
    /// Rename a remote and its remote-tracking refs.
    Rename {
        /// Current name.
        old: String,
        /// New name.
        new: String,
    },
    /// Change a remote's URL.
    SetUrl {
        /// The remote.
        name: String,
        /// Its new URL.
        url: String,
    },
    /// List remotes (the default).
    List {
        /// With URLs.
        #[arg(short, long)]
        verbose: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut repo = open_repo_any()?;
    use mlv::ops::remote;
    match args.action {
        Some(Action::Add { name, url }) => remote::add(&mut repo, &name, &url)?,
        Some(Action::Remove { name }) => remote::remove(&mut repo, &name)?,
        Some(Action::Rename { old, new }) => remote::rename(&mut repo, &old, &new)?,
        Some(Action::SetUrl { name, url }) => remote::set_url(&mut repo, &name, &url)?,
        Some(Action::List { verbose, json }) => list(&repo, verbose, json)?,
        None => list(&repo, args.verbose, args.json)?,
    }
    Ok(())
}

fn list(repo: &mlv::Repository, verbose: bool, json: bool) -> anyhow::Result<()> {
    let remotes = mlv::ops::remote::list(repo);
    if json {
        return print_json(&remotes);
    }
    for r in remotes {
        if verbose {
            outln!("{}\t{} (fetch)", r.name, r.url)?;
            outln!("{}\t{} (push)", r.name, r.url)?;
        } else {
            outln!("{}", r.name)?;
        }
    }
    Ok(())
}
