//! Test images, built locally (no registry is reachable).
//!
//! The tests need a tiny image with a shell and the usual tools. We build one from the host's
//! static busybox (Debian's `busybox-static`) with `docker import`, once per machine.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// The reference of the busybox test image.
pub const BUSYBOX_IMAGE: &str = "jobdock-test/busybox:1";

/// Where Debian's `busybox-static` puts the binary.
const BUSYBOX_BINARY: &str = "/bin/busybox";

/// Returns the reference of a local busybox image (`sh`, `sleep`, `dd`, `cat`, ...), building
/// it first if the daemon does not have it.
///
/// Safe when several test processes call it at once: each builds under its own temporary tag
/// and only then moves the shared tag, so no caller ever sees a half-built image.
pub fn busybox_image() -> Result<String> {
    if image_exists(BUSYBOX_IMAGE)? {
        return Ok(BUSYBOX_IMAGE.to_owned());
    }
    let temp_tag = format!(
        "jobdock-test/busybox:build-{}",
        uuid::Uuid::new_v4().simple()
    );
    build_busybox(&temp_tag)?;
    // Another process may have finished first: keep its image rather than leave one of the
    // two dangling.
    let tagged = match image_exists(BUSYBOX_IMAGE) {
        Ok(true) => Ok(()),
        _ => docker(&["tag", &temp_tag, BUSYBOX_IMAGE]),
    };
    // Drops only the temporary name, or our whole image when the shared tag is elsewhere.
    let untagged = docker(&["rmi", &temp_tag]);
    tagged?;
    untagged?;
    Ok(BUSYBOX_IMAGE.to_owned())
}

/// Whether the daemon has `image` locally.
fn image_exists(image: &str) -> Result<bool> {
    let status = Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run `docker`: is the Docker CLI installed?")?;
    Ok(status.success())
}

/// Builds the image from a fresh root filesystem and imports it as `tag`.
fn build_busybox(tag: &str) -> Result<()> {
    let busybox = Path::new(BUSYBOX_BINARY);
    ensure_static(busybox)?;
    let root = tempfile::tempdir().context("cannot create a temporary directory")?;
    populate_rootfs(root.path(), busybox)?;

    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(root.path())
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run `tar`")?;
    let tar_out = tar
        .stdout
        .take()
        .ok_or_else(|| anyhow!("tar has no stdout"))?;
    let import = Command::new("docker")
        .args(["import", "--change", r#"CMD ["/bin/sh"]"#, "-", tag])
        .stdin(tar_out)
        .output()
        .context("cannot run `docker import`")?;
    let tarred = tar.wait().context("cannot wait for `tar`")?;
    if !tarred.success() {
        bail!("tar failed to archive the root filesystem");
    }
    if !import.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        );
    }
    Ok(())
}

/// Lays out `/bin/busybox`, one symlink per applet, `/tmp` and a minimal `/etc`.
fn populate_rootfs(root: &Path, busybox: &Path) -> Result<()> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev",
    ] {
        fs::create_dir_all(root.join(dir)).with_context(|| format!("cannot create {dir}"))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(busybox, root.join("bin/busybox")).context("cannot copy busybox")?;
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;

    for applet in applets(busybox)? {
        let link = root.join(&applet);
        if applet == "bin/busybox" || link.exists() {
            continue;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("cannot link {applet}"))?;
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// The applets' install paths, relative to `/` (`bin/sh`, `usr/bin/awk`, ...).
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("cannot run {}", busybox.display()))?;
    if !out.status.success() {
        bail!("`busybox --list-full` failed");
    }
    let list = String::from_utf8(out.stdout).context("busybox listed non-UTF-8 applets")?;
    Ok(list
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect())
}

/// Fails unless `path` is a statically linked ELF file: a dynamic busybox (Debian's plain
/// `busybox` package) would find no libc inside the image and every container would fail.
fn ensure_static(path: &Path) -> Result<()> {
    let hint = "install Debian's `busybox-static` package";
    let elf = fs::read(path).with_context(|| format!("{} is missing: {hint}", path.display()))?;
    if has_interpreter(&elf)? {
        bail!("{} is dynamically linked: {hint}", path.display());
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("busybox is not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| -> Result<usize> {
        let bytes = elf
            .get(o..o + 8)
            .ok_or_else(|| anyhow!("truncated ELF file"))?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        usize::try_from(u64::from_le_bytes(b)).context("ELF offset too large")
    };
    let (ph_off, ph_size, ph_num) = (u64_at(0x20)?, u16_at(0x36), u16_at(0x38));
    for i in 0..ph_num {
        let at = ph_off + i * ph_size;
        let header = elf
            .get(at..at + 4)
            .ok_or_else(|| anyhow!("truncated ELF program header"))?;
        if u32::from_le_bytes([header[0], header[1], header[2], header[3]]) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs `docker <args>`, failing with its error output.
fn docker(args: &[&str]) -> Result<()> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("cannot run `docker`")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_input() {
        assert!(has_interpreter(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn finds_the_interpreter_of_a_dynamic_binary() -> Result<()> {
        // `/bin/sh` on Debian is dynamically linked dash.
        let sh = fs::read("/bin/sh")?;
        assert!(has_interpreter(&sh)?);
        Ok(())
    }
}
