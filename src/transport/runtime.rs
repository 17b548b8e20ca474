//! The async runtime behind the network transports: their stores are synchronous (the rest of
//! mlv is), so each call runs a future to completion on one shared runtime.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// Runs `f` to completion on the shared runtime, from any thread that is not itself a runtime
/// worker (mlv's own threads and rayon's).
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// The shared multi-threaded runtime, started on first use.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mlv-net")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the network runtime: {e}"))
    })
}
