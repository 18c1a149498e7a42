//! A connection of the store and its transactions, on either database.
//!
//! [`Conn`] is what the store's functions run their statements on: `sqlx::query(…)`
//! executes on `&mut Conn` as on any sqlx connection. On PostgreSQL it is a connection of
//! sqlx's pool; on SQLite one of [`sqlite`](super::sqlite)'s connections, which run the
//! statement on the calling thread.

use std::fmt::Debug;

use deadpool::unmanaged::Object;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{Any, Database, Describe, Either, Execute, Executor, TransactionManager};

use super::sqlite::{self, Rows};
use super::Dialect;

type AnyTransactionManager = <Any as Database>::TransactionManager;

/// A connection of the store: for a few statements in a row, or inside a [`Tx`].
#[derive(Debug)]
pub struct Conn(Inner);

#[derive(Debug)]
enum Inner {
    Sqlite {
        conn: Object<sqlite::Connection>,
        /// Whether its statements may take long (see [`Conn::long`]).
        long: bool,
    },
    Postgres(PoolConnection<Any>),
}

impl Conn {
    pub(super) fn sqlite(conn: Object<sqlite::Connection>) -> Self {
        Self(Inner::Sqlite { conn, long: false })
    }

    pub(super) fn postgres(conn: PoolConnection<Any>) -> Self {
        Self(Inner::Postgres(conn))
    }

    /// This connection for statements that may take long (a batch of the retention, a scan
    /// of many rows): on SQLite the runtime's thread that runs them first hands its other
    /// tasks to another thread (`block_in_place`), so that they go on meanwhile. Nothing
    /// changes on PostgreSQL, whose statements never run on the caller's thread.
    pub fn long(mut self) -> Self {
        if let Inner::Sqlite { long, .. } = &mut self.0 {
            *long = true;
        }
        self
    }

