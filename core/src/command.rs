//! What the window, the CLI and the tests ask the core to do.

use crate::model::{AccountConfig, AccountId, EncryptionPolicy, NewAccount};
use crate::secret::Secret;
use crate::snapshot::CallId;
pub use hush_media::audio::{LevelMeter, SinkSpec, SourceSpec};
use std::net::SocketAddr;

/// How to answer someone who asks to see our presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAnswer {
    /// Let them (and ask to see theirs).
    Authorize,
    /// Refuse; they are told.
    Deny,
    /// Do nothing; they keep waiting and the request stays listed.
    Ignore,
}

/// The devices of one call: microphone, speaker and, for a video call, camera.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaChoice {
    /// Microphone.
    pub source: SourceSpec,
    /// Speaker.
    pub sink: SinkSpec,
    /// Video: offered (or accepted) only when set.
    pub video: Option<VideoChoice>,
}

impl Default for MediaChoice {
    fn default() -> Self {
        MediaChoice {
            source: SourceSpec::Silence,
            sink: SinkSpec::Null,
            video: None,
        }
    }
}

/// Where a call's pictures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSourceSpec {
    /// A moving test pattern (colour bars and a sliding square).
    Pattern,
    /// A Y4M file, looped.
    File(std::path::PathBuf),
    /// A V4L2 camera (`/dev/video0`), at 640×480 and 15 pictures a second or the
    /// nearest it has.
    Camera(std::path::PathBuf),
    /// The screen (screen sharing): signalled as `a=content:slides`, encoded for
    /// screen content.
    Screen(ScreenSpec),
}

/// The screen a call shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenSpec {
    /// The X11 display (`:1`); `None`: `$DISPLAY`, or the desktop portal in a Wayland
    /// session.
    pub display: Option<String>,
    /// Through the desktop portal (the user picks what in the desktop's dialog), even
    /// outside a Wayland session.
    pub portal: bool,
    /// One monitor, in RandR's order; `None`: the whole screen.
    pub monitor: Option<usize>,
    /// The largest picture sent (the screen is scaled down to fit).
    pub max_size: (u32, u32),
    /// Pictures a second at most (a still screen sends far fewer).
    pub fps: u32,
}

impl Default for ScreenSpec {
    /// The whole screen of `$DISPLAY` (the portal's choice in a Wayland session), at
    /// most 1280×720 and 15 pictures a second.
    fn default() -> Self {
        ScreenSpec {
            display: None,
            portal: false,
            monitor: None,
            max_size: (1280, 720),
            fps: 15,
        }
    }
}

/// What a video call sends and keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoChoice {
    /// Our pictures.
    pub source: VideoSourceSpec,
    /// Record the peer's pictures to this Y4M file.
    pub record: Option<std::path::PathBuf>,
}

