//! The servers of `ldap_servers`: connections to them (search connections pooled and
//! multiplexed), each operation within its deadline, failover in order, and a server that
//! failed skipped and probed in the background until it answers again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings};

use super::{guard, Ldap};
use crate::passdb::PassdbError;

/// Search connections (multiplexed: many searches at once on each).
pub(super) const SEARCH_CONNECTIONS: usize = 2;

/// LDAP result codes the verdicts come from (RFC 4511).
pub(super) mod rc {
    pub(in crate::passdb::ldap) const SUCCESS: u32 = 0;
    pub(in crate::passdb::ldap) const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub(in crate::passdb::ldap) const COMPARE_FALSE: u32 = 5;
    pub(in crate::passdb::ldap) const COMPARE_TRUE: u32 = 6;
    pub(in crate::passdb::ldap) const NO_SUCH_OBJECT: u32 = 32;
    pub(in crate::passdb::ldap) const INVALID_DN_SYNTAX: u32 = 34;
    pub(in crate::passdb::ldap) const INVALID_CREDENTIALS: u32 = 49;
    pub(in crate::passdb::ldap) const INSUFFICIENT_ACCESS: u32 = 50;
    pub(in crate::passdb::ldap) const UNWILLING_TO_PERFORM: u32 = 53;
}

/// A connection and the server it goes to.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) server: usize,
    pub(super) ldap: ldap3::Ldap,
}

/// Why an operation got no answer: the server broke (try another) or said something that is
/// no verdict.
pub(super) enum Failure {
    /// Connecting failed or the deadline passed: the server is marked dead and the next one
    /// is tried.
    Server(String),
    /// The connection broke (closed, reset): on a pooled connection, likely one the server
    /// dropped (a restart, an idle timeout), so a fresh connection to the same server is
    /// tried before the server counts as failed.
    Broken(String),
    /// The server answered with an error that is not about the user (a bad bind DN for
    /// searches, a bad search base, ...): reported, not retried.
    Answer(String),
}

impl Ldap {
    /// Marks server `i` dead, drops its pooled connections, and probes it in the background
    /// until it answers.
    pub(super) fn mark_dead(&self, i: usize, why: &str) {
        self.searchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.server != i);
        self.binders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.server != i);
        let (settings, timeout) = (self.settings.clone(), self.op_timeout);
        self.servers.mark_dead(i, why, move |url| {
            let settings = settings.clone();
            async move { probe(&url, settings, timeout).await }
        });
    }

    pub(super) async fn connect(&self, i: usize) -> Result<Conn, Failure> {
        let url = &self.servers.get(i).name;
        let ldap = connect_to(url, self.settings.clone(), self.op_timeout)
            .await
            .map_err(|e| Failure::Server(e.to_string()))?;
        Ok(Conn { server: i, ldap })
    }

    /// A search connection: a pooled one, or a new one bound as `ldap_bind_dn` on the first
    /// server that takes it.
    pub(super) async fn searcher(
        &self,
        skip: Option<usize>,
        fresh: bool,
    ) -> Result<(Conn, bool), PassdbError> {
        if !fresh {
            let pool = self.searchers.lock().unwrap_or_else(|e| e.into_inner());
            let usable: Vec<&Conn> = pool
                .iter()
                .filter(|c| Some(c.server) != skip && self.servers.get(c.server).alive())
                .collect();
            if usable.len() >= SEARCH_CONNECTIONS || (!usable.is_empty() && skip.is_none()) {
                let n = self.next_searcher.fetch_add(1, Ordering::Relaxed);
                return Ok((usable[n % usable.len()].clone(), true));
            }
        }
        let conn = self
            .on_first_server(skip, |i| self.bound_searcher(i))
            .await?;
        let mut pool = self.searchers.lock().unwrap_or_else(|e| e.into_inner());
        pool.retain(|c| !c.ldap.clone().is_closed());
        if pool.len() < SEARCH_CONNECTIONS {
            pool.push(conn.clone());
        }
        Ok((conn, false))
    }

    /// `open` on the servers in order (but `skip`) until one works: a server that fails is
    /// marked dead; one that answers with an error ends the attempt with it.
    pub(super) async fn on_first_server<T, F, Fut>(
        &self,
        skip: Option<usize>,
        open: F,
    ) -> Result<T, PassdbError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut last = String::from("no server");
        for i in self
            .servers
            .order()
            .into_iter()
            .filter(|&i| Some(i) != skip)
        {
            match open(i).await {
                Ok(value) => return Ok(value),
                Err(Failure::Server(why) | Failure::Broken(why)) => {
                    self.mark_dead(i, &why);
                    last = format!("{}: {why}", self.servers.get(i).name);
                }
                Err(Failure::Answer(why)) => return Err(self.error(i, why)),
            }
        }
        Err(PassdbError::Ldap {
            server: self.conf.servers.join(" "),
            message: format!("no LDAP server could be used ({last})"),
        })
    }

    pub(super) async fn bound_searcher(&self, i: usize) -> Result<Conn, Failure> {
        let mut conn = self.connect(i).await?;
        if !self.conf.bind_dn.is_empty() {
            let bound = self
                .op(conn
                    .ldap
                    .simple_bind(&self.conf.bind_dn, &self.conf.bind_pw))
                .await?;
            if bound.rc != rc::SUCCESS {
                return Err(Failure::Answer(format!(
                    "bind as ldap_bind_dn {} refused: {} ({})",
                    self.conf.bind_dn, bound.text, bound.rc
                )));
            }
        }
        conn.ldap.with_timeout(self.op_timeout);
        Ok(conn)
    }

    /// Runs one operation within the deadline; a broken connection or the deadline is the
    /// server's failure.
    pub(super) async fn op<T>(
        &self,
        call: impl std::future::Future<Output = ldap3::result::Result<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.op_timeout, guard::guarded(call)).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(Failure::Broken(e.to_string())),
            Ok(Err(panic)) => Err(Failure::Broken(panic.to_string())),
            Err(_) => Err(Failure::Server(format!(
                "no answer within {:?}",
                self.op_timeout
            ))),
        }
    }

    pub(super) fn error(&self, i: usize, message: String) -> PassdbError {
        PassdbError::Ldap {
            server: self.servers.get(i).name.clone(),
            message,
        }
    }

    /// Runs `f` on a search connection, once more on another server when the first breaks.
    pub(super) async fn with_searcher<T, F, Fut>(&self, f: F) -> Result<T, PassdbError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let (mut skip, mut fresh) = (None, false);
        for _ in 0..3 {
            let (conn, pooled) = self.searcher(skip, fresh).await?;
            let server = conn.server;
            match f(conn).await {
                Ok(value) => return Ok(value),
                Err(Failure::Answer(why)) => return Err(self.error(server, why)),
                Err(Failure::Broken(why)) if pooled => {
                    // Drop that server's pooled connections and try it afresh.
                    tracing::debug!(server = %self.servers.get(server).name, "LDAP: a pooled connection broke ({why}); reconnecting");
                    self.searchers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|c| c.server != server);
                    fresh = true;
                }
                Err(Failure::Server(why) | Failure::Broken(why)) => {
                    self.mark_dead(server, &why);
                    (skip, fresh) = (Some(server), false);
                }
            }
        }
        Err(PassdbError::Ldap {
            server: self.conf.servers.join(" "),
            message: "every LDAP server tried failed".into(),
        })
    }
}

