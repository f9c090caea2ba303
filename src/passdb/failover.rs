//! Several servers for one passdb (`ldap_servers`, `-a rimap`'s hosts), tried in order: a
//! server that failed is skipped for a while and probed in the background until it answers
//! again, so that requests do not each wait for a dead server's deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server that failed is skipped before requests try it again (a background probe
/// clears it sooner once it answers).
pub(crate) const DEAD_FOR: Duration = Duration::from_secs(30);

/// How often a dead server is probed.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One server and what is known of it.
#[derive(Debug)]
pub(crate) struct Server {
    /// How the settings name it (a URL, `host/port`).
    pub(crate) name: String,
    dead_until: Mutex<Option<Instant>>,
    probing: AtomicBool,
}

impl Server {
    /// Whether requests may try it.
    pub(crate) fn alive(&self) -> bool {
        let dead = self.dead_until.lock().unwrap_or_else(|e| e.into_inner());
        dead.is_none_or(|until| Instant::now() >= until)
    }

    fn set_dead_until(&self, until: Option<Instant>) {
        *self.dead_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }
}

/// The servers of a passdb, in the order the settings give them.
#[derive(Debug, Clone)]
pub(crate) struct Servers {
    /// What they are, for the log (`LDAP server`, `IMAP server`).
    what: &'static str,
    list: Vec<Arc<Server>>,
}

impl Servers {
    /// `names`, all taken as alive.
    pub(crate) fn new(what: &'static str, names: impl IntoIterator<Item = String>) -> Servers {
        let list = names
            .into_iter()
            .map(|name| {
                Arc::new(Server {
                    name,
                    dead_until: Mutex::new(None),
                    probing: AtomicBool::new(false),
                })
            })
            .collect();
        Servers { what, list }
    }

    /// Server `i`.
    pub(crate) fn get(&self, i: usize) -> &Server {
        &self.list[i]
    }

    /// Every server, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Server> {
        self.list.iter().map(|s| &**s)
    }

    /// Their names, space-separated, for an error that concerns them all.
    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.iter().map(|s| s.name.as_str()).collect();
        names.join(" ")
    }

    /// The servers to try, in order: those alive, then (when none is) all of them.
    pub(crate) fn order(&self) -> Vec<usize> {
        let alive: Vec<usize> = (0..self.list.len())
            .filter(|&i| self.list[i].alive())
            .collect();
        if alive.is_empty() {
            (0..self.list.len()).collect()
        } else {
            alive
        }
    }

    /// Marks server `i` dead for [`DEAD_FOR`], and unless it is already being probed, probes
    /// it every [`PROBE_EVERY`] on the runtime with `probe` (given its name) until it answers.
    pub(crate) fn mark_dead<F, Fut>(&self, i: usize, why: &str, probe: F)
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let server = Arc::clone(&self.list[i]);
        server.set_dead_until(Some(Instant::now() + DEAD_FOR));
        if server.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let what = self.what;
        tracing::warn!(server = %server.name, "{what} unusable ({why}); trying the others, probing it every {PROBE_EVERY:?}");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            server.probing.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if probe(server.name.clone()).await {
                    server.set_dead_until(None);
                    server.probing.store(false, Ordering::Release);
                    tracing::info!(server = %server.name, "{what} answers again");
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_server_is_skipped_until_its_probe_answers() {
        let servers = Servers::new("test server", ["a".to_owned(), "b".to_owned()]);
        assert_eq!(servers.order(), [0, 1]);
        let answers = Arc::new(AtomicBool::new(false));
        let probe_answers = Arc::clone(&answers);
        servers.mark_dead(0, "refused", move |name| {
            let answers = Arc::clone(&probe_answers);
            async move {
                assert_eq!(name, "a");
                answers.load(Ordering::Acquire)
            }
        });
        assert_eq!(servers.order(), [1]);
        servers.mark_dead(1, "refused", |_| async { false });
        // None alive: all are tried.
        assert_eq!(servers.order(), [0, 1]);
        answers.store(true, Ordering::Release);
        let start = Instant::now();
        while !servers.get(0).alive() {
            assert!(start.elapsed() < Duration::from_secs(5), "probe never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(servers.order(), [0]);
        assert_eq!(servers.names(), "a b");
    }
}
