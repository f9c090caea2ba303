//! Following the directory's changes: one search in RFC 4533's refreshAndPersist mode (the
//! content synchronization a replica uses; slapd's `syncprov` overlay, 389 DS's content sync
//! plugin) on its own connection, bound as `ldap_bind_dn`, over `ldap_search_base`. It asks
//! for no attributes: what it needs is only *that* something under the base changed.
//!
//! While the stream is up, every change under the base (an entry added, modified, renamed or
//! deleted, a password changed) moves one generation number on. What the passdb remembers
//! from the directory (which DN a filter finds; with `-c`, a success) is tagged with the
//! generation it was learnt in and used only while the generation is the same, so a change
//! in the directory reaches the next request as soon as the server has pushed it. Coarse on
//! purpose: one change forgets everything, which costs a search and a bind per user again,
//! never a wrong answer.
//!
//! Nothing is remembered unless the stream is known to be live: the refresh phase is over,
//! the connection is open, and the server answered a heartbeat (a WhoAmI) within
//! [`GRACE`]. A stream that ends, a heartbeat that goes unanswered, a reconnect: each moves
//! the generation on too. A directory that does not offer the control (no `syncprov`), that
//! refuses it to `ldap_bind_dn`, or that cuts the refresh short (a size limit) is logged
//! once, and the passdb goes on searching on every request as it does without this.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};
use ldap3::controls::{RawControl, RefreshMode, SyncRequest};
use ldap3::{LdapConnSettings, ResultEntry};

use super::{connect_to, guard, read_root_dse, unreadable, Server};

/// The Sync Request control (RFC 4533 §2.2), as a root DSE lists it in `supportedControl`.
const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";

/// How often the stream's server is asked whether it is still there.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long after the last answered heartbeat what was learnt may still be used.
pub(super) const GRACE: Duration = Duration::from_millis(1500);

/// How soon a stream that broke is opened again.
const RECONNECT: Duration = Duration::from_secs(1);

/// How soon a server that refused to follow is asked again (its configuration may change).
const ASK_AGAIN: Duration = Duration::from_secs(300);

/// The generation what the passdb learns is tagged with, and whether it may be used now.
#[derive(Debug)]
pub(super) struct Changes {
    epoch: Instant,
    generation: AtomicU64,
    /// The refresh phase is over and the stream has not ended since.
    live: AtomicBool,
    /// When the server last answered a heartbeat, in ms since `epoch`.
    heard: AtomicU64,
}

impl Changes {
    pub(super) fn new() -> Changes {
        Changes {
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            heard: AtomicU64::new(0),
        }
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The generation to tag what is learnt now with, or `None` when the stream is not known
    /// to be live (then nothing is remembered or used).
    pub(super) fn now(&self) -> Option<u64> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let grace = u64::try_from(GRACE.as_millis()).unwrap_or(u64::MAX);
        (self.ms() <= self.heard.load(Ordering::Acquire).saturating_add(grace))
            .then_some(generation)
    }

    /// Something under the base changed (or may have): what was learnt is forgotten.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn heard(&self) {
        self.heard.store(self.ms(), Ordering::Release);
    }

    fn refreshed(&self) {
        self.changed();
        self.heard();
        self.live.store(true, Ordering::Release);
    }

    fn lost(&self) {
        self.live.store(false, Ordering::Release);
        self.changed();
    }
}

/// What the stream needs of the passdb's settings.
pub(super) struct Follow {
    pub(super) servers: Vec<Arc<Server>>,
    pub(super) settings: LdapConnSettings,
    pub(super) op_timeout: Duration,
    pub(super) bind_dn: String,
    pub(super) bind_pw: String,
    pub(super) base: String,
    pub(super) changes: Arc<Changes>,
}

/// Why a stream ended.
enum Ended {
    /// The connection broke or no server could be reached: open it again soon.
    Broken(String),
    /// The server will not follow for us: say so once, ask again much later.
    Refused(String),
}

