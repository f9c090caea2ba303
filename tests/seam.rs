//! The passdb seam, from outside the crate: a passdb written here, knowing only the
//! `passdb` module's trait, served in-process by `server::run` on both protocols. It answers
//! each of the three ways a passdb can (at once, blocking on the pool, awaiting), breaks in
//! each way one can (an error, a panic, a hang), and the driver treats them alike: the
//! verdict when there is one, the internal-failure reply (saslauthd) or a closed request
//! (Dovecot) otherwise, within the backend deadline, never a success.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use saslauthd_rs::auth::{Authenticator, Live, Options, RealmPolicy};
use saslauthd_rs::client::{self, AuthClient};
use saslauthd_rs::passdb::{Answer, Context, DefaultRealm, Passdb, PassdbError, Query};
use saslauthd_rs::secret::Password;
use saslauthd_rs::server::{self, dovecot::DovecotOptions, Limits, Place, Plan, Serves};
use saslauthd_rs::verdict::{PassdbKind, PassdbResult, Replies};

const KIND: PassdbKind = PassdbKind {
    name: "scripted",
    replies: Replies {
        ok: "scripted ok",
        failure: "scripted failure",
        disabled: "scripted disabled",
        expired: "scripted expired",
        error: "scripted error",
    },
};

/// The deadline the driver gives this passdb.
const DEADLINE: Duration = Duration::from_millis(400);

/// Does what the user's name says; remembers the realms it was asked for.
#[derive(Debug, Default)]
struct Scripted {
    realms: Mutex<Vec<String>>,
}

fn verdict(password: &Password) -> Result<PassdbResult, PassdbError> {
    Ok(match password.matches(b"secret") {
        true => PassdbResult::Ok,
        false => PassdbResult::PasswordMismatch,
    })
}

impl Passdb for Scripted {
    fn kind(&self) -> PassdbKind {
        KIND
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        _: &Context<'_>,
    ) -> Answer<PassdbResult> {
        self.realms
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(q.realm).into_owned());
        match q.authid {
            b"now" => Answer::Now(verdict(&password)),
            b"blocking" => Answer::blocking(move || verdict(&password)),
            b"awaited" => Answer::awaited(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                verdict(&password)
            }),
            b"fails" => Answer::Now(Err(PassdbError::Settings("broken on purpose".into()))),
            b"panics-blocking" => Answer::blocking(|| panic!("a module broke")),
            b"panics-awaited" => Answer::awaited(async { panic!("a module broke") }),
            // Would say yes, too late: the deadline must win.
            b"hangs-blocking" => Answer::blocking(|| {
                std::thread::sleep(Duration::from_secs(3));
                Ok(PassdbResult::Ok)
            }),
            b"hangs-awaited" => Answer::awaited(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(PassdbResult::Ok)
            }),
            _ => Answer::Now(Ok(PassdbResult::UserUnknown)),
        }
    }

    fn default_realm(&self) -> DefaultRealm {
        DefaultRealm::Own(Some(b"own.example".to_vec()))
    }
}

struct Served {
    dir: tempfile::TempDir,
    passdb: Arc<Scripted>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
    done: Option<tokio::task::JoinHandle<Result<(), server::ServingError>>>,
}

impl Served {
    /// What a start needs: a directory with the two sockets bound in it, the scripted
    /// passdb, and the driver over it.
    fn parts() -> (tempfile::TempDir, Arc<Scripted>, server::Sockets, Arc<Live>) {
        let dir = tempfile::tempdir().unwrap();
        let passdb = Arc::new(Scripted::default());
        let plan = |serves, name: &str| Plan {
            serves,
            place: Place::Path {
                path: dir.path().join(name),
                mode: 0o600,
                owner: None,
                check_dir: true,
            },
            limits: Limits::default(),
            what: name.into(),
        };
        let sockets = server::bind(vec![
            plan(Serves::Dovecot(DovecotOptions::default()), "auth"),
            plan(Serves::Saslauthd, "mux"),
        ])
        .unwrap();
        let auth = Authenticator::new(
            Arc::clone(&passdb) as Arc<dyn Passdb>,
            RealmPolicy {
                default_realm: b"daemon.example".to_vec(),
                named: true,
                combine: false,
            },
            Options {
                workers: 2,
                throttle: saslauthd_rs::auth::Throttle::local(Duration::ZERO),
                scram_iterations: 4096,
                host_name: "test.host".into(),
                cache: None,
                mechanisms: None,
                metrics: true,
                backend_timeout: DEADLINE,
                tokens: None,
            },
        )
        .unwrap();
        let live = Arc::new(Live::new(Arc::new(auth)));
        (dir, passdb, sockets, live)
    }

