//! Pidgin's `otr.private_key` file is one S-expression, `(privkeys (account ...) ...)`.
//! libotr can only load a whole file (dropping the keys it had), so importing a file
//! for one account must not lose the others: we merge at the text level, account by
//! account, keeping each block byte for byte. Every copy of a key's text made here is
//! wiped when dropped, and sized up front so that growing it leaves no unwiped copy
//! behind.

use super::OtrError;
use zeroize::Zeroizing;

/// One `(account ...)` block: its name, protocol and exact text (the private key).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccountBlock {
    pub(crate) name: String,
    pub(crate) protocol: String,
    pub(crate) text: Zeroizing<String>,
}

impl std::fmt::Debug for AccountBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountBlock")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("text", &"(private key)")
            .finish()
    }
}

/// Most nesting we follow; real files nest five deep.
const MAX_DEPTH: usize = 32;

/// An atom may be one of a key's numbers: wiped when dropped.
enum Node {
    Atom(Zeroizing<String>),
    List {
        start: usize,
        end: usize,
        items: Vec<Node>,
    },
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

fn bad(what: &str) -> OtrError {
    OtrError::BadFile(format!("not an otr.private_key file ({what})"))
}

/// `bytes` as text (invalid UTF-8 replaced), in one wiped allocation of the largest size
/// it can need: each invalid byte becomes one 3-byte replacement character at most.
fn lossy(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().saturating_mul(3)));
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn node(&mut self, depth: usize) -> Result<Node, OtrError> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deep"));
        }
        self.skip_space();
        let start = self.pos;
        match self.s.get(self.pos) {
            None => Err(bad("ends early")),
            Some(b'(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.s.get(self.pos) {
                        None => return Err(bad("unclosed parenthesis")),
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(Node::List {
                                start,
                                end: self.pos,
                                items,
                            });
                        }
                        Some(_) => items.push(self.node(depth + 1)?),
                    }
                }
            }
            Some(b')') => Err(bad("unbalanced parenthesis")),
            Some(b'"') => {
                // Sized to the string, so that it never grows (see `lossy`).
                let len = string_end(self.s, self.pos + 1)? - self.pos;
                self.pos += 1;
                let mut out = Zeroizing::new(Vec::with_capacity(len));
                loop {
                    match self.s.get(self.pos) {
                        None => return Err(bad("unclosed string")),
                        Some(b'"') => {
                            self.pos += 1;
                            return Ok(Node::Atom(lossy(&out)));
                        }
                        Some(b'\\') => {
                            let c = *self.s.get(self.pos + 1).ok_or_else(|| bad("bad escape"))?;
                            out.push(c);
                            self.pos += 2;
                        }
                        Some(c) => {
                            out.push(*c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(open @ (b'#' | b'|')) => {
                let close = *open;
                let rest = &self.s[self.pos + 1..];
                let len = rest
                    .iter()
                    .position(|c| *c == close)
                    .ok_or_else(|| bad("unclosed hex or base64"))?;
                self.pos += len + 2;
                Ok(Node::Atom(lossy(&self.s[start..self.pos])))
            }
            Some(_) => {
                while self.pos < self.s.len()
                    && !self.s[self.pos].is_ascii_whitespace()
                    && !matches!(self.s[self.pos], b'(' | b')' | b'"')
                {
                    self.pos += 1;
                }
                Ok(Node::Atom(lossy(&self.s[start..self.pos])))
            }
        }
    }
}

fn atom(n: &Node) -> Option<&str> {
    match n {
        Node::Atom(a) => Some(a),
        Node::List { .. } => None,
    }
}

fn field<'a>(items: &'a [Node], key: &str) -> Option<&'a str> {
    items.iter().find_map(|n| match n {
        Node::List { items, .. } if items.first().and_then(atom) == Some(key) => {
            items.get(1).and_then(atom)
        }
        _ => None,
    })
}

