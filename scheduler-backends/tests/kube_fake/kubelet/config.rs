//! The container a pod spec describes, as the kubelet puts it together: the command, the
//! environment (`env` values and `secretKeyRef`s, `envFrom` Secrets, `$(NAME)` references
//! expanded), the Secret volumes' files, the user; or why it cannot be created yet.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::super::World;

/// `PATH` of the busybox image, after the applets.
pub(super) const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The service environment every container gets (`enableServiceLinks`).
const SERVICE_ENV: [(&str, &str); 4] = [
    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ("KUBERNETES_SERVICE_PORT", "443"),
    ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
    ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
];

/// What the kubelet needs to start the container.
pub(super) struct Container {
    pub(super) argv: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) volumes: Vec<Volume>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    /// A mount is read-only: its files must not be writable, even by root.
    pub(super) read_only: bool,
}

/// A volume's files, written where its mount path points.
pub(super) struct Volume {
    pub(super) mount_path: String,
    pub(super) host: PathBuf,
    /// Mounted read-only (as Secret volumes always are).
    pub(super) read_only: bool,
    /// Name, content, mode.
    pub(super) files: Vec<(String, Vec<u8>, u32)>,
}

/// Why the container cannot be created yet: the waiting reason and message.
pub(super) type Waiting = (&'static str, Option<String>);

/// The container as the pod spec and the Secrets define it.
pub(super) fn config(w: &World, pod: &Value, dir: &Path) -> Result<Container, Waiting> {
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let image = c["image"].as_str().unwrap_or_default();
    if image.contains("missing") {
        let pulled =
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull";
        return Err(if pulled {
            (
                "ImagePullBackOff",
                Some(format!("Back-off pulling image \"{image}\"")),
            )
        } else {
            let why = format!("rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found");
            ("ErrImagePull", Some(why))
        });
    }
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let path = format!("{}:{IMAGE_PATH}", dir.join("image/bin").display());
    let env = environment(w, c, name, &path)?;
    let mut argv: Vec<String> = ["command", "args"]
        .iter()
        .flat_map(|k| c[k].as_array().cloned().unwrap_or_default())
        .map(|a| expand(a.as_str().unwrap_or_default(), &env))
        .collect();
    if argv.is_empty() {
        argv.push("sh".into()); // busybox's CMD
    }
    let volumes = volumes(w, spec, c, &dir.join("pods").join(name))?;
    let mut by_length: Vec<&Volume> = volumes.iter().collect();
    by_length.sort_by_key(|v| std::cmp::Reverse(v.mount_path.len()));
    for arg in &mut argv {
        for v in &by_length {
            *arg = arg.replace(&v.mount_path, &v.host.to_string_lossy());
        }
    }
    let id = |k: &str| {
        (c["securityContext"][k].as_u64())
            .or(spec["securityContext"][k].as_u64())
            .and_then(|n| u32::try_from(n).ok())
    };
    let read_only = volumes.iter().any(|v| v.read_only);
    Ok(Container {
        argv,
        env,
        volumes,
        uid: id("runAsUser"),
        gid: id("runAsGroup"),
        read_only,
    })
}

/// A Secret's data, when the Secret exists.
fn secret_data(w: &World, name: &str) -> Option<serde_json::Map<String, Value>> {
    let s = w.secrets.get(name)?;
    Some(s["data"].as_object().cloned().unwrap_or_default())
}

fn decode(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap_or_default()
}

fn set(env: &mut Vec<(String, String)>, name: &str, value: String) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_owned(), value));
}

/// The container's environment: the runtime's and the service variables, then `envFrom`,
/// then `env`, later ones winning.
fn environment(
    w: &World,
    c: &Value,
    pod: &str,
    path: &str,
) -> Result<Vec<(String, String)>, Waiting> {
    let missing = |name: &str| {
        let why = format!("secret \"{name}\" not found");
        ("CreateContainerConfigError", Some(why))
    };
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path.to_owned()),
        ("HOSTNAME".into(), pod.to_owned()),
    ];
    env.extend(
        SERVICE_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let r = &from["secretRef"];
        let Some(name) = r["name"].as_str() else {
            continue;
        };
        match secret_data(w, name) {
            Some(data) => {
                let prefix = from["prefix"].as_str().unwrap_or_default();
                for (k, v) in data {
                    set(&mut env, &format!("{prefix}{k}"), lossy(decode(&v)));
                }
            }
            None if r["optional"] == true => {}
            None => return Err(missing(name)),
        }
    }
    for var in c["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        let r = &var["valueFrom"]["secretKeyRef"];
        let value = if let Some(secret) = r["name"].as_str() {
            let key = r["key"].as_str().unwrap_or_default();
            match secret_data(w, secret).map(|d| d.get(key).cloned()) {
                Some(Some(v)) => lossy(decode(&v)),
                _ if r["optional"] == true => continue,
                None => return Err(missing(secret)),
                Some(None) => {
                    let why = format!("couldn't find key {key} in Secret default/{secret}");
                    return Err(("CreateContainerConfigError", Some(why)));
                }
            }
        } else {
            expand(var["value"].as_str().unwrap_or_default(), &env)
        };
        set(&mut env, name, value);
    }
    Ok(env)
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Expands `$(NAME)` from `env` as the kubelet does: `$$` is a literal `$`, and a name it
/// does not know is left as written.
fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if after.is_empty() {
            out.push('$');
            rest = after;
        } else if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('(') {
            match a.find(')') {
                Some(j) => {
                    let name = &a[..j];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = &a[j + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = a;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's Secret volumes (and empty dirs) with their files, under `host`.
fn volumes(w: &World, spec: &Value, c: &Value, host: &Path) -> Result<Vec<Volume>, Waiting> {
    let mut out = Vec::new();
    for mount in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap_or_default();
        let Some(volume) =
            (spec["volumes"].as_array().into_iter().flatten()).find(|v| v["name"] == name)
        else {
            continue;
        };
        let mut files = Vec::new();
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            let Some(data) = secret_data(w, secret) else {
                if volume["secret"]["optional"] == true {
                    continue;
                }
                // The mount waits for the Secret; the pod shows it as still being created.
                return Err(("ContainerCreating", None));
            };
            let mode = volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644);
            let items = volume["secret"]["items"].as_array();
            for (key, value) in data {
                let item = items.map(|i| i.iter().find(|i| i["key"] == key.as_str()));
                let (path, mode) = match item {
                    None => (key.clone(), mode),
                    Some(None) => continue,
                    Some(Some(i)) => (
                        i["path"].as_str().unwrap_or(&key).to_owned(),
                        i["mode"].as_u64().unwrap_or(mode),
                    ),
                };
                files.push((path, decode(&value), mode as u32));
            }
        } else if volume["emptyDir"].is_null() {
            continue;
        }
        out.push(Volume {
            mount_path: mount["mountPath"].as_str().unwrap_or_default().to_owned(),
            host: host.join("volumes").join(name),
            read_only: mount["readOnly"] == true || !volume["secret"].is_null(),
            files,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_as_the_kubelet_does() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(
            expand("$(A) $$ $(B) $((i+1)) $x $", &env),
            "1 $ $(B) $((i+1)) $x $"
        );
        assert_eq!(expand("$$(A) $(", &env), "$(A) $(");
    }
}
