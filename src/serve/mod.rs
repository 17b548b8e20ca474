//! `mlv serve`: repositories over HTTP, for the HTTP transport (`src/transport/http.rs`).
//! The protocol is in docs/PROTOCOL.md, section "HTTP".
//!
//! The server is a thin HTTP skin over the same [`Receiver`](crate::transport::Receiver) that a
//! push to a local path uses: every uploaded pack is verified before it is installed, and a
//! ref only moves (by compare-and-swap) to a commit whose history is complete here.
//!
//! - [`auth`]: bearer tokens, checked before any request body is read.
//! - [`repos`]: which repositories exist, behind the [`RepoSource`] trait, each kept open
//!   between requests.
//! - [`upload`]: a pack body streamed to disk while hashed.
//! - [`routes`]: the endpoints.
//!
//! Design note: a later "hub mode" will share one object store across every repository
//! under DIR and keep it in S3. That is another [`RepoSource`] whose repositories share one
//! [`PackStore`](crate::store::PackStore): the routes reach packs only through
//! [`ServedRepo::packs`] (pack downloads stream through `PackStore::copy_range`) and stage
//! uploads in [`ServedRepo::staging_dir`], so they stay as they are.

pub mod auth;
pub mod repos;
pub mod routes;
pub mod upload;

pub use auth::{Access, Auth, TokensFileError};
pub use repos::{DirSource, RepoSource, ServedRepo, SourceError, check_repo_name};

use axum::serve::ListenerExt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The default address: loopback only, so a server without tokens is not open to the network.
pub const DEFAULT_BIND: &str = "127.0.0.1:8765";

/// The default cap on one uploaded pack: far above a transfer unit (256 MiB), which only a
/// single huge tensor exceeds.
pub const DEFAULT_MAX_PACK_BYTES: u64 = 64 << 30;

/// Where the server reports writes and failures (never tokens): one line each.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// How to serve.
pub struct Options {
    /// A repository, or a directory of repositories.
    pub dir: PathBuf,
    /// Who may read and write.
    pub auth: Auth,
    /// Let a push to a missing `/<name>` create a bare repository (directory mode only).
    pub allow_create: bool,
    /// Largest pack upload accepted, in bytes.
    pub max_pack_bytes: u64,
    /// Where to report.
    pub log: Log,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// DIR is unusable.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A bound server, ready to run.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    single: bool,
}

impl Server {
    /// Opens the repositories and binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, opts: Options) -> Result<Server, ServeError> {
        let (dir, allow_create) = (opts.dir.clone(), opts.allow_create);
        let source = tokio::task::spawn_blocking(move || DirSource::new(&dir, allow_create))
            .await
            .map_err(std::io::Error::other)??;
        let single = source.is_single();
        let app = Arc::new(routes::App {
            source: Arc::new(source),
            auth: opts.auth,
            max_pack_bytes: opts.max_pack_bytes,
            log: opts.log,
        });
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Server { listener, router: routes::router(app, single), single })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// True when DIR is one repository (served at `/`), false for a directory of them.
    pub fn serves_one(&self) -> bool {
        self.single
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        // Without TCP_NODELAY every small reply waits for the client's delayed ACK (~40 ms):
        // a fetch makes one range request per run of objects, and would crawl.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
