//! A string that must never be shown: CHAP passwords, keyrings.

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

/// A secret value. `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value.
///
/// It is deliberately neither `Serialize` nor `Clone`: a secret goes to the file the program
/// that needs it reads (written 0600: never a command line) and nowhere else, and it has one
/// owner. Its memory is overwritten with zeros when it is dropped.
///
/// ```compile_fail
/// let password = hostbrick::Secret::new("hunter2");
/// let copy = password.clone(); // a secret has one owner
/// ```
#[derive(PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The value itself. Call only where the value is handed to the program that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A second copy, zeroized on drop as well, for the one place that must own one while
    /// the original lives on (a command holding a secret argument).
    pub(crate) fn duplicate(&self) -> Secret {
        Secret::new(self.expose())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.duplicate(), s);
    }
}
