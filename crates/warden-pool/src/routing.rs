//! Routing rules as pure functions: which replica gets a request.
//!
//! * Round-robin: the next replica in turn that is up and has room.
//! * Least-loaded: the up replica with the fewest requests queued or running (ties go to the
//!   next in turn, so equal loads still spread).
//! * Key affinity: rendezvous (highest-random-weight) hashing of the key over the replicas'
//!   stable indices. A key keeps its replica while that replica exists, restarts included;
//!   adding a replica moves only the keys the new one wins (about 1/n of them), removing one
//!   moves only its own keys.
//!
//! ```
//! use warden_pool::routing::{least_loaded, rendezvous, Candidate};
//!
//! let replicas = [
//!     Candidate { index: 0, up: true, load: 4 },
//!     Candidate { index: 1, up: false, load: 0 }, // restarting: skipped
//!     Candidate { index: 2, up: true, load: 1 },
//! ];
//! assert_eq!(least_loaded(&replicas, 0, 1024, None), Some(2));
//! // A key keeps its replica while the set does not change.
//! let owner = rendezvous(42, [0, 1, 2]);
//! assert_eq!(rendezvous(42, [0, 1, 2]), owner);
//! ```

/// How a pool spreads requests over its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// In turn, skipping replicas that are down or full.
    RoundRobin,
    /// To the replica with the fewest requests queued or in progress.
    LeastLoaded,
    /// By the request's key: the same key always goes to the same replica (see the module
    /// documentation for what happens on restarts and resizes).
    KeyAffinity,
}

/// What routing sees of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The replica's stable index.
    pub index: usize,
    /// Up (not restarting, not hung).
    pub up: bool,
    /// Requests queued or in progress.
    pub load: usize,
}

/// A 64-bit stable hash of `x` (XXH3, from xxhash-rust: the same on every platform, process
/// and Rust version; the cluster's placement uses the same hash).
pub fn mix(x: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes())
}

/// The rendezvous winner for `key` among `indices` (highest score; ties by lower index).
pub fn rendezvous(key: u64, indices: impl IntoIterator<Item = usize>) -> Option<usize> {
    indices
        .into_iter()
        .max_by_key(|&i| (xxhash_rust::xxh3::xxh3_64_with_seed(&(i as u64).to_le_bytes(), key), std::cmp::Reverse(i)))
}

/// The next candidate in turn from `start` that is up, has room and is not `avoid`; failing
/// that, the next that is up and has room; failing that, `None`.
pub fn round_robin(cands: &[Candidate], start: usize, capacity: usize, avoid: Option<usize>) -> Option<usize> {
    let n = cands.len();
    let ok = |c: &Candidate| c.up && c.load < capacity;
    let pick = |skip_avoid: bool| {
        (0..n).map(|k| &cands[(start + k) % n]).find(|c| ok(c) && !(skip_avoid && Some(c.index) == avoid))
    };
    pick(true).or_else(|| pick(false)).map(|c| c.index)
}

/// The least-loaded candidate that is up and has room (preferring not `avoid`); ties go to
/// the first in turn from `start`.
pub fn least_loaded(cands: &[Candidate], start: usize, capacity: usize, avoid: Option<usize>) -> Option<usize> {
    let n = cands.len();
    let pick = |skip_avoid: bool| {
        (0..n)
            .map(|k| &cands[(start + k) % n])
            .filter(|c| c.up && c.load < capacity && !(skip_avoid && Some(c.index) == avoid))
            .min_by_key(|c| c.load)
    };
    pick(true).or_else(|| pick(false)).map(|c| c.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, up: bool, load: usize) -> Candidate {
        Candidate { index, up, load }
    }

    #[test]
    fn round_robin_takes_turns_and_skips_down_full_and_avoided() {
        let cands = [c(0, true, 0), c(1, false, 0), c(2, true, 5), c(3, true, 1)];
        assert_eq!(round_robin(&cands, 0, 5, None), Some(0));
        assert_eq!(round_robin(&cands, 1, 5, None), Some(3), "1 is down, 2 is full");
        assert_eq!(round_robin(&cands, 3, 5, None), Some(3));
        assert_eq!(round_robin(&cands, 3, 5, Some(3)), Some(0), "avoided when another can take it");
        assert_eq!(round_robin(&[c(0, true, 0)], 0, 5, Some(0)), Some(0), "avoided only if there is a choice");
        assert_eq!(round_robin(&[c(0, false, 0), c(1, true, 5)], 0, 5, None), None);
    }

    #[test]
    fn least_loaded_prefers_the_emptiest_and_rotates_ties() {
        let cands = [c(0, true, 3), c(1, true, 1), c(2, true, 1), c(3, false, 0)];
        assert_eq!(least_loaded(&cands, 0, 10, None), Some(1));
        assert_eq!(least_loaded(&cands, 2, 10, None), Some(2), "ties go to the first in turn");
        assert_eq!(least_loaded(&cands, 0, 10, Some(1)), Some(2));
        assert_eq!(least_loaded(&cands, 0, 1, None), None, "everyone up is full");
    }

    #[test]
    fn rendezvous_moves_few_keys_on_resize() {
        let keys = 0..10_000u64;
        let before: Vec<usize> = keys.clone().map(|k| rendezvous(mix(k), 0..4).unwrap()).collect();
        let after: Vec<usize> = keys.clone().map(|k| rendezvous(mix(k), 0..5).unwrap()).collect();
        let moved: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
        // Only keys won by the new replica move: about a fifth.
        assert!(moved.iter().all(|&i| after[i] == 4));
        assert!((1500..2500).contains(&moved.len()), "{} keys moved", moved.len());
        // Removing replica 1 moves exactly its keys.
        let without: Vec<usize> = keys.clone().map(|k| rendezvous(mix(k), [0, 2, 3]).unwrap()).collect();
        for i in 0..before.len() {
            if before[i] != 1 {
                assert_eq!(before[i], without[i]);
            }
        }
        // Spread: every replica gets a fair share.
        for r in 0..4 {
            let n = before.iter().filter(|&&x| x == r).count();
            assert!((2000..3000).contains(&n), "replica {r} got {n}");
        }
    }
}
