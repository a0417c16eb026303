//! The byte layouts of the database's values: little-endian integers and
//! length-prefixed bytes, nothing that needs a schema crate.
//!
//! - a key's value: `create_revision: i64, mod_revision: i64, value: rest`;
//! - a log entry (one revision's events): per event
//!   `kind: u8 (0 put, 1 delete), key: u32 length + bytes,
//!   create_revision: i64, value: u32 length + bytes`; the mod revision is
//!   the entry's revision.

use state_store::{EventKind, KeyValue, Revision, WatchEvent};

/// A stored value that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Encodes a key's value with its revisions.
pub fn encode_value(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a key's value.
pub fn decode_value(key: &str, bytes: &[u8]) -> Result<KeyValue, Malformed> {
    let mut reader = Reader::new(bytes);
    let create_revision = reader.i64()?;
    let mod_revision = reader.i64()?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: reader.rest().to_vec(),
        create_revision,
        mod_revision,
    })
}

/// Encodes one revision's events.
pub fn encode_events(events: &[WatchEvent]) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::new();
    for event in events {
        out.push(match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        put_bytes(&mut out, event.kv.key.as_bytes())?;
        out.extend_from_slice(&event.kv.create_revision.to_le_bytes());
        put_bytes(&mut out, &event.kv.value)?;
    }
    Ok(out)
}

/// Decodes one revision's events.
pub fn decode_events(revision: Revision, bytes: &[u8]) -> Result<Vec<WatchEvent>, Malformed> {
    let mut reader = Reader::new(bytes);
    let mut events = Vec::new();
    while !reader.is_empty() {
        let kind = match reader.u8()? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => return Err(Malformed(format!("unknown event kind {other}"))),
        };
        let key = String::from_utf8(reader.bytes()?.to_vec())
            .map_err(|_| Malformed("a key is not UTF-8".into()))?;
        let create_revision = reader.i64()?;
        let value = reader.bytes()?.to_vec();
        events.push(WatchEvent {
            kind,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
            },
        });
    }
    Ok(events)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Malformed> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| Malformed(format!("{} bytes do not fit an entry", bytes.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed(format!(
                "truncated: {n} bytes wanted, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, Malformed> {
        let mut buf = [0; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(buf))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let mut buf = [0; 4];
        buf.copy_from_slice(self.take(4)?);
        let len = usize::try_from(u32::from_le_bytes(buf))
            .map_err(|_| Malformed("a length does not fit this machine".into()))?;
        self.take(len)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, key: &str, value: &[u8], create: Revision) -> WatchEvent {
        WatchEvent {
            kind,
            kv: KeyValue {
                key: key.into(),
                value: value.to_vec(),
                create_revision: create,
                mod_revision: 9,
            },
        }
    }

    #[test]
    fn values_and_events_round_trip() {
        let kv = decode_value("k", &encode_value(3, 9, b"\0\xffRunning")).unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.value.as_slice()),
            (3, 9, b"\0\xffRunning".as_slice())
        );
        let events = vec![
            event(EventKind::Put, "/model/m/state", b"Running", 4),
            event(EventKind::Delete, "/container/c/state", b"", 0),
            event(EventKind::Put, "", b"", 9),
        ];
        let bytes = encode_events(&events).unwrap();
        assert_eq!(decode_events(9, &bytes), Ok(events));
        assert_eq!(decode_events(9, &[]), Ok(vec![]));
    }

    #[test]
    fn damaged_bytes_are_refused_not_misread() {
        let bytes = encode_events(&[event(EventKind::Put, "key", b"value", 1)]).unwrap();
        for cut in 1..bytes.len() {
            assert!(decode_events(9, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut kind = bytes.clone();
        kind[0] = 7;
        assert_eq!(
            decode_events(9, &kind),
            Err(Malformed("unknown event kind 7".into()))
        );
        assert!(decode_value("k", &[0; 15]).is_err());
    }
}
