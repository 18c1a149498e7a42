//! A run's image on the daemon: pulled as the job's pull policy says, with the job's own
//! credentials, so that no job runs an image that it could not have pulled itself.
//!
//! The daemon's image cache is shared by every job on the host: once one job has pulled a
//! private image, the image is there for any other job that names it. Left to the default,
//! a run's image is therefore pulled before every run — a pull of an image that is up to
//! date moves only its manifest — unless the image never came from a registry (it was
//! built or imported on the host, so it has no repository digest and there is nothing to
//! pull it from). Swarm shares this pre-flight pull: its nodes fall back to a cached image
//! when their own pull fails.

use bollard::auth::DockerCredentials;
use bollard::models::ImageInspect;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use secrecy::ExposeSecret;

use super::errors::{from_docker, is_not_found, is_transport};
use crate::{BackendError, LaunchSpec, PullPolicy, RegistryAuth};

/// Makes sure the run may use its image: pulls it as the spec's pull policy says and
/// returns the user the image runs as (for the ownership of secret files).
pub(crate) async fn ensure_image(
    docker: &Docker,
    spec: &LaunchSpec,
) -> Result<Option<String>, BackendError> {
    let local = match docker.inspect_image(&spec.image).await {
        Ok(image) => Some(image),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(from_docker(e)),
    };
    if !must_pull(&spec.image, spec.pull_policy, local.as_ref())? {
        return Ok(local.and_then(user));
    }
    pull(docker, &spec.image, spec.registry_auth.as_ref()).await?;
    match docker.inspect_image(&spec.image).await {
        Ok(image) => Ok(user(image)),
        Err(e) => Err(pull_error(&spec.image, e)),
    }
}

/// Whether to pull `image` before the run, given the policy and the host's copy.
fn must_pull(
    image: &str,
    policy: Option<PullPolicy>,
    local: Option<&ImageInspect>,
) -> Result<bool, BackendError> {
    match (policy, local) {
        (Some(PullPolicy::Never), None) => Err(BackendError::ImagePull {
            image: image.to_owned(),
            message: "the image is not on this host and the job's pull_policy is `never`".into(),
        }),
        (Some(PullPolicy::Never | PullPolicy::IfNotPresent), Some(_)) => Ok(false),
        (_, None) | (Some(PullPolicy::Always), Some(_)) => Ok(true),
        (None, Some(local)) => Ok(from_a_registry(image, local)),
    }
}

/// Whether the host's copy of `reference` came from a registry under that name: pulling
/// (or pushing) it left a repository digest of its repository. An image built or imported on
/// the host has none, and there is nothing to pull it from.
fn from_a_registry(reference: &str, image: &ImageInspect) -> bool {
    let wanted = familiar(split_reference(reference).0);
    image.repo_digests.iter().flatten().any(|d| {
        let repo = d.split_once('@').map_or(d.as_str(), |(repo, _)| repo);
        familiar(repo) == wanted
    })
}

/// A repository as Docker shows it: Docker Hub's host and `library/` left out.
fn familiar(repo: &str) -> &str {
    let repo = repo.split_once('@').map_or(repo, |(repo, _)| repo);
    let repo = ["docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|host| repo.strip_prefix(host))
        .unwrap_or(repo);
    repo.strip_prefix("library/").unwrap_or(repo)
}

fn user(image: ImageInspect) -> Option<String> {
    image.config.and_then(|c| c.user)
}
/// Pulls `image`; the daemon reports failures either as an error answer or inside the
/// progress stream, and both become [`BackendError::ImagePull`] with its words.
async fn pull(
    docker: &Docker,
    image: &str,
    auth: Option<&RegistryAuth>,
) -> Result<(), BackendError> {
    let (repo, tag) = split_reference(image);
    let mut options = CreateImageOptionsBuilder::new().from_image(repo);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let credentials = auth.map(|a| DockerCredentials {
        username: Some(a.username.clone()),
        password: Some(a.password.expose_secret().to_owned()),
        serveraddress: a.server.clone(),
        ..Default::default()
    });
    tracing::info!(image, "pulling image");
    let mut progress = docker.create_image(Some(options.build()), None, credentials);
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| pull_error(image, e))?;
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(BackendError::ImagePull {
                image: image.to_owned(),
                message,
            });
        }
    }
    Ok(())
}

fn pull_error(image: &str, err: bollard::errors::Error) -> BackendError {
    if is_transport(&err) {
        return from_docker(err);
    }
    let message = match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    };
    BackendError::ImagePull {
        image: image.to_owned(),
        message,
    }
}

/// Splits a reference into what the pull API wants: the repository and a tag. Without a tag
/// or digest the daemon would pull every tag, so `latest` is made explicit as the CLI does.
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (&image[..at], Some(&image[at + 1..]))
        }
        None => (image, Some("latest")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digests: &[&str]) -> ImageInspect {
        // `docker image inspect` shows Docker Hub's repositories in their familiar form.
        ImageInspect {
            repo_digests: Some(digests.iter().map(|d| d.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn by_default_only_an_image_that_never_came_from_a_registry_runs_unpulled() {
        let pulled = image(&["127.0.0.1:5000/app@sha256:ab", "busybox@sha256:cd"]);
        let built = image(&[]);
        let must = |p, l| must_pull("127.0.0.1:5000/app:1", p, l).unwrap();
        assert!(must(None, None));
        assert!(
            must(None, Some(&pulled)),
            "another job's pull proves nothing"
        );
        assert!(!must(None, Some(&built)));
        assert!(must(Some(PullPolicy::Always), Some(&built)));
        assert!(!must(Some(PullPolicy::IfNotPresent), Some(&pulled)));
        assert!(must(Some(PullPolicy::IfNotPresent), None));
        assert!(!must(Some(PullPolicy::Never), Some(&pulled)));
        // Only a digest of the named repository counts: a local name for the same content
        // was never pulled under that name.
        let local_name = |r| must_pull(r, None, Some(&pulled)).unwrap();
        assert!(!local_name("team/app:1"));
        assert!(local_name("busybox:1.36"));
        assert!(local_name("docker.io/library/busybox"));
        assert!(local_name("127.0.0.1:5000/app@sha256:ef"));
        let err = must_pull("app", Some(PullPolicy::Never), None).unwrap_err();
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[test]
    fn splits_references_for_the_pull_api() {
        assert_eq!(split_reference("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_reference("localhost:5000/team/app"),
            ("localhost:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_reference("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app", Some("v2"))
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", None));
    }
}
