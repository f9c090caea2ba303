//! The IMAP passdb (`-a rimap -O host/port`), after Cyrus's `auth_rimap.c`: a password is
//! right when an IMAP server takes it in a `LOGIN`. The same `-O`, realm rule (ignored, but
//! `-r` sends `user@realm`) and reply texts as Cyrus (`OK remote authentication successful`,
//! `NO remote server rejected your credentials`, `NO [ALERT] ...` when the server cannot be
//! used).
//!
//! Unlike Cyrus:
//! - a password or login with CR, LF or 8-bit bytes goes as an IMAP literal (Cyrus sends them
//!   raw inside its quotes, so that a password with CR LF carries a second command), and one
//!   with a NUL is refused without asking the server (Cyrus cuts it there);
//! - `--rimap-tls starttls|imaps` (certificates and names checked by rustls against
//!   `--rimap-ca` or the system's CAs; no password before TLS), and a server that says
//!   `LOGINDISABLED` is never sent a password in the clear;
//! - deadlines on the connection, the greeting and the reply, the whole check within the
//!   daemon's reply deadline (Cyrus waits 30 s per read, with no connect timeout), several
//!   hosts in `-O` tried in order, a failed one skipped and probed, and names resolved per
//!   connection, so that one that does not resolve at start does not stop the start;
//! - a strict reader of responses ([`imap`]): what is not IMAP is a temporary failure, never a
//!   success; a `NO` with `[UNAVAILABLE]`, `[SERVERBUG]` or `[PRIVACYREQUIRED]` (RFC 5530: the
//!   server, not the password) is one too.

mod imap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use self::imap::{Response, Status};
use super::failover::Servers;
use super::{Answer, CacheUse, Context, Module, Passdb, PassdbError, Query, Settings};
use crate::request::Printable;
use crate::secret::Password;
use crate::verdict::{PassdbKind, PassdbResult, Replies};

pub(crate) use imap::{login as fuzz_login, parse as fuzz_parse_response};

/// `-a rimap`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "rimap",
        replies: Replies {
            ok: "remote authentication successful",
            failure: "remote server rejected your credentials",
            disabled: "",
            expired: "",
            error: alert::INTERNAL,
        },
    },
    about: Some(
        "an IMAP server's LOGIN, as Cyrus's auth_rimap (-O host/port; several hosts fail over; \
         --rimap-tls starttls|imaps)",
    ),
    open: |settings| Ok(Arc::new(Rimap::new(settings)?)),
    table: None,
};

/// How long connecting to one host may take (its name resolved included).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a greeting, a TLS handshake or STARTTLS's answer may take.
const STEP_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a whole check may take, every host tried included: inside the daemon's backend
/// deadline (4 s), so that the reply comes with Cyrus's texts. The `LOGIN` reply may take
/// what is left (an IMAP server delays a failure: Dovecot's `auth_failure_delay` is 2 s).
const CHECK_TIMEOUT: Duration = Duration::from_millis(3800);

/// Cyrus's texts for a server that cannot be used (after `NO `).
mod alert {
    pub(super) const CONTACT: &str = "[ALERT] Couldn't contact remote authentication server";
    pub(super) const UNAVAILABLE: &str =
        "[ALERT] The remote authentication server is currently unavailable";
    pub(super) const UNEXPECTED: &str =
        "[ALERT] Unexpected response from remote authentication server";
    pub(super) const SYNC: &str = "[ALERT] error synchronizing with remote authentication server";
    pub(super) const INTERNAL: &str = "[ALERT] saslauthd internal error";
}

/// `--rimap-tls`: how the connection to the IMAP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RimapTls {
    /// None, as Cyrus's.
    #[default]
    Off,
    /// `STARTTLS` after the greeting; no password before it succeeds.
    StartTls,
    /// TLS from the first byte (port 993).
    Imaps,
}

