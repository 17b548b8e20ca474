//! `mlv serve`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mlv::serve::{Auth, DEFAULT_BIND, DEFAULT_MAX_PACK_BYTES, Options, Server};

/// Serve repositories over HTTP for push, fetch and clone (bearer tokens, loopback by default).
///
/// DIR is one repository (served at http://ADDR/) or a directory of repositories (each served
/// at http://ADDR/<name>). Every pushed pack is verified before it is installed, and a branch
/// only moves to a commit whose history is complete on the server.
///
/// Without tokens the server lets anyone who can reach it read and write, so it listens on
/// loopback by default. Clients send their token with MLV_TOKEN or `token` in their remote's
/// config. A tokens file (--tokens-file) holds one table per token; see below.
#[derive(clap::Args)]
#[command(after_long_help = "\
A tokens file:
  [[token]]
  token = \"...\"
  access = \"read\"           # or \"read-write\"
  repos = [\"llama\", \"bert\"]  # or [\"*\"]

Examples:
  mlv serve ./models                          http://127.0.0.1:8765/<name>
  mlv serve --allow-create --token \"$T\" /srv/mlv
  mlv serve --bind 0.0.0.0:8765 --tokens-file tokens.toml /srv/mlv")]
pub struct Args {
    /// A repository, or a directory of repositories.
    dir: PathBuf,
    /// Address and port to listen on (port 0: any free port).
    #[arg(long, default_value = DEFAULT_BIND)]
    bind: SocketAddr,
    /// A token that may read and write every repository (also from MLV_SERVE_TOKEN).
    #[arg(long, env = "MLV_SERVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A TOML file of tokens, each with its access and repositories.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// Create a bare repository when a write-authorized client pushes to a missing name.
    #[arg(long)]
    allow_create: bool,
    /// Largest pack a client may upload, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_PACK_BYTES, value_name = "BYTES")]
    max_pack_bytes: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut auth = match &args.token {
        Some(t) if t.is_empty() => anyhow::bail!("--token is empty"),
        Some(t) => Auth::single(t),
        None => Auth::open(),
    };
    if let Some(path) = &args.tokens_file {
        auth = auth.with(Auth::load_tokens(path)?);
    }
    if auth.is_open() && !args.bind.ip().is_loopback() {
        eprintln!(
            "warning: no tokens: anyone who can reach {} can read and push; pass --token or --tokens-file",
            args.bind
        );
    }
    let log: mlv::serve::Log = Arc::new(|line: &str| eprintln!("{line}"));
    let opts = Options {
        dir: args.dir.clone(),
        auth,
        allow_create: args.allow_create,
        max_pack_bytes: args.max_pack_bytes,
        log,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().thread_name("mlv-serve").enable_all().build()?;
    runtime.block_on(async move {
        let server = Server::bind(args.bind, opts).await?;
        let addr = server.local_addr()?;
        if args.allow_create && server.serves_one() {
            eprintln!("warning: --allow-create does nothing when serving a single repository");
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "Serving {} on http://{addr}", args.dir.display())?;
        out.flush()?;
        drop(out);
        server.run(mlv::serve::shutdown_signal()).await?;
        Ok(())
    })
}
