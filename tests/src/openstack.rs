//! The stock `openstack` CLI (python-openstackclient 10.5.0, with the openstacksdk it is built on), installed
//! once into a venv under `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::process::target_profile_dir;

pub const CLIENT_VERSION: &str = "10.5.0";

/// The `openstack` executable; installs it on first use. Fails loudly when it cannot be installed: the CLI
/// tests are part of the suite and are not skipped.
pub fn openstack_cli() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target_profile_dir().parent().expect("target/").join(format!("osc-venv-{CLIENT_VERSION}"));
    let cli = venv.join("bin/openstack");
    if cli.exists() {
        return cli;
    }
    eprintln!(
        "installing python-openstackclient=={CLIENT_VERSION} into {} (first run only; about a minute)",
        venv.display()
    );
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("running python3 -m venv");
    assert!(status.success(), "python3 -m venv failed: install python3-venv");
    let status = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("python-openstackclient=={CLIENT_VERSION}"),
        ])
        .status()
        .expect("running pip");
    assert!(status.success(), "pip install python-openstackclient failed");
    cli
}

/// Runs a Python script with the CLI venv's interpreter (where openstacksdk is, the library the CLI is built
/// on) against the cloud described by `clouds_yaml`; returns stdout, panics on failure.
pub fn run_sdk_script(clouds_yaml: &Path, script: &Path) -> String {
    let python = openstack_cli().with_file_name("python");
    let output = Command::new(python)
        .arg(script)
        .env("OS_CLIENT_CONFIG_FILE", clouds_yaml)
        .env("OS_CLOUD", "nimbus")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running the openstacksdk script");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs `openstack ARGS` against the cloud described by `clouds_yaml`; returns stdout, panics on failure.
pub fn run(clouds_yaml: &Path, args: &[&str]) -> String {
    let output = Command::new(openstack_cli())
        .args(args)
        .env("OS_CLIENT_CONFIG_FILE", clouds_yaml)
        .env("OS_CLOUD", "nimbus")
        .env_remove("OS_AUTH_URL")
        .output()
        .expect("running the openstack CLI");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "openstack {} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
