//! The `jobdock` binary: the service (`serve`) and its command-line client.

/// mimalloc instead of glibc's allocator: a status poll allocates and frees a few hundred
/// small objects, and glibc's free lists (`malloc_consolidate`) were a sixth of its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jobdock_engine::cli::main()
}
