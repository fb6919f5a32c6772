//! The versioned, checksummed envelope around every stored snapshot and journal entry.
//!
//! The store keeps opaque bytes; this module gives them a shape it can check before anything
//! is decoded. Layout (little-endian, 36-byte header, then the payload):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `WDCK` |
//! | 4 | envelope format version (1) |
//! | 5 | kind: 1 snapshot, 2 journal entry |
//! | 6..8 | reserved, 0 |
//! | 8..12 | the user's schema version |
//! | 12..20 | sequence number |
//! | 20..28 | creation time, ms since the Unix epoch |
//! | 28..32 | payload length |
//! | 32..36 | CRC-32 (IEEE) of bytes 0..32 and the payload |
//!
//! The payload is MessagePack with named fields (`rmp_serde::to_vec_named`), so fields added
//! with `#[serde(default)]` and removed fields need no migration. Decoding never panics: every
//! way bytes can be wrong is a [`DecodeError`] that says which.
//!
//! ```
//! use warden_checkpoint::envelope::{decode, encode, open, DecodeError, Kind, Migration, NoMigration};
//! use warden_checkpoint::Cause;
//!
//! let bytes = encode(Kind::Snapshot, 1, 7, 0, &vec![1u32, 2, 3])?;
//! let (header, _payload) = open(&bytes)?;
//! assert_eq!(header.seq, 7);
//! let refuse = |m: Migration<'_>| -> Result<Vec<u32>, Cause> { Err(NoMigration { from: m.version(), to: 1 }.into()) };
//! assert_eq!(decode::<Vec<u32>>(&bytes, Kind::Snapshot, 1, refuse)?.1, vec![1, 2, 3]);
//!
//! let mut damaged = bytes.clone();
//! *damaged.last_mut().unwrap() ^= 0x01; // one flipped bit in the payload
//! assert!(matches!(open(&damaged), Err(DecodeError::Checksum { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::Cause;

/// The four bytes every envelope starts with.
pub const MAGIC: [u8; 4] = *b"WDCK";
/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The header's length in bytes.
pub const HEADER_LEN: usize = 36;

/// What an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A snapshot of an actor's checkpointed state.
    Snapshot,
    /// One persisted event (durable mode).
    Event,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Snapshot => 1,
            Kind::Event => 2,
        }
    }
}

/// The checked header of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Snapshot or event.
    pub kind: Kind,
    /// The user's schema version at the time it was written.
    pub schema_version: u32,
    /// Its sequence number.
    pub seq: u64,
    /// When it was written, ms since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Why stored bytes were rejected.
///
/// Not `PartialEq`: [`DecodeError::Payload`] holds the deserializer's error value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header, or than the header says the payload has.
    #[error("truncated: {needed} bytes needed, {got} present")]
    Truncated {
        /// Bytes the envelope should have.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// More bytes than the header says.
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// Not a warden envelope at all.
    #[error("not a warden checkpoint (magic bytes {found:02x?})")]
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// Written by a newer warden with a format this build cannot read.
    #[error("envelope format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedFormat {
        /// The format version found.
        found: u8,
    },
    /// Neither a snapshot nor an event.
    #[error("unknown envelope kind {found}")]
    UnknownKind {
        /// The kind byte found.
        found: u8,
    },
    /// A snapshot where an event was expected or the other way round.
    #[error("expected a {expected:?}, found a {found:?}")]
    WrongKind {
        /// What the reader wanted.
        expected: Kind,
        /// What the bytes hold.
        found: Kind,
    },
    /// The checksum does not match: the bytes were damaged.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes present.
        computed: u32,
    },
    /// The schema version is newer than the code reading it.
    #[error("schema version {found} is newer than this code's version {supported}")]
    SchemaTooNew {
        /// The version in the envelope.
        found: u32,
        /// The newest version the reader knows.
        supported: u32,
    },
    /// The checksum holds but the payload does not decode as the expected type (the cause is
    /// `rmp_serde`'s `decode::Error`).
    #[error("payload does not decode: {0}")]
    Payload(Cause),
    /// The user's migration from an older schema version failed.
    #[error("migration from schema version {from} failed: {cause}")]
    Migration {
        /// The version migrated from.
        from: u32,
        /// The migration's error, as its own type (a payload that does not decode as the old
        /// version's type is a [`DecodeError`]; a refusal by default a [`NoMigration`]).
        cause: Cause,
    },
}

