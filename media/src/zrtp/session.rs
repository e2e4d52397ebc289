//! A sans-IO ZRTP endpoint around one libbzrtp context: packets and time go in, packets,
//! events and the next timeout come out. libbzrtp calls back synchronously while we call
//! into it; the callbacks only queue, and the queues are drained after the call returns,
//! so the library is never re-entered.

use super::algorithms::{AuthTag, Cipher, Hash, KeyAgreement, Negotiated, SasType, SrtpProfile};
use super::inbound::Inbound;
use super::packet;
use super::store::{Zid, ZidStore};
use crate::MediaError;
use bzrtp_sys as ffi;
use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr::NonNull;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How often libbzrtp's retransmission timers must be serviced while negotiating.
const TICK: Duration = Duration::from_millis(10);
/// At most this many packets wait in the outbox; a flood from the peer cannot grow it.
const MAX_OUTBOX: usize = 64;
/// libbzrtp's "out of order" refusal (`BZRTP_PARSER_ERROR_OUTOFORDER` in its private
/// `packetParser.h`): the packet's number was not above the last one it accepted.
const OUT_OF_ORDER: u32 = 0xa004;
/// How often a packet refused as out of order is numbered again and retried.
const OUT_OF_ORDER_RETRIES: usize = 4;
/// libbzrtp's "not expected in this state" refusal (`BZRTP_PARSER_ERROR_UNEXPECTEDMESSAGE`).
const UNEXPECTED: u32 = 0xa200;
/// libbzrtp's refusals of a packet that contradicts what it accepted before from the
/// same peer (its private `stateMachine.h` and `packetParser.h`): a repetition that
/// differs from the original (`BZRTP_ERROR_UNMATCHINGPACKETREPETITION`, e.g. a second,
/// different Hello), a broken hash chain, MAC, Confirm MAC or hvi. A genuine peer never
/// sends one; two different endpoints answering from the same address do.
const CONFLICTS: [u32; 5] = [0xe002, 0xa080, 0xa100, 0xa020, 0xa400];

/// Where retained secrets and "SAS verified" flags are kept between calls, and under
/// which two identities this call reads and writes them.
#[derive(Debug, Clone)]
pub struct ZidCache {
    /// The cache shared by all calls.
    pub store: ZidStore,
    /// Our own identity (e.g. our SIP address).
    pub self_uri: String,
    /// The peer's identity (`user@host`).
    pub peer_uri: String,
}

/// What to offer in our Hello.
#[derive(Debug, Clone)]
pub struct ZrtpConfig {
    /// Key agreements in preference order (empty: libbzrtp's defaults).
    pub key_agreements: Vec<KeyAgreement>,
    /// SAS renderings in preference order.
    pub sas_types: Vec<SasType>,
    /// Ciphers in preference order.
    pub ciphers: Vec<Cipher>,
    /// Authentication tags in preference order.
    pub auth_tags: Vec<AuthTag>,
    /// Hashes in preference order.
    pub hashes: Vec<Hash>,
    /// Persistent cache; `None` gives a random ZID and no continuity.
    pub cache: Option<ZidCache>,
    /// Give up if not secure this long after start.
    pub handshake_timeout: Duration,
}

impl Default for ZrtpConfig {
    fn default() -> Self {
        ZrtpConfig {
            key_agreements: vec![
                KeyAgreement::X255,
                KeyAgreement::X448,
                KeyAgreement::Dh3k,
                KeyAgreement::Dh2k,
            ],
            sas_types: vec![SasType::B32, SasType::B256],
            ciphers: vec![Cipher::Aes1, Cipher::Aes3],
            auth_tags: vec![AuthTag::Hs80, AuthTag::Hs32],
            hashes: vec![Hash::S256, Hash::S384],
            cache: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// SRTP master keys for both directions. Wiped on drop.
pub struct SrtpKeys {
    /// Protection profile for both directions.
    pub profile: SrtpProfile,
    /// Key we encrypt with.
    pub local_key: Zeroizing<Vec<u8>>,
    /// Salt we encrypt with.
    pub local_salt: Zeroizing<Vec<u8>>,
    /// Key the peer encrypts with.
    pub remote_key: Zeroizing<Vec<u8>>,
    /// Salt the peer encrypts with.
    pub remote_salt: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Why a handshake did not end in the secure state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZrtpFailure {
    /// Nothing ZRTP ever came back: the peer does not do ZRTP.
    PeerDoesNotSupportZrtp,
    /// The peer signalled its Hello hash, so it does ZRTP, but none of its ZRTP packets
    /// reached us before the handshake deadline (lost, blocked, or sent elsewhere).
    PeerZrtpNeverArrived,
    /// A Hello from the peer's address does not match the `a=zrtp-hash` from its SDP:
    /// someone may be tampering with the call. Never a reason to go on in cleartext.
    HelloHashMismatch,
    /// Packets were exchanged but the handshake did not finish in time.
    Timeout,
    /// The handshake did not finish in time, and meanwhile packets that contradict each
    /// other came as the peer's (a second, different Hello; a broken hash chain): two
    /// endpoints answered, so someone may be interfering. Never a reason for cleartext.
    ConflictingPeers,
    /// libbzrtp put the channel into its error state.
    ProtocolError(String),
}

impl std::fmt::Display for ZrtpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZrtpFailure::PeerDoesNotSupportZrtp => f.write_str("peer does not support ZRTP"),
            ZrtpFailure::PeerZrtpNeverArrived => {
                f.write_str("the peer announced ZRTP but none of its ZRTP packets reached us")
            }
            ZrtpFailure::HelloHashMismatch => f.write_str(
                "possible tampering: a ZRTP Hello from the peer's address does not match the \
                 hash the peer signalled in its call setup",
            ),
            ZrtpFailure::Timeout => f.write_str("ZRTP key agreement did not complete in time"),
            ZrtpFailure::ConflictingPeers => f.write_str(
                "possible tampering: ZRTP packets that contradict each other came from the \
                 peer's address, and no key was agreed",
            ),
            ZrtpFailure::ProtocolError(e) => write!(f, "ZRTP failed: {e}"),
        }
    }
}

impl ZrtpFailure {
    /// The failure points at someone interfering with the call: it must end the call
    /// under every policy, never let it go on in cleartext.
    pub fn is_tampering(&self) -> bool {
        matches!(
            self,
            ZrtpFailure::HelloHashMismatch | ZrtpFailure::ConflictingPeers
        )
    }
}

/// The outcome of a finished handshake.
#[derive(Debug)]
pub struct Secured {
    /// The SAS to compare aloud.
    pub sas: String,
    /// The user verified this peer's key before, and the secret retained from an earlier
    /// call on this same address of ours matched (key continuity).
    pub verified: bool,
    /// Our cache held a secret for this peer that did not match: warn the user.
    pub cache_mismatch: bool,
    /// The peer's address has a verified key in our cache, but this call shows no
    /// continuity with it: another key, or the verified one without a secret retained
    /// on this address of ours. The user must compare the SAS again.
    pub new_key: bool,
    /// The peer's ZID, from the Hello libbzrtp accepted (bound into the SAS).
    pub peer_zid: Option<Zid>,
    /// The agreed algorithms.
    pub algorithms: Negotiated,
    /// SRTP keys for both directions.
    pub keys: SrtpKeys,
}

/// Something the caller must act on.
#[derive(Debug)]
pub enum ZrtpEvent {
    /// The channel is secure: start SRTP with these keys and show the SAS.
    Secure(Box<Secured>),
    /// The handshake failed; under a mandatory policy the call must end.
    Failed(ZrtpFailure),
}

/// Where the channel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZrtpState {
    /// Created; `start` not called yet.
    Idle,
    /// Handshake running.
    Negotiating,
    /// Keys agreed.
    Secure,
    /// Gave up.
    Failed(ZrtpFailure),
}

