//! The embedded SQLite store's connections, run on the calling thread.
//!
//! sqlx's SQLite driver runs every connection on a thread of its own: each statement is a
//! handover to that thread and back, `BEGIN` and `COMMIT` wait for the caller to take the
//! answer, and a connection going back to its pool is pinged first. On a run's life (44
//! statements, five transactions) SQLite's own work was 1.5 % of the engine's profile and
//! the threads' switching half of it; without the handovers, the engine's CPU per run fell
//! by a third and its context switches from 277 to 61. In WAL mode a statement of ours takes
//! microseconds, a reader never waits for the writer, and the engine's writers queue for
//! the one writer connection, so running the statement where it is asked for blocks nobody.
//! The statements that can take longer (the retention's batches) first move the runtime's
//! other tasks to another thread (see `Conn::long`), and the checkpoints run on a blocking
//! thread of their own.
//!
//! The statements themselves stay sqlx's (`sqlx::query(…).bind(…)` against the `Any`
//! database): [`Connection::run`] takes sqlx's arguments and gives back sqlx's rows, built
//! as sqlx's own SQLite driver builds them for `Any` (a value's type is its stored type:
//! integers are `BigInt`, reals `Double`), so that the same queries and the same decoding
//! serve SQLite and PostgreSQL. The `Any` rows' fields are public but outside sqlx's semver
//! promise, which is why the workspace pins sqlx to one release; the store's tests, which
//! run every query on both databases, are what checks a new one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::unmanaged::{self, Object};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{ffi, OpenFlags};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx_core::any::{AnyColumn, AnyValueKind};

/// What every connection is set to: WAL lets readers work while one writer writes; the busy
/// timeout makes a writer of another process wait for the lock instead of failing; no
/// checkpoint on commit, and the log's file cut back to [`WAL_LIMIT`] when it starts over
/// (see `checkpoints` in the store's module).
pub const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 30000; \
                       PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                       PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 4194304;";

/// The size in bytes past which the write-ahead log is copied back into the database within
/// a second (the `journal_size_limit` of [`PRAGMAS`]).
pub const WAL_LIMIT: u64 = 4_194_304;

/// A statement slower than this is logged as a warning, as sqlx does for its drivers.
const SLOW: Duration = Duration::from_secs(1);

/// How many statements a connection keeps prepared: the store has about 200, and the hot
/// ones must all stay.
const STATEMENTS: usize = 256;

/// The column names of a statement, shared by its rows (sqlx's `AnyRow` wants them so).
type Names = Arc<sqlx_core::HashMap<sqlx_core::ext::ustr::UStr, usize>>;

