//! Conversions between etcd's protobuf records and the store's types.

use etcd_client::proto::{PbEvent, PbKeyValue, PbResponseHeader};
use state_store::{Cause, EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's `range_end`): the prefix with its last byte below 0xFF incremented.
/// The empty prefix, or one of only 0xFF bytes, has no such end; `"\0"` then
/// means "up to the last key".
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The first key of a page: the prefix itself, or the smallest key after
/// `start_after` when that lies within (or after) the prefix.
pub(crate) fn page_start(prefix: &str, start_after: Option<&str>) -> Vec<u8> {
    match start_after {
        Some(after) if after >= prefix => {
            let mut start = Vec::with_capacity(after.len() + 1);
            start.extend_from_slice(after.as_bytes());
            start.push(0);
            start
        }
        // An empty key is not a key; etcd reads "from the first key" as "\0".
        _ if prefix.is_empty() => vec![0],
        _ => prefix.as_bytes().to_vec(),
    }
}

fn bad_key(error: std::string::FromUtf8Error) -> StoreError {
    StoreError::BadData {
        message: format!(
            "etcd holds a key that is not UTF-8: '{}'",
            String::from_utf8_lossy(error.as_bytes())
        ),
        source: Some(Cause::new(error.utf8_error())),
    }
}

/// An etcd key-value as the store's [`KeyValue`]; a key that is not UTF-8 is
/// [`StoreError::BadData`].
pub(crate) fn key_value(kv: PbKeyValue) -> Result<KeyValue, StoreError> {
    let key = String::from_utf8(kv.key).map_err(bad_key)?;
    Ok(KeyValue {
        key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    })
}

/// An etcd watch event as the store's [`WatchEvent`]. A delete carries the
/// key and the delete's revision, with an empty value and no creation
/// revision, as etcd reports it.
pub(crate) fn watch_event(event: PbEvent) -> Result<WatchEvent, StoreError> {
    let Some(kv) = event.kv else {
        return Err(StoreError::bad_data(
            "etcd sent a watch event without a key",
        ));
    };
    // mvccpb.Event.EventType: PUT = 0, DELETE = 1.
    match event.r#type {
        0 => Ok(WatchEvent {
            kind: EventKind::Put,
            kv: key_value(kv)?,
        }),
        1 => {
            let key = String::from_utf8(kv.key).map_err(bad_key)?;
            Ok(WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: kv.mod_revision,
                },
            })
        }
        other => Err(StoreError::bad_data(format!(
            "etcd sent a watch event of unknown type {other}"
        ))),
    }
}

/// The revision of a response header; etcd always sends one.
pub(crate) fn header_revision(header: Option<&PbResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision)
        .ok_or_else(|| StoreError::bad_data("etcd sent a response without a header"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"/model/"), b"/model0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn pages_start_after_the_last_key_but_never_before_the_prefix() {
        assert_eq!(page_start("/p/", None), b"/p/");
        assert_eq!(page_start("/p/", Some("/p/a")), b"/p/a\0");
        assert_eq!(page_start("/p/", Some("/a")), b"/p/");
        assert_eq!(page_start("", None), b"\0");
        assert_eq!(page_start("", Some("k")), b"k\0");
    }

    #[test]
    fn events_convert_and_bad_ones_are_errors_not_panics() {
        let kv = |key: &[u8]| PbKeyValue {
            key: key.to_vec(),
            value: b"v".to_vec(),
            create_revision: 3,
            mod_revision: 5,
            ..PbKeyValue::default()
        };
        let put = watch_event(PbEvent {
            r#type: 0,
            kv: Some(kv(b"/k")),
            prev_kv: None,
        })
        .unwrap();
        assert_eq!(put.kind, EventKind::Put);
        assert_eq!(put.kv.value, b"v");
        let delete = watch_event(PbEvent {
            r#type: 1,
            kv: Some(kv(b"/k")),
            prev_kv: None,
        })
        .unwrap();
        assert_eq!(delete.kind, EventKind::Delete);
        assert_eq!((delete.kv.value.len(), delete.kv.mod_revision), (0, 5));
        for bad in [
            PbEvent {
                r#type: 7,
                kv: Some(kv(b"/k")),
                prev_kv: None,
            },
            PbEvent {
                r#type: 0,
                kv: None,
                prev_kv: None,
            },
            PbEvent {
                r#type: 0,
                kv: Some(kv(b"/\xff\xfe")),
                prev_kv: None,
            },
        ] {
            assert!(matches!(watch_event(bad), Err(StoreError::BadData { .. })));
        }
        assert!(header_revision(None).is_err());
    }
}
