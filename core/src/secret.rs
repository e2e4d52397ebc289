//! A string that is wiped from memory when dropped and never printed.

use zeroize::Zeroizing;

/// A password or other secret typed by the user. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret; the original `String` is moved, not copied.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret's text. Keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True if the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}