impl RimapTls {
    /// The name the setting takes.
    pub fn name(self) -> &'static str {
        match self {
            RimapTls::Off => "off",
            RimapTls::StartTls => "starttls",
            RimapTls::Imaps => "imaps",
        }
    }
}

impl std::str::FromStr for RimapTls {
    type Err = UnknownRimapTls;

    fn from_str(s: &str) -> Result<RimapTls, UnknownRimapTls> {
        [RimapTls::Off, RimapTls::StartTls, RimapTls::Imaps]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownRimapTls(s.to_owned()))
    }
}

/// A `rimap_tls` value that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected starttls, imaps or off")]
pub struct UnknownRimapTls(String);

/// A host of `-O`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    /// The name or address, as given (an IPv6 address without its brackets).
    name: String,
    port: u16,
}

impl Host {
    /// `host`, `host/port` (Cyrus), `host:port`, `[v6]:port`, `[v6]/port` or a bare IPv6
    /// address; the port a number or `imap`/`imaps`; the default is `default_port`.
    fn parse(text: &str, default_port: u16) -> Result<Host, BadHost> {
        let bad = |why: &'static str| BadHost {
            text: text.to_owned(),
            why,
        };
        let (name, port) = if let Some(rest) = text.strip_prefix('[') {
            let (name, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("no ] after the address"))?;
            match after {
                "" => (name, None),
                _ => (
                    name,
                    Some(
                        after
                            .strip_prefix([':', '/'])
                            .ok_or_else(|| bad("expected :port or /port after the address"))?,
                    ),
                ),
            }
        } else if let Some((name, port)) = text.split_once('/') {
            (name, Some(port))
        } else if text.matches(':').count() == 1 {
            let (name, port) = text.split_once(':').unwrap_or((text, ""));
            (name, Some(port))
        } else {
            (text, None)
        };
        if name.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => default_port,
            Some("imap" | "imap2") => 143,
            Some("imaps") => 993,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(bad(
                        "the port is not a number from 1 to 65535, imap or imaps",
                    ))
                }
            },
        };
        Ok(Host {
            name: name.to_owned(),
            port,
        })
    }

    /// As the log and `-O` show it: `host/port`.
    fn label(&self) -> String {
        format!("{}/{}", self.name, self.port)
    }
}

/// An `-O` that names no host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("-O {text:?}: {why}")]
struct BadHost {
    text: String,
    why: &'static str,
}

/// What the passdb needs to reach its servers; shared with the probes.
struct Reach {
    hosts: Vec<Host>,
    tls: RimapTls,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach")
            .field("hosts", &self.hosts)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// The IMAP passdb.
#[derive(Debug)]
pub(super) struct Rimap {
    reach: Arc<Reach>,
    servers: Servers,
}

/// A connection, plain or in TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a server could not answer: Cyrus's text for it, and what the log says.
#[derive(Debug)]
struct Trouble {
    alert: &'static str,
    detail: String,
}

fn trouble(alert: &'static str, detail: impl Into<String>) -> Trouble {
    Trouble {
        alert,
        detail: detail.into(),
    }
}

/// How an attempt on one server ended without a verdict.
enum Failure {
    /// Before the password was sent: the server is marked dead and the next one tried.
    Server(Trouble),
    /// After: the answer is a temporary failure.
    Answer(Trouble),
}

impl Rimap {
    fn new(settings: &Settings) -> Result<Rimap, PassdbError> {
        let default_port = match settings.rimap_tls {
            RimapTls::Imaps => 993,
            _ => 143,
        };
        let hosts = settings
            .options
            .iter()
            .flat_map(|o| o.split([' ', ',', '\t']))
            .filter(|o| !o.is_empty())
            .map(|o| Host::parse(o, default_port))
            .collect::<Result<Vec<Host>, BadHost>>()
            .map_err(|e| PassdbError::Settings(e.to_string()))?;
        if hosts.is_empty() {
            return Err(PassdbError::Settings(
                "-a rimap needs the IMAP server: -O host or -O host/port (Cyrus: \
                 \"rimap_init: no hostname specified\")"
                    .into(),
            ));
        }
        let connector = match settings.rimap_tls {
            RimapTls::Off => None,
            _ => Some(connector(settings.rimap_ca.as_ref())?),
        };
        let servers = Servers::new("IMAP server", hosts.iter().map(Host::label));
        Ok(Rimap {
            reach: Arc::new(Reach {
                hosts,
                tls: settings.rimap_tls,
                connector,
            }),
            servers,
        })
    }

