//! libotr's callbacks (`OtrlMessageAppOps`): what libotr asks of us while a call into
//! it runs. They record messages to send, events and the session a message came from
//! into the engine's [`Callbacks`], which the engine drains after each call; none of
//! them calls back into libotr's messaging (they only look up contexts, fingerprints
//! and trust, and write the pin into a context's private part). The rules for which
//! session is the conversation with a buddy (pinning) live here too, as libotr's
//! callbacks are where sessions change.

use super::engine::{OtrEvent, OtrPolicy, PROTOCOL, SmpEvent, Transmit};
use super::limits;
use otr_sys as ffi;
use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, c_char, c_int, c_ushort, c_void};
use std::ptr::{self, NonNull};

#[derive(Default)]
pub(super) struct Callbacks {
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<OtrEvent>,
    pub(super) policies: HashMap<(String, String), OtrPolicy>,
    pub(super) default_policy: HashMap<String, OtrPolicy>,
    pub(super) max_message_size: c_int,
    /// Peers whose every outgoing body must be OTR-encoded right now.
    pub(super) guard: Option<(String, String)>,
    pub(super) dropped_plaintext: u64,
    /// libotr handed over a decrypted message during the current receive: from which
    /// session.
    pub(super) decrypted: Option<Decrypted>,
    /// Per buddy (account, peer): the session whose key exchange finished last and was
    /// accepted — the one the user saw go private, which the conversation then stays
    /// with: its instance tag and the key it used.
    pub(super) pinned: HashMap<(String, String), Pin>,
    /// The user state these callbacks serve (set once it exists), so that a callback
    /// can tell whether the session it is called for is the buddy's conversation.
    pub(super) us: Option<NonNull<ffi::s_OtrlUserState>>,
}

/// The session a conversation is pinned to. Instance tags are in clear in every
/// message header, so anyone can claim one: the key is what tells sessions apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pin {
    /// The buddy's instance tag.
    pub(super) instance: ffi::otrl_instag_t,
    /// The buddy's key fingerprint in that session (None: libotr named none).
    pub(super) key: Option<[u8; 20]>,
}

/// The session a received message was decrypted in.
pub(super) struct Decrypted {
    /// It is the session the conversation with the buddy uses (see [`conversation`]).
    pub(super) ours: bool,
    /// The key that session uses, human form.
    pub(super) fingerprint: String,
    /// That key is verified.
    pub(super) verified: bool,
}