/// A request to the core. Plain data: it can be sent from any thread.
#[derive(Debug, Clone)]
pub enum Command {
    /// Open the vault with the master password.
    Unlock {
        /// The master password.
        password: Secret,
    },
    /// Add an account.
    AddAccount(NewAccount),
    /// Remove an account and its saved password.
    RemoveAccount(AccountId),
    /// Protect the vault with a master password (none set yet).
    SetMasterPassword {
        /// The new master password.
        new: Secret,
    },
    /// Replace the master password.
    ChangeMasterPassword {
        /// The current master password.
        old: Secret,
        /// The new one.
        new: Secret,
    },
    /// Remove the master password (after the user was warned).
    RemoveMasterPassword {
        /// The current master password.
        current: Secret,
    },
    /// Turn history on or off by default.
    SetHistoryDefault(bool),
    /// Turn history on or off for one contact (`None`: follow the default).
    SetHistoryFor {
        /// The account.
        account: AccountId,
        /// The contact.
        peer: String,
        /// The choice.
        choice: Option<bool>,
    },
    /// Erase every history record.
    EraseHistory,
    /// Bring a SIP account online (register). `password` overrides the saved one.
    Connect {
        /// The account.
        account: AccountId,
        /// Password when not remembered.
        password: Option<Secret>,
    },
    /// Take an account offline (un-register).
    Disconnect {
        /// The account.
        account: AccountId,
    },
    /// Accept direct calls on `addr` (port 0: any). With `auto_answer` every call is
    /// answered at once with that audio.
    Listen {
        /// Local SIP address.
        addr: SocketAddr,
        /// Answer automatically with this audio.
        auto_answer: Option<MediaChoice>,
        /// Encryption policy for calls on this address.
        policy: EncryptionPolicy,
    },
    /// Call someone: through an account, or directly (`sip:user@host:port`).
    PlaceCall {
        /// The account, or `None` for a direct call.
        account: Option<AccountId>,
        /// Who.
        target: String,
        /// Audio devices.
        audio: MediaChoice,
        /// Override the account's policy (direct calls default to mandatory).
        policy: Option<EncryptionPolicy>,
    },
    /// Answer an incoming call.
    Answer {
        /// The call.
        call: CallId,
        /// Audio devices.
        audio: MediaChoice,
    },
    /// Refuse an incoming call: busy (486) or decline (603).
    Reject {
        /// The call.
        call: CallId,
        /// Busy rather than decline.
        busy: bool,
    },
    /// Hang up (or cancel) a call.
    Hangup {
        /// The call.
        call: CallId,
    },
    /// Meter the microphone (and play a one-second 440 Hz tone to the speaker when
    /// `tone`), for the settings page. Replies with the meter; runs until
    /// [`Command::StopAudioCheck`] or a call needs the devices.
    CheckAudio {
        /// The devices to check.
        audio: MediaChoice,
        /// Also play the test tone.
        tone: bool,
    },
    /// Stop the audio check.
    StopAudioCheck,
    /// List the sound cards' input and output devices.
    ListAudioDevices,
    /// List the cameras (video capture devices).
    ListCameras,
    /// List the keys of call peers whose SAS was verified (one entry per key).
    ListVerifiedPeers,
    /// List the keys a call peer's address has presented, the last seen first, so the
    /// user sees which one a verification outside a call would be about.
    PeerKeys {
        /// The peer's SIP address.
        peer: String,
    },
    /// Put a call on hold or resume it.
    Hold {
        /// The call.
        call: CallId,
        /// Hold (true) or resume (false).
        on: bool,
    },
    /// Send DTMF keys.
    SendDtmf {
        /// The call.
        call: CallId,
        /// Keys: 0-9 * # A-D.
        keys: String,
    },
    /// Create an XMPP account on its server (XEP-0077) and add it to the profile.
    RegisterXmpp(NewAccount),
    /// Change an XMPP account's password on the server (and in the vault if saved).
    ChangeXmppPassword {
        /// The account.
        account: AccountId,
        /// The current password when it is not saved.
        old: Option<Secret>,
        /// The new password.
        new: Secret,
    },
    /// Send a chat message (queued while offline).
    SendChat {
        /// The account.
        account: AccountId,
        /// The contact's address.
        to: String,
        /// The text.
        body: String,
    },
    /// Generate (or replace) the OTR key of a chat account.
    OtrGenerateKey {
        /// The account.
        account: AccountId,
    },
    /// Start a private conversation, or refresh a running one.
    OtrStart {
        /// The account.
        account: AccountId,
        /// The buddy.
        peer: String,
    },
    /// End the private conversation (the buddy is told).
    OtrEnd {
        /// The account.
        account: AccountId,
        /// The buddy.
        peer: String,
    },
    /// Mark a buddy's fingerprint verified (compared over a trusted channel) or not.
    OtrTrust {
        /// The account.
        account: AccountId,
        /// The buddy.
        peer: String,
        /// The fingerprint as the buddy read it out (spaces and case do not matter).
        fingerprint: String,
        /// Verified or not.
        verified: bool,
    },
    /// Forget a buddy's known fingerprint.
    OtrForget {
        /// The account.
        account: AccountId,
        /// The buddy.
        peer: String,
        /// The fingerprint.
        fingerprint: String,
    },
    /// Authenticate the buddy by a question (its answer is the secret) or a shared secret.
    OtrAuthenticate {
        /// The account.
        account: AccountId,
        /// The buddy.
        peer: String,
        /// Shown to the buddy; `None` for a shared secret.
        question: Option<String>,
        /// The answer or the shared secret.
        secret: Secret,
    },
    /// Answer the buddy's question or shared-secret request.
    OtrRespond {
        /// The account.
        account: AccountId,
        /// The buddy.
        peer: String,
        /// The answer.
        secret: Secret,
    },
    /// Abort a running authentication.
    OtrAbortAuthentication {
        /// The account.
        account: AccountId,
        /// The buddy.
        peer: String,
    },
    /// Set the OTR policy of an account, or of one buddy (`peer`), or clear a buddy's
    /// own (`policy: None`).
    OtrSetPolicy {
        /// The account.
        account: AccountId,
        /// One buddy, or the account's default.
        peer: Option<String>,
        /// The policy; `None` clears a buddy's own.
        policy: Option<crate::model::OtrPolicySetting>,
    },
    /// Import Pidgin's `otr.private_key` and `otr.fingerprints` files.
    OtrImport {
        /// The key file (text).
        keys: Option<Secret>,
        /// The fingerprints file (text).
        fingerprints: Option<String>,
    },
    /// Export the keys and fingerprints in Pidgin's formats.
    OtrExport,
    /// Set our availability.
    SetPresence {
        /// The account.
        account: AccountId,
        /// Available, away, do not disturb or offline.
        presence: crate::snapshot::Presence,
    },
    /// Add a contact (asks to see their presence).
    AddContact {
        /// The account.
        account: AccountId,
        /// The contact's address.
        address: String,
        /// Alias.
        alias: Option<String>,
        /// Group (new groups are created by using them).
        group: Option<String>,
    },
    /// Rename a contact or move it to another group.
    UpdateContact {
        /// The account.
        account: AccountId,
        /// The contact's address.
        address: String,
        /// Alias.
        alias: Option<String>,
        /// Group.
        group: Option<String>,
    },
    /// Remove a contact.
    RemoveContact {
        /// The account.
        account: AccountId,
        /// The contact's address.
        address: String,
    },
    /// Answer a subscription request.
    AnswerRequest {
        /// The account.
        account: AccountId,
        /// Who asked.
        from: String,
        /// What to do.
        answer: RequestAnswer,
    },
    /// Join (or create) a room.
    JoinRoom {
        /// The account.
        account: AccountId,
        /// `room@conference.server`.
        room: String,
        /// Our nickname.
        nick: String,
        /// Room password.
        password: Option<Secret>,
    },
    /// Leave a room.
    LeaveRoom {
        /// The account.
        account: AccountId,
        /// The room.
        room: String,
    },
    /// Say something in a room.
    SendRoom {
        /// The account.
        account: AccountId,
        /// The room.
        room: String,
        /// The text.
        body: String,
    },
    /// Mark one key of a peer as verified (or not) outside a call: the key the user was
    /// shown ([`Command::PeerKeys`]), never every key that ever used the address.
    SetPeerVerified {
        /// The peer's SIP address.
        peer: String,
        /// The key id (24 hex digits) from [`Command::PeerKeys`].
        key: String,
        /// Verified or not.
        verified: bool,
    },
    /// Record that the user compared the SAS with the peer (or withdraw it).
    SetSasVerified {
        /// The call.
        call: CallId,
        /// Verified or not.
        verified: bool,
    },
    /// Send silence instead of the microphone (the call stays up; nothing is renegotiated).
    Mute {
        /// The call.
        call: CallId,
        /// Muted or not.
        on: bool,
    },
    /// Stop sending pictures (camera off) or start again; the call goes on.
    Camera {
        /// The call.
        call: CallId,
        /// Camera on.
        on: bool,
    },
    /// Add video to a call (our camera on: the test pattern unless the call was placed
    /// or answered with a source), or end the call's video; the peer is asked by
    /// re-INVITE, and a video it adds is watched with our camera off.
    Video {
        /// The call.
        call: CallId,
        /// Video or not.
        on: bool,
        /// What to send when video starts (the window's chosen camera); `None`: what
        /// the call was placed or answered with, else the test pattern. Not a screen.
        camera: Option<VideoSourceSpec>,
    },
    /// Share the screen in a call (in place of the camera, or as its first video), or
    /// stop sharing (back to the camera, or to a voice call). The peer is told by
    /// re-INVITE (`a=content:slides`).
    ShareScreen {
        /// The call.
        call: CallId,
        /// Share or stop.
        on: bool,
        /// Which screen (`None`: the whole of `$DISPLAY`, at most 1280×720).
        screen: Option<ScreenSpec>,
    },
    /// The SAS the peer read out was not ours: end the call and say why.
    SasMismatch {
        /// The call.
        call: CallId,
    },
}

