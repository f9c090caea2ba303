//! The unit of work, as a protocol decoded it: who asks to be checked, for which service and
//! realm, from where ([`AuthRequest`], [`Peer`]); the start of a SASL exchange
//! ([`SaslStart`]); and the naming rules both protocols share ([`split_user`], the host name).

use std::fmt;
use std::net::IpAddr;

/// A request to check a password. The fields are raw bytes: the saslauthd protocol carries no
/// encoding, and sasldb keys are bytes too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRequest {
    /// The user name exactly as sent (the saslauthd protocol never splits it at `@`).
    pub login: Vec<u8>,
    /// The service (`smtp`, `imap`); Cyrus's PAM service name.
    pub service: Vec<u8>,
    /// The realm; empty means the default realm.
    pub realm: Vec<u8>,
    /// Where the client is, when the protocol said.
    pub peer: Peer,
}

/// The client's address as the protocol sent it (the saslauthd protocol's fifth field,
/// `192.0.2.7;54321`; Dovecot's `rip=`), parsed once when the request is decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    text: Option<Vec<u8>>,
    ip: Option<IpAddr>,
}

impl Peer {
    /// A peer from the address text a client sent, if any. The IP address is read from
    /// `192.0.2.7;54321` (libsasl2's `SASL_IPREMOTEPORT`), `192.0.2.7`, `192.0.2.7:25`, `::1`
    /// or `[2001:db8::1]:25`; an IPv4-mapped IPv6 address counts as IPv4. Anything else keeps
    /// its text but has no address.
    pub fn new(text: Option<Vec<u8>>) -> Peer {
        let ip = text.as_deref().and_then(parse_ip);
        Peer { text, ip }
    }

    /// The address text as sent (for logs).
    pub fn text(&self) -> Option<&[u8]> {
        self.text.as_deref()
    }

    /// The IP address, when the text holds one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The host part of the text, without `;port` (PAM's `PAM_RHOST`); `None` when empty.
    pub fn host(&self) -> Option<String> {
        let text = String::from_utf8_lossy(self.text.as_deref()?).into_owned();
        let host = text.split(';').next().unwrap_or_default();
        (!host.is_empty()).then(|| host.to_owned())
    }
}

fn parse_ip(addr: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(addr).ok()?;
    let host = text.split(';').next()?.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.split(']').next())
        .unwrap_or(host);
    let ip: IpAddr = match host.parse() {
        Ok(ip) => ip,
        // "192.0.2.7:25": an IPv4 address with a port.
        Err(_) => host.rsplit_once(':').and_then(|(h, _)| h.parse().ok())?,
    };
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    })
}

/// The start of a SASL exchange (Dovecot's `AUTH`), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslStart {
    /// The request id (non-zero), unique among the connection's active requests.
    pub id: u32,
    /// The mechanism name as sent (matched case-insensitively).
    pub mech: String,
    /// The service (`smtp`).
    pub service: Vec<u8>,
    /// The SMTP client's address.
    pub peer: Peer,
    /// The client takes the server's final data on the success (`final-resp-ok`).
    pub final_resp_ok: bool,
    /// The initial response.
    pub initial: Input,
}

/// The client's data for one step of an exchange, after the protocol's transfer encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// None was sent (no initial response).
    Absent,
    /// These bytes (possibly none).
    Data(Vec<u8>),
    /// What was sent could not be decoded (not base64).
    Undecodable,
}

/// Splits a user name at its last `@` into (authid, realm), as libsasl2 does before it asks
/// saslauthd; without `@` (or with `split` off) the realm is empty, meaning the default realm.
pub fn split_user(user: &[u8], split: bool) -> (Vec<u8>, Vec<u8>) {
    match user.iter().rposition(|&b| b == b'@') {
        Some(at) if split => (user[..at].to_vec(), user[at + 1..].to_vec()),
        _ => (user.to_vec(), Vec::new()),
    }
}

/// Bytes shown in a log line: printable ASCII as is, anything else escaped, so a user name
/// cannot forge log lines or hide behind control characters.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() || c == '\\' {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The host name as `gethostname(2)` returns it: Cyrus's default realm in `auth_sasldb` and
/// `saslpasswd2` (not the FQDN), and the name in CRAM-MD5 challenges. A process works it out
/// once, at start-up.
pub fn host_name() -> std::io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    Ok(nix::unistd::gethostname()?.into_vec())
}

