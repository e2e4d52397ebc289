//! The SIP user agent: an rsipstack endpoint bound to one local transport, a dialog
//! layer, and three tasks (the endpoint, incoming requests, dialog states) that turn
//! everything into [`SipEvent`]s.

use super::digest;
use super::event::{CallKey, EndReason, ReInvite, SipEvent};
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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Signalling transport towards a stack's server (registrar or outbound proxy). The
/// stack always listens on UDP too, for direct calls; TCP and TLS connections are
/// dialled to the server and kept, and the server reaches us back over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
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
    /// Local address to bind (port 0: any free port).
    pub bind: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// User part of our Contact.
    pub user: String,
    /// Trusted certificates (PEM: CAs, or a self-hosted server's own certificate) for
    /// TLS. Nothing is trusted implicitly.
    pub tls_roots: Option<Vec<u8>>,
}

struct Shared {
    calls: Mutex<HashMap<CallKey, InviteDialog>>,
    established: Mutex<HashSet<CallKey>>,
    local_hangups: Mutex<HashSet<CallKey>>,
    /// Outgoing INVITE dialogs that may be challenged: their 401/407 ending is not the
    /// end of the call, the INVITE task answers the challenge with a new dialog.
    challengeable: Mutex<HashSet<CallKey>>,
    /// A retried INVITE's dialog → the key the call was first known by.
    aliases: Mutex<HashMap<CallKey, CallKey>>,
    events: mpsc::UnboundedSender<SipEvent>,
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

    fn emit(&self, ev: SipEvent) {
        let _ = self.events.send(ev);
    }

    fn take_call(&self, key: &CallKey) -> Option<InviteDialog> {
        self.calls.lock().ok().and_then(|mut c| c.remove(key))
    }

