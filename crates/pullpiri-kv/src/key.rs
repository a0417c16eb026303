//! Which keys upstream's RocksDbService refuses to store.
//!
//! Its Put and BatchPut answer INVALID_ARGUMENT for a key that is empty,
//! longer than 1024 bytes, or contains one of `< > ? { }`; BatchPut then
//! refuses the whole batch. The bridge checks every key before it sends it,
//! so one bad key never holds up the others.

use std::fmt;

/// The longest key the service stores, in bytes (upstream compares
/// `key.len()`, the UTF-8 length).
pub const MAX_KEY_BYTES: usize = 1024;

/// The characters the service refuses in a key.
pub const FORBIDDEN_KEY_CHARS: [char; 5] = ['<', '>', '?', '{', '}'];

/// Why the service would refuse to store a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`]; holds its length in bytes.
    TooLong(usize),
    /// The key contains this character of [`FORBIDDEN_KEY_CHARS`].
    Forbidden(char),
}

impl fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRefusal::Empty => f.write_str("the key is empty"),
            KeyRefusal::TooLong(bytes) => write!(
                f,
                "the key is {bytes} bytes long, the service stores at most {MAX_KEY_BYTES}"
            ),
            KeyRefusal::Forbidden(c) => {
                write!(f, "the key contains '{c}', which the service refuses")
            }
        }
    }
}

/// `Err` naming the reason when the service would refuse to store `key`
/// (Put, BatchPut); `Ok` when it accepts it.
pub fn check_service_key(key: &str) -> Result<(), KeyRefusal> {
    if key.is_empty() {
        return Err(KeyRefusal::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyRefusal::TooLong(key.len()));
    }
    match key.chars().find(|c| FORBIDDEN_KEY_CHARS.contains(c)) {
        Some(c) => Err(KeyRefusal::Forbidden(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_refuses_empty_long_and_bracketed_keys() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let longest = "k".repeat(MAX_KEY_BYTES);
        // 342 three-byte characters: 1026 bytes, though only 342 characters.
        let wide = "\u{20ac}".repeat(342);
        let cases: &[(&str, Result<(), KeyRefusal>)] = &[
            ("/scenario/s/state", Ok(())),
            ("Scenario/a.b_c-d", Ok(())),
            ("nodes/hpc 1", Ok(())),
            ("", Err(KeyRefusal::Empty)),
            (&longest, Ok(())),
            (&long, Err(KeyRefusal::TooLong(MAX_KEY_BYTES + 1))),
            (&wide, Err(KeyRefusal::TooLong(1026))),
            ("/model/a<b/state", Err(KeyRefusal::Forbidden('<'))),
            ("/model/a>b/state", Err(KeyRefusal::Forbidden('>'))),
            ("/model/a?b/state", Err(KeyRefusal::Forbidden('?'))),
            ("/model/{a}/state", Err(KeyRefusal::Forbidden('{'))),
            ("/model/a}/state", Err(KeyRefusal::Forbidden('}'))),
        ];
        for (key, expected) in cases {
            assert_eq!(check_service_key(key), *expected, "{key:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(KeyRefusal::Empty.to_string(), "the key is empty");
        assert!(KeyRefusal::TooLong(2000).to_string().contains("2000 bytes"));
        assert!(KeyRefusal::Forbidden('{').to_string().contains("'{'"));
    }
}
