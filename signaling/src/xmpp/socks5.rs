//! A SOCKS5 CONNECT (RFC 1928, no authentication) that hands the host name to the proxy,
//! so that with Tor the DNS lookup happens at the exit and not on this machine.

use crate::SignalingError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a TCP stream to `host:port` through the SOCKS5 proxy at `proxy` (`host:port`).
pub(crate) async fn connect(
    proxy: &str,
    host: &str,
    port: u16,
) -> Result<TcpStream, SignalingError> {
    let unreachable = |what: &str, e: std::io::Error| {
        SignalingError::Unreachable(format!("SOCKS5 proxy {proxy}: {what}: {e}"))
    };
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| unreachable("connect", e))?;
    s.write_all(&[5, 1, 0])
        .await
        .map_err(|e| unreachable("greeting", e))?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)
        .await
        .map_err(|e| unreachable("greeting reply", e))?;
    if reply != [5, 0] {
        return Err(SignalingError::Unreachable(format!(
            "SOCKS5 proxy {proxy} wants authentication we do not offer"
        )));
    }
    let name = host.as_bytes();
    let len = u8::try_from(name.len())
        .map_err(|_| SignalingError::InvalidInput("host name too long for SOCKS5".into()))?;
    let mut req = vec![5, 1, 0, 3, len];
    req.extend_from_slice(name);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req)
        .await
        .map_err(|e| unreachable("request", e))?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .map_err(|e| unreachable("reply", e))?;
    if head[0] != 5 {
        return Err(SignalingError::Protocol(format!(
            "SOCKS5 proxy {proxy} sent a malformed reply"
        )));
    }
    if head[1] != 0 {
        let why = match head[1] {
            2 => "not allowed by ruleset",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            _ => "general failure",
        };
        return Err(SignalingError::Unreachable(format!(
            "SOCKS5 proxy {proxy}: {why}"
        )));
    }
    // Skip the bound address: IPv4, domain or IPv6, then the port.
    let skip = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)
                .await
                .map_err(|e| unreachable("reply", e))?;
            usize::from(l[0])
        }
        _ => {
            return Err(SignalingError::Protocol(format!(
                "SOCKS5 proxy {proxy} sent an unknown address type"
            )));
        }
    };
    let mut rest = vec![0u8; skip + 2];
    s.read_exact(&mut rest)
        .await
        .map_err(|e| unreachable("reply", e))?;
    Ok(s)
}