    fn call(&self, key: &CallKey) -> Option<InviteDialog> {
        self.calls.lock().ok().and_then(|c| c.get(key).cloned())
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
    ) -> Result<(SipStack, mpsc::UnboundedReceiver<SipEvent>), SignalingError> {
        let cancel = CancellationToken::new();
        let transport = TransportLayer::new(cancel.clone());
        let conn = UdpConnection::create_connection(opts.bind, None, Some(cancel.child_token()))
            .await
            .map_err(|e| sip_err(&format!("cannot bind SIP on {}", opts.bind), e))?;
        transport.add_transport(conn.into());
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
            .with_option(option)
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| sip_err("endpoint", e))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let (state_sender, state_receiver) = dialogs.new_dialog_state_channel();
        let contact = dialogs
            .build_local_contact(Some(opts.user.clone()), None)
            .map_err(|e| sip_err("contact", e))?;
        let local_addr = endpoint
            .get_addrs()
            .first()
            .and_then(|a| a.addr.to_string().parse::<SocketAddr>().ok())
            .ok_or_else(|| SignalingError::Protocol("the SIP transport has no address".into()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stream_contact = Arc::new(Mutex::new(None));
        let shared = Arc::new(Shared {
            calls: Mutex::default(),
            established: Mutex::default(),
            local_hangups: Mutex::default(),
            challengeable: Mutex::default(),
            aliases: Mutex::default(),
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
            dialogs.clone(),
            state_sender.clone(),
            contact.clone(),
            stream_contact.clone(),
            cancel.clone(),
        ));
        tokio::spawn(state_loop(state_receiver, dialogs.clone(), shared.clone()));
        Ok((
            SipStack {
                endpoint,
                dialogs,
                state_sender,
                contact,
                local_addr,
                shared,
                cancel,
                transport: opts.transport,
                user: opts.user,
                server: Mutex::new(None),
                stream_contact,
            },
            rx,
        ))
    }

    /// The address the transport is bound to.
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
    /// transport, as Jitsi and Linphone do for an account.
    pub fn route_calls_via(&self, server: &Uri) {
        let addr = SipAddr {
            r#type: Some(self.transport.sip()),
            addr: server.host_with_port.clone(),
        };
        if let Ok(mut s) = self.server.lock() {
            *s = Some(addr);
        }
    }

    /// Places a call to `target` with our SDP `offer`. Returns at once; progress arrives
    /// as events: Ringing, then Answered (with the SDP answer) or Ended.
    pub async fn call(
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
        if credential.is_some()
            && let Ok(mut c) = self.shared.challengeable.lock()
        {
            c.insert(key.clone());
        }
        let shared = self.shared.clone();
        let dialogs = self.dialogs.clone();
        let states = self.state_sender.clone();
        let k = key.clone();
        tokio::spawn(async move {
            let mut outcome = outcome;
            let mut opt = opt;
            let mut answered = 0;
            let result = loop {
                let result = match outcome.await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "INVITE task failed");
                        return;
                    }
                };
                let Ok((_, Some(resp))) = &result else {
                    break result;
                };
                let code = resp.status_code.code();
                let Some(cred) = credential.as_ref().filter(|_| matches!(code, 401 | 407)) else {
                    break result;
                };
                let Some(retry) = challenge_answer(resp, cred, &opt, answered) else {
                    break result;
                };
                answered += 1;
                opt = retry;
                if opt.call_id.is_none() {
                    opt.call_id = Some(k.call_id().to_owned());
                }
                match dialogs.do_invite_async(opt.clone(), states.clone()) {
                    Ok((d, o)) => {
                        let raw = CallKey::of(&d.id());
                        if let Ok(mut a) = shared.aliases.lock() {
                            a.insert(raw.clone(), k.clone());
                        }
                        if let Ok(mut c) = shared.challengeable.lock() {
                            c.insert(raw);
                        }
                        let still_wanted = shared
                            .calls
                            .lock()
                            .map(|mut c| match c.get_mut(&k) {
                                Some(slot) => {
                                    *slot = d;
                                    true
                                }
                                None => false,
                            })
                            .unwrap_or(false);
                        if !still_wanted {
                            return; // hung up meanwhile
                        }
                        outcome = o;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "authenticated INVITE");
                        break result;
                    }
                }
            };
            match result {
                Ok((_, Some(resp)))
                    if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful =>
                {
                    if shared
                        .established
                        .lock()
                        .map(|mut e| e.insert(k.clone()))
                        .unwrap_or(false)
                    {
                        shared.emit(SipEvent::Answered {
                            call: k,
                            sdp: resp.body().to_vec(),
                        });
                    }
                }
                Ok((_, Some(resp))) => {
                    if shared.take_call(&k).is_some() {
                        shared.emit(SipEvent::Ended {
                            call: k,
                            reason: EndReason::from_status(&resp.status_code),
                        });
                    }
                }
                Ok((_, None)) | Err(_) => {
                    if shared.take_call(&k).is_some() {
                        shared.emit(SipEvent::Ended {
                            call: k,
                            reason: EndReason::Timeout,
                        });
                    }
                }
            }
        });
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

    /// Refuses an incoming call: 486 Busy Here or 603 Decline.
    pub fn reject(&self, call: &CallKey, busy: bool) -> Result<(), SignalingError> {
        let d = self
            .shared
            .call(call)
            .ok_or_else(|| SignalingError::InvalidInput(format!("no call {call}")))?;
        let code = if busy {
            StatusCode::BusyHere
        } else {
            StatusCode::Decline
        };
        if let Ok(mut l) = self.shared.local_hangups.lock() {
            l.insert(call.clone());
        }
        d.reject(Some(code), None).map_err(|e| sip_err("reject", e))
    }

    /// Ends a call: CANCEL if it is still ringing, BYE once established.
    pub async fn hangup(&self, call: &CallKey) -> Result<(), SignalingError> {
        let d = self
            .shared
            .call(call)
            .ok_or_else(|| SignalingError::InvalidInput(format!("no call {call}")))?;
        if let Ok(mut l) = self.shared.local_hangups.lock() {
            l.insert(call.clone());
        }
        let r = if d.role() == TransactionRole::Server {
            d.bye().await
        } else {
            d.hangup().await
        };
        r.map_err(|e| sip_err("hang up", e))
    }

    /// Sends a re-INVITE with a new offer (hold/resume); returns the peer's SDP answer.
    pub async fn reinvite(&self, call: &CallKey, sdp: String) -> Result<Vec<u8>, SignalingError> {
        let d = self
            .shared
            .call(call)
            .ok_or_else(|| SignalingError::InvalidInput(format!("no call {call}")))?;
        let headers = vec![Header::ContentType("application/sdp".into())];
        match d
            .reinvite(Some(headers), Some(sdp.into_bytes()))
            .await
            .map_err(|e| sip_err("re-INVITE", e))?
        {
            Some(resp) if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                Ok(resp.body().to_vec())
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

async fn incoming_loop(
    mut incoming: TransactionReceiver,
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
        let in_dialog = tx
            .original
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .is_some();
        if in_dialog {
            match dialogs.match_dialog(&tx) {
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
            }
            continue;
        }
        let our_contact = stream_contact
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| contact.clone());
        match tx.original.method {
            Method::Invite => match dialogs.get_or_create_server_invite(
                &tx,
                state_sender.clone(),
                None,
                Some(our_contact),
            ) {
                Ok(mut d) => {
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
            },
            Method::Options => {
                let _ = tx.reply(StatusCode::OK).await;
            }
            Method::Ack => {}
            _ => {
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

async fn state_loop(
    mut states: DialogStateReceiver,
    dialogs: Arc<DialogLayer>,
    shared: Arc<Shared>,
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
                if let Some(d) = shared.take_call(&key) {
                    let local = shared
                        .local_hangups
                        .lock()
                        .map(|mut l| l.remove(&key))
                        .unwrap_or(false);
                    let is_server = server.unwrap_or(d.role() == TransactionRole::Server);
                    let reason = match end_reason(&reason, is_server) {
                        EndReason::RemoteHangup | EndReason::LocalHangup if local => {
                            EndReason::LocalHangup
                        }
                        other => other,
                    };
                    if let Ok(mut e) = shared.established.lock() {
                        e.remove(&key);
                    }
                    shared.emit(SipEvent::Ended { call: key, reason });
                }
            }
            DialogState::Trying(_) | DialogState::WaitAck(_, _) => {}
        }
    }
}

/// The INVITE to send again with our answer to `resp`'s challenge, or `None` when we
/// cannot answer it or our answer was already refused (wrong password).
fn challenge_answer(
    resp: &rsipstack::sip::Response,
    cred: &Credential,
    sent: &InviteOption,
    answered: u32,
) -> Option<InviteOption> {
    let auth = digest::authorization(resp, cred, "INVITE", &sent.callee.to_string(), answered)?;
    let mut retry = sent.clone();
    let mut headers = retry.headers.take().unwrap_or_default();
    headers.retain(|h| !digest::is_authorization(h));
    headers.push(auth);
    retry.headers = Some(headers);
    Some(retry)
}
