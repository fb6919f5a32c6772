//! The encoding of the demo's values in messages between nodes: MessagePack with field names
//! (so a field added later does not break older peers), through ractor_cluster's byte fields.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes `value` (our own types always encode; an empty payload would fail to decode).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Decodes a payload.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// The answer of a ractor call, if it came.
pub trait CallExt<T> {
    /// `Some` for an answer, `None` for a timeout or a lost sender.
    fn success(self) -> Option<T>;
}

impl<T> CallExt<T> for ractor::rpc::CallResult<T> {
    fn success(self) -> Option<T> {
        match self {
            ractor::rpc::CallResult::Success(t) => Some(t),
            _ => None,
        }
    }
}
