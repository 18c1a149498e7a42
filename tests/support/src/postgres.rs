//! A fresh PostgreSQL database per test, dropped afterwards.
//!
//! The server comes from `JOBDOCK_TEST_POSTGRES` (an admin URL; `scripts/test` installs,
//! starts and exports it), defaulting to the local server that script sets up.

use sqlx::{Connection, PgConnection};

/// The admin URL of the test server.
pub fn admin_url() -> String {
    std::env::var("JOBDOCK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for the life of this value.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub async fn create() -> TestDb {
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach the test PostgreSQL at {admin}: {e}. Run the tests with \
                 `scripts/test`, which installs and starts PostgreSQL, or set JOBDOCK_TEST_POSTGRES"
            )
        });
        let name = format!("jobdock_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        TestDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// `pg_dump` of the whole database, as SQL text.
    pub fn dump(&self) -> String {
        let out = std::process::Command::new("pg_dump")
            .arg("--no-owner")
            .arg(&self.url)
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is not async and may run inside a runtime: use a thread with its own.
        let admin = admin_url();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}
