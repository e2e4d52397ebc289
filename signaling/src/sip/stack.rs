//! The SIP user agent: an rsipstack endpoint bound to one local transport, a dialog
//! layer, and three tasks (the endpoint, incoming requests, dialog states) that turn
//! everything into [`SipEvent`]s. Everything a peer can make it hold is bounded: which
//! incoming calls are taken is `admission`'s rule (486 beyond it), an incoming call
//! rings at most [`StackOptions::ring_timeout`] (then 480, and it ends as missed), and
//! the event channel is bounded (see [`SipEvent`] for what happens when it is full).
//! Our own INVITEs are driven by `outgoing`.

use super::admission::{Admission, Live, PinVia, Refusal, source_of};
use super::event::{CallKey, EndReason, ReInvite, Rejection, SipEvent};
use super::outgoing::Invite;
use super::realm::AccountRealms;
use super::uri::parse_target;
use crate::SignalingError;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{
    Dialog, DialogState, DialogStateReceiver, DialogStateSender, TerminatedReason,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, StatusCode, Uri};
use rsipstack::transaction::endpoint::EndpointOption;
use rsipstack::transaction::key::TransactionRole;
use rsipstack::transaction::{Endpoint, TransactionReceiver};
use rsipstack::transport::tls::TlsConfig;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use rsipstack::{EndpointBuilder, transaction::endpoint::EndpointInnerRef};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

pub use super::admission::{
    KEPT_FOR_SERVERS, MAX_DIRECT_CALLS, MAX_INCOMING_CALLS, MAX_RINGING_PER_SOURCE, RING_TIMEOUT,
};

/// Events waiting for the call layer before the stack starts shedding (see [`SipEvent`]).
pub const SIP_EVENT_QUEUE: usize = 64;
/// Longest a hang-up is waited for: a BYE or CANCEL transaction gives up after 32 s
/// (64·T1); a call whose end is still not settled then is dropped here.
const HANGUP_WITHIN: Duration = Duration::from_secs(40);
/// Longest a server name is looked up to learn the addresses calls come from.
const LOOKUP_WITHIN: Duration = Duration::from_secs(5);

/// Signalling transport towards a stack's server (registrar or outbound proxy). A UDP
/// stack listens on its UDP port (also for direct calls). A TCP or TLS stack opens no
/// port at all: it dials the server, keeps that connection, and the server reaches us
/// back over it — so choosing TLS never leaves a cleartext UDP port open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    /// UDP (the SIP default).
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS; the server's certificate is checked against `StackOptions::tls_roots`.
    Tls,
}

impl Transport {
    fn sip(self) -> rsipstack::sip::Transport {
        match self {
            Transport::Udp => rsipstack::sip::Transport::Udp,
            Transport::Tcp => rsipstack::sip::Transport::Tcp,
            Transport::Tls => rsipstack::sip::Transport::Tls,
        }
    }
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Local address to bind for UDP (port 0: any free port). TCP and TLS stacks bind
    /// nothing; their address is the server connection's.
    pub bind: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// User part of our Contact.
    pub user: String,
    /// Trusted certificates (PEM: CAs, or a self-hosted server's own certificate) for
    /// TLS. Nothing is trusted implicitly.
    pub tls_roots: Option<Vec<u8>>,
    /// How long an incoming call rings before it is refused (480) and ends as missed;
    /// [`RING_TIMEOUT`] unless a test wants it short.
    pub ring_timeout: Duration,
}

/// What the stack's tasks share.
pub(super) struct Shared {
    calls: Mutex<HashMap<CallKey, InviteDialog>>,
    pub(super) established: Mutex<HashSet<CallKey>>,
    local_hangups: Mutex<HashSet<CallKey>>,
    /// Incoming calls refused because nobody answered in time.
    missed: Mutex<HashSet<CallKey>>,
    /// Outgoing INVITE dialogs: their 401/407 ending is not reported here; the INVITE
    /// task answers the challenge with a new dialog, or ends the call with the reason.
    pub(super) challengeable: Mutex<HashSet<CallKey>>,
    /// A retried INVITE's dialog → the key the call was first known by.
    pub(super) aliases: Mutex<HashMap<CallKey, CallKey>>,
    /// Incoming calls alive, where they came from, and the account's servers.
    admission: Mutex<Admission>,
    ring_timeout: Duration,
    /// Hang-ups whose CANCEL or BYE is still in flight, and a signal when one settles.
    hangups: AtomicUsize,
    hangup_settled: tokio::sync::Notify,
    events: mpsc::Sender<SipEvent>,
}