/// A master key and its salt, as libbzrtp hands them over.
type KeySalt = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

#[derive(Default)]
struct Callbacks {
    outbox: VecDeque<Vec<u8>>,
    local: Option<KeySalt>,
    remote: Option<KeySalt>,
    finished: Option<Finished>,
    dropped_outbound: u64,
}

struct Finished {
    sas: String,
    cache_mismatch: bool,
    algorithms: Option<Negotiated>,
    profile: Option<SrtpProfile>,
}

/// One channel of a context: a media stream's own packets, timers and state.
struct Channel {
    ssrc: u32,
    /// Registered with libbzrtp as this channel's client data: a stable address, kept
    /// as long as the context.
    callbacks: Box<Callbacks>,
    deadline: Option<Instant>,
    next_tick: Option<Instant>,
    state: ZrtpState,
    received_from_peer: bool,
    /// libbzrtp refused a packet as contradicting one it accepted (see [`CONFLICTS`]).
    conflict_seen: bool,
    /// The peer's `a=zrtp-hash` was given: it announced that it does ZRTP.
    peer_hash_signalled: bool,
    /// What of the peer's packets reaches libbzrtp, under which number; boxed, so a
    /// session waiting for an answer stays small.
    inbound: Box<Inbound>,
    events: VecDeque<ZrtpEvent>,
}

/// Most streams one call keys besides the first (Debian's libbzrtp allows one).
pub const MAX_EXTRA_CHANNELS: usize = 3;

/// The ZRTP endpoint of one call: its first channel (the audio stream), which does the
/// Diffie-Hellman exchange and gives the SAS, and further channels (video), keyed in
/// multistream mode from it once it is secure. The plain methods are the first
/// channel's; the `channel_*` ones take the SSRC of another.
pub struct ZrtpSession {
    ctx: NonNull<ffi::bzrtpContext_t>,
    main: Channel,
    extra: Vec<Channel>,
    epoch: Instant,
    /// Must outlive `ctx`: libbzrtp holds the store's connection and lock. Set before
    /// libbzrtp sees them, and dropped after the context (see `Drop`).
    cache: Option<ZidCache>,
    /// Keeps this call's cache entries from being dropped while libbzrtp may hold them.
    _live: Option<Box<super::store::LiveCall>>,
    /// The ZID of the Hello libbzrtp accepted.
    peer_zid: Option<Zid>,
    /// Our cache held a retained secret for this very (our address, peer address, peer
    /// ZID) when that Hello was accepted, before this handshake could write one.
    had_secret: bool,
    /// The handshake ended secure with that secret matching: this is the peer of the
    /// earlier calls, so the user's verdict on it may be withdrawn here.
    continuity: bool,
    handshake_timeout: Duration,
    /// What the first channel's handshake told the user (SAS, verdict, warnings): the
    /// further channels are keyed from it, so it holds for them too.
    main_outcome: Option<MainOutcome>,
}

#[derive(Debug, Clone)]
struct MainOutcome {
    sas: String,
    verified: bool,
    cache_mismatch: bool,
    new_key: bool,
}

// SAFETY: the context is only touched through `&mut self` and libbzrtp keeps no global
// mutable state across contexts; the shared cache is used under its own lock.
unsafe impl Send for ZrtpSession {}

