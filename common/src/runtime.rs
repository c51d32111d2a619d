//! The async runtime of the long-running processes (master, worker), with
//! the C allocator told to keep few arenas first.
//!
//! glibc gives each thread that allocates under contention an arena of its
//! own (up to eight per core) and keeps their freed pages: librdkafka's
//! broker threads, tokio's workers and the gRPC tasks all allocate, and a
//! worker's peak RSS in a drain rose above its bound from memory that was
//! free inside those arenas. Two arenas are enough for two busy threads.

use std::future::Future;

/// Arenas glibc may create (see the module's documentation).
const MALLOC_ARENAS: i32 = 2;

/// Limits the allocator's arenas, then runs `main` on a multi-threaded
/// tokio runtime. The limit is set before any thread is started, so every
/// thread shares those arenas.
pub fn block_on<F: Future>(main: F) -> std::io::Result<F::Output> {
    limit_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(main))
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
