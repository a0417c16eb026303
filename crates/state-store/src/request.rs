//! The checks every store makes of a request before it touches its data, so
//! that every store refuses the same requests with the same error.

use crate::{Revision, StoreError};

/// Whether `key` can name a key: any non-empty string. etcd refuses an empty
/// key ("key is not provided"); every store refuses it alike.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
}

/// [`is_valid_key`] as the error a store answers with: an
/// [`InvalidRequest`](StoreError::InvalidRequest) for a key a read or delete
/// names. (A batch checks its keys in [`Batch::validated`](crate::Batch::validated).)
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(StoreError::invalid_request("the key is empty"))
    }
}

/// Checks the start of a watch: a revision, or 0 for "from now on"; a
/// negative one is an [`InvalidRequest`](StoreError::InvalidRequest).
pub fn check_watch_start(from_revision: Revision) -> Result<(), StoreError> {
    if from_revision < 0 {
        Err(StoreError::invalid_request(format!(
            "cannot watch from negative revision {from_revision}"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_empty_key_is_refused() {
        let cases: &[(&str, bool)] = &[
            ("", false),
            ("k", true),
            ("/", true),
            (" ", true),
            ("\0", true),
            ("/piccolo/states/package/p", true),
        ];
        for (key, valid) in cases {
            assert_eq!(is_valid_key(key), *valid, "{key:?}");
            match check_key(key) {
                Ok(()) => assert!(valid, "{key:?} must be refused"),
                Err(StoreError::InvalidRequest { message, .. }) => {
                    assert!(!valid, "{key:?} must be accepted");
                    assert_eq!(message, "the key is empty");
                }
                Err(other) => panic!("{key:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn a_watch_starts_at_zero_or_a_positive_revision() {
        let cases: &[(Revision, bool)] = &[(-5, false), (-1, false), (0, true), (1, true)];
        for (revision, valid) in cases {
            let checked = check_watch_start(*revision);
            assert_eq!(checked.is_ok(), *valid, "{revision}: {checked:?}");
            if let Err(error) = checked {
                assert!(
                    matches!(&error, StoreError::InvalidRequest { message, .. }
                        if message.contains(&revision.to_string())),
                    "{error:?}"
                );
            }
        }
    }
}
