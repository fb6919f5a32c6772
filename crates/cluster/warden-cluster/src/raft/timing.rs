//! The cluster's timing: Raft's heartbeat and election timeouts, the node lease, and the
//! rules that tie them together (docs/cluster.md derives them).
//!
//! A node serves its singletons only while its lease holds: [`LEASE`] from the moment it
//! queued a renewal that the group then committed. The leader evicts a node (and only then
//! gives its singletons to others) when it has applied none of the node's renewals for
//! [`EVICT_AFTER`]; since it applied the last one after the node queued it, the node's lease
//! ran out before. A leader that has just been elected may not have applied every renewal
//! its predecessor committed; but it won votes from a majority, one of which stored the last
//! such renewal. That one granted its vote at least [`VOTER_LEASE`] after it stored it:
//! openraft 0.9 refuses every vote request for its leader lease (`election_timeout_max`,
//! here [`ELECTION_MAX`]) after the last append from a leader, and does not stand itself
//! before that lease and an election timeout have passed (a node that stands early because
//! its leader is down, [`standing`](super::standing), waits the lease and a margin). So the
//! new leader waits
//! [`NEW_LEADER_WAIT`] = `LEASE - VOTER_LEASE` (plus a margin) before it evicts anyone. (A
//! second guard: renewal times are never earlier than the truth, snapshot renewals included,
//! and an eviction is void if the node renewed since, which alone keeps evictions after the
//! lease, also for a leader that restarted and resumed without an election.) Both
//! rules assume clocks that advance at nearly the same rate; the margins ([`CLOCK_MARGIN`])
//! cover rate differences far beyond a real clock's.

use std::time::Duration;

use super::StorageError;

/// Raft's heartbeat, and the deadline of each replication request (ms).
pub const HEARTBEAT_MS: u64 = 100;
/// A follower that hears nothing from a leader for a random time in
/// [[`ELECTION_MIN`], [`ELECTION_MAX`]) starts an election.
pub const ELECTION_MIN: Duration = Duration::from_millis(300);
/// See [`ELECTION_MIN`].
pub const ELECTION_MAX: Duration = Duration::from_millis(500);
/// How long after it last heard a leader a voter refuses to vote: openraft 0.9's leader
/// lease, which it sets to `election_timeout_max` (`EngineConfig::new`; the refusal is in
/// `Engine::handle_vote_req`). openraft is pinned to 0.9.25 in the workspace, so this cannot
/// change under the rule that relies on it.
pub const VOTER_LEASE: Duration = ELECTION_MAX;
/// How often a node renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_millis(100);
/// How long a node may serve after queueing a renewal that was committed: the bound on how
/// long an instance that lost its grant (a node cut off, frozen or evicted) goes on answering.
pub const LEASE: Duration = Duration::from_millis(700);
/// Covers clock rate differences and scheduling delays in the two waits below.
pub const CLOCK_MARGIN: Duration = Duration::from_millis(100);
/// How long after the leader last applied one of a node's renewals it may evict the node.
pub const EVICT_AFTER: Duration = Duration::from_millis(LEASE.as_millis() as u64 + CLOCK_MARGIN.as_millis() as u64);
/// How long a new leader waits before it evicts anyone (see the module documentation).
pub const NEW_LEADER_WAIT: Duration =
    Duration::from_millis(LEASE.as_millis() as u64 - VOTER_LEASE.as_millis() as u64 + CLOCK_MARGIN.as_millis() as u64);
/// Raft log entries between two snapshots of the state machine.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 5_000;
/// Entries already in a snapshot kept for followers that lag a little.
pub const KEEP_AFTER_SNAPSHOT: u64 = 1_000;
/// The most entries in one replication request.
pub const MAX_ENTRIES_PER_REQUEST: u64 = 64;
/// The deadline of each chunk of a snapshot sent to a follower (ms); a follower that joined
/// or was wiped catches up from one.
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 5_000;

/// openraft's settings for warden's cluster, checked.
#[allow(clippy::result_large_err)] // openraft's own error type, built once at start-up
pub fn raft_config(cluster_name: &str) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN.as_millis() as u64,
        election_timeout_max: ELECTION_MAX.as_millis() as u64,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
        max_payload_entries: MAX_ENTRIES_PER_REQUEST,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: KEEP_AFTER_SNAPSHOT,
        purge_batch_size: 256,
        ..Default::default()
    }
    .validate()
}

/// A storage error for an I/O failure of the log (`what`: which operation).
pub(crate) fn storage_error(what: &'static str, cause: impl std::fmt::Display) -> StorageError {
    let io = std::io::Error::other(format!("{what}: {cause}"));
    openraft::StorageIOError::write_logs(&io).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_outlast_the_lease() {
        assert!(EVICT_AFTER > LEASE);
        // A new leader was elected at least VOTER_LEASE after the last renewal a majority
        // stored; waiting NEW_LEADER_WAIT more outlasts that renewal's lease.
        assert!(VOTER_LEASE + NEW_LEADER_WAIT > LEASE);
        assert!(ELECTION_MIN < ELECTION_MAX);
        // A renewal is due well before the lease runs out.
        assert!(RENEW_EVERY * 4 < LEASE);
        assert!(raft_config("t").is_ok());
    }
}
