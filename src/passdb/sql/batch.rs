//! PostgreSQL and MySQL/MariaDB: logins that arrive while a host's statements are all in
//! flight go out together, as one statement, when one of those returns.
//!
//! Each login is one query, and with the database on the same machine the round trips cost
//! more than the query: on both sides a wakeup, a switch, the loopback's TCP, the driver's
//! work per statement. While a statement runs ([`IN_FLIGHT`]: one per host), the logins that
//! arrive queue, and when it returns they go out together, with those read while its answers
//! went out ([`Inner::drain`]), up to [`MOST`] in one statement (a full batch goes at once,
//! on another connection). A lightly loaded daemon asks as before, one statement a login,
//! without waiting. On PostgreSQL ([`statement`]):
//!
//! ```sql
//! SELECT saslauthd_rs_b.i AS saslauthd_rs_login, saslauthd_rs_q.*
//! FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS saslauthd_rs_b(p1, p2, i)
//! CROSS JOIN LATERAL (<password_query, its variables read from saslauthd_rs_b.p1, .p2>) AS saslauthd_rs_q
//! ```
//!
//! MySQL and MariaDB have neither arrays nor `LATERAL`: the query is repeated, once per login
//! of the batch, each copy with its own `?`s, one statement for each size of batch
//! ([`unions`]; the driver prepares each once per connection):
//!
//! ```sql
//! SELECT CAST(1 AS SIGNED) AS saslauthd_rs_login, saslauthd_rs_q.* FROM (<password_query>) AS saslauthd_rs_q
//! UNION ALL SELECT CAST(2 AS SIGNED), saslauthd_rs_q.* FROM (<password_query>) AS saslauthd_rs_q
//! ```
//!
//! The values are still bound parameters, and the query runs once per login as it would
//! alone: the same rows, numbered by login. A query that cannot run that way (the database
//! refuses the statement: a syntax or a type it cannot infer from text, a derived table's
//! duplicate column) turns batching off for good, said once in the log, and every login is its
//! own statement again; a batch that fails on one login's value (a cast, say) is asked again
//! one login at a time, so only that login fails. A host that cannot be asked fails every
//! login of the batch, which then go to the next host as a lone login does.

use std::sync::{Arc, Mutex};

use sqlx::Row;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{fetch_by, held, read_row, Db, FetchError, Found, Held, SqlError};

/// Statements in flight at once per host, each a login alone or a batch, before a batch
/// waits to be full. One: on a busy host the next batch is made while the statement runs,
/// and the database answers batches as fast as it can (two or three in flight made batches
/// smaller and the rate lower: `benches/compare-sql.sh`).
const IN_FLIGHT: usize = 1;

/// At most this many logins in one statement. A full batch goes out without waiting for a
/// statement to return, in a slot of its own (up to the pool's [`super::CONNECTIONS`]), so a
/// slow query, which a batch runs once per login in one backend, is not run for every waiting
/// login one after the other.
const MOST: usize = 16;

/// The name of the column that numbers the logins of a batch (from 1).
const LOGIN_COLUMN: &str = "saslauthd_rs_login";

/// The variable's place in the batched statement (`$n` in a lone one).
pub(super) fn placeholder(n: usize) -> String {
    format!("saslauthd_rs_b.p{n}")
}

/// How a host's driver asks for several logins at once.
#[derive(Debug)]
pub(super) enum Batched {
    /// PostgreSQL: one statement ([`statement`]), each variable an array of the logins'
    /// values.
    Arrays(String),
    /// MySQL and MariaDB: the query once per login ([`unions`]), the statement for `n` logins
    /// at `n - 2`.
    Unions(Vec<String>),
}

/// MySQL's batched statements around `inner`, the lone statement (its variables `?`s), for
/// 2 to [`MOST`] logins: each login's copy numbered in the first column, its own values bound
/// after the copies before it.
pub(super) fn unions(inner: &str) -> Vec<String> {
    let inner = inner.trim_end().trim_end_matches(';').trim_end();
    let copy = |k: usize| {
        format!("SELECT CAST({k} AS SIGNED) AS {LOGIN_COLUMN}, saslauthd_rs_q.* FROM (\n{inner}\n) AS saslauthd_rs_q")
    };
    (2..=MOST)
        .map(|n| (1..=n).map(copy).collect::<Vec<_>>().join("\nUNION ALL "))
        .collect()
}

