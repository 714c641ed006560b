//! Validated names: [`Nick`] and [`RoomName`]. Both are 1–32 ASCII letters,
//! digits, `_` or `-`, compared case-insensitively. Keeping them ASCII makes
//! look-alike impersonation (Cyrillic `а` for Latin `a`) impossible and keeps
//! them safe to print anywhere without sanitising.

use std::fmt;
use std::sync::Arc;

/// Longest nickname or room name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// Nicknames no user may take, because they would impersonate the server.
const RESERVED_NICKS: &[&str] = &["server"];

/// Why a proposed name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("a name is at most {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("a name may contain only letters, digits, '_' and '-'")]
    BadChar,
    #[error("the name '{0}' is reserved")]
    Reserved(String),
}

fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NameError::BadChar);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $ty(Arc<str>);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The case-folded form used for uniqueness and look-ups.
            pub fn key(&self) -> String {
                self.0.to_ascii_lowercase()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A user's nickname, unique on the server ignoring case.
    Nick
);
name_type!(
    /// A room's name, as first spelled by whoever created it.
    RoomName
);

impl Nick {
    pub fn parse(name: &str) -> Result<Nick, NameError> {
        validate(name)?;
        if RESERVED_NICKS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(Nick(name.into()))
    }
}

impl RoomName {
    /// Accepts an optional leading `#`, as IRC users will type it.
    pub fn parse(name: &str) -> Result<RoomName, NameError> {
        let name = name.strip_prefix('#').unwrap_or(name);
        validate(name)?;
        Ok(RoomName(name.into()))
    }

    /// The room every new connection starts in.
    pub fn lobby() -> RoomName {
        RoomName("lobby".into())
    }
}

/// Case-folds a name someone typed, for look-ups, without validating it.
pub fn key_of(name: &str) -> String {
    name.strip_prefix('#').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_nicks() {
        for n in ["a", "Alice", "bob_2", "x-y", &"n".repeat(32)] {
            assert_eq!(Nick::parse(n).map(|n| n.to_string()), Ok(n.to_string()));
        }
    }

    #[test]
    fn rejects_invalid_nicks() {
        assert_eq!(Nick::parse(""), Err(NameError::Empty));
        assert_eq!(Nick::parse(&"n".repeat(33)), Err(NameError::TooLong));
        assert_eq!(Nick::parse("a b"), Err(NameError::BadChar));
        assert_eq!(Nick::parse("é"), Err(NameError::BadChar));
        assert_eq!(Nick::parse("a\x1b"), Err(NameError::BadChar));
        assert!(matches!(Nick::parse("SERVER"), Err(NameError::Reserved(_))));
    }

    #[test]
    fn rooms_accept_hash_prefix_and_fold_case() {
        let r = RoomName::parse("#Dev").unwrap();
        assert_eq!(r.as_str(), "Dev");
        assert_eq!(r.key(), "dev");
        assert_eq!(key_of("#DEV"), "dev");
    }
}
