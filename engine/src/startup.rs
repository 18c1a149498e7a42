//! Starting the service: bind the listener and, on the embedded database, lock it for this
//! engine alone — before anything else, so that a second engine started by mistake touches
//! nothing — then open the store, load the keys, bootstrap the first token, serve (plain or
//! TLS) until SIGTERM/SIGINT, and shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;

use crate::api::{self, AppState};
use crate::backends::Backends;
use crate::config::{self, Database, Settings, StoreSettings};
use crate::runner::Runner;
use crate::service::keys::{self, KeyOrigin};
use crate::service::tokens::{self, Bootstrap};
use crate::service::watch::RunWatch;
use crate::service::Ctx;
use crate::store::Store;

/// Opens the store the settings name, creating the data directory for SQLite.
pub async fn open_store(s: &StoreSettings) -> anyhow::Result<Store> {
    match &s.database {
        Database::Sqlite(path) => {
            config::ensure_dir(&s.data_dir)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                config::ensure_dir(parent)?;
            }
            Store::open_sqlite(path)
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))
        }
        Database::Postgres(url) => Store::connect(url.expose_secret())
            .await
            .context("cannot connect to PostgreSQL (DATABASE_URL)"),
    }
}

/// Builds the service's context: store, keys, backends, bootstrap token.
pub async fn build(settings: &Settings, backends: &Backends) -> anyhow::Result<(Ctx, String)> {
    let store = open_store(&settings.store).await?;
    let may_create = matches!(settings.store.database, Database::Sqlite(_));
    let (ring, origin) = keys::load(&store, &settings.store.master_key, may_create).await?;
    if origin == KeyOrigin::Created {
        tracing::warn!(
            path = %settings.store.data_dir.join("master.key").display(),
            "created a new master key for secrets. Back it up: losing it loses every stored secret"
        );
    }
    let installation = store
        .setting_or_init("installation_id", || uuid::Uuid::new_v4().to_string())
        .await?;
    tracing::info!(installation, "store ready");
    let watch = Arc::new(RunWatch::new(store.dialect()));
    let ctx = Ctx {
        store,
        keys: Arc::new(ring),
        backends: Arc::from(backends.names()),
        default_backend: settings.default_backend,
        metrics: crate::metrics::Metrics::new(),
        callbacks: settings.callbacks.clone(),
        tokens: Arc::default(),
        watch,
        finished: Arc::default(),
        cancels: Arc::default(),
    };
    tokio::spawn(crate::service::watch::hear_ends(
        ctx.watch.clone(),
        ctx.store.clone(),
    ));
    match tokens::bootstrap(&ctx, settings.admin_token.as_ref()).await? {
        Bootstrap::AlreadyDone => {
            if let Some(configured) = &settings.admin_token {
                if !tokens::is_known(&ctx.store, configured).await? {
                    tracing::warn!(
                        "JOBDOCK_ADMIN_TOKEN is ignored: this installation already has tokens \
                         and it is none of them (it only creates the first one). To recover \
                         admin access, run `jobdock recover-admin` against the same data \
                         directory or database"
                    );
                }
            }
        }
        Bootstrap::FromConfig => {
            tracing::info!("stored JOBDOCK_ADMIN_TOKEN as the first admin token")
        }
        Bootstrap::Generated(t) => {
            // Printed once, on stdout, so that it reaches the operator but not a log collector
            // reading stderr; it is never logged.
            println!(
                "Created the first admin token (shown only now; store it safely):\n\n    {t}\n"
            );
        }
    }
    Ok((ctx, installation))
}

/// Holds the embedded database for one engine: an exclusive lock on a file beside it,
/// released by the operating system when the process ends, however it ends.
pub struct EngineLock {
    _file: std::fs::File,
}

