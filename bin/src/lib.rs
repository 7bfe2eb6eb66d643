//! The `nimbus` command: run a cloud (`nimbus up`), administer it through its API (`nimbus project …`,
//! `nimbus user …`), and measure it (`nimbus bench …`).
//!
//! # Layout
//! - [`cli`]: the command line and what each subcommand does; [`args`]: the options several commands share;
//!   [`output`]: tables.
//! - [`client`]: a small client of nimbus's OpenStack-shaped API (token login, JSON requests), used by the
//!   admin subcommands, the benchmarks and the tests.
//! - [`actors`] and [`console`]: the debug console, scriptable and interactive.
//! - [`bench`]: the benchmarks.

#![allow(clippy::print_stdout, reason = "a command-line program reports on stdout")]

/// What the binary logs when `RUST_LOG` does not say: every request and step at info, ractor's chatter only
/// when it warns.
pub const DEFAULT_LOG_FILTER: &str = "info,ractor=warn,ractor_cluster=warn";
/// What the benchmarks log: their own output is the report (`bench ips` fails thousands of builds on purpose).
pub const BENCH_LOG_FILTER: &str = "error";

pub mod actors;
pub mod args;
pub mod bench;
pub mod cli;
pub mod client;
pub mod console;
pub mod node;
pub mod output;
pub mod tls;
