//! Throwaway OpenID providers: node's `oidc-provider` (installed by scripts/test.sh into
//! target/peers/oidc, `SASLAUTHD_RS_OIDC`) running tests/oidc/provider.mjs on a loopback port,
//! with keys it makes at start, two clients (`mail-client`, the mail client that gets tokens,
//! and `smtp-server`, which introspects them), introspection and revocation. Tokens are asked
//! for with Python's urllib (the same client for HTTP and HTTPS).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SCRIPT: &str = include_str!("../oidc/provider.mjs");

/// The installed provider's directory (its node_modules), if there is one.
fn root() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SASLAUTHD_RS_OIDC")?);
    dir.join("node_modules/oidc-provider/package.json")
        .exists()
        .then_some(dir)
}

/// What is missing for the provider to run.
pub fn missing() -> Option<&'static str> {
    if super::peer("node").is_none() {
        return Some("node (nodejs)");
    }
    root()
        .is_none()
        .then_some("oidc-provider (SASLAUTHD_RS_OIDC, installed by scripts/test.sh)")
}

/// The script, where node finds oidc-provider from it (beside node_modules); written once
/// per test process, atomically (tests run in parallel).
fn script() -> PathBuf {
    let root = root().expect("oidc-provider installed");
    let path = root.join(format!("provider-{}.mjs", std::process::id()));
    if !path.exists() {
        let tmp = root.join(format!(".provider-{}.tmp", std::process::id()));
        std::fs::write(&tmp, SCRIPT).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A running provider; stopped on drop.
pub struct Provider {
    child: Option<Child>,
    /// A successor with other keys, ready to take the port over ([`Provider::prepare_restart`]).
    next: Option<(Child, PathBuf, String)>,
    /// The running provider's log (each run has its own).
    log: PathBuf,
    runs: u32,
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    /// Its issuer URL (`http://127.0.0.1:PORT`, or https with `tls`).
    pub issuer: String,
    /// The CA that issued its certificate, with TLS.
    pub ca: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
}

impl Provider {
    /// A provider on a free port whose keys' ids begin with `kid_prefix`.
    pub fn start(kid_prefix: &str) -> Provider {
        Provider::launch(super::free_port(), kid_prefix, false)
    }

    /// The same over HTTPS, with a certificate for 127.0.0.1 from a CA of its own.
    pub fn start_tls(kid_prefix: &str) -> Provider {
        Provider::launch(super::free_port(), kid_prefix, true)
    }

    fn launch(port: u16, prefix: &str, tls: bool) -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let (ca, tls) = if tls {
            let (ca, cert, key) = super::pki::certificates(dir.path(), "idp", "IP:127.0.0.1");
            (Some(ca), Some((cert, key)))
        } else {
            (None, None)
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut p = Provider {
            child: None,
            next: None,
            log: PathBuf::new(),
            runs: 0,
            dir,
            port,
            issuer: format!("{scheme}://127.0.0.1:{port}"),
            ca,
            tls,
        };
        p.prepare_restart(prefix);
        p.take_over();
        p
    }

    /// Starts a provider with new keys whose ids begin with `kid_prefix`, and waits until it
    /// has made them: it takes the port over when this one stops ([`Provider::restart`]).
    /// Making the keys takes seconds on a loaded machine; a test that times a restart
    /// prepares it first.
    pub fn prepare_restart(&mut self, kid_prefix: &str) {
        assert!(self.next.is_none(), "a restart is already prepared");
        self.runs += 1;
        let log_path = self.dir.path().join(format!("provider-{}.log", self.runs));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut node = Command::new("node");
        node.arg(script())
            .arg(self.port.to_string())
            .arg(kid_prefix);
        if let Some((cert, key)) = &self.tls {
            node.arg(cert).arg(key);
        }
        let child = node
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("node");
        self.next = Some((child, log_path.clone(), kid_prefix.to_owned()));
        wait_for_line(&log_path, "LOADED");
    }

    /// Stops the running provider (if any) and lets the prepared one take its port.
    fn take_over(&mut self) {
        let (child, log, _) = self.next.take().expect("a prepared restart");
        self.stop();
        self.child = Some(child);
        self.log = log;
        wait_for_line(&self.log, "READY");
    }

    /// What the provider printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (its port stays its own for [`Provider::restart`]).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }

    /// Starts it again on the same port with new keys whose ids begin with `kid_prefix` (the
    /// ones [`Provider::prepare_restart`] made, if it was called with them): a key rotation
    /// (and every token it issued before is forgotten).
    pub fn restart(&mut self, kid_prefix: &str) {
        match &self.next {
            Some((_, _, prepared)) => {
                assert_eq!(prepared, kid_prefix, "the prepared restart's keys")
            }
            None => self.prepare_restart(kid_prefix),
        }
        self.take_over();
    }

    /// POSTs `form` to `path` as `client` (HTTP basic); the answer's status and body.
    pub fn post(&self, path: &str, client: (&str, &str), form: &[(&str, &str)]) -> (u16, String) {
        let program = r#"
import base64, json, ssl, sys, urllib.error, urllib.parse, urllib.request
url, user, secret, ca, form = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode())
request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode())
context = ssl.create_default_context(cafile=ca) if ca else None
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        print(answer.status); print(answer.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;
        let form: serde_json::Map<String, serde_json::Value> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        let out = Command::new("python3")
            .args(["-c", program])
            .arg(format!("{}{path}", self.issuer))
            .arg(client.0)
            .arg(client.1)
            .arg(self.ca.as_deref().map(path_text).unwrap_or_default())
            .arg(serde_json::Value::Object(form).to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, body) = text
            .split_once('\n')
            .unwrap_or_else(|| panic!("python: {text}{}", String::from_utf8_lossy(&out.stderr)));
        (status.trim().parse().unwrap(), body.trim().to_owned())
    }

    /// An access token from the client-credentials grant, for `username`, with `more`
    /// parameters (`alg`, `format`, `ttl`, `resource`).
    pub fn token(&self, username: &str, more: &[(&str, &str)]) -> String {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("scope", "mail"),
            ("username", username),
        ];
        form.extend_from_slice(more);
        let (status, body) = self.post("/token", CLIENT, &form);
        assert_eq!(status, 200, "token: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["access_token"].as_str().unwrap().to_owned()
    }

    /// Revokes a token (RFC 7009).
    pub fn revoke(&self, token: &str) {
        let (status, body) = self.post("/token/revocation", CLIENT, &[("token", token)]);
        assert_eq!(status, 200, "revocation: {body}");
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
        if let Some((child, _, _)) = self.next.take() {
            super::terminate(child);
        }
    }
}

/// Waits until a provider's log has `marker` (30 s at most).
fn wait_for_line(log: &Path, marker: &str) {
    super::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || std::fs::read_to_string(log).is_ok_and(|t| t.contains(marker)),
        || {
            format!(
                "oidc-provider did not print {marker}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
    );
}

/// The mail client that asks for tokens.
pub const CLIENT: (&str, &str) = ("mail-client", "mail-client-secret");
/// The client the daemon introspects tokens as.
pub const SERVER: (&str, &str) = ("smtp-server", "smtp-server-secret");

fn path_text(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}