/// Counts a hang-up in flight for as long as it lives (also when its task is dropped).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn start(shared: &Arc<Shared>) -> InFlight {
        shared.hangups.fetch_add(1, Ordering::SeqCst);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.hangups.fetch_sub(1, Ordering::SeqCst);
        self.0.hangup_settled.notify_waiters();
    }
}

impl Shared {
    /// The call a dialog belongs to.
    fn key_of(&self, id: &DialogId) -> CallKey {
        let raw = CallKey::of(id);
        self.aliases
            .lock()
            .ok()
            .and_then(|a| a.get(&raw).cloned())
            .unwrap_or(raw)
    }

    /// Hands `ev` to the call layer. When the queue is full, an event that must arrive
    /// waits for room in a task of its own (so no SIP task stalls); the others are shed.
    pub(super) fn emit(&self, ev: SipEvent) {
        match self.events.try_send(ev) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(ev)) if ev.must_arrive() => {
                let events = self.events.clone();
                tokio::spawn(async move {
                    let _ = events.send(ev).await;
                });
            }
            Err(TrySendError::Full(ev)) => self.shed(ev),
        }
    }

    /// What a full queue does to an event that may be lost: a new call is refused (503
    /// Service Unavailable), a re-INVITE postponed (500 with Retry-After), progress
    /// reports are dropped.
    fn shed(&self, ev: SipEvent) {
        match ev {
            SipEvent::IncomingCall { call, .. } => {
                tracing::warn!(%call, "call layer behind: refusing a new call with 503");
                if let Some(d) = self.take_call(&call)
                    && let Err(e) = d.reject(Some(StatusCode::ServiceUnavailable), None)
                {
                    tracing::debug!(error = %e, "could not refuse the call");
                }
            }
            SipEvent::ReInvite { call, reinvite } => {
                tracing::warn!(%call, "call layer behind: postponing a re-INVITE");
                tokio::spawn(reinvite.postpone());
            }
            other => tracing::debug!(event = ?other, "call layer behind: SIP event dropped"),
        }
    }

    /// Whether a new incoming call from `source` may be taken (see `admission`).
    fn admit(&self, source: Option<IpAddr>, dialogs: &DialogLayer) -> Result<(), Refusal> {
        let state = |id: &str| match dialogs.get_dialog_with(&id.to_owned()) {
            Some(Dialog::Invite(d)) if d.state().can_cancel() => Live::Ringing,
            Some(Dialog::Invite(d)) if !d.state().is_terminated() => Live::Answered,
            _ => Live::Gone,
        };
        self.admission
            .lock()
            .map_err(|_| Refusal::Full)
            .and_then(|mut a| a.admit(source, state))
    }

    fn take_call(&self, key: &CallKey) -> Option<InviteDialog> {
        self.calls.lock().ok().and_then(|mut c| c.remove(key))
    }

    fn call(&self, key: &CallKey) -> Option<InviteDialog> {
        self.calls.lock().ok().and_then(|c| c.get(key).cloned())
    }

    /// Puts `dialog` in the call `key`'s place, if the call is still there; says whether
    /// it was.
    pub(super) fn replace_call(&self, key: &CallKey, dialog: InviteDialog) -> bool {
        self.calls
            .lock()
            .map(|mut c| match c.get_mut(key) {
                Some(slot) => {
                    *slot = dialog;
                    true
                }
                None => false,
            })
            .unwrap_or(false)
    }

    /// Whether the user hung up the call.
    pub(super) fn hung_up(&self, key: &CallKey) -> bool {
        self.local_hangups
            .lock()
            .map(|l| l.contains(key))
            .unwrap_or(true)
    }

    /// Whether the call is still wanted: not over, and not hung up by the user.
    pub(super) fn wanted(&self, key: &CallKey) -> bool {
        self.call(key).is_some() && !self.hung_up(key)
    }

    /// Ends our outgoing call `key` for `reason` unless it already ended: a call the
    /// user hung up ends as hung up, whatever the far end answered meanwhile.
    pub(super) fn end_outgoing(&self, key: &CallKey, reason: EndReason) {
        if self.take_call(key).is_some() {
            let reason = if self.hung_up(key) {
                EndReason::LocalHangup
            } else {
                reason
            };
            self.emit(SipEvent::Ended {
                call: key.clone(),
                reason,
            });
        }
        self.forget(key);
    }

    /// Drops what was kept about a call that is over, so nothing grows with the
    /// number of calls made.
    fn forget(&self, key: &CallKey) {
        if let Ok(mut a) = self.aliases.lock() {
            a.retain(|_, v| v != key);
        }
        if let Ok(mut e) = self.established.lock() {
            e.remove(key);
        }
        if let Ok(mut l) = self.local_hangups.lock() {
            l.remove(key);
        }
        if let Ok(mut m) = self.missed.lock() {
            m.remove(key);
        }
    }
}

