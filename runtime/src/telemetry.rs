//! Tracing setup for the binaries: human-readable logs on stderr, filtered by `RUST_LOG`, in colour only on a
//! terminal (a log file or a pipe gets plain text, so `grep` finds what it looks for).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default` is the filter used when `RUST_LOG` is not set. Calling it twice
/// is harmless (tests do).
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