impl Command {
    /// Short name for messages ("could not add account: ...").
    pub fn name(&self) -> &'static str {
        match self {
            Command::Unlock { .. } => "unlock",
            Command::AddAccount(_) => "add account",
            Command::RemoveAccount(_) => "remove account",
            Command::SetMasterPassword { .. } => "set master password",
            Command::ChangeMasterPassword { .. } => "change master password",
            Command::RemoveMasterPassword { .. } => "remove master password",
            Command::SetHistoryDefault(_) => "set history default",
            Command::SetHistoryFor { .. } => "set history for contact",
            Command::EraseHistory => "erase history",
            Command::Connect { .. } => "connect",
            Command::Disconnect { .. } => "disconnect",
            Command::Listen { .. } => "listen",
            Command::PlaceCall { .. } => "call",
            Command::Answer { .. } => "answer",
            Command::Reject { .. } => "reject",
            Command::Hangup { .. } => "hang up",
            Command::Hold { .. } => "hold",
            Command::SendDtmf { .. } => "send DTMF",
            Command::SetSasVerified { .. } => "set SAS verified",
            Command::SasMismatch { .. } => "report SAS mismatch",
            Command::Mute { .. } => "mute",
            Command::Camera { .. } => "camera",
            Command::Video { .. } => "video",
            Command::ShareScreen { .. } => "share screen",
            Command::SetPeerVerified { .. } => "set peer verified",
            Command::RegisterXmpp(_) => "create account",
            Command::ChangeXmppPassword { .. } => "change password",
            Command::SendChat { .. } => "send message",
            Command::OtrGenerateKey { .. } => "generate OTR key",
            Command::OtrStart { .. } => "start private conversation",
            Command::OtrEnd { .. } => "end private conversation",
            Command::OtrTrust { .. } => "verify fingerprint",
            Command::OtrForget { .. } => "forget fingerprint",
            Command::OtrAuthenticate { .. } => "authenticate buddy",
            Command::OtrRespond { .. } => "answer authentication",
            Command::OtrAbortAuthentication { .. } => "abort authentication",
            Command::OtrSetPolicy { .. } => "set OTR policy",
            Command::OtrImport { .. } => "import OTR files",
            Command::OtrExport => "export OTR files",
            Command::SetPresence { .. } => "set presence",
            Command::AddContact { .. } => "add contact",
            Command::UpdateContact { .. } => "update contact",
            Command::RemoveContact { .. } => "remove contact",
            Command::AnswerRequest { .. } => "answer request",
            Command::CheckAudio { .. } => "check audio",
            Command::StopAudioCheck => "stop the audio check",
            Command::ListAudioDevices => "list audio devices",
            Command::ListCameras => "list cameras",
            Command::ListVerifiedPeers => "list verified peers",
            Command::PeerKeys { .. } => "list a peer's keys",
            Command::JoinRoom { .. } => "join room",
            Command::LeaveRoom { .. } => "leave room",
            Command::SendRoom { .. } => "send to room",
        }
    }
}

/// The result of a command that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to report beyond success.
    Done,
    /// The account that was added.
    Account(AccountConfig),
    /// The call that was placed.
    Call(CallId),
    /// The address now listening for calls.
    Listening(SocketAddr),
    /// Verified keys of call peers, by address.
    VerifiedPeers(Vec<crate::security::PeerKey>),
    /// The keys one address presented, the last seen first.
    PeerKeys(Vec<crate::security::PeerKey>),
    /// Input and output device names (empty without a sound card).
    AudioDevices {
        /// Microphones.
        inputs: Vec<String>,
        /// Speakers.
        outputs: Vec<String>,
    },
    /// The cameras found (none without one).
    Cameras(Vec<crate::CameraInfo>),
    /// The microphone level of a running audio check.
    AudioMeter(hush_media::audio::LevelMeter),
    /// OTR files in Pidgin's formats: `otr.private_key` and `otr.fingerprints`.
    OtrFiles {
        /// The private keys.
        keys: Secret,
        /// The known fingerprints.
        fingerprints: String,
    },
}
