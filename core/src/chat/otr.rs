//! Private chat: every 1:1 message goes through OTR on its way out and in, so the
//! policy decides — never the transport — whether a body may leave in plaintext. Keys,
//! known fingerprints and per-buddy policies live sealed in the vault; the core saves
//! them whenever OTR says they changed.

use super::limits::push_line;
use super::worker::{OtrWorker, PeerState, Produced};
use super::{ChatLayer, Loggable, jid, now_ms};
use crate::command::Reply;
use crate::error::{CoreError, Result};
use crate::event::Event;
use crate::model::{AccountId, OtrPolicySetting};
use crate::secret::Secret;
use crate::security::ChatSecurity;
use crate::snapshot::{ChatLine, KnownFingerprintView, OtrKeyView, SmpView};
use hush_signaling::otr::{
    OtrEngine, OtrError, OtrEvent, OtrPolicy, SmpEvent, normalize_fingerprint,
};
use hush_signaling::xmpp::account::XmppCommand;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use zeroize::Zeroizing;

/// OTR messages longer than this are split into fragments (each one stanza).
const FRAGMENT_BYTES: usize = 16 * 1024;
/// Stanza ids remembered to mark lines delivered.
const TRACKED_STANZAS: usize = 1024;
/// Vault names of what OTR keeps.
pub(crate) const KEYS_SECRET: &str = "otr/private_keys";
pub(crate) const FINGERPRINTS_SECRET: &str = "otr/fingerprints";
pub(crate) const POLICIES_SECRET: &str = "otr/policies";

/// A 1:1 message as the transport delivered it.
pub(crate) struct Received {
    pub(crate) from: String,
    pub(crate) id: String,
    pub(crate) body: String,
    pub(crate) delayed: bool,
}

/// What the vault holds for OTR, as loaded at start.
#[derive(Default)]
pub(crate) struct Stored {
    pub(crate) keys: Option<Secret>,
    pub(crate) fingerprints: Option<Vec<u8>>,
    pub(crate) policies: Option<Vec<u8>>,
}

/// What the core must write back to the vault.
#[derive(Default)]
pub(crate) struct ToSave {
    pub(crate) keys: Option<Secret>,
    pub(crate) fingerprints: Option<Vec<u8>>,
    pub(crate) policies: Option<Vec<u8>>,
}

/// An OTR key made off the core task (DSA generation takes up to seconds), coming back
/// to be used.
pub(crate) struct KeyMade {
    /// Which make it answers (a stale one, for an account since reconnected or
    /// removed, does not release what a newer one holds).
    token: u64,
    account: AccountId,
    /// libotr's account name it was made for.
    name: String,
    /// The user asked for a new key; otherwise it was made because there was none.
    replace: bool,
    file: std::result::Result<Zeroizing<Vec<u8>>, OtrError>,
    /// Told when the key is in use (the user's request).
    done: Option<oneshot::Sender<Result<()>>>,
}

/// Messages that came for an account while its first key was being made, each with
/// its place in the account's window.
type HeldForKey = Vec<(Received, OwnedSemaphorePermit)>;

/// A key being made for an account.
struct Making {
    token: u64,
    /// libotr's account name it is for.
    name: String,
    /// An import since it started: a new key the user asked for would replace the
    /// imported one behind their back, so it is not used.
    superseded: bool,
    held: HeldForKey,
}

/// The OTR side of the chat layer.
pub(crate) struct Otr {
    worker: OtrWorker,
    loaded: bool,
    /// libotr's account name per connected account (the bare address, or the name an
    /// imported Pidgin key carries, e.g. "alice@example.org/Home").
    pub(super) names: BTreeMap<AccountId, String>,
    keys: BTreeMap<AccountId, String>,
    known: Vec<KnownFingerprintView>,
    /// Per-buddy policies, keyed by (account address, buddy).
    buddy_policies: BTreeMap<(String, String), OtrPolicySetting>,
    stanzas: HashMap<String, (AccountId, String, String)>,
    stanza_order: VecDeque<String>,
    id_prefix: String,
    next_id: u64,
    dirty_files: bool,
    dirty_policies: bool,
    /// Accounts whose key is being made, with what waits for it.
    making: BTreeMap<AccountId, Making>,
    next_token: u64,
    /// Users' key requests to answer once the key is saved.
    made: Vec<(oneshot::Sender<Result<()>>, Result<()>)>,
}

fn engine_policy(p: OtrPolicySetting) -> OtrPolicy {
    match p {
        OtrPolicySetting::Manual => OtrPolicy::Manual,
        OtrPolicySetting::Opportunistic => OtrPolicy::Opportunistic,
        OtrPolicySetting::Require => OtrPolicy::Require,
    }
}

