use std::sync::Mutex;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::*;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    serve: ServeArgs,
}

/// clap reads the process's environment: tests that set a variable hold this, and so does
/// every parse, so that no test sees another's variables.
static ENV: Mutex<()> = Mutex::new(());

fn load(args: &[&str]) -> Result<Settings, ConfigError> {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    load_locked(args)
}

fn load_locked(args: &[&str]) -> Result<Settings, ConfigError> {
    let matches = T::command()
        .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
        .unwrap();
    let t = T::from_arg_matches(&matches).unwrap();
    Settings::from_args(&t.serve, &matches)
}

/// Sets variables for the length of `f`, with the environment held.
fn with_env<R>(vars: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    struct Unset(Vec<String>);
    impl Drop for Unset {
        fn drop(&mut self) {
            for k in &self.0 {
                std::env::remove_var(k);
            }
        }
    }
    let _unset = Unset(vars.iter().map(|(k, _)| k.to_string()).collect());
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    f()
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobdock.toml"),
        "listen = \"127.0.0.1:9999\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let s = load(&["--data-dir", d]).unwrap();
    assert_eq!(s.listen.port(), 9999);
    assert_eq!(s.log_format, LogFormat::Json);
    let s = load(&["--data-dir", d, "--listen", "127.0.0.1:7000"]).unwrap();
    assert_eq!(s.listen.port(), 7000);
    assert!(matches!(s.store.database, Database::Sqlite(ref p) if p.ends_with("jobdock.db")));
}

/// defaults < file < variable < flag, for a setting of config's own (listen), of a
/// component (lease_seconds) and a switch (metrics_public).
#[test]
fn a_variable_wins_over_the_file_and_a_flag_over_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobdock.toml"),
        "listen = \"127.0.0.1:9001\"\nlease_seconds = 11\nmetrics_public = true\n\
         log = \"debug\"\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let env = [
        ("JOBDOCK_LISTEN", "127.0.0.1:9002"),
        ("JOBDOCK_LEASE_SECONDS", "12"),
        ("JOBDOCK_METRICS_PUBLIC", "false"),
        // An empty variable is not set: the file's value stays.
        ("JOBDOCK_LOG", ""),
    ];
    with_env(&env, || {
        let s = load_locked(&["--data-dir", d]).unwrap();
        assert_eq!(s.listen.port(), 9002);
        assert_eq!(s.runner.lease_ttl, std::time::Duration::from_secs(12));
        assert!(!s.metrics_public);
        assert_eq!(s.log, "debug");
        let s = load_locked(&[
            "--data-dir",
            d,
            "--listen",
            "127.0.0.1:9003",
            "--lease-seconds",
            "13",
            "--metrics-public",
        ])
        .unwrap();
        assert_eq!(s.listen.port(), 9003);
        assert_eq!(s.runner.lease_ttl, std::time::Duration::from_secs(13));
        assert!(s.metrics_public);
    });
    let s = load(&["--data-dir", d]).unwrap();
    assert_eq!(s.listen.port(), 9001);
    assert_eq!(s.runner.lease_ttl, std::time::Duration::from_secs(11));
    assert!(s.metrics_public);
    let empty = tempfile::tempdir().unwrap();
    let s = load(&["--data-dir", empty.path().to_str().unwrap()]).unwrap();
    assert_eq!(s.listen.port(), 8080);
    assert_eq!(
        s.runner.lease_ttl,
        crate::runner::RunnerConfig::default().lease_ttl
    );
    assert!(!s.metrics_public);
    assert_eq!(s.log, "info");
}

/// A bad value names its key and where it was set: the file, the variable or the flag.
#[test]
fn a_bad_value_names_where_it_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("jobdock.toml");
    std::fs::write(&f, "lease_seconds = 1\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let err = load(&["--data-dir", d]).unwrap_err();
    assert!(err.0.contains("lease_seconds must be at least 3"), "{err}");
    assert!(err.0.contains(&f.display().to_string()), "{err}");
    let err = with_env(&[("JOBDOCK_LEASE_SECONDS", "2")], || {
        load_locked(&["--data-dir", d]).unwrap_err()
    });
    assert!(err.0.contains("set by JOBDOCK_LEASE_SECONDS"), "{err}");
    let err = load(&["--data-dir", d, "--lease-seconds", "2"]).unwrap_err();
    assert!(err.0.contains("set by --lease-seconds"), "{err}");

    std::fs::write(&f, "lease_seconds = \"soon\"\n").unwrap();
    let err = load(&["--data-dir", d]).unwrap_err();
    assert!(err.0.contains("lease_seconds"), "{err}");
    assert!(err.0.contains(&f.display().to_string()), "{err}");
}