/// One SQLite connection with its prepared statements.
pub struct Connection {
    inner: rusqlite::Connection,
    /// The column names of each statement run so far, by its SQL.
    names: HashMap<String, (Names, Vec<AnyColumn>)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("sqlite::Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens the database at `path`, creating it if needed; one that only `reads` refuses
    /// every write, which must queue on the writer (see `Store::write_alone`): a write
    /// on a reader would wait for the writer's lock in SQLite's busy handler, asleep on a
    /// thread of the runtime.
    pub fn open(path: &Path, reads: bool) -> Result<Self, sqlx::Error> {
        let inner = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(error)?;
        inner.execute_batch(PRAGMAS).map_err(error)?;
        if reads {
            inner
                .execute_batch("PRAGMA query_only = ON")
                .map_err(error)?;
        }
        inner.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(Self {
            inner,
            names: HashMap::new(),
        })
    }

    /// Runs statements without arguments or results: `BEGIN`, `COMMIT`, pragmas.
    pub fn batch(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        let done = self.inner.execute_batch(sql).map_err(error);
        log(sql, started, 0);
        done
    }

    /// Whether no transaction is open on the connection.
    pub fn is_autocommit(&self) -> bool {
        self.inner.is_autocommit()
    }

    /// Runs `sql` with `arguments` (to its end, or to its first row: see [`Rows`]): the rows
    /// wanted, and what the statement changed.
    pub fn run(
        &mut self,
        sql: &str,
        arguments: Option<AnyArguments<'_>>,
        rows_wanted: Rows,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error> {
        let started = Instant::now();
        let (names, columns) = match self.names.get(sql) {
            Some(known) => known.clone(),
            None => {
                if self.names.len() >= STATEMENTS {
                    // Statements built with a varying number of parameters (`IN (…)`) would
                    // grow the map without end; the hot ones come back at once.
                    self.names.clear();
                }
                let statement = self.inner.prepare_cached(sql).map_err(error)?;
                let known = column_names(&statement);
                self.names.insert(sql.to_owned(), known.clone());
                known
            }
        };
        let mut statement = self.inner.prepare_cached(sql).map_err(error)?;
        bind(&mut statement, arguments)?;
        let mut out = Vec::new();
        {
            let mut rows = statement.raw_query();
            while let Some(row) = rows.next().map_err(error)? {
                if rows_wanted == Rows::None {
                    continue;
                }
                let mut values = Vec::with_capacity(columns.len());
                for i in 0..columns.len() {
                    values.push(value(row.get_ref(i).map_err(error)?)?);
                }
                out.push(AnyRow {
                    column_names: names.clone(),
                    columns: columns.clone(),
                    values,
                });
                if rows_wanted == Rows::First {
                    break;
                }
            }
        }
        let result = if statement.readonly() {
            AnyQueryResult::default()
        } else {
            AnyQueryResult {
                rows_affected: self.inner.changes(),
                last_insert_id: Some(self.inner.last_insert_rowid()),
            }
        };
        log(sql, started, out.len());
        Ok((out, result))
    }

    /// Copies the write-ahead log back into the database as far as no reader needs it,
    /// without taking the write lock.
    pub fn checkpoint(&mut self) -> Result<(), sqlx::Error> {
        self.batch("PRAGMA wal_checkpoint(PASSIVE)")
    }
}

/// A pool of connections to one SQLite file, all for reads or all for writes.
#[derive(Debug, Clone)]
pub struct Pool {
    pool: unmanaged::Pool<Connection>,
    path: Arc<PathBuf>,
    reads: bool,
}

impl Pool {
    /// Opens `size` connections to `path` (see [`Connection::open`] for `reads`).
    pub fn open(path: &Path, size: usize, reads: bool) -> Result<Self, sqlx::Error> {
        let pool = unmanaged::Pool::from_config(&unmanaged::PoolConfig {
            max_size: size,
            timeout: Some(super::ACQUIRE_TIMEOUT),
            runtime: Some(deadpool::Runtime::Tokio1),
        });
        for _ in 0..size {
            if pool.try_add(Connection::open(path, reads)?).is_err() {
                unreachable!("a new pool has room for its size");
            }
        }
        Ok(Self {
            pool,
            path: Arc::new(path.to_owned()),
            reads,
        })
    }

    /// A connection, outside any transaction: one is found inside one only when rolling
    /// back a dropped transaction failed, or when a statement began one by hand and the
    /// connection was dropped; it is rolled back now, or replaced by a new connection.
    pub async fn get(&self) -> Result<Object<Connection>, sqlx::Error> {
        loop {
            let mut conn = self.pool.get().await.map_err(|e| match e {
                unmanaged::PoolError::Timeout => sqlx::Error::PoolTimedOut,
                _ => sqlx::Error::PoolClosed,
            })?;
            if conn.is_autocommit() {
                return Ok(conn);
            }
            tracing::warn!("a SQLite connection came back inside a transaction; rolling it back");
            match conn.batch("ROLLBACK") {
                Ok(()) => return Ok(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "could not roll back; opening the connection again");
                    drop(Object::take(conn));
                    let fresh = Connection::open(&self.path, self.reads)?;
                    if self.pool.try_add(fresh).is_err() {
                        return Err(sqlx::Error::PoolClosed);
                    }
                }
            }
        }
    }

    /// Hands out no more connections, and closes those in use as they come back.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

/// Which rows [`Connection::run`] gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// None: the statement is run for what it changes.
    None,
    /// The first, if any; the statement is not stepped further.
    First,
    /// All of them.
    All,
}

fn log(sql: &str, started: Instant, rows: usize) {
    let elapsed = started.elapsed();
    if elapsed >= SLOW {
        tracing::warn!(target: "jobdock::sql", statement = sql, rows, elapsed_ms = elapsed.as_millis() as u64, "slow statement");
    } else {
        tracing::trace!(target: "jobdock::sql", statement = sql, rows, elapsed_us = elapsed.as_micros() as u64, "statement");
    }
}

fn column_names(statement: &rusqlite::Statement<'_>) -> (Names, Vec<AnyColumn>) {
    let mut names = sqlx_core::HashMap::new();
    let mut columns = Vec::new();
    for (ordinal, name) in statement.column_names().into_iter().enumerate() {
        let name = sqlx_core::ext::ustr::UStr::new(name);
        names.insert(name.clone(), ordinal);
        columns.push(AnyColumn {
            ordinal,
            name,
            // A column's declared type is not what decodes a value (its value's is).
            type_info: AnyTypeInfo {
                kind: AnyTypeInfoKind::Null,
            },
        });
    }
    (Arc::new(names), columns)
}

/// Binds sqlx's arguments as sqlx's SQLite driver does: `$N` and `?N` name the N-th
/// argument, a bare `?` the next one.
fn bind(
    statement: &mut rusqlite::Statement<'_>,
    arguments: Option<AnyArguments<'_>>,
) -> Result<(), sqlx::Error> {
    let values = arguments.map(|a| a.values.0).unwrap_or_default();
    let mut next = 0;
    for index in 1..=statement.parameter_count() {
        let n = match statement.parameter_name(index) {
            Some(name) => name
                .strip_prefix('$')
                .or_else(|| name.strip_prefix('?'))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| protocol(format!("unsupported SQL parameter {name}")))?,
            None => {
                next += 1;
                next
            }
        };
        let value = values.get(n.wrapping_sub(1)).ok_or_else(|| {
            protocol(format!(
                "the statement has parameter {n}, but {} arguments were bound",
                values.len()
            ))
        })?;
        let value = match value {
            AnyValueKind::Null(_) => ValueRef::Null,
            AnyValueKind::Bool(b) => ValueRef::Integer(i64::from(*b)),
            AnyValueKind::SmallInt(i) => ValueRef::Integer(i64::from(*i)),
            AnyValueKind::Integer(i) => ValueRef::Integer(i64::from(*i)),
            AnyValueKind::BigInt(i) => ValueRef::Integer(*i),
            AnyValueKind::Real(r) => ValueRef::Real(f64::from(*r)),
            AnyValueKind::Double(d) => ValueRef::Real(*d),
            AnyValueKind::Text(t) => ValueRef::Text(t.as_bytes()),
            AnyValueKind::Blob(b) => ValueRef::Blob(b),
            other => return Err(protocol(format!("unsupported argument {other:?}"))),
        };
        statement
            .raw_bind_parameter(index, ToSqlOutput::Borrowed(value))
            .map_err(error)?;
    }
    Ok(())
}

