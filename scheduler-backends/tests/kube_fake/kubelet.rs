//! The fake's kubelet: runs a pod's one container as a host process, as a node would.
//!
//! The image is the host, with busybox's applets first on `PATH` (busybox-static stands in
//! for the conformance image); its name only matters when it contains `missing`, which fails
//! to pull. The container is put together from the pod spec and its Secrets (`config`); its
//! Secret volumes are written under the fake's temporary directory, which stands in for the
//! mount by replacing the mount path in the command (as the Nomad fake does for
//! `/run/secrets`). A read-only mount is emulated by running root without
//! CAP_DAC_OVERRIDE, so that the files' modes hold; `runAsUser`/`runAsGroup` are honoured
//! when the tests run as root. The output becomes the pod's log records, cut as containerd
//! cuts them (`output`); the exit becomes the container's `terminated` state (`OOMKilled`
//! for a command marked `fake:oom` that dies of SIGKILL: no memory limit is enforced).
//! Deleting the pod sends SIGTERM to the main process, then SIGKILL to its process group
//! once the grace period is over.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::cluster;
use super::{now, Cluster, World};
use config::{Container, IMAGE_PATH};

mod config;
mod output;

/// How often the kubelet looks at its pods.
const POLL: Duration = Duration::from_millis(10);

/// Readies the fake's directory: reachable by any user the pods run as, with the "image":
/// a `bin` of busybox applets, when the host has busybox.
pub(crate) fn prepare(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.join("image/bin");
    std::fs::create_dir_all(&bin)?;
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Ok(());
    }
    let list = std::process::Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if !applet.is_empty() && !applet.contains('/') {
            std::os::unix::fs::symlink(busybox, bin.join(applet))?;
        }
    }
    Ok(())
}

