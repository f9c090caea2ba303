//! `saslauthd-rs`: parse the flags, open the passdb, bind `<run_dir>/mux` (and the Dovecot
//! socket when asked), serve until SIGTERM or SIGINT, then remove the sockets and exit 0.

use std::process::ExitCode;
use std::sync::Arc;

/// What stops a start: one line on stderr (as mini-redis's `crate::Error`). The library's
/// errors are typed; this is where they meet.
type Error = Box<dyn std::error::Error + Send + Sync>;

use saslauthd_rs::auth::{self, Authenticator, Cache, Live, RealmPolicy};
use saslauthd_rs::cli::{self, Command};
use saslauthd_rs::config::{Config, Endpoint, Protocol};
use saslauthd_rs::log_writer;
use saslauthd_rs::passdb::{self, Access, CacheUse, Passdb, TokenCheck};
use saslauthd_rs::process::{self, LogTarget, PidLock};
use saslauthd_rs::request::{self, Printable};
use saslauthd_rs::server::{self, dovecot::DovecotOptions, Owner, Place, Plan, Serves};
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
    let started = start(&program, &config);
    // The log's last lines before anything else is written, or the process ends.
    log_writer::flush();
    match started {
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
        let tokens = open_tokens(config, &*passdb)?;
        if let Some(user) = &config.user {
            process::resolve_identity(user, config.group.as_deref(), &[])?;
        }
        for plan in plans(config, systemd::Passed::default()) {
            plan.check()?;
        }
        // One runtime for what must be asked over the network.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        if let Some(store) = config.throttle().store {
            runtime
                .block_on(auth::check_store(&store))
                .map_err(|e| format!("throttle_store {}: {e}", store.url))?;
            eprintln!("{program}: throttle_store {}: connected", store.url);
        }
        if let Some(tokens) = tokens {
            for notice in tokens.notices() {
                eprintln!("{program}: warning: {notice}");
            }
            let kind = tokens.kind();
            let found = runtime
                .block_on(tokens.probe())
                .map_err(|e| format!("[{kind}] {e}"))?;
            eprintln!("{program}: [{kind}] {found}");
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
fn open_passdb(config: &Config) -> Result<Arc<dyn Passdb>, Error> {
    let Some(kind) = config.passdb else {
        let names: Vec<_> = passdb::offered().collect();
        return Err(format!(
            "no authentication mechanism specified (use -a {})",
            names.join(", ")
        )
        .into());
    };
    let module = passdb::module(kind.name).ok_or_else(|| format!("no passdb {kind}"))?;
    if module.about.is_none() {
        return Err(format!("-a {kind} exists only inside the test suite").into());
    }
    Ok((module.open)(&config.passdb_settings())?)
}

/// Opens the token check the configuration file's table asks for (`[oauth2]`), if any, and
/// checks that `passdb` and it can serve the mechanisms `--dovecot-mechanisms` names.
fn open_tokens(config: &Config, passdb: &dyn Passdb) -> Result<Option<Arc<dyn TokenCheck>>, Error> {
    let mut tokens = None;
    for module in passdb::TOKEN_MODULES {
        if let Some(table) = config.table(module.name) {
            tokens = Some((module.open)(table)?);
            break;
        }
    }
    auth::check_mechanisms(
        passdb,
        config.dovecot_mechanisms.as_deref(),
        tokens.is_some(),
    )
    .map_err(|e| format!("--dovecot-mechanisms: {e}"))?;
    Ok(tokens)
}

/// After dropping privileges, the passdb's files must still be readable: say so at start
/// (before binding or detaching) rather than fail every request.
fn check_readable_as(access: &Access, identity: &process::Identity) -> Result<(), Error> {
    for file in &access.files {
        match process::as_identity(identity, || std::fs::File::open(file).map(drop))? {
            Ok(()) => {}
            Err(e) => {
                return Err(format!(
                    "as {} (--user), {} cannot be read: {e}; give its group read access or \
                     run without --user",
                    identity.name,
                    file.display()
                )
                .into())
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
    tokens: Option<Arc<dyn TokenCheck>>,
    realms: RealmPolicy,
    host: &[u8],
    previous: Option<&Authenticator>,
) -> Result<Authenticator, Error> {
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
        throttle: config.throttle(),
        scram_iterations: config.scram_iterations,
        host_name: String::from_utf8_lossy(host).into_owned(),
        cache,
        mechanisms: config.dovecot_mechanisms.clone(),
        metrics: config.metrics,
        backend_timeout: auth::BACKEND_TIMEOUT,
        tokens,
    };
    match previous {
        None => Authenticator::new(passdb, realms, options),
        Some(previous) => previous.reloaded(passdb, realms, options),
    }
    .map_err(|e| format!("--dovecot-mechanisms: {e}").into())
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
                Ok(_) => return Err("the command line no longer starts the daemon".into()),
                Err(e) => return Err(Error::from(e.to_string())),
            };
            let passdb = open_passdb(&next)?;
            let tokens = open_tokens(&next, &*passdb)?;
            let realms = realm_policy(&next, &host);
            let auth = driver(&next, passdb, tokens, realms, &host, Some(&previous))?;
            Ok((next, auth))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the reload failed: {e}").into()));
        match loaded {
            Ok((next, auth)) => {
                let ignored = now.restart_only(&next);
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

/// The sockets `config` asks for, as plans, in the order they are bound: the Dovecot
/// socket, the `[[listener]]`s, the metrics address, the admin socket, and last the mux
/// socket, which clients (and the tests) wait for. A socket the service manager `passed`
/// takes the place of the one the flags name. The admin socket belongs to the user the
/// daemon runs as: [`owned_by`] says who.
fn plans(config: &Config, passed: systemd::Passed) -> Vec<Plan> {
    let limits = |max_connections| server::Limits {
        read_timeout: config.read_timeout,
        max_connections,
        ..server::Limits::default()
    };
    let dovecot = Serves::Dovecot(DovecotOptions {
        split_realm: config.dovecot_split_realm,
        temp_fail: config.dovecot_temp_fail,
        ..DovecotOptions::default()
    });
    let passed_note = " (the socket the service manager passed)";
    let mut plans = Vec::new();
    let dovecot_place = match (passed.dovecot, &config.dovecot_socket) {
        (Some(listener), _) => Some((Place::Passed(listener), "dovecot".to_string() + passed_note)),
        (None, None) => None,
        (None, Some(path)) => Some((
            Place::Path {
                path: path.clone(),
                mode: config.dovecot_socket_mode,
                owner: config.dovecot_socket_owner.clone().map(|spec| Owner::Spec {
                    spec,
                    named: "--dovecot-socket-owner".into(),
                }),
                check_dir: true,
            },
            format!("{} (dovecot)", path.display()),
        )),
    };
    if let Some((place, what)) = dovecot_place {
        plans.push(Plan {
            serves: dovecot,
            place,
            limits: limits(config.dovecot_max_connections),
            what,
        });
    }
    for listener in &config.listeners {
        let place = match &listener.endpoint {
            Endpoint::Path(path) => Place::Path {
                path: path.clone(),
                mode: listener.mode,
                owner: listener.owner_spec().map(|spec| Owner::Spec {
                    named: format!("the [[listener]] at line {}: owner {spec:?}", listener.line),
                    spec,
                }),
                check_dir: true,
            },
            Endpoint::Tcp(addr) => Place::Tcp(*addr, listener.allow.clone()),
        };
        plans.push(Plan {
            serves: match listener.protocol {
                Protocol::Saslauthd => Serves::Saslauthd,
                Protocol::Dovecot => dovecot,
            },
            place,
            limits: limits(listener.max_connections),
            what: listener.describe(),
        });
    }
    if let Some(addr) = config.metrics_address {
        // On a loopback address, only loopback clients; elsewhere the administrator chose to
        // publish the figures (never a secret: counts and durations).
        let allow = match addr.ip().is_loopback() {
            true => ["127.0.0.0/8", "::1"],
            false => ["0.0.0.0/0", "::/0"],
        };
        let allow = allow.iter().filter_map(|n| n.parse().ok()).collect();
        plans.push(Plan {
            serves: Serves::Metrics,
            place: Place::Tcp(addr, allow),
            limits: limits(0),
            what: format!("{addr} (metrics_address)"),
        });
    }
    let admin = server::admin::socket_path(&config.run_dir);
    plans.push(Plan {
        serves: Serves::Admin,
        what: admin.display().to_string(),
        place: Place::Path {
            path: admin,
            mode: 0o600,
            owner: None,
            check_dir: false,
        },
        limits: limits(0),
    });
    let socket = config.socket_path();
    let (place, what) = match passed.mux {
        Some(listener) => (
            Place::Passed(listener),
            format!("{}{passed_note}", socket.display()),
        ),
        None => (
            Place::Path {
                path: socket.clone(),
                mode: config.socket_mode,
                owner: None,
                check_dir: false,
            },
            format!("{} (saslauthd)", socket.display()),
        ),
    };
    plans.push(Plan {
        serves: Serves::Saslauthd,
        place,
        limits: limits(config.max_connections),
        what,
    });
    plans
}

/// Gives the admin socket (mode 0600) to the user the daemon becomes (`--user`): the one
/// `saslauthd-rs-ctl` runs as.
fn owned_by(plans: &mut [Plan], identity: &process::Identity) {
    for plan in plans {
        if let (Serves::Admin, Place::Path { owner, .. }) = (plan.serves, &mut plan.place) {
            *owner = Some(Owner::Ids(identity.uid, identity.gid));
        }
    }
}

/// Descriptors beyond the connection budgets: the listeners, the store, inotify, the log,
/// the runtime's own, and room for the file a passdb opens per request.
const FD_RESERVE: u64 = 128;

/// Who the daemon becomes (`--user`), keeping the groups the passdb reads with, checked to
/// be able to read its files.
fn identity(config: &Config, passdb: &dyn Passdb) -> Result<Option<process::Identity>, Error> {
    let Some(user) = &config.user else {
        return Ok(None);
    };
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
    Ok(Some(identity))
}

/// Starts the daemon: everything that can fail with a message on stderr happens before
/// detaching; then privileges are dropped and [`server::Serving`] serves until a signal.
fn start(program: &str, config: &Config) -> Result<ExitCode, Error> {
    process::forbid_core_dumps();
    // Sockets passed by systemd's socket activation are used as they are (their units set
    // path, mode and owner); the others are bound below.
    let passed = systemd::passed_sockets()?;
    let mut plans = plans(config, passed);
    // Each listener has its own connection budget, and the descriptors for all of them (and
    // the files and pipes the daemon itself holds) are there before anything is accepted.
    process::fit_fd_limit(server::budget(&plans) as u64 + FD_RESERVE)?;
    let passdb = open_passdb(config)?;
    let identity = identity(config, &*passdb)?;
    if let Some(identity) = &identity {
        owned_by(&mut plans, identity);
    }
    let tokens = open_tokens(config, &*passdb)?;
    for plan in &plans {
        plan.check()?;
    }
    // The host name, once: the default realm (as Cyrus) and CRAM-MD5's challenges.
    let host = request::host_name().map_err(|e| format!("gethostname: {e}"))?;
    let realms = realm_policy(config, &host);

    server::create_run_dir(&config.run_dir)?;
    let lock = PidLock::acquire(&config.run_dir).map_err(|e| e.to_string())?;
    let sockets = server::bind(plans)?;
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
    for notice in passdb
        .notices()
        .into_iter()
        .chain(tokens.iter().flat_map(|t| t.notices()))
    {
        tracing::warn!("{notice}");
    }
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
    // From here a log line is written by a thread of its own, not the one that logs it.
    log_writer::start();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        runtime.worker_threads(config.threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("saslauthd-rs")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let default_realm = realms.default_realm.clone();
    // In the runtime, so that the shared throttle store starts connecting now.
    let _entered = runtime.enter();
    let auth = Arc::new(Live::new(Arc::new(driver(
        config, passdb, tokens, realms, &host, None,
    )?)));
    let kind = auth.current().passdb_kind();
    runtime.block_on(async {
        tracing::info!(
            "{program} {} (passdb {kind}, realm default {}, threads {})",
            env!("CARGO_PKG_VERSION"),
            Printable(&default_realm),
            tokio::runtime::Handle::current().metrics().num_workers(),
        );
        let serving = server::Serving::start(sockets, &auth)?;
        // Handlers first, then let the signals through: one that came while starting is
        // delivered now, to them.
        let signalled = process::shutdown_signal();
        let hangups = process::reload_signal();
        process::block_termination_signals(false);
        let shutdown = async {
            signalled.await;
            systemd::notify("STOPPING=1");
        };
        // Every socket listens: the service manager may send clients now.
        systemd::notify(&format!("READY=1\nSTATUS=serving (passdb {kind})"));
        tokio::select! {
            () = serving.until(shutdown) => {}
            () = watchdog() => {}
            () = reload_on_hangup(hangups, config, &host, &auth) => {}
        }
        Ok::<_, Error>(())
    })?;
    if let Some(pidfile) = pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    lock.remove();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Tells the service manager the daemon is alive, as often as its unit asks (never without
/// `WatchdogSec=`).
async fn watchdog() {
    let Some(every) = systemd::watchdog_interval() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        systemd::notify("WATCHDOG=1");
    }
}