/// A network, `192.0.2.0/24` or `2001:db8::/32` or one address: what a TCP listener lets in,
/// and what a SQL row's `allow_nets` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The address, its host bits cleared.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// Text that is no network, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotANetwork {
    /// Not an address, or a prefix out of range.
    #[error("{0:?} is not a network (e.g. 127.0.0.1, 192.0.2.0/24, ::1)")]
    Unreadable(String),
    /// `10.1.2.3/8`: a typo for one address, or for the network?
    #[error("{text:?} has host bits set: write {network} for the network, or the address alone")]
    HostBits {
        /// What was written.
        text: String,
        /// The network it would be.
        network: Network,
    },
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// The network `text` names, host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`), as Dovecot
    /// reads `allow_nets`; [`str::parse`] refuses them instead.
    pub fn masked(text: &str) -> Result<Network, NotANetwork> {
        let unreadable = || NotANetwork::Unreadable(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let given: IpAddr = addr.parse().map_err(|_| unreadable())?;
        let max = if given.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(unreadable)?,
        };
        let addr = match given {
            IpAddr::V4(v4) => IpAddr::V4(mask32(u32::from(v4), prefix).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask128(u128::from(v6), prefix).into()),
        };
        Ok(Network { addr, prefix })
    }
}

fn mask32(bits: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => bits & (u32::MAX << (32 - u32::from(p))),
    }
}

fn mask128(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p))),
    }
}

impl std::str::FromStr for Network {
    type Err = NotANetwork;

    /// A network as a configuration file gives it: host bits set are refused.
    fn from_str(text: &str) -> Result<Network, NotANetwork> {
        let network = Network::masked(text)?;
        let given = text
            .split('/')
            .next()
            .and_then(|a| a.parse::<IpAddr>().ok());
        if given != Some(network.addr) {
            return Err(NotANetwork::HostBits {
                text: text.to_owned(),
                network,
            });
        }
        Ok(network)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        match self.prefix == max {
            true => write!(f, "{}", self.addr),
            false => write!(f, "{}/{}", self.addr, self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_and_invalid_bytes() {
        assert_eq!(Printable(b"alice").to_string(), "alice");
        assert_eq!(Printable(b"a\nb\0c\xff").to_string(), "a\\nb\\u{0}c\\xff");
        assert_eq!(
            Printable("dave.o-brien Ü".as_bytes()).to_string(),
            "dave.o-brien Ü"
        );
    }

    #[test]
    fn host_name_is_not_empty() {
        assert!(!host_name().unwrap().is_empty());
    }

    #[test]
    fn peer_addresses() {
        let ip = |s: &str| Peer::new(Some(s.as_bytes().to_vec())).ip();
        assert_eq!(ip("192.0.2.7;54321"), ip("192.0.2.7"));
        assert_eq!(ip("192.0.2.7:25"), ip("192.0.2.7"));
        assert_eq!(ip("[2001:db8::1]:25"), ip("2001:db8::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
        assert!(ip("192.0.2.7").is_some());
        assert_eq!(ip(""), None);
        assert_eq!(ip("not an address"), None);
        let p = Peer::new(Some(b"192.0.2.7;4242".to_vec()));
        assert_eq!(p.host().as_deref(), Some("192.0.2.7"));
        assert_eq!(p.text(), Some(&b"192.0.2.7;4242"[..]));
        assert_eq!(Peer::new(Some(b";1".to_vec())).host(), None);
        assert_eq!(Peer::default().text(), None);
    }

    #[test]
    fn user_names_split_at_the_last_at() {
        let s = |u: &str, split| {
            let (a, r) = split_user(u.as_bytes(), split);
            (String::from_utf8(a).unwrap(), String::from_utf8(r).unwrap())
        };
        assert_eq!(
            s("alice@example.org", true),
            ("alice".into(), "example.org".into())
        );
        assert_eq!(s("a@b@c", true), ("a@b".into(), "c".into()));
        assert_eq!(s("alice", true), ("alice".into(), "".into()));
        assert_eq!(
            s("alice@example.org", false),
            ("alice@example.org".into(), "".into())
        );
    }

    #[test]
    fn networks() {
        let net: Network = "192.0.2.0/24".parse().unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(
            net.contains("::ffff:192.0.2.1".parse().unwrap()),
            "IPv4-mapped"
        );
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let one: Network = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert_eq!(one.to_string(), "127.0.0.1");
        assert_eq!(net.to_string(), "192.0.2.0/24");
        for bad in ["10.1.2.3/8", "10.0.0.0/33", "example.org", "10.0.0.0/", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
        assert_eq!(
            Network::masked("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "10.1.2.3/8".parse::<Network>().unwrap_err().to_string(),
            "\"10.1.2.3/8\" has host bits set: write 10.0.0.0/8 for the network, or the address alone"
        );
    }
}