/// One SIP user agent.
pub struct SipStack {
    endpoint: Endpoint,
    dialogs: Arc<DialogLayer>,
    state_sender: DialogStateSender,
    contact: Uri,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Realms the account's password may be sent to.
    realms: Arc<AccountRealms>,
    cancel: CancellationToken,
    transport: Transport,
    user: String,
    server: Mutex<Option<SipAddr>>,
    /// Over TCP/TLS: our address on the connection to the server, with `;transport=`,
    /// as registered; dialogs use it as their Contact so the peer's in-dialog requests
    /// come back over that connection.
    stream_contact: Arc<Mutex<Option<Uri>>>,
}

fn sip_err(what: &str, e: impl std::fmt::Display) -> SignalingError {
    SignalingError::Unreachable(format!("{what}: {e}"))
}

impl SipStack {
    /// Binds the transport and starts the stack's tasks on the current tokio runtime.
    pub async fn start(
        opts: StackOptions,
    ) -> Result<(SipStack, mpsc::Receiver<SipEvent>), SignalingError> {
        let cancel = CancellationToken::new();
        let transport = TransportLayer::new(cancel.clone());
        if opts.transport == Transport::Udp {
            let conn =
                UdpConnection::create_connection(opts.bind, None, Some(cancel.child_token()))
                    .await
                    .map_err(|e| sip_err(&format!("cannot bind SIP on {}", opts.bind), e))?;
            transport.add_transport(conn.into());
        }
        if opts.transport == Transport::Tls {
            let Some(roots) = opts.tls_roots.clone() else {
                return Err(SignalingError::InvalidInput(
                    "SIP over TLS needs trusted certificates".into(),
                ));
            };
            transport.set_tls_config(TlsConfig {
                ca_certs: Some(roots),
                ..TlsConfig::default()
            });
        }
        let option = EndpointOption {
            callid_suffix: Some("hushphone".into()),
            ..EndpointOption::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport)
            .with_user_agent(concat!("Hushphone/", env!("CARGO_PKG_VERSION")))
            .with_transport_inspector(Box::new(PinVia))
            .with_option(option)
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| sip_err("endpoint", e))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let (state_sender, state_receiver) = dialogs.new_dialog_state_channel();
        let (contact, local_addr) = if opts.transport == Transport::Udp {
            let contact = dialogs
                .build_local_contact(Some(opts.user.clone()), None)
                .map_err(|e| sip_err("contact", e))?;
            let local_addr = endpoint
                .get_addrs()
                .first()
                .and_then(|a| a.addr.to_string().parse::<SocketAddr>().ok())
                .ok_or_else(|| {
                    SignalingError::Protocol("the SIP transport has no address".into())
                })?;
            (contact, local_addr)
        } else {
            // No listener: until registration dials the server and learns the
            // connection's address (`stream_contact`), the bind address stands in.
            let contact = Uri {
                scheme: Some(rsipstack::sip::Scheme::Sip),
                auth: Some(rsipstack::sip::Auth {
                    user: opts.user.clone(),
                    password: None,
                }),
                host_with_port: opts.bind.into(),
                params: vec![rsipstack::sip::Param::Transport(opts.transport.sip())],
                headers: vec![],
            };
            (contact, opts.bind)
        };
        let (tx, rx) = mpsc::channel(SIP_EVENT_QUEUE);
        let stream_contact = Arc::new(Mutex::new(None));
        let shared = Arc::new(Shared {
            calls: Mutex::default(),
            established: Mutex::default(),
            local_hangups: Mutex::default(),
            missed: Mutex::default(),
            challengeable: Mutex::default(),
            aliases: Mutex::default(),
            admission: Mutex::default(),
            ring_timeout: opts.ring_timeout,
            hangups: AtomicUsize::new(0),
            hangup_settled: tokio::sync::Notify::new(),
            events: tx,
        });
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                tracing::warn!(error = %e, "SIP endpoint stopped");
            }
        });
        tokio::spawn(incoming_loop(
            incoming,
            shared.clone(),
            dialogs.clone(),
            state_sender.clone(),
            contact.clone(),
            stream_contact.clone(),
            cancel.clone(),
        ));
        tokio::spawn(state_loop(
            state_receiver,
            dialogs.clone(),
            shared.clone(),
            cancel.clone(),
        ));
        Ok((
            SipStack {
                endpoint,
                dialogs,
                state_sender,
                contact,
                local_addr,
                shared,
                realms: Arc::default(),
                cancel,
                transport: opts.transport,
                user: opts.user,
                server: Mutex::new(None),
                stream_contact,
            },
            rx,
        ))
    }

    /// The address the UDP transport is bound to (for TCP and TLS, which bind nothing,
    /// the address asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Our Contact URI.
    pub fn contact(&self) -> &Uri {
        &self.contact
    }

    pub(crate) fn endpoint_inner(&self) -> EndpointInnerRef {
        self.endpoint.inner.clone()
    }

    /// The signalling transport towards the server.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn realms(&self) -> Arc<AccountRealms> {
        self.realms.clone()
    }

    pub(crate) fn stream_contact_slot(&self) -> Arc<Mutex<Option<Uri>>> {
        self.stream_contact.clone()
    }

    fn dialog_contact(&self) -> Uri {
        self.stream_contact
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| self.contact.clone())
    }

    /// `uri` with our transport stated (`;transport=tcp|tls`), as a request to the
    /// server must carry it; UDP URIs are left alone.
    pub fn with_transport(&self, uri: &Uri) -> Uri {
        let mut uri = uri.clone();
        if self.transport != Transport::Udp {
            uri.params
                .retain(|p| !matches!(p, rsipstack::sip::Param::Transport(_)));
            uri.params
                .push(rsipstack::sip::Param::Transport(self.transport.sip()));
        }
        uri
    }

    /// Sends every call through `server` (the registrar or outbound proxy), over our
    /// transport, as Jitsi and Linphone do for an account. Calls coming from it are not
    /// held to the per-source limit (see `admission`).
    pub fn route_calls_via(&self, server: &Uri) {
        self.trust_server(server);
        let addr = SipAddr {
            r#type: Some(self.transport.sip()),
            addr: server.host_with_port.clone(),
        };
        if let Ok(mut s) = self.server.lock() {
            *s = Some(addr);
        }
    }

    /// Remembers the addresses of `server` (the registrar or outbound proxy) as the
    /// account's: every call through it comes from there, so the per-source limit does
    /// not apply to them. A name is looked up in a task of its own (bounded).
    pub(crate) fn trust_server(&self, server: &Uri) {
        let host = server.host_with_port.host.clone();
        if let rsipstack::sip::Host::IpAddr(ip) = host {
            if let Ok(mut a) = self.shared.admission.lock() {
                a.trust_server(ip);
            }
            return;
        }
        let port = server
            .host_with_port
            .port
            .as_ref()
            .map(|p| p.value())
            .unwrap_or(5060);
        let name = host.to_string();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let found = tokio::time::timeout(
                LOOKUP_WITHIN,
                tokio::net::lookup_host((name.as_str(), port)),
            )
            .await;
            match found {
                Ok(Ok(addrs)) => {
                    if let Ok(mut a) = shared.admission.lock() {
                        for addr in addrs {
                            a.trust_server(addr.ip());
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!(%name, error = %e, "server lookup"),
                Err(_) => tracing::debug!(%name, "server lookup timed out"),
            }
        });
    }

    /// Places a call to `target` with our SDP `offer`. Returns at once; progress arrives
    /// as events: Ringing, then Answered (with the SDP answer) or Ended. A challenge is
    /// answered with `credential` only for the account's realm (see `realm`) and only
    /// before the far end set up an early dialog (see `outgoing`); without a credential
    /// (a direct call) nothing is ever answered.
    pub async fn call(
        &self,
        target: &str,
        from: Uri,
        credential: Option<Credential>,
        offer: String,
    ) -> Result<CallKey, SignalingError> {
        self.invite(target, from, credential, offer)
    }

    /// [`SipStack::call`] without the future: it waits on nothing (the INVITE goes out
    /// from a task), so a driver that must never wait can call it in line.
    pub fn invite(
        &self,
        target: &str,
        from: Uri,
        credential: Option<Credential>,
        offer: String,
    ) -> Result<CallKey, SignalingError> {
        let callee = parse_target(target)?;
        let destination = self.server.lock().ok().and_then(|s| s.clone());
        let opt = InviteOption {
            callee,
            destination,
            caller: from,
            contact: self.dialog_contact(),
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            // Challenges are answered here (`digest`), not by rsipstack.
            credential: None,
            ..Default::default()
        };
        let (dialog, outcome) = self
            .dialogs
            .do_invite_async(opt.clone(), self.state_sender.clone())
            .map_err(|e| sip_err("INVITE", e))?;
        let key = CallKey::of(&dialog.id());
        if let Ok(mut calls) = self.shared.calls.lock() {
            calls.insert(key.clone(), dialog.clone());
        }
        // The INVITE task settles every 401/407: answered, or ended with the reason.
        if let Ok(mut c) = self.shared.challengeable.lock() {
            c.insert(key.clone());
        }
        let invite = Invite {
            shared: self.shared.clone(),
            realms: self.realms.clone(),
            dialogs: self.dialogs.clone(),
            states: self.state_sender.clone(),
            key: key.clone(),
            credential,
            option: opt,
            dialog,
        };
        tokio::spawn(invite.run(outcome));
        Ok(key)
    }
}

