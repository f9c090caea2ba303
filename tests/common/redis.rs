//! Throwaway Redis 7 servers (Debian's `redis-tools` holds the server binary, which runs as a
//! server under the name `redis-server`): one on a loopback port, optionally with TLS and a
//! password, a three-node Redis Cluster, a Sentinel watching a server. Each has its own
//! configuration and data in a temporary directory and nothing is saved to disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary (`redis-tools` installs it as redis-check-rdb, and `redis-server` links to it).
const BINARY: &str = "/usr/bin/redis-check-rdb";

/// Whether Redis is installed.
pub fn missing() -> Option<&'static str> {
    (!Path::new(BINARY).exists() || !Path::new("/usr/bin/redis-cli").exists())
        .then_some("Redis (redis-tools)")
}

/// How a server is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `requirepass`.
    pub password: Option<String>,
    /// TLS only (`rediss://`), with a certificate for 127.0.0.1 from a CA of its own.
    pub tls: bool,
    /// More configuration lines.
    pub extra: String,
}

/// A running server.
pub struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
    conf: PathBuf,
    /// Its port.
    pub port: u16,
    /// The CA of its certificate (with `tls`).
    pub ca: Option<PathBuf>,
    options: Options,
}

impl Redis {
    /// A server on a free loopback port.
    pub fn start(options: Options) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        Redis::start_in(dir, port, options)
    }

    fn start_in(dir: tempfile::TempDir, port: u16, options: Options) -> Redis {
        let d = dir.path();
        let mut conf = format!(
            "bind 127.0.0.1\nprotected-mode no\ndir {}\nlogfile {}\nsave \"\"\nappendonly no\n\
             daemonize no\n",
            d.display(),
            d.join("redis.log").display()
        );
        let mut ca = None;
        if options.tls {
            let (ca_pem, cert, key) =
                super::pki::certificates(&d.join("pki"), "redis", "DNS:localhost,IP:127.0.0.1");
            conf += &format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\n",
                cert.display(),
                key.display(),
                ca_pem.display()
            );
            ca = Some(ca_pem);
        } else {
            conf += &format!("port {port}\n");
        }
        if let Some(password) = &options.password {
            conf += &format!("requirepass {password}\n");
        }
        conf += &options.extra;
        let conf_path = d.join("redis.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut redis = Redis {
            dir,
            child: None,
            conf: conf_path,
            port,
            ca,
            options,
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let server = self.dir.path().join("redis-server");
        if !server.exists() {
            std::os::unix::fs::symlink(BINARY, &server).unwrap();
        }
        let child = Command::new(&server)
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        super::wait_for_port(port, Duration::from_secs(10), "redis-server", || self.log());
        if !self.options.tls {
            super::wait_until(
                Duration::from_secs(10),
                Duration::from_millis(20),
                // (NOAUTH: a server whose default user is off answers too.)
                || {
                    let answer = self.cli(&["PING"]);
                    answer.trim() == "PONG" || answer.contains("NOAUTH")
                },
                || format!("redis-server does not answer PING: {}", self.log()),
            );
        }
    }

    /// Its log.
    pub fn log(&self) -> String {
        super::files_text(self.dir.path(), &["redis.log"])
    }

    /// `redis://127.0.0.1:PORT/0` (or `rediss://` with TLS), with the password if any.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        match &self.options.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port),
        }
    }

    /// `redis-cli` against it (not for TLS servers): its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("/usr/bin/redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.options.password {
            command.args(["--no-auth-warning", "-a", pw]);
        }
        let out = command.args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Stops it (SIGTERM; nothing is saved).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-node Redis Cluster (masters only).
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Three nodes, their slots assigned by `redis-cli --cluster create`.
    pub fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                Redis::start(Options {
                    extra: "cluster-enabled yes\ncluster-config-file nodes.conf\n\
                            cluster-node-timeout 5000\n"
                        .into(),
                    ..Options::default()
                })
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("/usr/bin/redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        super::wait_until(
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                nodes
                    .iter()
                    .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            },
            || {
                format!(
                    "the cluster is not ok: {}",
                    nodes[0].cli(&["CLUSTER", "INFO"])
                )
            },
        );
        Cluster { nodes }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

/// A master and a Sentinel that watches it under the name `mymaster`.
pub struct Sentinel {
    /// The master.
    pub master: Redis,
    /// The sentinel (a Redis server in sentinel mode).
    pub sentinel: Redis,
}

impl Sentinel {
    /// The master, then the sentinel.
    pub fn start() -> Sentinel {
        let master = Redis::start(Options::default());
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\nlogfile {}\n\
                 sentinel monitor mymaster 127.0.0.1 {} 1\n",
                dir.path().display(),
                dir.path().join("redis.log").display(),
                master.port
            ),
        )
        .unwrap();
        let server = dir.path().join("redis-server");
        std::os::unix::fs::symlink(BINARY, &server).unwrap();
        let child = Command::new(&server)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server --sentinel");
        let sentinel = Redis {
            dir,
            child: Some(child),
            conf,
            port,
            ca: None,
            options: Options::default(),
        };
        super::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                sentinel
                    .cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
                    .contains(&master.port.to_string())
            },
            || format!("the sentinel does not know its master: {}", sentinel.log()),
        );
        Sentinel { master, sentinel }
    }

    /// `redis+sentinel://127.0.0.1:PORT/mymaster/0`
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/mymaster/0",
            self.sentinel.port
        )
    }
}
