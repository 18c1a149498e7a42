//! The `jobdock` binary: the service (`serve`) and its command-line client.

fn main() -> std::process::ExitCode {
    jobdock_engine::cli::main()
}