    /// Asks the servers in order until one answers the LOGIN.
    async fn check(&self, user: &[u8], password: &[u8]) -> Result<PassdbResult, PassdbError> {
        let until = Instant::now() + CHECK_TIMEOUT;
        let mut last = None;
        for i in self.servers.order() {
            if Instant::now() >= until {
                break;
            }
            let host = &self.reach.hosts[i];
            match self.reach.login(host, user, password, until).await {
                Ok(result) => return Ok(result),
                Err(Failure::Server(t)) => {
                    let reach = Arc::clone(&self.reach);
                    self.servers.mark_dead(i, &t.detail, move |_| {
                        let reach = Arc::clone(&reach);
                        async move { reach.probe(i).await }
                    });
                    last = Some((i, t));
                }
                Err(Failure::Answer(t)) => return Err(self.error(i, t)),
            }
        }
        let (i, t) = last.unwrap_or((
            0,
            trouble(
                alert::CONTACT,
                format!("no answer within {CHECK_TIMEOUT:?} from any of them"),
            ),
        ));
        let t = Trouble {
            detail: format!(
                "{} (no IMAP server could be used: {})",
                t.detail,
                self.servers.names()
            ),
            ..t
        };
        Err(self.error(i, t))
    }

    fn error(&self, i: usize, t: Trouble) -> PassdbError {
        PassdbError::Imap {
            server: self.servers.get(i).name.clone(),
            alert: t.alert,
            message: t.detail,
        }
    }
}

impl Reach {
    /// One LOGIN on `host`, all of it before `until`.
    async fn login(
        &self,
        host: &Host,
        user: &[u8],
        password: &[u8],
        until: Instant,
    ) -> Result<PassdbResult, Failure> {
        let (mut conn, caps) = self.open(host, until).await.map_err(Failure::Server)?;
        if self.tls == RimapTls::Off && imap::has(&caps, "LOGINDISABLED") {
            return Err(Failure::Server(trouble(
                alert::UNAVAILABLE,
                "the server takes no LOGIN without TLS (LOGINDISABLED); \
                 --rimap-tls starttls or imaps protects the password",
            )));
        }
        let literal_plus = imap::has(&caps, "LITERAL+") || imap::has(&caps, "LITERAL-");
        let pieces = imap::login(user, password, literal_plus)
            .ok_or_else(|| Failure::Answer(trouble(alert::INTERNAL, "a NUL in the login")))?;
        for (n, piece) in pieces.iter().enumerate() {
            if n > 0 {
                // The server must ask for the literal before it is sent.
                match conn
                    .next(until)
                    .await
                    .map_err(|t| Failure::Answer(t.after()))?
                {
                    Line::Continue => {}
                    Line::Tagged { status, text, .. } if status != Status::Ok => {
                        tracing::debug!(
                            "IMAP {}: LOGIN refused before its literal: {text}",
                            host.label()
                        );
                        return Ok(PassdbResult::PasswordMismatch);
                    }
                    other => {
                        return Err(Failure::Answer(trouble(
                            alert::UNEXPECTED,
                            format!("answered a literal with {other:?}"),
                        )))
                    }
                }
            }
            conn.send(piece, until)
                .await
                .map_err(|t| Failure::Answer(t.after()))?;
        }
        loop {
            match conn
                .next(until)
                .await
                .map_err(|t| Failure::Answer(t.after()))?
            {
                Line::Tagged { status, code, text } => {
                    return verdict(status, code.as_deref(), &text, host);
                }
                Line::Status {
                    status: Status::Bye,
                    text,
                    ..
                } => {
                    return Err(Failure::Answer(trouble(
                        alert::UNAVAILABLE,
                        format!("said BYE to LOGIN: {text}"),
                    )))
                }
                Line::Status { .. } | Line::Data => {}
                Line::Continue => {
                    return Err(Failure::Answer(trouble(
                        alert::UNEXPECTED,
                        "asked for a literal nobody announced",
                    )))
                }
            }
        }
    }