impl SipStack {
    /// Answers an incoming call with our SDP answer (200 OK).
    pub fn answer(&self, call: &CallKey, sdp: String) -> Result<(), SignalingError> {
        let d = self
            .shared
            .call(call)
            .ok_or_else(|| SignalingError::InvalidInput(format!("no call {call}")))?;
        let headers = vec![Header::ContentType("application/sdp".into())];
        d.accept(Some(headers), Some(sdp.into_bytes()))
            .map_err(|e| sip_err("answer", e))
    }

    /// Refuses an incoming call that has not been answered.
    pub fn reject(&self, call: &CallKey, why: Rejection) -> Result<(), SignalingError> {
        let d = self
            .shared
            .call(call)
            .ok_or_else(|| SignalingError::InvalidInput(format!("no call {call}")))?;
        if let Ok(mut l) = self.shared.local_hangups.lock() {
            l.insert(call.clone());
        }
        d.reject(Some(why.status()), None)
            .map_err(|e| sip_err("reject", e))
    }

    /// Ends a call: CANCEL while it rings, BYE once it is established. Returns at once:
    /// the CANCEL or BYE goes out from a task of its own, so a peer that never answers
    /// it holds up nothing (its transaction gives up after 32 s; the call is dropped
    /// then at the latest). The end arrives as [`SipEvent::Ended`], "hung up".
    pub fn hangup(&self, call: &CallKey) -> Result<(), SignalingError> {
        let d = self
            .shared
            .call(call)
            .ok_or_else(|| SignalingError::InvalidInput(format!("no call {call}")))?;
        if let Ok(mut l) = self.shared.local_hangups.lock() {
            l.insert(call.clone());
        }
        let (shared, dialogs, key) = (self.shared.clone(), self.dialogs.clone(), call.clone());
        let in_flight = InFlight::start(&self.shared);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let id = d.id();
            let ending = async {
                if d.role() == TransactionRole::Server {
                    d.bye().await
                } else {
                    d.hangup().await
                }
            };
            match tokio::time::timeout(HANGUP_WITHIN, ending).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%key, error = %e, "hang up"),
                Err(_) => {
                    tracing::info!(%key, "the far end never settled our hang-up: dropping the call");
                    dialogs.remove_dialog(&id);
                    if let Some(d) = shared.take_call(&key) {
                        if let Ok(mut a) = shared.admission.lock() {
                            a.ended(&d.id().to_string());
                        }
                        shared.emit(SipEvent::Ended {
                            call: key.clone(),
                            reason: EndReason::LocalHangup,
                        });
                    }
                    shared.forget(&key);
                }
            }
        });
        Ok(())
    }

    /// Waits until every hang-up's CANCEL or BYE has been answered (or given up on), at
    /// most `limit`: before the stack stops, so that the far ends are told.
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let settled = self.shared.hangup_settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.shared.hangups.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return;
            }
        }
    }

    /// Sends a re-INVITE with a new offer (hold/resume). The returned future owns what
    /// it needs, so the caller can wait for the peer's SDP answer in a task of its own:
    /// a peer that never answers (up to 32 s) then holds up nothing else.
    pub fn reinvite(
        &self,
        call: &CallKey,
        sdp: String,
    ) -> impl Future<Output = Result<Vec<u8>, SignalingError>> + Send + 'static {
        let dialog = self
            .shared
            .call(call)
            .ok_or_else(|| SignalingError::InvalidInput(format!("no call {call}")));
        async move {
            let headers = vec![Header::ContentType("application/sdp".into())];
            match dialog?
                .reinvite(Some(headers), Some(sdp.into_bytes()))
                .await
                .map_err(|e| sip_err("re-INVITE", e))?
            {
                Some(resp)
                    if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful =>
                {
                    Ok(resp.body().to_vec())
                }
                Some(resp) if resp.status_code == rsipstack::sip::StatusCode::RequestPending => {
                    Err(SignalingError::RequestPending)
                }
                Some(resp) => Err(SignalingError::Refused(format!(
                    "re-INVITE answered {}",
                    resp.status_code
                ))),
                None => Err(SignalingError::Protocol(
                    "the call is not established".into(),
                )),
            }
        }
    }

    /// Stops the stack; calls in progress are abandoned (hang them up first).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for SipStack {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What an incoming request is to us. Pure, so the fuzz target runs it on anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Carries a To tag: belongs to a dialog (or to none, then 481).
    InDialog,
    /// A new call.
    NewCall,
    /// A capabilities probe: 200.
    Options,
    /// An ACK outside any dialog: ignored.
    StrayAck,
    /// Anything else outside a dialog: 405.
    NotAllowed,
}

