//! Secrets at rest: write-only in the API, sealed in the database, keys checked and rotated.

use crate::{app, both, builder, spec};

const VALUE: &str = "sup3r-s3cret-value-7f1c";

both!(secret_values_never_come_back_and_are_sealed_at_rest);

async fn secret_values_never_come_back_and_are_sealed_at_rest(pg: bool) {
    let app = app(pg).await;
    let c = app.admin();
    let mut s = spec("with-secrets");
    s.secrets = Some([("DB_PASSWORD".to_string(), VALUE.to_string())].into());
    let created = c.create_job(&s).await.unwrap();
    assert_eq!(created.secret_names, vec!["DB_PASSWORD"]);
    c.set_secret("with-secrets", "API_KEY", &format!("{VALUE}-2"))
        .await
        .unwrap();
    c.delete_secret("with-secrets", "API_KEY").await.unwrap();
    c.set_secret("with-secrets", "API_KEY", &format!("{VALUE}-3"))
        .await
        .unwrap();

    for path in ["/api/v1/jobs", "/api/v1/jobs/with-secrets", "/api/v1/audit"] {
        let body = c
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(VALUE), "{path} shows a secret value: {body}");
        assert!(
            body.contains("DB_PASSWORD"),
            "{path} should name the secret"
        );
    }
    assert!(
        !app.logs().contains(VALUE),
        "the engine logged a secret value"
    );

    let raw = match app.db() {
        Some(db) => db.dump(),
        None => {
            // The database file and its write-ahead log, byte for byte.
            let mut all = Vec::new();
            for f in ["jobdock.db", "jobdock.db-wal"] {
                if let Ok(bytes) = std::fs::read(app.data_dir().join(f)) {
                    all.extend(bytes);
                }
            }
            assert!(all.len() > 4096, "read the database files");
            String::from_utf8_lossy(&all).into_owned()
        }
    };
    assert!(raw.contains("with-secrets"), "the dump holds the job");
    assert!(
        !raw.contains(VALUE),
        "a secret value is stored in plain text"
    );
}

#[tokio::test]
async fn the_embedded_default_creates_a_private_master_key() {
    let app = app(false).await;
    let key = app.data_dir().join("master.key");
    let meta = std::fs::metadata(&key).expect("master.key created");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        app.logs().contains("Back it up"),
        "the engine warns once about the new key"
    );
}

fn key() -> String {
    let out = builder_cmd().args(["keys", "generate"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn builder_cmd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_jobdock"))
}

#[tokio::test]
async fn a_missing_or_wrong_key_stops_the_engine_and_changes_nothing() {
    let mut app = app(false).await;
    let mut s = spec("sealed");
    s.secrets = Some([("K".to_string(), VALUE.to_string())].into());
    app.admin().create_job(&s).await.unwrap();
    let key_file = app.data_dir().join("master.key");
    let original = std::fs::read(&key_file).unwrap();

    std::fs::remove_file(&key_file).unwrap();
    let err = app.restart().unwrap_err().to_string();
    assert!(err.contains("no master key is configured"), "{err}");
    assert!(
        !key_file.exists(),
        "a new key must not be created while sealed values exist"
    );

    let err = app
        .restart_with_env(&[("JOBDOCK_MASTER_KEY", &key())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot open the stored secrets"), "{err}");

    std::fs::write(&key_file, &original).unwrap();
    app.restart_with_env(&[("JOBDOCK_MASTER_KEY", "")]).unwrap();
    assert_eq!(
        app.admin().get_job("sealed").await.unwrap().secret_names,
        vec!["K"]
    );
}

both!(rotation_reseals_every_value_under_the_new_key);

async fn rotation_reseals_every_value_under_the_new_key(pg: bool) {
    let old = key();
    let new = key();
    let mut app = builder()
        .postgres(pg)
        .env("JOBDOCK_MASTER_KEY", &old)
        .start()
        .await;
    for i in 0..3 {
        let mut s = spec(&format!("rot-{i}"));
        s.secrets = Some(
            [
                ("A".to_string(), format!("{VALUE}{i}")),
                ("B".to_string(), "b".to_string()),
            ]
            .into(),
        );
        app.admin().create_job(&s).await.unwrap();
    }
    // Both keys: the engine reads old values and seals new ones with the new key.
    app.restart_with_env(&[("JOBDOCK_MASTER_KEY", &format!("{new},{old}"))])
        .unwrap();
    app.admin().set_secret("rot-0", "C", "c").await.unwrap();

    let out = app
        .offline_command()
        .args(["keys", "rotate"])
        .env("JOBDOCK_MASTER_KEY", format!("{new},{old}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("re-sealed 6 secret value(s)"), "{text}");

    // The old key is no longer needed: the new one alone opens everything...
    app.restart_with_env(&[("JOBDOCK_MASTER_KEY", &new)])
        .unwrap();
    assert_eq!(
        app.admin().get_job("rot-0").await.unwrap().secret_names,
        vec!["A", "B", "C"]
    );
    // ...and the old one alone opens nothing any more.
    let err = app
        .restart_with_env(&[("JOBDOCK_MASTER_KEY", &old)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot open"), "{err}");
}