unsafe extern "C" fn on_send(client: *mut c_void, packet: *const u8, len: u16) -> i32 {
    if packet.is_null() || client.is_null() {
        return -1;
    }
    // SAFETY: `client` is the Box<Callbacks> registered with this channel; libbzrtp
    // calls back only while we are inside one of its functions, on our thread.
    let cb = unsafe { &mut *(client as *mut Callbacks) };
    if cb.outbox.len() >= MAX_OUTBOX {
        cb.dropped_outbound += 1;
        return 0;
    }
    // SAFETY: libbzrtp passes a buffer of `len` bytes valid for this call.
    let bytes = unsafe { std::slice::from_raw_parts(packet, usize::from(len)) };
    cb.outbox.push_back(bytes.to_vec());
    0
}

fn copy_key(ptr: *const u8, len: u8) -> Option<Zeroizing<Vec<u8>>> {
    if ptr.is_null() || len == 0 {
        return None;
    }
    // SAFETY: libbzrtp guarantees `len` readable bytes at `ptr` during the callback.
    Some(Zeroizing::new(
        unsafe { std::slice::from_raw_parts(ptr, usize::from(len)) }.to_vec(),
    ))
}

unsafe extern "C" fn on_secrets(
    client: *mut c_void,
    secrets: *const ffi::bzrtpSrtpSecrets_t,
    part: u8,
) -> i32 {
    if secrets.is_null() || client.is_null() {
        return -1;
    }
    // SAFETY: see `on_send`; `secrets` is valid for the duration of the callback.
    let (cb, s) = unsafe { (&mut *(client as *mut Callbacks), &*secrets) };
    if u32::from(part) & ffi::ZRTP_SRTP_SECRETS_FOR_SENDER != 0
        && let (Some(k), Some(salt)) = (
            copy_key(s.selfSrtpKey, s.selfSrtpKeyLength),
            copy_key(s.selfSrtpSalt, s.selfSrtpSaltLength),
        )
    {
        cb.local = Some((k, salt));
    }
    if u32::from(part) & ffi::ZRTP_SRTP_SECRETS_FOR_RECEIVER != 0
        && let (Some(k), Some(salt)) = (
            copy_key(s.peerSrtpKey, s.peerSrtpKeyLength),
            copy_key(s.peerSrtpSalt, s.peerSrtpSaltLength),
        )
    {
        cb.remote = Some((k, salt));
    }
    0
}

unsafe extern "C" fn on_start_srtp(
    client: *mut c_void,
    secrets: *const ffi::bzrtpSrtpSecrets_t,
    // libbzrtp's own "SAS verified" flag: not used, see `ZrtpSession::user_verdicts`.
    _verified: i32,
) -> i32 {
    if secrets.is_null() || client.is_null() {
        return -1;
    }
    // SAFETY: see `on_secrets`.
    let (cb, s) = unsafe { (&mut *(client as *mut Callbacks), &*secrets) };
    let sas = if s.sas.is_null() {
        String::new()
    } else {
        // SAFETY: libbzrtp gives a NUL-terminated SAS string.
        unsafe { CStr::from_ptr(s.sas as *const c_char) }
            .to_string_lossy()
            .into_owned()
    };
    let algorithms = match (
        KeyAgreement::from_code(s.keyAgreementAlgo),
        Cipher::from_code(s.cipherAlgo),
        AuthTag::from_code(s.authTagAlgo),
        Hash::from_code(s.hashAlgo),
        SasType::from_code(s.sasAlgo),
    ) {
        (Some(key_agreement), Some(cipher), Some(auth_tag), Some(hash), Some(sas)) => {
            Some(Negotiated {
                key_agreement,
                cipher,
                auth_tag,
                hash,
                sas,
            })
        }
        _ => None,
    };
    cb.finished = Some(Finished {
        sas,
        cache_mismatch: s.cacheMismatch != 0,
        profile: algorithms.map(|a| SrtpProfile::from_negotiated(a.cipher, a.auth_tag)),
        algorithms,
    });
    0
}

fn check_rc(rc: i32, what: &'static str) -> Result<(), MediaError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(MediaError::Zrtp {
            what,
            code: rc as u32,
        })
    }
}

impl Channel {
    fn new(ssrc: u32) -> Channel {
        Channel {
            ssrc,
            callbacks: Box::default(),
            deadline: None,
            next_tick: None,
            state: ZrtpState::Idle,
            received_from_peer: false,
            conflict_seen: false,
            peer_hash_signalled: false,
            inbound: Box::default(),
            events: VecDeque::new(),
        }
    }

    /// Gives libbzrtp this channel's callback queues.
    fn register(&mut self, ctx: *mut ffi::bzrtpContext_t) -> Result<(), MediaError> {
        let client: *mut Callbacks = &mut *self.callbacks;
        // SAFETY: the Box has a stable address and lives as long as the context (the
        // channel is a field of the session that destroys the context).
        check_rc(
            unsafe { ffi::bzrtp_setClientData(ctx, self.ssrc, client.cast()) },
            "set client data",
        )
    }

    fn hello_hash(&self, ctx: *mut ffi::bzrtpContext_t) -> Result<String, MediaError> {
        let mut buf = [0u8; 128];
        // SAFETY: buffer and its length are passed together.
        check_rc(
            unsafe { ffi::bzrtp_getSelfHelloHash(ctx, self.ssrc, buf.as_mut_ptr(), buf.len()) },
            "get hello hash",
        )?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    fn set_peer_hello_hash(
        &mut self,
        ctx: *mut ffi::bzrtpContext_t,
        hash: &str,
    ) -> Result<(), MediaError> {
        let hash = hash.trim();
        if hash.len() > 128
            || !hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b' ' || b == b'.')
        {
            return Err(MediaError::InvalidInput("malformed a=zrtp-hash".into()));
        }
        let mut bytes = hash.as_bytes().to_vec();
        bytes.push(0);
        self.peer_hash_signalled = true;
        self.inbound.expect_hello_first();
        // SAFETY: NUL-terminated buffer with its length (excluding the NUL).
        let rc = unsafe {
            ffi::bzrtp_setPeerHelloHash(ctx, self.ssrc, bytes.as_mut_ptr(), bytes.len() - 1)
        };
        if rc as u32 == ffi::BZRTP_ERROR_HELLOHASH_MISMATCH {
            self.fail(ZrtpFailure::HelloHashMismatch);
            return Ok(());
        }
        check_rc(rc, "set peer hello hash")
    }