/// The batched statement around `inner`, the query with its `n` variables read from
/// [`placeholder`]s.
pub(super) fn statement(inner: &str, n: usize) -> String {
    let inner = inner.trim_end().trim_end_matches(';').trim_end();
    let arrays: Vec<String> = (1..=n).map(|k| format!("${k}::text[]")).collect();
    let columns: Vec<String> = (1..=n).map(|k| format!("p{k}")).collect();
    format!(
        "SELECT saslauthd_rs_b.i AS {LOGIN_COLUMN}, saslauthd_rs_q.* \
         FROM unnest({}) WITH ORDINALITY AS saslauthd_rs_b({}, i) \
         CROSS JOIN LATERAL (\n{inner}\n) AS saslauthd_rs_q",
        arrays.join(", "),
        columns.join(", ")
    )
}

/// One host's batching.
#[derive(Debug)]
pub(super) struct Batcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The host's connections.
    db: Db,
    /// The statement for one login.
    single: String,
    /// The statements for several, on `db`'s connections.
    batched: Asker,
    first_column: bool,
    /// The runtime the batches run on (a slot is given back from `Drop`).
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Logins waiting for a statement.
    queue: Vec<Waiting>,
    /// Statements in flight.
    running: usize,
    /// The query cannot be batched: every login alone.
    off: bool,
}

/// A queued login.
#[derive(Debug)]
struct Waiting {
    values: Values,
    reply: oneshot::Sender<Reply>,
    /// When it asked: its batch's statement must be answered within [`super::QUERY_TIMEOUT`]
    /// of the earliest of these, so a login waits no longer in the queue and its batch
    /// together than it would alone, without a timer of its own.
    since: Instant,
}

/// What a queued login is told.
#[derive(Debug)]
enum Reply {
    Rows(Vec<Found>),
    Failed(Arc<FetchError>),
    /// Ask alone, with these values (the batch failed on some login's value, or cannot be
    /// batched).
    Alone(Values),
}

/// A login's values, shared by the hosts it may be asked of.
pub(super) type Values = Arc<[String]>;

/// A host's connections with the statements that ask them for several logins.
#[derive(Debug)]
enum Asker {
    Pg(Arc<Held<sqlx::Postgres>>, String),
    MySql(Arc<Held<sqlx::MySql>>, Vec<String>),
}