/// The account blocks of a key file (empty input: none).
pub(crate) fn accounts(file: &[u8]) -> Result<Vec<AccountBlock>, OtrError> {
    if file.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut p = Parser { s: file, pos: 0 };
    let Node::List { items, .. } = p.node(0)? else {
        return Err(bad("no list"));
    };
    if items.first().and_then(atom) != Some("privkeys") {
        return Err(bad("no privkeys"));
    }
    let mut out = Vec::new();
    for n in &items[1..] {
        let Node::List { start, end, items } = n else {
            return Err(bad("stray atom"));
        };
        if items.first().and_then(atom) != Some("account") {
            return Err(bad("not an account"));
        }
        let name = field(items, "name").ok_or_else(|| bad("account without name"))?;
        let protocol = field(items, "protocol").ok_or_else(|| bad("account without protocol"))?;
        out.push(AccountBlock {
            name: name.to_owned(),
            protocol: protocol.to_owned(),
            text: lossy(&file[*start..*end]),
        });
    }
    Ok(out)
}

/// `current` with every account of `incoming` added, replacing same-named ones: every
/// private key, so wiped when dropped.
pub(crate) fn merge(current: &[u8], incoming: &[u8]) -> Result<Zeroizing<String>, OtrError> {
    const OPEN: &str = "(privkeys\n";
    const CLOSE: &str = ")\n";
    let new = accounts(incoming)?;
    let kept: Vec<AccountBlock> = accounts(current)?
        .into_iter()
        .filter(|old| {
            !new.iter()
                .any(|n| n.name == old.name && n.protocol == old.protocol)
        })
        .collect();
    let size = OPEN.len()
        + CLOSE.len()
        + kept
            .iter()
            .chain(&new)
            .map(|b| b.text.len() + 1)
            .sum::<usize>();
    let mut out = Zeroizing::new(String::with_capacity(size));
    out.push_str(OPEN);
    for b in kept.iter().chain(&new) {
        out.push_str(&b.text);
        out.push('\n');
    }
    out.push_str(CLOSE);
    Ok(out)
}

