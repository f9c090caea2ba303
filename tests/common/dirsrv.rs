//! Throwaway 389 Directory Servers for the tests: Debian's `389-ds-base`, one instance per
//! test made by its own `dscreate` with every path in a temporary directory. dscreate and
//! ns-slapd look for instances under `/etc/dirsrv` and read `/usr/share/dirsrv/inf/defaults.inf`
//! (which says systemd runs them), both compiled in: they run in a private mount namespace
//! where a copy of each, in the temporary directory, is mounted over the original. Nothing of
//! the machine's own `/etc/dirsrv` is written. Needs root (the namespace) and `unshare`.
//!
//! The tree is the OpenLDAP tests' one ([`super::ldap::SUFFIX`], its people and its
//! searcher), so the same saslauthd.conf serves both servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::ldap::{user_ldif, PEOPLE, SEARCHER, SEARCHER_PW, SUFFIX};

const DSCREATE: &str = "/usr/sbin/dscreate";
const NS_SLAPD: &str = "/usr/sbin/ns-slapd";
const DEFAULTS: &str = "/usr/share/dirsrv/inf/defaults.inf";
/// The Directory Manager's password (dscreate asks for 8 characters or more).
const MANAGER_PW: &str = "manager-pw-389";
const MANAGER: &str = "cn=Directory Manager";
const INSTANCE: &str = "saslauthd-test";

/// Whether the tests can run: 389-ds-base, ldap-utils, unshare and root. A missing one
/// fails under SASLAUTHD_RS_REQUIRE_PEERS=1.
pub fn available() -> bool {
    let missing = if !Path::new(NS_SLAPD).exists() || !Path::new(DSCREATE).exists() {
        Some("389-ds-base (ns-slapd, dscreate)")
    } else if super::peer("ldapadd").is_none() || super::peer("unshare").is_none() {
        Some("ldap-utils or unshare")
    } else if unsafe { libc::geteuid() } != 0 {
        Some("root, for the private mount namespace")
    } else {
        None
    };
    super::peers_for("389 Directory Server", missing)
}

/// A running 389 Directory Server.
pub struct DirSrv {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
}

/// `sh -c SCRIPT` in a private mount namespace where `etc` is `/etc/dirsrv`.
fn in_namespace(etc: &Path, script: &str) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' /etc/dirsrv && {script}",
            etc.display()
        ));
    command
}

