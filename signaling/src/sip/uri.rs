//! Turning what a user types ("bob@example.org", "sip:bob@127.0.0.1:5072") into a SIP URI.

use crate::SignalingError;
use rsipstack::sip::Uri;

/// Longest URI we accept from a user or a peer.
const MAX_URI: usize = 1024;

/// Parses a call target; a missing `sip:` scheme is added.
pub fn parse_target(input: &str) -> Result<Uri, SignalingError> {
    let s = input.trim();
    if s.is_empty() || s.len() > MAX_URI || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SignalingError::InvalidInput(format!(
            "{input:?} is not a SIP address"
        )));
    }
    let with_scheme = if s.starts_with("sip:") || s.starts_with("sips:") {
        s.to_owned()
    } else {
        format!("sip:{s}")
    };
    let uri = Uri::try_from(with_scheme.as_str()).map_err(|e| {
        SignalingError::InvalidInput(format!("{input:?} is not a SIP address: {e}"))
    })?;
    if uri.auth.is_none() {
        return Err(SignalingError::InvalidInput(format!(
            "{input:?} has no user part (user@host)"
        )));
    }
    Ok(uri)
}

/// A URI for `user@host[:port]` (no validation beyond rsip's).
pub fn to_uri(user: &str, host_port: &str) -> Result<Uri, SignalingError> {
    parse_target(&format!("{user}@{host_port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let u = parse_target("bob@127.0.0.1:5072").expect("parse");
        assert_eq!(u.to_string(), "sip:bob@127.0.0.1:5072");
        assert!(parse_target("sip:alice@example.org").is_ok());
        for bad in ["", "bob", "sip:", "bo b@x", &"a".repeat(2000)] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }
}
