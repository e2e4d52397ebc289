//! A safe wrapper around one libotr user state. Not thread-safe (libotr is not): one
//! owner calls it; the core keeps it on a dedicated thread. Separate user states may
//! run on separate threads at once (a key is made in a scratch one): libotr's globals
//! are only written by `otrl_init`, and libgcrypt (≥ 1.6) locks its own state. Calls go in; messages to
//! send and events come out of a queue filled by libotr's callbacks, drained after each
//! call, so libotr is never re-entered.

use super::callbacks::{
    Callbacks, Pin, active_bytes, conversation, cstr_lossy, diverted, human, ops, secure_event,
};
use super::fragment::too_many_fragments;
use super::limits::{self, OtrLimits};
use super::memfile::MemFile;
use super::state::ChatSecurity;
use otr_sys as ffi;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::ptr::{self, NonNull};
use zeroize::Zeroizing;

/// libotr's protocol name for XMPP; Pidgin's files use it, so imported keys match.
pub const PROTOCOL: &CStr = c"prpl-jabber";
/// Largest incoming message body handed to libotr.
const MAX_IN: usize = 64 * 1024;
/// Most messages held for one buddy under "require encryption".
pub const MAX_HELD: usize = 256;
/// Smallest fragment size (see [`OtrEngine::set_max_message_size`]).
pub const MIN_FRAGMENT: usize = 64;
/// The libotr API version this wrapper was written against (what `OTRL_INIT` passes).
pub const API_VERSION: (u32, u32, u32) = (
    ffi::OTRL_VERSION_MAJOR,
    ffi::OTRL_VERSION_MINOR,
    ffi::OTRL_VERSION_SUB,
);

/// When to use OTR with a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtrPolicy {
    /// Only when the user starts it.
    Manual,
    /// Start when the other side shows it can (whitespace tag, query, error).
    #[default]
    Opportunistic,
    /// Never send plaintext: hold messages until private, start OTR.
    Require,
}

impl OtrPolicy {
    /// OTR v3 only: v2 has no instance tags, so its key exchange would run in the
    /// buddy's master context, beside the sessions the conversation is pinned to.
    /// Every client still in use (Pidgin, Jitsi/otr4j, libotr 4) speaks v3.
    pub(super) fn bits(self) -> c_uint {
        let v = ffi::OTRL_POLICY_ALLOW_V3;
        match self {
            OtrPolicy::Manual => v,
            OtrPolicy::Opportunistic => {
                v | ffi::OTRL_POLICY_SEND_WHITESPACE_TAG
                    | ffi::OTRL_POLICY_WHITESPACE_START_AKE
                    | ffi::OTRL_POLICY_ERROR_START_AKE
            }
            OtrPolicy::Require => {
                v | ffi::OTRL_POLICY_REQUIRE_ENCRYPTION
                    | ffi::OTRL_POLICY_WHITESPACE_START_AKE
                    | ffi::OTRL_POLICY_ERROR_START_AKE
            }
        }
    }
}

/// Socialist Millionaires' Protocol progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmpEvent {
    /// The buddy asks a question; answer with [`OtrEngine::smp_respond`].
    AskedQuestion(String),
    /// The buddy wants to compare a shared secret.
    AskedSecret,
    /// Under way (percent).
    Progress(u16),
    /// The answers matched: the fingerprint is now verified.
    Succeeded,
    /// They did not match.
    Failed,
    /// Aborted by either side.
    Aborted,
    /// The buddy misbehaved or a protocol error happened.
    Error,
}

/// Something the user should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtrEvent {
    /// The conversation became (or stayed) private.
    Secure {
        /// Local account.
        account: String,
        /// Buddy.
        peer: String,
        /// The fingerprint in use is verified.
        verified: bool,
        /// The fingerprint in use.
        fingerprint: String,
        /// A refresh of an existing session.
        refreshed: bool,
    },
    /// Back to plaintext (we ended it).
    Insecure {
        /// Local account.
        account: String,
        /// Buddy.
        peer: String,
    },
    /// The buddy ended the private conversation: sending is blocked until the user acts.
    Finished {
        /// Local account.
        account: String,
        /// Buddy.
        peer: String,
    },
    /// A fingerprint we had not seen for this buddy. `changed`: we knew another one.
    NewFingerprint {
        /// Local account.
        account: String,
        /// Buddy.
        peer: String,
        /// Its human form.
        fingerprint: String,
        /// The buddy had a different known fingerprint: warn.
        changed: bool,
    },
    /// SMP progress.
    Smp {
        /// Local account.
        account: String,
        /// Buddy.
        peer: String,
        /// What happened.
        event: SmpEvent,
    },
    /// A protocol notice for the user (unreadable message, setup error, ...).
    Notice {
        /// Local account.
        account: String,
        /// Buddy.
        peer: String,
        /// What happened, in words.
        text: String,
    },
    /// A message held until the conversation was private could not be sent when it
    /// became so (libotr refused it): it was neither sent nor kept.
    NotSent {
        /// Local account.
        account: String,
        /// Buddy.
        peer: String,
        /// The message as the user wrote it.
        text: String,
        /// Why, in words.
        reason: String,
    },
    /// The known-fingerprints list changed: save it.
    FingerprintsChanged,
}

/// A received message to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The text.
    pub text: String,
    /// libotr decrypted it from a private conversation. Anything else — plaintext, or
    /// something merely shaped like OTR — is false, whatever the body looked like.
    pub encrypted: bool,
}

/// A message for the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Local account.
    pub account: String,
    /// Recipient.
    pub to: String,
    /// The body to send.
    pub body: String,
}

/// A known fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFingerprint {
    /// Local account.
    pub account: String,
    /// Buddy.
    pub peer: String,
    /// Human form: 5 groups of 8 hex digits.
    pub fingerprint: String,
    /// The user verified it.
    pub verified: bool,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtrError {
    /// No key for the account yet.
    #[error("no OTR key for {0}: generate one first")]
    NoKey(String),
    /// There is no private conversation to do this in.
    #[error("no private conversation with {0}")]
    NotPrivate(String),
    /// libotr refused (gcrypt error code).
    #[error("OTR library error {0}")]
    Library(u32),
    /// A key or fingerprint file could not be read.
    #[error("unreadable OTR file: {0}")]
    BadFile(String),
    /// An argument contains a NUL byte or is too long.
    #[error("{0}")]
    InvalidInput(String),
    /// The message was held: under "require encryption" it waits for the private session.
    #[error("held until the conversation is private")]
    Held,
    /// Too many messages already wait for this buddy's private conversation: this one
    /// was neither kept nor sent.
    #[error(
        "{max} messages are already waiting for a private conversation with {peer}; this one was not kept and not sent"
    )]
    TooManyHeld {
        /// The buddy.
        peer: String,
        /// How many may wait.
        max: usize,
    },
    /// The fingerprint is the one a conversation is using right now.
    #[error(
        "that fingerprint is in use in the private conversation with {0}: end the conversation first, then forget it"
    )]
    FingerprintInUse(String),
    /// The private session with the buddy now runs with a key the user has not
    /// verified, under the instance tag of the verified one (a key exchange reused it):
    /// nothing is sent to it.
    #[error(
        "the private conversation with {peer} was taken over by a key you have not verified ({fingerprint}); this message was not sent. Start the private conversation again to reach {peer}'s verified key, or verify that key if it is really {peer}"
    )]
    KeyChanged {
        /// The buddy.
        peer: String,
        /// The key now in that session, human form.
        fingerprint: String,
    },
    /// libotr did not start: there is no private chat, and so no chat at all.
    #[error(
        "private chat is unavailable: the OTR library did not start ({0}); chat stays off so that nothing is sent unencrypted"
    )]
    Unavailable(String),
}