impl Batcher {
    /// Batching on the host's connections `db`, whose lone statement is `single` and batched
    /// ones `batched`, if they are of the same driver; made within the runtime.
    pub(super) fn new(
        db: &Db,
        single: &str,
        batched: &Batched,
        first_column: bool,
    ) -> Option<Batcher> {
        let asker = match (db, batched) {
            (Db::Pg(held), Batched::Arrays(statement)) => {
                Asker::Pg(Arc::clone(held), statement.clone())
            }
            (Db::MySql(held), Batched::Unions(statements)) => {
                Asker::MySql(Arc::clone(held), statements.clone())
            }
            _ => return None,
        };
        Some(Batcher {
            inner: Arc::new(Inner {
                db: db.clone(),
                single: single.to_string(),
                batched: asker,
                first_column,
                runtime: tokio::runtime::Handle::current(),
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The rows for one login's `values`, within [`super::QUERY_TIMEOUT`] from now. An error
    /// is shared by the logins of a batch.
    ///
    /// A queued login keeps no timer: the statement in flight has its deadline, and when it
    /// fails for want of an answer every login queued behind it fails with it (the host
    /// cannot answer them either, and the next host is asked at once); then its own batch
    /// has the deadline of its earliest login.
    pub(super) async fn rows(&self, values: Values) -> Result<Vec<Found>, Arc<FetchError>> {
        let since = Instant::now();
        let deadline = since + super::QUERY_TIMEOUT;
        let answer = match self.inner.enter(values, since) {
            Entry::Alone(values) => return self.inner.alone(&values, deadline).await,
            Entry::Slot(values) => {
                let mut slot = Slot::new(Arc::clone(&self.inner));
                return slot.outcome(self.inner.alone(&values, deadline).await);
            }
            Entry::Queued(answer) => answer,
        };
        let values = match answer.await {
            Err(_) => {
                return Err(Arc::new(FetchError::Answer(SqlError::Answer(
                    "the batch it was in was dropped".into(),
                ))))
            }
            Ok(Reply::Rows(rows)) => return Ok(rows),
            Ok(Reply::Failed(e)) => return Err(e),
            Ok(Reply::Alone(values)) => values,
        };
        self.inner.alone(&values, deadline).await
    }
}

/// How a login is asked.
enum Entry {
    /// A slot was free and nobody waits: its own statement now, in that slot.
    Slot(Values),
    /// Batching is off: its own statement now.
    Alone(Values),
    /// In the queue, for the next batch.
    Queued(oneshot::Receiver<Reply>),
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a login, or queues it; a full batch goes out at once, in a slot of
    /// its own while the pool has connections for one.
    fn enter(self: &Arc<Self>, values: Values, since: Instant) -> Entry {
        let mut state = self.lock();
        if state.off {
            return Entry::Alone(values);
        }
        if state.running < IN_FLIGHT && state.queue.is_empty() {
            state.running += 1;
            return Entry::Slot(values);
        }
        let (reply, answer) = oneshot::channel();
        state.queue.push(Waiting {
            values,
            reply,
            since,
        });
        if state.queue.len() >= MOST && state.running < super::CONNECTIONS as usize {
            state.running += 1;
            let batch = std::mem::take(&mut state.queue);
            drop(state);
            self.runtime.spawn(Arc::clone(self).drain(Some(batch)));
        }
        Entry::Queued(answer)
    }

    /// One login's own statement.
    async fn alone(
        &self,
        values: &[String],
        deadline: Instant,
    ) -> Result<Vec<Found>, Arc<FetchError>> {
        fetch_by(deadline, &self.db, &self.single, values, self.first_column)
            .await
            .map_err(Arc::new)
    }

    /// Answers one batch in a slot taken for it: `batch`, or (`None`: the slot was passed on
    /// by the statement that just returned) the logins queued by the time this task runs
    /// again after a yield. The yield lets the runtime first read the requests that are
    /// ready, among them those of the clients just answered, so they join this batch rather
    /// than wait for the next: fewer, fuller statements (the database's CPU a login: 8.2 ->
    /// 7.0 us; BENCHMARKS.md).
    async fn drain(self: Arc<Self>, batch: Option<Vec<Waiting>>) {
        // The slot goes to the next batch, or back, when this one is answered; also if this
        // task is dropped or panics, so a slot is never lost.
        let mut slot = Slot::new(Arc::clone(&self));
        let mut batch = match batch {
            Some(batch) => batch,
            None => {
                tokio::task::yield_now().await;
                let mut state = self.lock();
                let take = state.queue.len().min(MOST);
                state.queue.drain(..take).collect()
            }
        };
        batch.retain(|w| !w.reply.is_closed());
        if !batch.is_empty() {
            slot.failed = self.answer(batch).await;
        }
    }

    /// Asks for one batch and tells each login its rows; the error when the host did not
    /// answer it (not when a login's value failed, or the query cannot be batched).
    async fn answer(&self, batch: Vec<Waiting>) -> Option<Arc<FetchError>> {
        let deadline = batch.iter().map(|w| w.since).min()? + super::QUERY_TIMEOUT;
        let fetched = if batch.len() == 1 {
            fetch_by(
                deadline,
                &self.db,
                &self.single,
                &batch[0].values,
                self.first_column,
            )
            .await
            .map(|rows| vec![rows])
        } else {
            tokio::time::timeout_at(deadline, self.fetch_batch(&batch))
                .await
                .unwrap_or(Err(FetchError::Timeout))
        };
        let failed = match fetched {
            Ok(rows) => {
                for (waiting, rows) in batch.into_iter().zip(rows) {
                    let _ = waiting.reply.send(Reply::Rows(rows));
                }
                return None;
            }
            Err(FetchError::Database(sqlx::Error::Database(e))) if !held::ends_connection(&*e) => {
                let refused = e
                    .code()
                    .is_some_and(|c| c.starts_with("42") || c.starts_with("0A"));
                if refused {
                    let mut state = self.lock();
                    if !state.off {
                        state.off = true;
                        tracing::warn!(
                            "-a sql: the password_query cannot be asked for several logins at \
                             once ({e}); each login is its own statement"
                        );
                    }
                }
                for waiting in batch {
                    let _ = waiting.reply.send(Reply::Alone(waiting.values));
                }
                return None;
            }
            Err(e) => Arc::new(e),
        };
        for waiting in batch {
            let _ = waiting.reply.send(Reply::Failed(Arc::clone(&failed)));
        }
        Some(failed)
    }

    /// The rows of every login of `batch` (more than one, at most [`MOST`]), in one
    /// statement.
    async fn fetch_batch(&self, batch: &[Waiting]) -> Result<Vec<Vec<Found>>, FetchError> {
        match &self.batched {
            Asker::Pg(held, statement) => {
                let params = batch[0].values.len();
                let rows = held::asked!(held, conn => {
                    let mut query = sqlx::query(statement);
                    for k in 0..params {
                        let column: Vec<&str> =
                            batch.iter().map(|w| w.values[k].as_str()).collect();
                        query = query.bind(column);
                    }
                    query.fetch_all(conn)
                })?;
                by_login(&rows, batch.len(), self.first_column)
            }
            Asker::MySql(held, statements) => {
                let statement = statements
                    .get(batch.len().wrapping_sub(2))
                    .ok_or_else(|| SqlError::Answer(format!("a batch of {}", batch.len())))?;
                let rows = held::asked!(held, conn => {
                    let mut query = sqlx::query(statement);
                    for value in batch.iter().flat_map(|w| w.values.iter()) {
                        query = query.bind(value.as_str());
                    }
                    query.fetch_all(conn)
                })?;
                by_login(&rows, batch.len(), self.first_column)
            }
        }
    }
}

/// A batch's rows, each given to its login (numbered from 1 in the first column) of `n`.
fn by_login<R>(rows: &[R], n: usize, first_column: bool) -> Result<Vec<Vec<Found>>, FetchError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut found: Vec<Vec<Found>> = (0..n).map(|_| Vec::new()).collect();
    for row in rows {
        let login: i64 = row
            .try_get(0)
            .map_err(|e| SqlError::Answer(format!("the batch's login column: {e}")))?;
        let slot = usize::try_from(login)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| found.get_mut(i))
            .ok_or_else(|| SqlError::Answer(format!("a row for login {login} of {n}")))?;
        slot.push(read_row(row, first_column, 1)?);
    }
    Ok(found)
}

/// A statement slot, held by a lone login or a batch: given back when it is done (or
/// dropped), or passed to the logins that queued meanwhile, as the next batch.
struct Slot {
    inner: Arc<Inner>,
    /// The host did not answer the statement held in it (no connection, a broken one, no
    /// answer in time): the logins queued behind it fail with the same error.
    failed: Option<Arc<FetchError>>,
}

impl Slot {
    fn new(inner: Arc<Inner>) -> Slot {
        Slot {
            inner,
            failed: None,
        }
    }

    /// A lone login's result, noted as the statement's outcome.
    fn outcome(
        &mut self,
        result: Result<Vec<Found>, Arc<FetchError>>,
    ) -> Result<Vec<Found>, Arc<FetchError>> {
        if let Err(e) = &result {
            let answered = matches!(
                &**e,
                FetchError::Database(sqlx::Error::Database(d)) if !held::ends_connection(&**d)
            );
            if !answered {
                self.failed = Some(Arc::clone(e));
            }
        }
        result
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if let Some(failed) = self.failed.take() {
            for waiting in state.queue.drain(..) {
                let _ = waiting.reply.send(Reply::Failed(Arc::clone(&failed)));
            }
        }
        if state.queue.is_empty() || state.off {
            state.running -= 1;
            // Batching was turned off meanwhile: whoever still waits asks alone.
            for waiting in state.queue.drain(..) {
                let _ = waiting.reply.send(Reply::Alone(waiting.values));
            }
            return;
        }
        drop(state);
        let inner = Arc::clone(&self.inner);
        self.inner.runtime.spawn(inner.drain(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batched_statement() {
        assert_eq!(
            statement("SELECT password FROM mailbox WHERE username = saslauthd_rs_b.p1 ;\n", 1),
            "SELECT saslauthd_rs_b.i AS saslauthd_rs_login, saslauthd_rs_q.* FROM \
             unnest($1::text[]) WITH ORDINALITY AS saslauthd_rs_b(p1, i) CROSS JOIN LATERAL \
             (\nSELECT password FROM mailbox WHERE username = saslauthd_rs_b.p1\n) AS saslauthd_rs_q"
        );
        assert!(statement("x", 2).contains("unnest($1::text[], $2::text[])"));
        assert!(statement("x", 2).contains("saslauthd_rs_b(p1, p2, i)"));
    }

    #[test]
    fn the_unions_for_mysql() {
        let unions = unions("SELECT password FROM mailbox WHERE username = ? ;\n");
        assert_eq!(unions.len(), MOST - 1);
        assert_eq!(
            unions[0],
            "SELECT CAST(1 AS SIGNED) AS saslauthd_rs_login, saslauthd_rs_q.* FROM (\n\
             SELECT password FROM mailbox WHERE username = ?\n) AS saslauthd_rs_q\n\
             UNION ALL SELECT CAST(2 AS SIGNED) AS saslauthd_rs_login, saslauthd_rs_q.* FROM (\n\
             SELECT password FROM mailbox WHERE username = ?\n) AS saslauthd_rs_q"
        );
        // The statement for n logins has n copies, numbered 1 to n, and n times the `?`s.
        for (at, statement) in unions.iter().enumerate() {
            let n = at + 2;
            assert_eq!(statement.matches('?').count(), n);
            assert!(statement.contains(&format!("CAST({n} AS SIGNED)")));
            assert!(!statement.contains(&format!("CAST({} AS SIGNED)", n + 1)));
        }
    }
}
