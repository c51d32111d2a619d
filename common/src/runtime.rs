//! The async runtime of the long-running processes (master, worker), with
//! the C allocator told to keep few arenas first.
//!
//! glibc gives each thread that allocates under contention an arena of its
//! own (up to eight per core) and keeps their freed pages: librdkafka's
//! broker threads, tokio's workers and the gRPC tasks all allocate, and a
//! worker's peak RSS in a drain rose above its bound from memory that was
//! free inside those arenas. Two arenas are enough for two busy threads.

use std::future::Future;
use std::process::ExitCode;

/// Arenas glibc may create (see the module's documentation).
const MALLOC_ARENAS: i32 = 2;

/// The whole of a process's `main`: limits the allocator's arenas (before
/// any thread is started, so every thread shares them), runs `main` on a
/// multi-threaded tokio runtime, and turns its outcome into the exit code,
/// printing an error as `<name>: error: …`.
pub fn run<F>(name: &str, main: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    limit_arenas();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("starting the async runtime"))
        .and_then(|rt| rt.block_on(main));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_arenas() {
    // SAFETY: mallopt only changes a glibc tunable; called on the main
    // thread before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_arenas() {
    let _ = MALLOC_ARENAS;
}