fn cstring(s: &str) -> Result<CString, OtrError> {
    CString::new(s).map_err(|_| OtrError::InvalidInput("contains a NUL byte".into()))
}

fn check(err: ffi::gcry_error_t) -> Result<(), OtrError> {
    if err == 0 {
        Ok(())
    } else {
        Err(OtrError::Library(err))
    }
}

/// One libotr user state: the keys, fingerprints and conversations of this profile.
pub struct OtrEngine {
    us: NonNull<ffi::s_OtrlUserState>,
    ops: Box<ffi::OtrlMessageAppOps>,
    cb: Box<Callbacks>,
    /// Private keys as Pidgin's file, kept to seal in the vault.
    keys_file: Zeroizing<Vec<u8>>,
    held: HashMap<(String, String), VecDeque<String>>,
    limits: OtrLimits,
    /// When each buddy (account, peer) last sent or received something: a tick, so the
    /// idle ones can be told apart. Only buddies libotr has a context for.
    activity: HashMap<(String, String), u64>,
    tick: u64,
    /// Buddies the user wrote to, or started, ended or authenticated a conversation
    /// with: never dropped to make room.
    engaged: HashSet<(String, String)>,
    /// The user was told that conversations are being dropped to make room.
    told_full: bool,
    /// The keys the user's fingerprints file holds, per buddy (account, peer): the
    /// user's own record, never trimmed, and the buddy never dropped to make room.
    from_file: HashMap<(String, String), HashSet<[u8; 20]>>,
}

// SAFETY: the user state is only used through `&mut self`; libotr keeps no global state
// it writes after `otrl_init` (run once), and libgcrypt locks its own. Moving a user
// state to the thread that owns it, or using two on two threads, is fine.
unsafe impl Send for OtrEngine {}

impl OtrEngine {
    /// An empty user state. Fails, with words for the user, if libotr does not start:
    /// then there must be no chat at all rather than chat without OTR.
    pub fn new() -> Result<OtrEngine, OtrError> {
        Self::for_api_version(API_VERSION)
    }

    /// An empty user state, starting libotr as if this wrapper were built for API
    /// `version`: [`API_VERSION`] in real use; others prove that a mismatch is refused.
    pub fn for_api_version(version: (u32, u32, u32)) -> Result<OtrEngine, OtrError> {
        super::library::start(version)?;
        // SAFETY: plain constructor; NULL is checked.
        let us = NonNull::new(unsafe { ffi::otrl_userstate_create() })
            .ok_or_else(|| OtrError::Unavailable("libotr could not allocate its state".into()))?;
        Ok(OtrEngine {
            us,
            ops: Box::new(ops()),
            cb: Box::new(Callbacks {
                max_message_size: 0,
                us: Some(us),
                ..Default::default()
            }),
            keys_file: Zeroizing::new(Vec::new()),
            held: HashMap::new(),
            limits: OtrLimits::default(),
            activity: HashMap::new(),
            tick: 0,
            engaged: HashSet::new(),
            told_full: false,
            from_file: HashMap::new(),
        })
    }

    /// Replaces the bounds on what senders can make libotr keep.
    pub fn set_limits(&mut self, limits: OtrLimits) {
        self.limits = limits;
    }

    /// How many libotr contexts (buddies and their instances) exist: for tests and
    /// diagnostics of the bounds.
    pub fn context_count(&self) -> usize {
        // SAFETY: read-only walk of our own user state.
        unsafe { limits::context_count(self.us()) }
    }

    /// Bytes of partly received fragmented messages libotr holds, over all buddies.
    pub fn fragment_bytes(&self) -> usize {
        // SAFETY: read-only walk of our own user state.
        unsafe { limits::fragment_bytes(self.us()) }
    }

    /// How many buddies libotr keeps (master contexts).
    pub fn peer_count(&self) -> usize {
        // SAFETY: read-only walk of our own user state.
        unsafe { limits::master_count(self.us()) }
    }

    fn us(&self) -> ffi::OtrlUserState {
        self.us.as_ptr()
    }

    fn opdata(&mut self) -> *mut c_void {
        let p: *mut Callbacks = &mut *self.cb;
        p.cast()
    }

    /// Splits OTR messages into fragments no longer than `bytes` (0: never). Sizes
    /// under [`MIN_FRAGMENT`] are raised to it: libotr needs room for its 37-byte
    /// header, and divides by zero when the size equals it.
    pub fn set_max_message_size(&mut self, bytes: usize) {
        let bytes = if bytes == 0 {
            0
        } else {
            bytes.max(MIN_FRAGMENT)
        };
        self.cb.max_message_size = c_int::try_from(bytes).unwrap_or(c_int::MAX);
    }

    /// The policy for an account (contacts without their own).
    pub fn set_default_policy(&mut self, account: &str, policy: OtrPolicy) {
        self.cb.default_policy.insert(account.to_owned(), policy);
    }

    /// The policy for one contact.
    pub fn set_policy(&mut self, account: &str, peer: &str, policy: OtrPolicy) {
        self.engage(account, peer);
        self.cb
            .policies
            .insert((account.to_owned(), peer.to_owned()), policy);
    }

    fn policy(&self, account: &str, peer: &str) -> OtrPolicy {
        self.cb
            .policies
            .get(&(account.to_owned(), peer.to_owned()))
            .or_else(|| self.cb.default_policy.get(account))
            .copied()
            .unwrap_or_default()
    }

    /// Loads private keys from Pidgin's `otr.private_key` format, replacing ours. A
    /// file libotr cannot read changes nothing.
    pub fn load_private_keys(&mut self, file: &[u8]) -> Result<(), OtrError> {
        // libotr forgets the keys it had before it parses: try a scratch state first.
        OtrEngine::new()?.read_keys(file)?;
        self.read_keys(file)
    }

    /// Adds the keys of a Pidgin `otr.private_key` file to ours (same account: replaced).
    pub fn import_private_keys(&mut self, file: &[u8]) -> Result<(), OtrError> {
        let merged = super::keyfile::merge(&self.keys_file, file)?;
        self.load_private_keys(merged.as_bytes())
    }

