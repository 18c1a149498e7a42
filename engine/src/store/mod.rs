//! The engine's durable state, on embedded SQLite or on PostgreSQL.
//!
//! One set of queries serves both databases through sqlx's `Any` driver: the SQL is the
//! common subset (`$1` parameters, `RETURNING`, `ON CONFLICT`), times are Unix milliseconds
//! and flags are integers. sqlx's compile-time checked macros verify against one database
//! per build, so they cannot check a store that speaks two; instead every query runs in the
//! store's test suite against both databases. The few statements that must differ are
//! chosen by [`Dialect`].

pub mod alerts;
pub mod anomalies;
pub mod audit;
pub mod callbacks;
mod conn;
pub mod events;
pub mod jobs;
mod leases;
pub mod locks;
pub mod logs;
pub mod notify;
pub mod retention;
pub mod runs;
mod schedules;
pub mod secrets;
mod settings;
mod sqlite;
pub mod state;
pub mod stats;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection as _, Executor};

pub use audit::{AuditFilter, NewAuditEntry};
pub use conn::{Conn, Tx};
pub use jobs::{JobRow, NewJob};
pub use secrets::SealedSecret;
pub use tokens::{NewTokenRow, TokenRow};

/// The database flavour behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite (the default).
    Sqlite,
    /// PostgreSQL (for several replicas).
    Postgres,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the string names what clashed.
    #[error("already exists: {0}")]
    Conflict(&'static str),
    /// The run's lease has moved to another supervisor: this one must stop writing for it.
    #[error("the run is supervised elsewhere now")]
    Fenced,
    /// Stored data could not be read back (a bug or a hand-edited database).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// The database is too busy now, not broken: no pooled connection came free in time;
    /// PostgreSQL broke a deadlock or a serialization conflict (40P01, 40001); or it refused a
    /// connection for having too many (53300) or while starting up (57P03). Worth a retry.
    pub fn is_busy(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::PoolTimedOut) => true,
            Self::Database(sqlx::Error::Database(d)) => matches!(
                d.code().as_deref(),
                Some("40001" | "40P01" | "53300" | "57P03")
            ),
            _ => false,
        }
    }

    /// Maps a unique violation to [`StoreError::Conflict`], anything else to a database error.
    fn on_unique(e: sqlx::Error, what: &'static str) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Self::Conflict(what),
            _ => Self::Database(e),
        }
    }
}

/// Shorthand.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Serialises claims across replicas on PostgreSQL; any constant shared by all replicas.
const CLAIM_LOCK: i64 = 0x006a_6f62_646f_636b;

/// The store: its connections and the dialect they speak. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    dialect: Dialect,
    /// Where a listener for the ends of runs connects (PostgreSQL only; see [`notify`]).
    listen_url: notify::ListenUrl,
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite {
        /// Connections for reads; in WAL mode they never wait for the writer.
        readers: sqlite::Pool,
        /// The one connection that writes, so that writers queue for SQLite's one write lock
        /// in the order they came (the pool's waiters are served first come, first served)
        /// instead of retrying in SQLite's busy handler, which sleeps up to 100 ms between
        /// tries and lets a newcomer overtake: eight concurrent triggers had a p99 of 0.8 s
        /// that way.
        writer: sqlite::Pool,
    },
    Postgres(AnyPool),
}

/// How many SQLite connections read at once. Their statements run on the runtime's
/// threads, so more readers than threads only serve the tasks that hold one over an await.
const SQLITE_READERS: usize = 8;