    fn start(
        &mut self,
        ctx: *mut ffi::bzrtpContext_t,
        now: Instant,
        timeout: Duration,
    ) -> Result<bool, MediaError> {
        if self.state != ZrtpState::Idle {
            return Ok(false);
        }
        self.state = ZrtpState::Negotiating;
        self.deadline = Some(now + timeout);
        // SAFETY: initialised context, a channel of it.
        let started = check_rc(
            unsafe { ffi::bzrtp_startChannelEngine(ctx, self.ssrc) },
            "start channel",
        );
        if let Err(e) = started {
            // Said once, as a failure of the channel: no deadline is left to do it.
            self.fail(ZrtpFailure::ProtocolError(format!("could not start: {e}")));
            return Err(e);
        }
        // libbzrtp sends the first Hello from its timer: fire it now, not a tick later.
        self.next_tick = Some(now);
        Ok(true)
    }

    /// Hands one admitted packet to libbzrtp; its return code.
    fn process(
        &mut self,
        ctx: *mut ffi::bzrtpContext_t,
        now: Instant,
        packet: &[u8],
        trusted_source: bool,
    ) -> Result<Option<i32>, MediaError> {
        packet::check(packet)?;
        if matches!(self.state, ZrtpState::Failed(_) | ZrtpState::Idle) {
            return Ok(None);
        }
        let mut admitted = self.inbound.admit(now, packet)?;
        self.received_from_peer = true;
        let len = u16::try_from(admitted.packet.len()).map_err(|_| MediaError::Malformed {
            kind: "ZRTP",
            reason: "too long",
        })?;
        let mut rc = 0;
        for _ in 0..OUT_OF_ORDER_RETRIES {
            // SAFETY: the context is initialised; the buffer is our private copy of `len`
            // bytes, which libbzrtp may scribble on during this call and keeps no pointer
            // to afterwards (it copies what it stores).
            rc = unsafe {
                ffi::bzrtp_processMessage(ctx, self.ssrc, admitted.packet.as_mut_ptr(), len)
            };
            // Refused on its number alone (checked before anything else, so the copy is
            // untouched): libbzrtp counted a packet it reported as refused. Go past it.
            if rc as u32 != OUT_OF_ORDER || !self.inbound.renumber_after_refusal(&mut admitted) {
                break;
            }
        }
        if rc == 0 {
            self.inbound.accepted(&admitted);
        }
        if rc as u32 == UNEXPECTED
            && admitted.is_repeat()
            && packet::message_type(packet) == b"Hello   "
        {
            self.resend_own_hello();
        }
        if rc as u32 == ffi::BZRTP_ERROR_HELLOHASH_MISMATCH {
            self.fail(ZrtpFailure::HelloHashMismatch);
        } else if CONFLICTS.contains(&(rc as u32)) {
            tracing::info!(
                code = format_args!("{rc:#06x}"),
                trusted_source,
                "a ZRTP packet contradicts what the peer sent before"
            );
            self.conflict_seen |= trusted_source;
        } else if rc != 0 {
            tracing::debug!(
                code = format_args!("{rc:#06x}"),
                "libbzrtp refused a packet"
            );
        }
        Ok(Some(rc))
    }

    /// Services the retransmission timer; true if libbzrtp was called.
    fn tick(&mut self, ctx: *mut ffi::bzrtpContext_t, now: Instant, millis: u64) -> bool {
        if self.state != ZrtpState::Negotiating || self.next_tick.is_none_or(|t| now < t) {
            return false;
        }
        // SAFETY: initialised context, a channel of it.
        unsafe { ffi::bzrtp_iterate(ctx, self.ssrc, millis) };
        self.next_tick = Some(now + TICK);
        true
    }

    /// Gives up once the handshake deadline has passed.
    fn check_deadline(&mut self, now: Instant) {
        if self.state == ZrtpState::Negotiating && self.deadline.is_some_and(|d| now >= d) {
            let why = if self.conflict_seen {
                ZrtpFailure::ConflictingPeers
            } else if self.received_from_peer {
                ZrtpFailure::Timeout
            } else if self.peer_hash_signalled {
                ZrtpFailure::PeerZrtpNeverArrived
            } else {
                ZrtpFailure::PeerDoesNotSupportZrtp
            };
            self.fail(why);
        }
    }

    fn fail(&mut self, why: ZrtpFailure) {
        if matches!(self.state, ZrtpState::Failed(_) | ZrtpState::Secure) {
            return;
        }
        tracing::info!(reason = %why, ssrc = self.ssrc, "ZRTP failed");
        self.state = ZrtpState::Failed(why.clone());
        self.callbacks.outbox.clear();
        self.next_tick = None;
        self.events.push_back(ZrtpEvent::Failed(why));
    }

    /// The peer still sends the Hello libbzrtp accepted although libbzrtp has moved past
    /// discovery, where it stops sending ours and ignores the peer's. The peer may never
    /// have had our Hello (a spoofed HelloACK ends our Hellos early, before the peer got
    /// one), and then it would wait for it forever: ours goes again. A peer that had it
    /// drops the copy as a repetition or as out of order.
    fn resend_own_hello(&mut self) {
        if self.state != ZrtpState::Negotiating || self.callbacks.outbox.len() >= MAX_OUTBOX {
            return;
        }
        if let Some(hello) = self.inbound.own_hello() {
            self.callbacks.outbox.push_back(hello.to_vec());
        }
    }

