//! The client side of SCRAM (RFC 5802; SHA-256 per RFC 7677; SHA-512 as servers offer
//! it), sans-IO: it turns the server's messages into ours and proves the server knows the
//! password. Written here rather than taken from the `sasl` crate because that one has
//! neither SHA-512 nor the `tls-server-end-point` binding, and cannot say `y` (we bind
//! logins, the server offered no way we share).

use crate::SignalingError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;
use zeroize::Zeroizing;

/// Fewer iterations than RFC 7677 asks for would make what we send cheap to guess from.
pub(crate) const MIN_ITERATIONS: u32 = 4096;
/// More would let a server make every login burn much CPU (a tenth of a second or so of
/// SHA-512 here; servers use 4096 to 15000).
pub(crate) const MAX_ITERATIONS: u32 = 200_000;
/// Longest salt or nonce accepted from a server.
const MAX_FIELD: usize = 1024;

/// The hash a SCRAM mechanism is named for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha1,
    Sha256,
    Sha512,
}

impl ScramHash {
    /// Strongest first: the order we prefer them in.
    pub(crate) const ALL: [ScramHash; 3] = [ScramHash::Sha512, ScramHash::Sha256, ScramHash::Sha1];

    /// The SASL mechanism name, with or without channel binding.
    pub(crate) fn mechanism(self, plus: bool) -> &'static str {
        match (self, plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
            (ScramHash::Sha512, false) => "SCRAM-SHA-512",
            (ScramHash::Sha512, true) => "SCRAM-SHA-512-PLUS",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// What the GS2 header says about channel binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// `n`: the form the RFCs' test vectors use; we never send it.
    #[cfg(test)]
    Unsupported,
    /// `y`: we bind logins, but the server offered no binding we can make. A server that
    /// does bind takes this as a sign that its offer was stripped on the way.
    NoneShared,
    /// `p=<kind>`: the login is bound to this TLS connection by `data`.
    Bound {
        /// The binding type's IANA name (`tls-exporter`, `tls-server-end-point`).
        kind: &'static str,
        /// The binding data of this connection.
        data: Vec<u8>,
    },
}

impl Binding {
    fn gs2_header(&self) -> String {
        match self {
            #[cfg(test)]
            Binding::Unsupported => "n,,".to_owned(),
            Binding::NoneShared => "y,,".to_owned(),
            Binding::Bound { kind, .. } => format!("p={kind},,"),
        }
    }
}

enum State {
    Started,
    SentFinal { server_signature: Vec<u8> },
    Done,
}

/// One SCRAM exchange.
pub(crate) struct ScramClient {
    hash: ScramHash,
    binding: Binding,
    password: Zeroizing<String>,
    nonce: String,
    first_bare: String,
    state: State,
}

impl ScramClient {
    /// `nonce` must be printable ASCII without `,` (we use base64 of random bytes).
    pub(crate) fn new(
        hash: ScramHash,
        binding: Binding,
        username: &str,
        password: &str,
        nonce: String,
    ) -> Result<Self, SignalingError> {
        let username = stringprep::saslprep(username).map_err(|_| {
            SignalingError::InvalidInput("the user name has characters SCRAM cannot carry".into())
        })?;
        let password = stringprep::saslprep(password).map_err(|_| {
            SignalingError::InvalidInput(
                "the password has characters a SCRAM login cannot use".into(),
            )
        })?;
        let saslname = username.replace('=', "=3D").replace(',', "=2C");
        Ok(ScramClient {
            hash,
            binding,
            password: Zeroizing::new(password.into_owned()),
            first_bare: format!("n={saslname},r={nonce}"),
            nonce,
            state: State::Started,
        })
    }

