//! What the control plane does with the fake's objects: the fields the API server and the
//! Job controller fill in, the Job's pod, deletes with their grace periods, finalizers and
//! propagation, the garbage collector, and (with a kubelet) the Job controller's conditions
//! when the pod ends or the Job's `activeDeadlineSeconds` passes.
//!
//! Pods carry no `batch.kubernetes.io/job-tracking` finalizer: the fake's Job controller
//! counts a pod the moment it ends, so it never needs one.

use serde_json::{json, Map, Value};

use super::{now, World};

/// Label the Job controller puts on its pods (and the API server on the Job's template).
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The finalizer that holds an owner until the garbage collector has deleted its dependents.
const FOREGROUND: &str = "foregroundDeletion";

/// An API error: the `Status` the fake answers with.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub(crate) fn not_found(kind: &str, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{kind} \"{name}\" not found"),
        }
    }

    pub(crate) fn exists(kind: &str, name: &str) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{kind} \"{name}\" already exists"),
        }
    }

    pub(crate) fn invalid(kind: &str, name: &str, why: &str) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {why}"),
        }
    }
}

/// Appends a `True` condition to a Job's status.
pub(crate) fn add_condition(job: &mut Value, kind: &str, reason: &str, message: &str) {
    let cond = json!({"type": kind, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now(), "lastTransitionTime": now()});
    match job["status"]["conditions"].as_array_mut() {
        Some(c) => c.push(cond),
        None => job["status"]["conditions"] = json!([cond]),
    }
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

fn finished(job: &Value) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

fn deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

fn owned_by(obj: &Value, uid: &Value) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| o.iter().any(|r| r["uid"] == *uid))
}

/// A `generateName` suffix, from the alphabet the API server uses.
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Fills in what the API server defaults in a pod template.
fn default_pod_spec(spec: &mut Value) {
    let defaults = [
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
    ];
    for (k, v) in defaults {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        let image = c["image"].as_str().unwrap_or_default();
        let latest = !image.rsplit('/').next().unwrap_or_default().contains(':')
            || image.ends_with(":latest");
        let pull = if latest { "Always" } else { "IfNotPresent" };
        let defaults = [
            ("imagePullPolicy", json!(pull)),
            ("terminationMessagePath", json!("/dev/termination-log")),
            ("terminationMessagePolicy", json!("File")),
        ];
        for (k, v) in defaults {
            if c[k].is_null() {
                c[k] = v;
            }
        }
    }
}