    /// The dialect this connection speaks, for the statements that must differ.
    pub fn dialect(&self) -> Dialect {
        match self.0 {
            Inner::Sqlite { .. } => Dialect::Sqlite,
            Inner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Marks a point inside the current transaction that [`Conn::rollback_to_savepoint`]
    /// returns to: a step that may fail without failing the transaction. One may be taken
    /// inside another: each release or rollback ends the most recent (as both databases
    /// treat savepoints of one name).
    pub async fn savepoint(&mut self) -> sqlx::Result<()> {
        self.execute("SAVEPOINT jobdock_step").await.map(drop)
    }

    /// Keeps what was done since [`Conn::savepoint`].
    pub async fn release_savepoint(&mut self) -> sqlx::Result<()> {
        self.execute("RELEASE SAVEPOINT jobdock_step")
            .await
            .map(drop)
    }

    /// Undoes what was done since [`Conn::savepoint`], and ends the savepoint.
    pub async fn rollback_to_savepoint(&mut self) -> sqlx::Result<()> {
        self.execute("ROLLBACK TO SAVEPOINT jobdock_step").await?;
        self.release_savepoint().await
    }
}

#[cfg(test)]
impl Conn {
    /// sqlx's connection under a PostgreSQL one, for tests that play sqlx's part.
    pub(super) fn as_postgres(&mut self) -> Option<&mut sqlx::AnyConnection> {
        match &mut self.0 {
            Inner::Postgres(c) => Some(c),
            Inner::Sqlite { .. } => None,
        }
    }
}

/// Runs `query` on a SQLite connection; when it may take long, the runtime's other tasks
/// move to another of its threads first (a runtime of one thread has none to move to).
fn run_sqlite<'q, E: Execute<'q, Any>>(
    conn: &mut sqlite::Connection,
    long: bool,
    mut query: E,
    rows: Rows,
) -> sqlx::Result<(Vec<AnyRow>, AnyQueryResult)> {
    let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
    let sql = query.sql();
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if long && multi_thread {
        tokio::task::block_in_place(|| conn.run(sql, arguments, rows))
    } else {
        conn.run(sql, arguments, rows)
    }
}

impl<'c> Executor<'c> for &'c mut Conn {
    type Database = Any;

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<AnyQueryResult>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &mut self.0 {
            Inner::Postgres(c) => (&mut **c).execute(query),
            Inner::Sqlite { conn, long } => {
                async move { Ok(run_sqlite(conn, *long, query, Rows::None)?.1) }.boxed()
            }
        }
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Vec<AnyRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &mut self.0 {
            Inner::Postgres(c) => (&mut **c).fetch_all(query),
            Inner::Sqlite { conn, long } => {
                async move { Ok(run_sqlite(conn, *long, query, Rows::All)?.0) }.boxed()
            }
        }
    }

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, sqlx::Result<Either<AnyQueryResult, AnyRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &mut self.0 {
            Inner::Postgres(c) => (&mut **c).fetch_many(query),
            Inner::Sqlite { conn, long } => {
                futures::stream::once(async move { run_sqlite(conn, *long, query, Rows::All) })
                    .map(|done| {
                        let steps: Vec<_> = match done {
                            Ok((rows, result)) => rows
                                .into_iter()
                                .map(|row| Ok(Either::Right(row)))
                                .chain([Ok(Either::Left(result))])
                                .collect(),
                            Err(e) => vec![Err(e)],
                        };
                        futures::stream::iter(steps)
                    })
                    .flatten()
                    .boxed()
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<AnyRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &mut self.0 {
            Inner::Postgres(c) => (&mut **c).fetch_optional(query),
            Inner::Sqlite { conn, long } => async move {
                Ok(run_sqlite(conn, *long, query, Rows::First)?
                    .0
                    .into_iter()
                    .next())
            }
            .boxed(),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<AnyStatement<'q>>>
    where
        'c: 'e,
    {
        match &mut self.0 {
            Inner::Postgres(c) => (&mut **c).prepare_with(sql, parameters),
            Inner::Sqlite { .. } => unsupported("preparing a statement apart").boxed(),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, sqlx::Result<Describe<Any>>>
    where
        'c: 'e,
    {
        match &mut self.0 {
            Inner::Postgres(c) => (&mut **c).describe(sql),
            Inner::Sqlite { .. } => unsupported("describing a statement").boxed(),
        }
    }
}

async fn unsupported<T>(what: &str) -> sqlx::Result<T> {
    Err(sqlx::Error::Protocol(format!(
        "{what} is not supported on the store's SQLite connections"
    )))
}

/// A transaction of the store, from `Store::begin_write` or `Store::begin_claim`: its
/// statements run on `&mut *tx`. Dropped without [`Tx::commit`], it is rolled back: at once
/// on SQLite, before the connection's next use on PostgreSQL (as sqlx's own transactions).
#[derive(Debug)]
pub struct Tx {
    conn: Conn,
    open: bool,
}

impl Tx {
    /// Begins a transaction on `conn`: on SQLite with `BEGIN IMMEDIATE`, which takes the
    /// write lock at once, so that a transaction that reads before it writes waits for the
    /// lock instead of failing when another writer got there first.
    pub(super) async fn begin(mut conn: Conn) -> sqlx::Result<Self> {
        match &mut conn.0 {
            // Nothing awaits between the `BEGIN` and the `Tx` that will end it.
            Inner::Sqlite { conn, .. } => conn.batch("BEGIN IMMEDIATE")?,
            Inner::Postgres(c) => AnyTransactionManager::begin(c, None).await?,
        }
        Ok(Self { conn, open: true })
    }

    /// This transaction for statements that may take long: see [`Conn::long`].
    pub fn long(mut self) -> Self {
        if let Inner::Sqlite { long, .. } = &mut self.conn.0 {
            *long = true;
        }
        self
    }

    /// Makes the transaction's changes durable.
    pub async fn commit(mut self) -> sqlx::Result<()> {
        match &mut self.conn.0 {
            Inner::Sqlite { conn, .. } => conn.batch("COMMIT")?,
            Inner::Postgres(c) => AnyTransactionManager::commit(c).await?,
        }
        self.open = false;
        Ok(())
    }

    /// Undoes the transaction's changes.
    pub async fn rollback(mut self) -> sqlx::Result<()> {
        match &mut self.conn.0 {
            Inner::Sqlite { conn, .. } => conn.batch("ROLLBACK")?,
            Inner::Postgres(c) => AnyTransactionManager::rollback(c).await?,
        }
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        match &mut self.conn.0 {
            Inner::Sqlite { conn, .. } => {
                if let Err(e) = conn.batch("ROLLBACK") {
                    // Taken from its pool next, the connection is found still inside the
                    // transaction and replaced (`Store::sqlite_conn`).
                    tracing::warn!(error = %e, "could not roll back a dropped transaction");
                }
            }
            Inner::Postgres(c) => AnyTransactionManager::start_rollback(c),
        }
    }
}
