//! What the SIP stack reports to the call layer.

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::TransactionHandle;
use rsipstack::sip::StatusCode;

/// Identifies a call for its whole life (Call-ID and our tag; stable across the early
/// and confirmed dialog).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub String);

impl CallKey {
    pub(crate) fn of(id: &DialogId) -> CallKey {
        CallKey(format!("{};{}", id.call_id, id.local_tag))
    }

    /// The Call-ID part.
    pub(crate) fn call_id(&self) -> &str {
        self.0.rsplit_once(';').map(|(c, _)| c).unwrap_or(&self.0)
    }
}

impl std::fmt::Display for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a call ended, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up.
    LocalHangup,
    /// The peer hung up.
    RemoteHangup,
    /// The caller gave up before we answered.
    Cancelled,
    /// The callee was busy (486).
    Busy,
    /// The callee declined (603).
    Declined,
    /// Any other final failure response.
    Failed(u16, String),
    /// No answer within the transaction timeout.
    Timeout,
    /// An incoming call nobody answered within the ring timeout (refused with 480).
    Missed,
    /// Someone asked for the password for a realm that is not the account's (or on a
    /// direct call, which never sends one); it was not sent. The words say who and which.
    CredentialsWithheld(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::LocalHangup => f.write_str("hung up"),
            EndReason::RemoteHangup => f.write_str("the other side hung up"),
            EndReason::Cancelled => f.write_str("cancelled"),
            EndReason::Busy => f.write_str("busy"),
            EndReason::Declined => f.write_str("declined"),
            EndReason::Failed(code, text) => write!(f, "failed: {code} {text}"),
            EndReason::Timeout => f.write_str("no answer"),
            EndReason::Missed => f.write_str("missed"),
            EndReason::CredentialsWithheld(words) => f.write_str(words),
        }
    }
}

impl EndReason {
    pub(crate) fn from_status(code: &StatusCode) -> EndReason {
        match code.code() {
            486 | 600 => EndReason::Busy,
            603 => EndReason::Declined,
            487 => EndReason::Cancelled,
            408 => EndReason::Timeout,
            c => EndReason::Failed(c, code.to_string()),
        }
    }
}

/// How we refuse an incoming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 486 Busy Here: the user is busy, or too many calls are ringing at once.
    Busy,
    /// 603 Decline: the user refused.
    Declined,
    /// 488 Not Acceptable Here: the offer is malformed or asks for what we cannot do.
    NotAcceptable,
    /// 500 Server Internal Error: we could not set the call up on our side.
    Failed,
}

impl Rejection {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Rejection::Busy => StatusCode::BusyHere,
            Rejection::Declined => StatusCode::Decline,
            Rejection::NotAcceptable => StatusCode::NotAcceptableHere,
            Rejection::Failed => StatusCode::ServerInternalError,
        }
    }
}

/// A re-INVITE from the peer (hold, resume, new address). It must be answered: with an
/// SDP answer, or refused (488) when it would weaken the call.
pub struct ReInvite {
    /// Its SDP offer (may be empty: then our answer is an offer).
    pub sdp: Vec<u8>,
    pub(crate) handle: TransactionHandle,
}

impl std::fmt::Debug for ReInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReInvite")
            .field("sdp_len", &self.sdp.len())
            .finish()
    }
}

impl ReInvite {
    /// Accepts with our SDP answer.
    pub async fn accept(self, sdp: String) {
        let headers = vec![rsipstack::sip::Header::ContentType(
            "application/sdp".into(),
        )];
        if let Err(e) = self
            .handle
            .respond(StatusCode::OK, Some(headers), Some(sdp.into_bytes()))
            .await
        {
            tracing::warn!(error = %e, "could not answer re-INVITE");
        }
    }

    /// Refuses it (488 Not Acceptable Here): the call stays as it was.
    pub async fn refuse(self) {
        if let Err(e) = self.handle.reply(StatusCode::NotAcceptableHere).await {
            tracing::warn!(error = %e, "could not refuse re-INVITE");
        }
    }

    /// Refuses it because our own re-INVITE is under way (491 Request Pending, RFC
    /// 3261 §14.2): the peer retries after a pause.
    pub async fn pending(self) {
        if let Err(e) = self.handle.reply(StatusCode::RequestPending).await {
            tracing::warn!(error = %e, "could not answer re-INVITE with 491");
        }
    }

    /// Asks the peer to try again later (500 with Retry-After, RFC 3261 §14.2): we
    /// are too busy to look at it, or still answering its previous re-INVITE; the
    /// call stays as it was.
    pub async fn postpone(self) {
        // Chosen at random between 0 and 10 seconds (RFC 3261 §14.2), so two
        // phones that refuse each other do not retry in step.
        let mut byte = [0u8; 1];
        let seconds = match getrandom::fill(&mut byte) {
            Ok(()) => byte[0] % 11,
            Err(_) => 5,
        };
        let headers = vec![rsipstack::sip::Header::RetryAfter(
            seconds.to_string().into(),
        )];
        if let Err(e) = self
            .handle
            .respond(StatusCode::ServerInternalError, Some(headers), None)
            .await
        {
            tracing::warn!(error = %e, "could not postpone re-INVITE");
        }
    }
}

/// Something that happened in the SIP stack. The channel carrying these is bounded:
/// when it is full, a new incoming call is refused (503) and a re-INVITE postponed
/// (500), progress reports are dropped, and only answers and ends of calls wait for
/// room — they are never lost (see [`SipEvent::must_arrive`]).
#[derive(Debug)]
pub enum SipEvent {
    /// Someone is calling us; we already answered 180 Ringing.
    IncomingCall {
        /// The call.
        call: CallKey,
        /// Caller's address (From URI).
        from: String,
        /// Caller's display name, if any.
        display_name: Option<String>,
        /// The SDP offer.
        offer: Vec<u8>,
    },
    /// Our outgoing call is ringing at the other end.
    Ringing {
        /// The call.
        call: CallKey,
    },
    /// Our outgoing call was answered (2xx, ACK sent), with the peer's SDP answer.
    Answered {
        /// The call.
        call: CallKey,
        /// The SDP answer.
        sdp: Vec<u8>,
    },
    /// An incoming call we answered is established (ACK received).
    Established {
        /// The call.
        call: CallKey,
    },
    /// The peer sent a re-INVITE that must be answered.
    ReInvite {
        /// The call.
        call: CallKey,
        /// Offer and responder.
        reinvite: ReInvite,
    },
    /// The call is over.
    Ended {
        /// The call.
        call: CallKey,
        /// Why.
        reason: EndReason,
    },
}

impl SipEvent {
    /// Whether losing this event would leave a call in a state nobody can see: an
    /// answered call without media, or a call that ended but still shows. These wait
    /// for room in a full channel; everything else may be dropped.
    pub fn must_arrive(&self) -> bool {
        matches!(self, SipEvent::Answered { .. } | SipEvent::Ended { .. })
    }
}
