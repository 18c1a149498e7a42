//! The life of a fake allocation: pending, then either a failed pull or a host process
//! whose output goes to the log files and whose exit becomes a `Terminated` event.
//!
//! Templates are interpreted for the subset the backend writes: an env template
//! (`Envvars`) sets every item of the `nomadVar` it names; a file template writes the item
//! its `eq $k "NAME"` picks under the allocation's secrets dir, which stands in for the
//! `/run/secrets` bind mount by replacing that path in the task's arguments.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{Alloc, Shared};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn event(kind: &str, extra: Value) -> Value {
    let mut e = json!({ "Type": kind, "Time": Utc::now().timestamp_nanos_opt(), "ExitCode": 0, "Signal": 0 });
    if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(extra.clone());
    }
    e
}

/// A fresh allocation for `job_id`, not started yet.
pub(crate) fn pending_alloc(job_id: &str, index: u64, dir: PathBuf) -> Alloc {
    Alloc {
        job_id: job_id.to_owned(),
        client_status: "pending".into(),
        create_index: index,
        task: json!({ "State": "pending", "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME,
                      "Events": [event("Received", json!({ "DisplayMessage": "Task received by client" }))] }),
        dir,
        pid: None,
    }
}

/// The allocation as `GET /v1/job/:id/allocations` lists it.
pub(crate) fn alloc_json(id: &str, a: &Alloc) -> Value {
    json!({ "ID": id, "JobID": a.job_id, "ClientStatus": a.client_status,
            "ClientDescription": "", "CreateIndex": a.create_index, "TaskStates": { "run": a.task } })
}

/// Runs the allocation's task to its end.
pub(crate) async fn run(s: Arc<Shared>, alloc_id: String) {
    let (task, dir, var) = {
        let inner = s.lock();
        let Some(alloc) = inner.allocs.get(&alloc_id) else {
            return;
        };
        let job = &inner.jobs[&alloc.job_id].spec;
        let task = job["TaskGroups"][0]["Tasks"][0].clone();
        let var = var_path(&task).and_then(|p| inner.vars.get(&p).cloned());
        (task, alloc.dir.clone(), var.unwrap_or(json!({})))
    };
    let image = task["Config"]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if image.contains("missing") {
        let msg = format!("Failed to pull `{image}`: Error response from daemon: manifest unknown");
        let failure = event(
            "Driver Failure",
            json!({ "DriverError": msg, "DisplayMessage": msg }),
        );
        finish(&s, &alloc_id, "failed", failure, false);
        return;
    }
    let rotation = (s.options.log_file_bytes, s.options.log_max_files);
    match start(&task, &dir, &var, rotation).await {
        Ok((child, copies)) => supervise(s, alloc_id, &task, child, copies).await,
        Err(e) => {
            let failure = event("Driver Failure", json!({ "DriverError": e.to_string() }));
            finish(&s, &alloc_id, "failed", failure, false);
        }
    }
}

/// The variable path the task's templates read.
fn var_path(task: &Value) -> Option<String> {
    let tmpl = task["Templates"][0]["EmbeddedTmpl"].as_str()?;
    let start = tmpl.find("nomadVar \"")? + "nomadVar \"".len();
    let len = tmpl[start..].find('"')?;
    Some(tmpl[start..start + len].to_owned())
}

/// Renders the templates: env pairs to set, files written under `dir/run/secrets`.
fn render(task: &Value, dir: &Path, items: &Value) -> std::io::Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for t in task["Templates"].as_array().into_iter().flatten() {
        let items = items.as_object().cloned().unwrap_or_default();
        if t["Envvars"] == true {
            env.extend(
                items
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())),
            );
            continue;
        }
        let tmpl = t["EmbeddedTmpl"].as_str().unwrap_or_default();
        let name = tmpl
            .split("eq $k \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let value = items.get(name).and_then(Value::as_str).unwrap_or_default();
        let secrets = dir.join("run/secrets");
        std::fs::create_dir_all(&secrets)?;
        std::fs::write(secrets.join(name), value)?;
    }
    Ok(env)
}

type Copies = Vec<tokio::task::JoinHandle<std::io::Result<()>>>;

