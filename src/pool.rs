//! The bounded blocking pool (`-n`): a fixed set of threads that run blocking checks (a
//! crypt hash, a PAM transaction) and costly computations (SCRAM's PBKDF2, a passdb's
//! password scheme) off the reactor. The driver runs a blocking passdb's checks here, and
//! lends the pool to a passdb that awaits the network and then has a hash to check.
//!
//! Workers take the next job straight from a shared queue as soon as they finish one, so a
//! busy pool never waits on the reactor between jobs (with tokio's `spawn_blocking` behind a
//! semaphore, each hand-off went through the reactor and left a core idle for a moment, which
//! cost a third of the throughput of a 1.5 ms sha512-crypt hash; see BENCHMARKS.md). A job
//! whose requester has given up (timeout, closed connection) is skipped, not run. A hung
//! backend can hold at most `-n` threads.
//!
//! The metrics see the queue: how many jobs wait for a worker (`pool_queue_depth`) and how
//! long each waited (`pool_wait_seconds`), two atomics a job.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::metrics::PoolCounts;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of worker threads.
#[derive(Debug)]
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    counts: Arc<PoolCounts>,
}

/// The job did not return a value: it panicked (a bug in a PAM module, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the blocking check did not complete (it panicked)")]
pub struct JobLost;

impl Pool {
    /// Starts `threads` workers (at least one), counting in `counts`.
    pub fn new(threads: usize, counts: PoolCounts) -> Pool {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("saslauthd-worker-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match next {
                        // A panicking job loses its answer (its sender is dropped), not the
                        // worker.
                        Ok(job) => drop(std::panic::catch_unwind(AssertUnwindSafe(job))),
                        Err(_) => break, // the pool was dropped
                    }
                })
                .expect("the system cannot start a worker thread");
        }
        Pool {
            jobs,
            counts: Arc::new(counts),
        }
    }

    /// Runs `f` on a worker and waits for its result without blocking the reactor.
    pub async fn run<T, F>(&self, f: F) -> Result<T, JobLost>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let counts = self.counts.enabled.then(|| {
            self.counts.queued.inc();
            (Arc::clone(&self.counts), std::time::Instant::now())
        });
        let job: Job = Box::new(move || {
            if let Some((counts, queued)) = counts {
                counts.queued.dec();
                counts.wait.observe(queued.elapsed());
            }
            if tx.is_closed() {
                return; // nobody waits for it any more
            }
            let _ = tx.send(f());
        });
        self.jobs.send(job).map_err(|_| JobLost)?;
        rx.await.map_err(|_| JobLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn test_counts() -> PoolCounts {
        crate::metrics::Metrics::new(true).pool()
    }

    #[tokio::test]
    async fn runs_jobs_and_survives_panics() {
        let pool = Pool::new(2, test_counts());
        assert_eq!(pool.run(|| 40 + 2).await, Ok(42));
        assert_eq!(
            pool.run(|| -> u8 { panic!("a module broke") }).await,
            Err(JobLost)
        );
        assert_eq!(pool.run(|| "still here").await, Ok("still here"));
    }

    #[tokio::test]
    async fn at_most_n_at_once_and_abandoned_jobs_are_skipped() {
        let counts = test_counts();
        let pool = Arc::new(Pool::new(1, counts.clone()));
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Occupy the only worker.
        let busy = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(|| std::thread::sleep(Duration::from_millis(300)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queue a job and give up on it before the worker is free.
        let counted = Arc::clone(&ran);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            pool.run(move || counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
        )
        .await;
        assert!(abandoned.is_err());
        assert_eq!(
            counts.queued.get(),
            1,
            "the abandoned job waits in the queue"
        );
        busy.await.unwrap().unwrap();
        assert_eq!(pool.run(|| 1).await, Ok(1));
        assert_eq!(
            ran.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the abandoned job did not run"
        );
        assert_eq!(counts.queued.get(), 0);
        assert_eq!(counts.wait.count(), 3, "every job taken counted its wait");
    }
}