    /// A connection to `host` past its greeting (and TLS when configured), with the
    /// capabilities the server said it has (none known after STARTTLS).
    async fn open(&self, host: &Host, until: Instant) -> Result<(Conn, Vec<String>), Trouble> {
        let step = |limit: Duration| until.min(Instant::now() + limit);
        let tcp = tokio::time::timeout_at(step(CONNECT_TIMEOUT).into(), connect(host))
            .await
            .map_err(|_| {
                trouble(
                    alert::CONTACT,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                )
            })??;
        let _ = tcp.set_nodelay(true);
        let mut conn = match (self.tls, &self.connector) {
            (RimapTls::Imaps, Some(tls)) => {
                Conn::new(handshake(tls, host, tcp, step(STEP_TIMEOUT)).await?)
            }
            _ => Conn::new(Box::new(tcp)),
        };
        let greeting = conn.next(step(STEP_TIMEOUT)).await?;
        let caps = match greeting {
            Line::Status {
                status: Status::Ok,
                caps,
                ..
            } => caps,
            Line::Status {
                status: Status::No | Status::Bye,
                text,
                ..
            } => {
                return Err(trouble(
                    alert::UNAVAILABLE,
                    format!("greeted with NO or BYE: {text}"),
                ))
            }
            other => {
                return Err(trouble(
                    alert::UNEXPECTED,
                    format!("greeted with {other:?}"),
                ))
            }
        };
        if self.tls != RimapTls::StartTls {
            return Ok((conn, caps));
        }
        let Some(tls) = &self.connector else {
            return Ok((conn, caps));
        };
        conn.send(&imap::starttls(), step(STEP_TIMEOUT)).await?;
        loop {
            match conn.next(step(STEP_TIMEOUT)).await? {
                Line::Tagged {
                    status: Status::Ok, ..
                } => break,
                Line::Tagged { text, .. } => {
                    return Err(trouble(
                        alert::UNAVAILABLE,
                        format!("refused STARTTLS: {text} (--rimap-tls starttls needs it)"),
                    ))
                }
                Line::Status { .. } | Line::Data => {}
                Line::Continue => {
                    return Err(trouble(alert::UNEXPECTED, "answered STARTTLS with +"))
                }
            }
        }
        // Whatever came after STARTTLS's OK and before the handshake would be taken as said
        // inside TLS: refused (CVE-2011-0411's kind of injection).
        if !conn.buf.is_empty() {
            return Err(trouble(
                alert::UNEXPECTED,
                "sent data after STARTTLS's OK, before TLS",
            ));
        }
        let tcp = conn.into_inner();
        let stream = handshake(tls, host, tcp, step(STEP_TIMEOUT)).await?;
        Ok((Conn::new(stream), Vec::new()))
    }

