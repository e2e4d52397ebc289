//! Bounds on what libotr keeps because of what senders do. libotr makes a master
//! context for every sender, a child context for every OTR instance tag a sender names,
//! keeps every fingerprint a sender completes a key exchange with, and buffers partly
//! received fragmented messages per context: a hostile server or sender can make as many
//! of each as it likes. The engine trims them here after every received message, on the
//! thread that owns the user state.
//!
//! Contexts are freed only through `otrl_context_forget`, after which we also free the
//! context's private part, which libotr 4.1.1 leaks. A child is never forgotten without
//! first unhooking the master's "most recent instance" pointers from it.

use otr_sys as ffi;
use std::collections::HashSet;
use std::ffi::CStr;
use std::ptr;

/// How much libotr may keep for senders. Buddies the user knows — engaged with (wrote
/// to, started, ended or authenticated a conversation with), with a verified key, or
/// with keys in the user's fingerprints file — do not count against
/// [`OtrLimits::peers`], are never dropped, and lose neither the keys the user kept nor
/// a partly received message to other senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtrLimits {
    /// Buddies kept because they wrote to us. Beyond this the idle ones go first: those
    /// with nothing known, then those with only unverified fingerprints, then those in a
    /// private conversation the user never took part in (which is closed, with a notice).
    pub peers: usize,
    /// Instances (devices) kept per buddy. Beyond this the least recently heard from
    /// go, plaintext ones first, then finished, then private ones (closed without
    /// telling that device); the instances the conversation uses are always kept.
    pub instances: usize,
    /// Fingerprints kept per buddy; the oldest ones first seen this session go first
    /// (never one in use, verified, or from the user's fingerprints file).
    pub fingerprints: usize,
    /// Bytes of one partly received fragmented message; more and it is discarded.
    pub fragment_bytes: usize,
    /// Bytes of partly received fragmented messages over the buddies the user does not
    /// know; beyond this the largest go first, with a notice.
    pub fragment_total: usize,
}

impl Default for OtrLimits {
    fn default() -> Self {
        OtrLimits {
            peers: 256,
            instances: 8,
            fingerprints: 16,
            // A 64 KiB message encrypted and base64-encoded is under 90 KiB.
            fragment_bytes: 192 * 1024,
            fragment_total: 8 * 1024 * 1024,
        }
    }
}

/// What one master context (one buddy of one account) holds.
pub(super) struct Master {
    pub(super) ptr: *mut ffi::ConnContext,
    pub(super) account: String,
    pub(super) peer: String,
    /// Every context of this buddy is in plaintext.
    pub(super) plaintext: bool,
    /// Known fingerprints.
    pub(super) fingerprints: usize,
    /// One of them is verified.
    pub(super) verified: bool,
}