    /// What the callbacks left once libbzrtp says the channel is secure: the outcome and
    /// the keys, checked against the cipher; `None` while it is not (or on failure,
    /// which is recorded).
    fn take_secured(
        &mut self,
        ctx: *mut ffi::bzrtpContext_t,
    ) -> Option<(Finished, Negotiated, SrtpKeys)> {
        if self.state != ZrtpState::Negotiating {
            return None;
        }
        // SAFETY: initialised context, a channel of it.
        let status = unsafe { ffi::bzrtp_getChannelStatus(ctx, self.ssrc) } as u32;
        if status == ffi::BZRTP_CHANNEL_ERROR {
            self.fail(ZrtpFailure::ProtocolError(
                "libbzrtp reported a channel error".into(),
            ));
            return None;
        }
        if status != ffi::BZRTP_CHANNEL_SECURE {
            return None;
        }
        let cb = &mut self.callbacks;
        let (Some(mut finished), Some(local), Some(remote)) =
            (cb.finished.take(), cb.local.take(), cb.remote.take())
        else {
            return None;
        };
        let (Some(algorithms), Some(profile)) = (finished.algorithms.take(), finished.profile)
        else {
            self.fail(ZrtpFailure::ProtocolError(
                "negotiated an algorithm we cannot use for SRTP".into(),
            ));
            return None;
        };
        if local.0.len() != profile.key_len() || remote.0.len() != profile.key_len() {
            self.fail(ZrtpFailure::ProtocolError(
                "SRTP key length does not match the cipher".into(),
            ));
            return None;
        }
        self.state = ZrtpState::Secure;
        self.next_tick = None;
        let keys = SrtpKeys {
            profile,
            local_key: local.0,
            local_salt: local.1,
            remote_key: remote.0,
            remote_salt: remote.1,
        };
        Some((finished, algorithms, keys))
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let packet = self.callbacks.outbox.pop_front()?;
        self.inbound.on_sent(&packet);
        Some(packet)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_tick, self.deadline) {
            (Some(t), Some(d)) if self.state == ZrtpState::Negotiating => Some(t.min(d)),
            _ => None,
        }
    }
}

impl ZrtpSession {
    /// Creates a channel for our media stream `ssrc`. Nothing is sent until [`start`].
    ///
    /// [`start`]: ZrtpSession::start
    pub fn new(config: &ZrtpConfig, ssrc: u32, now: Instant) -> Result<ZrtpSession, MediaError> {
        // SAFETY: plain constructor; NULL means out of memory.
        let ctx =
            NonNull::new(unsafe { ffi::bzrtp_createBzrtpContext() }).ok_or(MediaError::Zrtp {
                what: "create context",
                code: 0,
            })?;
        let mut session = ZrtpSession {
            ctx,
            main: Channel::new(ssrc),
            extra: Vec::new(),
            epoch: now,
            cache: None,
            _live: None,
            peer_zid: None,
            had_secret: false,
            continuity: false,
            handshake_timeout: config.handshake_timeout,
            main_outcome: None,
        };
        session.configure(config)?;
        Ok(session)
    }

    fn configure(&mut self, config: &ZrtpConfig) -> Result<(), MediaError> {
        let ctx = self.ctx.as_ptr();
        if let Some(cache) = &config.cache {
            // libbzrtp keeps its own self ZID rows under the peer URI "self".
            if cache.peer_uri == "self" {
                return Err(MediaError::InvalidInput(
                    "a peer cannot be called \"self\"".into(),
                ));
            }
            let (self_uri, peer_uri) = (cstring(&cache.self_uri)?, cstring(&cache.peer_uri)?);
            // Kept before libbzrtp sees the handles, so that on every path, this
            // function's errors included, they outlive the context (dropped after it).
            self.cache = Some(cache.clone());
            self._live = Some(Box::new(
                cache.store.hold_live(&cache.self_uri, &cache.peer_uri),
            ));
            let (db, lock) = cache.store.engine_handles()?;
            // SAFETY: `db` and `lock` belong to the store now held in `self.cache`, which
            // is dropped only after `Drop` destroys the context; libbzrtp copies the URIs.
            let rc = unsafe {
                ffi::bzrtp_setZIDCache_lock(ctx, db, self_uri.as_ptr(), peer_uri.as_ptr(), lock)
            };
            if rc != 0
                && rc as u32 != ffi::BZRTP_CACHE_SETUP
                && rc as u32 != ffi::BZRTP_CACHE_UPDATE
            {
                return Err(MediaError::Cache(format!(
                    "libbzrtp could not use the cache (error {rc:#06x})"
                )));
            }
        }
        let callbacks = ffi::bzrtpCallbacks_t {
            bzrtp_sendData: Some(on_send),
            bzrtp_srtpSecretsAvailable: Some(on_secrets),
            bzrtp_startSrtpSession: Some(on_start_srtp),
            ..Default::default()
        };
        // SAFETY: libbzrtp copies the callback table.
        check_rc(
            unsafe { ffi::bzrtp_setCallbacks(ctx, &callbacks) },
            "set callbacks",
        )?;
        set_types(
            ctx,
            ffi::ZRTP_KEYAGREEMENT_TYPE,
            config.key_agreements.iter().map(|a| a.code()),
        );
        set_types(
            ctx,
            ffi::ZRTP_SAS_TYPE,
            config.sas_types.iter().map(|a| a.code()),
        );
        set_types(
            ctx,
            ffi::ZRTP_CIPHERBLOCK_TYPE,
            config.ciphers.iter().map(|a| a.code()),
        );
        set_types(
            ctx,
            ffi::ZRTP_AUTHTAG_TYPE,
            config.auth_tags.iter().map(|a| a.code()),
        );
        set_types(
            ctx,
            ffi::ZRTP_HASH_TYPE,
            config.hashes.iter().map(|a| a.code()),
        );
        // SAFETY: context created above; ssrc identifies its first channel.
        check_rc(
            unsafe { ffi::bzrtp_initBzrtpContext(ctx, self.main.ssrc) },
            "init context",
        )?;
        self.main.register(ctx)
    }

