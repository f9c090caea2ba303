//! The daemon's serving half, as mini-redis's `server::run`: the sockets it was given, bound
//! while the process could still bind them ([`bind`]), served by one driver until shutdown
//! ([`run`]), then removed. Every socket is one [`Plan`]: the mux socket, the Dovecot socket,
//! the configuration file's `[[listener]]`s, the admin socket and the metrics address are
//! planned, checked, bound and served the same way; the start-up code only says which.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dovecot::DovecotOptions;
use super::{admin, dovecot, saslauthd, Limits, Listen, Network, TcpListen};
use crate::auth::Live;

/// What a socket serves.
#[derive(Debug, Clone, Copy)]
pub enum Serves {
    /// Cyrus's saslauthd protocol (the mux socket, or a `[[listener]]`).
    Saslauthd,
    /// Dovecot's auth-client protocol.
    Dovecot(DovecotOptions),
    /// The admin socket (`saslauthd-rs-ctl`).
    Admin,
    /// `GET /metrics` over HTTP.
    Metrics,
}

/// Where a socket is.
#[derive(Debug)]
pub enum Place {
    /// A Unix socket at a path, bound with a mode and an owner.
    Path {
        /// The path.
        path: PathBuf,
        /// The mode.
        mode: u32,
        /// The owner, as `user[:group]` or as ids.
        owner: Option<Owner>,
        /// Whether its directory is checked (not for those in the run directory, made
        /// safe when it was created).
        check_dir: bool,
    },
    /// A TCP address, letting in the networks listed.
    Tcp(SocketAddr, Vec<Network>),
    /// A Unix socket the service manager passed (its unit sets path, mode and owner; it
    /// is not removed).
    Passed(StdUnixListener),
}

/// A Unix socket's owner.
#[derive(Debug, Clone)]
pub enum Owner {
    /// `user[:group]`, resolved when the socket is checked; `named` is how messages call
    /// the setting (`--dovecot-socket-owner`).
    Spec {
        /// The setting.
        spec: String,
        /// Its name in messages.
        named: String,
    },
    /// Already resolved (uid, gid).
    Ids(u32, u32),
}

/// One socket to bind and serve.
#[derive(Debug)]
pub struct Plan {
    /// What it serves.
    pub serves: Serves,
    /// Where.
    pub place: Place,
    /// Its connection budget and read deadline.
    pub limits: Limits,
    /// How messages and the log name it (`/run/saslauthd/mux (saslauthd)`).
    pub what: String,
}

impl Plan {
    /// What can be checked before anything is bound: the owner exists, the directory is there
    /// and safe. Returns the owner's uid and gid.
    pub fn check(&self) -> Result<Option<(u32, u32)>, ServingError> {
        let Place::Path {
            path,
            owner,
            check_dir,
            ..
        } = &self.place
        else {
            return Ok(None);
        };
        let owner = match owner {
            None => None,
            Some(Owner::Ids(uid, gid)) => Some((*uid, *gid)),
            Some(Owner::Spec { spec, named }) => Some(super::resolve_owner(spec).map_err(
                |source| ServingError::Owner {
                    option: named.to_string(),
                    source,
                },
            )?),
        };
        if *check_dir {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            super::check_socket_dir(dir, owner.map(|(uid, _)| uid))?;
        }
        Ok(owner)
    }
}

/// Why a socket could not be put in service. Each names the socket (`what`: its path or
/// address, and what it is for).
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// Its owner (`--dovecot-socket-owner`, a listener's `owner`) names no one.
    #[error("{option}: {source}")]
    Owner {
        /// The setting.
        option: String,
        /// Why.
        source: super::OwnerError,
    },
    /// Its directory is not safe to hold it.
    #[error(transparent)]
    Directory(#[from] super::SocketDirError),
    /// It could not be bound.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// The socket.
        what: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The runtime could not take it.
    #[error("cannot register {what}: {source}")]
    Register {
        /// The socket.
        what: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A protocol asked of a kind of socket that does not carry it.
    #[error("{what}: {serves} is not served there")]
    NotServedThere {
        /// The socket.
        what: String,
        /// The protocol, as its plan names it.
        serves: String,
    },
}

/// The descriptors the plans' connection budgets need.
pub fn budget(plans: &[Plan]) -> usize {
    plans
        .iter()
        .filter(|p| matches!(p.serves, Serves::Saslauthd | Serves::Dovecot(_)))
        .map(|p| p.limits.max_connections)
        .sum()
}

enum Socket {
    Unix(StdUnixListener),
    Tcp(std::net::TcpListener, Vec<Network>),
}

/// A bound socket; one this process bound at a path is removed from the file system when
/// it is dropped (after serving, or when the start fails half way).
struct Bound {
    serves: Serves,
    limits: Limits,
    what: String,
    socket: Option<Socket>,
    remove: Option<PathBuf>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(path) = &self.remove {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The bound sockets, removed when dropped.
pub struct Sockets(Vec<Bound>);

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|b| &b.what))
            .finish()
    }
}

