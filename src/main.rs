//! `saslauthd-rs`: parse the flags, open the passdb, bind `<run_dir>/mux` (and the Dovecot
//! socket when asked), serve until SIGTERM or SIGINT, then remove the sockets and exit 0.

use std::process::ExitCode;
use std::sync::Arc;

use saslauthd_rs::auth::{self, Authenticator, Cache, Live, RealmPolicy};
use saslauthd_rs::cli::{self, Command};
use saslauthd_rs::config::{Config, Endpoint, Listener, Protocol};
use saslauthd_rs::passdb::{self, Access, CacheUse, Passdb};
use saslauthd_rs::process::{self, LogTarget, PidLock};
use saslauthd_rs::request::{self, Printable};
use saslauthd_rs::server::{self, dovecot::DovecotOptions};
use saslauthd_rs::systemd;

fn main() -> ExitCode {
    // Held until the handlers are in place (see block_termination_signals).
    process::block_termination_signals(true);
    let program = saslauthd_rs::getopt::program_name("saslauthd-rs");
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            eprint!("{}\n{}", cli::usage(&program), cli::version());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            eprint!("{}", cli::version());
            return ExitCode::SUCCESS;
        }
        Ok(Command::CheckConfig(config)) => return check_config(&program, &config),
        Err(e) if e.wants_usage() => {
            eprint!("{program}: {e}\n{}", cli::usage(&program));
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match start(&program, &config) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{program}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: what a start checks before it binds anything (the passdb opens, the
/// mechanisms can be served, the socket owner and `--user` exist), then the effective
/// settings on stdout.
fn check_config(program: &str, config: &Config) -> ExitCode {
    let checked = open_passdb(config).and_then(|passdb| {
        auth::check_mechanisms(&*passdb, config.dovecot_mechanisms.as_deref())
            .map_err(|e| format!("--dovecot-mechanisms: {e}"))?;
        if let Some(spec) = &config.dovecot_socket_owner {
            server::resolve_owner(spec).map_err(|e| format!("--dovecot-socket-owner: {e}"))?;
        }
        if let Some(user) = &config.user {
            process::resolve_identity(user, config.group.as_deref(), &[])?;
        }
        for listener in &config.listeners {
            check_listener(listener)?;
        }
        Ok(())
    });
    match checked {
        Ok(()) => {
            print!("{}", config.effective());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{program}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the passdb `-a` names, as its module in [`passdb::MODULES`] does.
fn open_passdb(config: &Config) -> Result<Arc<dyn Passdb>, String> {
    let Some(kind) = config.passdb else {
        let names: Vec<_> = passdb::offered().collect();
        return Err(format!(
            "no authentication mechanism specified (use -a {})",
            names.join(", ")
        ));
    };
    let module = passdb::module(kind.name).ok_or_else(|| format!("no passdb {kind}"))?;
    if module.about.is_none() {
        return Err(format!("-a {kind} exists only inside the test suite"));
    }
    (module.open)(&config.passdb_settings()).map_err(|e| e.to_string())
}

/// After dropping privileges, the passdb's files must still be readable: say so at start
/// (before binding or detaching) rather than fail every request.
fn check_readable_as(access: &Access, identity: &process::Identity) -> Result<(), String> {
    for file in &access.files {
        match process::as_identity(identity, || std::fs::File::open(file).map(drop))? {
            Ok(()) => {}
            Err(e) => {
                return Err(format!(
                    "as {} (--user), {} cannot be read: {e}; give its group read access or \
                     run without --user",
                    identity.name,
                    file.display()
                ))
            }
        }
    }
    Ok(())
}

/// The realm rules `config` sets; `host` is the default realm unless `--realm` names one.
fn realm_policy(config: &Config, host: &[u8]) -> RealmPolicy {
    RealmPolicy {
        default_realm: match &config.realm {
            Some(realm) => realm.as_bytes().to_vec(),
            None => host.to_vec(),
        },
        named: config.realm.is_some(),
        combine: config.combine_realm,
    }
}

/// The driver `config` describes over `passdb`; after `previous` on a reload (whose throttle
/// state it keeps).
fn driver(
    config: &Config,
    passdb: Arc<dyn Passdb>,
    realms: RealmPolicy,
    host: &[u8],
    previous: Option<&Authenticator>,
) -> Result<Authenticator, String> {
    let cache = match (config.cache, passdb.cache_use()) {
        (false, _) => None,
        (true, CacheUse::Useless(why)) => {
            tracing::info!("{why}");
            None
        }
        (true, CacheUse::Useful) => Some(Cache::new(config.cache_timeout, config.cache_size_kb)),
    };
    let options = auth::Options {
        workers: config.workers,
        failure_delay: config.failure_delay,
        scram_iterations: config.scram_iterations,
        host_name: String::from_utf8_lossy(host).into_owned(),
        cache,
        mechanisms: config.dovecot_mechanisms.clone(),
        metrics: config.metrics,
        backend_timeout: auth::BACKEND_TIMEOUT,
    };
    match previous {
        None => Authenticator::new(passdb, realms, options),
        Some(previous) => previous.reloaded(passdb, realms, options),
    }
    .map_err(|e| format!("--dovecot-mechanisms: {e}"))
}

/// The settings a reload cannot change (sockets, identity, budgets): those `next` changes,
/// by their flag names.
fn restart_only(now: &Config, next: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut differs = |name, same: bool| {
        if !same {
            changed.push(name);
        }
    };
    differs("-m (run_dir)", now.run_dir == next.run_dir);
    differs("--socket-mode", now.socket_mode == next.socket_mode);
    differs(
        "--max-connections",
        now.max_connections == next.max_connections,
    );
    differs(
        "--dovecot-max-connections",
        now.dovecot_max_connections == next.dovecot_max_connections,
    );
    differs(
        "metrics_address",
        now.metrics_address == next.metrics_address,
    );
    differs("metrics", now.metrics == next.metrics);
    differs(
        "--dovecot-socket",
        now.dovecot_socket == next.dovecot_socket,
    );
    differs(
        "--dovecot-socket-owner",
        now.dovecot_socket_owner == next.dovecot_socket_owner,
    );
    differs(
        "--dovecot-socket-mode",
        now.dovecot_socket_mode == next.dovecot_socket_mode,
    );
    differs(
        "--dovecot-no-realm-split",
        now.dovecot_split_realm == next.dovecot_split_realm,
    );
    differs(
        "--dovecot-temp-fail",
        now.dovecot_temp_fail == next.dovecot_temp_fail,
    );
    differs("--timeout", now.read_timeout == next.read_timeout);
    differs("--user", now.user == next.user);
    differs("--group", now.group == next.group);
    differs("-d/-V (verbose)", now.verbose == next.verbose);
    differs("log_level", now.log_level == next.log_level);
    let unplaced = |c: &Config| -> Vec<Listener> {
        let mut listeners = c.listeners.clone();
        listeners.iter_mut().for_each(|l| l.line = 0);
        listeners
    };
    differs("[[listener]]", unplaced(now) == unplaced(next));
    changed
}

/// Waits for a task the daemon cannot serve without; its panic is the daemon's, as it was when
/// the task ran on this thread.
async fn joined<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime that is shutting down cancels a task, and it cannot while this runs.
        Err(e) => panic!("{e}"),
    }
}

/// SIGHUP: reads the configuration again (the same flags, over the file as it is now),
/// opens the passdb it names and puts a new driver in service for the requests that start
/// from then on; requests in flight finish on the old one, and the sockets stay open. A
/// configuration that does not load changes nothing (the error is logged). The work runs on
/// a blocking thread: opening a large sasldb2 takes a while.
async fn reload_on_hangup(
    hangups: Option<tokio::signal::unix::Signal>,
    started: &Config,
    host: &[u8],
    live: &Arc<Live>,
) {
    let Some(mut hangups) = hangups else {
        return std::future::pending().await;
    };
    let mut now = started.clone();
    while hangups.recv().await.is_some() {
        systemd::notify("RELOADING=1");
        let (host, previous) = (host.to_vec(), live.current());
        let loaded = tokio::task::spawn_blocking(move || {
            let next = match cli::parse(std::env::args_os().skip(1)) {
                Ok(Command::Run(next)) => *next,
                Ok(_) => return Err("the command line no longer starts the daemon".to_string()),
                Err(e) => return Err(e.to_string()),
            };
            let passdb = open_passdb(&next)?;
            let realms = realm_policy(&next, &host);
            let auth = driver(&next, passdb, realms, &host, Some(&previous))?;
            Ok((next, auth))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
        match loaded {
            Ok((next, auth)) => {
                let ignored = restart_only(&now, &next);
                if !ignored.is_empty() {
                    tracing::warn!(
                        "SIGHUP: {} changed; that takes a restart (the old value stays)",
                        ignored.join(", ")
                    );
                }
                let kind = auth.passdb_kind();
                live.replace(auth);
                tracing::info!("SIGHUP: configuration reloaded (passdb {kind})");
                systemd::notify(&format!("READY=1\nSTATUS=serving (passdb {kind})"));
                now = next;
            }
            Err(e) => {
                tracing::error!("SIGHUP: {e}; still serving with the previous configuration");
                systemd::notify(
                    "READY=1\nSTATUS=reload failed; serving with the previous configuration",
                );
            }
        }
    }
}

/// What can be checked of a Unix-socket listener before anything is bound: its owner exists,
/// its directory is there and safe. Returns the owner's uid and gid.
fn check_listener(listener: &Listener) -> Result<Option<(u32, u32)>, String> {
    let Endpoint::Path(path) = &listener.endpoint else {
        return Ok(None);
    };
    let owner = match listener.owner_spec() {
        Some(spec) => Some(server::resolve_owner(&spec).map_err(|e| {
            format!(
                "the [[listener]] at line {}: owner {spec:?}: {e}",
                listener.line
            )
        })?),
        None => None,
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    server::check_socket_dir(dir, owner.map(|(uid, _)| uid))?;
    Ok(owner)
}

/// A listener's bound socket.
enum Bound {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

impl Bound {
    fn try_clone(&self) -> Result<Bound, String> {
        match self {
            Bound::Unix(l) => l.try_clone().map(Bound::Unix),
            Bound::Tcp(l) => l.try_clone().map(Bound::Tcp),
        }
        .map_err(|e| format!("cannot use a listening socket: {e}"))
    }
}

/// Binds the `[[listener]]`s of the configuration file (as root, before privileges are
/// dropped): a Unix socket in a directory checked as the Dovecot socket's is, with its
/// mode and owner; a TCP address.
fn bind_listeners(config: &Config) -> Result<Vec<(Listener, Bound)>, String> {
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let what = listener.describe();
        let socket = match &listener.endpoint {
            Endpoint::Path(path) => {
                let owner = check_listener(listener)?;
                Bound::Unix(
                    server::bind_socket(path, listener.mode, owner)
                        .map_err(|e| format!("cannot listen on {what}: {e}"))?,
                )
            }
            Endpoint::Tcp(addr) => Bound::Tcp(
                server::bind_tcp(*addr).map_err(|e| format!("cannot listen on {what}: {e}"))?,
            ),
        };
        bound.push((listener.clone(), socket));
    }
    Ok(bound)
}

/// Descriptors beyond the connection budgets: the listeners, the store, inotify, the log,
/// the runtime's own, and room for the file a passdb opens per request.
const FD_RESERVE: u64 = 128;

/// Everything that can fail with a message on stderr happens before detaching.
fn start(program: &str, config: &Config) -> Result<ExitCode, String> {
    process::forbid_core_dumps();
    // Sockets passed by systemd's socket activation are used as they are (their units set
    // path, mode and owner); the others are bound below.
    let passed = systemd::passed_sockets()?;
    // Each listener has its own connection budget, and the descriptors for both (and the
    // files and pipes the daemon itself holds) are there before anything is accepted.
    let dovecot_budget = if config.dovecot_socket.is_some() || passed.dovecot.is_some() {
        config.dovecot_max_connections
    } else {
        0
    };
    let extra_budget: usize = config.listeners.iter().map(|l| l.max_connections).sum();
    let needed = (config.max_connections + dovecot_budget + extra_budget) as u64 + FD_RESERVE;
    process::fit_fd_limit(needed)?;
    let passdb = open_passdb(config)?;
    let identity = match &config.user {
        None => None,
        Some(user) => {
            let access = passdb.access();
            let keep: Vec<_> = (access.group_names.iter())
                .map(|name| process::KeepGroup::Named(name))
                .chain(
                    access
                        .group_ids
                        .iter()
                        .map(|id| process::KeepGroup::Id(*id)),
                )
                .collect();
            let identity = process::resolve_identity(user, config.group.as_deref(), &keep)?;
            check_readable_as(&access, &identity)?;
            Some(identity)
        }
    };
    auth::check_mechanisms(&*passdb, config.dovecot_mechanisms.as_deref())
        .map_err(|e| format!("--dovecot-mechanisms: {e}"))?;
    for listener in &config.listeners {
        check_listener(listener)?;
    }
    // The host name, once: the default realm (as Cyrus) and CRAM-MD5's challenges.
    let host = request::host_name().map_err(|e| format!("gethostname: {e}"))?;
    let realms = realm_policy(config, &host);

    server::create_run_dir(&config.run_dir)?;
    let lock = PidLock::acquire(&config.run_dir).map_err(|e| e.to_string())?;
    let socket = config.socket_path();
    let bound_mux = passed.mux.is_none();
    let listener = match passed.mux {
        Some(listener) => listener,
        None => server::saslauthd::bind(&config.run_dir, config.socket_mode)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?,
    };
    let bound_dovecot = passed.dovecot.is_none();
    let dovecot_listener = match (passed.dovecot, &config.dovecot_socket) {
        (Some(listener), _) => Some(listener),
        (None, None) => None,
        (None, Some(path)) => {
            let owner = match &config.dovecot_socket_owner {
                Some(spec) => Some(
                    server::resolve_owner(spec)
                        .map_err(|e| format!("--dovecot-socket-owner: {e}"))?,
                ),
                None => None,
            };
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => std::path::Path::new("."),
            };
            server::check_socket_dir(dir, owner.map(|(uid, _)| uid))?;
            Some(
                server::bind_socket(path, config.dovecot_socket_mode, owner)
                    .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?,
            )
        }
    };
    let extra = bind_listeners(config)?;
    let metrics_http = match config.metrics_address {
        None => None,
        Some(addr) => Some(
            server::bind_tcp(addr)
                .map_err(|e| format!("cannot listen on {addr} (metrics_address): {e}"))?,
        ),
    };
    let admin_owner = identity.as_ref().map(|i| (i.uid, i.gid));
    let admin = server::admin::bind(&config.run_dir, admin_owner).map_err(|e| {
        format!(
            "cannot listen on {}: {e}",
            server::admin::socket_path(&config.run_dir).display()
        )
    })?;
    let pidfile = if config.foreground {
        None
    } else {
        Some(process::detach(&config.run_dir).map_err(|e| format!("cannot detach: {e}"))?)
    };
    process::init_logging(
        LogTarget::for_daemon(config.foreground),
        if config.verbose {
            "debug"
        } else {
            config.log_level
        },
    );
    process::log_panics();
    for notice in passdb.notices() {
        tracing::warn!("{notice}");
    }
    let limits = server::Limits {
        read_timeout: config.read_timeout,
        max_connections: config.max_connections,
        ..server::Limits::default()
    };
    let dovecot_limits = server::Limits {
        max_connections: config.dovecot_max_connections,
        ..limits
    };

    // Sockets bound, lock held, limits raised: become the unprivileged user before any
    // thread starts (the pool, the runtime), keeping only the groups the passdb reads with.
    if let Some(identity) = &identity {
        process::drop_privileges(identity)?;
        tracing::info!(
            "running as {} (uid {}, gid {}, groups {:?})",
            identity.name,
            identity.uid,
            identity.gid,
            identity.groups
        );
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        runtime.worker_threads(config.threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("saslauthd-rs")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let realm = realms.default_realm.clone();
    let auth = driver(config, passdb, realms, &host, None)?;
    let auth = Arc::new(Live::new(Arc::new(auth)));
    runtime.block_on(async {
        let listener = server::saslauthd::MuxListener::new(listener)
            .map_err(|e| format!("cannot register the socket: {e}"))?;
        tracing::info!(
            "{program} {} listening on {}{} (passdb {}, realm default {}, threads {})",
            env!("CARGO_PKG_VERSION"),
            socket.display(),
            if bound_mux {
                ""
            } else {
                " (the socket the service manager passed)"
            },
            auth.current().passdb_kind(),
            Printable(&realm),
            tokio::runtime::Handle::current().metrics().num_workers(),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let dovecot = match dovecot_listener {
            Some(l) => Some(
                tokio::net::UnixListener::from_std(l)
                    .map_err(|e| format!("cannot register the dovecot socket: {e}"))?,
            ),
            None => None,
        };
        let options = DovecotOptions {
            split_realm: config.dovecot_split_realm,
            temp_fail: config.dovecot_temp_fail,
            ..DovecotOptions::default()
        };
        if let Some(path) = &config.dovecot_socket {
            tracing::info!("also serving Dovecot's auth protocol on {}", path.display());
        }
        let mut more = tokio::task::JoinSet::new();
        for (listener, bound) in &extra {
            let limits = server::Limits {
                max_connections: listener.max_connections,
                ..limits
            };
            let (auth, shutdown) = (Arc::clone(&auth), stop.clone().cancelled_owned());
            let what = listener.describe();
            match (listener.protocol, bound.try_clone()?) {
                (Protocol::Saslauthd, Bound::Unix(l)) => {
                    let l = server::saslauthd::MuxListener::new(l)
                        .map_err(|e| format!("cannot register {what}: {e}"))?;
                    more.spawn(server::saslauthd::serve_saslauthd(
                        l, auth, limits, shutdown,
                    ));
                }
                (Protocol::Dovecot, Bound::Unix(l)) => {
                    let l = tokio::net::UnixListener::from_std(l)
                        .map_err(|e| format!("cannot register {what}: {e}"))?;
                    more.spawn(server::dovecot::serve_dovecot(
                        l, auth, limits, options, shutdown,
                    ));
                }
                (Protocol::Dovecot, Bound::Tcp(l)) => {
                    let l = server::TcpListen::new(l, listener.allow.clone())
                        .map_err(|e| format!("cannot register {what}: {e}"))?;
                    more.spawn(server::dovecot::serve_dovecot(
                        l, auth, limits, options, shutdown,
                    ));
                }
                (Protocol::Saslauthd, Bound::Tcp(_)) => {
                    return Err(format!(
                        "{what}: the saslauthd protocol is not served on TCP"
                    ))
                }
            }
            tracing::info!("also listening on {what}");
        }
        if let Some(listener) = metrics_http {
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            // On a loopback address, only loopback clients; elsewhere the administrator
            // chose to publish the figures (never a secret: counts and durations).
            let allow = match addr.ip().is_loopback() {
                true => ["127.0.0.0/8", "::1"],
                false => ["0.0.0.0/0", "::/0"],
            };
            let allow = allow
                .iter()
                .map(|n| n.parse::<server::Network>())
                .collect::<Result<Vec<_>, _>>()?;
            let listener = server::TcpListen::new(listener, allow)
                .map_err(|e| format!("cannot register the metrics address: {e}"))?;
            more.spawn(server::admin::serve_metrics_http(
                listener,
                Arc::clone(&auth),
                stop.clone().cancelled_owned(),
            ));
            tracing::info!("metrics on http://{addr}/metrics");
        }
        let admin = tokio::net::UnixListener::from_std(admin)
            .map_err(|e| format!("cannot register the admin socket: {e}"))?;
        more.spawn(server::admin::serve_admin(
            admin,
            Arc::clone(&auth),
            stop.clone().cancelled_owned(),
        ));
        let more = async move { while more.join_next().await.is_some() {} };
        // The accept loops run on the runtime's workers, not on this thread (block_on's,
        // which is none of them): a connection is then spawned onto the worker that accepted
        // it and runs there, where from here every accept would wake a worker and every
        // readiness of the listener would wake this thread.
        let mux = tokio::spawn(server::saslauthd::serve_saslauthd(
            listener,
            Arc::clone(&auth),
            limits,
            stop.clone().cancelled_owned(),
        ));
        let dove = dovecot.map(|l| {
            tokio::spawn(server::dovecot::serve_dovecot(
                l,
                Arc::clone(&auth),
                dovecot_limits,
                options,
                stop.clone().cancelled_owned(),
            ))
        });
        let mux = joined(mux);
        let dove = async {
            if let Some(dove) = dove {
                joined(dove).await;
            }
        };
        // Handlers first, then let the signals through: one that came while starting is
        // delivered now, to them.
        let signalled = process::shutdown_signal();
        let hangups = process::reload_signal();
        process::block_termination_signals(false);
        let reloads = reload_on_hangup(hangups, config, &host, &auth);
        let signal = async {
            signalled.await;
            systemd::notify("STOPPING=1");
            stop.cancel();
        };
        // Every socket listens: the service manager may send clients now.
        systemd::notify(&format!(
            "READY=1\nSTATUS=serving (passdb {})",
            auth.current().passdb_kind()
        ));
        let watchdog = async {
            let Some(every) = systemd::watchdog_interval() else {
                return std::future::pending().await;
            };
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                systemd::notify("WATCHDOG=1");
            }
        };
        tokio::select! {
            _ = async { tokio::join!(mux, dove, more, signal) } => {}
            _ = watchdog => {}
            _ = reloads => {}
        }
        Ok::<_, String>(())
    })?;
    // Sockets systemd passed are its own to remove.
    if bound_mux {
        let _ = std::fs::remove_file(&socket);
    }
    if let (true, Some(path)) = (bound_dovecot, &config.dovecot_socket) {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(server::admin::socket_path(&config.run_dir));
    for (listener, _) in &extra {
        if let Endpoint::Path(path) = &listener.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some(pidfile) = pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    lock.remove();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
