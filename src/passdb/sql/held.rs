//! A host's connections, kept by the passdb between statements instead of being given back to
//! sqlx's pool after each one.
//!
//! sqlx 0.8 tests every connection given back to its pool (`return_to_pool`: a `Sync` and its
//! `ReadyForQuery` on PostgreSQL, a `COM_PING` on MySQL), in a task of its own, whatever
//! `test_before_acquire` says. So each statement cost a second round trip: on both sides a
//! wakeup, a send and a read more than the statement itself, the database's share of a login
//! nearly doubled (BENCHMARKS.md). Here a connection that answered its statement (rows, or
//! the database's own error, after which it is still in step) is kept for the next one, and
//! the pool is asked only when none is kept. One that did not answer (a broken connection, no
//! answer before the deadline, a statement dropped half-way) is closed, since what it would
//! read next belongs to the statement it gave up on, and its place in the pool is freed.
//!
//! Kept connections that have been quiet for [`QUIET`] (a night without logins, where a
//! firewall or a load balancer may have forgotten them, or `idle_session_timeout` cut them)
//! are closed, and the next statement opens a new one. A kept connection that turns out broken
//! (the server restarted, or terminated its backend) is not the login's failure: every kept
//! connection is closed with it, and the statement asked again, once, on a new one
//! ([`Lease::answered`]). Closed so, a connection says goodbye (`Terminate`, in a task of its
//! own); one given up on in the middle of a statement is dropped without a word.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// Kept connections unused for this long are closed, not used.
pub(super) const QUIET: Duration = Duration::from_secs(60);

/// One host's pool, and the connections taken from it and kept.
#[derive(Debug)]
pub(super) struct Held<DB: Database> {
    pool: Pool<DB>,
    /// Connections between statements, the most recently used last, with when each was used.
    idle: Mutex<Vec<(PoolConnection<DB>, Instant)>>,
}

/// A connection taken for one statement: kept for the next one by [`Lease::keep`], closed if
/// it is dropped without.
pub(super) struct Lease<'a, DB: Database> {
    held: &'a Held<DB>,
    conn: Option<PoolConnection<DB>>,
    /// It was kept from an earlier statement (not new from the pool).
    kept: bool,
}

impl<DB: Database> Held<DB> {
    pub(super) fn new(pool: Pool<DB>) -> Held<DB> {
        Held {
            pool,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A connection for one statement: the one used last (unless it has been quiet for
    /// [`QUIET`]), or (when none is kept, or `fresh`) a new one from the pool. Bound the call
    /// with the statement's deadline.
    pub(super) async fn take(&self, fresh: bool) -> Result<Lease<'_, DB>, sqlx::Error> {
        let last = match fresh {
            true => None,
            false => self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        };
        if let Some((conn, used)) = last {
            if used.elapsed() < QUIET {
                return Ok(self.lease(conn, true));
            }
            // Quiet too long, and the others were used earlier still: all closed.
            close(conn);
            self.close_kept();
        }
        let conn = self.pool.acquire().await?;
        Ok(self.lease(conn, false))
    }

    /// Closes every kept connection.
    fn close_kept(&self) {
        let kept = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for (conn, _) in kept {
            close(conn);
        }
    }

    fn lease(&self, conn: PoolConnection<DB>, kept: bool) -> Lease<'_, DB> {
        Lease {
            held: self,
            conn: Some(conn),
            kept,
        }
    }
}

impl<DB: Database> Lease<'_, DB> {
    /// The connection, to run a statement on.
    pub(super) fn conn(&mut self) -> &mut DB::Connection {
        self.conn
            .as_deref_mut()
            .expect("a lease holds its connection until it is kept or dropped")
    }

    /// The statement's `result`, the connection kept for the next statement when the host
    /// answered it, with rows or with the database's own error (after which sqlx reads on to
    /// the statement's end before the next one), closed otherwise. `None`: ask again, on a
    /// new connection ([`Held::take`] with `fresh`), because this one was kept from an
    /// earlier statement and is broken: the server restarted, or cut its connections, since
    /// then. Every kept connection is closed with it, as they are likely broken too; a login
    /// does not fail for a restart that is over.
    pub(super) fn answered<T>(
        self,
        result: Result<T, sqlx::Error>,
    ) -> Option<Result<T, sqlx::Error>> {
        let broken = match &result {
            Ok(_) => false,
            Err(sqlx::Error::Database(e)) => ends_connection(&**e),
            Err(_) => true,
        };
        if !broken {
            self.keep();
            return Some(result);
        }
        if !self.kept {
            return Some(result);
        }
        self.held.close_kept();
        None
    }

    /// The connection is in step: kept for the next statement.
    fn keep(mut self) {
        if let Some(conn) = self.conn.take() {
            self.held
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((conn, Instant::now()));
        }
    }
}