/// Binds every plan, in order (put the one clients wait for last: once it answers, all do).
/// A plan that cannot be bound removes those bound before it, and names itself.
pub fn bind(plans: Vec<Plan>) -> Result<Sockets, ServingError> {
    let mut bound = Vec::with_capacity(plans.len());
    for plan in plans {
        let what = plan.what.clone();
        let failed = |source| ServingError::Bind {
            what: what.clone(),
            source,
        };
        let (socket, remove) = match plan.place {
            Place::Passed(listener) => (Socket::Unix(listener), None),
            Place::Tcp(addr, ref allow) => (
                Socket::Tcp(super::bind_tcp(addr).map_err(failed)?, allow.clone()),
                None,
            ),
            Place::Path { ref path, mode, .. } => {
                let owner = plan.check()?;
                let listener = super::bind_socket(path, mode, owner).map_err(failed)?;
                (Socket::Unix(listener), Some(path.clone()))
            }
        };
        bound.push(Bound {
            serves: plan.serves,
            limits: plan.limits,
            what: plan.what,
            socket: Some(socket),
            remove,
        });
    }
    Ok(Sockets(bound))
}

/// The sockets being served.
pub struct Serving {
    sockets: Sockets,
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("sockets", &self.sockets)
            .finish_non_exhaustive()
    }
}

impl Serving {
    /// Registers every socket with the runtime and starts its accept loop, each on the
    /// runtime's workers (where its connections then run). Call inside the runtime.
    pub fn start(mut sockets: Sockets, live: &Arc<Live>) -> Result<Serving, ServingError> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // Each protocol listener's series exist before any accept loop runs, so that a scrape
        // right after the start (the admin socket may answer first) sees them, at zero.
        let series = |live: &Live, protocol, name| {
            live.current().metrics().listener(protocol, name);
        };
        for bound in &mut sockets.0 {
            let (what, limits) = (&bound.what, bound.limits);
            let socket = bound.socket.take().expect("each socket is served once");
            let failed = |source| ServingError::Register {
                what: what.clone(),
                source,
            };
            let (live, shutdown) = (Arc::clone(live), stop.clone().cancelled_owned());
            match (bound.serves, socket) {
                (Serves::Saslauthd, Socket::Unix(l)) => {
                    let l = saslauthd::MuxListener::new(l).map_err(failed)?;
                    series(&live, "saslauthd", l.name());
                    tasks.spawn(saslauthd::serve_saslauthd(l, live, limits, shutdown));
                }
                (Serves::Dovecot(options), Socket::Unix(l)) => {
                    let l = UnixListener::from_std(l).map_err(failed)?;
                    series(&live, "dovecot", Listen::name(&l));
                    tasks.spawn(dovecot::serve_dovecot(l, live, limits, options, shutdown));
                }
                (Serves::Dovecot(options), Socket::Tcp(l, allow)) => {
                    let l = TcpListen::new(l, allow).map_err(failed)?;
                    series(&live, "dovecot", l.name());
                    tasks.spawn(dovecot::serve_dovecot(l, live, limits, options, shutdown));
                }
                (Serves::Admin, Socket::Unix(l)) => {
                    let l = UnixListener::from_std(l).map_err(failed)?;
                    tasks.spawn(admin::serve_admin(l, live, shutdown));
                }
                (Serves::Metrics, Socket::Tcp(l, allow)) => {
                    let addr = l.local_addr().map_err(failed)?;
                    let l = TcpListen::new(l, allow).map_err(failed)?;
                    tasks.spawn(admin::serve_metrics_http(l, live, shutdown));
                    tracing::info!("metrics on http://{addr}/metrics");
                    continue;
                }
                (serves, _) => {
                    return Err(ServingError::NotServedThere {
                        what: what.clone(),
                        serves: format!("{serves:?}"),
                    })
                }
            }
            tracing::info!("listening on {what}");
        }
        Ok(Serving {
            sockets,
            tasks,
            stop,
        })
    }

    /// Serves until `shutdown` completes: then the accept loops stop, connections waiting
    /// for a request are closed, requests being answered finish (within the grace), and the
    /// sockets are removed. A panic in an accept loop is the daemon's.
    pub async fn until(mut self, shutdown: impl Future<Output = ()>) {
        let tasks = &mut self.tasks;
        let served = async {
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
        };
        tokio::pin!(served);
        tokio::select! {
            () = &mut served => {}
            () = shutdown => {
                self.stop.cancel();
                served.await;
            }
        }
        drop(self.sockets);
    }
}

/// Serves `sockets` with the driver `live` holds until `shutdown` completes, then removes
/// them: [`Serving::start`], then [`Serving::until`].
pub async fn run(
    sockets: Sockets,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServingError> {
    Serving::start(sockets, &live)?.until(shutdown).await;
    Ok(())
}
