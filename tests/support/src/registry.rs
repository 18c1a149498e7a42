//! A private container registry for the tests: Debian's `docker-registry` on a free loopback
//! port, with htpasswd (bcrypt) authentication and storage in a temporary directory. Docker
//! talks plain HTTP to registries on 127.0.0.0/8, so no certificate is needed.
//!
//! The registry runs in a process group of its own and is stopped by that group when the
//! fixture is dropped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running registry and the one account it knows.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`: what image references start with.
    pub host: String,
    /// The account's user name.
    pub username: String,
    /// The account's password.
    pub password: String,
}

impl Registry {
    /// Starts a registry that lets `username`/`password` push and pull, and nobody else.
    pub fn start(username: &str, password: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", username, password])
            .output()
            .context("cannot run htpasswd (Debian's apache2-utils)")?;
        if !htpasswd.status.success() {
            bail!(
                "htpasswd failed: {}",
                String::from_utf8_lossy(&htpasswd.stderr)
            );
        }
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\n\
             log: {{level: warn}}\n\
             storage: {{filesystem: {{rootdirectory: {root}}}}}\n\
             http: {{addr: {host}}}\n\
             auth: {{htpasswd: {{realm: jobdock-test, path: {htpasswd}}}}}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start docker-registry (Debian's docker-registry package)")?;
        let registry = Self {
            child,
            dir,
            host,
            username: username.into(),
            password: password.into(),
        };
        registry.wait_until_listening()?;
        Ok(registry)
    }

    fn wait_until_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&self.host).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the registry never listened on {}: {}",
                    self.host,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Builds an image of its own from the local image `base` (so that what the registry
    /// knows of it touches no other test's image), pushes it as `<host>/<repo>` with the
    /// account's credentials (kept in a Docker configuration of the fixture's own), and
    /// removes it from the host again, so that a run must pull it. Returns the reference.
    pub fn push(&self, base: &str, repo: &str) -> Result<String> {
        let reference = format!("{}/{repo}", self.host);
        let config = self.dir.path().join("docker-config");
        std::fs::create_dir_all(&config)?;
        let dockerfile = format!(
            "FROM {base}\nLABEL dev.jobdock.test.registry={}\n",
            uuid::Uuid::new_v4()
        );
        docker(
            &config,
            &["build", "--quiet", "--tag", &reference, "-"],
            Some(&dockerfile),
        )?;
        docker(
            &config,
            &[
                "login",
                "--username",
                &self.username,
                "--password-stdin",
                &self.host,
            ],
            Some(&self.password),
        )?;
        docker(&config, &["push", &reference], None)?;
        docker(&config, &["image", "rm", &reference], None)?;
        Ok(reference)
    }
}

fn docker(config: &Path, args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run docker")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The registry leads its own process group; stop the group, then reap the child.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--"])
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.wait();
    }
}