/// A connection to `url` made within `timeout`, its driver running on the runtime; or why
/// there is none.
pub(super) async fn connect_to(
    url: &str,
    settings: LdapConnSettings,
    timeout: Duration,
) -> Result<ldap3::Ldap, ConnectError> {
    let connect = guard::guarded(LdapConnAsync::with_settings(settings, url));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(Ok((conn, ldap)))) => {
            let url = url.to_owned();
            tokio::spawn(async move {
                if let Err(panic) = guard::guarded(conn.drive()).await {
                    tracing::warn!("LDAP {url}: connection dropped: {}", panic);
                }
            });
            Ok(ldap)
        }
        Ok(Ok(Err(e))) => Err(ConnectError::Refused(e)),
        Ok(Err(panic)) => Err(ConnectError::Panicked(panic)),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

/// Why there is no connection to a server.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// The library could not connect (refused, TLS, a name that does not resolve).
    #[error("connect: {0}")]
    Refused(ldap3::LdapError),
    /// The library panicked on what the server sent.
    #[error("connect: {0}")]
    Panicked(guard::Panicked),
    /// Nothing within the deadline.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// The root DSE (RFC 4512 §5.1: a base search of the empty DN) with `attrs`.
pub(super) async fn read_root_dse(
    ldap: &mut ldap3::Ldap,
    attrs: Vec<&str>,
) -> ldap3::result::Result<ldap3::SearchResult> {
    ldap.search("", ldap3::Scope::Base, "(objectClass=*)", attrs)
        .await
}

/// Whether the server at `url` answers a root DSE read within `timeout`.
pub(super) async fn probe(url: &str, settings: LdapConnSettings, timeout: Duration) -> bool {
    let attempt = async {
        let mut ldap = connect_to(url, settings, timeout).await.ok()?;
        let result = read_root_dse(&mut ldap, vec!["1.1"]).await.ok()?;
        let _ = ldap.unbind().await;
        (result.1.rc == rc::SUCCESS).then_some(())
    };
    matches!(
        tokio::time::timeout(timeout, guard::guarded(attempt)).await,
        Ok(Ok(Some(())))
    )
}