/// A copy of one of a context's names.
///
/// # Safety
/// `p` is null or a NUL-terminated string owned by a live context of the calling
/// thread's user state (libotr frees it with the context).
unsafe fn name(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: see above; copied at once, before the context can go.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The buddy of a context: (account, peer).
///
/// # Safety
/// `c` is a live context of the calling thread's user state.
pub(super) unsafe fn names(c: *mut ffi::ConnContext) -> (String, String) {
    // SAFETY: see above; both strings are owned by the context and copied at once.
    unsafe { (name((*c).accountname), name((*c).username)) }
}

/// The 20 bytes of a fingerprint.
///
/// # Safety
/// `f` is a live fingerprint of the calling thread's user state.
pub(super) unsafe fn fingerprint_bytes(f: *const ffi::Fingerprint) -> Option<[u8; 20]> {
    // SAFETY: see above; libotr allocates exactly 20 bytes for a fingerprint (the list
    // root's pointer is null, and never passed here).
    unsafe {
        let p = (*f).fingerprint;
        if p.is_null() {
            return None;
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(std::slice::from_raw_parts(p, 20));
        Some(out)
    }
}

/// One of the buddy's fingerprints is verified.
///
/// # Safety
/// `master` is a live master context of the calling thread's user state.
pub(super) unsafe fn has_verified(master: *mut ffi::ConnContext) -> bool {
    // SAFETY: read-only walk of the master's own fingerprint list.
    unsafe {
        let mut f = (*master).fingerprint_root.next;
        while !f.is_null() {
            if ffi::otrl_context_is_fingerprint_trusted(f) != 0 {
                return true;
            }
            f = (*f).next;
        }
    }
    false
}

/// The master contexts in `us`.
///
/// # Safety
/// `us` is a live user state owned by the calling thread.
pub(super) unsafe fn masters(us: ffi::OtrlUserState) -> Vec<Master> {
    let mut out = Vec::new();
    // SAFETY: read-only walk of libotr's context list, owned by `us`.
    unsafe {
        let mut c = (*us).context_root;
        while !c.is_null() {
            if (*c).m_context == c {
                let mut fingerprints = 0;
                let mut f = (*c).fingerprint_root.next;
                while !f.is_null() {
                    fingerprints += 1;
                    f = (*f).next;
                }
                let verified = has_verified(c);
                out.push(Master {
                    ptr: c,
                    account: name((*c).accountname),
                    peer: name((*c).username),
                    plaintext: family(us, c)
                        .iter()
                        .all(|x| (**x).msgstate == ffi::OtrlMessageState_OTRL_MSGSTATE_PLAINTEXT),
                    fingerprints,
                    verified,
                });
            }
            c = (*c).next;
        }
    }
    out
}

/// How many master contexts `us` holds (no allocation).
///
/// # Safety
/// As [`masters`].
pub(super) unsafe fn master_count(us: ffi::OtrlUserState) -> usize {
    let mut n = 0;
    // SAFETY: read-only walk of the context list owned by `us`.
    unsafe {
        let mut c = (*us).context_root;
        while !c.is_null() {
            n += usize::from((*c).m_context == c);
            c = (*c).next;
        }
    }
    n
}

/// Every context in `us` (masters and children).
///
/// # Safety
/// As [`masters`].
pub(super) unsafe fn context_count(us: ffi::OtrlUserState) -> usize {
    let mut n = 0;
    // SAFETY: read-only walk of the context list owned by `us`.
    unsafe {
        let mut c = (*us).context_root;
        while !c.is_null() {
            n += 1;
            c = (*c).next;
        }
    }
    n
}

/// The master and its children (instances), master first.
///
/// # Safety
/// `master` is a master context of the live user state `us`.
unsafe fn family(
    us: ffi::OtrlUserState,
    master: *mut ffi::ConnContext,
) -> Vec<*mut ffi::ConnContext> {
    let mut out = vec![master];
    // SAFETY: read-only walk of the context list owned by `us`.
    unsafe {
        let mut c = (*us).context_root;
        while !c.is_null() {
            if c != master && (*c).m_context == master {
                out.push(c);
            }
            c = (*c).next;
        }
    }
    out
}

/// Frees the fragment a context is accumulating.
///
/// # Safety
/// `c` is a live context; its private part and fragment buffer were allocated by libotr
/// with malloc and are owned by the context.
unsafe fn drop_fragment(c: *mut ffi::ConnContext) {
    // SAFETY: see above; the buffer is freed once and the pointer cleared with it.
    unsafe {
        let p = (*c).context_priv;
        if p.is_null() {
            return;
        }
        libc::free((*p).fragment.cast());
        (*p).fragment = ptr::null_mut();
        (*p).fragment_len = 0;
        (*p).fragment_n = 0;
        (*p).fragment_k = 0;
    }
}

/// Frees a forgotten context's private part (libotr emptied it when it forced the
/// context to plaintext, but does not free the struct itself).
///
/// # Safety
/// `p` was allocated by libotr with malloc, its context is gone, and it is freed once.
pub(super) unsafe fn free_private(p: *mut ffi::ConnContextPriv) {
    // SAFETY: see above.
    unsafe { libc::free(p.cast()) };
}

/// Bytes of the fragmented message a context is accumulating.
///
/// # Safety
/// `c` is a live context of the calling thread's user state; its private part is owned
/// by it.
unsafe fn fragment_len(c: *mut ffi::ConnContext) -> usize {
    // SAFETY: see above; read-only.
    unsafe {
        let p = (*c).context_priv;
        if p.is_null() { 0 } else { (*p).fragment_len }
    }
}

/// When a context last received a data message (seconds; 0 if never).
///
/// # Safety
/// As [`fragment_len`].
unsafe fn last_received(c: *mut ffi::ConnContext) -> ffi::time_t {
    // SAFETY: see above; read-only.
    unsafe {
        let p = (*c).context_priv;
        if p.is_null() { 0 } else { (*p).lastrecv }
    }
}

/// Forgets one plaintext child context.
///
/// # Safety
/// `child` is a plaintext child (instance) of `master`, both live in the calling thread's user
/// state. After this, `child` is freed: no pointer to it may be used.
unsafe fn forget_child(master: *mut ffi::ConnContext, child: *mut ffi::ConnContext) {
    // SAFETY: the master's "recent" pointers are plain fields libotr reads later; they
    // must not dangle, so they fall back to the master (libotr's own initial value).
    // The child's private part is malloc'd by libotr and not freed by it: we free it
    // after libotr is done with the child.
    unsafe {
        for slot in [
            &mut (*master).recent_child,
            &mut (*master).recent_rcvd_child,
            &mut (*master).recent_sent_child,
        ] {
            if *slot == child {
                *slot = master;
            }
        }
        let private = (*child).context_priv;
        if ffi::otrl_context_forget(child) == 0 {
            free_private(private);
        }
    }
}

/// Forgets a buddy: the master and all its instances, ending any conversation in them
/// without telling the buddy. Returns false (and changes nothing) if libotr refused.
///
/// # Safety
/// `master` is a master context of the live user state `us`, owned by the calling
/// thread. After this, it and its children are freed.
pub(super) unsafe fn forget_master(us: ffi::OtrlUserState, master: *mut ffi::ConnContext) -> bool {
    // SAFETY: every pointer comes from the walk of `us`; libotr frees the children and
    // the master in otrl_context_forget, after which we free their private parts, which
    // it leaks. Nothing else points at them: fingerprints hang off the master itself.
    unsafe {
        let all = family(us, master);
        for c in &all {
            if (**c).msgstate != ffi::OtrlMessageState_OTRL_MSGSTATE_PLAINTEXT {
                ffi::otrl_context_force_plaintext(*c);
            }
        }
        let privates: Vec<_> = all.iter().map(|c| (**c).context_priv).collect();
        if ffi::otrl_context_forget(master) != 0 {
            return false;
        }
        for p in privates {
            free_private(p);
        }
        true
    }
}

/// Drops a buddy's instances beyond `max`: plaintext ones first, then finished ones,
/// then private ones, least recently heard from first within each. Always kept: the
/// instance the conversation uses (`current`), the ones libotr's master points at as
/// most recent, and private ones whose key the user verified.
///
/// # Safety
/// As [`forget_master`]; `current` is null or a context of `master`'s family.
pub(super) unsafe fn trim_instances(
    us: ffi::OtrlUserState,
    master: *mut ffi::ConnContext,
    max: usize,
    current: *mut ffi::ConnContext,
) {
    // SAFETY: pointers from the walk of `us`; each forgotten child is not used again.
    unsafe {
        let children: Vec<_> = family(us, master).into_iter().skip(1).collect();
        if children.len() <= max {
            return;
        }
        let keep = [
            current,
            (*master).recent_rcvd_child,
            (*master).recent_sent_child,
            (*master).recent_child,
        ];
        let trusted = |c: *mut ffi::ConnContext| {
            (*c).msgstate == ffi::OtrlMessageState_OTRL_MSGSTATE_ENCRYPTED
                && !(*c).active_fingerprint.is_null()
                && ffi::otrl_context_is_fingerprint_trusted((*c).active_fingerprint) != 0
        };
        let rank = |c: *mut ffi::ConnContext| match (*c).msgstate {
            ffi::OtrlMessageState_OTRL_MSGSTATE_PLAINTEXT => 0,
            ffi::OtrlMessageState_OTRL_MSGSTATE_FINISHED => 1,
            _ => 2,
        };
        let mut spare: Vec<_> = children
            .iter()
            .copied()
            .filter(|c| !keep.contains(c) && !trusted(*c))
            .collect();
        spare.sort_by_key(|c| (rank(*c), last_received(*c)));
        let excess = children.len() - max;
        for c in spare.into_iter().take(excess) {
            if (*c).msgstate != ffi::OtrlMessageState_OTRL_MSGSTATE_PLAINTEXT {
                ffi::otrl_context_force_plaintext(c);
            }
            forget_child(master, c);
        }
    }
}

/// Bytes of partly received fragmented messages held over all contexts.
///
/// # Safety
/// As [`masters`].
pub(super) unsafe fn fragment_bytes(us: ffi::OtrlUserState) -> usize {
    let mut n = 0;
    // SAFETY: read-only walk of the context list owned by `us`.
    unsafe {
        let mut c = (*us).context_root;
        while !c.is_null() {
            n += fragment_len(c);
            c = (*c).next;
        }
    }
    n
}

/// Drops a buddy's oldest fingerprints beyond `max` among those it may lose: never one
/// an instance is using, one the user verified, or one in `kept` (the keys the user's
/// own fingerprints file holds for this buddy). Returns whether any went.
///
/// # Safety
/// As [`forget_master`].
pub(super) unsafe fn trim_fingerprints(
    us: ffi::OtrlUserState,
    master: *mut ffi::ConnContext,
    max: usize,
    kept: &HashSet<[u8; 20]>,
) -> bool {
    // SAFETY: fingerprints are owned by the master's list; libotr adds new ones at the
    // head, so the tail is the oldest. A fingerprint an instance points at (in any
    // state) is skipped, so no context is left pointing at freed memory.
    unsafe {
        let in_use: Vec<*mut ffi::Fingerprint> = family(us, master)
            .iter()
            .map(|c| (**c).active_fingerprint)
            .filter(|f| !f.is_null())
            .collect();
        let mut list = Vec::new();
        let mut f = (*master).fingerprint_root.next;
        while !f.is_null() {
            list.push(f);
            f = (*f).next;
        }
        if list.len() <= max {
            return false;
        }
        let mut excess = list.len() - max;
        let mut changed = false;
        for f in list.into_iter().rev() {
            if excess == 0 {
                break;
            }
            let from_file = fingerprint_bytes(f).is_some_and(|b| kept.contains(&b));
            if from_file || in_use.contains(&f) || ffi::otrl_context_is_fingerprint_trusted(f) != 0
            {
                continue;
            }
            ffi::otrl_context_forget_fingerprint(f, 0);
            excess -= 1;
            changed = true;
        }
        changed
    }
}

/// Discards partly received fragmented messages over `per` bytes, whoever sent them;
/// then, while those of senders `known` does not cover exceed `total` together, the
/// largest of them (`current`'s last). `known` is asked about master contexts. Returns
/// the buddies (account, peer) whose partial message was discarded, each with whether
/// it was over `per`.
///
/// # Safety
/// `us` is a live user state owned by the calling thread; `current` is null or one of
/// its master contexts.
pub(super) unsafe fn trim_fragments(
    us: ffi::OtrlUserState,
    current: *mut ffi::ConnContext,
    per: usize,
    total: usize,
    known: &dyn Fn(*mut ffi::ConnContext) -> bool,
) -> Vec<((String, String), bool)> {
    let mut dropped = Vec::new();
    // SAFETY: pointers from the walk of `us`; only fragment buffers are freed, and the
    // names are copied before anything is.
    unsafe {
        let mut pending = Vec::new();
        let mut c = (*us).context_root;
        while !c.is_null() {
            let len = fragment_len(c);
            if len > per {
                dropped.push((names(c), true));
                drop_fragment(c);
            } else if len > 0 && !known((*c).m_context) {
                pending.push((c, len));
            }
            c = (*c).next;
        }
        let mut sum: usize = pending.iter().map(|(_, l)| l).sum();
        if sum > total {
            // Others first, largest first.
            pending.sort_by_key(|(c, len)| ((**c).m_context == current, std::cmp::Reverse(*len)));
            for (c, len) in pending {
                if sum <= total {
                    break;
                }
                dropped.push((names(c), false));
                drop_fragment(c);
                sum -= len;
            }
        }
    }
    dropped
}

/// Frees every context's private part, for the user state's own teardown (libotr frees
/// the contexts but leaks these).
///
/// # Safety
/// Call right before `otrl_userstate_free(us)`; `us` is live and owned by the caller.
/// Returns the private parts to free once the user state is gone.
pub(super) unsafe fn privates(us: ffi::OtrlUserState) -> Vec<*mut ffi::ConnContextPriv> {
    let mut out = Vec::new();
    // SAFETY: read-only walk of the context list owned by `us`.
    unsafe {
        let mut c = (*us).context_root;
        while !c.is_null() {
            out.push((*c).context_priv);
            c = (*c).next;
        }
    }
    out
}