/// Runs the pod to its end: waits until its container can be created, runs it, and records
/// how it ended.
pub(crate) async fn run_pod(cluster: Arc<Cluster>, pod: String) {
    let Some(container) = admit(&cluster, &pod).await else {
        return;
    };
    let started = now();
    let (child, readers) = match start(&cluster, &pod, &container) {
        Ok(running) => running,
        Err(e) => {
            let terminated = json!({"exitCode": 128, "reason": "StartError",
                "message": format!("failed to start containerd task \"{pod}\": {e}: unknown"),
                "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now()});
            cluster::container_ended(&mut cluster.lock(), &pod, terminated, true);
            return;
        }
    };
    let code = supervise(&cluster, &pod, child).await;
    for mut reader in readers {
        // The group is dead, so the pipes close; a process that left it is cut off.
        let drained = tokio::time::timeout(Duration::from_secs(5), &mut reader).await;
        if drained.is_err() {
            tracing::warn!(pod, "output still open after the container ended");
            reader.abort();
        }
    }
    // The fake cannot enforce a memory limit; as in the Nomad fake, a command marked
    // `fake:oom` that dies of SIGKILL stands for a container the kernel killed.
    let oom = container.argv.iter().any(|a| a.contains("fake:oom"));
    let reason = match code {
        0 => "Completed",
        137 if oom => "OOMKilled",
        _ => "Error",
    };
    let terminated = json!({"exitCode": code, "reason": reason, "startedAt": started,
        "finishedAt": now(), "containerID": container_id(&pod)});
    cluster::container_ended(&mut cluster.lock(), &pod, terminated, true);
}

/// A container id in containerd's shape, the same for the pod every time.
fn container_id(pod: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pod.hash(&mut h);
    format!("containerd://{:016x}{}", h.finish(), "0".repeat(48))
}

/// Waits until the container can be created (image pulled, Secrets there), showing why not in
/// its waiting state; `None` when the pod is deleted first.
async fn admit(cluster: &Cluster, pod: &str) -> Option<Container> {
    loop {
        {
            let mut w = cluster.lock();
            let p = w.pods.get(pod)?;
            if !p["metadata"]["deletionTimestamp"].is_null() {
                cluster::never_started(&mut w, pod, true);
                return None;
            }
            match config::config(&w, p, cluster.dir.path()) {
                Ok(container) => return Some(container),
                Err((reason, message)) => show_waiting(&mut w, pod, reason, message),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn show_waiting(w: &mut World, pod: &str, reason: &str, message: Option<String>) {
    let Some(p) = w.pods.get_mut(pod) else { return };
    let mut state = json!({"reason": reason});
    if let Some(m) = message {
        state["message"] = json!(m);
    }
    let current = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    if *current != state {
        p["status"]["containerStatuses"] = json!([{"name": p["spec"]["containers"][0]["name"],
            "image": p["spec"]["containers"][0]["image"], "imageID": "", "ready": false,
            "restartCount": 0, "started": false, "state": {"waiting": state}}]);
    }
}

/// Writes the volumes and starts the process, marked running; returns it with the tasks
/// copying its output into the log.
fn start(
    cluster: &Arc<Cluster>,
    pod: &str,
    c: &Container,
) -> std::io::Result<(tokio::process::Child, Vec<tokio::task::JoinHandle<()>>)> {
    for v in &c.volumes {
        std::fs::create_dir_all(&v.host)?;
        let mut dir = v.host.as_path();
        while dir.starts_with(cluster.dir.path()) && dir != cluster.dir.path() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            dir = dir.parent().unwrap_or(dir);
        }
        for (name, content, mode) in &v.files {
            let file = v.host.join(name);
            std::fs::write(&file, content)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
        }
    }
    let path = (c.env.iter().find(|(k, _)| k == "PATH")).map_or(IMAGE_PATH, |(_, p)| p.as_str());
    let program = find(&c.argv[0], path).ok_or_else(|| {
        let why = format!(
            "exec: \"{}\": executable file not found in $PATH",
            c.argv[0]
        );
        std::io::Error::new(std::io::ErrorKind::NotFound, why)
    })?;
    let root = is_root();
    let mut argv = vec![program.to_string_lossy().into_owned()];
    argv.extend(c.argv[1..].iter().cloned());
    if root && c.read_only && c.uid.unwrap_or(0) == 0 {
        // The mount is read-only: root must not get past the files' modes either.
        let setpriv = find("setpriv", IMAGE_PATH).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "setpriv is not installed")
        })?;
        let setpriv = setpriv.to_string_lossy().into_owned();
        let wrap = [setpriv.as_str(), "--bounding-set", "-dac_override", "--"];
        argv.splice(0..0, wrap.map(str::to_owned));
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(c.env.clone())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if root {
        if let Some(uid) = c.uid {
            cmd.uid(uid);
        }
        if let Some(gid) = c.gid.or(c.uid.map(|_| 0)) {
            cmd.gid(gid);
        }
    }
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or_default();
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let drained = Arc::new(tokio::sync::Barrier::new(2));
    let readers = vec![
        tokio::spawn(output::record(
            cluster.clone(),
            pod.to_owned(),
            "stdout",
            out.ok_or_else(|| std::io::Error::other("no stdout pipe"))?,
            drained.clone(),
        )),
        tokio::spawn(output::record(
            cluster.clone(),
            pod.to_owned(),
            "stderr",
            err.ok_or_else(|| std::io::Error::other("no stderr pipe"))?,
            drained,
        )),
    ];
    mark_running(&mut cluster.lock(), pod, pid);
    Ok((child, readers))
}

/// `program` as `PATH` finds it.
fn find(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn mark_running(w: &mut World, pod: &str, pid: u32) {
    w.processes.insert(pod.to_owned(), pid);
    let Some(p) = w.pods.get_mut(pod) else {
        return; // gone while starting: `supervise` kills it
    };
    let image = p["spec"]["containers"][0]["image"].clone();
    p["status"]["phase"] = json!("Running");
    p["status"]["startTime"] = json!(now());
    p["status"]["hostIP"] = json!("10.0.0.2");
    p["status"]["podIP"] = json!("10.244.0.9");
    p["status"]["conditions"] = json!([
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": "True"},
        {"type": "Ready", "status": "True"},
    ]);
    p["status"]["containerStatuses"] = json!([{"name": p["spec"]["containers"][0]["name"],
        "image": image, "imageID": format!("{}@sha256:{:0>64}", image.as_str().unwrap_or_default(), 0),
        "containerID": container_id(pod), "ready": true, "started": true, "restartCount": 0,
        "state": {"running": {"startedAt": now()}}}]);
    let job = p["metadata"]["labels"][cluster::JOB_NAME_LABEL].clone();
    if let Some(j) = job.as_str().and_then(|j| w.jobs.get_mut(j)) {
        j["status"]["ready"] = json!(1);
    }
}

/// Waits for the process, stopping it when the pod is deleted (SIGTERM, then SIGKILL once
/// the grace is over, sooner if a later delete shortens it); returns its exit code, 128 +
/// the signal when one ended it, as container runtimes report.
async fn supervise(cluster: &Cluster, pod: &str, mut child: tokio::process::Child) -> i64 {
    let pid = child.id().unwrap_or_default();
    let mut kill_at: Option<Instant> = None;
    let mut grace_seen: Option<i64> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = tokio::time::sleep(POLL) => {}
        }
        let grace = {
            let w = cluster.lock();
            match w.pods.get(pod) {
                None => Some(0),
                Some(p) => p["metadata"]["deletionGracePeriodSeconds"].as_i64(),
            }
        };
        let Some(grace) = grace else { continue };
        if grace_seen.is_none() {
            signal(pid, "TERM", false).await;
        }
        if grace_seen != Some(grace) {
            grace_seen = Some(grace);
            let at = Instant::now() + Duration::from_secs(grace.max(0) as u64);
            kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
        }
        if kill_at.is_some_and(|k| Instant::now() >= k) {
            signal(pid, "KILL", true).await;
        }
    };
    // Like a container's end: whatever the main process left behind dies with it.
    signal(pid, "KILL", true).await;
    match status {
        Ok(s) => s
            .code()
            .map(i64::from)
            .or(s.signal().map(|n| 128 + i64::from(n)))
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

/// `SIG<sig>` to the main process, or to its whole process group.
async fn signal(pid: u32, sig: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = tokio::process::Command::new("kill")
        .args([format!("-{sig}"), "--".into(), target])
        .stderr(Stdio::null())
        .status()
        .await;
}

/// SIGKILL to a process group, from a place that cannot wait.
pub(crate) fn kill_group_now(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}
