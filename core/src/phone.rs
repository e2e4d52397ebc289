//! The running phone: a tokio runtime with one core task that owns the profile, applies
//! commands in order, publishes events and keeps the snapshot current. The window, the
//! CLI and the tests all hold a [`Phone`] and drive it the same way.

use crate::call::{CallInput, CallLayer, Resolver, ZidState};
use crate::chat::{ChatInput, ChatLayer};
use crate::command::{Command, Reply};
use crate::error::{CoreError, Result};
use crate::event::Event;
use crate::model::AccountId;
use crate::model::AccountSettings;
use crate::profile::{Direction, HistoryEntry, HistoryRecord};
use crate::profile::{Profile, VaultMode};
use crate::snapshot::Presence;
use crate::snapshot::{AccountStatus, AccountView, Snapshot};
use hush_signaling::xmpp::account::XmppCommand;
use hush_signaling::xmpp::chat::Show;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Called whenever the snapshot changes, e.g. egui's `request_repaint`.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

enum Op {
    Command(Command),
    /// Hang up calls and un-register before the runtime stops.
    Shutdown,
}

struct Request {
    op: Op,
    reply: Option<oneshot::Sender<Result<Reply>>>,
}

/// The network part of a command, run off the core task: its reply and the events
/// to publish.
type Job = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Reply, Vec<Event>)>> + Send>>;

/// A command that runs now on the core task, or a job started for it.
enum Started {
    Now(Command),
    Job(Job),
}

/// A finished job: which command, its outcome, and who waits for the reply.
struct JobDone {
    name: &'static str,
    result: Result<(Reply, Vec<Event>)>,
    reply: Option<oneshot::Sender<Result<Reply>>>,
}

/// Runs `f` on the profile in a blocking task (what `Core::with_profile` does, for jobs
/// that outlive the borrow of the core).
async fn on_profile<T: Send + 'static>(
    profile: Arc<Mutex<Profile>>,
    f: impl FnOnce(&mut Profile) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let mut p = profile.lock().map_err(|_| CoreError::Stopped)?;
        f(&mut p)
    })
    .await
    .map_err(|_| CoreError::Stopped)?
}

/// Handle to the running core. Dropping it stops the core and its runtime.
pub struct Phone {
    requests: mpsc::UnboundedSender<Request>,
    events: broadcast::Sender<Event>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    waker: Arc<Mutex<Option<Waker>>>,
    pictures: crate::call::Pictures,
    runtime: Option<tokio::runtime::Runtime>,
}

/// State owned by the core task.
struct Core {
    calls: CallLayer,
    chats: ChatLayer,
    statuses: HashMap<AccountId, AccountStatus>,
    pending: Vec<Event>,
    profile: Arc<Mutex<Profile>>,
    events: broadcast::Sender<Event>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    waker: Arc<Mutex<Option<Waker>>>,
    revision: u64,
    /// The settings page's microphone meter and test tone, while it runs.
    audio_check: Option<hush_media::audio::AudioCheck>,
    /// Pinged (from media threads too) whenever the ZID cache changes, to seal it.
    zid_changed: Arc<tokio::sync::Notify>,
    /// A seal of the ZID cache runs in the background (one at a time).
    zid_sealing: bool,
    /// The last seal's failure, said once (a failing disk must not flood the events).
    zid_seal_error: Option<String>,
}

/// How a background seal of the ZID cache ended: the generation it covers.
type Sealed = (u64, Result<()>);

const EVENT_BUFFER: usize = 1024;

impl Phone {
    /// Starts the core on its own runtime around an opened profile.
    pub fn start(profile: Profile) -> Result<Phone> {
        Phone::start_with_resolver(profile, crate::call::system_resolver())
    }