pub(super) fn cstr_lossy(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libotr passes NUL-terminated strings valid for the callback.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub(super) fn human(fp: *const u8) -> String {
    if fp.is_null() {
        return String::new();
    }
    let mut buf = [0 as c_char; ffi::OTRL_PRIVKEY_FPRINT_HUMAN_LEN as usize];
    // SAFETY: a 20-byte fingerprint and a buffer of the documented size.
    unsafe { ffi::otrl_privkey_hash_to_human(buf.as_mut_ptr(), fp) };
    cstr_lossy(buf.as_ptr())
}

/// # Safety
/// `opdata` is the `Callbacks` registered by `OtrEngine`, valid during libotr calls.
unsafe fn cb<'a>(opdata: *mut c_void) -> &'a mut Callbacks {
    unsafe { &mut *(opdata as *mut Callbacks) }
}

unsafe fn ctx_names(context: *mut ffi::ConnContext) -> (String, String) {
    if context.is_null() {
        return (String::new(), String::new());
    }
    let c = unsafe { &*context };
    (cstr_lossy(c.accountname), cstr_lossy(c.username))
}

/// The key a session uses, human form, and whether it is verified.
///
/// # Safety
/// `context` is a live context of our user state (or null).
unsafe fn active_key(context: *mut ffi::ConnContext) -> (String, bool) {
    if context.is_null() {
        return (String::new(), false);
    }
    // SAFETY: see above; the fingerprint belongs to the context's master, live with it.
    unsafe {
        let fp = (*context).active_fingerprint;
        if fp.is_null() {
            (String::new(), false)
        } else {
            (
                human((*fp).fingerprint),
                ffi::otrl_context_is_fingerprint_trusted(fp) != 0,
            )
        }
    }
}

/// The buddy's key in a session, as bytes (None: none yet).
///
/// # Safety
/// `context` is a live context of our user state (or null).
pub(super) unsafe fn active_bytes(context: *mut ffi::ConnContext) -> Option<[u8; 20]> {
    if context.is_null() {
        return None;
    }
    // SAFETY: see above; the fingerprint belongs to the context's master, live with it.
    unsafe {
        let fp = (*context).active_fingerprint;
        if fp.is_null() {
            None
        } else {
            limits::fingerprint_bytes(fp)
        }
    }
}

/// The pinned session of a buddy is private with another key than the one it was
/// pinned with (someone reused its instance tag for a key exchange): that key, human
/// form. Such a session is not the conversation (see [`conversation`]).
///
/// # Safety
/// As for [`conversation`].
pub(super) unsafe fn diverted(
    us: ffi::OtrlUserState,
    pinned: &HashMap<(String, String), Pin>,
    account: &CStr,
    peer: &CStr,
) -> Option<String> {
    let key = (
        account.to_string_lossy().into_owned(),
        peer.to_string_lossy().into_owned(),
    );
    let pin = pinned.get(&key)?;
    // SAFETY: see above; libotr returns NULL when absent (add_if_missing 0).
    let c = unsafe {
        ffi::otrl_context_find(
            us,
            peer.as_ptr(),
            account.as_ptr(),
            PROTOCOL.as_ptr(),
            pin.instance,
            0,
            ptr::null_mut(),
            None,
            ptr::null_mut(),
        )
    };
    // SAFETY: a non-null context just found in our user state, read at once.
    let encrypted =
        !c.is_null() && unsafe { (*c).msgstate } == ffi::OtrlMessageState_OTRL_MSGSTATE_ENCRYPTED;
    // SAFETY: as above.
    (encrypted && unsafe { active_bytes(c) } != pin.key).then(|| unsafe { active_key(c) }.0)
}

/// The session that is the conversation with `peer`: the pinned one (see [`pin`]) while
/// it is not back in plaintext and, if private, still uses the key it was pinned with;
/// else libotr's best one if that is in plaintext. A private session nobody pinned —
/// one whose key exchange was not accepted, an older one another has replaced, or the
/// pinned instance tag reused with another key — is never the conversation: then it is
/// the buddy's master context, in plaintext, so that nothing is shown as private or
/// sent to that session. An encrypted master (an OTR v2 session, which we never allow)
/// is never the conversation either.
///
/// # Safety
/// `us` is our live user state, on its owner thread; lookups only (nothing is created).
pub(super) unsafe fn conversation(
    us: ffi::OtrlUserState,
    pinned: &HashMap<(String, String), Pin>,
    account: &CStr,
    peer: &CStr,
) -> Option<*mut ffi::ConnContext> {
    let find = |instag| {
        // SAFETY: see above; libotr returns NULL when absent (add_if_missing 0).
        unsafe {
            ffi::otrl_context_find(
                us,
                peer.as_ptr(),
                account.as_ptr(),
                PROTOCOL.as_ptr(),
                instag,
                0,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
            )
        }
    };
    let plaintext = |c: *mut ffi::ConnContext| {
        // SAFETY: a non-null context just found in our user state.
        unsafe { (*c).msgstate == ffi::OtrlMessageState_OTRL_MSGSTATE_PLAINTEXT }
    };
    let key = (
        account.to_string_lossy().into_owned(),
        peer.to_string_lossy().into_owned(),
    );
    let master = || {
        let m = find(ffi::OTRL_INSTAG_MASTER);
        (!m.is_null() && plaintext(m)).then_some(m)
    };
    if let Some(pin) = pinned.get(&key) {
        let c = find(pin.instance);
        if !c.is_null() && !plaintext(c) {
            // SAFETY: a non-null context just found in our user state, read at once.
            let encrypted =
                unsafe { (*c).msgstate } == ffi::OtrlMessageState_OTRL_MSGSTATE_ENCRYPTED;
            // SAFETY: as above.
            if !encrypted || unsafe { active_bytes(c) } == pin.key {
                return Some(c);
            }
            return master();
        }
    }
    let c = find(ffi::OTRL_INSTAG_BEST);
    if c.is_null() {
        return None;
    }
    if plaintext(c) {
        return Some(c);
    }
    master()
}

/// `context` is the session the conversation with its buddy uses.
///
/// # Safety
/// As for [`conversation`]; `context` is a live context libotr passed to a callback.
unsafe fn is_conversation(cbs: &Callbacks, context: *mut ffi::ConnContext) -> bool {
    let Some(us) = cbs.us else {
        return false;
    };
    if context.is_null() {
        return false;
    }
    // SAFETY: the context's names are NUL-terminated strings it owns, read at once.
    unsafe {
        let (account, peer) = (
            CStr::from_ptr((*context).accountname),
            CStr::from_ptr((*context).username),
        );
        conversation(us.as_ptr(), &cbs.pinned, account, peer) == Some(context)
    }
}

unsafe extern "C" fn op_policy(
    opdata: *mut c_void,
    context: *mut ffi::ConnContext,
) -> ffi::OtrlPolicy {
    let cbs = unsafe { cb(opdata) };
    let (account, peer) = unsafe { ctx_names(context) };
    let p = cbs
        .policies
        .get(&(account.clone(), peer))
        .or_else(|| cbs.default_policy.get(&account))
        .copied()
        .unwrap_or_default();
    p.bits() as ffi::OtrlPolicy
}

unsafe extern "C" fn op_create_privkey(
    opdata: *mut c_void,
    accountname: *const c_char,
    _protocol: *const c_char,
) {
    // Keys are generated deliberately (slow, with progress), never behind the user's back.
    let cbs = unsafe { cb(opdata) };
    cbs.events.push_back(OtrEvent::Notice {
        account: cstr_lossy(accountname),
        peer: String::new(),
        text: "no OTR key yet: generate one to start private conversations".into(),
    });
}

unsafe extern "C" fn op_is_logged_in(
    _: *mut c_void,
    _: *const c_char,
    _: *const c_char,
    _: *const c_char,
) -> c_int {
    // The server stores messages for offline buddies, so treat everyone as reachable:
    // libotr then sends the "conversation ended" notice instead of dropping it.
    1
}

unsafe extern "C" fn op_inject(
    opdata: *mut c_void,
    accountname: *const c_char,
    _protocol: *const c_char,
    recipient: *const c_char,
    message: *const c_char,
) {
    let cbs = unsafe { cb(opdata) };
    let t = Transmit {
        account: cstr_lossy(accountname),
        to: cstr_lossy(recipient),
        body: cstr_lossy(message),
    };
    // Belt and braces: under "require", nothing without the OTR prefix leaves.
    if let Some((a, p)) = &cbs.guard
        && *a == t.account
        && *p == t.to
        && !t.body.starts_with("?OTR")
    {
        cbs.dropped_plaintext += 1;
        tracing::error!("refused to send plaintext under the require-encryption policy");
        return;
    }
    cbs.transmits.push_back(t);
}

unsafe extern "C" fn op_update_context_list(_: *mut c_void) {}

unsafe extern "C" fn op_new_fingerprint(
    opdata: *mut c_void,
    _us: ffi::OtrlUserState,
    accountname: *const c_char,
    _protocol: *const c_char,
    username: *const c_char,
    fingerprint: *mut u8,
) {
    let cbs = unsafe { cb(opdata) };
    let fp = human(fingerprint);
    // "changed" is decided by the engine, which can look at the context's list.
    cbs.events.push_back(OtrEvent::NewFingerprint {
        account: cstr_lossy(accountname),
        peer: cstr_lossy(username),
        fingerprint: fp,
        changed: false,
    });
}

unsafe extern "C" fn op_write_fingerprints(opdata: *mut c_void) {
    let cbs = unsafe { cb(opdata) };
    cbs.events.push_back(OtrEvent::FingerprintsChanged);
}

pub(super) unsafe fn secure_event(context: *mut ffi::ConnContext, refreshed: bool) -> OtrEvent {
    let (account, peer) = unsafe { ctx_names(context) };
    let (verified, fingerprint) = unsafe {
        let fp = (*context).active_fingerprint;
        if fp.is_null() {
            (false, String::new())
        } else {
            (
                ffi::otrl_context_is_fingerprint_trusted(fp) != 0,
                human((*fp).fingerprint),
            )
        }
    };
    OtrEvent::Secure {
        account,
        peer,
        verified,
        fingerprint,
        refreshed,
    }
}

/// Pins the buddy's conversation to the session (instance tag and key) whose key
/// exchange just finished — unless its key is not verified while the buddy has a
/// verified one and the conversation is with another session (another instance tag,
/// or the same tag with another key: tags are in clear, anyone can claim one): a key
/// exchange proves nothing about who is at the other end, so it never takes a
/// conversation away from a verified key. The user is told, and can verify the new key
/// to switch to it ([`OtrEngine::set_verified`]). Unless the session is the very one
/// already pinned, libotr's copy of the last message sent is wiped first, so that
/// libotr cannot resend it into the new session. Returns whether the session is now
/// the conversation.
///
/// # Safety
/// `opdata` as for [`cb`]; `context` is the live context libotr passes to a callback.
unsafe fn pin(opdata: *mut c_void, context: *mut ffi::ConnContext) -> bool {
    if context.is_null() {
        return false;
    }
    // SAFETY: see above; everything is read before the callback returns, and the master
    // context is live as long as its child.
    let (names, instance, master) = unsafe {
        (
            ctx_names(context),
            (*context).their_instance,
            (*context).m_context,
        )
    };
    let (fingerprint, verified) = unsafe { active_key(context) };
    let this = Pin {
        instance,
        // SAFETY: as above.
        key: unsafe { active_bytes(context) },
    };
    let cbs = unsafe { cb(opdata) };
    let before = cbs.pinned.get(&names).copied();
    if before != Some(this) {
        // SAFETY: libotr calls gone_secure/still_secure before it resends anything.
        unsafe { forget_last_message(context) };
    }
    let takes_over = before != Some(this);
    // SAFETY: the live master of `context`.
    if !verified && takes_over && !master.is_null() && unsafe { limits::has_verified(master) } {
        // What the conversation is now, said as it is.
        let now = match cbs.us {
            // SAFETY: our live user state; the names are the context's own.
            Some(us) => unsafe {
                let (acc, user) = (
                    CStr::from_ptr((*context).accountname),
                    CStr::from_ptr((*context).username),
                );
                conversation(us.as_ptr(), &cbs.pinned, acc, user).map(|c| (*c).msgstate)
            },
            None => None,
        };
        let (account, peer) = names;
        let stays = match now {
            Some(ffi::OtrlMessageState_OTRL_MSGSTATE_ENCRYPTED) => {
                format!("This conversation stays with {peer}'s verified key")
            }
            Some(ffi::OtrlMessageState_OTRL_MSGSTATE_FINISHED) => format!(
                "The private conversation with {peer}'s verified key has ended; it is not \
                 private now"
            ),
            _ => format!("The conversation with {peer} is not private now"),
        };
        cbs.events.push_back(OtrEvent::Notice {
            account,
            text: format!(
                "a session of {peer} with a key you have not verified ({fingerprint}) wants to \
                 talk privately. {stays}, and nothing is sent to that session; if it is really \
                 {peer} (a new device), verify that key to switch to it"
            ),
            peer,
        });
        return false;
    }
    cbs.pinned.insert(names, this);
    true
}

/// Wipes libotr's copy of the last message sent in a session and its permission to
/// resend it. libotr keeps that copy so that, after the buddy reports an error and a
/// new key exchange finishes, it can resend it ("[resent] ..."): to whoever finished
/// that exchange, even a new key under the same instance tag.
///
/// # Safety
/// `context` is the live context libotr passes to gone_secure/still_secure. SAFETY of
/// the layout: we read libotr 4.1.1's private `ConnContextPriv` (checked at start-up,
/// see `library`); `context_priv` is owned by the context and `lastmessage` (NUL-
/// terminated, from `gcry_malloc_secure`) by `context_priv`. We only overwrite its
/// bytes in place and clear `may_retransmit`; libotr still owns and frees the buffer.
unsafe fn forget_last_message(context: *mut ffi::ConnContext) {
    // SAFETY: see above.
    unsafe {
        let p = (*context).context_priv;
        if p.is_null() {
            return;
        }
        (*p).may_retransmit = 0;
        let m = (*p).lastmessage;
        if !m.is_null() {
            let len = libc::strlen(m);
            ptr::write_bytes(m, 0, len);
        }
    }
}

unsafe extern "C" fn op_gone_secure(opdata: *mut c_void, context: *mut ffi::ConnContext) {
    // SAFETY: libotr calls this with our opdata and the context that went private.
    if unsafe { pin(opdata, context) } {
        let ev = unsafe { secure_event(context, false) };
        unsafe { cb(opdata) }.events.push_back(ev);
    }
}

unsafe extern "C" fn op_gone_insecure(opdata: *mut c_void, context: *mut ffi::ConnContext) {
    let (account, peer) = unsafe { ctx_names(context) };
    unsafe { cb(opdata) }
        .events
        .push_back(OtrEvent::Insecure { account, peer });
}

unsafe extern "C" fn op_still_secure(
    opdata: *mut c_void,
    context: *mut ffi::ConnContext,
    _is_reply: c_int,
) {
    // SAFETY: as for op_gone_secure.
    if unsafe { pin(opdata, context) } {
        let ev = unsafe { secure_event(context, true) };
        unsafe { cb(opdata) }.events.push_back(ev);
    }
}

unsafe extern "C" fn op_max_message_size(
    opdata: *mut c_void,
    _context: *mut ffi::ConnContext,
) -> c_int {
    unsafe { cb(opdata) }.max_message_size
}

unsafe extern "C" fn op_smp(
    opdata: *mut c_void,
    smp_event: ffi::OtrlSMPEvent,
    context: *mut ffi::ConnContext,
    progress: c_ushort,
    question: *mut c_char,
) {
    let (account, peer) = unsafe { ctx_names(context) };
    // SAFETY: libotr calls this with our opdata and a live context.
    let cbs = unsafe { cb(opdata) };
    // Another session of the buddy (another key, or one the user never accepted) is not
    // the conversation: its questions are not the buddy's, and its results verify
    // nothing the user sees.
    if !unsafe { is_conversation(cbs, context) } {
        let (fingerprint, _) = unsafe { active_key(context) };
        cbs.events.push_back(OtrEvent::Notice {
            account,
            text: format!(
                "another session of {peer}, with key {fingerprint}, tried to authenticate; \
                 it was ignored: it is not the session this conversation uses"
            ),
            peer,
        });
        return;
    }
    let event = match smp_event {
        ffi::OtrlSMPEvent_OTRL_SMPEVENT_ASK_FOR_ANSWER => {
            SmpEvent::AskedQuestion(cstr_lossy(question))
        }
        ffi::OtrlSMPEvent_OTRL_SMPEVENT_ASK_FOR_SECRET => SmpEvent::AskedSecret,
        ffi::OtrlSMPEvent_OTRL_SMPEVENT_IN_PROGRESS => SmpEvent::Progress(progress),
        ffi::OtrlSMPEvent_OTRL_SMPEVENT_SUCCESS => SmpEvent::Succeeded,
        ffi::OtrlSMPEvent_OTRL_SMPEVENT_FAILURE => SmpEvent::Failed,
        ffi::OtrlSMPEvent_OTRL_SMPEVENT_ABORT => SmpEvent::Aborted,
        ffi::OtrlSMPEvent_OTRL_SMPEVENT_CHEATED | ffi::OtrlSMPEvent_OTRL_SMPEVENT_ERROR => {
            SmpEvent::Error
        }
        _ => return,
    };
    cbs.events.push_back(OtrEvent::Smp {
        account,
        peer,
        event,
    });
}

unsafe extern "C" fn op_msg_event(
    opdata: *mut c_void,
    msg_event: ffi::OtrlMessageEvent,
    context: *mut ffi::ConnContext,
    _message: *const c_char,
    _err: ffi::gcry_error_t,
) {
    let (account, peer) = unsafe { ctx_names(context) };
    let text = match msg_event {
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_ENCRYPTION_REQUIRED => {
            "encryption is required: starting a private conversation"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_ENCRYPTION_ERROR => {
            "could not encrypt the message; it was not sent"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_CONNECTION_ENDED => {
            "the buddy ended the private conversation; the message was not sent"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_SETUP_ERROR => {
            "the private conversation could not be set up"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_MSG_REFLECTED => {
            "received our own OTR message back (ignored)"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_MSG_RESENT => "the last message was resent",
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_RCVDMSG_NOT_IN_PRIVATE => {
            "received an encrypted message we cannot read (no private conversation)"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_RCVDMSG_UNREADABLE => {
            "received an unreadable encrypted message"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_RCVDMSG_MALFORMED => {
            "received a malformed OTR message (dropped)"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_RCVDMSG_GENERAL_ERR => {
            "the buddy reported an OTR error"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_RCVDMSG_UNENCRYPTED => {
            "received an unencrypted message during a private conversation"
        }
        ffi::OtrlMessageEvent_OTRL_MSGEVENT_RCVDMSG_UNRECOGNIZED => {
            "received an unrecognized OTR message (dropped)"
        }
        _ => return,
    };
    unsafe { cb(opdata) }.events.push_back(OtrEvent::Notice {
        account,
        peer,
        text: text.into(),
    });
}

/// libotr calls this for exactly the messages it decrypted (and for each one we send),
/// with the session that decrypted it; we convert nothing, we only note that the
/// received text really was encrypted, and in which session.
unsafe extern "C" fn op_convert_msg(
    opdata: *mut c_void,
    context: *mut ffi::ConnContext,
    convert_type: ffi::OtrlConvertType,
    _dest: *mut *mut c_char,
    _src: *const c_char,
) {
    if convert_type == ffi::OtrlConvertType_OTRL_CONVERT_RECEIVING {
        // SAFETY: opdata is our Callbacks, live for the libotr call that runs us;
        // context is the live session that decrypted the message.
        let cbs = unsafe { cb(opdata) };
        let ours = unsafe { is_conversation(cbs, context) };
        let (fingerprint, verified) = unsafe { active_key(context) };
        cbs.decrypted = Some(Decrypted {
            ours,
            fingerprint,
            verified,
        });
    }
}

unsafe extern "C" fn op_create_instag(
    _opdata: *mut c_void,
    _accountname: *const c_char,
    _protocol: *const c_char,
) {
    // Instance tags are made by the engine before any message is handled.
}

pub(super) fn ops() -> ffi::OtrlMessageAppOps {
    ffi::OtrlMessageAppOps {
        policy: Some(op_policy),
        create_privkey: Some(op_create_privkey),
        is_logged_in: Some(op_is_logged_in),
        inject_message: Some(op_inject),
        update_context_list: Some(op_update_context_list),
        new_fingerprint: Some(op_new_fingerprint),
        write_fingerprints: Some(op_write_fingerprints),
        gone_secure: Some(op_gone_secure),
        gone_insecure: Some(op_gone_insecure),
        still_secure: Some(op_still_secure),
        max_message_size: Some(op_max_message_size),
        handle_smp_event: Some(op_smp),
        handle_msg_event: Some(op_msg_event),
        create_instag: Some(op_create_instag),
        convert_msg: Some(op_convert_msg),
        ..Default::default()
    }
}