/// Takes the embedded database's lock; an error naming the other engine's lock when it is
/// taken. Several engines share only PostgreSQL, which needs no lock of this kind.
pub fn lock_embedded(s: &StoreSettings) -> anyhow::Result<Option<EngineLock>> {
    let Database::Sqlite(db) = &s.database else {
        return Ok(None);
    };
    config::ensure_dir(&s.data_dir)?;
    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        config::ensure_dir(parent)?;
    }
    let path = db.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(EngineLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another engine is using the database {} (it holds {}); stop it first. Several \
             engines can share only a PostgreSQL database (DATABASE_URL)",
            db.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Runs `serve` until a shutdown signal.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let _lock = lock_embedded(&settings.store)?;
    let backends = Backends::detect(&settings.backends).await;
    tracing::info!(backends = ?backends, "backends");
    let (ctx, installation) = build(&settings, &backends).await?;
    let mut runner_config = settings.runner.clone();
    let run_listener = match &runner_config.run_url {
        Some(_) => None,
        None => {
            let main = listener.local_addr()?;
            let (url, extra) =
                bridge_listener(main, backends.docker_gateway(), settings.tls.is_some());
            runner_config.run_url = url;
            extra
        }
    };
    match &runner_config.run_url {
        Some(u) => tracing::info!(url = %u.url, all_backends = u.all_backends, "runs reach the engine at JOBDOCK_URL"),
        None => tracing::warn!("runs get no JOBDOCK_URL (no local Docker bridge): set JOBDOCK_ADVERTISE_URL for the SDK's state calls"),
    }
    // The runner's backend calls count their errors; readiness asks the backends directly.
    let runner = Runner::new(
        ctx.clone(),
        crate::metrics::metered(&backends, &ctx.metrics),
        runner_config,
        installation,
    );
    runner.start().await;
    let state = AppState {
        ctx: ctx.clone(),
        runner: runner.clone(),
        backends,
        metrics_public: settings.metrics_public,
        links: std::sync::Arc::new(settings.links.clone()),
    };
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    if let Some(extra) = run_listener {
        extra.set_nonblocking(true)?;
        let addr = extra.local_addr()?;
        tracing::info!(%addr, "serving runs on Docker's bridge (plain http, the routes runs use only)");
        let server = axum_server::from_tcp(extra)
            .handle(handle.clone())
            .serve(api::run_router(state.clone()).into_make_service());
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the listener for runs stopped");
            }
        });
    }
    let app = api::router(state);
    listener.set_nonblocking(true)?;
    let addr: SocketAddr = listener.local_addr()?;
    let service = app.into_make_service();
    match &settings.tls {
        Some((cert, key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            tracing::info!(%addr, "listening (https)");
            axum_server::from_tcp_rustls(listener, tls)
                .handle(handle)
                .serve(service)
                .await?;
        }
        None => {
            tracing::info!(%addr, "listening (http)");
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
    runner.stop();
    ctx.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Where runs on the local Docker engine reach the engine: the host's address on Docker's
/// bridge (`gateway`). When the main listener already covers it (it listens on every
/// address) that is the URL; when it listens on loopback only, a second listener on the
/// bridge address serves the routes runs use (plain HTTP, on a network local to the host),
/// on the same port if it is free.
fn bridge_listener(
    main: SocketAddr,
    gateway: Option<std::net::IpAddr>,
    tls: bool,
) -> (Option<crate::runner::RunUrl>, Option<std::net::TcpListener>) {
    let Some(gateway) = gateway else {
        return (None, None);
    };
    let url = |port: u16| {
        Some(crate::runner::RunUrl {
            url: format!("http://{}", SocketAddr::new(gateway, port)),
            all_backends: false,
        })
    };
    // Behind TLS the main listener's certificate does not name the bridge address: runs get
    // a plain listener of their own.
    if !tls && (main.ip().is_unspecified() || main.ip() == gateway) {
        return (url(main.port()), None);
    }
    let bound = std::net::TcpListener::bind(SocketAddr::new(gateway, main.port()))
        .or_else(|_| std::net::TcpListener::bind(SocketAddr::new(gateway, 0)));
    match bound.and_then(|l| Ok((l.local_addr()?.port(), l))) {
        Ok((port, l)) => (url(port), Some(l)),
        Err(e) => {
            tracing::warn!(%gateway, error = %e, "cannot listen on Docker's bridge for runs");
            (None, None)
        }
    }
}

async fn shutdown_on_signal(handle: axum_server::Handle) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
    handle.graceful_shutdown(Some(Duration::from_secs(30)));
}