    /// Starts the core with its own way of looking up server names (tests give one
    /// that never answers, to show that nothing else waits for it).
    pub fn start_with_resolver(mut profile: Profile, resolver: Resolver) -> Result<Phone> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hush-core")
            .enable_all()
            .build()
            .map_err(|e| CoreError::io("tokio runtime", e))?;
        let (requests, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let (call_tx, call_rx) = mpsc::channel(crate::call::CALL_INPUTS);
        let (chat_tx, chat_rx) = mpsc::unbounded_channel();
        // libbzrtp's ZID cache lives in memory, sealed in the vault; with a master
        // password it opens at unlock.
        let zid_changed = Arc::new(tokio::sync::Notify::new());
        let zid = ZidState::open(&mut profile, &zid_changed);
        let pictures = crate::call::Pictures::default();
        let mut core = Core {
            calls: CallLayer::new(call_tx, zid, resolver, pictures.clone()),
            chats: ChatLayer::new(chat_tx),
            statuses: HashMap::new(),
            pending: Vec::new(),
            profile: Arc::new(Mutex::new(profile)),
            events: events.clone(),
            snapshot: watch::channel(Arc::new(Snapshot::default())).0,
            waker: waker.clone(),
            revision: 0,
            audio_check: None,
            zid_changed,
            zid_sealing: false,
            zid_seal_error: None,
        };
        core.publish();
        let snapshot = core.snapshot.subscribe();
        runtime.spawn(core.run(rx, call_rx, chat_rx));
        Ok(Phone {
            requests,
            events,
            snapshot,
            waker,
            pictures,
            runtime: Some(runtime),
        })
    }

    /// Registers the function that wakes the UI when the snapshot changes.
    pub fn set_waker(&self, waker: Waker) {
        if let Ok(mut w) = self.waker.lock() {
            *w = Some(waker);
        }
    }

    /// Sends a command without waiting; a failure arrives as [`Event::CommandFailed`].
    pub fn send(&self, command: Command) {
        let _ = self.requests.send(Request {
            op: Op::Command(command),
            reply: None,
        });
    }