fn random_prefix() -> String {
    let mut b = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A line Hushphone writes into a conversation.
pub(crate) fn notice(text: String) -> ChatLine {
    ChatLine {
        id: String::new(),
        sender: String::new(),
        from_me: false,
        body: text,
        at_unix_ms: now_ms(),
        delivered: true,
        delayed: false,
        encrypted: false,
        held: false,
        notice: true,
    }
}

fn smp_view(e: &SmpEvent) -> SmpView {
    match e {
        SmpEvent::AskedQuestion(q) => SmpView::Asked(q.clone()),
        SmpEvent::AskedSecret => SmpView::SecretAsked,
        SmpEvent::Progress(p) => SmpView::InProgress(*p),
        SmpEvent::Succeeded => SmpView::Succeeded,
        SmpEvent::Failed => SmpView::Failed,
        SmpEvent::Aborted | SmpEvent::Error => SmpView::Aborted,
    }
}

impl Otr {
    pub(crate) fn new() -> Otr {
        Self::with_worker(OtrWorker::start(FRAGMENT_BYTES))
    }

    pub(crate) fn with_worker(worker: OtrWorker) -> Otr {
        Otr {
            worker,
            loaded: false,
            names: BTreeMap::new(),
            keys: BTreeMap::new(),
            known: Vec::new(),
            buddy_policies: BTreeMap::new(),
            stanzas: HashMap::new(),
            stanza_order: VecDeque::new(),
            id_prefix: random_prefix(),
            next_id: 0,
            dirty_files: false,
            dirty_policies: false,
            making: BTreeMap::new(),
            next_token: 0,
            made: Vec::new(),
        }
    }

    /// The vault's OTR data has been loaded (it needs the vault open).
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Fails, with words, if libotr did not start: then there is no chat at all.
    pub(crate) fn available(&self) -> Result<()> {
        match self.worker.unavailable() {
            Some(e) => Err(CoreError::Otr(e.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn key_views(&self) -> Vec<OtrKeyView> {
        self.keys
            .iter()
            .map(|(account, fingerprint)| OtrKeyView {
                account: *account,
                fingerprint: fingerprint.clone(),
            })
            .collect()
    }

    pub(crate) fn known(&self) -> Vec<KnownFingerprintView> {
        self.known.clone()
    }

    fn account_of(&self, name: &str) -> Option<AccountId> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| *id)
    }

    fn name(&self, account: AccountId) -> Result<String> {
        self.names.get(&account).cloned().ok_or_else(|| {
            CoreError::InvalidInput(format!(
                "account {account} is not connected; connect it first"
            ))
        })
    }

    /// `message` (with its place in the window), unless it must wait for the
    /// account's first key: then kept, at most a window's worth per account. Once one
    /// waits, the ones after it wait too, so they are read in order.
    pub(crate) fn hold_until_key(
        &mut self,
        account: AccountId,
        message: Received,
        place: OwnedSemaphorePermit,
    ) -> Option<(Received, OwnedSemaphorePermit)> {
        match self.making.get_mut(&account) {
            Some(m) if !self.keys.contains_key(&account) || !m.held.is_empty() => {
                m.held.push((message, place));
                None
            }
            _ => Some((message, place)),
        }
    }

    fn new_stanza_id(&mut self) -> String {
        self.next_id += 1;
        format!("h{}-{}", self.id_prefix, self.next_id)
    }

    fn track(&mut self, stanza: String, account: AccountId, peer: String, line: String) {
        self.stanzas.insert(stanza.clone(), (account, peer, line));
        self.stanza_order.push_back(stanza);
        while self.stanza_order.len() > TRACKED_STANZAS {
            if let Some(old) = self.stanza_order.pop_front() {
                self.stanzas.remove(&old);
            }
        }
    }

    /// The line a delivered stanza carried, if we track it.
    pub(crate) fn delivered(&mut self, stanza: &str) -> Option<(AccountId, String, String)> {
        self.stanzas.remove(stanza)
    }

    /// What must be written to the vault now, if anything.
    pub(crate) async fn take_changes(&mut self) -> Option<ToSave> {
        if !self.dirty_files && !self.dirty_policies {
            return None;
        }
        let mut out = ToSave::default();
        if std::mem::take(&mut self.dirty_files) {
            let (files, _) = self
                .worker
                .call(None, |e| {
                    let keys = String::from_utf8_lossy(e.private_keys()).into_owned();
                    (Secret::new(keys), e.fingerprints_file())
                })
                .await?;
            out.keys = Some(files.0);
            match files.1 {
                Ok(f) => out.fingerprints = Some(f.to_vec()),
                Err(e) => tracing::warn!(error = %e, "could not write OTR fingerprints"),
            }
        }
        if std::mem::take(&mut self.dirty_policies) {
            let list: Vec<(&String, &String, OtrPolicySetting)> = self
                .buddy_policies
                .iter()
                .map(|((a, b), p)| (a, b, *p))
                .collect();
            out.policies = serde_json::to_vec(&list).ok();
        }
        Some(out)
    }
}

impl ChatLayer {
    /// Loads keys, fingerprints and policies from the vault (once).
    pub(crate) async fn load_otr(&mut self, stored: Stored) -> Result<()> {
        if self.otr.loaded {
            return Ok(());
        }
        self.otr.available()?;
        let Stored {
            keys,
            fingerprints,
            policies,
        } = stored;
        let r = self
            .otr
            .worker
            .call(None, move |e| -> std::result::Result<(), OtrError> {
                if let Some(k) = &keys {
                    e.load_private_keys(k.expose().as_bytes())?;
                }
                if let Some(f) = &fingerprints {
                    e.load_fingerprints(f)?;
                }
                Ok(())
            })
            .await
            .ok_or(CoreError::Stopped)?;
        r.0.map_err(|e| CoreError::InvalidInput(format!("the OTR data in the vault: {e}")))?;
        if let Some(p) = policies {
            let list: Vec<(String, String, OtrPolicySetting)> = serde_json::from_slice(&p)
                .map_err(|e| {
                    CoreError::InvalidInput(format!("the OTR policies in the vault: {e}"))
                })?;
            self.otr.buddy_policies = list.into_iter().map(|(a, b, p)| ((a, b), p)).collect();
        }
        self.otr.loaded = true;
        Ok(())
    }

    /// Sets up OTR for a newly connected account: its libotr name and policies; a key is
    /// made off the core task if it has none (the login goes on meanwhile).
    pub(crate) async fn otr_attach(
        &mut self,
        account: AccountId,
        address: &str,
        policy: OtrPolicySetting,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let bare = address.to_owned();
        let buddies: Vec<(String, OtrPolicy)> = self
            .otr
            .buddy_policies
            .iter()
            .filter(|((a, _), _)| *a == bare)
            .map(|((_, b), p)| (b.clone(), engine_policy(*p)))
            .collect();
        let ((name, fingerprint), produced) = self
            .otr
            .worker
            .call(None, move |e| {
                let names = e.key_accounts();
                let prefix = format!("{bare}/");
                let name = names
                    .iter()
                    .find(|n| **n == bare)
                    .or_else(|| names.iter().find(|n| n.starts_with(&prefix)))
                    .cloned()
                    .unwrap_or(bare);
                e.set_default_policy(&name, engine_policy(policy));
                for (b, p) in &buddies {
                    e.set_policy(&name, b, *p);
                }
                let fp = e.fingerprint(&name);
                (name, fp)
            })
            .await
            .ok_or(CoreError::Stopped)?;
        self.otr.names.insert(account, name.clone());
        match fingerprint {
            Some(fp) => {
                self.otr.keys.insert(account, fp);
            }
            // One already being made for it (the account reconnected) will do.
            None if self
                .otr
                .making
                .get(&account)
                .is_some_and(|m| m.name == name) => {}
            None => self.make_key(account, name, false, None),
        }
        self.apply_otr(produced, events, &mut Vec::new(), None);
        self.refresh_known().await;
        Ok(())
    }

    pub(crate) fn otr_detach(&mut self, account: AccountId) {
        self.otr.names.remove(&account);
        self.otr.keys.remove(&account);
        // A key still being made is kept when it comes (it is the account's, connected
        // or not), and what waited for it is read then.
    }

    /// Starts making a key for `account` off the core task; it comes back as a
    /// [`super::ChatInput::Key`].
    pub(super) fn make_key(
        &mut self,
        account: AccountId,
        name: String,
        replace: bool,
        done: Option<oneshot::Sender<Result<()>>>,
    ) {
        self.otr.next_token += 1;
        let token = self.otr.next_token;
        // A make this one replaces (the account was removed, and its number given
        // again) keeps nothing: what waited for it is read with this one.
        let held = self
            .otr
            .making
            .remove(&account)
            .map(|m| m.held)
            .unwrap_or_default();
        self.otr.making.insert(
            account,
            Making {
                token,
                name: name.clone(),
                superseded: false,
                held,
            },
        );
        let input = self.input.clone();
        tokio::task::spawn_blocking(move || {
            // Whatever happens in there, the layer hears back: otherwise the account
            // would hold its messages for ever.
            let file = std::panic::catch_unwind(|| OtrEngine::make_key_file(&name))
                .unwrap_or_else(|_| Err(OtrError::Unavailable("key generation failed".into())));
            let made = KeyMade {
                token,
                account,
                name,
                replace,
                file,
                done,
            };
            let _ = input.send(super::ChatInput::Key(made));
        });
    }

    /// Asks for a new key for a connected account: the receiver is told when it is in
    /// use and saved.
    pub(crate) fn request_key(
        &mut self,
        account: AccountId,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let name = self.otr.name(account)?;
        if self.otr.making.contains_key(&account) {
            return Err(CoreError::InvalidInput(
                "a key is already being made for this account".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        self.make_key(account, name, true, Some(tx));
        Ok(rx)
    }

    /// Puts a made key to use, and reads the messages that waited for it.
    pub(crate) async fn key_made(
        &mut self,
        made: KeyMade,
        events: &mut Vec<Event>,
        log: &mut Vec<Loggable>,
    ) {
        let KeyMade {
            token,
            account,
            name,
            replace,
            file,
            done,
        } = made;
        let current = self
            .otr
            .making
            .get(&account)
            .is_some_and(|m| m.token == token);
        let (held, superseded) = if current {
            self.otr
                .making
                .remove(&account)
                .map(|m| (m.held, m.superseded))
                .unwrap_or_default()
        } else {
            (Vec::new(), false)
        };
        let result = if superseded && replace {
            Err(CoreError::InvalidInput(
                "the key imported meanwhile is kept; ask for a new one again to replace it".into(),
            ))
        } else {
            self.use_key(account, &name, replace, file, events).await
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "OTR key not made");
            if current && done.is_none() {
                events.push(Event::CommandFailed {
                    command: crate::event::MAKE_OTR_KEY,
                    error: e.to_string(),
                    permanent: true,
                });
            }
        }
        if let Some(done) = done {
            self.otr.made.push((done, result));
        }
        for (message, _place) in held {
            if self.otr.names.get(&account) == Some(&name) {
                self.receive(account, message, events, log).await;
            } else {
                // The account went offline meanwhile: still read, as it would have been.
                self.receive_as(account, &name, message, events, log).await;
            }
        }
    }

    /// Answers the key requests put to use since last time: called once the vault has
    /// what changed (`saved`: or failed to), so a CLI that exits on the answer has its
    /// key on disk.
    pub(crate) fn answer_key_requests(&mut self, saved: bool) {
        for (done, result) in self.otr.made.drain(..) {
            let result = match result {
                Ok(()) if !saved => Err(CoreError::InvalidInput(
                    "the new key is in use but could not be saved".into(),
                )),
                other => other,
            };
            let _ = done.send(result);
        }
    }

    async fn use_key(
        &mut self,
        account: AccountId,
        name: &str,
        replace: bool,
        file: std::result::Result<Zeroizing<Vec<u8>>, OtrError>,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let file = file?;
        let for_name = name.to_owned();
        let (fp, produced) = self
            .otr
            .worker
            .call(None, move |e| {
                // One given to the account meanwhile (an import) is not replaced behind
                // the user's back.
                if !replace && e.fingerprint(&for_name).is_some() {
                    return Ok(None);
                }
                e.import_private_keys(&file)?;
                Ok::<_, OtrError>(e.fingerprint(&for_name))
            })
            .await
            .ok_or(CoreError::Stopped)?;
        self.apply_otr(produced, events, &mut Vec::new(), None);
        let Some(fp) = fp? else { return Ok(()) };
        self.otr.dirty_files = true;
        // Told only if it is this account's (its number may have been given again).
        if self.otr.names.get(&account).map(String::as_str) == Some(name) {
            self.otr.keys.insert(account, fp.clone());
            events.push(Event::OtrKey {
                account,
                fingerprint: fp,
            });
        }
        self.refresh_known().await;
        Ok(())
    }

    async fn refresh_known(&mut self) {
        let Some((list, _)) = self.otr.worker.call(None, |e| e.known_fingerprints()).await else {
            return;
        };
        self.otr.known = list
            .into_iter()
            .filter_map(|k| {
                Some(KnownFingerprintView {
                    account: self.otr.account_of(&k.account)?,
                    peer: k.peer,
                    fingerprint: k.fingerprint,
                    verified: k.verified,
                })
            })
            .collect();
    }

    /// The policy in force for a buddy.
    pub(crate) fn policy_for(&self, account: AccountId, peer: &str) -> OtrPolicySetting {
        let Some(a) = self.accounts.get(&account) else {
            return OtrPolicySetting::default();
        };
        self.otr
            .buddy_policies
            .get(&(a.jid.to_string(), peer.to_owned()))
            .copied()
            .unwrap_or(a.otr_policy)
    }

    /// Sends a 1:1 message through OTR. The line appears at once; under "require" it is
    /// held (and shown so) until the conversation is private.
    pub(crate) async fn send(
        &mut self,
        account: AccountId,
        to: &str,
        body: String,
        events: &mut Vec<Event>,
        log: &mut Vec<Loggable>,
    ) -> Result<Reply> {
        if body.trim().is_empty() {
            return Err(CoreError::InvalidInput("the message is empty".into()));
        }
        if body.len() > hush_signaling::xmpp::chat::MAX_BODY {
            return Err(CoreError::InvalidInput(format!(
                "a message is at most {} KiB",
                hush_signaling::xmpp::chat::MAX_BODY / 1024
            )));
        }
        let peer = jid(to)?.to_string();
        self.account(account)?;
        let name = self.otr.name(account)?;
        let text = body.clone();
        let (n, p) = (name.clone(), peer.clone());
        let ((before, result), produced) = self
            .otr
            .worker
            .call(Some((&name, &peer)), move |e| {
                let before = e.state(&n, &p);
                (before, e.send(&n, &p, &text))
            })
            .await
            .ok_or(CoreError::Stopped)?;
        let held = match result {
            Ok(()) => false,
            Err(OtrError::Held) => true,
            Err(OtrError::NotPrivate(_)) => {
                self.apply_otr(produced, events, log, None);
                return Err(CoreError::InvalidInput(format!(
                    "{peer} ended the private conversation: end it too, or restart it, before writing"
                )));
            }
            Err(e) => {
                self.apply_otr(produced, events, log, None);
                return Err(e.into());
            }
        };
        let line_id = self.otr.new_stanza_id();
        let me = self.account(account)?.jid.to_string();
        let line = ChatLine {
            id: line_id.clone(),
            sender: me,
            from_me: true,
            body,
            at_unix_ms: now_ms(),
            delivered: false,
            delayed: false,
            encrypted: held
                || matches!(
                    before,
                    ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified
                ),
            held,
            notice: false,
        };
        let conv = self.conversation(account, &peer);
        let first = !conv.engaged;
        conv.engaged = true;
        if first {
            self.engage_account(account, &peer);
        }
        let budget = self.line_budget(account, &peer);
        let conv = self.conversation(account, &peer);
        push_line(&mut conv.lines, line.clone(), budget);
        log.push((account, peer.clone(), line.clone()));
        events.push(Event::ChatLine {
            account,
            peer: peer.clone(),
            line,
        });
        let carrier = (!held).then_some((account, peer, line_id));
        self.apply_otr(produced, events, log, carrier);
        Ok(Reply::Done)
    }

    /// Hands a received 1:1 body to OTR and shows what it yields.
    pub(crate) async fn receive(
        &mut self,
        account: AccountId,
        message: Received,
        events: &mut Vec<Event>,
        log: &mut Vec<Loggable>,
    ) {
        let Ok(name) = self.otr.name(account) else {
            return;
        };
        self.receive_as(account, &name, message, events, log).await;
    }

    /// Reads a message for `account` under libotr's account name `name`.
    async fn receive_as(
        &mut self,
        account: AccountId,
        name: &str,
        message: Received,
        events: &mut Vec<Event>,
        log: &mut Vec<Loggable>,
    ) {
        let Received {
            from,
            id,
            body,
            delayed,
        } = message;
        let name = name.to_owned();
        let (n, f) = (name.clone(), from.clone());
        let Some((shown, produced)) = self
            .otr
            .worker
            .call(Some((&name, &from)), move |e| e.receive(&n, &f, &body))
            .await
        else {
            return;
        };
        // Security changes first, so the line lands after "private conversation started".
        self.apply_otr(produced, events, log, None);
        if self.otr.dirty_files {
            // A new key or a verification: the list in Settings shows it now.
            self.refresh_known().await;
        }
        // A key exchange may have made one private conversation with a stranger too many.
        self.end_private_strangers(events).await;
        let Some(incoming) = shown else {
            return;
        };
        let line = ChatLine {
            id,
            sender: from.clone(),
            from_me: false,
            body: incoming.text,
            at_unix_ms: now_ms(),
            delivered: true,
            delayed,
            // What libotr decrypted, never what merely looks like OTR.
            encrypted: incoming.encrypted,
            held: false,
            notice: false,
        };
        let budget = self.line_budget(account, &from);
        // A line libotr decrypted cannot be decrypted again: it is always shown.
        let conv = if line.encrypted {
            Some(self.conversation(account, &from))
        } else {
            self.conversation_from(account, &from, events)
        };
        let Some(conv) = conv else {
            return;
        };
        push_line(&mut conv.lines, line.clone(), budget);
        log.push((account, from.clone(), line.clone()));
        events.push(Event::ChatLine {
            account,
            peer: from,
            line,
        });
    }

    /// Ends, through OTR, strangers' private conversations beyond the cap, least
    /// recently active first: the stranger is told, as by an end, and the user by a
    /// notice; the conversation can then make room like any idle one.
    async fn end_private_strangers(&mut self, events: &mut Vec<Event>) {
        for (account, peer) in self.excess_private_strangers() {
            let Ok(name) = self.otr.name(account) else {
                continue;
            };
            let (n, p) = (name.clone(), peer.clone());
            let Some((ended, produced)) = self
                .otr
                .worker
                .call(Some((&name, &peer)), move |e| e.end_for_room(&n, &p))
                .await
            else {
                return;
            };
            self.apply_otr(produced, events, &mut Vec::new(), None);
            if ended {
                let then = if self.policy_for(account, &peer) == OtrPolicySetting::Require {
                    "New messages wait until it is private again."
                } else {
                    "Messages are now sent unencrypted unless you restart it."
                };
                self.say(
                    account,
                    &peer,
                    format!(
                        "Too many private conversations with people who are not your \
                         contacts were open at once: this one, which you never took part \
                         in, was ended. {then}"
                    ),
                    events,
                );
            }
        }
    }

    /// Writes a notice into the conversation with `peer` (not made if there is no room).
    fn say(&mut self, account: AccountId, peer: &str, text: String, events: &mut Vec<Event>) {
        let line = notice(text);
        let budget = self.line_budget(account, peer);
        let Some(conv) = self.conversation_from(account, peer, events) else {
            return;
        };
        push_line(&mut conv.lines, line.clone(), budget);
        events.push(Event::ChatLine {
            account,
            peer: peer.to_owned(),
            line,
        });
    }

    /// Sends what OTR produced and turns its events into state, events and notices.
    /// `carrier`: the user line the transmits carry (to mark it delivered).
    fn apply_otr(
        &mut self,
        produced: Produced,
        events: &mut Vec<Event>,
        _log: &mut Vec<Loggable>,
        carrier: Option<(AccountId, String, String)>,
    ) {
        let Produced {
            transmits,
            events: otr_events,
            states,
        } = produced;
        for t in transmits {
            let Some(account) = self.otr.account_of(&t.account) else {
                continue;
            };
            let Ok(to) = jid(&t.to) else { continue };
            let stanza = self.otr.new_stanza_id();
            if let Some((a, p, l)) = &carrier
                && *a == account
                && *p == t.to
            {
                self.otr.track(stanza.clone(), *a, p.clone(), l.clone());
            }
            if let Some(acc) = self.accounts.get(&account) {
                acc.handle.command(XmppCommand::Send {
                    to,
                    body: t.body,
                    id: Some(stanza),
                });
            }
        }
        // Held lines that could not go out are marked first: the new state then
        // releases only the others.
        let (not_sent, otr_events): (Vec<OtrEvent>, Vec<OtrEvent>) = otr_events
            .into_iter()
            .partition(|e| matches!(e, OtrEvent::NotSent { .. }));
        for e in not_sent {
            self.otr_event(e, events);
        }
        // The new state first: whoever reacts to "authentication succeeded" or "private
        // conversation started" already sees it.
        for s in states {
            self.apply_state(s, events);
        }
        for e in otr_events {
            self.otr_event(e, events);
        }
    }

    fn apply_state(&mut self, s: PeerState, events: &mut Vec<Event>) {
        let Some(account) = self.otr.account_of(&s.account) else {
            return;
        };
        let security = s.state;
        let exists = self.chats.contains_key(&(account, s.peer.clone()));
        if !exists && security == ChatSecurity::NotPrivate && s.held == 0 && !s.known {
            return;
        }
        let private = matches!(
            s.state,
            ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified
        );
        // A private conversation is always shown (strangers' are bounded apart), as is
        // one with a buddy the user knows or with messages waiting.
        let conv = if private || s.known || s.held > 0 {
            Some(self.conversation(account, &s.peer))
        } else {
            self.conversation_from(account, &s.peer, events)
        };
        let Some(conv) = conv else {
            return;
        };
        conv.known = s.known;
        let changed = conv.security != security || conv.peer_fingerprint != s.fingerprint;
        conv.security = security;
        conv.peer_fingerprint = s.fingerprint.clone();
        let released = conv.held > 0 && s.held == 0;
        conv.held = s.held;
        if released && s.state != ChatSecurity::NotPrivate {
            let lines = Arc::make_mut(&mut conv.lines);
            for l in lines.iter_mut().filter(|l| l.held) {
                l.held = false;
            }
        }
        if changed {
            events.push(Event::ChatSecurity {
                account,
                peer: s.peer,
                security,
                fingerprint: s.fingerprint,
            });
        }
    }

    fn otr_event(&mut self, e: OtrEvent, events: &mut Vec<Event>) {
        let account_of = |n: &str| self.otr.account_of(n);
        match e {
            OtrEvent::Secure {
                account,
                peer,
                verified,
                fingerprint,
                refreshed,
            } => {
                let Some(id) = account_of(&account) else {
                    return;
                };
                let text = match (refreshed, verified) {
                    (true, _) => "Private conversation refreshed.".to_owned(),
                    (false, true) => {
                        format!("Private conversation with {peer} started (verified).")
                    }
                    (false, false) => format!(
                        "Private conversation with {peer} started, but {peer} is not verified: \
                         compare fingerprints ({fingerprint}) or ask a question only they can answer."
                    ),
                };
                self.say(id, &peer, text, events);
            }
            OtrEvent::Insecure { account, peer } => {
                let Some(id) = account_of(&account) else {
                    return;
                };
                let text = if self.policy_for(id, &peer) == OtrPolicySetting::Require {
                    "Private conversation ended. New messages wait until it is private again."
                } else {
                    "Private conversation ended. Messages are now sent unencrypted."
                };
                self.say(id, &peer, text.into(), events);
            }
            OtrEvent::Finished { account, peer } => {
                let Some(id) = account_of(&account) else {
                    return;
                };
                self.say(
                    id,
                    &peer,
                    format!(
                        "{peer} ended the private conversation. End it too, or restart it, \
                         before writing: nothing is sent until you do."
                    ),
                    events,
                );
            }
            OtrEvent::NewFingerprint {
                account,
                peer,
                fingerprint,
                changed,
            } => {
                let Some(id) = account_of(&account) else {
                    return;
                };
                self.otr.dirty_files = true;
                if let Some(conv) = self.conversation_from(id, &peer, events) {
                    conv.fingerprint_changed = changed;
                }
                let text = if changed {
                    format!(
                        "WARNING: {peer} now uses a different OTR key ({fingerprint}) than \
                         before. It may be a new device, or someone listening in: verify it."
                    )
                } else {
                    format!("{peer}'s OTR fingerprint: {fingerprint} (not verified yet).")
                };
                self.say(id, &peer, text, events);
                events.push(Event::OtrFingerprint {
                    account: id,
                    peer,
                    fingerprint,
                    changed,
                });
            }
            OtrEvent::Smp {
                account,
                peer,
                event,
            } => {
                let Some(id) = account_of(&account) else {
                    return;
                };
                let view = smp_view(&event);
                let text = match &event {
                    SmpEvent::AskedQuestion(q) => {
                        Some(format!("{peer} asks to authenticate: \"{q}\" — answer it."))
                    }
                    SmpEvent::AskedSecret => Some(format!(
                        "{peer} asks to authenticate with a shared secret — enter it."
                    )),
                    SmpEvent::Succeeded => {
                        self.otr.dirty_files = true;
                        Some(format!("Authentication succeeded: {peer} is verified."))
                    }
                    SmpEvent::Failed => Some(format!(
                        "Authentication failed: the answers differ. {peer} is not verified."
                    )),
                    SmpEvent::Aborted => Some("Authentication aborted.".into()),
                    SmpEvent::Error => Some("Authentication failed with a protocol error.".into()),
                    SmpEvent::Progress(_) => None,
                };
                if let Some(conv) = self.conversation_from(id, &peer, events) {
                    conv.smp = Some(view.clone());
                }
                if let Some(t) = text {
                    self.say(id, &peer, t, events);
                }
                events.push(Event::Smp {
                    account: id,
                    peer,
                    progress: view,
                });
            }
            OtrEvent::Notice {
                account,
                peer,
                text,
            } => {
                let Some(id) = account_of(&account) else {
                    return;
                };
                if peer.is_empty() {
                    let reason = if self.otr.making.contains_key(&id) {
                        "our OTR key is still being made: private conversations can start \
                         in a moment"
                            .to_owned()
                    } else {
                        text
                    };
                    events.push(Event::ChatError {
                        account: id,
                        reason,
                    });
                } else {
                    self.say(id, &peer, format!("OTR: {text}."), events);
                }
            }
            OtrEvent::NotSent {
                account,
                peer,
                text,
                reason,
            } => {
                let Some(id) = account_of(&account) else {
                    return;
                };
                // The first line still waiting with this text is the one (the engine
                // releases them in order); it shows as not sent, never as sent.
                if let Some(conv) = self.chats.get_mut(&(id, peer.clone())) {
                    let lines = Arc::make_mut(&mut conv.lines);
                    if let Some(l) = lines
                        .iter_mut()
                        .find(|l| l.from_me && l.held && l.body == text)
                    {
                        l.held = false;
                        l.encrypted = false;
                        l.body = format!("(not sent) {}", l.body);
                    }
                }
                self.say(
                    id,
                    &peer,
                    format!(
                        "A waiting message could not be sent when the conversation became \
                         private ({reason}): it is marked \"not sent\"."
                    ),
                    events,
                );
            }
            OtrEvent::FingerprintsChanged => self.otr.dirty_files = true,
        }
    }

    /// Runs an OTR command for a buddy.
    pub(crate) async fn otr_command(
        &mut self,
        command: crate::command::Command,
        events: &mut Vec<Event>,
    ) -> Result<Reply> {
        use crate::command::Command as C;
        let mut reply = Reply::Done;
        match command {
            C::OtrStart { account, peer } => {
                self.peer_op(account, &peer, events, |e, n, p| e.start(n, p))
                    .await?;
            }
            C::OtrEnd { account, peer } => {
                self.peer_op(account, &peer, events, |e, n, p| {
                    e.end(n, p)?;
                    e.drop_held(n, p);
                    Ok(())
                })
                .await?;
                let peer = jid(&peer)?.to_string();
                let conv = self.conversation(account, &peer);
                conv.smp = None;
                let lines = Arc::make_mut(&mut conv.lines);
                let mut dropped = 0;
                for l in lines.iter_mut().filter(|l| l.held) {
                    l.held = false;
                    l.body = format!("(not sent) {}", l.body);
                    dropped += 1;
                }
                if dropped > 0 {
                    self.say(
                        account,
                        &peer,
                        format!("{dropped} waiting message(s) were not sent."),
                        events,
                    );
                }
            }
            C::OtrTrust {
                account,
                peer,
                fingerprint,
                verified,
            } => {
                let wanted = normalize_fingerprint(&fingerprint);
                if wanted.len() != 40 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(CoreError::InvalidInput(
                        "a fingerprint is 40 hex digits (spaces do not matter)".into(),
                    ));
                }
                self.peer_op(account, &peer, events, move |e, n, p| {
                    e.set_verified(n, p, &wanted, verified)
                })
                .await
                .map_err(|e| match e {
                    CoreError::Otr(OtrError::InvalidInput(_)) => CoreError::InvalidInput(format!(
                        "{peer} never showed fingerprint {fingerprint}: do not trust it"
                    )),
                    e => e,
                })?;
            }
            C::OtrForget {
                account,
                peer,
                fingerprint,
            } => {
                let fp = normalize_fingerprint(&fingerprint);
                self.peer_op(account, &peer, events, move |e, n, p| e.forget(n, p, &fp))
                    .await?;
            }
            C::OtrAuthenticate {
                account,
                peer,
                question,
                secret,
            } => {
                if secret.is_empty() {
                    return Err(CoreError::InvalidInput("the secret is empty".into()));
                }
                self.peer_op(account, &peer, events, move |e, n, p| {
                    e.smp_start(n, p, question.as_deref(), secret.expose())
                })
                .await?;
                let peer = jid(&peer)?.to_string();
                self.conversation(account, &peer).smp = Some(SmpView::InProgress(0));
            }
            C::OtrRespond {
                account,
                peer,
                secret,
            } => {
                if secret.is_empty() {
                    return Err(CoreError::InvalidInput("the answer is empty".into()));
                }
                self.peer_op(account, &peer, events, move |e, n, p| {
                    e.smp_respond(n, p, secret.expose())
                })
                .await?;
            }
            C::OtrAbortAuthentication { account, peer } => {
                self.peer_op(account, &peer, events, |e, n, p| e.smp_abort(n, p))
                    .await?;
                let peer = jid(&peer)?.to_string();
                self.conversation(account, &peer).smp = Some(SmpView::Aborted);
            }
            C::OtrSetPolicy {
                account,
                peer,
                policy,
            } => self.set_policy(account, peer, policy).await?,
            C::OtrImport { keys, fingerprints } => {
                let keys_given = keys.is_some();
                let ((), produced) = self
                    .otr
                    .worker
                    .call(None, move |e| -> std::result::Result<(), OtrError> {
                        if let Some(k) = &keys {
                            e.import_private_keys(k.expose().as_bytes())?;
                        }
                        if let Some(f) = &fingerprints {
                            e.load_fingerprints(f.as_bytes())?;
                        }
                        Ok(())
                    })
                    .await
                    .map(|(r, p)| r.map(|()| ((), p)))
                    .ok_or(CoreError::Stopped)??;
                // A key the user asked for and still being made must not replace
                // what was just imported.
                if keys_given {
                    for m in self.otr.making.values_mut() {
                        m.superseded = true;
                    }
                }
                self.otr.dirty_files = true;
                self.apply_otr(produced, events, &mut Vec::new(), None);
                let names: Vec<(AccountId, String)> = self
                    .otr
                    .names
                    .iter()
                    .map(|(a, n)| (*a, n.clone()))
                    .collect();
                if let Some((fps, _)) = self
                    .otr
                    .worker
                    .call(None, move |e| {
                        names
                            .into_iter()
                            .map(|(a, n)| (a, e.fingerprint(&n)))
                            .collect::<Vec<_>>()
                    })
                    .await
                {
                    for (a, fp) in fps {
                        if let Some(fp) = fp {
                            self.otr.keys.insert(a, fp);
                        }
                    }
                }
                self.refresh_known().await;
            }
            C::OtrExport => {
                let ((keys, fps), _) = self
                    .otr
                    .worker
                    .call(None, |e| {
                        (
                            String::from_utf8_lossy(e.private_keys()).into_owned(),
                            e.fingerprints_file(),
                        )
                    })
                    .await
                    .ok_or(CoreError::Stopped)?;
                reply = Reply::OtrFiles {
                    keys: Secret::new(keys),
                    fingerprints: String::from_utf8_lossy(&fps?).into_owned(),
                };
            }
            _ => return Err(CoreError::InvalidInput("not an OTR command".into())),
        }
        if self.otr.dirty_files {
            self.refresh_known().await;
        }
        Ok(reply)
    }

    /// Runs `f(engine, account name, peer)` and applies what it produced.
    async fn peer_op(
        &mut self,
        account: AccountId,
        peer: &str,
        events: &mut Vec<Event>,
        f: impl FnOnce(
            &mut hush_signaling::otr::OtrEngine,
            &str,
            &str,
        ) -> std::result::Result<(), OtrError>
        + Send
        + 'static,
    ) -> Result<()> {
        let peer = jid(peer)?.to_string();
        self.account(account)?;
        let name = self.otr.name(account)?;
        let first = self
            .chats
            .get_mut(&(account, peer.clone()))
            .is_none_or(|conv| !std::mem::replace(&mut conv.engaged, true));
        if first {
            self.engage_account(account, &peer);
        }
        let (n, p) = (name.clone(), peer.clone());
        let (r, produced) = self
            .otr
            .worker
            .call(Some((&name, &peer)), move |e| f(e, &n, &p))
            .await
            .ok_or(CoreError::Stopped)?;
        self.apply_otr(produced, events, &mut Vec::new(), None);
        r?;
        Ok(())
    }

    async fn set_policy(
        &mut self,
        account: AccountId,
        peer: Option<String>,
        policy: Option<OtrPolicySetting>,
    ) -> Result<()> {
        let address = self.account(account)?.jid.to_string();
        let name = self.otr.name(account)?;
        let fallback = self.account(account)?.otr_policy;
        match peer {
            Some(peer) => {
                let peer = jid(&peer)?.to_string();
                let key = (address, peer.clone());
                match policy {
                    Some(p) => self.otr.buddy_policies.insert(key, p),
                    None => self.otr.buddy_policies.remove(&key),
                };
                self.otr.dirty_policies = true;
                let effective = engine_policy(policy.unwrap_or(fallback));
                self.otr
                    .worker
                    .call(None, move |e| e.set_policy(&name, &peer, effective))
                    .await;
            }
            None => {
                let p = policy.ok_or_else(|| {
                    CoreError::InvalidInput("an account always has a policy".into())
                })?;
                if let Some(a) = self.accounts.get_mut(&account) {
                    a.otr_policy = p;
                }
                self.otr
                    .worker
                    .call(None, move |e| e.set_default_policy(&name, engine_policy(p)))
                    .await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountConfig, AccountSettings, XmppSettings};

    #[tokio::test]
    async fn without_libotr_there_is_no_chat_and_the_user_is_told_why() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        // A library that does not match what we were built for: it must not start.
        let worker = OtrWorker::start_for(FRAGMENT_BYTES, (3, 0, 0));
        let mut layer = ChatLayer::with_otr(tx, Otr::with_worker(worker));
        let err = layer.load_otr(Stored::default()).await.expect_err("no OTR");
        let words = err.to_string();
        assert!(
            words.contains("private chat is unavailable")
                && words.contains("nothing is sent unencrypted"),
            "{words}"
        );
        assert!(!layer.otr_loaded());
        let config = AccountConfig {
            id: AccountId(1),
            address: "alice@localhost".into(),
            display_name: None,
            remember_password: true,
            settings: AccountSettings::Xmpp(XmppSettings {
                server: Some("127.0.0.1:9".into()),
                pinned_cert_sha256: None,
                socks5_proxy: None,
                otr_policy: OtrPolicySetting::Opportunistic,
            }),
        };
        let mut events = Vec::new();
        let err = layer
            .connect(&config, Secret::new("pw".into()), &mut events)
            .await
            .expect_err("no chat without OTR");
        assert!(
            err.to_string().contains("private chat is unavailable"),
            "{err}"
        );
        assert!(events.is_empty(), "not even \"connecting\": {events:?}");
    }

    #[test]
    fn a_held_message_libotr_refused_shows_as_not_sent_the_others_as_sent() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut layer = ChatLayer::new(tx);
        let a = AccountId(1);
        layer.otr.names.insert(a, "alice@localhost".into());
        let peer = "bob@localhost";
        let conv = layer.conversation(a, peer);
        conv.engaged = true;
        conv.held = 3;
        for body in ["one", "two", "three"] {
            let line = ChatLine {
                id: body.into(),
                sender: "alice@localhost".into(),
                from_me: true,
                body: body.into(),
                at_unix_ms: 0,
                delivered: false,
                delayed: false,
                encrypted: true,
                held: true,
                notice: false,
            };
            push_line(&mut conv.lines, line, super::super::limits::MAX_BYTES);
        }
        // The conversation went private; "two" could not be sent.
        let produced = Produced {
            transmits: Vec::new(),
            events: vec![OtrEvent::NotSent {
                account: "alice@localhost".into(),
                peer: peer.into(),
                text: "two".into(),
                reason: "OTR library error 55".into(),
            }],
            states: vec![PeerState {
                account: "alice@localhost".into(),
                peer: peer.into(),
                state: ChatSecurity::PrivateUnverified,
                fingerprint: None,
                held: 0,
                known: true,
            }],
        };
        let mut events = Vec::new();
        layer.apply_otr(produced, &mut events, &mut Vec::new(), None);
        let conv = &layer.chats[&(a, peer.to_owned())];
        assert_eq!(conv.held, 0);
        let mine: Vec<(&str, bool, bool)> = conv
            .lines
            .iter()
            .filter(|l| l.from_me)
            .map(|l| (l.body.as_str(), l.held, l.encrypted))
            .collect();
        assert_eq!(
            mine,
            vec![
                ("one", false, true),
                ("(not sent) two", false, false),
                ("three", false, true)
            ]
        );
        assert!(
            conv.lines
                .iter()
                .any(|l| l.notice && l.body.contains("could not be sent")),
            "the user is told"
        );
    }
}