    /// Our Hello hash for the SDP attribute `a=zrtp-hash` ("1.10 <64 hex>").
    pub fn hello_hash(&self) -> Result<String, MediaError> {
        self.main.hello_hash(self.ctx.as_ptr())
    }

    /// Tells the engine the peer's `a=zrtp-hash`; its Hello must then match.
    pub fn set_peer_hello_hash(&mut self, hash: &str) -> Result<(), MediaError> {
        self.main.set_peer_hello_hash(self.ctx.as_ptr(), hash)
    }

    /// Starts the handshake: our Hello goes out.
    pub fn start(&mut self, now: Instant) -> Result<(), MediaError> {
        if self
            .main
            .start(self.ctx.as_ptr(), now, self.handshake_timeout)?
        {
            self.after_call();
            self.handle_timeout(now);
        }
        Ok(())
    }

    fn millis(&self, now: Instant) -> u64 {
        // libbzrtp wants a monotonic millisecond clock; offset so 0 is never passed.
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Feeds one received ZRTP datagram. Malformed packets, and those that must not
    /// reach libbzrtp yet (see the `inbound` module), are refused before it sees them;
    /// what it gets carries our own sequence number, never the peer's.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), MediaError> {
        self.handle_packet_from(now, packet, true)
    }

    /// As [`ZrtpSession::handle_packet`], saying whether the packet came from the peer's
    /// trusted source (its negotiated address, or one its SRTP proved). A contradiction
    /// only counts against the peer's address when it came from there: a candidate (an
    /// address that merely replayed the peer's Hello) may be anyone.
    pub fn handle_packet_from(
        &mut self,
        now: Instant,
        packet: &[u8],
        trusted_source: bool,
    ) -> Result<(), MediaError> {
        let rc = self
            .main
            .process(self.ctx.as_ptr(), now, packet, trusted_source)?;
        if rc == Some(0) && self.peer_zid.is_none() {
            // libbzrtp takes the peer's ZID from the first Hello it accepts, and refuses
            // any later Hello that differs from it.
            self.peer_zid = packet::hello_zid(packet).map(Zid);
            self.had_secret = self.retained_secret();
        }
        if rc.is_some() {
            self.after_call();
            self.handle_timeout(now);
        }
        Ok(())
    }

