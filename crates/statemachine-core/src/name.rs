//! Resource kinds and validated resource names (ETCD-CONTRACT.md).

use std::fmt;

/// The longest resource name, in bytes.
pub const MAX_NAME_LEN: usize = 253;

/// The kinds of resource the StateManager knows, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// A podman container, reported by a NodeAgent.
    Container,
    /// A model (pod): a group of containers.
    Model,
    /// A package: a group of models deployed and controlled together.
    Package,
    /// A scenario: drives one package; its state is requested by components.
    Scenario,
}

impl ResourceKind {
    /// All kinds, lowest first (the order a cascade is written in).
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Container,
        ResourceKind::Model,
        ResourceKind::Package,
        ResourceKind::Scenario,
    ];

    /// The lowercase name used in store keys (`/model/{name}/state`).
    pub fn as_key_segment(self) -> &'static str {
        match self {
            ResourceKind::Container => "container",
            ResourceKind::Model => "model",
            ResourceKind::Package => "package",
            ResourceKind::Scenario => "scenario",
        }
    }

    /// Parses a key segment (`model`) back into a kind.
    pub fn from_key_segment(segment: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_key_segment() == segment)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Container => "Container",
            ResourceKind::Model => "Model",
            ResourceKind::Package => "Package",
            ResourceKind::Scenario => "Scenario",
        })
    }
}

/// Why a resource name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("resource name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("resource name is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "resource name '{name}' contains {found:?} at byte {at}; allowed are letters, digits, '.', '_' and '-'"
    )]
    BadChar {
        /// The refused name (escaped when shown).
        name: String,
        /// The first refused character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// The name is `.` or `..`, which would read as a path step.
    #[error("resource name '{0}' is reserved")]
    Reserved(String),
}

/// A validated resource name: 1–253 bytes of `[A-Za-z0-9._-]`, never `.` or `..`.
///
/// A name is spliced into store keys, so a `/` or a control character would
/// let a caller write outside its key; validation happens once, here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceName(String);

impl ResourceName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        validate(&name)?;
        Ok(Self(name))
    }

    /// Validates a container name as podman reports it: one leading `/` is dropped.
    pub fn container(name: &str) -> Result<Self, NameError> {
        Self::new(name.strip_prefix('/').unwrap_or(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The bytes a name may hold: `[A-Za-z0-9._-]`.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
        b += 1;
    }
    table
};

/// Checks a name without allocating.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(at) = name.bytes().position(|b| !NAME_BYTES[b as usize]) {
        // `at` is a char boundary: every byte before it is ASCII.
        let found = name[at..].chars().next().unwrap_or('?');
        return Err(NameError::BadChar {
            name: name.escape_debug().to_string(),
            found,
            at,
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ResourceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ResourceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ResourceName {
    type Error = NameError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["a", "media-player", "v1.2_x", "A", &"x".repeat(253)] {
            assert!(ResourceName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        assert_eq!(ResourceName::new(""), Err(NameError::Empty));
        assert_eq!(
            ResourceName::new("x".repeat(254)),
            Err(NameError::TooLong { len: 254 })
        );
        for bad in ["a/b", "a b", "a\nb", "é", "a\0", "../x"] {
            let err = ResourceName::new(bad).unwrap_err();
            assert!(matches!(err, NameError::BadChar { .. }), "{bad}: {err}");
        }
        assert!(matches!(
            ResourceName::new(".."),
            Err(NameError::Reserved(_))
        ));
        let message = ResourceName::new("a/b").unwrap_err().to_string();
        assert!(message.contains("'/'"), "{message}");
    }

    #[test]
    fn container_names_drop_podmans_leading_slash_once() {
        assert_eq!(ResourceName::container("/web").unwrap().as_str(), "web");
        assert!(ResourceName::container("//web").is_err());
    }

    #[test]
    fn kinds_roundtrip_through_key_segments() {
        for kind in ResourceKind::ALL {
            assert_eq!(
                ResourceKind::from_key_segment(kind.as_key_segment()),
                Some(kind)
            );
        }
        assert_eq!(ResourceKind::from_key_segment("volume"), None);
    }
}
