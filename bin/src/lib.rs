//! The `nimbus` command: run a cloud (`nimbus up`), administer it through its API (`nimbus project …`,
//! `nimbus user …`), and measure it (`nimbus bench …`).
//!
//! # Layout
//! - [`cli`]: the command line and what each subcommand does.
//! - [`client`]: a small client of nimbus's OpenStack-shaped API (token login, JSON requests), used by the
//!   admin subcommands, the benchmarks and the tests.
//! - [`actors`] and [`console`]: the debug console, scriptable and interactive.
//! - [`bench`]: the benchmarks.

#![allow(clippy::print_stdout, reason = "a command-line program reports on stdout")]

pub mod actors;
pub mod bench;
pub mod cli;
pub mod client;
pub mod console;
pub mod node;
pub mod tls;