    /// Loads a key file, as text (see [`Self::private_keys`]): what libotr reads is
    /// exactly what we keep.
    fn read_keys(&mut self, file: &[u8]) -> Result<(), OtrError> {
        let text = super::keyfile::to_text(file)?;
        let f = MemFile::with(text.as_bytes(), c"r")
            .ok_or_else(|| OtrError::BadFile("cannot stage the key file".into()))?;
        // SAFETY: our user state and an open FILE*.
        check(unsafe { ffi::otrl_privkey_read_FILEp(self.us(), f.ptr()) })
            .map_err(|_| OtrError::BadFile("not a readable otr.private_key file".into()))?;
        self.keys_file = Zeroizing::new(text.as_bytes().to_vec());
        Ok(())
    }

    /// The private keys in Pidgin's format (to seal in the vault, or export), always
    /// UTF-8 text: numbers libgcrypt wrote as raw bytes are given in hex instead.
    pub fn private_keys(&self) -> &[u8] {
        &self.keys_file
    }

    /// Generates a DSA key for `account` (takes a few seconds: call off the UI thread).
    /// Returns the updated key file.
    pub fn generate_key(&mut self, account: &str) -> Result<&[u8], OtrError> {
        let acc = cstring(account)?;
        let f = MemFile::empty()
            .ok_or_else(|| OtrError::BadFile("cannot stage the key file".into()))?;
        // SAFETY: our user state, an open FILE*, NUL-terminated strings.
        check(unsafe {
            ffi::otrl_privkey_generate_FILEp(self.us(), f.ptr(), acc.as_ptr(), PROTOCOL.as_ptr())
        })?;
        let text = super::keyfile::to_text(&f.contents())?;
        self.keys_file = Zeroizing::new(text.as_bytes().to_vec());
        Ok(&self.keys_file)
    }

    /// Generates a DSA key for `account` in a scratch state of its own, on any thread,
    /// so the engine that will use it goes on meanwhile: a key file holding that one
    /// account, for [`Self::import_private_keys`].
    pub fn make_key_file(account: &str) -> Result<Zeroizing<Vec<u8>>, OtrError> {
        let mut scratch = OtrEngine::new()?;
        Ok(Zeroizing::new(scratch.generate_key(account)?.to_vec()))
    }

    /// Our fingerprint for `account`, 5 groups of 8 hex digits.
    pub fn fingerprint(&self, account: &str) -> Option<String> {
        let acc = cstring(account).ok()?;
        let mut buf = [0 as c_char; ffi::OTRL_PRIVKEY_FPRINT_HUMAN_LEN as usize];
        // SAFETY: documented buffer size; returns NULL when there is no key.
        let p = unsafe {
            ffi::otrl_privkey_fingerprint(
                self.us(),
                buf.as_mut_ptr(),
                acc.as_ptr(),
                PROTOCOL.as_ptr(),
            )
        };
        (!p.is_null()).then(|| cstr_lossy(buf.as_ptr()))
    }

