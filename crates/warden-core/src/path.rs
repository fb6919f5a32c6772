//! Actor paths: where an actor sits in the tree, as `/app/db/pool/worker-3`.
//!
//! Every event and error names the actor it concerns by its path. Paths are cheap to clone
//! (`Arc<str>`) because they travel in every supervision event.
//!
//! ```
//! use warden_core::ActorPath;
//!
//! let worker = ActorPath::root("app").child("db").child("worker-3");
//! assert_eq!(worker.as_str(), "/app/db/worker-3");
//! assert_eq!(worker.name(), "worker-3");
//! assert_eq!(worker.ancestors().len(), 2);
//! ```

use std::fmt;
use std::sync::Arc;

/// The position of an actor in a supervision tree: the ids of its ancestors and its own id,
/// joined by `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorPath(Arc<str>);

impl ActorPath {
    /// The path of a root supervisor named `name`.
    pub fn root(name: &str) -> Self {
        ActorPath(Arc::from(format!("/{name}")))
    }

    /// The path of a child `id` that has no place in a tree yet (its spec was not started):
    /// just the id, without a leading `/`.
    pub fn unplaced(id: &str) -> Self {
        ActorPath(Arc::from(id))
    }

    /// The path of a child `id` of the actor at `self`.
    pub fn child(&self, id: &str) -> Self {
        ActorPath(Arc::from(format!("{}/{id}", self.0)))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment: the actor's own id.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The paths of the ancestors, nearest last (`/app`, `/app/db` for `/app/db/pool`).
    pub fn ancestors(&self) -> Vec<ActorPath> {
        let mut out = Vec::new();
        let mut end = 0;
        let s: &str = &self.0;
        while let Some(pos) = s[end + 1..].find('/') {
            end = end + 1 + pos;
            out.push(ActorPath(Arc::from(&s[..end])));
        }
        out
    }
}

impl fmt::Display for ActorPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ActorPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest() {
        let p = ActorPath::root("app").child("db").child("pool").child("worker-3");
        assert_eq!(p.as_str(), "/app/db/pool/worker-3");
        assert_eq!(p.name(), "worker-3");
        let a: Vec<String> = p.ancestors().iter().map(|a| a.to_string()).collect();
        assert_eq!(a, vec!["/app", "/app/db", "/app/db/pool"]);
        assert!(ActorPath::root("app").ancestors().is_empty());
    }
}
