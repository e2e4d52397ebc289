//! SIP digest authentication (RFC 3261 §22, RFC 7616 / RFC 8760 algorithms): parse the
//! server's challenges, pick the strongest we support (SHA-256 over MD5), and compute
//! the Authorization answer. Done here rather than in rsipstack, whose parser refuses
//! the standard `algorithm=SHA-256` spelling — and a server that offers SHA-256 first
//! (as Linphone's Flexisip does) would otherwise lock us out.

use md5::Md5;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::sip::{Header, Response};
use sha2::{Digest, Sha256};

/// Longest challenge we look at; real ones are a few hundred bytes.
const MAX_CHALLENGE: usize = 4096;

/// Digest hash algorithms we can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Algorithm {
    /// RFC 2617 MD5 (the default when a challenge names none).
    Md5,
    /// RFC 7616 / RFC 8760 SHA-256.
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, input: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 => Md5::digest(input.as_bytes()).to_vec(),
            Algorithm::Sha256 => Sha256::digest(input.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One parsed `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) realm: String,
    pub(crate) nonce: String,
    pub(crate) opaque: Option<String>,
    pub(crate) algorithm: Algorithm,
    /// The server offered qop=auth (we never use auth-int).
    pub(crate) qop_auth: bool,
    /// The previous answer was right but its nonce expired.
    pub(crate) stale: bool,
}

/// Splits `k=v, k="v, with comma"` into pairs; `None` on malformed input.
fn params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            value = quoted[..end].to_owned();
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        if key.is_empty() || out.len() >= 32 {
            return None;
        }
        out.push((key, value));
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// Parses one WWW-Authenticate / Proxy-Authenticate value. Challenges we cannot
/// answer (another scheme, an unknown algorithm, no nonce) give `None`.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    if value.len() > MAX_CHALLENGE {
        return None;
    }
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut algorithm = Algorithm::Md5;
    let mut qop_auth = false;
    let mut stale = false;
    for (k, v) in params(rest)? {
        match k.as_str() {
            "realm" => realm = Some(v),
            "nonce" => nonce = Some(v),
            "opaque" => opaque = Some(v),
            "algorithm" => {
                algorithm = match v.to_ascii_uppercase().as_str() {
                    "MD5" => Algorithm::Md5,
                    "SHA-256" | "SHA256" => Algorithm::Sha256,
                    _ => return None,
                }
            }
            "qop" => qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
            "stale" => stale = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    Some(Challenge {
        realm: realm?,
        nonce: nonce?,
        opaque,
        algorithm,
        qop_auth,
        stale,
    })
}

/// The strongest challenge we can answer among several.
#[cfg(test)]
fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    values
        .into_iter()
        .take(16)
        .filter_map(parse_challenge)
        .max_by_key(|c| c.algorithm)
}

/// What to put in Authorization (or Proxy-Authorization) to answer `ch` for a request
/// `method uri`. `cnonce` must be fresh and random for each answer.
pub(crate) fn answer(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    let alg = ch.algorithm;
    let ha1 = alg.hash(&format!("{user}:{}:{password}", ch.realm));
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    let nc = "00000001";
    let response = if ch.qop_auth {
        alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce))
    } else {
        alg.hash(&format!("{ha1}:{}:{ha2}", ch.nonce))
    };
    let q = |s: &str| s.replace(['"', '\\'], "");
    let mut out = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
        q(user),
        q(&ch.realm),
        q(&ch.nonce),
        q(uri),
        alg.name()
    );
    if ch.qop_auth {
        out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{}\"", q(cnonce)));
    }
    if let Some(o) = &ch.opaque {
        out.push_str(&format!(", opaque=\"{}\"", q(o)));
    }
    out
}

/// A fresh client nonce.
pub(crate) fn cnonce() -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        // Without randomness the cnonce is only less unique; the answer stays correct.
        b = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos().to_le_bytes())
            .unwrap_or_default()[..12]
            .try_into()
            .unwrap_or_default();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `h` carries our answer to a challenge.
pub(crate) fn is_authorization(h: &Header) -> bool {
    matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_))
}

/// The digest challenges of a 401 or 407 (the first 16 headers), and whether they are
/// a proxy's (407); `None` for any other response.
fn challenges(resp: &Response) -> Option<(bool, Vec<Challenge>)> {
    let proxy = match resp.status_code.code() {
        401 => false,
        407 => true,
        _ => return None,
    };
    let parsed = resp
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::WwwAuthenticate(v) if !proxy => Some(v.value()),
            Header::ProxyAuthenticate(v) if proxy => Some(v.value()),
            _ => None,
        })
        .take(16)
        .filter_map(parse_challenge)
        .collect();
    Some((proxy, parsed))
}

/// The realm a 401/407 asks a password for (its first digest challenge), if any.
pub(crate) fn realm_asked(resp: &Response) -> Option<String> {
    challenges(resp).and_then(|(_, c)| c.into_iter().next().map(|c| c.realm))
}

/// Whether a 401/407 says only that the nonce of our last answer went stale.
pub(crate) fn says_stale(resp: &Response) -> bool {
    challenges(resp).is_some_and(|(_, c)| c.iter().any(|c| c.stale))
}

/// What to do about a 401/407.
#[derive(Debug)]
pub(crate) enum Challenged {
    /// Send the request again with this header, which answers `realm`.
    Answer {
        /// Authorization (401) or Proxy-Authorization (407).
        header: Header,
        /// The realm answered.
        realm: String,
    },
    /// Nothing we can answer: no digest challenge, or our answer was already refused
    /// (wrong credentials).
    Unanswerable,
    /// Every challenge asked for a realm that is not the account's: the password was not
    /// used. Carries the realm asked for.
    Withheld(String),
}

/// How to answer a 401 (Authorization) or 407 (Proxy-Authorization) `resp` for the
/// request `method uri`: the strongest challenge among those whose realm `permitted`
/// allows. Unanswerable if this is the answer to our `answered`-th try and the server
/// did not merely find its nonce stale (the credentials are wrong).
pub(crate) fn authorization(
    resp: &Response,
    cred: &Credential,
    method: &str,
    uri: &str,
    answered: u32,
    permitted: impl Fn(&str) -> bool,
) -> Challenged {
    let Some((proxy, challenges)) = challenges(resp) else {
        return Challenged::Unanswerable;
    };
    let Some(ch) = challenges
        .iter()
        .filter(|c| permitted(&c.realm))
        .max_by_key(|c| c.algorithm)
    else {
        return match challenges.into_iter().next() {
            Some(foreign) => Challenged::Withheld(foreign.realm),
            None => Challenged::Unanswerable,
        };
    };
    if answered >= 2 || (answered > 0 && !ch.stale) {
        return Challenged::Unanswerable;
    }
    let value = answer(ch, &cred.username, &cred.password, method, uri, &cnonce());
    let header = if proxy {
        Header::ProxyAuthorization(value.into())
    } else {
        Header::Authorization(value.into())
    };
    Challenged::Answer {
        header,
        realm: ch.realm.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    const RFC: &str = "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";

    #[test]
    fn rfc7616_example_sha256_and_md5() {
        let ch = parse_challenge(RFC).expect("parse");
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        assert!(ch.qop_auth);
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let a = answer(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
        );
        assert!(
            a.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{a}"
        );
        let md5 = Challenge {
            algorithm: Algorithm::Md5,
            ..ch
        };
        let a = answer(
            &md5,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
        );
        assert!(
            a.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""),
            "{a}"
        );
    }

    #[test]
    fn the_strongest_challenge_wins_and_junk_is_refused() {
        let md5 = "Digest realm=\"r\", nonce=\"n\", algorithm=MD5, qop=\"auth\"";
        let sha = "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256, qop=\"auth\"";
        assert_eq!(
            best([sha, md5]).map(|c| c.algorithm),
            Some(Algorithm::Sha256)
        );
        assert_eq!(
            best([md5, sha]).map(|c| c.algorithm),
            Some(Algorithm::Sha256)
        );
        let unknown = "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256";
        assert_eq!(
            best([unknown, md5]).map(|c| c.algorithm),
            Some(Algorithm::Md5)
        );
        for junk in [
            "",
            "Basic realm=\"r\"",
            "Digest",
            "Digest realm=\"r\"",
            "Digest realm=\"unterminated, nonce=\"n\"",
            "Digest =x",
            unknown,
            &"Digest realm=\"r\", nonce=\"n\", x=y".repeat(500),
        ] {
            assert_eq!(parse_challenge(junk), None, "{junk:.60}");
        }
        let no_alg = parse_challenge("Digest realm=\"r\",nonce=\"n\",stale=TRUE").expect("parse");
        assert_eq!(no_alg.algorithm, Algorithm::Md5);
        assert!(no_alg.stale && !no_alg.qop_auth);
    }

    fn response(status: &str, headers: &[&str]) -> Response {
        let mut raw = format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:alice@example.org>;tag=a\r\nTo: <sip:bob@example.org>;tag=b\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        );
        for h in headers {
            raw.push_str(h);
            raw.push_str("\r\n");
        }
        raw.push_str("Content-Length: 0\r\n\r\n");
        match rsipstack::sip::SipMessage::try_from(raw.as_bytes()) {
            Ok(rsipstack::sip::SipMessage::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    fn cred() -> Credential {
        Credential {
            username: "alice".into(),
            password: "secret".into(),
            realm: None,
            auth_username: None,
        }
    }

    #[test]
    fn a_foreign_realm_never_gets_an_answer() {
        let ours = |r: &str| r == "example.org";
        let foreign = response(
            "401 Unauthorized",
            &["WWW-Authenticate: Digest realm=\"evil.example\", nonce=\"n\", algorithm=SHA-256"],
        );
        match authorization(&foreign, &cred(), "INVITE", "sip:bob@example.org", 0, ours) {
            Challenged::Withheld(realm) => assert_eq!(realm, "evil.example"),
            other => panic!("answered a foreign realm: {other:?}"),
        }
        // A forking proxy may aggregate several challenges: only ours is answered, even
        // when the foreign one offers the stronger algorithm.
        let both = response(
            "407 Proxy Authentication Required",
            &[
                "Proxy-Authenticate: Digest realm=\"evil.example\", nonce=\"n1\", algorithm=SHA-256",
                "Proxy-Authenticate: Digest realm=\"example.org\", nonce=\"n2\", algorithm=MD5",
            ],
        );
        match authorization(&both, &cred(), "INVITE", "sip:bob@example.org", 0, ours) {
            Challenged::Answer { header, realm } => {
                assert_eq!(realm, "example.org");
                assert!(matches!(header, Header::ProxyAuthorization(_)));
                let v = header.to_string();
                assert!(
                    v.contains("realm=\"example.org\"") && !v.contains("evil"),
                    "{v}"
                );
            }
            other => panic!("expected an answer for our realm: {other:?}"),
        }
        // Our own realm is answered once, and again only when the nonce went stale.
        assert!(matches!(
            authorization(&both, &cred(), "INVITE", "sip:b@x", 1, ours),
            Challenged::Unanswerable
        ));
        let stale = response(
            "401 Unauthorized",
            &["WWW-Authenticate: Digest realm=\"example.org\", nonce=\"n3\", stale=true"],
        );
        assert!(matches!(
            authorization(&stale, &cred(), "REGISTER", "sip:x", 1, ours),
            Challenged::Answer {
                header: Header::Authorization(_),
                ..
            }
        ));
        let none = response("401 Unauthorized", &["WWW-Authenticate: Basic realm=\"x\""]);
        assert!(matches!(
            authorization(&none, &cred(), "INVITE", "sip:b@x", 0, |_| true),
            Challenged::Unanswerable
        ));
    }
}