impl Follow {
    /// Runs until `stop` resolves (the passdb is dropped, as on a reload).
    pub(super) async fn run(self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut refused_before = false;
        loop {
            let ended = tokio::select! {
                _ = &mut stop => return,
                ended = self.session() => ended,
            };
            self.changes.lost();
            let pause = match ended {
                Ended::Broken(why) => {
                    tracing::info!("LDAP: the change stream ended ({why}); every request searches until it is back");
                    RECONNECT
                }
                Ended::Refused(why) => {
                    if !refused_before {
                        tracing::warn!("LDAP: the directory does not let saslauthd-rs follow its changes ({why}); every request searches (RFC 4533: slapd's syncprov overlay, read access and no size limit for ldap_bind_dn, or ldap_follow_changes: no)");
                    }
                    refused_before = true;
                    ASK_AGAIN
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One stream on the first server alive, until it ends.
    async fn session(&self) -> Ended {
        let Some(server) = self
            .servers
            .iter()
            .find(|s| s.alive())
            .or(self.servers.first())
        else {
            return Ended::Refused("no server".into());
        };
        let url = &server.url;
        // ldap3 panics on some replies it cannot read: the stream is broken then.
        guard::guarded(self.stream_from(url))
            .await
            .unwrap_or_else(|panic| Ended::Broken(format!("{url}: {}", unreadable(&panic))))
    }

    /// One stream from the server at `url`, until it ends.
    async fn stream_from(&self, url: &str) -> Ended {
        let mut ldap = match connect_to(url, self.settings.clone(), self.op_timeout).await {
            Ok(ldap) => ldap,
            Err(why) => return Ended::Broken(format!("{url}: {why}")),
        };
        if !self.bind_dn.is_empty() {
            match tokio::time::timeout(
                self.op_timeout,
                ldap.simple_bind(&self.bind_dn, &self.bind_pw),
            )
            .await
            {
                Ok(Ok(r)) if r.rc == 0 => {}
                Ok(Ok(r)) => {
                    return Ended::Refused(format!(
                        "{url}: bind as ldap_bind_dn: {} ({})",
                        r.text, r.rc
                    ))
                }
                Ok(Err(e)) => return Ended::Broken(format!("{url}: bind: {e}")),
                Err(_) => return Ended::Broken(format!("{url}: no answer to the bind")),
            }
        }
        // A server that does not list the control is not asked: some answer a search with a
        // critical control they lack by an extended response (Samba AD), which ldap3's
        // connection task does not survive. A root DSE that cannot be read says nothing.
        let root_dse = tokio::time::timeout(self.op_timeout, async {
            read_root_dse(&mut ldap, vec!["supportedControl"])
                .await
                .and_then(|r| r.success())
        })
        .await;
        if let Ok(Ok((found, _))) = root_dse {
            // Attribute names are case-insensitive (RFC 4512); a root DSE hidden from
            // ldap_bind_dn (no entry) says nothing either.
            let read = !found.is_empty();
            let offered = found
                .into_iter()
                .flat_map(|entry| ldap3::SearchEntry::construct(entry).attrs)
                .filter(|(name, _)| name.eq_ignore_ascii_case("supportedControl"))
                .any(|(_, oids)| oids.iter().any(|oid| oid == SYNC_REQUEST_OID));
            if read && !offered {
                return Ended::Refused(format!(
                    "{url}: its root DSE does not list the content synchronization control"
                ));
            }
        }
        let mut control: RawControl = SyncRequest {
            mode: RefreshMode::RefreshAndPersist,
            cookie: None,
            reload_hint: false,
        }
        .into();
        // Critical: a server that cannot follow must say so, not answer a plain search.
        control.crit = true;
        let mut heartbeat = ldap.clone();
        let mut stream = match ldap
            .with_controls(control)
            .streaming_search(
                &self.base,
                ldap3::Scope::Subtree,
                "(objectClass=*)",
                vec!["1.1"],
            )
            .await
        {
            Ok(stream) => stream,
            Err(e) => return Ended::Broken(format!("{url}: search: {e}")),
        };
        let reading = async {
            let mut refreshed = false;
            let mut entries = 0u64;
            loop {
                match stream.next().await {
                    Ok(Some(message)) => {
                        if !refreshed {
                            if message.is_intermediate() && refresh_done(&message) {
                                refreshed = true;
                                self.changes.refreshed();
                                tracing::info!(server = %url, entries, "LDAP: following the directory's changes under {:?}", self.base);
                            } else if !message.is_intermediate() {
                                entries += 1;
                            }
                        } else {
                            // An entry added, changed or deleted; a set of entries
                            // present or deleted; a new cookie: all count as a change.
                            self.changes.changed();
                            tracing::debug!(server = %url, "LDAP: a change under the search base");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Ended::Broken(format!("{url}: {e}")),
                }
            }
            let done = stream.finish().await;
            match done.rc {
                // Ended without a refresh: the control was not acted on (no syncprov).
                0 if !refreshed => {
                    Ended::Refused(format!("{url}: the search ended without a refresh phase"))
                }
                4 | 11 => Ended::Refused(format!(
                    "{url}: {} ({}): the stream needs no size or administrative limit",
                    done.text, done.rc
                )),
                0 | 51 | 52 | 80 => Ended::Broken(format!("{url}: {} ({})", done.text, done.rc)),
                _ => Ended::Refused(format!("{url}: {} ({})", done.text, done.rc)),
            }
        };
        let beating = async {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let asked =
                    tokio::time::timeout(self.op_timeout, heartbeat.extended(ldap3::exop::WhoAmI))
                        .await;
                match asked {
                    Ok(Ok(answer)) if answer.1.rc == 0 => self.changes.heard(),
                    Ok(Ok(answer)) => {
                        return Ended::Broken(format!(
                            "{url}: heartbeat: {} ({})",
                            answer.1.text, answer.1.rc
                        ))
                    }
                    Ok(Err(e)) => return Ended::Broken(format!("{url}: heartbeat: {e}")),
                    Err(_) => {
                        return Ended::Broken(format!(
                            "{url}: no answer to a heartbeat within {:?}",
                            self.op_timeout
                        ))
                    }
                }
            }
        };
        let ended = tokio::select! {
            ended = reading => ended,
            ended = beating => ended,
        };
        let _ = tokio::time::timeout(self.op_timeout, heartbeat.unbind()).await;
        ended
    }
}

/// Whether a Sync Info message (RFC 4533 §2.5) ends the refresh phase: a `refreshDelete` or
/// `refreshPresent` whose `refreshDone` is TRUE (its default). Anything malformed is not.
fn refresh_done(message: &ResultEntry) -> bool {
    let StructureTag {
        payload: PL::C(parts),
        ..
    } = &message.0
    else {
        return false;
    };
    let Some(value) = parts
        .iter()
        .find(|t| t.class == TagClass::Context && t.id == 1)
    else {
        return false;
    };
    let PL::P(bytes) = &value.payload else {
        return false;
    };
    let Ok((_, info)) = parse_tag(bytes) else {
        return false;
    };
    if info.class != TagClass::Context || !(info.id == 1 || info.id == 2) {
        return false;
    }
    let PL::C(fields) = info.payload else {
        return false;
    };
    match fields
        .iter()
        .find(|f| f.class == TagClass::Universal && f.id == Types::Boolean as u64)
    {
        None => true,
        Some(StructureTag {
            payload: PL::P(flag),
            ..
        }) => flag.first().is_some_and(|b| *b != 0),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: &[u8]) -> ResultEntry {
        let mut oid = b"1.3.6.1.4.1.4203.1.9.1.4".to_vec();
        let mut bytes = vec![0x79]; // [APPLICATION 25], constructed
        let mut inner = vec![0x80, oid.len() as u8];
        inner.append(&mut oid);
        inner.extend([0x81, value.len() as u8]);
        inner.extend_from_slice(value);
        bytes.push(inner.len() as u8);
        bytes.extend(inner);
        let (_, tag) = parse_tag(&bytes).expect("well formed");
        ResultEntry::new(tag)
    }

    #[test]
    fn the_end_of_the_refresh_phase_is_recognized() {
        // refreshDelete with no refreshDone (default TRUE); refreshPresent, refreshDone TRUE.
        assert!(refresh_done(&message(&[0xa1, 0x00])));
        assert!(refresh_done(&message(&[0xa2, 0x03, 0x01, 0x01, 0xff])));
        // refreshDone FALSE; a newcookie; a syncIdSet; garbage.
        assert!(!refresh_done(&message(&[0xa2, 0x03, 0x01, 0x01, 0x00])));
        assert!(!refresh_done(&message(&[0x80, 0x02, b'c', b'k'])));
        assert!(!refresh_done(&message(&[0xa3, 0x02, 0x31, 0x00])));
        assert!(!refresh_done(&message(&[0xa2, 0x05, 0x01])));
        assert!(!refresh_done(&message(&[])));
    }

    #[test]
    fn nothing_is_used_unless_the_stream_is_live_and_heard() {
        let changes = Changes::new();
        assert_eq!(changes.now(), None, "before the refresh");
        changes.refreshed();
        let first = changes.now().expect("live");
        changes.changed();
        assert_ne!(changes.now(), Some(first), "a change moves it on");
        changes.lost();
        assert_eq!(changes.now(), None, "a lost stream");
        changes.refreshed();
        changes.heard.store(0, Ordering::Release);
        let epoch = Instant::now() - GRACE - Duration::from_millis(10);
        let stale = Changes { epoch, ..changes };
        assert_eq!(stale.now(), None, "no heartbeat answered within the grace");
    }
}