/// A migration's refusal: no way from schema version `from` to `to` (what
/// `Checkpoint::migrate` answers unless the actor says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no migration from schema version {from} to {to}")]
pub struct NoMigration {
    /// The snapshot's version.
    pub from: u32,
    /// The version the code reads.
    pub to: u32,
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot encode the {what}: {cause}")]
pub struct EncodeError {
    /// `snapshot` or `event`.
    pub what: &'static str,
    /// Why.
    pub cause: EncodeProblem,
}

/// What went wrong encoding a value (in [`EncodeError`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EncodeProblem {
    /// The value's `Serialize` failed (the cause is `rmp_serde`'s `encode::Error`).
    #[error("{0}")]
    Serializer(Cause),
    /// The encoded value is larger than an envelope holds.
    #[error("{bytes} bytes is over the 4 GiB limit")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The value's `Serialize` panicked; the panic's message.
    #[error("serializer panicked: {0}")]
    Panicked(String),
}

/// Encodes `value` into an envelope.
pub fn encode<T: Serialize + ?Sized>(
    kind: Kind,
    schema_version: u32,
    seq: u64,
    created_unix_ms: u64,
    value: &T,
) -> Result<Vec<u8>, EncodeError> {
    let what = match kind {
        Kind::Snapshot => "snapshot",
        Kind::Event => "event",
    };
    let mut out = vec![0u8; HEADER_LEN];
    rmp_serde::encode::write_named(&mut out, value)
        .map_err(|e| EncodeError { what, cause: EncodeProblem::Serializer(Cause::new(e)) })?;
    let payload_len = out.len() - HEADER_LEN;
    let payload_len = u32::try_from(payload_len)
        .map_err(|_| EncodeError { what, cause: EncodeProblem::TooLarge { bytes: payload_len } })?;
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = FORMAT_VERSION;
    out[5] = kind.byte();
    out[8..12].copy_from_slice(&schema_version.to_le_bytes());
    out[12..20].copy_from_slice(&seq.to_le_bytes());
    out[20..28].copy_from_slice(&created_unix_ms.to_le_bytes());
    out[28..32].copy_from_slice(&payload_len.to_le_bytes());
    let crc = checksum(&out[..32], &out[HEADER_LEN..]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(payload);
    h.finalize()
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Checks an envelope's structure and checksum and returns its header and payload.
pub fn open(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    if bytes.len() < HEADER_LEN {
        // Say "not ours" rather than "truncated" when even the magic is wrong.
        if bytes.len() >= 4 && bytes[0..4] != MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(&bytes[0..4]);
            return Err(DecodeError::BadMagic { found });
        }
        return Err(DecodeError::Truncated { needed: HEADER_LEN, got: bytes.len() });
    }
    if bytes[0..4] != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(&bytes[0..4]);
        return Err(DecodeError::BadMagic { found });
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedFormat { found: bytes[4] });
    }
    let kind = match bytes[5] {
        1 => Kind::Snapshot,
        2 => Kind::Event,
        found => return Err(DecodeError::UnknownKind { found }),
    };
    let payload_len = le_u32(&bytes[28..32]) as usize;
    let needed = HEADER_LEN.saturating_add(payload_len);
    if bytes.len() < needed {
        return Err(DecodeError::Truncated { needed, got: bytes.len() });
    }
    if bytes.len() > needed {
        return Err(DecodeError::TrailingBytes { extra: bytes.len() - needed });
    }
    let stored = le_u32(&bytes[32..36]);
    let payload = &bytes[HEADER_LEN..];
    let computed = checksum(&bytes[..32], payload);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let header = Header {
        kind,
        schema_version: le_u32(&bytes[8..12]),
        seq: le_u64(&bytes[12..20]),
        created_unix_ms: le_u64(&bytes[20..28]),
    };
    Ok((header, payload))
}

