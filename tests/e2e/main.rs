//! End-to-end tests: each starts the real `jobdock` binary on a free port with a fresh data
//! directory (and, for the PostgreSQL variants, a fresh database) and drives it over HTTP
//! through `jobdock-client`, or through the CLI.

mod auth;
mod cli;
mod jobs;
mod secrets;
mod service;

use jobdock_testkit::TestApp;

/// Starts an engine on SQLite, or on PostgreSQL when `pg`.
pub async fn app(pg: bool) -> TestApp {
    TestApp::builder(env!("CARGO_BIN_EXE_jobdock"))
        .postgres(pg)
        .start()
        .await
}

/// A builder for an engine with extra settings.
pub fn builder() -> jobdock_testkit::TestAppBuilder {
    TestApp::builder(env!("CARGO_BIN_EXE_jobdock"))
}

/// Declares a test that runs on SQLite and on PostgreSQL: `both!(name);` for an
/// `async fn name(pg: bool)` in scope.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(true).await
            }
        }
    )*};
}

/// A minimal job definition.
pub fn spec(name: &str) -> jobdock_types::JobSpec {
    jobdock_types::JobSpec {
        name: name.into(),
        image: "busybox:1".into(),
        ..Default::default()
    }
}
