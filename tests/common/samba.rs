//! Throwaway Samba AD domain controllers, for Active Directory's LDAP answers: Debian's
//! `samba` daemon (unpacked under target/peers/samba by scripts/test.sh,
//! `SASLAUTHD_RS_SAMBA`, since installing it would start smbd and nmbd) with its installed
//! tools and libraries. Each instance is provisioned by `samba-tool` into a temporary
//! directory and serves only LDAP, on 127.0.0.1:389 (a port Samba does not let one change)
//! of a network namespace of its own, so that no server of the machine's is in the way: the
//! daemons that ask it run there too ([`Samba::enter`]). The unpacked daemon loads its
//! service modules from a directory compiled in (`/usr/lib/x86_64-linux-gnu/samba`): it runs
//! in a private mount namespace where a copy of that directory, with the modules added, is
//! mounted over it. Needs root, `unshare`, `nsenter` and `ip`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub const BASE: &str = "dc=example,dc=org";
pub const USERS: &str = "cn=Users,dc=example,dc=org";
pub const ADMIN: &str = "cn=Administrator,cn=Users,dc=example,dc=org";
pub const ADMIN_PW: &str = "Admin-pw-42!";
/// Samba's LDAP port, fixed.
pub const PORT: u16 = 389;
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/samba";

/// Where the samba daemon is: the unpacked package's root, or the system's.
fn root() -> Option<PathBuf> {
    super::peer_root("SASLAUTHD_RS_SAMBA", "usr/sbin/samba")
}

/// Whether the tests can run: the daemon, samba-tool, unshare, nsenter, ip and root. A
/// missing one fails under SASLAUTHD_RS_REQUIRE_PEERS=1.
pub fn available() -> bool {
    let tools = ["samba-tool", "unshare", "nsenter", "ip"];
    let missing = if root().is_none() || !Path::new(MODULES).is_dir() {
        Some("Samba (the samba daemon unpacked, samba-libs installed)")
    } else if !tools.iter().all(|tool| super::peer(tool).is_some()) {
        Some("samba-tool, unshare, nsenter or ip")
    } else if unsafe { libc::geteuid() } != 0 {
        Some("root, for the private namespaces")
    } else {
        None
    };
    super::peers_for("Samba AD", missing)
}

/// A running Samba AD domain controller.
pub struct Samba {
    child: Option<Child>,
    pub dir: PathBuf,
}

impl Samba {
    /// Provisions a domain (EXAMPLE.ORG) in `dir` (created) with `users` (name, password) in
    /// cn=Users, an account locked out after two wrong passwords, and starts it.
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> Samba {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let d = dir.display();
        let out = Command::new("samba-tool")
            .args([
                "domain",
                "provision",
                "--realm=EXAMPLE.ORG",
                "--domain=EXAMPLE",
            ])
            .args(["--server-role=dc", "--dns-backend=NONE"])
            .arg(format!("--targetdir={d}"))
            .arg(format!("--adminpass={ADMIN_PW}"))
            .args([
                "--option=interfaces = 127.0.0.1",
                "--option=bind interfaces only = yes",
                "--option=server services = ldap",
            ])
            .arg(format!("--option=pid directory = {d}/run"))
            .arg(format!("--option=ncalrpc dir = {d}/run/ncalrpc"))
            .arg(format!("--option=log file = {d}/log.%m"))
            .output()
            .unwrap();
        super::checked(out, "samba-tool domain provision");
        // Simple binds over plain LDAP, as a mail host's saslauthd.conf without TLS makes.
        let conf = dir.join("etc/smb.conf");
        let text = std::fs::read_to_string(&conf).unwrap().replacen(
            "[global]\n",
            "[global]\n\tldap server require strong auth = no\n",
            1,
        );
        std::fs::write(&conf, text).unwrap();
        let mut samba = Samba {
            child: None,
            dir: dir.to_owned(),
        };
        samba.tool(&[
            "domain",
            "passwordsettings",
            "set",
            "--account-lockout-threshold=2",
        ]);
        for (name, password) in users {
            samba.tool(&["user", "create", name, password]);
        }
        samba.launch();
        samba
    }

    /// `samba-tool ARGS` on the domain's database.
    pub fn tool(&self, args: &[&str]) {
        let out = Command::new("samba-tool")
            .args(args)
            .arg("-s")
            .arg(self.dir.join("etc/smb.conf"))
            .arg("-H")
            .arg(self.dir.join("private/sam.ldb"))
            .output()
            .unwrap();
        super::checked(out, &format!("samba-tool {args:?}"));
    }

    fn launch(&mut self) {
        let root = root().unwrap();
        let d = self.dir.display();
        let samba = root.join("usr/sbin/samba");
        let conf = self.dir.join("etc/smb.conf");
        let script = if root == Path::new("/") {
            format!(
                "exec {} -i -s '{}' -M single",
                samba.display(),
                conf.display()
            )
        } else {
            // The installed libraries and the unpacked package's modules, in one directory.
            let lib = self.dir.join("lib");
            std::fs::create_dir_all(&lib).unwrap();
            for from in [PathBuf::from(MODULES), root.join(&MODULES[1..])] {
                let copied = Command::new("cp")
                    .arg("-a")
                    .arg(from.join("."))
                    .arg(&lib)
                    .status()
                    .unwrap();
                assert!(copied.success(), "copying {}", from.display());
            }
            format!(
                "mount --bind '{d}/lib' {MODULES} && exec '{}' -i -s '{}' -M single",
                samba.display(),
                conf.display()
            )
        };
        let log = std::fs::File::create(self.dir.join("samba.out")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "-n", "--propagation", "private", "sh", "-c"])
            .arg(format!("ip link set lo up && {script}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Until unshare has made it, the child's namespace is still the machine's.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let within = Duration::from_secs(30);
        let unshared = super::wait_until(
            within,
            Duration::from_millis(5),
            || std::fs::read_link(self.netns()).is_ok_and(|ns| ns != ours),
            || format!("unshare -n: {}", self.log()),
        );
        super::wait_until(
            within.saturating_sub(unshared),
            Duration::from_millis(20),
            || self.listening(),
            || format!("samba did not listen: {}", self.log()),
        );
    }

    /// The network namespace samba listens in.
    fn netns(&self) -> PathBuf {
        let pid = self.child.as_ref().unwrap().id();
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    }

    /// Whether 127.0.0.1:389 of samba's namespace answers (asked from a thread that joins it).
    fn listening(&self) -> bool {
        let netns = self.netns();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let Ok(ns) = std::fs::File::open(netns) else {
                return false;
            };
            // SAFETY: setns(2) moves only this thread, which ends here, into the namespace
            // of a file descriptor it holds open.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return false;
            }
            std::net::TcpStream::connect(("127.0.0.1", PORT)).is_ok()
        })
        .join()
        .unwrap()
    }

    /// The program and arguments that run a program in samba's network namespace (where
    /// [`Samba::url`] is): `nsenter --net=/proc/PID/ns/net`.
    pub fn enter(&self) -> Vec<OsString> {
        let mut net = OsString::from("--net=");
        net.push(self.netns());
        vec!["nsenter".into(), net]
    }

    /// `ldap://127.0.0.1/`, in samba's network namespace.
    pub fn url(&self) -> String {
        "ldap://127.0.0.1/".into()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("samba.out")).unwrap_or_default()
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        // samba, exec'd by unshare and sh.
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }
}
