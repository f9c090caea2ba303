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
//! firewall may have forgotten them, or `idle_session_timeout` cut them) are given back to
//! sqlx's pool, which tests each and closes those that are broken, and the next statement
//! takes one from the pool. A kept connection that turns out broken (the server restarted,
//! or terminated its backend) is not the login's failure: every kept connection is given back
//! so, and the statement asked again, once, on a connection from the pool
//! ([`Lease::answered`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// Kept connections unused for this long go back to the pool.
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
    /// [`QUIET`]), or (when none is kept, or `fresh`) one from the pool, which opens one if
    /// it has none idle. Bound the call with the statement's deadline.
    pub(super) async fn take(&self, fresh: bool) -> Result<Lease<'_, DB>, sqlx::Error> {
        let last = match fresh {
            true => None,
            false => self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        };
        if let Some((conn, used)) = last {
            if used.elapsed() < QUIET {
                return Ok(self.lease(conn, true));
            }
            // Quiet too long, and the others were used earlier still: all back to the pool.
            drop(conn);
            self.give_back();
        }
        let conn = self.pool.acquire().await?;
        Ok(self.lease(conn, false))
    }

    /// Gives every kept connection back to the pool (which tests each as it takes it back).
    fn give_back(&self) {
        let kept = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(kept);
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
    /// connection from the pool ([`Held::take`] with `fresh`), because this one was kept from
    /// an earlier statement and is broken: the server restarted, or cut its connections,
    /// since then. Every kept connection goes back to the pool with it, which tests each, as
    /// they are likely broken too; a login does not fail for a restart that is over.
    pub(super) fn answered<T>(
        self,
        result: Result<T, sqlx::Error>,
    ) -> Option<Result<T, sqlx::Error>> {
        let broken = match &result {
            Ok(_) => false,
            // Connection exceptions (08) and operator intervention (57: the server is
            // shutting down, the backend was terminated): the connection is gone.
            Err(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
            Err(_) => true,
        };
        if !broken {
            self.keep();
            return Some(result);
        }
        if !self.kept {
            return Some(result);
        }
        self.held.give_back();
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
