//! Following the directory's changes: one search in RFC 4533's refreshAndPersist mode (the
//! content synchronization a replica uses; slapd's `syncprov` overlay, 389 DS's content sync
//! plugin) on its own connection, bound as `ldap_bind_dn`, over `ldap_search_base`. It asks
//! for no attributes: what it needs is only *that* something under the base changed.
//!
//! While the stream is up, every change under the base (an entry added, modified, renamed or
//! deleted, a password changed) moves one generation number on. What the passdb remembers
//! from the directory (which DN a filter finds; with `-c`, a success) is tagged with the
//! generation it was learnt in and used only while the generation is the same, so a change
//! in the directory reaches the next request as soon as the server has pushed it. A change
//! forgets everything, which costs a search and a bind per user again, never a wrong answer;
//! with one exception, below.
//!
//! **A change to one user's entry forgets only that entry's successes.** Directories write to
//! a user's entry when the user binds: ppolicy's `pwdFailureTime` on every wrong password,
//! `pwdLastSuccess` with `lastbind`, 389 DS's `lastLoginTime`. If each forgot everything, one
//! client guessing one user's password would send every other user's login back to a search
//! and a bind. So the stream asks for the attributes `ldap_filter` tests
//! ([`filter::attributes`](super::filter::attributes)) and keeps, for every entry under the
//! base that carries every one of them, a keyed digest of its DN and those attributes (by the
//! entry's sync UUID). A push that *modifies* an entry the stream knows, leaving that digest
//! as it was, cannot change what any filter finds; when it is also an entry a search for a
//! user found (not a password policy, a group or a role, whose changes reach other entries'
//! binds), it moves on only that entry's own generation, which the cache's slot for it
//! carries beside the shared one. Everything else (an entry added, renamed or deleted, a
//! changed filter attribute, an entry the stream did not know, one that lacks a filter
//! attribute or hides it from `ldap_bind_dn` — a filter may test what the searcher can
//! search but not read —, a set of UUIDs, a push without its Sync State control) forgets
//! everything as before.
//!
//! Nothing is remembered unless the stream is known to be live: the refresh phase is over,
//! the connection is open, and the server answered a heartbeat (a WhoAmI) within
//! [`GRACE`]. A stream that ends, a heartbeat that goes unanswered, a reconnect: each moves
//! the generation on too. A directory that does not offer the control (no `syncprov`), that
//! refuses it to `ldap_bind_dn`, or that cuts the refresh short (a size limit) is logged
//! once, and the passdb goes on searching on every request as it does without this.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};
use ldap3::controls::{ControlParser, EntryState, RawControl, RefreshMode, SyncRequest, SyncState};
use ldap3::{LdapConnSettings, ResultEntry, SearchEntry};

use super::guard;
use super::servers::{connect_to, read_root_dse};
use crate::passdb::failover::Servers;

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

/// The Sync State control (RFC 4533 §2.3) each entry of the stream carries.
const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";

/// The entries under the base the stream keeps a digest of, at most (a bigger base: every
/// change forgets everything). Some 30 bytes each.
const KNOWN_ENTRIES: usize = 1_000_000;

/// The user entries searches found that are remembered as such, at most (then forgotten at
/// once: a change to one of them forgets everything until it is found again).
const USER_ENTRIES: usize = 65_536;

/// The generation what the passdb learns is tagged with, and whether it may be used now.
#[derive(Debug)]
pub(super) struct Changes {
    epoch: Instant,
    generation: AtomicU64,
    /// The refresh phase is over and the stream has not ended since.
    live: AtomicBool,
    /// When the server last answered a heartbeat, in ms since `epoch`.
    heard: AtomicU64,
    /// The attributes `ldap_filter` tests, which the stream asks for; `None`: not known, and
    /// every change forgets everything.
    filter_attrs: Option<Vec<String>>,
    /// The key of the entries' digests (random: no entry can be made to collide).
    digests: RandomState,
    entries: Mutex<Entries>,
}