/// The key file as text: every quoted string that is not UTF-8 is rewritten in hex
/// (`#...#`), which libgcrypt reads back as the same bytes. libgcrypt writes a key's
/// numbers as quoted strings when they look printable to it, raw bytes above 0xA0
/// included; such a file is not text, and would be mangled where keys are kept as text
/// (the vault's secrets). Everything else is kept byte for byte.
pub(crate) fn to_text(file: &[u8]) -> Result<Zeroizing<String>, OtrError> {
    // A quoted string of n bytes becomes at most 2n + 2 (each byte in hex, two `#`):
    // twice the file is room enough never to grow.
    let mut out = Zeroizing::new(Vec::with_capacity(file.len().saturating_mul(2)));
    let mut pos = 0;
    while pos < file.len() {
        if file[pos] != b'"' {
            out.push(file[pos]);
            pos += 1;
            continue;
        }
        let end = string_end(file, pos + 1)?;
        let raw = &file[pos + 1..end];
        if std::str::from_utf8(raw).is_ok() {
            out.extend_from_slice(&file[pos..=end]);
        } else {
            out.push(b'#');
            for b in unescape(raw)?.iter() {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            out.push(b'#');
        }
        pos = end + 1;
    }
    let text = std::str::from_utf8(&out).map_err(|_| bad("not text outside a string"))?;
    let mut owned = Zeroizing::new(String::with_capacity(text.len()));
    owned.push_str(text);
    Ok(owned)
}

/// Where the quoted string whose text starts at `from` ends (its closing quote).
fn string_end(s: &[u8], from: usize) -> Result<usize, OtrError> {
    let mut pos = from;
    loop {
        match s.get(pos) {
            None => return Err(bad("unclosed string")),
            Some(b'"') => return Ok(pos),
            Some(b'\\') => pos += 2,
            Some(_) => pos += 1,
        }
    }
}

/// The bytes a quoted string's text stands for, with libgcrypt's escapes: `\b \t \v
/// \n \f \r \" \' \\`, `\xHH`, `\ooo`, and a backslash before a line break (which
/// stands for nothing).
fn unescape(raw: &[u8]) -> Result<Zeroizing<Vec<u8>>, OtrError> {
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len()));
    let mut pos = 0;
    let digits = |at: usize, n: usize, radix: u32| -> Result<u8, OtrError> {
        let text = raw
            .get(at..at + n)
            .and_then(|d| std::str::from_utf8(d).ok())
            .ok_or_else(|| bad("bad escape"))?;
        u8::from_str_radix(text, radix).map_err(|_| bad("bad escape"))
    };
    while pos < raw.len() {
        if raw[pos] != b'\\' {
            out.push(raw[pos]);
            pos += 1;
            continue;
        }
        let c = *raw.get(pos + 1).ok_or_else(|| bad("bad escape"))?;
        pos += 2;
        match c {
            b'b' => out.push(0x08),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'n' => out.push(b'\n'),
            b'f' => out.push(0x0c),
            b'r' => out.push(b'\r'),
            b'"' | b'\'' | b'\\' => out.push(c),
            b'x' => {
                out.push(digits(pos, 2, 16)?);
                pos += 2;
            }
            b'0'..=b'7' => {
                out.push(digits(pos - 1, 3, 8)?);
                pos += 2;
            }
            b'\r' | b'\n' => {
                let other = if c == b'\r' { b'\n' } else { b'\r' };
                if raw.get(pos) == Some(&other) {
                    pos += 1;
                }
            }
            _ => return Err(bad("bad escape")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "(privkeys\n (account\n  (name \"a@x/Home\")\n  (protocol prpl-jabber)\n  (private-key (dsa (p #00AB#) (q |qg==|)))))\n";
    const B: &str =
        "(privkeys (account (name \"b@x\") (protocol prpl-jabber) (private-key (dsa (p #01#)))))";

    #[test]
    fn reads_blocks_and_merges_without_losing_accounts() {
        let a = accounts(A.as_bytes()).expect("parse");
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].name.as_str(), a[0].protocol.as_str()),
            ("a@x/Home", "prpl-jabber")
        );
        assert!(a[0].text.starts_with("(account") && a[0].text.ends_with(")))"));
        let merged = merge(A.as_bytes(), B.as_bytes()).expect("merge");
        let names: Vec<String> = accounts(merged.as_bytes())
            .expect("reparse")
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, ["a@x/Home", "b@x"]);
        // Replacing the same account keeps one copy, the new one.
        let again = merge(merged.as_bytes(), B.as_bytes()).expect("merge");
        assert_eq!(accounts(again.as_bytes()).expect("parse").len(), 2);
    }

    #[test]
    fn strings_that_are_not_text_become_hex_and_the_rest_stays() {
        let file = b"(privkeys (account (name \"a@x\") (private-key (dsa (p #00AB#) \
                     (x \"\xfd\\f\\x00V\\\"\\101\xa1\")))))";
        let text = to_text(file).expect("text");
        assert_eq!(
            text.as_str(),
            "(privkeys (account (name \"a@x\") (private-key (dsa (p #00AB#) \
             (x #FD0C00562241A1#)))))"
        );
        // Already text: unchanged, byte for byte.
        assert_eq!(to_text(A.as_bytes()).expect("text").as_str(), A);
        let name = "(privkeys (account (name \"j\u{fc}rgen@x\")))";
        assert_eq!(to_text(name.as_bytes()).expect("text").as_str(), name);
        for bad in [
            &b"(x \"\xff\\q\")"[..],
            b"(x \"\xff\\x4\")",
            b"(x \xff)",
            b"(x \"\xff",
        ] {
            assert!(to_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_text_is_only_held_in_memory_that_is_wiped() {
        // The types are the point: each of these holds private-key text.
        let blocks = accounts(A.as_bytes()).expect("parse");
        let text: &Zeroizing<String> = &blocks[0].text;
        assert!(text.contains("private-key"));
        let merged: Zeroizing<String> = merge(A.as_bytes(), B.as_bytes()).expect("merge");
        assert_eq!(accounts(merged.as_bytes()).expect("reparse").len(), 2);
        let hex: Zeroizing<String> = to_text(b"(x \"\xfe\x01\")").expect("text");
        assert_eq!(hex.as_str(), "(x #FE01#)");
        // Nothing of the key shows in a debug print.
        let shown = format!("{:?}", blocks[0]);
        assert!(
            !shown.contains("dsa") && shown.contains("a@x/Home"),
            "{shown}"
        );
    }

    #[test]
    fn hostile_files_are_errors() {
        for bad in [
            "(privkeys (account (name",
            "((((((((((((((((((((((((((((((((((((((((((((",
            "(privkeys (account (protocol x)))",
            "(other)",
            ")",
            "(privkeys \"unterminated",
            "(privkeys (account (name #00",
        ] {
            assert!(accounts(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(accounts(b"   ").expect("empty").is_empty());
    }
}