    /// The account names our keys are stored under (Pidgin adds "/Resource" for XMPP).
    pub fn key_accounts(&self) -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: walking libotr's list of private keys, read-only.
        unsafe {
            let mut k = (*self.us()).privkey_root;
            while !k.is_null() {
                out.push(cstr_lossy((*k).accountname));
                k = (*k).next;
            }
        }
        out
    }

    /// Loads known fingerprints from Pidgin's `otr.fingerprints` format. These keys,
    /// and the buddies they belong to, are the user's own record: no sender can make
    /// the engine trim or drop them (see [`OtrLimits`]).
    pub fn load_fingerprints(&mut self, file: &[u8]) -> Result<(), OtrError> {
        // What the file itself lists, read apart from what this session learned.
        let mut scratch = OtrEngine::new()?;
        scratch.read_fingerprints(file)?;
        let listed = scratch.fingerprint_records();
        self.read_fingerprints(file)?;
        for (account, peer, fingerprint, _) in listed {
            self.from_file
                .entry((account, peer))
                .or_default()
                .insert(fingerprint);
        }
        Ok(())
    }

    fn read_fingerprints(&mut self, file: &[u8]) -> Result<(), OtrError> {
        let f = MemFile::with(file, c"r")
            .ok_or_else(|| OtrError::BadFile("cannot stage the file".into()))?;
        // SAFETY: our user state, an open FILE*, no app data hook.
        check(unsafe {
            ffi::otrl_privkey_read_fingerprints_FILEp(self.us(), f.ptr(), None, ptr::null_mut())
        })
        .map_err(|_| OtrError::BadFile("not a readable otr.fingerprints file".into()))
    }

    /// Known fingerprints in Pidgin's format.
    pub fn fingerprints_file(&self) -> Result<Zeroizing<Vec<u8>>, OtrError> {
        let f =
            MemFile::empty().ok_or_else(|| OtrError::BadFile("cannot stage the file".into()))?;
        // SAFETY: our user state and an open FILE*.
        check(unsafe { ffi::otrl_privkey_write_fingerprints_FILEp(self.us(), f.ptr()) })?;
        Ok(f.contents())
    }

    /// Every known fingerprint.
    pub fn known_fingerprints(&self) -> Vec<KnownFingerprint> {
        self.fingerprint_records()
            .into_iter()
            .map(|(account, peer, fp, verified)| KnownFingerprint {
                account,
                peer,
                fingerprint: human(fp.as_ptr()),
                verified,
            })
            .collect()
    }

    /// Every known fingerprint: (account, peer, its 20 bytes, verified).
    fn fingerprint_records(&self) -> Vec<(String, String, [u8; 20], bool)> {
        let mut out = Vec::new();
        // SAFETY: read-only walk of libotr's context and fingerprint lists.
        unsafe {
            let mut c = (*self.us()).context_root;
            while !c.is_null() {
                if (*c).m_context == c {
                    let (account, peer) = limits::names(c);
                    let mut f = (*c).fingerprint_root.next;
                    while !f.is_null() {
                        if let Some(bytes) = limits::fingerprint_bytes(f) {
                            out.push((
                                account.clone(),
                                peer.clone(),
                                bytes,
                                ffi::otrl_context_is_fingerprint_trusted(f) != 0,
                            ));
                        }
                        f = (*f).next;
                    }
                }
                c = (*c).next;
            }
        }
        out
    }

    /// The user knows this buddy: took part in a conversation with it this session,
    /// verified one of its keys, or keeps its keys in the fingerprints file. Nothing a
    /// sender does drops such a buddy, its kept keys or its partly received messages.
    pub fn is_known(&self, account: &str, peer: &str) -> bool {
        let key = (account.to_owned(), peer.to_owned());
        self.engaged.contains(&key)
            || self.from_file.contains_key(&key)
            // SAFETY: a master context of our user state, read at once.
            || self
                .master(account, peer)
                .is_some_and(|m| unsafe { limits::has_verified(m) })
    }

    /// The conversation with `peer` (see [`conversation`]). Never simply the instance a
    /// message last came from: libotr notes that for every message before
    /// authenticating anything, so one DH-commit from a new instance tag would take a
    /// private conversation over.
    fn context(&self, account: &str, peer: &str) -> Option<*mut ffi::ConnContext> {
        let (acc, user) = (cstring(account).ok()?, cstring(peer).ok()?);
        // SAFETY: our own user state, on its owner thread; lookups only.
        unsafe { conversation(self.us(), &self.cb.pinned, &acc, &user) }
    }

    /// The key now in the buddy's pinned session, if it is not the one it was pinned
    /// with (see [`diverted`]).
    fn diverted(&self, account: &str, peer: &str) -> Option<String> {
        let (acc, user) = (cstring(account).ok()?, cstring(peer).ok()?);
        // SAFETY: our own user state, on its owner thread; lookups only.
        unsafe { diverted(self.us(), &self.cb.pinned, &acc, &user) }
    }

    /// The instance tag to address: the one [`Self::context`] picked (the master when
    /// that is the master: never libotr's pick, which may be a session nobody accepted).
    fn their_instance(&self, account: &str, peer: &str) -> ffi::otrl_instag_t {
        let Some(c) = self.context(account, peer) else {
            return ffi::OTRL_INSTAG_BEST;
        };
        // SAFETY: a context from our user state, read at once.
        let (tag, master) = unsafe { ((*c).their_instance, (*c).m_context == c) };
        if tag >= ffi::OTRL_MIN_VALID_INSTAG {
            tag
        } else if master {
            ffi::OTRL_INSTAG_MASTER
        } else {
            ffi::OTRL_INSTAG_BEST
        }
    }

    fn find_fingerprint(
        &self,
        account: &str,
        peer: &str,
        fingerprint: &str,
    ) -> Option<*mut ffi::Fingerprint> {
        let want = normalize_fingerprint(fingerprint);
        let c = self.context(account, peer)?;
        // SAFETY: read-only walk of one context's fingerprint list.
        unsafe {
            let master = (*c).m_context;
            let mut f = (*master).fingerprint_root.next;
            while !f.is_null() {
                if normalize_fingerprint(&human((*f).fingerprint)) == want {
                    return Some(f);
                }
                f = (*f).next;
            }
        }
        None
    }

    /// Marks a buddy's fingerprint verified (or not).
    pub fn set_verified(
        &mut self,
        account: &str,
        peer: &str,
        fingerprint: &str,
        verified: bool,
    ) -> Result<(), OtrError> {
        let f = self
            .find_fingerprint(account, peer, fingerprint)
            .ok_or_else(|| {
                OtrError::InvalidInput(format!("no such fingerprint known for {peer}"))
            })?;
        self.engage(account, peer);
        let trust: &CStr = if verified { c"verified" } else { c"" };
        // SAFETY: a fingerprint from our own list.
        unsafe { ffi::otrl_context_set_trust(f, trust.as_ptr()) };
        self.cb.events.push_back(OtrEvent::FingerprintsChanged);
        if verified {
            self.switch_to(account, peer, f);
        }
        self.after_state_change(account, peer);
        Ok(())
    }

    /// The user verified key `f`: if the conversation is not private with it but
    /// another session of the buddy is (one that was kept out, see [`pin`]), the
    /// conversation switches to that session.
    fn switch_to(&mut self, account: &str, peer: &str, f: *mut ffi::Fingerprint) {
        let encrypted = |c: *mut ffi::ConnContext| {
            // SAFETY: a context of our user state, read at once.
            unsafe { (*c).msgstate == ffi::OtrlMessageState_OTRL_MSGSTATE_ENCRYPTED }
        };
        if self
            .context(account, peer)
            // SAFETY: as above.
            .is_some_and(|c| encrypted(c) && unsafe { (*c).active_fingerprint } == f)
        {
            return;
        }
        let Some((c, instance)) = self
            .instances_using(f)
            .into_iter()
            .find(|(c, _)| encrypted(*c))
        else {
            return;
        };
        // SAFETY: a live context of our user state.
        let key = unsafe { active_bytes(c) };
        self.cb
            .pinned
            .insert((account.to_owned(), peer.to_owned()), Pin { instance, key });
        // SAFETY: a live context of our user state.
        let ev = unsafe { secure_event(c, false) };
        self.cb.events.push_back(ev);
    }

    /// Forgets a fingerprint. libotr would free it even while a conversation points at
    /// it, so: if the conversation with `peer` (the instance we talk to now) uses it, this
    /// is refused; other, older instances of the buddy still using it (a device the buddy
    /// left without ending) are ended first.
    pub fn forget(&mut self, account: &str, peer: &str, fingerprint: &str) -> Result<(), OtrError> {
        let f = self
            .find_fingerprint(account, peer, fingerprint)
            .ok_or_else(|| {
                OtrError::InvalidInput(format!("no such fingerprint known for {peer}"))
            })?;
        let users = self.instances_using(f);
        if !users.is_empty() {
            let current = self.context(account, peer);
            if users.iter().any(|u| Some(u.0) == current) {
                return Err(OtrError::FingerprintInUse(peer.to_owned()));
            }
            let (acc, user) = (cstring(account)?, cstring(peer)?);
            for (_, instance) in users {
                let opdata = self.opdata();
                // SAFETY: our user state, ops and opdata; libotr looks the instance up
                // itself, tells it the conversation ended and puts it in plaintext, which
                // clears its `active_fingerprint`.
                unsafe {
                    ffi::otrl_message_disconnect(
                        self.us(),
                        &*self.ops,
                        opdata,
                        acc.as_ptr(),
                        PROTOCOL.as_ptr(),
                        user.as_ptr(),
                        instance,
                    )
                };
            }
            if !self.instances_using(f).is_empty() {
                return Err(OtrError::FingerprintInUse(peer.to_owned()));
            }
        }
        // SAFETY: `f` is in our master context's list and no context points at it (checked
        // above), so freeing it leaves nothing dangling. 0: never forget the context itself
        // here (contexts go only through the limits, which also free what libotr leaks).
        unsafe { ffi::otrl_context_forget_fingerprint(f, 0) };
        self.cb.events.push_back(OtrEvent::FingerprintsChanged);
        Ok(())
    }

    /// The contexts of the fingerprint's buddy that point at it, with their instance
    /// tags: the master, which owns the list, or any instance (child), where a session
    /// keeps its `active_fingerprint` — whatever their state.
    fn instances_using(
        &self,
        f: *mut ffi::Fingerprint,
    ) -> Vec<(*mut ffi::ConnContext, ffi::otrl_instag_t)> {
        let mut out = Vec::new();
        // SAFETY: `f` is in our user state; its `context` is the master that owns it, and
        // the walk over the context list is read-only.
        unsafe {
            let master = (*f).context;
            let mut c = (*self.us()).context_root;
            while !c.is_null() {
                if (*c).m_context == master && (*c).active_fingerprint == f {
                    out.push((c, (*c).their_instance));
                }
                c = (*c).next;
            }
        }
        out
    }

    /// Where the conversation with `peer` stands.
    pub fn state(&self, account: &str, peer: &str) -> ChatSecurity {
        let Some(c) = self.context(account, peer) else {
            return ChatSecurity::NotPrivate;
        };
        // SAFETY: a context from our user state.
        unsafe {
            match (*c).msgstate {
                ffi::OtrlMessageState_OTRL_MSGSTATE_ENCRYPTED => {
                    let fp = (*c).active_fingerprint;
                    if !fp.is_null() && ffi::otrl_context_is_fingerprint_trusted(fp) != 0 {
                        ChatSecurity::PrivateVerified
                    } else {
                        ChatSecurity::PrivateUnverified
                    }
                }
                ffi::OtrlMessageState_OTRL_MSGSTATE_FINISHED => ChatSecurity::Finished,
                _ => ChatSecurity::NotPrivate,
            }
        }
    }

    /// The buddy's fingerprint in use, if private.
    pub fn peer_fingerprint(&self, account: &str, peer: &str) -> Option<String> {
        let c = self.context(account, peer)?;
        // SAFETY: a context from our user state.
        unsafe {
            let fp = (*c).active_fingerprint;
            (!fp.is_null() && !(*fp).fingerprint.is_null()).then(|| human((*fp).fingerprint))
        }
    }

    fn ensure_instag(&mut self, account: &str) -> Result<(), OtrError> {
        let acc = cstring(account)?;
        // SAFETY: lookup in our user state.
        let found = unsafe { ffi::otrl_instag_find(self.us(), acc.as_ptr(), PROTOCOL.as_ptr()) };
        if found.is_null() {
            let f = MemFile::empty()
                .ok_or_else(|| OtrError::BadFile("cannot stage the file".into()))?;
            // SAFETY: our user state and an open FILE*.
            check(unsafe {
                ffi::otrl_instag_generate_FILEp(self.us(), f.ptr(), acc.as_ptr(), PROTOCOL.as_ptr())
            })?;
        }
        Ok(())
    }

    /// Our instance tags in Pidgin's `otr.instance_tags` format, to keep them across
    /// restarts: buddies then see the same session of ours come back.
    pub fn instance_tags_file(&self) -> Result<Zeroizing<Vec<u8>>, OtrError> {
        let f =
            MemFile::empty().ok_or_else(|| OtrError::BadFile("cannot stage the file".into()))?;
        // SAFETY: our user state and an open FILE*.
        check(unsafe { ffi::otrl_instag_write_FILEp(self.us(), f.ptr()) })?;
        Ok(f.contents())
    }

    /// Loads instance tags from Pidgin's `otr.instance_tags` format (see
    /// [`Self::instance_tags_file`]); an account without one gets a new one when needed.
    pub fn load_instance_tags(&mut self, file: &[u8]) -> Result<(), OtrError> {
        let f = MemFile::with(file, c"r")
            .ok_or_else(|| OtrError::BadFile("cannot stage the file".into()))?;
        // SAFETY: our user state and an open FILE*.
        check(unsafe { ffi::otrl_instag_read_FILEp(self.us(), f.ptr()) })
            .map_err(|_| OtrError::BadFile("not a readable otr.instance_tags file".into()))
    }

    /// Starts (or refreshes) a private conversation: sends an OTR query.
    pub fn start(&mut self, account: &str, peer: &str) -> Result<(), OtrError> {
        self.engage(account, peer);
        if self.fingerprint(account).is_none() {
            return Err(OtrError::NoKey(account.to_owned()));
        }
        self.ensure_instag(account)?;
        // SAFETY: libotr allocates the query string; we copy and free it.
        let query = unsafe {
            let q = ffi::otrl_proto_default_query_msg(
                c"".as_ptr(),
                self.policy(account, peer).bits() as ffi::OtrlPolicy,
            );
            if q.is_null() {
                return Err(OtrError::Library(0));
            }
            let s = cstr_lossy(q);
            libc::free(q.cast());
            s
        };
        self.cb.transmits.push_back(Transmit {
            account: account.to_owned(),
            to: peer.to_owned(),
            body: query,
        });
        Ok(())
    }

    /// Ends the private conversation (the buddy is told).
    pub fn end(&mut self, account: &str, peer: &str) -> Result<(), OtrError> {
        self.engage(account, peer);
        let (acc, user) = (cstring(account)?, cstring(peer)?);
        let opdata = self.opdata();
        // SAFETY: our user state, ops table and opdata.
        unsafe {
            ffi::otrl_message_disconnect_all_instances(
                self.us(),
                &*self.ops,
                opdata,
                acc.as_ptr(),
                PROTOCOL.as_ptr(),
                user.as_ptr(),
            )
        };
        Ok(())
    }

    /// Ends the private conversation with a buddy the user does not know (see
    /// [`Self::is_known`]), to make room for others: the buddy is told, as by
    /// [`Self::end`], but unlike `end` this is not the user taking part. Returns false,
    /// changing nothing, for a buddy the user knows.
    pub fn end_for_room(&mut self, account: &str, peer: &str) -> bool {
        if self.is_known(account, peer) {
            return false;
        }
        let (Ok(acc), Ok(user)) = (cstring(account), cstring(peer)) else {
            return false;
        };
        let opdata = self.opdata();
        // SAFETY: our user state, ops table and opdata; libotr looks the buddy up itself.
        unsafe {
            ffi::otrl_message_disconnect_all_instances(
                self.us(),
                &*self.ops,
                opdata,
                acc.as_ptr(),
                PROTOCOL.as_ptr(),
                user.as_ptr(),
            )
        };
        true
    }

    /// Prepares `text` for the transport. Under "require encryption" a message for a
    /// conversation that is not private is held (and OTR started), never sent plain — as
    /// is one for a conversation whose key is not verified while the buddy has a
    /// verified key: it waits until the user verifies the key; at
    /// most [`MAX_HELD`] wait per buddy, and one more is refused rather than lost. Any
    /// error other than [`OtrError::Held`] means the message was neither kept nor sent;
    /// a held one that libotr refuses later comes back as [`OtrEvent::NotSent`].
    pub fn send(&mut self, account: &str, peer: &str, text: &str) -> Result<(), OtrError> {
        // What libotr could never take is refused now, not after waiting.
        cstring(account)?;
        cstring(peer)?;
        cstring(text)?;
        self.engage(account, peer);
        self.touch(account, peer);
        let key = (account.to_owned(), peer.to_owned());
        let require = self.policy(account, peer) == OtrPolicy::Require;
        let state = self.state(account, peer);
        if state == ChatSecurity::Finished {
            return Err(OtrError::NotPrivate(peer.to_owned()));
        }
        let diverted = self.diverted(account, peer);
        if let Some(fingerprint) = &diverted
            && !require
        {
            return Err(OtrError::KeyChanged {
                peer: peer.to_owned(),
                fingerprint: fingerprint.clone(),
            });
        }
        if require && !self.releases_held(account, peer) {
            if self.held(account, peer) >= MAX_HELD {
                return Err(OtrError::TooManyHeld {
                    peer: peer.to_owned(),
                    max: MAX_HELD,
                });
            }
            let private = matches!(
                state,
                ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified
            );
            // An error means the message is neither held nor sent: start first. A
            // private conversation with a changed key waits for the user instead.
            if !private && self.fingerprint(account).is_some() {
                self.start(account, peer)?;
            }
            let changed = match (&diverted, private) {
                (Some(fingerprint), _) => Some(fingerprint.clone()),
                (None, true) => self.peer_fingerprint(account, peer),
                (None, false) => None,
            };
            if let Some(fingerprint) = changed {
                self.cb.events.push_back(OtrEvent::Notice {
                    account: account.to_owned(),
                    peer: peer.to_owned(),
                    text: format!(
                        "your message to {peer} was not sent yet: the private conversation now \
                         uses a key you have not verified ({fingerprint}), while you verified \
                         another key of {peer}. It waits until you verify that key, or until \
                         {peer}'s verified key is back"
                    ),
                });
            }
            self.held.entry(key).or_default().push_back(text.to_owned());
            return Err(OtrError::Held);
        }
        self.encode(account, peer, text, require)
    }

    fn encode(
        &mut self,
        account: &str,
        peer: &str,
        text: &str,
        require: bool,
    ) -> Result<(), OtrError> {
        self.ensure_instag(account)?;
        let (acc, user, msg) = (cstring(account)?, cstring(peer)?, cstring(text)?);
        let mut newmsg: *mut c_char = ptr::null_mut();
        let instance = self.their_instance(account, peer);
        if require {
            self.cb.guard = Some((account.to_owned(), peer.to_owned()));
        }
        let opdata = self.opdata();
        // SAFETY: our user state/ops/opdata; libotr allocates newmsg, freed below.
        let err = unsafe {
            ffi::otrl_message_sending(
                self.us(),
                &*self.ops,
                opdata,
                acc.as_ptr(),
                PROTOCOL.as_ptr(),
                user.as_ptr(),
                instance,
                msg.as_ptr(),
                ptr::null_mut(),
                &mut newmsg,
                ffi::OtrlFragmentPolicy_OTRL_FRAGMENT_SEND_ALL,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
            )
        };
        self.cb.guard = None;
        let sent_by_lib = !newmsg.is_null();
        if sent_by_lib {
            // SAFETY: allocated by libotr for us.
            unsafe { ffi::otrl_message_free(newmsg) };
        }
        if err != 0 {
            return Err(OtrError::Library(err));
        }
        // Nothing injected and no replacement: libotr left the message as it was (not
        // private, no OTR wanted): the transport sends it as typed.
        if !sent_by_lib
            && !require
            && self.state(account, peer) == ChatSecurity::NotPrivate
            && !self.injected_last(account, peer)
        {
            self.cb.transmits.push_back(Transmit {
                account: account.to_owned(),
                to: peer.to_owned(),
                body: text.to_owned(),
            });
        }
        Ok(())
    }

    fn injected_last(&self, account: &str, peer: &str) -> bool {
        self.cb
            .transmits
            .back()
            .is_some_and(|t| t.account == account && t.to == peer)
    }

    /// Handles a received body. Returns the text to show — marked encrypted only if
    /// libotr decrypted it — or `None` for OTR protocol traffic (or anything dropped).
    /// Whatever the sender does, what libotr keeps for it stays within the limits.
    pub fn receive(&mut self, account: &str, from: &str, body: &str) -> Option<Incoming> {
        if body.len() > MAX_IN || too_many_fragments(body) {
            self.cb.events.push_back(OtrEvent::Notice {
                account: account.to_owned(),
                peer: from.to_owned(),
                text: "dropped an OTR message that was too long or split into too many pieces"
                    .into(),
            });
            return None;
        }
        if self.ensure_instag(account).is_err() {
            return None;
        }
        let (acc, user, msg) = (
            cstring(account).ok()?,
            cstring(from).ok()?,
            cstring(body).ok()?,
        );
        let mut newmsg: *mut c_char = ptr::null_mut();
        let mut tlvs: *mut ffi::OtrlTLV = ptr::null_mut();
        self.cb.decrypted = None;
        // The conversation before: a disconnect ends it only if it came from it.
        let before = self.context(account, from).map(|c| {
            // SAFETY: a context of our user state, read at once.
            (c, unsafe { (*c).msgstate })
        });
        let opdata = self.opdata();
        // SAFETY: our user state/ops/opdata; libotr allocates newmsg and tlvs, freed below.
        let internal = unsafe {
            ffi::otrl_message_receiving(
                self.us(),
                &*self.ops,
                opdata,
                acc.as_ptr(),
                PROTOCOL.as_ptr(),
                user.as_ptr(),
                msg.as_ptr(),
                &mut newmsg,
                &mut tlvs,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
            )
        };
        let mut shown = None;
        if !newmsg.is_null() {
            shown = Some(cstr_lossy(newmsg));
            // SAFETY: allocated by libotr.
            unsafe { ffi::otrl_message_free(newmsg) };
        }
        let mut disconnected = false;
        if !tlvs.is_null() {
            // SAFETY: allocated by libotr, freed once here.
            unsafe {
                disconnected =
                    !ffi::otrl_tlv_find(tlvs, ffi::OTRL_TLV_DISCONNECTED as u16).is_null();
                ffi::otrl_tlv_free(tlvs);
            }
        }
        if disconnected {
            self.disconnected(account, from, before);
        }
        let decrypted = self.cb.decrypted.take();
        self.touch(account, from);
        self.enforce_limits(account, from);
        self.after_state_change(account, from);
        if internal != 0 {
            return None;
        }
        let encrypted = match decrypted {
            None => false,
            Some(d) if d.ours => true,
            Some(d) if d.verified => {
                // Another session of the buddy with a key the user verified: a second
                // device of the buddy. Shown as private, and said to be from that key, and
                // whether what the user types back is private too.
                let replies = match self.state(account, from) {
                    ChatSecurity::PrivateVerified | ChatSecurity::PrivateUnverified => {
                        "your replies go to the session this conversation uses"
                    }
                    ChatSecurity::NotPrivate | ChatSecurity::Finished => {
                        "this conversation itself is not private now: start it again before \
                         you reply"
                    }
                };
                self.cb.events.push_back(OtrEvent::Notice {
                    account: account.to_owned(),
                    peer: from.to_owned(),
                    text: format!(
                        "the next private message came from another session of {from} (another \
                         device), with key {}, which you verified; {replies}",
                        d.fingerprint
                    ),
                });
                true
            }
            Some(d) => {
                // Decrypted, but in a session that is not this conversation, with a key
                // the user has not verified: shown neither as this conversation's private
                // line nor as plaintext from the buddy.
                self.cb.events.push_back(OtrEvent::Notice {
                    account: account.to_owned(),
                    peer: from.to_owned(),
                    text: format!(
                        "a private message from another session of {from}, with key {} \
                         (not verified), was not shown: it is not part of this conversation",
                        d.fingerprint
                    ),
                });
                return None;
            }
        };
        Some(Incoming {
            text: shown.unwrap_or_else(|| body.to_owned()),
            encrypted,
        })
    }

    /// A received message carried "conversation ended": the buddy ended this
    /// conversation only if it came from it (it went from private to finished), not from
    /// another session of the buddy.
    fn disconnected(
        &mut self,
        account: &str,
        peer: &str,
        before: Option<(*mut ffi::ConnContext, ffi::OtrlMessageState)>,
    ) {
        let finished = ffi::OtrlMessageState_OTRL_MSGSTATE_FINISHED;
        if before.is_some_and(|(_, was)| was == finished) {
            // The conversation had already ended: the user was told then.
            return;
        }
        // SAFETY: `c` was a context of our user state before the receive, and receiving
        // frees no context (only the limits do, and they run after this).
        let ours = before.is_some_and(|(c, _)| unsafe { (*c).msgstate } == finished);
        if ours {
            self.cb.events.push_back(OtrEvent::Finished {
                account: account.to_owned(),
                peer: peer.to_owned(),
            });
        } else {
            self.cb.events.push_back(OtrEvent::Notice {
                account: account.to_owned(),
                peer: peer.to_owned(),
                text: format!(
                    "another session of {peer}, not the one this conversation uses, ended \
                     its private conversation; this one is unchanged"
                ),
            });
        }
    }

    /// Notes that the user took part in the conversation with `peer`.
    fn engage(&mut self, account: &str, peer: &str) {
        let key = (account.to_owned(), peer.to_owned());
        if !self.engaged.contains(&key) {
            self.engaged.insert(key);
        }
    }

    /// Notes activity with `peer` (only once libotr has a context for it).
    fn touch(&mut self, account: &str, peer: &str) {
        self.tick += 1;
        let tick = self.tick;
        match self
            .activity
            .get_mut(&(account.to_owned(), peer.to_owned()))
        {
            Some(t) => *t = tick,
            None => {
                self.activity
                    .insert((account.to_owned(), peer.to_owned()), tick);
            }
        }
    }

    /// Trims what libotr keeps after `peer` sent something: its instances, fingerprints
    /// and fragments, then other idle buddies while there are too many. See
    /// [`OtrLimits`] for what goes first and what never goes.
    fn enforce_limits(&mut self, account: &str, peer: &str) {
        let l = self.limits;
        let master = self.master(account, peer);
        let current = self.context(account, peer).unwrap_or(ptr::null_mut());
        let none = HashSet::new();
        let kept = self
            .from_file
            .get(&(account.to_owned(), peer.to_owned()))
            .unwrap_or(&none);
        let known = |m: *mut ffi::ConnContext| {
            // SAFETY: trim_fragments passes master contexts of our user state.
            let key = unsafe { limits::names(m) };
            self.engaged.contains(&key)
                || self.from_file.contains_key(&key)
                // SAFETY: as above.
                || unsafe { limits::has_verified(m) }
        };
        // SAFETY: our own user state on its owner thread; `master` is one of its master
        // contexts (or null), `current` one of its family (or null), and nothing we hold
        // points into what the trims free.
        let (trimmed_keys, discarded) = unsafe {
            if let Some(m) = master {
                limits::trim_instances(self.us(), m, l.instances, current);
            }
            let trimmed_keys = master
                .is_some_and(|m| limits::trim_fingerprints(self.us(), m, l.fingerprints, kept));
            let discarded = limits::trim_fragments(
                self.us(),
                master.unwrap_or(ptr::null_mut()),
                l.fragment_bytes,
                l.fragment_total,
                &known,
            );
            (trimmed_keys, discarded)
        };
        if trimmed_keys {
            self.cb.events.push_back(OtrEvent::FingerprintsChanged);
        }
        for ((account, peer), too_long) in discarded {
            let text = if too_long {
                format!(
                    "a long message from this sender was discarded: its pieces came to more than {} KiB",
                    l.fragment_bytes / 1024
                )
            } else {
                "a long message from this sender had arrived only in part and was discarded: \
                 too many partly received messages at once"
                    .to_owned()
            };
            self.cb.events.push_back(OtrEvent::Notice {
                account,
                peer,
                text,
            });
        }
        // SAFETY: read-only count.
        if unsafe { limits::master_count(self.us()) } > l.peers {
            self.make_room(account, peer);
        }
    }

    /// Forgets idle buddies while more than the limit of those that only wrote to us
    /// are kept, least valuable first. The buddy that just wrote stays.
    fn make_room(&mut self, account: &str, peer: &str) {
        // SAFETY: read-only walk of our own user state.
        let masters = unsafe { limits::masters(self.us()) };
        let mut counted = 0usize;
        let mut candidates: Vec<(u8, u64, limits::Master)> = Vec::new();
        for m in masters {
            let key = (m.account.clone(), m.peer.clone());
            // Buddies the user knows are neither counted nor dropped.
            if self.engaged.contains(&key) || m.verified || self.from_file.contains_key(&key) {
                continue;
            }
            let seen = self.activity.get(&key).copied();
            let tier = match (m.plaintext, m.fingerprints, seen) {
                (true, 0, _) => 0,
                // Known only through a key the user forgot since, and silent: not a
                // sender's doing.
                (_, _, None) => continue,
                (true, _, Some(_)) => 1,
                (false, _, Some(_)) => 2,
            };
            counted += 1;
            if m.account == account && m.peer == peer {
                continue;
            }
            candidates.push((tier, seen.unwrap_or(0), m));
        }
        let excess = counted.saturating_sub(self.limits.peers);
        candidates.sort_by_key(|(tier, seen, _)| (*tier, *seen));
        let mut fingerprints_lost = false;
        for (tier, _, m) in candidates.into_iter().take(excess) {
            // SAFETY: `m.ptr` is a master of our user state from the walk above; each
            // forget frees only that buddy's contexts, which no other candidate shares.
            if !unsafe { limits::forget_master(self.us(), m.ptr) } {
                continue;
            }
            let key = (m.account.clone(), m.peer.clone());
            self.activity.remove(&key);
            self.cb.pinned.remove(&key);
            fingerprints_lost |= m.fingerprints > 0;
            if tier == 2 {
                self.cb.events.push_back(OtrEvent::Notice {
                    account: m.account.clone(),
                    peer: m.peer.clone(),
                    text: "too many private conversations were open at once: this idle one, which you never took part in, was closed".into(),
                });
            }
            if !self.told_full {
                self.told_full = true;
                tracing::warn!("OTR: many senders at once; idle conversations are being dropped");
            }
        }
        if fingerprints_lost {
            self.cb.events.push_back(OtrEvent::FingerprintsChanged);
        }
    }

    /// The buddy's master context, if libotr has one.
    fn master(&self, account: &str, peer: &str) -> Option<*mut ffi::ConnContext> {
        let (acc, user) = (cstring(account).ok()?, cstring(peer).ok()?);
        // SAFETY: lookup in our user state; add_if_missing 0 creates nothing.
        let c = unsafe {
            ffi::otrl_context_find(
                self.us(),
                user.as_ptr(),
                acc.as_ptr(),
                PROTOCOL.as_ptr(),
                ffi::OTRL_INSTAG_MASTER,
                0,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
            )
        };
        (!c.is_null()).then_some(c)
    }

    /// The conversation is private in a way held messages may go out in: with a
    /// verified key, or with an unverified one only while the buddy has no verified key
    /// (a key that changed under a verified buddy waits for the user).
    fn releases_held(&self, account: &str, peer: &str) -> bool {
        match self.state(account, peer) {
            ChatSecurity::PrivateVerified => true,
            ChatSecurity::PrivateUnverified => !self
                .master(account, peer)
                // SAFETY: a master context of our user state, read at once.
                .is_some_and(|m| unsafe { limits::has_verified(m) }),
            ChatSecurity::NotPrivate | ChatSecurity::Finished => false,
        }
    }

    /// Sends held messages once the conversation is private (see
    /// [`Self::releases_held`]).
    fn after_state_change(&mut self, account: &str, peer: &str) {
        let key = (account.to_owned(), peer.to_owned());
        if self.releases_held(account, peer)
            && let Some(q) = self.held.remove(&key)
        {
            for text in q {
                let require = self.policy(account, peer) == OtrPolicy::Require;
                if let Err(e) = self.encode(account, peer, &text, require) {
                    tracing::warn!(error = %e, "a held message could not be sent");
                    self.cb.events.push_back(OtrEvent::NotSent {
                        account: account.to_owned(),
                        peer: peer.to_owned(),
                        text,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// Messages held under "require encryption" for this buddy.
    pub fn held(&self, account: &str, peer: &str) -> usize {
        self.held
            .get(&(account.to_owned(), peer.to_owned()))
            .map_or(0, |q| q.len())
    }

    /// Drops held messages (the user gave up), returning them for a clear refusal.
    pub fn drop_held(&mut self, account: &str, peer: &str) -> Vec<String> {
        self.held
            .remove(&(account.to_owned(), peer.to_owned()))
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Starts SMP with a shared secret, or with a question whose answer is the secret.
    pub fn smp_start(
        &mut self,
        account: &str,
        peer: &str,
        question: Option<&str>,
        secret: &str,
    ) -> Result<(), OtrError> {
        self.engage(account, peer);
        let c = self.private_context(account, peer)?;
        let opdata = self.opdata();
        // SAFETY: a private context of our user state; secret bytes with length.
        unsafe {
            match question {
                Some(q) => {
                    let q = cstring(q)?;
                    ffi::otrl_message_initiate_smp_q(
                        self.us(),
                        &*self.ops,
                        opdata,
                        c,
                        q.as_ptr(),
                        secret.as_ptr(),
                        secret.len(),
                    )
                }
                None => ffi::otrl_message_initiate_smp(
                    self.us(),
                    &*self.ops,
                    opdata,
                    c,
                    secret.as_ptr(),
                    secret.len(),
                ),
            }
        }
        Ok(())
    }

    /// Answers the buddy's SMP question or shared-secret request.
    pub fn smp_respond(&mut self, account: &str, peer: &str, secret: &str) -> Result<(), OtrError> {
        self.engage(account, peer);
        let c = self.private_context(account, peer)?;
        let opdata = self.opdata();
        // SAFETY: as above.
        unsafe {
            ffi::otrl_message_respond_smp(
                self.us(),
                &*self.ops,
                opdata,
                c,
                secret.as_ptr(),
                secret.len(),
            )
        };
        Ok(())
    }

    /// Aborts a running SMP.
    pub fn smp_abort(&mut self, account: &str, peer: &str) -> Result<(), OtrError> {
        let c = self.private_context(account, peer)?;
        let opdata = self.opdata();
        // SAFETY: as above.
        unsafe { ffi::otrl_message_abort_smp(self.us(), &*self.ops, opdata, c) };
        Ok(())
    }

    fn private_context(
        &self,
        account: &str,
        peer: &str,
    ) -> Result<*mut ffi::ConnContext, OtrError> {
        if !matches!(
            self.state(account, peer),
            ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified
        ) {
            return Err(OtrError::NotPrivate(peer.to_owned()));
        }
        // The child context that is private (OTRL_INSTAG_BEST picks it).
        self.context(account, peer)
            .ok_or_else(|| OtrError::NotPrivate(peer.to_owned()))
    }

    /// The next message for the transport.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.cb.transmits.pop_front()
    }

    /// The next event. A new fingerprint for a buddy we knew another one for is
    /// reported as `changed`.
    pub fn poll_event(&mut self) -> Option<OtrEvent> {
        let ev = self.cb.events.pop_front()?;
        if let OtrEvent::NewFingerprint {
            account,
            peer,
            fingerprint,
            ..
        } = &ev
        {
            let others = self
                .known_fingerprints()
                .into_iter()
                .filter(|k| {
                    k.account == *account
                        && k.peer == *peer
                        && normalize_fingerprint(&k.fingerprint)
                            != normalize_fingerprint(fingerprint)
                })
                .count();
            return Some(OtrEvent::NewFingerprint {
                account: account.clone(),
                peer: peer.clone(),
                fingerprint: fingerprint.clone(),
                changed: others > 0,
            });
        }
        Some(ev)
    }

    /// Plaintext bodies our last-line guard refused to send (must stay 0).
    pub fn refused_plaintext(&self) -> u64 {
        self.cb.dropped_plaintext
    }
}

impl Drop for OtrEngine {
    fn drop(&mut self) {
        // SAFETY: freed exactly once; no callbacks run after this. libotr frees every
        // context but not their private parts, which we free once it is done.
        unsafe {
            let privates = limits::privates(self.us());
            ffi::otrl_userstate_free(self.us());
            for p in privates {
                limits::free_private(p);
            }
        }
    }
}

/// Lower-case hex without spaces, for comparing fingerprints as users paste them.
pub fn normalize_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}
