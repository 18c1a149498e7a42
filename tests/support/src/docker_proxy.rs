//! A stand-in for the Docker daemon's socket that a test can cut and restore: the engine
//! talks to the real daemon through it, and "the daemon goes away" is the proxy dropping
//! every connection and refusing new ones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The real daemon's socket.
const DAEMON: &str = "/var/run/docker.sock";

/// A proxy listening on a socket of its own.
pub struct DockerProxy {
    path: PathBuf,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DockerProxy {
    /// Starts a proxy at `path`.
    pub fn start(path: &Path) -> DockerProxy {
        let p = DockerProxy {
            path: path.to_path_buf(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        p.resume();
        p
    }

    /// `DOCKER_HOST` for the engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The daemon "goes away": every connection drops and new ones are refused.
    pub fn cut(&self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// The daemon "comes back".
    pub fn resume(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind proxy socket");
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut daemon) = UnixStream::connect(DAEMON).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
                tasks.lock().expect("tasks").push(conn);
            }
        });
        self.tasks.lock().expect("tasks").push(accept);
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