/// What is known of single entries, for changes that forget one entry only.
#[derive(Debug, Default)]
struct Entries {
    /// Every entry under the base, by sync UUID: the digest of its DN and filter attributes.
    known: HashMap<u128, u64>,
    /// `known` holds every entry: the refresh is over and no entry came without its UUID.
    complete: bool,
    /// An entry came without its Sync State control or could not be read: until the stream
    /// starts again, every change forgets everything.
    spoiled: bool,
    /// Entries searches for users found (their DNs, lowercased).
    users: HashSet<String>,
    /// Each user entry's own generation, where one of its changes moved it on.
    own: HashMap<String, u64>,
    /// The last own generation given out (never reused).
    last_own: u64,
}

/// What a pushed message changed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Changed {
    /// Nothing (a new cookie).
    Nothing,
    /// One user's entry, and not what any filter finds.
    OneEntry,
    /// Anything, as far as the passdb can tell.
    Everything,
}

impl Changes {
    /// For a passdb whose `ldap_filter` is `filter`.
    pub(super) fn new(filter: &str) -> Changes {
        Changes {
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            heard: AtomicU64::new(0),
            filter_attrs: super::filter::attributes(filter),
            digests: RandomState::new(),
            entries: Mutex::new(Entries::default()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The attributes the stream asks for.
    fn wanted(&self) -> Vec<String> {
        self.filter_attrs
            .clone()
            .unwrap_or_else(|| vec!["1.1".into()])
    }

    /// The generation of the entry at `dn`'s own changes (0 for none yet): a cached success
    /// for it is used only while this is the same too.
    pub(super) fn own(&self, dn: &str) -> u64 {
        let dn = dn.to_lowercase();
        self.entries().own.get(&dn).copied().unwrap_or(0)
    }

    /// A search for a user found the entry at `dn`.
    pub(super) fn found_user(&self, dn: &str) {
        let dn = dn.to_lowercase();
        let mut entries = self.entries();
        if entries.users.len() >= USER_ENTRIES {
            entries.users.clear();
        }
        entries.users.insert(dn);
    }

    /// The digest of an entry's DN and filter attributes (with their options: `cn;lang-en`
    /// is `cn`), when the entry carries every attribute the filter tests. One it lacks may be
    /// absent, or searchable by `ldap_bind_dn` but not readable, or come back under another
    /// name (an alias, an OID, a subtype of the one asked for): its changes cannot be seen,
    /// so such an entry has no digest and its changes forget everything.
    fn digest(&self, entry: &SearchEntry) -> Option<u64> {
        let wanted = self.filter_attrs.as_ref()?;
        let base = |name: &str| name.split(';').next().unwrap_or_default().to_owned();
        let mut attrs: Vec<(String, Vec<&[u8]>)> = entry
            .attrs
            .iter()
            .map(|(name, values)| (name, values.iter().map(|v| v.as_bytes()).collect()))
            .chain(
                entry
                    .bin_attrs
                    .iter()
                    .map(|(name, values)| (name, values.iter().map(Vec::as_slice).collect())),
            )
            .map(|(name, mut values): (&String, Vec<&[u8]>)| {
                values.sort_unstable();
                (name.to_ascii_lowercase(), values)
            })
            .filter(|(name, values)| wanted.contains(&base(name)) && !values.is_empty())
            .collect();
        let carries = |want: &String| attrs.iter().any(|(name, _)| base(name) == *want);
        if !wanted.iter().all(carries) {
            return None;
        }
        attrs.sort_unstable();
        Some(self.digests.hash_one((entry.dn.to_lowercase(), attrs)))
    }

    /// A message of the stream after the refresh: what it changed, with the generations
    /// moved on to match. An entry added, changed or deleted, or a set of entries present or
    /// deleted, forgets everything, except as the module's doc says; a new cookie, nothing.
    fn pushed(&self, message: ResultEntry) -> Changed {
        let changed = match message.is_intermediate() {
            true if sync_info(&message).is_some_and(|info| info.id == 0) => Changed::Nothing,
            true => Changed::Everything,
            false => self.entry(message, false),
        };
        if changed == Changed::Everything {
            self.changed();
        }
        changed
    }

    /// One entry of the stream, with its Sync State control; in the refresh phase it only
    /// tells what is there.
    fn entry(&self, message: ResultEntry, refreshing: bool) -> Changed {
        let state = message
            .1
            .iter()
            .find(|c| c.1.ctype == SYNC_STATE_OID)
            .and_then(|c| c.1.val.as_deref())
            .and_then(|val| guard::unpanicked(|| SyncState::parse(val)).ok())
            // A syncUUID is 16 bytes (RFC 4533 §2.1).
            .and_then(|state| {
                Some((
                    <[u8; 16]>::try_from(state.entry_uuid.as_slice()).ok()?,
                    state.state,
                ))
            });
        let entry = guard::unpanicked(|| SearchEntry::construct(message)).ok();
        let Some(((uuid, state), entry)) = state.zip(entry) else {
            // An entry the stream cannot place: what is known is no longer the whole base.
            let mut entries = self.entries();
            entries.spoiled = true;
            entries.complete = false;
            entries.known.clear();
            return Changed::Everything;
        };
        // Worked out before the lock, which every followed login takes too (`own`).
        let digest = self.digest(&entry);
        let dn = entry.dn.to_lowercase();
        let uuid = u128::from_be_bytes(uuid);
        let mut entries = self.entries();
        if let EntryState::Delete = state {
            entries.known.remove(&uuid);
            return Changed::Everything;
        }
        let before = entries.known.get(&uuid).copied();
        if matches!(state, EntryState::Modify)
            && entries.complete
            && digest.is_some()
            && before == digest
            && entries.users.contains(&dn)
            && (entries.own.len() < USER_ENTRIES || entries.own.contains_key(&dn))
        {
            entries.last_own += 1;
            let own = entries.last_own;
            entries.own.insert(dn, own);
            return Changed::OneEntry;
        }
        // The entry as it is now, to tell what its next change is; one without a digest (or
        // past the bound) is not known, and its next change forgets everything too.
        let room = entries.known.len() < KNOWN_ENTRIES || before.is_some();
        match digest {
            Some(digest) if room && (refreshing || entries.complete) => {
                entries.known.insert(uuid, digest);
            }
            _ => {
                entries.known.remove(&uuid);
            }
        }
        Changed::Everything
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
        {
            let mut entries = self.entries();
            entries.complete = !entries.spoiled;
        }
        self.changed();
        self.heard();
        self.live.store(true, Ordering::Release);
    }

    fn lost(&self) {
        self.live.store(false, Ordering::Release);
        self.changed();
        // The next stream tells the base afresh. (Own generations are kept: forgetting one
        // could make an old slot's stamp current again.)
        let mut entries = self.entries();
        entries.known.clear();
        entries.complete = false;
        entries.spoiled = false;
    }
}

/// What the stream needs of the passdb's settings.
pub(super) struct Follow {
    pub(super) servers: Servers,
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
            .or(self.servers.iter().next())
        else {
            return Ended::Refused("no server".into());
        };
        let url = &server.name;
        // ldap3 panics on some replies it cannot read: the stream is broken then.
        guard::guarded(self.stream_from(url))
            .await
            .unwrap_or_else(|panic| Ended::Broken(format!("{url}: {}", panic)))
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
                self.changes.wanted(),
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
                    Ok(Some(message)) if !refreshed => {
                        if message.is_intermediate() && refresh_done(&message) {
                            refreshed = true;
                            self.changes.refreshed();
                            tracing::info!(server = %url, entries, "LDAP: following the directory's changes under {:?}", self.base);
                        } else if !message.is_intermediate() {
                            entries += 1;
                            self.changes.entry(message, true);
                        }
                    }
                    Ok(Some(message)) => match self.changes.pushed(message) {
                        Changed::Nothing => {}
                        Changed::OneEntry => {
                            tracing::debug!(server = %url, "LDAP: a change under the search base, to one user's entry")
                        }
                        Changed::Everything => {
                            tracing::debug!(server = %url, "LDAP: a change under the search base")
                        }
                    },
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
    let Some(info) = sync_info(message) else {
        return false;
    };
    if !(info.id == 1 || info.id == 2) {
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

/// The value of a Sync Info message (RFC 4533 §2.5), a context-tagged choice: `[0]`
/// newcookie, `[1]` refreshDelete, `[2]` refreshPresent, `[3]` syncIdSet.
fn sync_info(message: &ResultEntry) -> Option<StructureTag> {
    let StructureTag {
        payload: PL::C(parts),
        ..
    } = &message.0
    else {
        return None;
    };
    let value = parts
        .iter()
        .find(|t| t.class == TagClass::Context && t.id == 1)?;
    let PL::P(bytes) = &value.payload else {
        return None;
    };
    let (_, info) = parse_tag(bytes).ok()?;
    (info.class == TagClass::Context).then_some(info)
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

    const ADD: u8 = 1;
    const MODIFY: u8 = 2;
    const DELETE: u8 = 3;
    const ALICE: &str = "uid=alice,ou=people,dc=example,dc=org";
    const BOB: &str = "uid=bob,ou=people,dc=example,dc=org";

    /// A SearchResultEntry at `dn` with `attrs`, and a Sync State control (`state`, a UUID
    /// of 16 bytes `uuid`) unless `state` is 0.
    fn pushed_entry(state: u8, uuid: u8, dn: &str, attrs: &[(&str, &str)]) -> ResultEntry {
        let tag = |class, id, payload| StructureTag { class, id, payload };
        let octets = |b: &str| {
            tag(
                TagClass::Universal,
                Types::OctetString as u64,
                PL::P(b.into()),
            )
        };
        let attrs = attrs
            .iter()
            .map(|(name, value)| {
                let set = tag(
                    TagClass::Universal,
                    Types::Set as u64,
                    PL::C(vec![octets(value)]),
                );
                tag(
                    TagClass::Universal,
                    Types::Sequence as u64,
                    PL::C(vec![octets(name), set]),
                )
            })
            .collect();
        let attrs = tag(TagClass::Universal, Types::Sequence as u64, PL::C(attrs));
        let entry = tag(TagClass::Application, 4, PL::C(vec![octets(dn), attrs]));
        let mut controls = Vec::new();
        if state != 0 {
            // SEQUENCE { ENUMERATED state, OCTET STRING entryUUID }
            let mut val = vec![0x30, 21, 0x0a, 1, state, 0x04, 16];
            val.extend([uuid; 16]);
            controls.push(ldap3::controls::Control(
                None,
                RawControl {
                    ctype: SYNC_STATE_OID.into(),
                    crit: false,
                    val: Some(val),
                },
            ));
        }
        let mut message = ResultEntry::new(entry);
        message.1 = controls;
        message
    }

    /// A stream that has told alice (UUID 1) and bob (UUID 2), both found by searches.
    fn followed(filter: &str) -> Changes {
        let changes = Changes::new(filter);
        let alice = pushed_entry(ADD, 1, ALICE, &[("uid", "alice"), ("mail", "a@x")]);
        let bob = pushed_entry(ADD, 2, BOB, &[("uid", "bob"), ("mail", "b@x")]);
        assert_eq!(changes.entry(alice, true), Changed::Everything);
        assert_eq!(changes.entry(bob, true), Changed::Everything);
        changes.refreshed();
        changes.found_user(ALICE);
        changes.found_user(BOB);
        changes
    }

    #[test]
    fn a_change_to_one_users_entry_forgets_that_entry_only() {
        let changes = followed("(|(uid=%u)(mail=%u))");
        let generation = changes.now().expect("live");
        let bob = |state, attrs: &[(&str, &str)]| pushed_entry(state, 2, BOB, attrs);
        let same = [("mail", "b@x"), ("UID", "bob")];
        // A write that leaves what the filter tests as it was (a failure time, a password).
        assert_eq!(changes.pushed(bob(MODIFY, &same)), Changed::OneEntry);
        assert_eq!(changes.now(), Some(generation), "the others' stay");
        let first = changes.own(&BOB.to_uppercase());
        assert_ne!(first, 0);
        assert_eq!(changes.own(ALICE), 0);
        assert_eq!(changes.pushed(bob(MODIFY, &same)), Changed::OneEntry);
        assert!(changes.own(BOB) > first, "each write moves it on");

        // Everything else forgets everything: a filter attribute changed (then known as it is
        // now), the entry renamed, deleted, one added, a new entry's first change.
        let changed = [("mail", "alice"), ("uid", "bob")];
        let policy = [("uid", "p"), ("mail", "p@x")];
        for (message, what) in [
            (bob(MODIFY, &changed), "a filter attribute"),
            (bob(MODIFY, &changed[..1]), "one of them gone"),
            (
                pushed_entry(MODIFY, 2, "uid=bob,ou=gone,dc=example,dc=org", &same),
                "renamed",
            ),
            (bob(DELETE, &[]), "deleted"),
            (
                pushed_entry(ADD, 3, "cn=policy,dc=example,dc=org", &policy),
                "added",
            ),
            (
                pushed_entry(MODIFY, 3, "cn=policy,dc=example,dc=org", &policy),
                "not a user's",
            ),
            (
                pushed_entry(MODIFY, 4, ALICE, &[("uid", "alice"), ("mail", "a@x")]),
                "not known",
            ),
        ] {
            let before = changes.now();
            assert_eq!(changes.pushed(message), Changed::Everything, "{what}");
            assert_ne!(changes.now(), before, "{what}");
        }
        let alice = |attrs: &[(&str, &str)]| pushed_entry(MODIFY, 1, ALICE, attrs);
        let both = [("uid", "alice"), ("mail", "a@x")];
        assert_eq!(changes.pushed(alice(&both)), Changed::OneEntry);
        // An attribute with an option is the attribute.
        let tagged = [("uid", "alice"), ("mail;x-home", "a@x")];
        assert_eq!(
            changes.pushed(alice(&tagged)),
            Changed::Everything,
            "a new value"
        );
        assert_eq!(changes.pushed(alice(&tagged)), Changed::OneEntry);
        // An entry without one of the filter's attributes (absent, or searchable by the
        // searcher but not readable, so that a change to it would not show): every write
        // to it forgets everything, however often it comes the same.
        for _ in 0..2 {
            let hidden = alice(&[("uid", "alice")]);
            assert_eq!(changes.pushed(hidden), Changed::Everything, "one missing");
        }

        // A push without attributes the filter tests, or without its control: nothing can be
        // told of it, and one without the control spoils what is known until a new stream.
        let bare = pushed_entry(MODIFY, 1, ALICE, &[("cn", "alice")]);
        assert_eq!(changes.pushed(bare), Changed::Everything);
        let changes = followed("(uid=%u)");
        let alice = || pushed_entry(MODIFY, 1, ALICE, &[("uid", "alice")]);
        assert_eq!(
            changes.pushed(pushed_entry(0, 0, BOB, &[("uid", "bob")])),
            Changed::Everything
        );
        assert_eq!(changes.pushed(alice()), Changed::Everything, "spoiled");
        changes.lost();
        assert_eq!(
            changes.pushed(alice()),
            Changed::Everything,
            "not refreshed"
        );

        // A filter whose attributes cannot be told: every change forgets everything.
        let changes = followed("(%s=%u)");
        assert_eq!(changes.pushed(alice()), Changed::Everything);
    }

    #[test]
    fn nothing_is_used_unless_the_stream_is_live_and_heard() {
        let changes = Changes::new("(uid=%u)");
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
