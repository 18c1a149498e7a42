//! Secret files for [`SecretDelivery::Files`](crate::SecretDelivery::Files): written by the
//! backend into a per-run directory on a host tmpfs and bind-mounted read-only at
//! `/run/secrets`, so that the values never touch persistent disk nor the container's config.
//!
//! Limitation: the directory is written on the machine the engine runs on, so this works
//! only when the Docker daemon is local to the engine (same host, same `/dev/shm`).

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{chown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use super::create::is_safe_name;
use crate::{BackendError, Secret};

/// Who must be able to read the files inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// A numeric user (root is 0): the files are given to it and kept private (0400).
    Uid { uid: u32, gid: Option<u32> },
    /// A user known only by name: we cannot resolve it without the image's `/etc/passwd`,
    /// so the files are made world-readable (0444). The host is still protected by the
    /// private (0700) parent directory, and inside the container only the job runs.
    Named,
}

impl Reader {
    /// The reader for a container user as Docker takes it (`uid[:gid]`, `name[:group]`, or
    /// empty for root).
    pub(crate) fn of_user(user: Option<&str>) -> Self {
        let user = user.unwrap_or("").trim();
        let (name, group) = user.split_once(':').unwrap_or((user, ""));
        let uid = match name {
            "" | "root" => Some(0),
            n => n.parse().ok(),
        };
        match uid {
            Some(uid) => Reader::Uid {
                uid,
                gid: group.parse().ok(),
            },
            None => Reader::Named,
        }
    }
}

/// The directory holding one attempt's secret files, under `root`.
/// `None` when the run id could not have produced one (it is not a safe name).
pub(crate) fn run_dir(root: &Path, run_id: &str, attempt: u32) -> Option<PathBuf> {
    is_safe_name(run_id).then(|| root.join(format!("{run_id}-{attempt}")))
}

/// Writes `secrets` as files into `dir` (created under its private parent if missing) and
/// returns it. Safe to call again: files are replaced atomically.
pub(crate) async fn write(
    dir: PathBuf,
    secrets: Vec<Secret>,
    reader: Reader,
) -> Result<PathBuf, BackendError> {
    let target = dir.clone();
    tokio::task::spawn_blocking(move || write_blocking(&target, &secrets, reader))
        .await
        .map_err(|e| local_error("write secret files", &dir, io::Error::other(e)))?
        .map_err(|e| local_error("write secret files", &dir, e))?;
    Ok(dir)
}

/// Removes the directory and its files; a missing directory is fine.
pub(crate) async fn remove(dir: PathBuf) -> Result<(), BackendError> {
    let target = dir.clone();
    tokio::task::spawn_blocking(move || remove_blocking(&target))
        .await
        .map_err(|e| local_error("remove secret files", &dir, io::Error::other(e)))?
        .map_err(|e| local_error("remove secret files", &dir, e))
}

fn write_blocking(dir: &Path, secrets: &[Secret], reader: Reader) -> io::Result<()> {
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::other("secret directory has no parent"))?;
    fs::create_dir_all(parent)?;
    fs::set_permissions(parent, Permissions::from_mode(0o700))?;
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    // Writable while we fill it, even when an earlier launch left it read-only.
    fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    let owner = match reader {
        Reader::Uid { uid, gid } => chown(dir, Some(uid), gid).is_ok().then_some((uid, gid)),
        Reader::Named => None,
    };
    let (file_mode, dir_mode) = if owner.is_some() {
        (0o400, 0o500)
    } else {
        // Either the user has no number or we may not chown (engine not root).
        (0o444, 0o555)
    };
    for secret in secrets {
        write_file(dir, secret, owner, file_mode)?;
    }
    fs::set_permissions(dir, Permissions::from_mode(dir_mode))
}

/// Writes one file beside its final name, then renames it: a container reading it sees the
/// old or the new content, never half of one.
fn write_file(
    dir: &Path,
    secret: &Secret,
    owner: Option<(u32, Option<u32>)>,
    mode: u32,
) -> io::Result<()> {
    let temp = dir.join(format!(".{}.tmp", secret.name));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(secret.value.expose_secret().as_bytes())?;
    file.sync_all()?;
    drop(file);
    if let Some((uid, gid)) = owner {
        chown(&temp, Some(uid), gid)?;
    }
    fs::set_permissions(&temp, Permissions::from_mode(mode))?;
    fs::rename(&temp, dir.join(&secret.name))
}

fn remove_blocking(dir: &Path) -> io::Result<()> {
    // A read-only directory cannot be emptied by a non-root engine: open it up first.
    match fs::set_permissions(dir, Permissions::from_mode(0o700)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// An I/O error on the engine's host; it names the directory, never a value.
fn local_error(what: &str, dir: &Path, err: io::Error) -> BackendError {
    BackendError::Api {
        status: None,
        message: format!("cannot {what} in {}: {err}", dir.display()),
        source: Some(Box::new(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn reads_the_container_user() {
        assert_eq!(Reader::of_user(None), Reader::Uid { uid: 0, gid: None });
        assert_eq!(
            Reader::of_user(Some("1000:50")),
            Reader::Uid {
                uid: 1000,
                gid: Some(50)
            }
        );
        assert_eq!(Reader::of_user(Some("app")), Reader::Named);
        assert_eq!(
            Reader::of_user(Some("root:root")),
            Reader::Uid { uid: 0, gid: None }
        );
    }

    #[test]
    fn refuses_unsafe_run_ids() {
        assert!(run_dir(Path::new("/dev/shm/jobdock"), "../etc", 1).is_none());
        assert_eq!(
            run_dir(Path::new("/r"), "abc", 2).unwrap(),
            PathBuf::from("/r/abc-2")
        );
    }

    #[tokio::test]
    async fn writes_private_files_then_removes_them() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("secrets").join("run-1");
        let me = fs::metadata(root.path()).unwrap().uid();
        let secret = Secret {
            name: "TOKEN".into(),
            value: SecretString::from("v1"),
        };
        let reader = Reader::Uid { uid: me, gid: None };
        write(dir.clone(), vec![secret.clone()], reader)
            .await
            .unwrap();
        // Again, as a retried launch does: replaces, does not fail on the read-only dir.
        write(dir.clone(), vec![secret], reader).await.unwrap();

        let file = dir.join("TOKEN");
        assert_eq!(fs::read_to_string(&file).unwrap(), "v1");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o400);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o500);
        let parent = fs::metadata(dir.parent().unwrap()).unwrap();
        assert_eq!(parent.mode() & 0o777, 0o700);

        remove(dir.clone()).await.unwrap();
        assert!(!dir.exists());
        remove(dir).await.unwrap();
    }
}
