//! The engine's client of the Docker daemon: bollard's, on connections that are kept.
//!
//! bollard's own client of a Unix socket keeps no idle connection
//! (`pool_max_idle_per_host(0)`), so each call opens a new one: nine a run, each a
//! `socket`/`connect` here and an `accept` and a goroutine in the daemon. This one hands
//! bollard's requests to hyper's pooling client over the same connector bollard uses
//! (hyperlocal's), so a call reuses an idle connection when there is one. Written here
//! because bollard offers no setting for it, only this transport hook.
//!
//! A pooled connection can be closed by the daemon while it sits idle (a restart): hyper
//! drops such a connection from the pool once it sees the close (tested below), and resends
//! a request whose connection closed before any of it was written. Only a request written at
//! the very moment the daemon closes its connection fails for that reason, as a transport
//! error, which the engine's callers already treat as the daemon being unavailable (a launch
//! is tried again and adopts its container by name; a wait re-attaches). The pool lets a
//! connection go after 30 s idle.
//!
//! `DOCKER_HOST` naming anything else than a Unix socket (`tcp://`, TLS) keeps bollard's
//! own client.

use std::path::Path;
use std::time::Duration;

use bollard::errors::Error;
use bollard::{BollardRequest, Docker, API_DEFAULT_VERSION};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The daemon's socket when `DOCKER_HOST` names none.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// bollard's default timeout of one request, in seconds.
const TIMEOUT_SECONDS: u64 = 120;
/// Idle connections kept: enough for the calls of the runs starting and ending at once;
/// more are opened when needed and closed after.
const IDLE_KEPT: usize = 16;
/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// A client of the daemon named by `DOCKER_HOST` (or the local socket), keeping its
/// connections when the daemon is reached through a Unix socket.
pub(crate) fn connect() -> Result<Docker, Error> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() && !host.starts_with("unix://") => {
            Docker::connect_with_defaults()
        }
        Ok(host) if !host.is_empty() => pooled(host.trim_start_matches("unix://")),
        _ => pooled(DEFAULT_SOCKET),
    }
}

/// bollard's requests over hyperlocal's connector, through a client that keeps
/// connections.
fn pooled(socket: &str) -> Result<Docker, Error> {
    if !Path::new(socket).exists() {
        return Err(Error::SocketNotFoundError(socket.to_owned()));
    }
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_KEPT)
        .pool_idle_timeout(IDLE_FOR)
        .pool_timer(TokioTimer::new())
        .build(hyperlocal::UnixConnector);
    // The address bollard puts in each request's URI: hyperlocal's, whose connector reads
    // the socket's path back from the host.
    let encoded: hyper::Uri = hyperlocal::Uri::new(socket, "/").into();
    let address = format!("unix://{}", encoded.host().unwrap_or_default());
    Docker::connect_with_custom_transport(
        move |request: BollardRequest| {
            let sent = client.request(request);
            async move { sent.await.map_err(Error::from) }
        },
        Some(address),
        TIMEOUT_SECONDS,
        API_DEFAULT_VERSION,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    /// A daemon's socket that answers every request with `OK` (as `/_ping` does) and counts
    /// the connections it accepts; with `one_each`, it closes each connection after its
    /// first answer, as a daemon that restarts closes the idle ones.
    fn daemon(dir: &tempfile::TempDir, one_each: bool) -> (String, Arc<AtomicUsize>) {
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(conn, one_each));
            }
        });
        (path.to_str().unwrap().to_owned(), accepted)
    }

    async fn answer(mut conn: UnixStream, one_each: bool) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = conn.read(&mut buf).await {
            request.extend_from_slice(&buf[..n]);
            // Requests without a body: each ends with its blank line.
            while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                request.drain(..end + 4);
                let ok =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK";
                if conn.write_all(ok).await.is_err() || one_each {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, accepted) = daemon(&dir, false);
        let docker = pooled(&socket).unwrap();
        for _ in 0..5 {
            assert_eq!(docker.ping().await.unwrap(), "OK");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_daemon_closed_is_not_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, accepted) = daemon(&dir, true);
        let docker = pooled(&socket).unwrap();
        for _ in 0..5 {
            assert_eq!(docker.ping().await.unwrap(), "OK");
            // The close reaches the client's side of the idle connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_missing_socket_is_named() {
        let err = pooled("/nonexistent/docker.sock").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/docker.sock"),
            "{err}"
        );
    }
}
