//! The `nimbus` binary: parses the command line and hands over to the library.

use clap::Parser;

// glibc's allocator spent a third of the API's CPU consolidating and unlinking freed chunks under load
// (`bench boot`); mimalloc keeps per-thread free lists and does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = nimbus::cli::Cli::parse();
    let filter = match cli.command {
        nimbus::cli::Command::Bench(_) => nimbus::BENCH_LOG_FILTER,
        _ => nimbus::DEFAULT_LOG_FILTER,
    };
    nimbus_runtime::telemetry::init(filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nimbus: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nimbus::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nimbus: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