    /// Services retransmission timers and the handshake deadlines, of every channel.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (ctx, millis) = (self.ctx.as_ptr(), self.millis(now));
        if self.main.tick(ctx, now, millis) {
            self.after_call();
        }
        self.main.check_deadline(now);
        for i in 0..self.extra.len() {
            if self.extra[i].tick(ctx, now, millis) {
                self.after_channel_call(i);
            }
            self.extra[i].check_deadline(now);
        }
    }

    /// Turns what the first channel's callbacks queued into state and events.
    fn after_call(&mut self) {
        let Some((finished, algorithms, keys)) = self.main.take_secured(self.ctx.as_ptr()) else {
            return;
        };
        // "Verified" and "new key" come from the user's own verdicts, never from
        // libbzrtp's flag, which any peer presenting a copied ZID can clear. A verdict
        // counts only with key continuity on this very address of ours: a secret
        // retained from an earlier call that matched now. A ZID alone is public (it is
        // in every cleartext Hello), and where we keep no secret libbzrtp reports no
        // mismatch, so without continuity a verified peer's key is shown as a new key.
        // And only on the address of ours where the user compared the SAS with this key:
        // a secret retained on another address (written by any earlier secure call there,
        // compared or not) proves nothing about who holds it.
        let (this_verified, other_verified) = self.user_verdicts();
        self.continuity = self.had_secret && !finished.cache_mismatch;
        let verified = this_verified && self.continuity && self.confirmed_here();
        let new_key = !verified && (this_verified || other_verified) && !finished.cache_mismatch;
        self.main_outcome = Some(MainOutcome {
            sas: finished.sas.clone(),
            verified,
            cache_mismatch: finished.cache_mismatch,
            new_key,
        });
        self.main
            .events
            .push_back(ZrtpEvent::Secure(Box::new(Secured {
                sas: finished.sas,
                verified,
                cache_mismatch: finished.cache_mismatch,
                new_key,
                peer_zid: self.peer_zid,
                algorithms,
                keys,
            })));
    }

    /// As [`Self::after_call`] for a further channel. Its keys must come from the
    /// first channel's exchange (multistream): then what the user was told there (the
    /// SAS, the verdict, the warnings) holds for it too, and is repeated here. A channel
    /// keyed any other way would carry keys no SAS the user compared protects: failed.
    fn after_channel_call(&mut self, i: usize) {
        let ctx = self.ctx.as_ptr();
        let outcome = self.main_outcome.clone();
        let Some(channel) = self.extra.get_mut(i) else {
            return;
        };
        let Some((_, algorithms, keys)) = channel.take_secured(ctx) else {
            return;
        };
        let (true, Some(main)) = (algorithms.key_agreement == KeyAgreement::Mult, outcome) else {
            // `take_secured` marked it secure; it is not.
            channel.state = ZrtpState::Negotiating;
            channel.fail(ZrtpFailure::ProtocolError(format!(
                "a further stream was keyed by {} instead of from the first stream",
                algorithms.key_agreement
            )));
            return;
        };
        channel
            .events
            .push_back(ZrtpEvent::Secure(Box::new(Secured {
                sas: main.sas,
                verified: main.verified,
                cache_mismatch: main.cache_mismatch,
                new_key: main.new_key,
                peer_zid: self.peer_zid,
                algorithms,
                keys,
            })));
    }

    /// What the user decided about this call's peer: (this key verified, another key of
    /// the same address verified). Without the peer's ZID (never seen in practice) any
    /// verified key of the address counts as another, so the doubt goes to the warning.
    fn user_verdicts(&self) -> (bool, bool) {
        let Some(cache) = &self.cache else {
            return (false, false);
        };
        let status = match &self.peer_zid {
            Some(zid) => cache
                .store
                .key_status(&cache.peer_uri, zid)
                .map(|s| (s.this_key_verified, s.other_key_verified)),
            None => cache
                .store
                .keys_of(&cache.peer_uri)
                .map(|keys| (false, keys.iter().any(|k| k.verified))),
        };
        status.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the ZID cache");
            (false, false)
        })
    }

    /// Whether the user compared the SAS with the peer's key on this call's address of
    /// ours (false without a cache, or if it cannot be read).
    fn confirmed_here(&self) -> bool {
        let (Some(cache), Some(zid)) = (&self.cache, &self.peer_zid) else {
            return false;
        };
        cache
            .store
            .confirmed_on(&cache.self_uri, &cache.peer_uri, zid)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the ZID cache");
                false
            })
    }

    /// Whether the cache holds a secret from an earlier call for this call's addresses
    /// and the peer's ZID (false without a cache, or if it cannot be read).
    fn retained_secret(&self) -> bool {
        let (Some(cache), Some(zid)) = (&self.cache, &self.peer_zid) else {
            return false;
        };
        cache
            .store
            .has_secret(&cache.self_uri, &cache.peer_uri, zid)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the ZID cache");
                false
            })
    }

    /// The next datagram to send to the peer, if any. Call until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.main.poll_transmit()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ZrtpEvent> {
        self.main.events.pop_front()
    }

    /// When [`handle_timeout`] must be called next (for any channel); `None` once
    /// every channel is secure or failed.
    ///
    /// [`handle_timeout`]: ZrtpSession::handle_timeout
    pub fn poll_timeout(&self) -> Option<Instant> {
        std::iter::once(&self.main)
            .chain(&self.extra)
            .filter_map(Channel::poll_timeout)
            .min()
    }

    /// How long the handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// True once a well-formed ZRTP packet from the peer was handed to libbzrtp.
    pub fn peer_seen(&self) -> bool {
        self.main.received_from_peer
    }

    /// Where the handshake stands.
    pub fn state(&self) -> &ZrtpState {
        &self.main.state
    }

    /// Adds a channel for our further media stream `ssrc` (video). Its Hello hash is
    /// known at once (for its m-line's `a=zrtp-hash`); it is started once the first
    /// channel is secure, and then keyed in multistream mode.
    pub fn add_channel(&mut self, ssrc: u32) -> Result<(), MediaError> {
        if ssrc == self.main.ssrc || self.extra.iter().any(|c| c.ssrc == ssrc) {
            return Err(MediaError::InvalidInput(
                "a ZRTP channel with this SSRC exists".into(),
            ));
        }
        if self.extra.len() >= MAX_EXTRA_CHANNELS {
            return Err(MediaError::InvalidInput(format!(
                "at most {} streams are keyed per call",
                MAX_EXTRA_CHANNELS + 1
            )));
        }
        let ctx = self.ctx.as_ptr();
        // SAFETY: initialised context; libbzrtp refuses (non-zero) beyond its own limit.
        check_rc(unsafe { ffi::bzrtp_addChannel(ctx, ssrc) }, "add channel")?;
        // Kept from here on, whatever `register` says: libbzrtp has the channel, and
        // `Drop` destroys every channel it has.
        self.extra.push(Channel::new(ssrc));
        let last = self.extra.len() - 1;
        self.extra[last].register(ctx)
    }

    /// Ends a further channel (its stream was removed): libbzrtp forgets it, and its
    /// place may be taken by another.
    pub fn remove_channel(&mut self, ssrc: u32) -> Result<(), MediaError> {
        let i = self.channel_index(ssrc)?;
        // SAFETY: a channel of this context, destroyed once; the first channel remains,
        // so the context lives on. Its client data (the `Callbacks` box) is dropped
        // only below, once libbzrtp no longer holds it.
        unsafe {
            ffi::bzrtp_destroyBzrtpContext(self.ctx.as_ptr(), ssrc);
        }
        self.extra.remove(i);
        Ok(())
    }

    fn channel(&self, ssrc: u32) -> Result<&Channel, MediaError> {
        self.extra
            .iter()
            .find(|c| c.ssrc == ssrc)
            .ok_or_else(|| MediaError::InvalidInput("no ZRTP channel with this SSRC".into()))
    }

    fn channel_index(&self, ssrc: u32) -> Result<usize, MediaError> {
        self.extra
            .iter()
            .position(|c| c.ssrc == ssrc)
            .ok_or_else(|| MediaError::InvalidInput("no ZRTP channel with this SSRC".into()))
    }

    /// A further channel's Hello hash, for its m-line.
    pub fn channel_hello_hash(&self, ssrc: u32) -> Result<String, MediaError> {
        self.channel(ssrc)?.hello_hash(self.ctx.as_ptr())
    }

    /// The peer's `a=zrtp-hash` of a further channel's m-line.
    pub fn set_channel_peer_hello_hash(&mut self, ssrc: u32, hash: &str) -> Result<(), MediaError> {
        let i = self.channel_index(ssrc)?;
        let ctx = self.ctx.as_ptr();
        self.extra[i].set_peer_hello_hash(ctx, hash)
    }

    /// Starts a further channel: only once the first one is secure (libbzrtp refuses
    /// before), then it keys itself from it.
    pub fn start_channel(&mut self, ssrc: u32, now: Instant) -> Result<(), MediaError> {
        if self.main.state != ZrtpState::Secure {
            return Err(MediaError::InvalidInput(
                "a further stream is keyed only once the first one is secure".into(),
            ));
        }
        let i = self.channel_index(ssrc)?;
        let (ctx, timeout) = (self.ctx.as_ptr(), self.handshake_timeout);
        if self.extra[i].start(ctx, now, timeout)? {
            self.after_channel_call(i);
            self.handle_timeout(now);
        }
        Ok(())
    }

    /// A ZRTP datagram that came on a further channel's stream.
    pub fn handle_channel_packet(
        &mut self,
        ssrc: u32,
        now: Instant,
        packet: &[u8],
        trusted_source: bool,
    ) -> Result<(), MediaError> {
        let i = self.channel_index(ssrc)?;
        packet::check(packet)?;
        // libbzrtp keeps the peer's ZID and its multistream support per context, from
        // whichever channel's Hello came last, and lets a further channel fall back to
        // a full Diffie-Hellman exchange: a Hello from another ZID or without Mult, or a
        // Commit to anything but Mult, must not reach it here.
        let refuse = |reason| {
            Err(MediaError::Refused {
                kind: "ZRTP",
                reason,
            })
        };
        if let Some(zid) = packet::hello_zid(packet) {
            if self.peer_zid != Some(Zid(zid)) {
                return refuse("a further stream's Hello from another ZID");
            }
            if !packet::hello_offers(packet, b"Mult") {
                return refuse("a further stream's Hello without multistream");
            }
        }
        if packet::commit_key_agreement(packet).is_some_and(|k| &k != b"Mult") {
            return refuse("a further stream's Commit to a full key exchange");
        }
        let ctx = self.ctx.as_ptr();
        if self.extra[i]
            .process(ctx, now, packet, trusted_source)?
            .is_some()
        {
            self.after_channel_call(i);
            self.handle_timeout(now);
        }
        Ok(())
    }

    /// The next datagram a further channel sends, if any.
    pub fn poll_channel_transmit(&mut self, ssrc: u32) -> Option<Vec<u8>> {
        let i = self.channel_index(ssrc).ok()?;
        self.extra[i].poll_transmit()
    }

    /// A further channel's next event, if any.
    pub fn poll_channel_event(&mut self, ssrc: u32) -> Option<ZrtpEvent> {
        let i = self.channel_index(ssrc).ok()?;
        self.extra[i].events.pop_front()
    }

    /// Where a further channel stands.
    pub fn channel_state(&self, ssrc: u32) -> Option<&ZrtpState> {
        self.channel(ssrc).ok().map(|c| &c.state)
    }

    /// Records (or withdraws) the user's SAS verification in the cache, for the peer ZID
    /// of this call only. After a cache mismatch, confirming also stores the new secret.
    ///
    /// A withdrawal (or a declared SAS mismatch) touches the stored verdict only on a call
    /// with key continuity: without it, the peer may be anyone who copied the ZID from a
    /// cleartext Hello, and rejecting that impostor says nothing against the real key.
    pub fn set_sas_verified(&mut self, verified: bool) {
        let on_the_compared_key = self.continuity && self.confirmed_here();
        if !verified && !on_the_compared_key {
            tracing::info!(
                "SAS rejected on a call without continuity with the key the user compared \
                 on this address of ours: the verdict on that key stands"
            );
            return;
        }
        // SAFETY: initialised context; libbzrtp writes its flag (and, after a mismatch,
        // the new secret) to its cache under the store's lock.
        unsafe {
            if verified {
                ffi::bzrtp_SASVerified(self.ctx.as_ptr());
            } else {
                ffi::bzrtp_resetSASVerified(self.ctx.as_ptr());
            }
        }
        if let (Some(cache), Some(zid)) = (&self.cache, &self.peer_zid)
            && let Err(e) =
                cache
                    .store
                    .record_verdict(Some(&cache.self_uri), &cache.peer_uri, zid, verified)
        {
            tracing::warn!(error = %e, "cannot record the SAS verdict in the ZID cache");
        }
    }
}

impl Drop for ZrtpSession {
    fn drop(&mut self) {
        // SAFETY: each channel destroyed exactly once, the further ones first; the
        // context goes with the last. The channels' client data and `self.cache` (the
        // store libbzrtp points into) are fields, so they are dropped after this.
        unsafe {
            for c in &self.extra {
                ffi::bzrtp_destroyBzrtpContext(self.ctx.as_ptr(), c.ssrc);
            }
            ffi::bzrtp_destroyBzrtpContext(self.ctx.as_ptr(), self.main.ssrc);
        }
    }
}

fn set_types(ctx: *mut ffi::bzrtpContext_t, kind: u32, codes: impl Iterator<Item = u8>) {
    let mut list = [0u8; 7];
    let mut n = 0u8;
    for code in codes.take(7) {
        list[usize::from(n)] = code;
        n += 1;
    }
    if n > 0 {
        // SAFETY: a 7-entry array and a count within it.
        unsafe { ffi::bzrtp_setSupportedCryptoTypes(ctx, kind as u8, list.as_mut_ptr(), n) };
    }
}

fn cstring(s: &str) -> Result<CString, MediaError> {
    CString::new(s).map_err(|_| MediaError::InvalidInput("identity contains a NUL byte".into()))
}