    /// Whether host `i` greets (the probe of a dead one).
    async fn probe(&self, i: usize) -> bool {
        let host = &self.hosts[i];
        let until = Instant::now() + CONNECT_TIMEOUT + STEP_TIMEOUT * 2;
        self.open(host, until).await.is_ok()
    }
}

/// Tells a verdict from a tagged answer to LOGIN.
fn verdict(
    status: Status,
    code: Option<&str>,
    text: &str,
    host: &Host,
) -> Result<PassdbResult, Failure> {
    let code_word = code
        .and_then(|c| c.split(' ').next())
        .unwrap_or_default()
        .to_ascii_uppercase();
    match status {
        Status::Ok => Ok(PassdbResult::Ok),
        // RFC 5530: the server, not the password.
        Status::No
            if matches!(
                code_word.as_str(),
                "UNAVAILABLE" | "SERVERBUG" | "PRIVACYREQUIRED"
            ) =>
        {
            Err(Failure::Answer(trouble(
                alert::UNAVAILABLE,
                format!("answered LOGIN with NO [{code_word}] {text}"),
            )))
        }
        Status::No => {
            tracing::debug!("IMAP {}: LOGIN refused: {text}", host.label());
            Ok(PassdbResult::PasswordMismatch)
        }
        _ => Err(Failure::Answer(trouble(
            alert::UNEXPECTED,
            format!("answered LOGIN with BAD: {text}"),
        ))),
    }
}

impl Trouble {
    /// The same trouble, once the password was sent: a broken read is Cyrus's internal
    /// error there.
    fn after(self) -> Trouble {
        match self.alert {
            alert::SYNC => Trouble {
                alert: alert::INTERNAL,
                ..self
            },
            _ => self,
        }
    }
}

/// A connection to `host`: each of its addresses in turn.
async fn connect(host: &Host) -> Result<TcpStream, Trouble> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.name.as_str(), host.port))
        .await
        .map_err(|e| trouble(alert::CONTACT, format!("cannot resolve {}: {e}", host.name)))?
        .collect();
    let mut last = format!("{} has no address", host.name);
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    Err(trouble(alert::CONTACT, last))
}

/// TLS over `io` (a fresh connection, or one past STARTTLS), the server's certificate
/// checked for `host`'s name.
async fn handshake(
    tls: &tokio_rustls::TlsConnector,
    host: &Host,
    io: impl Stream + 'static,
    until: Instant,
) -> Result<Box<dyn Stream>, Trouble> {
    let name = rustls::pki_types::ServerName::try_from(host.name.clone()).map_err(|e| {
        trouble(
            alert::CONTACT,
            format!("{}: not a name TLS can check: {e}", host.name),
        )
    })?;
    let stream = tokio::time::timeout_at(until.into(), tls.connect(name, io))
        .await
        .map_err(|_| trouble(alert::CONTACT, "no TLS handshake in time"))?
        .map_err(|e| trouble(alert::CONTACT, format!("TLS: {e}")))?;
    Ok(Box::new(stream))
}

/// The TLS client: `--rimap-ca`'s certificates, or the system's.
fn connector(ca: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, PassdbError> {
    let bad = |e: &dyn std::fmt::Display| PassdbError::Settings(format!("rimap_ca: {e}"));
    let files: Vec<PathBuf> = ca.into_iter().cloned().collect();
    let roots = super::tls::roots(&files).map_err(|e| bad(&e))?;
    if roots.is_empty() {
        return Err(bad(&"no CA certificate to check the IMAP server with"));
    }
    let config = super::tls::builder()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A response line, owned.
#[derive(Debug)]
enum Line {
    Status {
        status: Status,
        caps: Vec<String>,
        text: String,
    },
    Data,
    Continue,
    Tagged {
        status: Status,
        code: Option<String>,
        text: String,
    },
}

/// A connection and what was read from it but not yet parsed.
struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: Box<dyn Stream>) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(512),
        }
    }

    fn into_inner(self) -> Box<dyn Stream> {
        self.stream
    }

    /// Sends `bytes`; a failure is the server's (after the password: see
    /// [`Trouble::after`]).
    async fn send(&mut self, bytes: &[u8], until: Instant) -> Result<(), Trouble> {
        match tokio::time::timeout_at(until.into(), self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(trouble(alert::SYNC, format!("write: {e}"))),
            Err(_) => Err(trouble(alert::SYNC, "write: no progress in time")),
        }
    }

    /// The next response, read by `until`.
    async fn next(&mut self, until: Instant) -> Result<Line, Trouble> {
        loop {
            match imap::parse(&self.buf) {
                Ok(Some((response, used))) => {
                    let line = owned(&response)?;
                    self.buf.drain(..used);
                    return Ok(line);
                }
                Ok(None) => {}
                Err(e) => return Err(trouble(alert::UNEXPECTED, e.to_string())),
            }
            let mut chunk = [0u8; 2048];
            let read = tokio::time::timeout_at(until.into(), self.stream.read(&mut chunk));
            match read.await {
                Ok(Ok(0)) => return Err(trouble(alert::SYNC, "closed the connection")),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(trouble(alert::SYNC, format!("read: {e}"))),
                Err(_) => return Err(trouble(alert::SYNC, "no answer in time")),
            }
        }
    }
}

