//! Running tools inside a network namespace (`ip netns exec`), and finding and signalling the processes that
//! live in one.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::KernelError;

/// The tool's path, looked up in `PATH` and the sbin directories (root's tools are often not in a user's
/// `PATH`).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| PathBuf::from(dir).join(tool))
        .find(|candidate| candidate.is_file())
}

/// `program args…`, run in the named namespace, or in nimbus's own when `netns` is `None`.
pub fn command_in(netns: Option<&str>, program: &str, args: &[&str]) -> Command {
    let tool = |name: &str| find_tool(name).unwrap_or_else(|| PathBuf::from(name));
    let mut command = match netns {
        Some(netns) => {
            let mut c = Command::new(tool("ip"));
            c.args(["netns", "exec", netns]).arg(tool(program));
            c
        }
        None => Command::new(tool(program)),
    };
    command.args(args).stdin(Stdio::null()).kill_on_drop(false);
    command
}

/// Runs `command` to completion, feeding it `input`; its stdout on success, its stderr in the error.
pub async fn run(mut command: Command, input: Option<&str>) -> Result<String, KernelError> {
    let shown = format!("{:?}", command.as_std()).replace('"', "");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child =
        command.spawn().map_err(|e| KernelError::Command { command: shown.clone(), detail: e.to_string() })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| KernelError::Command { command: shown.clone(), detail: e.to_string() })?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| KernelError::Command { command: shown.clone(), detail: e.to_string() })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(KernelError::Command { command: shown, detail: format!("{}: {stderr}", output.status) })
}

/// Whether `pid` runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// The processes running in the named namespace.
pub async fn pids_in(netns: &str) -> Result<Vec<u32>, KernelError> {
    let out = run(command_in(None, "ip", &["netns", "pids", netns]), None).await?;
    Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

/// Stops `pids`: SIGTERM first (so a DHCP client can release its lease, dnsmasq can close), SIGKILL for what
/// is still there after `grace`.
pub async fn stop(pids: &[u32], grace: Duration) {
    pids.iter().for_each(|pid| signal(*pid, Signal::SIGTERM));
    let deadline = tokio::time::Instant::now() + grace;
    while pids.iter().any(|pid| alive(*pid)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pids.iter().filter(|pid| alive(**pid)).for_each(|pid| signal(*pid, Signal::SIGKILL));
}

/// Stops every process of the namespace (see [`stop`]).
pub async fn stop_all_in(netns: &str, grace: Duration) -> Result<(), KernelError> {
    stop(&pids_in(netns).await?, grace).await;
    Ok(())
}

/// Creates the named namespace unless it exists.
pub async fn ensure_namespace(netns: &str) -> Result<(), KernelError> {
    if super::netns_path(netns).exists() {
        return Ok(());
    }
    run(command_in(None, "ip", &["netns", "add", netns]), None).await.map(|_| ())
}

/// Kills everything running in the namespace and deletes it, at once and without an async runtime: for
/// guards that clean up on drop (tests, benchmarks). Errors are ignored; there is nobody to tell.
pub fn remove_namespace_now(netns: &str) {
    let pids = std::process::Command::new("ip").args(["netns", "pids", netns]).output();
    for pid in pids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().split_whitespace() {
        if let Ok(pid) = pid.parse() {
            signal(pid, Signal::SIGKILL);
        }
    }
    let _ = std::process::Command::new("ip").args(["netns", "del", netns]).status();
}

/// The named namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}