    /// Runs a command and waits for its outcome.
    pub async fn execute(&self, command: Command) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request {
                op: Op::Command(command),
                reply: Some(tx),
            })
            .map_err(|_| CoreError::Stopped)?;
        rx.await.map_err(|_| CoreError::Stopped)?
    }

    /// [`Phone::execute`] for callers outside any async runtime (the CLI).
    pub fn execute_blocking(&self, command: Command) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request {
                op: Op::Command(command),
                reply: Some(tx),
            })
            .map_err(|_| CoreError::Stopped)?;
        rx.blocking_recv().map_err(|_| CoreError::Stopped)?
    }

    /// The current picture of the phone.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The newest pictures of a video call (none for a call without video): shared
    /// slots the media thread fills, so a window shows them without the core.
    pub fn pictures(&self, call: crate::snapshot::CallId) -> Option<crate::call::CallPictures> {
        self.pictures.lock().ok()?.get(&call).cloned()
    }

    /// A receiver that is notified on every snapshot change.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Subscribes to events from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Waits at most `limit` for the next event on `rx`, for callers outside the runtime
    /// (the CLI, tests). Missed events after a lag are skipped, not fatal.
    pub fn next_event(
        &self,
        rx: &mut broadcast::Receiver<Event>,
        limit: std::time::Duration,
    ) -> Option<Event> {
        let rt = self.runtime.as_ref()?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + limit;
        rt.block_on(async {
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Ok(ev)) => return Some(ev),
                    Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                        tracing::debug!(missed = n, "event receiver lagged");
                    }
                    _ => return None,
                }
            }
        })
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        // Hang up and un-register (bounded), then stop the runtime.
        let (tx, rx) = oneshot::channel();
        if tokio::runtime::Handle::try_current().is_err()
            && self
                .requests
                .send(Request {
                    op: Op::Shutdown,
                    reply: Some(tx),
                })
                .is_ok()
            && let Some(rt) = &self.runtime
        {
            let _ = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(5), rx).await
            });
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// Sleeps until the call machine's next timer, or forever without one.
async fn call_timer(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Core {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        mut call_rx: mpsc::Receiver<CallInput>,
        mut chat_rx: mpsc::UnboundedReceiver<ChatInput>,
    ) {
        let zid_changed = self.zid_changed.clone();
        let (sealed_tx, mut sealed_rx) = mpsc::unbounded_channel::<Sealed>();
        let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel::<JobDone>();
        loop {
            tokio::select! {
                req = rx.recv() => {
                    let Some(req) = req else { break };
                    let command = match req.op {
                        Op::Command(c) => c,
                        Op::Shutdown => {
                            // The ZID cache is sealed before anything waits on the
                            // network (BYE, un-REGISTER, XMPP close may take longer than
                            // the exit allows): media stopped first, so it holds what
                            // libbzrtp last wrote.
                            self.calls.stop_media();
                            self.save_zid_cache().await;
                            self.chats.shutdown().await;
                            self.calls.shutdown().await;
                            self.flush();
                            if let Some(reply) = req.reply {
                                let _ = reply.send(Ok(Reply::Done));
                            }
                            continue;
                        }
                    };
                    let name = command.name();
                    // Commands that talk to a server on their own (creating an account,
                    // changing its password) run as jobs: the core goes on meanwhile.
                    let result = match self.start(command).await {
                        Ok(Started::Job(job)) => {
                            let (tx, reply) = (jobs_tx.clone(), req.reply);
                            tokio::spawn(async move {
                                let result = job.await;
                                let _ = tx.send(JobDone { name, result, reply });
                            });
                            continue;
                        }
                        Ok(Started::Now(command)) => self.apply(command).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = &result {
                        tracing::debug!(command = name, error = %e, "command failed");
                        self.pending.push(Event::CommandFailed { command: name, error: e.to_string(), permanent: e.is_permanent() });
                    }
                    self.flush();
                    // Saved before the reply: a CLI that exits on it has its keys on disk.
                    let _ = self.save_otr().await;
                    if !self.pending.is_empty() {
                        self.flush();
                    }
                    if let Some(reply) = req.reply {
                        let _ = reply.send(result);
                    }
                }
                input = chat_rx.recv() => {
                    let Some(input) = input else { break };
                    let (mut events, mut log) = (Vec::new(), Vec::new());
                    self.chats.input(input, &mut events, &mut log).await;
                    self.pending.extend(events);
                    if !log.is_empty() {
                        self.log_lines(log).await;
                    }
                    // Events first: writing the vault must not delay "private" on screen.
                    self.flush();
                    let saved = self.save_otr().await;
                    self.chats.answer_key_requests(saved);
                    if !self.pending.is_empty() {
                        self.flush();
                    }
                }
                input = call_rx.recv() => {
                    let Some(input) = input else { break };
                    let mut events = Vec::new();
                    self.calls.input(input, &mut events);
                    self.pending.extend(events);
                    self.flush();
                }
                () = call_timer(self.calls.next_timeout()) => {
                    let mut events = Vec::new();
                    self.calls.timeout(&mut events);
                    self.pending.extend(events);
                    self.flush();
                }
                done = jobs_rx.recv() => {
                    let Some(JobDone { name, result, reply }) = done else { break };
                    let result = match result {
                        Ok((answer, events)) => {
                            self.pending.extend(events);
                            Ok(answer)
                        }
                        Err(e) => {
                            tracing::debug!(command = name, error = %e, "command failed");
                            self.pending.push(Event::CommandFailed {
                                command: name,
                                error: e.to_string(),
                                permanent: e.is_permanent(),
                            });
                            Err(e)
                        }
                    };
                    self.flush();
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
                () = zid_changed.notified() => self.start_zid_seal(&sealed_tx),
                sealed = sealed_rx.recv() => {
                    let Some((generation, result)) = sealed else { break };
                    self.zid_sealing = false;
                    match result {
                        Ok(()) => {
                            self.calls.zid_saved(generation);
                            self.zid_seal_error = None;
                            // What changed while that seal ran.
                            self.start_zid_seal(&sealed_tx);
                        }
                        // Tried again on the next change, not at once: a failure that
                        // lasts (a full disk) must not spin.
                        Err(e) => {
                            tracing::warn!(error = %e, "could not seal the ZRTP key cache");
                            let error = e.to_string();
                            if self.zid_seal_error.as_ref() != Some(&error) {
                                self.zid_seal_error = Some(error.clone());
                                self.pending.push(Event::CommandFailed {
                                    command: "save ZRTP keys",
                                    error,
                                    permanent: e.is_permanent(),
                                });
                            }
                        }
                    }
                    if !self.pending.is_empty() {
                        self.flush();
                    }
                }
            }
        }
    }

    /// Opens the ZID cache once the vault is open (it stays closed while locked).
    async fn open_zid_cache(&mut self) {
        if !self.calls.zid_locked() {
            return;
        }
        let changed = self.zid_changed.clone();
        if let Ok(zid) = self
            .with_profile(move |p| Ok(ZidState::open(p, &changed)))
            .await
        {
            self.calls.set_zid(zid);
        }
    }

    /// Seals the ZID cache in the vault in the background if it changed: the seal (a
    /// database write) takes milliseconds that calls and chat must not wait for. One
    /// runs at a time; its end comes back on `done`.
    fn start_zid_seal(&mut self, done: &mpsc::UnboundedSender<Sealed>) {
        if self.zid_sealing {
            return;
        }
        let Some((store, generation)) = self.calls.zid_unsaved() else {
            return;
        };
        self.zid_sealing = true;
        let (profile, done) = (self.profile.clone(), done.clone());
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                let mut p = profile.lock().map_err(|_| CoreError::Stopped)?;
                // The image is taken under the profile's lock: a later seal (at exit, or
                // for a verdict) can never be overwritten by this older one.
                let image = store.image()?;
                p.save_zrtp_cache(&image)
            })
            .await
            .map_err(|_| CoreError::Stopped)
            .and_then(|r| r);
            let _ = done.send((generation, result));
        });
    }

    /// Seals the ZID cache in the vault if it changed since the last time; a failure
    /// is reported as an event.
    async fn save_zid_cache(&mut self) {
        if let Err(e) = self.seal_zid_cache().await {
            tracing::warn!(error = %e, "could not seal the ZRTP key cache");
            self.pending.push(Event::CommandFailed {
                command: "save ZRTP keys",
                error: e.to_string(),
                permanent: e.is_permanent(),
            });
        }
    }

    /// Seals the ZID cache in the vault if it changed since the last time.
    async fn seal_zid_cache(&mut self) -> Result<()> {
        let Some((store, generation)) = self.calls.zid_unsaved() else {
            return Ok(());
        };
        self.with_profile(move |p| {
            let image = store.image()?;
            p.save_zrtp_cache(&image)
        })
        .await?;
        self.calls.zid_saved(generation);
        Ok(())
    }

    /// Waits (bounded) until a SAS verdict given to a media thread is in the ZID cache,
    /// then seals the cache: the command's "done" means the verdict is in the vault.
    async fn seal_verdict(&mut self, written: std::sync::mpsc::Receiver<()>) -> Result<()> {
        let _ = tokio::task::spawn_blocking(move || {
            written.recv_timeout(std::time::Duration::from_secs(2))
        })
        .await;
        self.seal_zid_cache().await
    }

    /// Loads OTR keys, fingerprints and policies from the vault, once it is open.
    async fn ensure_otr_loaded(&mut self) -> Result<()> {
        if self.chats.otr_loaded() {
            return Ok(());
        }
        let stored = self
            .with_profile(|p| {
                if p.is_locked() {
                    return Err(CoreError::Locked);
                }
                let keys = match p.secret(crate::chat::KEYS_SECRET)? {
                    Some(k) => Some(crate::secret::Secret::new(
                        String::from_utf8(k.to_vec()).map_err(|_| {
                            CoreError::TamperedSecret(crate::chat::KEYS_SECRET.into())
                        })?,
                    )),
                    None => None,
                };
                Ok(crate::chat::Stored {
                    keys,
                    fingerprints: p
                        .secret(crate::chat::FINGERPRINTS_SECRET)?
                        .map(|f| f.to_vec()),
                    policies: p.secret(crate::chat::POLICIES_SECRET)?.map(|f| f.to_vec()),
                })
            })
            .await?;
        self.chats.load_otr(stored).await
    }

    /// Seals changed OTR keys, fingerprints and policies in the vault.
    /// Writes what OTR changed to the vault; false if that failed (the user is told).
    async fn save_otr(&mut self) -> bool {
        let Some(save) = self.chats.otr_to_save().await else {
            return true;
        };
        let r = self
            .with_profile(move |p| {
                if let Some(k) = &save.keys {
                    p.put_secret(crate::chat::KEYS_SECRET, k.expose().as_bytes())?;
                }
                if let Some(f) = &save.fingerprints {
                    p.put_secret(crate::chat::FINGERPRINTS_SECRET, f)?;
                }
                if let Some(pol) = &save.policies {
                    p.put_secret(crate::chat::POLICIES_SECRET, pol)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not save OTR keys and fingerprints");
            self.pending.push(Event::CommandFailed {
                command: "save OTR keys",
                error: e.to_string(),
                permanent: e.is_permanent(),
            });
            return false;
        }
        true
    }

    /// Keeps chat lines in the history where the user turned it on for that contact.
    async fn log_lines(&self, lines: Vec<crate::chat::Loggable>) {
        let r = self
            .with_profile(move |p| {
                if p.is_locked() {
                    return Ok(());
                }
                for (account, peer, line) in lines {
                    let direction = if line.from_me {
                        Direction::Outgoing
                    } else {
                        Direction::Incoming
                    };
                    let entry = HistoryEntry {
                        account,
                        peer,
                        at_unix_ms: line.at_unix_ms,
                        record: HistoryRecord::Message {
                            direction,
                            body: line.body,
                        },
                    };
                    p.log(&entry)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not write history");
        }
    }

    /// Sends pending events, tracks account statuses, and republishes the snapshot.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for ev in &pending {
            if let Event::AccountStatus { account, status } = ev {
                self.statuses.insert(*account, status.clone());
            }
        }
        // The snapshot first: whoever reacts to an event sees it reflected already.
        self.publish();
        for ev in pending {
            let _ = self.events.send(ev);
        }
    }

    /// Starts a command: the ones whose network part would hold up the core become
    /// jobs (checked here, on the core task, so a bad input still fails at once).
    async fn start(&mut self, command: Command) -> Result<Started> {
        match command {
            Command::RegisterXmpp(new) => {
                let AccountSettings::Xmpp(settings) = &new.settings else {
                    return Err(CoreError::InvalidInput(
                        "in-band registration is for XMPP accounts".into(),
                    ));
                };
                let address =
                    crate::model::normalize_address(crate::model::Protocol::Xmpp, &new.address)?;
                let connector = crate::chat::connector(&address, settings)?;
                let password = new.password.clone().ok_or_else(|| {
                    CoreError::InvalidInput("a new account needs a password".into())
                })?;
                let j: hush_signaling::xmpp::BareJid = address
                    .parse()
                    .map_err(|e| CoreError::InvalidInput(format!("{address}: {e}")))?;
                let profile = self.profile.clone();
                Ok(Started::Job(Box::pin(async move {
                    hush_signaling::xmpp::register_account(&connector, &j, password.expose())
                        .await?;
                    let config = on_profile(profile, move |p| p.add_account(new)).await?;
                    Ok((
                        Reply::Account(config.clone()),
                        vec![Event::AccountAdded(config)],
                    ))
                })))
            }
            Command::ChangeXmppPassword { account, old, new } => {
                let (config, saved) = self.account_and_saved_password(account).await?;
                let AccountSettings::Xmpp(settings) = &config.settings else {
                    return Err(CoreError::InvalidInput("not an XMPP account".into()));
                };
                let old = old.or(saved).ok_or_else(|| {
                    CoreError::InvalidInput("the current password is needed".into())
                })?;
                let connector = crate::chat::connector(&config.address, settings)?;
                let j: hush_signaling::xmpp::BareJid = config
                    .address
                    .parse()
                    .map_err(|e| CoreError::InvalidInput(format!("{e}")))?;
                let (profile, remember) = (self.profile.clone(), config.remember_password);
                Ok(Started::Job(Box::pin(async move {
                    hush_signaling::xmpp::change_password(
                        &connector,
                        &j,
                        old.expose(),
                        new.expose(),
                    )
                    .await?;
                    if remember {
                        on_profile(profile, move |p| p.set_account_password(account, &new)).await?;
                    }
                    Ok((Reply::Done, Vec::new()))
                })))
            }
            // DSA key generation takes up to seconds: made off the core task, answered
            // once the key is in use and saved.
            Command::OtrGenerateKey { account } => {
                self.ensure_otr_loaded().await?;
                let made = self.chats.request_key(account)?;
                Ok(Started::Job(Box::pin(async move {
                    made.await.map_err(|_| CoreError::Stopped)??;
                    Ok((Reply::Done, Vec::new()))
                })))
            }
            other => Ok(Started::Now(other)),
        }
    }

    /// Runs profile work off the async threads: key derivation takes ~0.3 s.
    async fn with_profile<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Profile) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        on_profile(self.profile.clone(), f).await
    }

    async fn apply(&mut self, command: Command) -> Result<Reply> {
        let (reply, event) = match command {
            Command::Unlock { password } => {
                self.with_profile(move |p| p.unlock(&password)).await?;
                self.open_zid_cache().await;
                (Reply::Done, Event::Unlocked)
            }
            Command::AddAccount(new) => {
                let config = self.with_profile(move |p| p.add_account(new)).await?;
                (Reply::Account(config.clone()), Event::AccountAdded(config))
            }
            Command::RemoveAccount(id) => {
                // Offline first: a removed account keeps no line, registration or
                // lookup that would bring one up.
                if !self.chats.disconnect(id) {
                    self.calls.release(id);
                }
                self.with_profile(move |p| p.remove_account(id)).await?;
                (Reply::Done, Event::AccountRemoved(id))
            }
            Command::SetMasterPassword { new } => {
                self.with_profile(move |p| p.set_master_password(&new))
                    .await?;
                (
                    Reply::Done,
                    Event::MasterPasswordChanged { protected: true },
                )
            }
            Command::ChangeMasterPassword { old, new } => {
                self.with_profile(move |p| p.change_master_password(&old, &new))
                    .await?;
                (
                    Reply::Done,
                    Event::MasterPasswordChanged { protected: true },
                )
            }
            Command::RemoveMasterPassword { current } => {
                self.with_profile(move |p| p.remove_master_password(&current))
                    .await?;
                (
                    Reply::Done,
                    Event::MasterPasswordChanged { protected: false },
                )
            }
            Command::SetHistoryDefault(on) => {
                self.with_profile(move |p| p.set_history_default(on))
                    .await?;
                (Reply::Done, Event::HistorySettingsChanged)
            }
            Command::SetHistoryFor {
                account,
                peer,
                choice,
            } => {
                self.with_profile(move |p| p.set_history_for(account, &peer, choice))
                    .await?;
                (Reply::Done, Event::HistorySettingsChanged)
            }
            Command::EraseHistory => {
                self.with_profile(|p| p.erase_history()).await?;
                (Reply::Done, Event::HistoryErased)
            }
            other => return self.apply_call(other).await,
        };
        self.pending.push(event);
        Ok(reply)
    }

    async fn apply_call(&mut self, command: Command) -> Result<Reply> {
        let mut events = Vec::new();
        let reply = match command {
            Command::Connect { account, password } => {
                let (config, saved) = self.account_and_saved_password(account).await?;
                let password = password.or(saved).ok_or_else(|| {
                    CoreError::InvalidInput(format!("{} needs its password", config.address))
                })?;
                match config.protocol() {
                    crate::model::Protocol::Sip => {
                        if let Err(e) = self.calls.connect(&config, password, &mut events).await {
                            // The account shows why it is not online, not only the command.
                            self.pending.push(Event::AccountStatus {
                                account,
                                status: AccountStatus::Error(e.to_string()),
                            });
                            return Err(e);
                        }
                    }
                    crate::model::Protocol::Xmpp => {
                        self.ensure_otr_loaded().await?;
                        self.chats.connect(&config, password, &mut events).await?
                    }
                }
                Reply::Done
            }
            Command::Disconnect { account } => {
                if !self.chats.disconnect(account) {
                    self.calls.release(account);
                }
                events.push(Event::AccountStatus {
                    account,
                    status: AccountStatus::Offline,
                });
                Reply::Done
            }
            Command::Listen {
                addr,
                auto_answer,
                policy,
            } => self.calls.listen(addr, auto_answer, policy).await?,
            Command::CheckAudio { audio, tone } => {
                // A second check replaces the first: one device user at a time.
                self.audio_check = None;
                let tone_for = if tone {
                    std::time::Duration::from_secs(1)
                } else {
                    std::time::Duration::ZERO
                };
                let (source, sink) = (audio.source.clone(), audio.sink.clone());
                let check = tokio::task::spawn_blocking(move || {
                    hush_media::audio::AudioCheck::start(source, sink, tone_for)
                })
                .await
                .map_err(|e| CoreError::Call(e.to_string()))?
                .map_err(|e| CoreError::InvalidInput(e.to_string()))?;
                let meter = check.meter();
                self.audio_check = Some(check);
                Reply::AudioMeter(meter)
            }
            Command::ListVerifiedPeers => Reply::VerifiedPeers(self.calls.verified_peers().await?),
            Command::PeerKeys { peer } => Reply::PeerKeys(self.calls.peer_keys(&peer).await?),
            Command::ListAudioDevices => {
                let (inputs, outputs) =
                    tokio::task::spawn_blocking(hush_media::audio::device_names)
                        .await
                        .map_err(|e| CoreError::Call(e.to_string()))?;
                Reply::AudioDevices { inputs, outputs }
            }
            Command::ListCameras => Reply::Cameras(
                tokio::task::spawn_blocking(hush_media::camera::list_cameras)
                    .await
                    .map_err(|e| CoreError::Call(e.to_string()))?,
            ),
            Command::StopAudioCheck => {
                if let Some(check) = self.audio_check.take() {
                    let _ = tokio::task::spawn_blocking(move || drop(check)).await;
                }
                Reply::Done
            }
            Command::PlaceCall {
                account,
                target,
                audio,
                policy,
            } => {
                // The call needs the devices the check holds.
                self.audio_check = None;
                self.calls
                    .place(account, &target, audio, policy, &mut events)
                    .await?
            }
            Command::Answer { call, audio } => {
                self.audio_check = None;
                self.calls.answer(call, audio, &mut events)?;
                Reply::Done
            }
            Command::Reject { call, busy } => {
                self.calls.reject(call, busy, &mut events)?;
                Reply::Done
            }
            Command::Hangup { call } => {
                self.calls.hangup(call, &mut events)?;
                Reply::Done
            }
            Command::Hold { call, on } => {
                self.calls.hold(call, on, &mut events)?;
                Reply::Done
            }
            Command::SendDtmf { call, keys } => {
                self.calls.dtmf(call, &keys, &mut events)?;
                Reply::Done
            }
            Command::SendChat { account, to, body } => {
                let mut log = Vec::new();
                let reply = self
                    .chats
                    .send(account, &to, body, &mut events, &mut log)
                    .await?;
                self.log_lines(log).await;
                reply
            }
            Command::OtrSetPolicy {
                account,
                peer: None,
                policy,
            } => {
                self.ensure_otr_loaded().await?;
                let reply = self
                    .chats
                    .otr_command(
                        Command::OtrSetPolicy {
                            account,
                            peer: None,
                            policy,
                        },
                        &mut events,
                    )
                    .await?;
                if let Some(policy) = policy {
                    self.with_profile(move |p| {
                        let mut config = p
                            .accounts()?
                            .into_iter()
                            .find(|a| a.id == account)
                            .ok_or_else(|| CoreError::NoSuchAccount(account.to_string()))?;
                        if let AccountSettings::Xmpp(x) = &mut config.settings {
                            x.otr_policy = policy;
                        }
                        p.update_account_settings(account, &config.settings)
                    })
                    .await?;
                }
                reply
            }
            c @ (Command::OtrStart { .. }
            | Command::OtrEnd { .. }
            | Command::OtrTrust { .. }
            | Command::OtrForget { .. }
            | Command::OtrAuthenticate { .. }
            | Command::OtrRespond { .. }
            | Command::OtrAbortAuthentication { .. }
            | Command::OtrSetPolicy { .. }
            | Command::OtrImport { .. }
            | Command::OtrExport) => {
                self.ensure_otr_loaded().await?;
                self.chats.otr_command(c, &mut events).await?
            }
            Command::SetPresence { account, presence } => {
                let show = match presence {
                    Presence::Available => Show::Available,
                    Presence::Away => Show::Away,
                    Presence::DoNotDisturb => Show::DoNotDisturb,
                    Presence::Offline => Show::Offline,
                };
                self.chats.command(account, XmppCommand::SetShow(show))?
            }
            Command::AddContact {
                account,
                address,
                alias,
                group,
            } => self
                .chats
                .contact_command(account, &address, |jid| XmppCommand::AddContact {
                    jid,
                    name: alias,
                    group,
                })?,
            Command::UpdateContact {
                account,
                address,
                alias,
                group,
            } => {
                self.chats
                    .contact_command(account, &address, |jid| XmppCommand::UpdateContact {
                        jid,
                        name: alias,
                        group,
                    })?
            }
            Command::RemoveContact { account, address } => {
                self.chats
                    .contact_command(account, &address, XmppCommand::RemoveContact)?
            }
            Command::AnswerRequest {
                account,
                from,
                answer,
            } => self.chats.answer(account, &from, answer)?,
            Command::JoinRoom {
                account,
                room,
                nick,
                password,
            } => self.chats.join(account, &room, nick, password)?,
            Command::LeaveRoom { account, room } => self.chats.leave(account, &room)?,
            Command::SendRoom {
                account,
                room,
                body,
            } => {
                let r: hush_signaling::xmpp::BareJid = room
                    .parse()
                    .map_err(|e| CoreError::InvalidInput(format!("{room}: {e}")))?;
                self.chats
                    .command(account, XmppCommand::SendRoom { room: r, body })?
            }
            Command::SetPeerVerified {
                peer,
                key,
                verified,
            } => {
                self.calls.set_peer_verified(&peer, &key, verified).await?;
                // "Done" means it is in the vault, not only in memory.
                self.seal_zid_cache().await?;
                Reply::Done
            }
            Command::SetSasVerified { call, verified } => {
                let written = self.calls.set_verified(call, verified, &mut events)?;
                let sealed = self.seal_verdict(written).await;
                self.pending.append(&mut events);
                sealed?;
                Reply::Done
            }
            Command::Mute { call, on } => {
                self.calls.mute(call, on, &mut events)?;
                Reply::Done
            }
            Command::Camera { call, on } => {
                self.calls.camera(call, on, &mut events)?;
                Reply::Done
            }
            Command::Video { call, on, camera } => {
                self.calls.video(call, on, camera, &mut events)?;
                Reply::Done
            }
            Command::ShareScreen { call, on, screen } => {
                self.calls.share_screen(call, on, screen, &mut events)?;
                Reply::Done
            }
            Command::SasMismatch { call } => {
                self.calls.sas_mismatch(call, &mut events)?;
                Reply::Done
            }
            _ => return Err(CoreError::InvalidInput("unsupported command".into())),
        };
        self.pending.extend(events);
        Ok(reply)
    }

    /// An account's configuration and its saved password, if the user chose to keep it.
    async fn account_and_saved_password(
        &self,
        account: AccountId,
    ) -> Result<(crate::model::AccountConfig, Option<crate::Secret>)> {
        self.with_profile(move |p| {
            let config = p
                .accounts()?
                .into_iter()
                .find(|a| a.id == account)
                .ok_or_else(|| CoreError::NoSuchAccount(account.to_string()))?;
            let saved = if config.remember_password {
                p.account_password(account)?
            } else {
                None
            };
            Ok((config, saved))
        })
        .await
    }

    /// Rebuilds the snapshot from the profile and wakes the UI.
    fn publish(&mut self) {
        let Ok(profile) = self.profile.lock() else {
            return;
        };
        let accounts = match profile.accounts() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list accounts");
                Vec::new()
            }
        };
        self.revision += 1;
        let chat_views = self.chats.views();
        let snap = Snapshot {
            revision: self.revision,
            profile_dir: profile.dir().to_path_buf(),
            locked: profile.is_locked(),
            master_password_set: profile.vault_mode().ok() == Some(VaultMode::MasterPassword),
            history_default: profile.history_default().unwrap_or(false),
            accounts: accounts
                .into_iter()
                .map(|config| AccountView {
                    status: self
                        .statuses
                        .get(&config.id)
                        .cloned()
                        .unwrap_or(AccountStatus::Offline),
                    config,
                })
                .collect(),
            calls: self.calls.views(),
            ended_calls: self.calls.ended_views(),
            contacts: chat_views.contacts,
            chats: chat_views.chats,
            rooms: chat_views.rooms,
            requests: chat_views.requests,
            otr_keys: chat_views.otr_keys,
            known_fingerprints: chat_views.known_fingerprints,
        };
        drop(profile);
        self.snapshot.send_replace(Arc::new(snap));
        if let Ok(w) = self.waker.lock()
            && let Some(w) = w.as_ref()
        {
            w();
        }
    }
}