impl Incoming {
    pub(crate) fn of(req: &rsipstack::sip::Request) -> Incoming {
        let tagged = req
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .is_some();
        match (&req.method, tagged) {
            (_, true) => Incoming::InDialog,
            (Method::Invite, false) => Incoming::NewCall,
            (Method::Options, false) => Incoming::Options,
            (Method::Ack, false) => Incoming::StrayAck,
            _ => Incoming::NotAllowed,
        }
    }
}

async fn incoming_loop(
    mut incoming: TransactionReceiver,
    shared: Arc<Shared>,
    dialogs: Arc<DialogLayer>,
    state_sender: DialogStateSender,
    contact: Uri,
    stream_contact: Arc<Mutex<Option<Uri>>>,
    cancel: CancellationToken,
) {
    loop {
        let mut tx = tokio::select! {
            _ = cancel.cancelled() => return,
            t = incoming.recv() => match t { Some(t) => t, None => return },
        };
        let source = source_of(&tx);
        match Incoming::of(&tx.original) {
            Incoming::InDialog => match dialogs.match_dialog(&tx) {
                Some(mut d) => {
                    tokio::spawn(async move {
                        if let Err(e) = d.handle(&mut tx).await {
                            tracing::debug!(error = %e, "in-dialog request");
                        }
                    });
                }
                None => {
                    if tx.original.method != Method::Ack {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    }
                }
            },
            Incoming::NewCall => {
                let source = source.map(|s| s.ip());
                if let Err(why) = shared.admit(source, &dialogs) {
                    match why {
                        Refusal::Full => tracing::info!(
                            all = MAX_INCOMING_CALLS,
                            direct = MAX_DIRECT_CALLS,
                            "refusing a call: too many incoming calls at once"
                        ),
                        Refusal::SourceBusy => tracing::info!(
                            ?source,
                            limit = MAX_RINGING_PER_SOURCE,
                            "refusing a call: too many ringing calls from one address"
                        ),
                    }
                    let _ = tx.reply(StatusCode::BusyHere).await;
                    continue;
                }
                let our_contact = stream_contact
                    .lock()
                    .ok()
                    .and_then(|c| c.clone())
                    .unwrap_or_else(|| contact.clone());
                match dialogs.get_or_create_server_invite(
                    &tx,
                    state_sender.clone(),
                    None,
                    Some(our_contact),
                ) {
                    Ok(mut d) => {
                        if let Ok(mut a) = shared.admission.lock() {
                            a.taken(d.id().to_string(), source);
                        }
                        tokio::spawn(async move {
                            if let Err(e) = d.handle(&mut tx).await {
                                tracing::debug!(error = %e, "incoming INVITE");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "refusing malformed INVITE");
                        let _ = tx.reply(StatusCode::BadRequest).await;
                    }
                }
            }
            Incoming::Options => {
                let _ = tx.reply(StatusCode::OK).await;
            }
            Incoming::StrayAck => {}
            Incoming::NotAllowed => {
                let _ = tx.reply(StatusCode::MethodNotAllowed).await;
            }
        }
    }
}

fn end_reason(reason: &TerminatedReason, server: bool) -> EndReason {
    match reason {
        TerminatedReason::Timeout => EndReason::Timeout,
        TerminatedReason::UacCancel => EndReason::Cancelled,
        TerminatedReason::UacBye => {
            if server {
                EndReason::RemoteHangup
            } else {
                EndReason::LocalHangup
            }
        }
        TerminatedReason::UasBye => {
            if server {
                EndReason::LocalHangup
            } else {
                EndReason::RemoteHangup
            }
        }
        TerminatedReason::UacBusy | TerminatedReason::UasBusy => EndReason::Busy,
        TerminatedReason::UasDecline => EndReason::Declined,
        TerminatedReason::ProxyAuthRequired => {
            EndReason::Failed(407, "authentication required".into())
        }
        TerminatedReason::ProxyError(code)
        | TerminatedReason::UacOther(code)
        | TerminatedReason::UasOther(code) => EndReason::from_status(code),
    }
}

fn invite_dialog(dialogs: &DialogLayer, id: &DialogId) -> Option<InviteDialog> {
    match dialogs.get_dialog(id) {
        Some(Dialog::Invite(d)) => Some(d),
        _ => None,
    }
}

/// Refuses the incoming call `d` with 480 Temporarily Unavailable if nobody answered it
/// within the ring timeout; it then ends as missed. Ends early with the dialog (or the
/// stack), so no timer outlives its call.
fn ring_timer(d: InviteDialog, key: CallKey, shared: Arc<Shared>, stop: CancellationToken) {
    let gone = d.cancel_token().clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = gone.cancelled() => {}
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(shared.ring_timeout) => {
                if !d.state().can_cancel() {
                    return;
                }
                tracing::info!(%key, "nobody answered: refusing the call with 480");
                if let Ok(mut m) = shared.missed.lock() {
                    m.insert(key);
                }
                if let Err(e) = d.reject(Some(StatusCode::TemporarilyUnavailable), None) {
                    tracing::debug!(error = %e, "could not refuse the unanswered call");
                }
            }
        }
    });
}