impl<DB: Database> Drop for Lease<'_, DB> {
    fn drop(&mut self) {
        // Not kept: the statement on it was not answered, or was dropped before it was. The
        // connection is closed (dropped, without a goodbye that could wait on a host that
        // does not answer) and the pool may open another in its place.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// `$statement`'s result: an expression for a future, made on `$conn`, a connection of
/// `$held` (a [`Held`]), kept or new; made and asked again once, on a new connection, when a
/// kept one turns out broken ([`Lease::answered`]). Evaluates to `Result<T, sqlx::Error>` in
/// an async context. A macro, not a function: the statement borrows its text and values and
/// the connection together, which a closure given the connection cannot return.
macro_rules! asked {
    ($held:expr, $conn:ident => $statement:expr) => {{
        let mut fresh = false;
        loop {
            let mut lease = match $held.take(fresh).await {
                Ok(lease) => lease,
                Err(e) => break Err(e),
            };
            let result = {
                let $conn = lease.conn();
                $statement.await
            };
            match lease.answered(result) {
                Some(result) => break result,
                None => fresh = true,
            }
        }
    }};
}
pub(super) use asked;

/// A database error that ends the connection: a connection exception (SQLSTATE class 08) or
/// operator intervention (57: the server is shutting down, the backend was terminated). Any
/// other is the database's own answer (a syntax error, a failed cast): the connection is in
/// step and the host works. The one rule, for a lease (`Lease::answered`) and for the
/// batching (`super::batch`).
pub(super) fn ends_connection(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code()
        .is_some_and(|c| c.starts_with("08") || c.starts_with("57"))
}

/// Closes a connection that answered its last statement: a `Terminate` (which does not wait
/// on the server), in a task of its own; its place in the pool is freed when it is done.
fn close<DB: Database>(conn: PoolConnection<DB>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let _ = conn.close().await;
            });
        }
        Err(_) => drop(conn.detach()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn held() -> Held<sqlx::Sqlite> {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        Held::new(pool)
    }

    /// Two connections, each kept after a statement.
    async fn two_kept() -> Held<sqlx::Sqlite> {
        let held = held().await;
        let (a, b) = (
            held.take(false).await.unwrap(),
            held.take(false).await.unwrap(),
        );
        assert!(ask(a, "SELECT 1").await.unwrap().is_ok());
        assert!(ask(b, "SELECT 1").await.unwrap().is_ok());
        held
    }

    fn kept(held: &Held<sqlx::Sqlite>) -> usize {
        held.idle.lock().unwrap().len()
    }

    /// Runs `sql` on a lease and tells it the outcome.
    async fn ask(
        mut lease: Lease<'_, sqlx::Sqlite>,
        sql: &str,
    ) -> Option<Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error>> {
        let rows = sqlx::query(sql).fetch_all(lease.conn()).await;
        lease.answered(rows)
    }

    async fn settle(held: &Held<sqlx::Sqlite>, size: u32) {
        for _ in 0..100 {
            if held.pool.size() == size {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the pool holds {} connections, not {size}",
            held.pool.size()
        );
    }

    #[tokio::test]
    async fn an_answered_connection_is_kept_and_taken_next() {
        let held = held().await;
        let lease = held.take(false).await.unwrap();
        assert!(!lease.kept, "the first comes from the pool");
        assert!(ask(lease, "SELECT 1").await.unwrap().is_ok());
        assert_eq!(kept(&held), 1);
        // The database's own error: the connection is still in step, and kept.
        let lease = held.take(false).await.unwrap();
        assert!(lease.kept);
        let refused = ask(lease, "SELECT * FROM nowhere").await.unwrap();
        assert!(
            matches!(refused, Err(sqlx::Error::Database(_))),
            "not the database's error"
        );
        assert_eq!(kept(&held), 1);
        let lease = held.take(false).await.unwrap();
        assert!(lease.kept);
        assert!(ask(lease, "SELECT 2").await.unwrap().is_ok());
        assert_eq!(
            (kept(&held), held.pool.size()),
            (1, 1),
            "one connection, reused"
        );
    }

    #[tokio::test]
    async fn a_broken_kept_connection_closes_the_others_and_asks_again() {
        let held = two_kept().await;
        assert_eq!(kept(&held), 2);
        let lease = held.take(false).await.unwrap();
        assert!(lease.kept);
        let cut = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut");
        assert!(lease.answered::<()>(Err(sqlx::Error::Io(cut))).is_none());
        assert_eq!(kept(&held), 0, "the other kept one is closed too");
        settle(&held, 0).await;
        // On a new connection the same failure is the statement's answer.
        let lease = held.take(true).await.unwrap();
        assert!(!lease.kept);
        let cut = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut");
        assert!(matches!(
            lease.answered::<()>(Err(sqlx::Error::Io(cut))),
            Some(Err(sqlx::Error::Io(_)))
        ));
        settle(&held, 0).await;
    }

    #[tokio::test]
    async fn quiet_connections_are_closed_and_a_new_one_is_opened() {
        let held = two_kept().await;
        for (_, used) in held.idle.lock().unwrap().iter_mut() {
            *used = Instant::now() - QUIET - Duration::from_secs(1);
        }
        let lease = held.take(false).await.unwrap();
        assert!(!lease.kept, "a quiet connection was used");
        assert_eq!(kept(&held), 0);
        settle(&held, 1).await;
        assert!(ask(lease, "SELECT 1").await.unwrap().is_ok());
    }
}
