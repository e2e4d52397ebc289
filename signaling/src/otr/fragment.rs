//! The fragment count a received body announces, read the way libotr 4.1.1 reads it, so
//! that a message split into more pieces than we accept is dropped before libotr starts
//! buffering it. libotr looks for the fragment tag anywhere in the body (`strstr`): first
//! `?OTR|sender|receiver,k,n,piece,` (OTR v3), else `?OTR,k,n,piece,` (v2), and reads
//! `n` with `%hu`.

/// Most fragments in one OTR message we accept.
pub(super) const MAX_FRAGMENTS: u32 = 64;

/// The body carries a fragment header whose total `n` is over [`MAX_FRAGMENTS`] (or is
/// a number libotr would wrap, negative or absurdly long). A header libotr itself would
/// not parse is left alone: libotr buffers nothing for it.
pub(super) fn too_many_fragments(body: &str) -> bool {
    announced(body).is_some_and(|n| n.is_none_or(|n| n > MAX_FRAGMENTS))
}

/// `None`: no fragment header libotr would accept. `Some(None)`: a header whose count
/// does not fit. `Some(Some(n))`: the announced count.
fn announced(body: &str) -> Option<Option<u32>> {
    let fields = if let Some(at) = body.find("?OTR|") {
        // `%*x|%*x,`: both instance tags, then the comma before k.
        let rest = &body[at + "?OTR|".len()..];
        let (tags, rest) = rest.split_once(',')?;
        let (sender, receiver) = tags.split_once('|')?;
        if !is_hex(sender) || !is_hex(receiver) {
            return None;
        }
        rest
    } else {
        let at = body.find("?OTR,")?;
        &body[at + "?OTR,".len()..]
    };
    let mut parts = fields.splitn(3, ',');
    let (k, n, tail) = (parts.next()?, parts.next()?, parts.next()?);
    // libotr needs k, n and a comma-terminated piece; without them it buffers nothing.
    number(k)?;
    if !tail.contains(',') {
        return None;
    }
    number(n)
}

/// What `%x` would read whole (leading blanks, an optional `0x`, hex digits).
fn is_hex(s: &str) -> bool {
    let s = s.trim_start();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What `%hu` would read: `None` if it reads nothing (libotr then ignores the header);
/// `Some(None)` for a value libotr would wrap into 0..65535 (a sign, or too many digits).
fn number(s: &str) -> Option<Option<u32>> {
    let s = s.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(None);
    }
    Some(
        digits
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= u32::from(u16::MAX)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_v3_and_v2_headers_wherever_they_are() {
        // As libotr 4.1.1 writes them: v3 puts a comma after the receiver tag.
        assert!(!too_many_fragments(
            "?OTR|5a73a599|27e31597,00001,00064,piece,"
        ));
        assert!(too_many_fragments(
            "?OTR|5a73a599|27e31597,00001,00065,piece,"
        ));
        assert!(too_many_fragments(
            "?OTR|5a73a599|27e31597,00001,65535,piece,"
        ));
        assert!(!too_many_fragments("?OTR,1,64,piece,"));
        assert!(too_many_fragments("?OTR,1,65,piece,"));
        // libotr finds the tag anywhere in the body, and so do we.
        assert!(too_many_fragments(
            "hello ?OTR|00000100|00000000,1,999,piece,"
        ));
        assert!(too_many_fragments("hello ?OTR,1,999,piece,"));
        // The v3 tag wins over an earlier v2 one, as in libotr.
        assert!(too_many_fragments("?OTR,1,2,a, ?OTR|100|0,1,999,b,"));
        assert!(!too_many_fragments("?OTR,1,999,a, ?OTR|100|0,1,2,b,"));
    }

    #[test]
    fn counts_libotr_would_wrap_are_too_many() {
        for n in ["-1", "65536", "99999", "4294967297", "99999999999999999999"] {
            assert!(too_many_fragments(&format!("?OTR,1,{n},x,")), "{n}");
        }
        assert!(!too_many_fragments("?OTR, 1, +3,x,"));
    }

    #[test]
    fn headers_libotr_would_not_parse_are_left_to_it() {
        for body in [
            "plain text",
            "?OTR:AAMDxyz.",
            "?OTR?v3?",
            "?OTR|zz|0,1,999,x,",
            "?OTR|1|2|1,99999,x,",
            "?OTR,1,999",
            "?OTR,1,999,no-trailing-comma",
            "?OTR,x,999,y,",
        ] {
            assert!(!too_many_fragments(body), "{body}");
        }
    }
}
