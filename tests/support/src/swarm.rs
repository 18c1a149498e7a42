//! Making the local Docker daemon a one-node swarm for the Swarm backend's tests.
//!
//! A one-node swarm advertised on loopback is all the tests need (bollard's own CI does the
//! same). It is made once per machine and left in place: other tests and engineers share it.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Makes the local daemon a swarm manager unless it already is one. Safe when several test
/// processes call it at once: a daemon that became part of a swarm meanwhile is fine.
pub fn ensure_swarm() -> Result<()> {
    if is_manager()? {
        return Ok(());
    }
    let out = Command::new("docker")
        .args(["swarm", "init", "--advertise-addr", "127.0.0.1"])
        .output()
        .context("cannot run `docker swarm init`")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("already part of a swarm") {
        bail!("docker swarm init failed: {}", stderr.trim());
    }
    if !is_manager()? {
        bail!("the daemon is part of a swarm but not a manager: the Swarm tests need one");
    }
    Ok(())
}

/// Whether the local daemon can manage a swarm.
fn is_manager() -> Result<bool> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.ControlAvailable}}"])
        .output()
        .context("cannot run `docker info`: is the Docker CLI installed?")?;
    if !out.status.success() {
        bail!(
            "docker info failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "true")
}