fn owned(response: &Response<'_>) -> Result<Line, Trouble> {
    let caps = || {
        response
            .capabilities()
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    Ok(match response {
        Response::Status { status, text, .. } => Line::Status {
            status: *status,
            caps: caps(),
            text: printable(text),
        },
        Response::Capability(_) | Response::Data => Line::Data,
        Response::Continue => Line::Continue,
        Response::Tagged {
            tag,
            status,
            code,
            text,
        } => {
            if *tag != imap::TAG {
                return Err(trouble(
                    alert::UNEXPECTED,
                    format!("answered with tag {:?}, not ours", printable(tag)),
                ));
            }
            Line::Tagged {
                status: *status,
                code: code.map(str::to_owned),
                text: printable(text),
            }
        }
    })
}

/// A server's text as the log may show it: printable, at most 200 characters.
fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Passdb for Rimap {
    fn kind(&self) -> PassdbKind {
        MODULE.kind
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        _: &Context<'_>,
    ) -> Answer<PassdbResult> {
        // IMAP cannot carry a NUL; Cyrus cut the password there (`secret\0junk` logged in
        // with `secret`). The server is not asked.
        if password.expose().contains(&0) {
            tracing::debug!(
                "rimap: a NUL in {}'s password; refused without asking the server",
                Printable(q.authid)
            );
            return Answer::Now(Ok(PassdbResult::PasswordMismatch));
        }
        let user = Zeroizing::new(q.authid.to_vec());
        Answer::awaited(async move { self.check(&user, password.expose()).await })
    }

    fn cache_use(&self) -> CacheUse {
        CacheUse::Useless(
            "-c: an IMAP server's LOGIN cannot be tied to the password it stores, so a \
             remembered success could outlive a password change; every login asks the server",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_cyrus_and_as_urls_write_them() {
        let h = |text: &str| Host::parse(text, 143).map(|h| h.label());
        assert_eq!(h("imap.example.org").unwrap(), "imap.example.org/143");
        assert_eq!(h("127.0.0.1/1143").unwrap(), "127.0.0.1/1143");
        assert_eq!(h("127.0.0.1:1143").unwrap(), "127.0.0.1/1143");
        assert_eq!(h("imap.example.org/imaps").unwrap(), "imap.example.org/993");
        assert_eq!(h("[::1]:1143").unwrap(), "::1/1143");
        assert_eq!(h("[::1]/1143").unwrap(), "::1/1143");
        assert_eq!(h("::1").unwrap(), "::1/143");
        assert_eq!(h("[::1]").unwrap(), "::1/143");
        for bad in [
            "/143",
            "host/0",
            "host/70000",
            "host/pop3",
            "[::1",
            "[::1]x",
        ] {
            assert!(h(bad).is_err(), "{bad}");
        }
        assert_eq!(Host::parse("h", 993).unwrap().port, 993);
    }

    #[test]
    fn the_tls_modes() {
        assert_eq!("STARTTLS".parse(), Ok(RimapTls::StartTls));
        assert_eq!("imaps".parse(), Ok(RimapTls::Imaps));
        assert_eq!("off".parse(), Ok(RimapTls::Off));
        assert!("tls".parse::<RimapTls>().is_err());
    }
}
