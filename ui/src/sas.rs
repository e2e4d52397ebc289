//! Comparing the SAS so that the user really compares: each side reads out one half
//! (the caller the first, the callee the second, as Linphone does) and picks the half
//! they heard among four choices. A habit click cannot mark a call verified.

use hush_core::snapshot::CallDirection;

/// z-base-32, the alphabet of 4-character (B32) SAS strings.
const B32: &[u8] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
/// Decoy words for two-word (B256) SAS strings, when the SAS itself offers too few.
const WORDS: &[&str] = &[
    "adroitness",
    "bookshelf",
    "crusade",
    "dinosaur",
    "eyeglass",
    "goldfish",
    "hamburger",
    "insurgent",
    "miser",
    "newsletter",
    "onlooker",
    "pandemic",
    "quadrant",
    "sardine",
    "tactics",
    "uproot",
    "vacancy",
    "wallet",
    "yesteryear",
    "aftermath",
];

/// The half we read aloud and the half we should hear.
pub(crate) fn halves(sas: &str, direction: CallDirection) -> (String, String) {
    let (first, second) = match sas.split_once([':', ' ']) {
        Some((a, b)) => (a.to_owned(), b.to_owned()),
        None => {
            let chars: Vec<char> = sas.chars().collect();
            let mid = chars.len() / 2;
            (chars[..mid].iter().collect(), chars[mid..].iter().collect())
        }
    };
    match direction {
        CallDirection::Outgoing => (first, second),
        CallDirection::Incoming => (second, first),
    }
}

fn mix(seed: u64, i: u64) -> u64 {
    let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Four choices, exactly one of them `expected`, stable for a given `seed` (so they do
/// not reshuffle every frame).
pub(crate) fn choices(expected: &str, seed: u64) -> Vec<String> {
    let mut out = vec![expected.to_owned()];
    let word = expected.chars().count() > 3;
    let mut i = 0;
    while out.len() < 4 && i < 1_000 {
        i += 1;
        let decoy = if word {
            WORDS[(mix(seed, i) % WORDS.len() as u64) as usize].to_owned()
        } else {
            (0..expected.chars().count().max(1))
                .map(|k| B32[(mix(seed, i * 8 + k as u64) % B32.len() as u64) as usize] as char)
                .collect()
        };
        if !out.contains(&decoy) {
            out.push(decoy);
        }
    }
    let slot = (mix(seed, 7_777) % out.len() as u64) as usize;
    out.swap(0, slot);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_reads_the_other_half() {
        assert_eq!(
            halves("ab7k", CallDirection::Outgoing),
            ("ab".into(), "7k".into())
        );
        assert_eq!(
            halves("ab7k", CallDirection::Incoming),
            ("7k".into(), "ab".into())
        );
        assert_eq!(
            halves("crusade:pandemic", CallDirection::Incoming),
            ("pandemic".into(), "crusade".into())
        );
    }

    #[test]
    fn four_distinct_choices_with_the_answer_once_and_stable() {
        for seed in 0..200 {
            let c = choices("7k", seed);
            assert_eq!(c.len(), 4);
            assert_eq!(c.iter().filter(|x| *x == "7k").count(), 1);
            let mut d = c.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 4, "{c:?}");
            assert_eq!(c, choices("7k", seed));
        }
        // The answer is not always in the same place.
        let places: std::collections::HashSet<usize> = (0..50)
            .map(|s| choices("7k", s).iter().position(|x| x == "7k").unwrap_or(9))
            .collect();
        assert!(places.len() > 2);
        assert_eq!(choices("crusade", 3).len(), 4);
    }
}