/// Starts the task's command in a process group of its own, output into the log files.
async fn start(
    task: &Value,
    dir: &Path,
    items: &Value,
    rotation: (u64, u64),
) -> std::io::Result<(tokio::process::Child, Copies)> {
    let logs = dir.join("alloc/logs");
    std::fs::create_dir_all(&logs)?;
    let env = render(task, dir, items)?;
    let secrets = dir.join("run/secrets").to_string_lossy().into_owned();
    let config = &task["Config"];
    let program = config["command"].as_str().unwrap_or("true");
    let args: Vec<String> = config["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|a| a.replace("/run/secrets", &secrets))
        .collect();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in task["Env"].as_object().into_iter().flatten() {
        cmd.env(k, v.as_str().unwrap_or_default());
    }
    cmd.envs(env);
    let mut child = cmd.spawn()?;
    let mut copies = Vec::new();
    let out = child
        .stdout
        .take()
        .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    let err = child
        .stderr
        .take()
        .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    for (pipe, kind) in [(out, "stdout"), (err, "stderr")] {
        // Logmon's first files exist before the task runs, as Nomad has them.
        std::fs::File::create(logs.join(format!("run.{kind}.0")))?;
        let logs = logs.clone();
        if let Some(pipe) = pipe {
            copies.push(tokio::spawn(super::logs::logmon(
                pipe, logs, kind, rotation,
            )));
        }
    }
    Ok((child, copies))
}

/// Marks the task running, waits for it, and records how it ended.
async fn supervise(
    s: Arc<Shared>,
    alloc_id: String,
    task: &Value,
    mut child: tokio::process::Child,
    copies: Copies,
) {
    let pid = child.id();
    let stopped = {
        let mut inner = s.lock();
        let stop = (inner.allocs.get(&alloc_id))
            .and_then(|a| inner.jobs.get(&a.job_id))
            .is_some_and(|j| j.stop);
        if let Some(a) = inner.allocs.get_mut(&alloc_id) {
            a.pid = pid;
            a.client_status = "running".into();
            a.task["State"] = json!("running");
            a.task["StartedAt"] = json!(now());
            push_event(
                &mut a.task,
                event(
                    "Started",
                    json!({ "DisplayMessage": "Task started by client" }),
                ),
            );
        }
        stop
    };
    // Stopped while it was starting: Nomad kills it as soon as it runs.
    if stopped {
        kill(&s, &alloc_id, "TERM").await;
        tokio::spawn(kill_after(
            s.clone(),
            alloc_id.clone(),
            Duration::from_secs(5),
        ));
    }
    let status = child.wait().await;
    // Like a container's end: whatever the main process left behind dies with it.
    if let Some(pid) = pid {
        signal_group(pid, "KILL").await;
    }
    for copy in copies {
        let _ = copy.await;
    }
    let (code, signal) = match status {
        Ok(st) => (st.code().unwrap_or(0), st.signal().unwrap_or(0)),
        Err(_) => (-1, 0),
    };
    let oom = task["Config"]["args"].to_string().contains("fake:oom");
    let details = json!({ "exit_code": code.to_string(), "signal": signal.to_string(), "oom_killed": oom.to_string() });
    let terminated = event(
        "Terminated",
        json!({ "ExitCode": code, "Signal": signal, "Details": details,
                                                 "DisplayMessage": format!("Exit Code: {code}") }),
    );
    let failed = code != 0 || signal != 0;
    finish(
        &s,
        &alloc_id,
        if failed { "failed" } else { "complete" },
        terminated,
        failed,
    );
}

fn push_event(task: &mut Value, e: Value) {
    if let Some(events) = task["Events"].as_array_mut() {
        events.push(e);
    }
}

/// Records the last event and makes the allocation terminal.
fn finish(s: &Shared, alloc_id: &str, status: &str, last: Value, failed: bool) {
    let mut inner = s.lock();
    let stopped = inner
        .allocs
        .get(alloc_id)
        .and_then(|a| inner.jobs.get(&a.job_id))
        .is_some_and(|j| j.stop);
    if let Some(a) = inner.allocs.get_mut(alloc_id) {
        push_event(&mut a.task, last);
        a.task["State"] = json!("dead");
        a.task["Failed"] = json!(failed || status == "failed");
        a.task["FinishedAt"] = json!(now());
        // Nomad reports an allocation it was told to stop as complete.
        a.client_status = if stopped {
            "complete".into()
        } else {
            status.to_owned()
        };
        a.pid = None;
        inner.index += 1;
    }
}

/// Sends `SIG<sig>` to the task: the main process, or for KILL the whole group.
pub(crate) async fn kill(s: &Shared, alloc_id: &str, sig: &str) {
    let pid = {
        let mut inner = s.lock();
        let Some(a) = inner.allocs.get_mut(alloc_id) else {
            return;
        };
        if sig == "TERM" {
            push_event(
                &mut a.task,
                event("Killing", json!({ "DisplayMessage": "Sent interrupt" })),
            );
        }
        a.pid
    };
    let Some(pid) = pid else { return };
    if sig == "KILL" {
        signal_group(pid, sig).await;
    } else {
        let _ = tokio::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .await;
    }
}

/// SIGKILL after the kill timeout, as Nomad does after a stop.
pub(crate) async fn kill_after(s: Arc<Shared>, alloc_id: String, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    kill(&s, &alloc_id, "KILL").await;
}

async fn signal_group(pid: u32, sig: &str) {
    let _ = tokio::process::Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pid}")])
        .stderr(Stdio::null())
        .status()
        .await;
}