/// How long a caller waits for a connection before the store answers busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens (creating if needed) the embedded SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect(&url).await
    }

    /// Connects to `url` (`postgres://…` or `sqlite://…`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(configuration(
                "database URL must start with postgres:// or sqlite://",
            ));
        };
        let options = AnyConnectOptions::from_str(url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let db = match dialect {
            Dialect::Sqlite => {
                if url.contains(":memory:") || url.contains("mode=memory") {
                    return Err(configuration(
                        "the SQLite store needs a file: its connections share one database",
                    ));
                }
                let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                    .get_filename()
                    .to_owned();
                // sqlx runs the migrations, on a connection of its own closed after them.
                let mut migrating = sqlx::AnyConnection::connect_with(&options).await?;
                migrating.execute(sqlite::PRAGMAS).await?;
                SQLITE_MIGRATIONS.run(&mut migrating).await?;
                migrating.close().await?;
                let writer = sqlite::Pool::open(&path, 1, false)?;
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                tokio::spawn(checkpoints(
                    writer.clone(),
                    sqlite::Connection::open(&path, false)?,
                    wal.into(),
                ));
                Db::Sqlite {
                    readers: sqlite::Pool::open(&path, SQLITE_READERS, true)?,
                    writer,
                }
            }
            // A pooled connection is pinged before each use: a PostgreSQL server may have
            // restarted since.
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .test_before_acquire(true)
                    .after_release(|conn, _| Box::pin(release_outside_transactions(conn)))
                    .connect_with(options)
                    .await?;
                POSTGRES_MIGRATIONS.run(&pool).await?;
                Db::Postgres(pool)
            }
        };
        let listen_url = (dialect == Dialect::Postgres)
            .then(|| std::sync::Arc::new(secrecy::SecretString::from(url.to_owned())));
        Ok(Self {
            db,
            dialect,
            listen_url,
        })
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&mut self.read().await?)
            .await?;
        Ok(())
    }

    /// A connection for reads. On SQLite it refuses writes, which queue on the writer
    /// ([`Store::write_alone`], [`Store::begin_write`]).
    pub async fn read(&self) -> Result<Conn> {
        match &self.db {
            Db::Sqlite { readers, .. } => Ok(Conn::sqlite(readers.get().await?)),
            Db::Postgres(pool) => Ok(Conn::postgres(pool.acquire().await?)),
        }
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so that a transaction that reads before it writes waits for the
    /// lock instead of failing when another writer got there first.
    pub async fn begin_write(&self) -> Result<Tx> {
        Ok(Tx::begin(self.write_alone().await?).await?)
    }

    /// A connection for one write statement, which is a transaction of its own: on SQLite the
    /// writer, so that it queues with the write transactions in the order they came; on
    /// PostgreSQL one of the pool's. A transaction around a single statement adds only its
    /// cost (`BEGIN`, `COMMIT`).
    pub async fn write_alone(&self) -> Result<Conn> {
        match &self.db {
            Db::Sqlite { writer, .. } => Ok(Conn::sqlite(writer.get().await?)),
            Db::Postgres(pool) => Ok(Conn::postgres(pool.acquire().await?)),
        }
    }

    /// Starts the transaction of a dispatch pass: one claimer at a time across replicas, for
    /// counting slots and taking them must not interleave, or two replicas could both see the
    /// same free slot. SQLite's write lock already makes it one; PostgreSQL takes an advisory
    /// lock held until the transaction ends.
    pub async fn begin_claim(&self) -> Result<Tx> {
        let mut tx = self.begin_write().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CLAIM_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Closes the store: no new connection is handed out, and those in use are closed as
    /// they come back.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite {
                readers, writer, ..
            } => {
                writer.close();
                readers.close();
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

fn configuration(message: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(message.into()))
}

/// Keeps a connection that comes back to the pool only when no transaction is left open on
/// it. A future dropped at the wrong moment (an HTTP request whose client went away, an
/// aborted task) can leave one that nothing will end: sqlx acknowledges a `BEGIN` before the
/// `Tx` that would roll it back on drop exists, so a drop in between keeps the transaction
/// open. Returned to the pool, what later transactions committed on such a connection would
/// stay uncommitted; it is closed instead, which rolls the transaction back. A transaction
/// merely dropped has its rollback on the way: the ping lets it land first. (PostgreSQL; a
/// SQLite transaction begins where it is asked for, with no await before its `Tx`.)
async fn release_outside_transactions(conn: &mut sqlx::AnyConnection) -> sqlx::Result<bool> {
    use sqlx::Connection as _;
    if conn.is_in_transaction() {
        conn.ping().await?;
        if conn.is_in_transaction() {
            tracing::warn!(
                "a connection came back to the pool inside a transaction that nothing will end; closing it"
            );
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies SQLite's write-ahead log back into the database beside the writers, on a
/// connection of its own and a blocking thread. By default the commit that fills the log past
/// 1,000 pages does it, inside the request that committed: with a store of a million runs
/// those copies (and their fsync) were the slowest triggers. A passive checkpoint takes no
/// write lock, so writers go on meanwhile. It runs within a second of the log passing
/// [`sqlite::WAL_LIMIT`] (the log's file, cut back to that size when the log starts over,
/// grows past it only with that much written since), and otherwise every ten seconds: each
/// checkpoint syncs both files to disk, and once a second that was 4 % of the engine's
/// profile with one run at a time. Ends when the store is closed.
async fn checkpoints(writer: sqlite::Pool, mut conn: sqlite::Connection, wal: PathBuf) {
    const AT_MOST: Duration = Duration::from_secs(10);
    let mut last = tokio::time::Instant::now();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if writer.is_closed() {
            return;
        }
        let grown = std::fs::metadata(&wal).is_ok_and(|m| m.len() > sqlite::WAL_LIMIT);
        if !grown && last.elapsed() < AT_MOST {
            continue;
        }
        last = tokio::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let done = conn.checkpoint();
            (conn, done)
        })
        .await;
        match done {
            Ok((back, done)) => {
                conn = back;
                if let Err(e) = done {
                    tracing::debug!(error = %e, "could not checkpoint the database's log");
                }
            }
            Err(_) => return,
        }
    }
}

/// `$1, $2, …, $n`: the parameters of an `IN (…)` list of `n` values, in both dialects.
pub(crate) fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Now, as stored: Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A stored time back as a UTC date-time.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests;