/// Stores a new Job with what the API server and the Job controller add, and makes its pod;
/// returns the Job and the pod's name.
pub(crate) fn create_job(
    w: &mut World,
    ns: &str,
    mut job: Value,
) -> Result<(Value, String), Refusal> {
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if w.jobs.contains_key(&name) {
        return Err(Refusal::exists("jobs.batch", &name));
    }
    let uid = w.uid();
    let meta = &mut job["metadata"];
    meta["uid"] = json!(uid);
    meta["namespace"] = json!(ns);
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    meta["resourceVersion"] = json!(w.version());
    let spec = &mut job["spec"];
    for (k, v) in [
        ("completions", json!(1)),
        ("parallelism", json!(1)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    spec["selector"] = json!({"matchLabels": {CONTROLLER_UID_LABEL: uid}});
    let labels = &mut spec["template"]["metadata"]["labels"];
    for (k, v) in [
        (CONTROLLER_UID_LABEL, &uid),
        ("controller-uid", &uid),
        (JOB_NAME_LABEL, &name),
        ("job-name", &name),
    ] {
        labels[k] = json!(v);
    }
    default_pod_spec(&mut spec["template"]["spec"]);
    job["status"] = json!({"startTime": now(), "active": 1, "ready": 0, "terminating": 0,
        "uncountedTerminatedPods": {}});

    let pod_name = format!("{name}-{}", suffix());
    let mut pod_spec = job["spec"]["template"]["spec"].clone();
    pod_spec["nodeName"] = json!("fake-node");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "generateName": format!("{name}-"), "namespace": ns,
            "uid": w.uid(), "resourceVersion": w.version(), "creationTimestamp": now(),
            "labels": job["spec"]["template"]["metadata"]["labels"].clone(),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": pod_spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]}});
    w.pods.insert(pod_name.clone(), pod);
    w.jobs.insert(name, job.clone());
    Ok((job, pod_name))
}

/// `DELETE` on a Job. `Foreground` keeps it, marked, until the garbage collector has deleted
/// its pods and Secrets; `Background` removes it and then them; without a policy a Job's
/// dependents are orphaned, as the batch API has always done.
pub(crate) fn delete_job(
    w: &mut World,
    name: &str,
    propagation: Option<&str>,
    kubelet: bool,
) -> Result<Value, Refusal> {
    let Some(job) = w.jobs.get_mut(name) else {
        return Err(Refusal::not_found("jobs.batch", name));
    };
    let uid = job["metadata"]["uid"].clone();
    if deleting(job) {
        return Ok(job.clone());
    }
    job["metadata"]["deletionTimestamp"] = json!(now());
    job["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    let answer = match propagation {
        Some("Foreground") => {
            job["metadata"]["finalizers"] = json!([FOREGROUND]);
            job.clone()
        }
        Some("Background") => w.jobs.remove(name).unwrap_or_default(),
        _ => {
            let job = w.jobs.remove(name).unwrap_or_default();
            for obj in w.pods.values_mut().chain(w.secrets.values_mut()) {
                if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
            }
            return Ok(job);
        }
    };
    delete_dependents(w, &uid, kubelet);
    collect(w, kubelet);
    Ok(answer)
}

/// The garbage collector deleting what an owner being deleted owns: Secrets at once, pods
/// with their own grace period.
fn delete_dependents(w: &mut World, uid: &Value, kubelet: bool) {
    w.secrets.retain(|_, s| !owned_by(s, uid));
    let pods: Vec<String> = (w.pods.iter())
        .filter(|(_, p)| owned_by(p, uid))
        .map(|(n, _)| n.clone())
        .collect();
    for pod in pods {
        let _ = delete_pod(w, &pod, None, kubelet);
    }
}

/// The garbage collector: dependents whose owners are all gone go, and an owner waiting in
/// foreground deletion goes once nothing it owns is left.
fn collect(w: &mut World, kubelet: bool) {
    let uids: Vec<Value> = w
        .jobs
        .values()
        .map(|j| j["metadata"]["uid"].clone())
        .collect();
    let orphaned = |o: &Value| {
        o["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| !refs.is_empty() && refs.iter().all(|r| !uids.contains(&r["uid"])))
    };
    w.secrets.retain(|_, s| !orphaned(s));
    let orphans: Vec<String> = (w.pods.iter())
        .filter(|(_, p)| orphaned(p) && !deleting(p))
        .map(|(n, _)| n.clone())
        .collect();
    for pod in orphans {
        let _ = delete_pod(w, &pod, None, kubelet);
    }
    let done: Vec<String> = (w.jobs.iter())
        .filter(|(_, j)| {
            let uid = &j["metadata"]["uid"];
            j["metadata"]["finalizers"] == json!([FOREGROUND])
                && !w.pods.values().any(|p| owned_by(p, uid))
        })
        .map(|(n, _)| n.clone())
        .collect();
    for name in done {
        w.jobs.remove(&name);
    }
}

/// Whether a finalizer holds the object.
fn holds(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

/// Whether a container of the pod runs (or is being started by the kubelet).
fn running(w: &World, name: &str) -> bool {
    w.processes.contains_key(name)
        || w.pods
            .get(name)
            .is_some_and(|p| !p["status"]["containerStatuses"][0]["state"]["running"].is_null())
}

/// `DELETE` on a pod. A pod where nothing runs goes at once (unless a finalizer holds it);
/// a running one is marked for the kubelet to stop within `grace`, by default its
/// `terminationGracePeriodSeconds`; a second delete may shorten that, never lengthen it. A
/// grace of 0 removes it from the API at once (finalizers permitting), whatever still runs.
pub(crate) fn delete_pod(
    w: &mut World,
    name: &str,
    grace: Option<i64>,
    kubelet: bool,
) -> Result<Value, Refusal> {
    let Some(pod) = w.pods.get_mut(name) else {
        return Err(Refusal::not_found("pods", name));
    };
    let own = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);
    let grace = grace.unwrap_or(own).max(0);
    let asked = pod["metadata"]["deletionGracePeriodSeconds"].as_i64();
    if asked.is_none_or(|a| grace < a) {
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        pod["metadata"]["deletionTimestamp"] =
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    }
    let held = holds(pod);
    let answer = pod.clone();
    if grace == 0 && !held {
        remove_pod(w, name, kubelet);
    } else {
        settle_pod(w, name, kubelet);
    }
    Ok(answer)
}

/// Removes a pod marked for deletion once nothing holds it any more: no container running,
/// no finalizer.
pub(crate) fn settle_pod(w: &mut World, name: &str, kubelet: bool) {
    let Some(pod) = w.pods.get(name) else { return };
    if deleting(pod) && !holds(pod) && !running(w, name) {
        remove_pod(w, name, kubelet);
    }
}

fn remove_pod(w: &mut World, name: &str, kubelet: bool) {
    let Some(pod) = w.pods.remove(name) else {
        return;
    };
    w.logs.remove(name);
    let ended = !pod["status"]["containerStatuses"][0]["state"]["terminated"].is_null();
    if kubelet && !ended {
        // A pod deleted before its container ended counts as failed.
        if let Some(job) = pod["metadata"]["labels"][JOB_NAME_LABEL].as_str() {
            job_reacts(w, job, false);
        }
    }
    collect(w, kubelet);
}

/// `PATCH` on a pod's metadata, as a strategic merge patch (finalizers are merged, and
/// removed with `$deleteFromPrimitiveList/finalizers`) or a JSON merge patch. Pods take no
/// other change the backend could make.
pub(crate) fn patch_pod(
    w: &mut World,
    name: &str,
    strategic: bool,
    patch: &Value,
    kubelet: bool,
) -> Result<Value, Refusal> {
    let Some(pod) = w.pods.get_mut(name) else {
        return Err(Refusal::not_found("pods", name));
    };
    let Some(patch) = patch.as_object() else {
        return Err(Refusal::invalid("pods", name, "the patch is not an object"));
    };
    if patch.keys().any(|k| k != "metadata") {
        let why = "spec: Forbidden: pod updates may not change fields other than \
                   `spec.containers[*].image`, `spec.activeDeadlineSeconds`, ...";
        return Err(Refusal::invalid("pods", name, why));
    }
    let before: Vec<Value> = pod["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut meta = patch
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut finalizers = before.clone();
    if strategic {
        if let Some(Value::Array(gone)) = meta.remove("$deleteFromPrimitiveList/finalizers") {
            finalizers.retain(|f| !gone.contains(f));
        }
        if let Some(Value::Array(more)) = meta.remove("finalizers") {
            for f in more {
                if !finalizers.contains(&f) {
                    finalizers.push(f);
                }
            }
        }
    } else if let Some(f) = meta.remove("finalizers") {
        finalizers = f.as_array().cloned().unwrap_or_default();
    }
    let added: Vec<&Value> = finalizers.iter().filter(|f| !before.contains(f)).collect();
    if deleting(pod) && !added.is_empty() {
        let why = format!(
            "metadata.finalizers: Forbidden: no new finalizers can be added if the object \
             is being deleted, found new finalizers {added:?}"
        );
        return Err(Refusal::invalid("pods", name, &why));
    }
    merge(&mut pod["metadata"], &Value::Object(meta));
    pod["metadata"]["finalizers"] = json!(finalizers);
    pod["metadata"]["resourceVersion"] = json!((w.resource_version + 1).to_string());
    w.resource_version += 1;
    let answer = w.pods[name].clone();
    settle_pod(w, name, kubelet);
    Ok(answer)
}

/// RFC 7386 merge: objects merge, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, v) in patch {
        if v.is_null() {
            if let Some(t) = target.as_object_mut() {
                t.remove(k);
            }
        } else {
            merge(&mut target[k], v);
        }
    }
}

/// The pod's container ended with `terminated`: its status, the pod's phase, the Job's
/// conditions (with a kubelet), and the pod goes if its deletion was asked.
pub(crate) fn container_ended(w: &mut World, name: &str, terminated: Value, kubelet: bool) {
    w.processes.remove(name);
    let Some(pod) = w.pods.get_mut(name) else {
        return;
    };
    let succeeded = terminated["exitCode"] == 0;
    let image = pod["spec"]["containers"][0]["image"].clone();
    let status = &mut pod["status"];
    let mut container = status["containerStatuses"][0].take();
    if container.is_null() {
        container = json!({"name": "job", "image": image, "imageID": "", "restartCount": 0});
    }
    container["state"] = json!({"terminated": terminated});
    container["ready"] = json!(false);
    container["started"] = json!(false);
    status["containerStatuses"] = json!([container]);
    status["phase"] = json!(if succeeded { "Succeeded" } else { "Failed" });
    status["conditions"] = json!([
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
        {"type": "Ready", "status": "False", "reason": "PodCompleted"},
    ]);
    let job = pod["metadata"]["labels"][JOB_NAME_LABEL]
        .as_str()
        .map(str::to_owned);
    if let (true, Some(job)) = (kubelet, job) {
        job_reacts(w, &job, succeeded);
    }
    settle_pod(w, name, kubelet);
}

/// The pod was deleted before its container started: the kubelet makes it `Failed` and lets
/// it go (finalizers permitting); the Job controller counts it failed.
pub(crate) fn never_started(w: &mut World, name: &str, kubelet: bool) {
    let Some(pod) = w.pods.get_mut(name) else {
        return;
    };
    pod["status"]["phase"] = json!("Failed");
    let job = pod["metadata"]["labels"][JOB_NAME_LABEL]
        .as_str()
        .map(str::to_owned);
    if let (true, Some(job)) = (kubelet, job) {
        job_reacts(w, &job, false);
    }
    settle_pod(w, name, kubelet);
}

/// The Job controller on its pod's end: the counts and the final conditions, each final
/// one after its interim `FailureTarget` or `SuccessCriteriaMet`.
fn job_reacts(w: &mut World, name: &str, succeeded: bool) {
    let Some(job) = w.jobs.get_mut(name) else {
        return;
    };
    if deleting(job) || finished(job) {
        return;
    }
    job["status"]["active"] = json!(0);
    job["status"]["ready"] = json!(0);
    if let Some(target) = condition(job, "FailureTarget").cloned() {
        let (reason, message) = (target["reason"].as_str(), target["message"].as_str());
        add_condition(job, "Failed", reason.unwrap_or(""), message.unwrap_or(""));
        job["status"]["failed"] = json!(1);
    } else if succeeded {
        let why = "Reached expected number of succeeded pods";
        add_condition(job, "SuccessCriteriaMet", "CompletionsReached", why);
        add_condition(job, "Complete", "CompletionsReached", why);
        job["status"]["succeeded"] = json!(1);
        job["status"]["completionTime"] = json!(now());
    } else {
        let why = "Job has reached the specified backoff limit";
        add_condition(job, "FailureTarget", "BackoffLimitExceeded", why);
        add_condition(job, "Failed", "BackoffLimitExceeded", why);
        job["status"]["failed"] = json!(1);
    }
}

/// The Job `name` (while it has `uid`) has been active for its `activeDeadlineSeconds`: the
/// Job controller marks it and deletes its pod; it fails once the pod has ended.
pub(crate) fn deadline_passed(w: &mut World, name: &str, uid: &Value, kubelet: bool) {
    let Some(job) = w.jobs.get_mut(name) else {
        return;
    };
    if job["metadata"]["uid"] != *uid || deleting(job) || finished(job) {
        return;
    }
    let why = "Job was active longer than specified deadline";
    add_condition(job, "FailureTarget", "DeadlineExceeded", why);
    let pods: Vec<String> = (w.pods.iter())
        .filter(|(_, p)| owned_by(p, uid) && !deleting(p))
        .map(|(n, _)| n.clone())
        .collect();
    for pod in pods {
        let ended =
            !w.pods[&pod]["status"]["containerStatuses"][0]["state"]["terminated"].is_null();
        if !ended {
            let _ = delete_pod(w, &pod, None, kubelet);
        }
    }
}