async fn state_loop(
    mut states: DialogStateReceiver,
    dialogs: Arc<DialogLayer>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    while let Some(state) = states.recv().await {
        match state {
            DialogState::Calling(id) => {
                let Some(d) = invite_dialog(&dialogs, &id) else {
                    continue;
                };
                if d.role() != TransactionRole::Server {
                    continue;
                }
                let key = CallKey::of(&id);
                let req = d.initial_request();
                let (from, display_name) = match req.from_header() {
                    Ok(h) => match h.typed() {
                        Ok(t) => (t.uri.to_string(), t.display_name.clone()),
                        Err(_) => (h.value().to_owned(), None),
                    },
                    Err(_) => ("unknown".to_owned(), None),
                };
                if let Err(e) = d.ringing(None, None) {
                    tracing::debug!(error = %e, "could not send 180 Ringing");
                }
                ring_timer(d.clone(), key.clone(), shared.clone(), stop.clone());
                if let Ok(mut c) = shared.calls.lock() {
                    c.insert(key.clone(), d);
                }
                shared.emit(SipEvent::IncomingCall {
                    call: key,
                    from,
                    display_name,
                    offer: req.body().to_vec(),
                });
            }
            DialogState::Early(id, resp) => {
                let client = invite_dialog(&dialogs, &id)
                    .is_none_or(|d| d.role() == TransactionRole::Client);
                if client && (resp.status_code.code() == 180 || resp.status_code.code() == 183) {
                    shared.emit(SipEvent::Ringing {
                        call: shared.key_of(&id),
                    });
                }
            }
            DialogState::Confirmed(id, _) => {
                let key = CallKey::of(&id);
                let server = invite_dialog(&dialogs, &id)
                    .is_some_and(|d| d.role() == TransactionRole::Server);
                if server
                    && shared
                        .established
                        .lock()
                        .map(|mut e| e.insert(key.clone()))
                        .unwrap_or(false)
                {
                    shared.emit(SipEvent::Established { call: key });
                }
            }
            DialogState::Updated(id, req, handle) => {
                if req.method == Method::Invite {
                    let reinvite = ReInvite {
                        sdp: req.body().to_vec(),
                        handle,
                    };
                    shared.emit(SipEvent::ReInvite {
                        call: shared.key_of(&id),
                        reinvite,
                    });
                } else {
                    // UPDATE without an offer we act on: acknowledge.
                    let _ = handle.reply(StatusCode::OK).await;
                }
            }
            DialogState::Info(_, _, handle)
            | DialogState::Options(_, _, handle)
            | DialogState::Notify(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogState::Refer(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
            }
            DialogState::Terminated(id, reason) => {
                let challengeable = shared
                    .challengeable
                    .lock()
                    .map(|mut c| c.remove(&CallKey::of(&id)))
                    .unwrap_or(false);
                let challenged = matches!(
                    &reason,
                    TerminatedReason::ProxyAuthRequired
                        | TerminatedReason::UacOther(StatusCode::Unauthorized)
                        | TerminatedReason::UacOther(StatusCode::ProxyAuthenticationRequired)
                );
                if challengeable && challenged {
                    // The INVITE task answers the challenge, or ends the call itself.
                    dialogs.remove_dialog(&id);
                    continue;
                }
                let key = shared.key_of(&id);
                let server =
                    invite_dialog(&dialogs, &id).map(|d| d.role() == TransactionRole::Server);
                dialogs.remove_dialog(&id);
                if let Ok(mut a) = shared.admission.lock() {
                    a.ended(&id.to_string());
                }
                if let Some(d) = shared.take_call(&key) {
                    let local = shared
                        .local_hangups
                        .lock()
                        .map(|mut l| l.remove(&key))
                        .unwrap_or(false);
                    let missed = shared
                        .missed
                        .lock()
                        .map(|mut m| m.remove(&key))
                        .unwrap_or(false);
                    let is_server = server.unwrap_or(d.role() == TransactionRole::Server);
                    let reason = match end_reason(&reason, is_server) {
                        _ if missed => EndReason::Missed,
                        // Our call, hung up by the user: whatever the far end answered to
                        // the CANCEL (487, a challenge, a late busy), the user hung up.
                        _ if local && !is_server => EndReason::LocalHangup,
                        EndReason::RemoteHangup | EndReason::LocalHangup if local => {
                            EndReason::LocalHangup
                        }
                        other => other,
                    };
                    shared.emit(SipEvent::Ended {
                        call: key.clone(),
                        reason,
                    });
                }
                if shared.call(&key).is_none() {
                    shared.forget(&key);
                }
            }
            DialogState::Trying(_) | DialogState::WaitAck(_, _) => {}
        }
    }
}
