//! How the ledger's byte payloads (snapshot and journal envelopes) are serialised: as one
//! MessagePack `bin` each, copied in one piece, instead of serde's default for a `Vec<u8>`, an
//! array with one integer per byte (which made encoding and decoding the Raft log, its
//! replication and its snapshots cost a call per byte). Decoding also accepts the array form,
//! so logs and snapshots written before still read.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serializer};
use serde_bytes::{ByteBuf, Bytes};

/// An `Arc<Vec<u8>>` as bytes.
pub mod shared {
    use super::*;

    /// Writes the bytes as one `bin`.
    pub fn serialize<S: Serializer>(bytes: &Arc<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    /// Reads a `bin` (or the older array of integers).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<u8>>, D::Error> {
        Ok(Arc::new(ByteBuf::deserialize(d)?.into_vec()))
    }
}

/// A journal (sequence number to envelope) with each envelope as bytes.
pub mod journal {
    use super::*;

    /// Writes a map of `u64` to `bin`.
    pub fn serialize<S: Serializer>(journal: &BTreeMap<u64, Arc<Vec<u8>>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(journal.iter().map(|(seq, bytes)| (seq, Bytes::new(bytes))))
    }

    /// Reads that map (its values as `bin` or as the older arrays).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, Arc<Vec<u8>>>, D::Error> {
        let raw = BTreeMap::<u64, ByteBuf>::deserialize(d)?;
        Ok(raw.into_iter().map(|(seq, bytes)| (seq, Arc::new(bytes.into_vec()))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{KeyRecord, StoredSnapshot, WriteKind};
    use serde::Serialize;

    #[test]
    fn a_kib_of_payload_costs_a_kib_and_a_few_bytes() {
        let append = WriteKind::Append { seq: 9, bytes: vec![0xAB; 1024] };
        let encoded = rmp_serde::to_vec(&append).expect("encodes");
        // As an array, each byte of 0xAB would take two (a marker and the value).
        assert!(encoded.len() < 1024 + 16, "{} bytes", encoded.len());
        assert_eq!(rmp_serde::from_slice::<WriteKind>(&encoded).expect("decodes"), append);
    }

    /// The form written before: every payload an array of integers.
    #[derive(Serialize)]
    struct OldSnapshot {
        bytes: Vec<u8>,
        created_unix_ms: u64,
    }

    #[derive(Serialize)]
    struct OldRecord {
        grant: Option<(u64, u64)>,
        epoch: u64,
        last_seq: u64,
        snapshots: BTreeMap<u64, OldSnapshot>,
        journal: BTreeMap<u64, Vec<u8>>,
        writers: std::collections::BTreeSet<(u64, u64)>,
    }

    #[test]
    fn records_written_in_the_older_array_form_still_read() {
        let old = OldRecord {
            grant: Some((1, 7)),
            epoch: 2,
            last_seq: 5,
            snapshots: BTreeMap::from([(4, OldSnapshot { bytes: vec![200, 1, 2], created_unix_ms: 99 })]),
            journal: BTreeMap::from([(5, vec![255, 0, 128])]),
            writers: Default::default(),
        };
        let bytes = rmp_serde::to_vec(&old).expect("encodes");
        let read: KeyRecord = rmp_serde::from_slice(&bytes).expect("the old form decodes");
        assert_eq!(
            read.snapshots.get(&4),
            Some(&StoredSnapshot { bytes: Arc::new(vec![200, 1, 2]), created_unix_ms: 99 })
        );
        assert_eq!(read.journal.get(&5).map(|b| b.as_slice()), Some(&[255u8, 0, 128][..]));
        // And the new form round-trips.
        let again: KeyRecord = rmp_serde::from_slice(&rmp_serde::to_vec(&read).expect("encodes")).expect("decodes");
        assert_eq!(again, read);
    }
}
