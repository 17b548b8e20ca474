//! The `mlv` command line: parses arguments and dispatches to one module per command.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keep_freed_memory();
    let args = cli::Cli::parse();
    let result = cli::run(args);
    for note in mlv::notes::drain() {
        eprintln!("note: {note}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader (e.g. `head`) has all it wanted.
        Err(e) if cli::is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(_) if cli::interrupted() => {
            eprintln!("error: interrupted; nothing half-written was kept");
            ExitCode::from(130)
        }
        Err(e) => {
            cli::report_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Decoding and encoding allocate and free a few MiB per chunk on every thread. By default
/// glibc hands freed memory back to the kernel and faults it in again, zeroed, on the next
/// chunk: a third of a checkout's system time. Keeping it costs nothing beyond the peak RSS,
/// which is reached anyway.
///
/// Each arena keeps what was freed in it, and glibc gives threads up to eight arenas per core:
/// the five threads of an ingest (main, rayon's and the pipeline's) took one each and touched
/// 90 MB more (peak RSS 241-254 MiB; with one arena per core, 156-161 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // Blocks up to 32 MiB (glibc's largest allowed threshold) come from the heap; larger ones
    // are mapped, and unmapped when freed.
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 1 << 30;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists. A refused value leaves glibc's default, which is correct, only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