    /// A fresh client nonce: 24 random bytes in base64.
    pub(crate) fn random_nonce() -> Result<String, SignalingError> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| SignalingError::Protocol(format!("no randomness for the login: {e}")))?;
        Ok(B64.encode(bytes))
    }

    /// The client-first message (the `<auth/>` payload).
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.binding.gs2_header(), self.first_bare).into_bytes()
    }

    /// Answers the server-first message with the client-final message.
    pub(crate) fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SignalingError> {
        if !matches!(self.state, State::Started) {
            return Err(unsafe_login("the server asked for a second SCRAM proof"));
        }
        let text = std::str::from_utf8(server_first)
            .map_err(|_| malformed("its first message is not text"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SignalingError::LoginRefused(printable(
                error.split(',').next().unwrap_or_default(),
            )));
        }
        let mut fields = text.split(',');
        let nonce = field(fields.next(), 'r')?;
        let salt = field(fields.next(), 's')?;
        let iterations = field(fields.next(), 'i')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(unsafe_login(
                "the server's SCRAM nonce does not extend ours (a replayed or forged challenge)",
            ));
        }
        if nonce.len() > MAX_FIELD || !nonce.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(malformed("its nonce is not printable or too long"));
        }
        if salt.len() > MAX_FIELD * 2 {
            return Err(malformed("its salt is too long"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("its salt is not base64"))?;
        if salt.is_empty() {
            return Err(malformed("its salt is empty"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| malformed("its iteration count is not a number"))?;
        if iterations < MIN_ITERATIONS {
            return Err(unsafe_login(format!(
                "the server asked for only {iterations} SCRAM iterations (fewer than \
                 {MIN_ITERATIONS}), which would make the password cheap to guess from the login"
            )));
        }
        if iterations > MAX_ITERATIONS {
            return Err(unsafe_login(format!(
                "the server asked for {iterations} SCRAM iterations (more than {MAX_ITERATIONS})"
            )));
        }
        let iterations = NonZeroU32::new(iterations).ok_or_else(|| malformed("zero iterations"))?;

        let mut salted = Zeroizing::new(vec![0u8; self.hash.len()]);
        pbkdf2::derive(
            self.hash.pbkdf2(),
            iterations,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = Zeroizing::new(hmac::sign(&salted, b"Client Key").as_ref().to_vec());
        let stored_key = digest::digest(self.hash.digest(), &client_key);
        let server_key = hmac::sign(&salted, b"Server Key");

        let mut channel = self.binding.gs2_header().into_bytes();
        if let Binding::Bound { data, .. } = &self.binding {
            channel.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(&channel));
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(self.hash.hmac(), stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Zeroizing<Vec<u8>> = Zeroizing::new(
            client_key
                .iter()
                .zip(signature.as_ref())
                .map(|(k, s)| k ^ s)
                .collect(),
        );
        let server_signature = hmac::sign(
            &hmac::Key::new(self.hash.hmac(), server_key.as_ref()),
            auth_message.as_bytes(),
        )
        .as_ref()
        .to_vec();
        self.state = State::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(&*proof)).into_bytes())
    }

    /// Checks the server-final message: only a server that knows the password (or what
    /// it stores of it) can have made it.
    pub(crate) fn finish(&mut self, server_final: &[u8]) -> Result<(), SignalingError> {
        let State::SentFinal { server_signature } = &self.state else {
            return Err(unsafe_login(
                "the server said the login succeeded before it had our proof",
            ));
        };
        let text = std::str::from_utf8(server_final)
            .map_err(|_| malformed("its last message is not text"))?;
        let first = text.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(SignalingError::LoginRefused(printable(error)));
        }

        let claimed = first
            .strip_prefix("v=")
            .ok_or_else(|| unsafe_login("the server sent no SCRAM signature"))?;
        let claimed = B64
            .decode(claimed)
            .map_err(|_| unsafe_login("the server's SCRAM signature is not base64"))?;
        if !same(&claimed, server_signature) {
            return Err(unsafe_login(
                "the server could not prove it knows the password (wrong SCRAM signature); \
                 this may not be your server",
            ));
        }
        self.state = State::Done;
        Ok(())
    }

    /// Answers a challenge: the server-first message, or the server-final one sent as a
    /// challenge (then our answer is empty).
    pub(crate) fn next(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SignalingError> {
        match self.state {
            State::Started => self.respond(challenge),
            State::SentFinal { .. } => self.finish(challenge).map(|()| Vec::new()),
            State::Done => Err(unsafe_login(
                "the server went on challenging after it had proven itself",
            )),
        }
    }

    /// Whether the server has proven itself.
    pub(crate) fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

fn field(part: Option<&str>, name: char) -> Result<&str, SignalingError> {
    let part = part.ok_or_else(|| malformed(format!("its '{name}' field is missing")))?;
    if name == 'r' && part.starts_with("m=") {
        return Err(malformed("it requires an extension we do not know"));
    }
    part.strip_prefix(name)
        .and_then(|p| p.strip_prefix('='))
        .ok_or_else(|| malformed(format!("its '{name}' field is missing")))
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn malformed(what: impl std::fmt::Display) -> SignalingError {
    SignalingError::Protocol(format!("the server's SCRAM challenge is malformed: {what}"))
}

fn unsafe_login(what: impl Into<String>) -> SignalingError {
    SignalingError::LoginUnsafe(what.into())
}

/// Server words cut to a line of printable text.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(hash: ScramHash, nonce: &str) -> ScramClient {
        ScramClient::new(hash, Binding::NoneShared, "user", "pencil", nonce.into()).unwrap()
    }

    /// The RFC vectors say `n,,`.
    fn rfc(hash: ScramHash, nonce: &str) -> ScramClient {
        ScramClient::new(hash, Binding::Unsupported, "user", "pencil", nonce.into()).unwrap()
    }

    /// RFC 5802 §5.
    #[test]
    fn rfc5802_sha1_vector() {
        let mut c = rfc(ScramHash::Sha1, "fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(c.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let out = c
            .respond(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(
            out,
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.finish(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=").unwrap();
        assert!(c.done());
    }

    /// RFC 7677 §3.
    #[test]
    fn rfc7677_sha256_vector() {
        let mut c = rfc(ScramHash::Sha256, "rOprNGfwEbeRWgbNEkqO");
        let out = c
            .respond(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            out,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn a_wrong_server_signature_is_refused_as_unsafe() {
        let mut c = client(ScramHash::Sha256, "abc");
        c.respond(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096").unwrap();
        let e = c
            .finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(matches!(e, SignalingError::LoginUnsafe(_)), "{e}");
        assert!(!c.done());
        assert!(e.is_permanent());
    }

    #[test]
    fn success_without_a_signature_or_before_the_proof_is_refused() {
        let mut c = client(ScramHash::Sha256, "abc");
        assert!(matches!(
            c.finish(b"v=AAAA"),
            Err(SignalingError::LoginUnsafe(_))
        ));
        c.respond(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096").unwrap();
        assert!(matches!(c.finish(b""), Err(SignalingError::LoginUnsafe(_))));
        assert!(matches!(
            c.finish(b"x=1"),
            Err(SignalingError::LoginUnsafe(_))
        ));
    }

    #[test]
    fn hostile_challenges_are_refused_without_work() {
        for bad in [
            &b"r=xyz,s=QSXCR+Q6sek8bf92,i=4096"[..], // does not extend our nonce
            b"r=abc,s=QSXCR+Q6sek8bf92,i=4096",      // does not add to it
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=1",      // too cheap to guess from
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4294967295", // too costly
            b"r=abcdef,s=,i=4096",
            b"r=abcdef,s=!!!,i=4096",
            b"r=abcdef,s=QSXCR+Q6sek8bf92",
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=-5",
            b"m=ext,r=abcdef,s=QSXCR+Q6sek8bf92,i=4096",
            b"\xff\xfe",
            b"",
        ] {
            let mut c = client(ScramHash::Sha512, "abc");
            assert!(
                c.respond(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut c = client(ScramHash::Sha512, "abc");
        let e = c.respond(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=12").unwrap_err();
        assert!(e.to_string().contains("only 12 SCRAM iterations"), "{e}");
    }

    #[test]
    fn the_gs2_header_names_the_binding_and_carries_its_data() {
        let c = ScramClient::new(
            ScramHash::Sha256,
            Binding::Bound {
                kind: "tls-exporter",
                data: vec![1, 2, 3],
            },
            "a,b=c",
            "pw",
            "nonce".into(),
        )
        .unwrap();
        assert_eq!(c.client_first(), b"p=tls-exporter,,n=a=2Cb=3Dc,r=nonce");
        let mut c = c;
        let out = c.respond(b"r=nonceXY,s=QSXCR+Q6sek8bf92,i=4096").unwrap();
        let c_field = String::from_utf8(out).unwrap();
        let expected = B64.encode(b"p=tls-exporter,,\x01\x02\x03");
        assert!(c_field.starts_with(&format!("c={expected},r=nonceXY,p=")));
        let y = client(ScramHash::Sha1, "n1");
        assert_eq!(y.client_first(), b"y,,n=user,r=n1");
    }
}
