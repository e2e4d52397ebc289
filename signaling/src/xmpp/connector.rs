//! The TLS connection to an XMPP server: always upgraded with STARTTLS (never continues in
//! cleartext), verifies with [`Trust`], and can go through a SOCKS5 proxy.

use super::end_point::end_point_binding;
use super::login::TlsFacts;
use super::socks5;
use super::stream::next_element;
use super::tls::{Trust, client_config};
use futures::SinkExt;
use std::borrow::Cow;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::error::{Error, ProtocolError};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, StreamHeader, Timeouts, XmppStreamElement,
    initiate_stream,
};

/// Where to open the TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// SRV lookup of the JID's domain (`_xmpp-client._tcp`), falling back to port 5222.
    Srv,
    /// A fixed host and port.
    Direct {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

/// Connects to an XMPP server the Hushphone way.
#[derive(Debug, Clone)]
pub struct HushConnector {
    /// Where to connect.
    pub route: Route,
    /// Which certificates to accept.
    pub trust: Trust,
    /// Optional SOCKS5 proxy `host:port`; the host name is resolved by the proxy.
    pub socks5: Option<String>,
    /// Fingerprint of the certificate the server presented last (shared by clones).
    pub(crate) presented: super::tls::Presented,
}

impl HushConnector {
    /// A connector with everything chosen.
    pub fn new(route: Route, trust: Trust, socks5: Option<String>) -> Self {
        HushConnector {
            route,
            trust,
            socks5,
            presented: Default::default(),
        }
    }

    /// The SHA-256 fingerprint of the certificate the server presented on the last
    /// attempt, `AB:CD:...`, to show when it was not trusted.
    pub fn presented_fingerprint(&self) -> Option<String> {
        self.presented
            .lock()
            .ok()
            .and_then(|p| p.map(|fp| super::tls::format_fingerprint(&fp)))
    }

    /// Direct connection to `host:port` with the given trust.
    pub fn direct(host: impl Into<String>, port: u16, trust: Trust) -> Self {
        HushConnector::new(
            Route::Direct {
                host: host.into(),
                port,
            },
            trust,
            None,
        )
    }

    async fn tcp(&self, domain: &str) -> Result<TcpStream, Error> {
        match (&self.route, &self.socks5) {
            (Route::Direct { host, port }, Some(proxy)) => {
                Ok(socks5::connect(proxy, host, *port).await.map_err(to_io)?)
            }
            // Through a proxy we do not do SRV lookups locally: that would leak the domain.
            (Route::Srv, Some(proxy)) => {
                Ok(socks5::connect(proxy, domain, 5222).await.map_err(to_io)?)
            }
            (Route::Direct { host, port }, None) => {
                Ok(TcpStream::connect((host.as_str(), *port)).await?)
            }
            (Route::Srv, None) => DnsConfig::srv_default_client(domain).resolve().await,
        }
    }
}

fn to_io(e: crate::SignalingError) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        e.to_string(),
    ))
}

impl HushConnector {
    /// Opens the TLS stream and says what a login can be bound to.
    pub(crate) async fn connect_tls(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<BufStream<TlsStream<TcpStream>>>,
            TlsFacts,
        ),
        Error,
    > {
        let domain = jid.domain().as_str();
        let header = || StreamHeader {
            to: Some(Cow::Owned(domain.to_owned())),
            from: None,
            id: None,
        };
        let tcp = self.tcp(domain).await?;
        // Chat is small interactive writes: without this, Nagle holds each stanza back
        // until the previous one is acknowledged (~40 ms per exchange on delayed ACKs).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not disable Nagle");
        }
        let tcp = BufStream::new(tcp);
        let plain = initiate_stream(tcp, ns, header(), timeouts).await?;
        let (features, mut plain) = plain.recv_features::<FallibleStreamElement>().await?;
        if !features.can_starttls() {
            return Err(Error::Protocol(ProtocolError::NoTls));
        }
        plain
            .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                starttls::Request,
            )))
            .await?;
        while !matches!(
            next_element(&mut plain).await?,
            XmppStreamElement::Starttls(starttls::Nonza::Proceed(_))
        ) {}
        let tcp = plain.into_inner().into_inner();
        let config = client_config(&self.trust, self.presented.clone()).map_err(to_io)?;
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let (_, conn) = tls.get_ref();
        let facts = TlsFacts {
            // RFC 9266: defined for TLS 1.3 only.
            exporter: match conn.protocol_version() {
                Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3) => conn
                    .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                    .ok(),
                _ => None,
            },
            end_point: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| end_point_binding(c.as_ref())),
        };
        let secure = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((secure, facts))
    }
}