impl DirSrv {
    /// Creates an instance in `dir` (created; its parent must be a directory of the test's
    /// own) with the people, the searcher (allowed to search the people) and `users`
    /// (uid, userPassword, mail), and starts it on a 127.0.0.1 port.
    pub fn start(dir: &Path, users: &[(&str, &str, &str)]) -> DirSrv {
        let (port, secure_port) = (super::free_port(), super::free_port());
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        // The package's shared config and schema, which dscreate copies from /etc/dirsrv.
        let copied = Command::new("cp")
            .args(["-a", "/etc/dirsrv/config", "/etc/dirsrv/schema"])
            .arg(&etc)
            .status()
            .unwrap();
        assert!(copied.success(), "copying /etc/dirsrv");
        let run = dir.join("run");
        let defaults = std::fs::read_to_string(DEFAULTS).unwrap();
        let defaults: String = defaults
            .lines()
            .map(|line| match line.split('=').next().map(str::trim) {
                Some("with_systemd") => "with_systemd = 0".to_owned(),
                Some("run_dir") => format!("run_dir = {}", run.display()),
                Some("pid_file") => format!("pid_file = {}/{INSTANCE}.pid", run.display()),
                _ => line.to_owned(),
            })
            .map(|line| line + "\n")
            .collect();
        std::fs::write(dir.join("defaults.inf"), defaults).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("instance.inf"),
            format!(
                "[general]\nfull_machine_name = localhost\nselinux = False\nsystemd = False\n\
                 start = False\nstrict_host_checking = False\n\
                 [slapd]\ninstance_name = {INSTANCE}\nport = {port}\nsecure_port = {secure_port}\n\
                 self_sign_cert = False\nroot_password = {MANAGER_PW}\n\
                 backup_dir = {d}/bak\ndb_dir = {d}/db\ndb_home_dir = {d}/dbhome\n\
                 initconfig_dir = {d}/default\nldapi = {d}/ldapi\nldif_dir = {d}/ldif\n\
                 lock_dir = {d}/lock\nlog_dir = {d}/log\nrun_dir = {d}/run\ntmp_dir = {d}/tmp\n\
                 [backend-userroot]\nsuffix = {SUFFIX}\ncreate_suffix_entry = True\n\
                 sample_entries = no\n"
            ),
        )
        .unwrap();
        // ns-slapd runs as dirsrv: the directory and the way to it are its own to enter.
        let chown = Command::new("chown")
            .args(["-R", "dirsrv:dirsrv"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(chown.success(), "chown dirsrv");
        if let Some(parent) = dir.parent() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let out = in_namespace(
            &etc,
            &format!(
                "mount --bind '{d}/defaults.inf' {DEFAULTS} && exec {DSCREATE} from-file '{d}/instance.inf'"
            ),
        )
        .output()
        .unwrap();
        super::checked(out, "dscreate");
        let mut server = DirSrv {
            child: None,
            dir: dir.to_owned(),
            port,
        };
        server.launch();
        // 389 DS lets nobody read an entry without an ACI: the searcher may read the people.
        let mut ldif = format!(
            "dn: {SEARCHER}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\n\
             cn: saslauthd\nuserPassword: {SEARCHER_PW}\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\
             aci: (targetattr=\"uid || mail || cn || objectClass\")(version 3.0; acl \"saslauthd searches\"; \
             allow (read, search, compare) userdn=\"ldap:///{SEARCHER}\";)\n\n"
        );
        for (uid, password, mail) in users {
            ldif += &user_ldif(uid, password, mail);
        }
        server.ldif("ldapadd", &ldif);
        // The access log written as it happens, for binds_as.
        server.modify(
            "dn: cn=config\nchangetype: modify\n\
             replace: nsslapd-accesslog-logbuffering\nnsslapd-accesslog-logbuffering: off\n",
        );
        server
    }

    /// Starts ns-slapd on the instance and waits until it listens.
    fn launch(&mut self) {
        let d = self.dir.display();
        let log = std::fs::File::create(self.dir.join("ns-slapd.out")).unwrap();
        // -d 0: in the foreground, the test's child, stopped when it is dropped.
        let child = in_namespace(
            &self.dir.join("etc"),
            &format!(
                "exec {NS_SLAPD} -D /etc/dirsrv/slapd-{INSTANCE} -i '{d}/run/{INSTANCE}.pid' -d 0"
            ),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
        self.child = Some(child);
        super::wait_for_port(self.port, Duration::from_secs(30), "ns-slapd", || {
            self.log()
        });
    }

    /// Stops ns-slapd (exec'd by unshare and sh).
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }

    /// Turns on the Content Synchronization plugin (RFC 4533) and the retro changelog it
    /// reads, for the whole suffix, and restarts the server: it offers its changes.
    pub fn with_content_sync(mut self) -> DirSrv {
        self.modify(&format!(
            "dn: cn=Retro Changelog Plugin,cn=plugins,cn=config\nchangetype: modify\n\
             replace: nsslapd-pluginEnabled\nnsslapd-pluginEnabled: on\n-\n\
             replace: nsslapd-attribute\nnsslapd-attribute: nsuniqueid:targetUniqueId\n-\n\
             replace: nsslapd-include-suffix\nnsslapd-include-suffix: {SUFFIX}\n\n\
             dn: cn=Content Synchronization,cn=plugins,cn=config\nchangetype: modify\n\
             replace: nsslapd-pluginEnabled\nnsslapd-pluginEnabled: on\n"
        ));
        self.stop();
        self.launch();
        self
    }

    /// `ldap://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }

    /// ldapmodify as the Directory Manager (`changetype:` records).
    pub fn modify(&self, ldif: &str) {
        self.ldif("ldapmodify", ldif);
    }

    fn ldif(&self, program: &str, ldif: &str) {
        super::ldap::ldif_as(program, &self.url(), MANAGER, MANAGER_PW, ldif);
    }

    /// How many binds as `dn` the access log shows.
    pub fn binds_as(&self, dn: &str) -> usize {
        std::fs::read_to_string(self.dir.join("log/access"))
            .unwrap_or_default()
            .matches(&format!("BIND dn=\"{dn}\" method="))
            .count()
    }

    /// The server's errors log and its own output.
    pub fn log(&self) -> String {
        let errors = std::fs::read_to_string(self.dir.join("log/errors")).unwrap_or_default();
        let out = std::fs::read_to_string(self.dir.join("ns-slapd.out")).unwrap_or_default();
        format!("{errors}{out}")
    }
}

impl Drop for DirSrv {
    fn drop(&mut self) {
        self.stop();
    }
}
