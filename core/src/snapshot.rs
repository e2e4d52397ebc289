//! What the window and the CLI show: an immutable picture of the phone, replaced as a
//! whole whenever something changes.

use crate::model::{AccountConfig, AccountId};
use crate::security::{CallSecurity, ChatSecurity};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Connection state of one account, in words a user understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AccountStatus {
    /// Not connected and not trying.
    Offline,
    /// Connecting, logging in or registering.
    Connecting,
    /// The server could not be reached or answered with a temporary error; the phone
    /// keeps trying by itself. Why, in words.
    Retrying(String),
    /// Registered (SIP) or logged in (XMPP).
    Online,
    /// Stopped because of an error the user must fix (wrong password, untrusted cert...).
    Error(String),
}

/// One account with its live status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    /// What is configured.
    pub config: AccountConfig,
    /// What is happening.
    pub status: AccountStatus,
}

/// A contact's reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Presence {
    /// Online and available.
    Available,
    /// Online, away.
    Away,
    /// Online, do not disturb.
    DoNotDisturb,
    /// Not online (or unknown).
    Offline,
}

/// Where a roster subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Subscription {
    /// We asked; the contact has not answered yet.
    WaitingForAuthorization,
    /// The contact asked us; the user has not decided yet.
    RequestReceived,
    /// Presence is shared.
    Authorized,
    /// No presence subscription.
    None,
}

/// A contact in an account's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactView {
    /// The account whose roster holds it.
    pub account: AccountId,
    /// Its address (bare JID or SIP address).
    pub address: String,
    /// The name the user gave it.
    pub alias: Option<String>,
    /// Roster group.
    pub group: Option<String>,
    /// Reachability.
    pub presence: Presence,
    /// Subscription state.
    pub subscription: Subscription,
}

/// Identifier of a call for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CallId(pub u64);

/// Where a call is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CallState {
    /// We sent the INVITE.
    Calling,
    /// The peer's phone is ringing.
    Ringing,
    /// Someone is calling us.
    Incoming,
    /// Talking.
    Connected,
    /// On hold (by either side).
    OnHold,
    /// Over, with the reason.
    Ended(String),
}

/// A call as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallView {
    /// Its identifier.
    pub id: CallId,
    /// The account it uses (`None` for direct-IP and echo-test calls).
    pub account: Option<AccountId>,
    /// The other party.
    pub peer: String,
    /// Who called whom.
    pub direction: CallDirection,
    /// Call progress.
    pub state: CallState,
    /// How private it is.
    pub security: CallSecurity,
    /// The ZRTP algorithms once secure, e.g. "X255/AES1/S256/HS80/B32".
    pub algorithms: Option<String>,
    /// The negotiated audio codec.
    pub codec: Option<String>,
    /// Latest media statistics.
    pub stats: Option<CallStats>,
    /// Answered by a built-in peer (the echo test's far end), not by the user.
    pub automatic: bool,
    /// Its media streams, one per m-line that runs (audio; video and a shared screen
    /// when they come). The call's `security` is that of its weakest stream.
    pub streams: Vec<MediaStreamView>,
    /// Our camera is on: a video stream sends our pictures whenever the peer takes
    /// them (off: its m-line only receives).
    pub camera_on: bool,
    /// We share our screen on its video stream (the window says so, always visible).
    pub sharing_screen: bool,
}

/// What a media stream carries, as the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StreamKind {
    /// The voice.
    Audio,
    /// A camera.
    Video,
    /// A shared screen.
    Screen,
}

/// One media stream of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaStreamView {
    /// What it carries.
    pub kind: StreamKind,
    /// Whether our media goes out on it: the peer takes it, neither side holds the
    /// call, and for video our camera is on.
    pub sending: bool,
    /// How private this stream is (each is keyed by its own ZRTP exchange).
    pub security: CallSecurity,
    /// Its codec, once agreed.
    pub codec: Option<String>,
    /// Latest statistics.
    pub stats: Option<CallStats>,
}

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CallDirection {
    /// We called.
    Outgoing,
    /// They called.
    Incoming,
}

/// Media statistics of a call (from RTP/RTCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CallStats {
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets lost on the way to us.
    pub packets_lost: u64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: u32,
    /// Round-trip time from RTCP, milliseconds.
    pub rtt_ms: Option<u32>,
    /// Datagrams dropped as malformed, forged, replayed or unencrypted.
    pub refused: u64,
    /// A video stream's pictures.
    pub video: Option<VideoFigures>,
}

/// What a video stream's pictures amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct VideoFigures {
    /// Pictures coded and sent.
    pub frames_sent: u64,
    /// Frames received whole.
    pub frames_received: u64,
    /// Pictures decoded.
    pub frames_decoded: u64,
    /// Key frames we asked the peer for.
    pub key_frames_asked: u64,
    /// Size of the last picture decoded.
    pub width: u32,
    /// Size of the last picture decoded.
    pub height: u32,
    /// Pictures decoded over the last second.
    pub fps: u32,
    /// A shared screen: pictures captured over the last second, in all, and looks
    /// that found nothing changed (so nothing was captured or coded).
    pub capture: Option<CaptureFigures>,
}

