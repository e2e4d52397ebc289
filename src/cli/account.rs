//! `hushphone account`: add, list, remove accounts.

use super::error::CliError;
use super::output::Out;
use super::secrets::Secrets;
use super::session::{find_account, unlock_if_needed};
use clap::{Args, Subcommand, ValueEnum};
use hush_core::model::{AccountSettings, EncryptionPolicy, SipSettings, Transport, XmppSettings};
use hush_core::{Command, NewAccount, Phone, Reply};

#[derive(Subcommand, Debug)]
pub(crate) enum AccountCmd {
    /// Add an account. The password is asked for (or read with --stdin).
    Add(AddArgs),
    /// List accounts.
    List,
    /// Remove an account by id or address.
    Remove {
        /// Numeric id or address.
        account: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum ProtocolArg {
    Sip,
    Xmpp,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum TransportArg {
    Udp,
    Tcp,
    Tls,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum EncryptionArg {
    Mandatory,
    BestEffort,
}

#[derive(Args, Debug)]
pub(crate) struct AddArgs {
    /// sip or xmpp.
    protocol: ProtocolArg,
    /// user@domain (SIP accepts a sip: prefix).
    address: String,
    /// Friendly name.
    #[arg(long)]
    name: Option<String>,
    /// Do not save the password; it is asked for when connecting.
    #[arg(long)]
    no_remember: bool,
    /// SIP: registrar URI (default: the address's domain).
    #[arg(long)]
    registrar: Option<String>,
    /// SIP: outbound proxy URI.
    #[arg(long)]
    proxy: Option<String>,
    /// SIP: signalling transport.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// SIP over TLS: also trust the certificates in this PEM file (a private CA, or a
    /// self-hosted server's certificate). The system's roots are always trusted.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<String>,
    /// SIP: what a call does when ZRTP cannot be set up.
    #[arg(long, value_enum, default_value = "mandatory")]
    encryption: EncryptionArg,
    /// XMPP: host:port to connect to instead of the domain's SRV record.
    #[arg(long)]
    server: Option<String>,
    /// XMPP: trust a self-hosted server's certificate with this SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256")]
    pin_cert: Option<String>,
    /// XMPP: SOCKS5 proxy host:port (Tor: 127.0.0.1:9050).
    #[arg(long, value_name = "HOST:PORT")]
    socks5: Option<String>,
}

pub(crate) fn account(
    phone: &Phone,
    cmd: AccountCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    match cmd {
        AccountCmd::Add(args) => {
            let settings = match args.protocol {
                ProtocolArg::Sip => {
                    if args.server.is_some() || args.pin_cert.is_some() || args.socks5.is_some() {
                        return Err(CliError::Usage(
                            "--server, --pin-cert and --socks5 are XMPP options".into(),
                        ));
                    }
                    AccountSettings::Sip(SipSettings {
                        registrar: args.registrar,
                        outbound_proxy: args.proxy,
                        tls_ca_file: args.tls_ca.map(|p| {
                            std::fs::canonicalize(&p)
                                .map(|c| c.display().to_string())
                                .unwrap_or(p)
                        }),
                        transport: match args.transport {
                            TransportArg::Udp => Transport::Udp,
                            TransportArg::Tcp => Transport::Tcp,
                            TransportArg::Tls => Transport::Tls,
                        },
                        encryption: match args.encryption {
                            EncryptionArg::Mandatory => EncryptionPolicy::Mandatory,
                            EncryptionArg::BestEffort => EncryptionPolicy::BestEffort,
                        },
                        realm: None,
                    })
                }
                ProtocolArg::Xmpp => {
                    if args.registrar.is_some() || args.proxy.is_some() || args.tls_ca.is_some() {
                        return Err(CliError::Usage(
                            "--registrar, --proxy and --tls-ca are SIP options".into(),
                        ));
                    }
                    AccountSettings::Xmpp(XmppSettings {
                        server: args.server,
                        pinned_cert_sha256: args
                            .pin_cert
                            .map(|p| normalize_fingerprint(&p))
                            .transpose()?,
                        socks5_proxy: args.socks5,
                        otr_policy: Default::default(),
                    })
                }
            };
            let remember = !args.no_remember;
            let password = if remember {
                unlock_if_needed(phone, secrets)?;
                Some(secrets.ask("Account password")?)
            } else {
                None
            };
            let new = NewAccount {
                address: args.address,
                display_name: args.name,
                password,
                remember_password: remember,
                settings,
            };
            if let Reply::Account(a) = phone.execute_blocking(Command::AddAccount(new))? {
                out.account(&a);
            }
        }
        AccountCmd::List => {
            for a in &phone.snapshot().accounts {
                out.account(&a.config);
            }
        }
        AccountCmd::Remove { account } => {
            let snap = phone.snapshot();
            let id = find_account(
                &snap
                    .accounts
                    .iter()
                    .map(|a| a.config.clone())
                    .collect::<Vec<_>>(),
                &account,
            )?;
            phone.execute_blocking(Command::RemoveAccount(id))?;
            out.record("removed", &[("id", id.0.into())]);
        }
    }
    Ok(())
}

/// Accepts `AB:CD:...`, spaced or plain hex; stores lower-case hex without separators.
fn normalize_fingerprint(input: &str) -> Result<String, CliError> {
    let hex: String = input
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(
            "--pin-cert wants a SHA-256 fingerprint: 64 hex digits".into(),
        ));
    }
    Ok(hex)
}