#[test]
fn alert_settings_come_from_flags_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobdock.toml"),
        "alert_max_attempts = 3\npublic_url = \"https://jd.example.com/\"\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let s = load(&["--data-dir", d, "--alert-retry-base-ms", "50"]).unwrap();
    let a = &s.runner.alerts;
    assert_eq!(a.max_attempts, 3);
    assert_eq!(a.retry_base, std::time::Duration::from_millis(50));
    assert_eq!(a.timeout, std::time::Duration::from_secs(10));
    assert_eq!(a.public_url.as_deref(), Some("https://jd.example.com"));
    for bad in [
        ["--alert-max-attempts", "0"],
        ["--public-url", "jd.example.com"],
    ] {
        let err = load(&["--data-dir", d, bad[0], bad[1]]).unwrap_err();
        let key = bad[0].trim_start_matches("--").replace('-', "_");
        assert!(err.0.contains(&key), "{err}");
    }
}

#[test]
fn unknown_file_keys_and_bad_values_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.toml");
    std::fs::write(&f, "lisen = \"x\"\n").unwrap();
    let err = load(&["--config", f.to_str().unwrap()]).unwrap_err();
    assert!(err.0.contains("lisen"), "{err}");
    assert!(err.0.contains("did you mean `listen`?"), "{err}");
    assert!(err.0.contains(&f.display().to_string()), "{err}");
    let err = load(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "nowhere",
    ])
    .unwrap_err();
    assert!(err.0.contains("nowhere"), "{err}");
    let missing = dir.path().join("missing.toml");
    let err = load(&["--config", missing.to_str().unwrap()]).unwrap_err();
    assert!(err.0.starts_with("cannot read"), "{err}");
}

#[test]
fn retention_and_metrics_settings_are_layered_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobdock.toml"),
        "retention_days = 14\nretention_max_runs_per_job = 50\nmetrics_public = true\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let s = load(&["--data-dir", d]).unwrap();
    assert_eq!(s.runner.retention.policy.days, 14);
    assert_eq!(s.runner.retention.policy.max_runs_per_job, 50);
    assert!(s.metrics_public);
    let s = load(&["--data-dir", d, "--retention-days", "90"]).unwrap();
    assert_eq!(s.runner.retention.policy.days, 90);

    let empty = tempfile::tempdir().unwrap();
    let e = empty.path().to_str().unwrap();
    let s = load(&["--data-dir", e]).unwrap();
    assert_eq!(s.runner.retention.policy.days, 30);
    assert_eq!(s.runner.retention.policy.max_runs_per_job, 1000);
    assert!(!s.metrics_public);
    let err = load(&["--data-dir", e, "--retention-days", "6"]).unwrap_err();
    assert!(err.0.contains("at least 7"), "{err}");
    let err = load(&["--data-dir", e, "--retention-max-runs-per-job=0"]).unwrap_err();
    assert!(err.0.contains("retention_max_runs_per_job"), "{err}");
}

/// Each flag's `[file: key]` in `--help` is a key of the layered settings, and each key of
/// them is a flag: a setting is declared in the flags and read back under the same name.
#[test]
fn every_flag_is_a_file_key_and_every_file_key_a_flag() {
    let keys: std::collections::BTreeSet<String> =
        match figment::value::Value::serialize(layers::Layered::default()) {
            Ok(figment::value::Value::Dict(_, d)) => d.into_keys().collect(),
            other => panic!("{other:?}"),
        };
    let command = T::command();
    let mut flags = std::collections::BTreeSet::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().to_string();
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        if let Some((_, rest)) = help.split_once("[file: ") {
            let key = rest.split(']').next().unwrap();
            assert_eq!(key, id, "--{} documents the file key `{key}`", id);
        }
        flags.insert(id);
    }
    for not_in_file in ["config", "nomad_token", "admin_token"] {
        assert!(flags.remove(not_in_file), "{not_in_file}");
    }
    assert_eq!(flags, keys);
}