    fn start() -> Served {
        let (dir, passdb, sockets, live) = Served::parts();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = runtime.spawn(server::run(sockets, live, async {
            let _ = stopped.await;
        }));
        Served {
            dir,
            passdb,
            stop: Some(stop),
            runtime,
            done: Some(done),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One saslauthd request: the reply, and how long it took.
    fn saslauthd(&self, login: &str, password: &str, realm: &str) -> (String, Duration) {
        let started = Instant::now();
        let q = client::Query {
            login: login.as_bytes(),
            password: password.as_bytes(),
            service: b"smtp",
            realm: realm.as_bytes(),
            client_addr: None,
        };
        let reply = client::query(&self.path("mux"), &q, Duration::from_secs(10)).unwrap();
        (String::from_utf8(reply).unwrap(), started.elapsed())
    }

    /// One Dovecot PLAIN login on a connection of its own, as Postfix sends it: the answer
    /// line (empty when the server closed the connection), and how long it took.
    fn dovecot(&self, user: &str, password: &str) -> (String, Duration) {
        let mut c = AuthClient::connect(&self.path("auth"), Duration::from_secs(10)).unwrap();
        c.send("VERSION\t1\t2\nCPID\t4242\n").unwrap();
        let started = Instant::now();
        let resp = B64.encode(format!("\0{user}\0{password}"));
        c.send(&format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={resp}\n"))
            .unwrap();
        let line = c.line().unwrap_or_default();
        (line, started.elapsed())
    }

    /// Stops the server: the sockets it bound are gone afterwards.
    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let done = self.done.take().unwrap();
        let served = self.runtime.block_on(done).unwrap();
        assert!(served.is_ok(), "{served:?}");
        assert!(!self.path("mux").exists(), "the mux socket is removed");
        assert!(!self.path("auth").exists(), "the Dovecot socket is removed");
    }
}

#[test]
fn every_way_a_passdb_answers_through_both_protocols() {
    let served = Served::start();
    for user in ["now", "blocking", "awaited"] {
        assert_eq!(
            served.saslauthd(user, "secret", "").0,
            "OK scripted ok",
            "{user}"
        );
        assert_eq!(
            served.saslauthd(user, "wrong", "").0,
            "NO scripted failure",
            "{user}"
        );
        assert_eq!(
            served.dovecot(user, "secret").0,
            format!("OK\t1\tuser={user}\n")
        );
        assert_eq!(
            served.dovecot(user, "wrong").0,
            format!("FAIL\t1\tuser={user}\n")
        );
    }
    assert_eq!(
        served.saslauthd("nobody", "secret", "").0,
        "NO scripted failure"
    );
    // The realm rule, written once: the passdb's own default for an empty realm, the
    // request's own otherwise.
    served.saslauthd("now", "secret", "given.example");
    let realms = served.passdb.realms.lock().unwrap().clone();
    assert_eq!(realms[0], "own.example");
    assert_eq!(realms.last().unwrap(), "given.example");
    served.stop();
}

#[test]
fn an_error_a_panic_and_a_hang_are_internal_failures_within_the_deadline() {
    let served = Served::start();
    for user in [
        "fails",
        "panics-blocking",
        "panics-awaited",
        "hangs-blocking",
        "hangs-awaited",
    ] {
        let (reply, took) = served.saslauthd(user, "secret", "");
        // The passdb's own text for a backend that broke (Cyrus's `internal mechanism
        // failure` for most).
        assert_eq!(reply, "NO scripted error", "{user}");
        assert!(took < DEADLINE + Duration::from_secs(2), "{user}: {took:?}");
        // Dovecot: the request is closed (Postfix answers 454), never an OK.
        let (line, took) = served.dovecot(user, "secret");
        assert_eq!(line, "", "{user}");
        assert!(took < DEADLINE + Duration::from_secs(2), "{user}: {took:?}");
    }
    // The hangs took the deadline, not their own time; the server still answers.
    let (reply, _) = served.saslauthd("now", "secret", "");
    assert_eq!(reply, "OK scripted ok");
    served.stop();
}

#[test]
fn the_mux_socket_is_bound_last_and_a_failed_bind_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("taken");
    std::fs::write(&blocker, "not a socket").unwrap();
    let plan = |path: &Path| Plan {
        serves: Serves::Saslauthd,
        place: Place::Path {
            path: path.to_owned(),
            mode: 0o600,
            owner: None,
            check_dir: true,
        },
        limits: Limits::default(),
        what: path.display().to_string(),
    };
    let first = dir.path().join("first");
    let err = server::bind(vec![plan(&first), plan(&blocker)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert!(
        !first.exists(),
        "the socket bound before the failure is removed"
    );
    assert_eq!(std::fs::read(&blocker).unwrap(), b"not a socket");
}

/// A scrape right after the start (the admin socket may answer before any accept loop has
/// run) already has each protocol listener's series, at zero.
#[test]
fn listener_series_exist_before_any_accept_loop_runs() {
    let (dir, _passdb, sockets, live) = Served::parts();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let serving = server::Serving::start(sockets, &live).unwrap();
        // No await since the start: on this one-thread runtime no accept loop has run.
        let text = live.current().metrics().encode();
        for (protocol, name) in [("saslauthd", "mux"), ("dovecot", "auth")] {
            let series = format!(
                "connections_open{{protocol=\"{protocol}\",listener=\"{}\"}} 0",
                dir.path().join(name).display()
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
        serving.until(std::future::ready(())).await;
    });
}