/// What sharing the screen costs: see [`VideoFigures::capture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CaptureFigures {
    /// Pictures captured over the last second.
    pub fps: u32,
    /// Pictures captured.
    pub captured: u64,
    /// Looks that found the screen unchanged.
    pub unchanged: u64,
}

/// A chat as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatView {
    /// The account it runs on.
    pub account: AccountId,
    /// The other party.
    pub peer: String,
    /// How private it is.
    pub security: ChatSecurity,
    /// The peer's OTR fingerprint differs from the one we knew.
    pub fingerprint_changed: bool,
    /// The peer's OTR fingerprint in this private conversation.
    pub peer_fingerprint: Option<String>,
    /// A running authentication (SMP) with the peer.
    pub smp: Option<SmpView>,
    /// The OTR policy in force for this peer.
    pub policy: crate::model::OtrPolicySetting,
    /// Messages waiting for the private conversation (policy "require").
    pub held: usize,
    /// The conversation, oldest first (shared, so snapshots stay cheap).
    pub lines: Arc<Vec<ChatLine>>,
}

/// Where an authentication of the buddy (OTR's SMP) stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SmpView {
    /// The buddy asks this question; answer it to authenticate each other.
    Asked(String),
    /// The buddy wants to compare a shared secret.
    SecretAsked,
    /// Under way (percent).
    InProgress(u16),
    /// The answers matched: the buddy is now verified.
    Succeeded,
    /// The answers did not match: the buddy is not who you think, or mistyped.
    Failed,
    /// Aborted by either side, or a protocol error.
    Aborted,
}

/// Our OTR key for an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtrKeyView {
    /// The account.
    pub account: AccountId,
    /// Our fingerprint, for the buddy to compare.
    pub fingerprint: String,
}

/// A buddy's OTR fingerprint we have seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownFingerprintView {
    /// The account it was seen on.
    pub account: AccountId,
    /// The buddy.
    pub peer: String,
    /// Five groups of eight hex digits.
    pub fingerprint: String,
    /// The user verified it (in person, by question or shared secret).
    pub verified: bool,
}

/// One line of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatLine {
    /// The message id.
    pub id: String,
    /// Who wrote it: our address, or the peer's (a nickname in rooms).
    pub sender: String,
    /// We wrote it.
    pub from_me: bool,
    /// The text.
    pub body: String,
    /// When we saw it, milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// The server has it (our own messages).
    pub delivered: bool,
    /// It was stored by the server while we were offline.
    pub delayed: bool,
    /// It travelled OTR-encrypted (or, held, will only travel encrypted).
    pub encrypted: bool,
    /// Waiting for the private conversation before it is sent.
    pub held: bool,
    /// A notice from Hushphone (security changes, errors), not a message.
    pub notice: bool,
}

/// A room we are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomView {
    /// The account.
    pub account: AccountId,
    /// `room@conference.server`.
    pub room: String,
    /// Our nickname.
    pub nick: String,
    /// We are in (the server confirmed).
    pub joined: bool,
    /// Nicknames present.
    pub occupants: Vec<String>,
    /// The conversation.
    pub lines: Arc<Vec<ChatLine>>,
}

/// Someone asking to see our presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestView {
    /// The account asked.
    pub account: AccountId,
    /// Who asks.
    pub from: String,
    /// The user chose to ignore it (it stays listed; the requester keeps waiting).
    pub ignored: bool,
}

/// The whole phone at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Increases with every change, so views can skip identical frames.
    pub revision: u64,
    /// Where the profile lives.
    pub profile_dir: PathBuf,
    /// The master password has not been given yet.
    pub locked: bool,
    /// A master password protects the vault.
    pub master_password_set: bool,
    /// History is kept by default.
    pub history_default: bool,
    /// Configured accounts with their status.
    pub accounts: Vec<AccountView>,
    /// Contacts of all accounts.
    pub contacts: Vec<ContactView>,
    /// Calls in progress.
    pub calls: Vec<CallView>,
    /// The last few calls that ended (oldest first), each with why, so that a call that
    /// ended at once still says why.
    pub ended_calls: Vec<CallView>,
    /// Open chats.
    pub chats: Vec<ChatView>,
    /// Joined rooms.
    pub rooms: Vec<RoomView>,
    /// Pending subscription requests.
    pub requests: Vec<RequestView>,
    /// Our OTR keys, per connected chat account.
    pub otr_keys: Vec<OtrKeyView>,
    /// Buddies' OTR fingerprints we know.
    pub known_fingerprints: Vec<KnownFingerprintView>,
}