/// Decodes a MessagePack payload as `T`.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(payload).map_err(|e| DecodeError::Payload(Cause::new(e)))
}

/// An older snapshot handed to a user's migration: its schema version and its payload,
/// which the migration decodes as the type that version used.
#[derive(Debug, Clone, Copy)]
pub struct Migration<'a> {
    version: u32,
    payload: &'a [u8],
}

impl<'a> Migration<'a> {
    pub(crate) fn new(version: u32, payload: &'a [u8]) -> Self {
        Migration { version, payload }
    }

    /// The schema version the snapshot was written with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Decodes the old payload as `T` (the type of that schema version); a payload that is
    /// not one is [`DecodeError::Payload`] (`?` in a migration makes it the cause).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_payload(self.payload)
    }
}

/// Decodes a whole envelope of `expected` kind as `T`, migrating older schema versions with
/// `migrate`. Never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    expected: Kind,
    current_version: u32,
    migrate: impl FnOnce(Migration<'_>) -> Result<T, Cause>,
) -> Result<(Header, T), DecodeError> {
    let (header, payload) = open(bytes)?;
    if header.kind != expected {
        return Err(DecodeError::WrongKind { expected, found: header.kind });
    }
    if header.schema_version > current_version {
        return Err(DecodeError::SchemaTooNew { found: header.schema_version, supported: current_version });
    }
    let value = if header.schema_version == current_version {
        decode_payload(payload)?
    } else {
        migrate(Migration::new(header.schema_version, payload))
            .map_err(|cause| DecodeError::Migration { from: header.schema_version, cause })?
    };
    Ok((header, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct V1 {
        count: u64,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct V2 {
        count: u64,
        #[serde(default)]
        label: String,
    }

    fn no_migration<T>(m: Migration<'_>) -> Result<T, Cause> {
        Err(NoMigration { from: m.version(), to: 9 }.into())
    }

    #[test]
    fn round_trip_keeps_header_and_value() {
        let bytes = encode(Kind::Snapshot, 3, 42, 1_700_000_000_000, &V1 { count: 7 }).unwrap();
        let (h, v): (Header, V1) = decode(&bytes, Kind::Snapshot, 3, no_migration).unwrap();
        assert_eq!(v, V1 { count: 7 });
        assert_eq!(h, Header { kind: Kind::Snapshot, schema_version: 3, seq: 42, created_unix_ms: 1_700_000_000_000 });
    }

    #[test]
    fn added_field_with_default_needs_no_migration() {
        let bytes = encode(Kind::Snapshot, 1, 1, 0, &V1 { count: 9 }).unwrap();
        let (_, v): (Header, V2) = decode(&bytes, Kind::Snapshot, 1, no_migration).unwrap();
        assert_eq!(v, V2 { count: 9, label: String::new() });
    }

    #[test]
    fn older_version_goes_through_the_migration() {
        let bytes = encode(Kind::Snapshot, 1, 1, 0, &V1 { count: 5 }).unwrap();
        let (_, v): (Header, V2) = decode(&bytes, Kind::Snapshot, 2, |m| {
            assert_eq!(m.version(), 1);
            let old: V1 = m.decode()?;
            Ok(V2 { count: old.count * 10, label: "migrated".into() })
        })
        .unwrap();
        assert_eq!(v, V2 { count: 50, label: "migrated".into() });
        let err = decode::<V2>(&bytes, Kind::Snapshot, 2, no_migration).unwrap_err();
        let DecodeError::Migration { from: 1, cause } = &err else { panic!("{err:?}") };
        assert_eq!(
            cause.downcast_ref::<NoMigration>(),
            Some(&NoMigration { from: 1, to: 9 }),
            "the refusal, as its type"
        );
        assert_eq!(err.to_string(), "migration from schema version 1 failed: no migration from schema version 1 to 9");
        // A migration whose old payload does not decode as the old type: the decoder's error.
        let wrong = decode::<V2>(&bytes, Kind::Snapshot, 2, |m| {
            let old: String = m.decode()?;
            Ok(V2 { count: 0, label: old })
        })
        .unwrap_err();
        let DecodeError::Migration { cause, .. } = &wrong else { panic!("{wrong:?}") };
        assert!(matches!(cause.downcast_ref::<DecodeError>(), Some(DecodeError::Payload(_))), "{wrong:?}");
    }

    #[test]
    fn each_kind_of_damage_has_its_error() {
        let good = encode(Kind::Snapshot, 2, 1, 0, &V1 { count: 1 }).unwrap();
        let dec = |b: &[u8]| decode::<V1>(b, Kind::Snapshot, 2, no_migration).map(|(_, v)| v);

        assert!(matches!(dec(&good[..10]), Err(DecodeError::Truncated { needed: HEADER_LEN, got: 10 })));
        assert!(matches!(dec(&good[..good.len() - 1]), Err(DecodeError::Truncated { .. })));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(dec(&long), Err(DecodeError::TrailingBytes { extra: 1 })));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(dec(&magic), Err(DecodeError::BadMagic { .. })));
        let mut format = good.clone();
        format[4] = 9;
        assert!(matches!(dec(&format), Err(DecodeError::UnsupportedFormat { found: 9 })));
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(dec(&flipped), Err(DecodeError::Checksum { .. })));
        assert!(matches!(
            decode::<V1>(&good, Kind::Snapshot, 1, no_migration),
            Err(DecodeError::SchemaTooNew { found: 2, supported: 1 })
        ));
        assert!(matches!(
            decode::<V1>(&good, Kind::Event, 2, no_migration),
            Err(DecodeError::WrongKind { expected: Kind::Event, found: Kind::Snapshot })
        ));
        // A valid envelope around a payload of another type.
        let other = encode(Kind::Snapshot, 2, 1, 0, &"just a string").unwrap();
        let Err(DecodeError::Payload(cause)) = dec(&other) else { panic!("decoded a string as a struct") };
        assert!(cause.is::<rmp_serde::decode::Error>(), "{cause:?}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn good() -> Vec<u8> {
            encode(Kind::Snapshot, 1, 9, 1234, &V2 { count: 77, label: "seventy-seven".into() }).unwrap()
        }

        proptest! {
            #[test]
            fn random_bytes_are_rejected_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                prop_assert!(decode::<V2>(&bytes, Kind::Snapshot, 1, no_migration).is_err());
            }

            #[test]
            fn random_bytes_behind_a_valid_magic_are_rejected(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
                let mut bytes = MAGIC.to_vec();
                bytes.push(FORMAT_VERSION);
                bytes.extend(tail);
                prop_assert!(decode::<V2>(&bytes, Kind::Snapshot, 1, no_migration).is_err());
            }

            #[test]
            fn any_changed_byte_is_detected(pos in any::<proptest::sample::Index>(), x in 1u8..=255) {
                let mut bytes = good();
                let i = pos.index(bytes.len());
                bytes[i] ^= x;
                prop_assert!(decode::<V2>(&bytes, Kind::Snapshot, 1, no_migration).is_err(), "byte {} changed", i);
            }

            #[test]
            fn any_truncation_is_detected(cut in any::<proptest::sample::Index>()) {
                let bytes = good();
                let n = cut.index(bytes.len());
                let err = decode::<V2>(&bytes[..n], Kind::Snapshot, 1, no_migration).unwrap_err();
                let truncated = matches!(err, DecodeError::Truncated { .. });
                prop_assert!(truncated, "cut at {}: {:?}", n, err);
            }
        }
    }
}
