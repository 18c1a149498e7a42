//! A real `jobdock serve` process on a free port with a fresh data directory (and, when
//! asked, a fresh PostgreSQL database), driven through `jobdock-client`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobdock_client::Client;

use crate::postgres::TestDb;

/// The bootstrap admin token every test app starts with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The master key of test apps on PostgreSQL (base64 of 32 bytes).
pub const TEST_MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LTAxMjM0NTY3ODlhYmNkZWY=";

/// How to start a test app.
#[derive(Debug)]
pub struct TestAppBuilder {
    bin: PathBuf,
    postgres: bool,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl TestAppBuilder {
    /// Use PostgreSQL (a fresh database) instead of the embedded SQLite.
    pub fn postgres(mut self, yes: bool) -> Self {
        self.postgres = yes;
        self
    }

    /// Share the PostgreSQL database of another test app (a second replica).
    pub fn replica_of(mut self, other: &TestApp) -> Self {
        let db = other
            .db
            .as_ref()
            .expect("replicas share a PostgreSQL database");
        self.env.push(("DATABASE_URL".into(), db.url.clone()));
        self.env
            .push(("JOBDOCK_MASTER_KEY".into(), TEST_MASTER_KEY.into()));
        self
    }

    /// An extra environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// An extra `serve` flag.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    /// Starts the app and waits until it listens.
    pub async fn start(self) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let db = if self.postgres {
            Some(TestDb::create().await)
        } else {
            None
        };
        let mut app = TestApp {
            bin: self.bin,
            data_dir,
            db,
            env: self.env,
            args: self.args,
            child: None,
            url: String::new(),
            logs: Arc::new(Mutex::new(String::new())),
            stdout: Arc::new(Mutex::new(String::new())),
            installation: Arc::new(Mutex::new(None)),
        };
        app.launch().expect("jobdock serve starts");
        app
    }
}

/// A running engine.
pub struct TestApp {
    bin: PathBuf,
    data_dir: tempfile::TempDir,
    db: Option<TestDb>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    child: Option<Child>,
    url: String,
    logs: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// The engine's installation id, from its log: it labels every container it starts.
    installation: Arc<Mutex<Option<String>>>,
}

impl TestApp {
    /// A builder for the binary at `bin` (pass `env!("CARGO_BIN_EXE_jobdock")`).
    pub fn builder(bin: &str) -> TestAppBuilder {
        TestAppBuilder {
            bin: bin.into(),
            postgres: false,
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client with the bootstrap admin token.
    pub fn admin(&self) -> Client {
        self.client(ADMIN_TOKEN)
    }

    /// A client with any token.
    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.url, token).expect("valid URL")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The PostgreSQL database, when the app uses one.
    pub fn db(&self) -> Option<&TestDb> {
        self.db.as_ref()
    }

    /// Everything the engine has logged so far (stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().expect("log buffer").clone()
    }

    /// Everything the engine has printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout buffer").clone()
    }

    /// Runs the `jobdock` binary as a client command against this app.
    pub fn cli(&self, args: &[&str], token: &str, stdin: Option<&str>) -> std::process::Output {
        self.cli_with_env(args, token, stdin, &[])
    }

    /// [`Self::cli`] with extra environment variables.
    pub fn cli_with_env(
        &self,
        args: &[&str],
        token: &str,
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .args(args)
            .envs(env.iter().copied())
            .env("JOBDOCK_URL", &self.url)
            .env("JOBDOCK_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jobdock CLI starts");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("jobdock CLI ends")
    }

    /// A `Command` for the binary with this app's data directory and database settings, for
    /// offline commands such as `keys rotate`.
    pub fn offline_command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("JOBDOCK_DATA_DIR", self.data_dir.path());
        if let Some(db) = &self.db {
            c.env("DATABASE_URL", &db.url);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&self.args)
            .env("JOBDOCK_DATA_DIR", self.data_dir.path())
            .env("JOBDOCK_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("JOBDOCK_LOG_FORMAT", "json")
            .env("JOBDOCK_LOG", "info,jobdock_engine=debug")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(db) = &self.db {
            cmd.env("DATABASE_URL", &db.url);
            // Replicas on PostgreSQL share a configured key; tests may override it.
            cmd.env("JOBDOCK_MASTER_KEY", TEST_MASTER_KEY);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = self.logs.clone();
        let installation = self.installation.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                if let Some(id) = json_field(&line, "store ready", "installation") {
                    *installation.lock().expect("installation") = Some(id);
                }
                let mut l = logs.lock().expect("log buffer");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let out = self.stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut o = out.lock().expect("stdout buffer");
                o.push_str(&line);
                o.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(100)) {
                self.url = format!("http://{addr}");
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("jobdock serve exited with {status}:\n{}", self.logs());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("jobdock serve did not listen within 60 s:\n{}", self.logs());
            }
        }
    }

    /// Stops the engine with SIGKILL (no clean shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the engine with SIGTERM and waits for it to exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The engine's installation id (the label on every container it starts), once its
    /// store is ready.
    pub fn installation_id(&self) -> Option<String> {
        self.installation.lock().map(|i| i.clone()).unwrap_or(None)
    }

    /// Starts the engine again on the same data directory and database (a new port).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.launch()
    }

    /// Starts the engine again with extra environment, e.g. another master key.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.kill9();
        for (k, v) in env {
            self.env.retain(|(key, _)| key != k);
            self.env.push((k.to_string(), v.to_string()));
        }
        self.launch()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill9();
        // The engine is gone; so must be the containers it started, or a test that ends
        // with a sleeper running would leave it behind on the daemon.
        if let Some(id) = self.installation_id() {
            let out = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=dev.jobdock.installation={id}"),
                ])
                .output();
            if let Ok(out) = out {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
            // A container the engine asked for just before it was killed can appear on the
            // daemon after the look above (seen: created, never started). `scripts/test`
            // names a file here and removes what is left of these installations at its end.
            if let Ok(path) = std::env::var("JOBDOCK_TEST_INSTALLATIONS") {
                use std::io::Write;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path);
                if let Ok(mut f) = file {
                    let _ = writeln!(f, "{id}");
                }
            }
        }
    }
}

/// Finds `"addr":"127.0.0.1:PORT"` in the JSON log line announcing that the engine listens.
fn listening_addr(line: &str) -> Option<String> {
    json_field(line, "listening", "addr")
}

/// A string field of the JSON log line whose message starts with `message`.
fn json_field(line: &str, message: &str, field: &str) -> Option<String> {
    if !line.contains(message) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if !v.get("message")?.as_str()?.starts_with(message) {
        return None;
    }
    v.get(field)?.as_str().map(str::to_string)
}