/// A stored value as sqlx's SQLite driver gives it to `Any`: typed by what is stored.
fn value(v: ValueRef<'_>) -> Result<AnyValue, sqlx::Error> {
    let kind = match v {
        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
        ValueRef::Integer(i) => AnyValueKind::BigInt(i),
        ValueRef::Real(r) => AnyValueKind::Double(r),
        ValueRef::Text(t) => AnyValueKind::Text(Cow::Owned(
            String::from_utf8(t.to_vec()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        )),
        ValueRef::Blob(b) => AnyValueKind::Blob(Cow::Owned(b.to_vec())),
    };
    Ok(AnyValue { kind })
}

fn protocol(message: String) -> sqlx::Error {
    sqlx::Error::Protocol(message)
}

/// SQLite's errors as sqlx's: the database's own as a [`DatabaseError`] with SQLite's
/// extended code (so that a unique violation is one to the store, whichever driver ran it).
fn error(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            sqlx::Error::Database(Box::new(SqliteError {
                code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            }))
        }
        rusqlite::Error::Utf8Error(e) => sqlx::Error::Decode(Box::new(e)),
        other => protocol(other.to_string()),
    }
}

/// An error SQLite returned.
#[derive(Debug)]
pub struct SqliteError {
    /// SQLite's extended result code.
    code: std::ffi::c_int,
    message: String,
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for SqliteError {}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}
