//! The node tree, and the two ways operations reach it: directly, or through a transaction's
//! overlay. Every node carries a generation number that changes whenever the node does; a
//! transaction remembers the generation of each node it touched and commits only if none moved
//! (Xen's conflict rule: "only writes which changed paths read or written in the transaction").

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use super::perms::{Access, Perms};
use super::{DomId, XsError};

/// One node: value, permissions, the leaf names of its children and its generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Perms,
    pub children: BTreeSet<String>,
    pub generation: u64,
}

impl Node {
    pub fn new(value: Vec<u8>, perms: Perms) -> Self {
        Node {
            value,
            perms,
            children: BTreeSet::new(),
            generation: 0,
        }
    }
}

/// A change watchers may be told about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// `path` was created, written or had its permissions changed (`removed` false), or was
    /// removed with everything below it (`removed` true). `perms` decide who may see the event.
    Node {
        path: String,
        removed: bool,
        perms: Perms,
    },
    /// A special event such as `@introduceDomain`.
    Special(&'static str),
}

/// The committed store: nodes by absolute path, plus how many nodes each domain owns.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
    owned: BTreeMap<DomId, usize>,
    next_generation: u64,
}

impl Tree {
    /// A store holding only the root, owned by dom0 and closed to everyone else.
    pub fn new() -> Self {
        let mut tree = Tree {
            nodes: BTreeMap::new(),
            owned: BTreeMap::new(),
            next_generation: 1,
        };
        tree.put(
            String::from("/"),
            Node::new(Vec::new(), Perms::new(0, Access::None)),
        );
        tree
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn generation(&self, path: &str) -> Option<u64> {
        self.nodes.get(path).map(|n| n.generation)
    }

    pub fn owned_by(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    fn count(&mut self, domid: DomId, delta: isize) {
        let entry = self.owned.entry(domid).or_insert(0);
        *entry = entry.saturating_add_signed(delta);
        if *entry == 0 {
            self.owned.remove(&domid);
        }
    }

    /// Stores `node` at `path` with a fresh generation.
    pub fn put(&mut self, path: String, mut node: Node) {
        node.generation = self.next_generation;
        self.next_generation += 1;
        self.count(node.perms.owner(), 1);
        if let Some(old) = self.nodes.insert(path, node) {
            self.count(old.perms.owner(), -1);
        }
    }

    pub fn remove(&mut self, path: &str) {
        if let Some(old) = self.nodes.remove(path) {
            self.count(old.perms.owner(), -1);
        }
    }

    /// Checks that every child named by a node exists, every node but the root is named by its
    /// parent, and the ownership counts add up.
    pub fn check(&self) -> bool {
        let mut owned: BTreeMap<DomId, usize> = BTreeMap::new();
        for (path, node) in &self.nodes {
            *owned.entry(node.perms.owner()).or_insert(0) += 1;
            let children_exist = node
                .children
                .iter()
                .all(|c| self.nodes.contains_key(&super::path::join(path, c)));
            let named_by_parent = match super::path::parent(path) {
                None => true,
                Some(p) => self
                    .nodes
                    .get(p)
                    .is_some_and(|pn| pn.children.contains(super::path::leaf(path))),
            };
            if !children_exist || !named_by_parent {
                return false;
            }
        }
        owned == self.owned
    }
}

/// An open transaction: the nodes it changed (`None` = removed), the generation of every node
/// it looked at when it first did (`None` = absent), the events to fire on commit and how its
/// changes move each domain's node count.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    changes: BTreeMap<String, Option<Node>>,
    accessed: BTreeMap<String, Option<u64>>,
    events: Vec<Event>,
    owned_delta: BTreeMap<DomId, isize>,
}

impl Transaction {
    /// How much the transaction holds: nodes looked at, nodes changed, events queued.
    pub fn footprint(&self) -> usize {
        self.accessed.len() + self.changes.len() + self.events.len()
    }

    /// Applies the transaction to `tree` if nothing it touched changed since; returns the
    /// events to fire.
    pub fn commit(self, tree: &mut Tree) -> Result<Vec<Event>, XsError> {
        if self
            .accessed
            .iter()
            .any(|(path, generation)| tree.generation(path) != *generation)
        {
            return Err(XsError::Again);
        }
        for (path, change) in self.changes {
            match change {
                Some(node) => tree.put(path, node),
                None => tree.remove(&path),
            }
        }
        Ok(self.events)
    }
}

/// What operations need from the store, whether they run directly or in a transaction.
pub(crate) trait NodeStore {
    /// The node at `path` as this view sees it.
    fn node(&mut self, path: &str) -> Option<&Node>;
    /// Replaces or creates the node at `path` (the caller has looked at it first).
    fn set(&mut self, path: &str, node: Node);
    /// Removes the node at `path` alone (the caller has looked at it first).
    fn delete(&mut self, path: &str);
    /// Nodes owned by `domid` as this view sees it.
    fn owned_by(&self, domid: DomId) -> usize;
    /// Records a change for watchers.
    fn event(&mut self, event: Event);
}

/// Operations straight on the committed tree; events go to `events`.
pub(crate) struct Direct<'a> {
    pub tree: &'a mut Tree,
    pub events: &'a mut Vec<Event>,
}

impl NodeStore for Direct<'_> {
    fn node(&mut self, path: &str) -> Option<&Node> {
        self.tree.get(path)
    }

    fn set(&mut self, path: &str, node: Node) {
        self.tree.put(String::from(path), node);
    }

    fn delete(&mut self, path: &str) {
        self.tree.remove(path);
    }

    fn owned_by(&self, domid: DomId) -> usize {
        self.tree.owned_by(domid)
    }

    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// Operations on a transaction's overlay over the committed tree.
pub(crate) struct InTransaction<'a> {
    pub tree: &'a Tree,
    pub tx: &'a mut Transaction,
}

impl InTransaction<'_> {
    fn owner_in_view(&mut self, path: &str) -> Option<DomId> {
        self.node(path).map(|n| n.perms.owner())
    }

    fn count(&mut self, domid: DomId, delta: isize) {
        *self.tx.owned_delta.entry(domid).or_insert(0) += delta;
    }
}

impl NodeStore for InTransaction<'_> {
    fn node(&mut self, path: &str) -> Option<&Node> {
        if !self.tx.changes.contains_key(path) && !self.tx.accessed.contains_key(path) {
            self.tx
                .accessed
                .insert(String::from(path), self.tree.generation(path));
        }
        match self.tx.changes.get(path) {
            Some(change) => change.as_ref(),
            None => self.tree.get(path),
        }
    }

    fn set(&mut self, path: &str, node: Node) {
        if let Some(old) = self.owner_in_view(path) {
            self.count(old, -1);
        }
        self.count(node.perms.owner(), 1);
        self.tx.changes.insert(String::from(path), Some(node));
    }

    fn delete(&mut self, path: &str) {
        if let Some(old) = self.owner_in_view(path) {
            self.count(old, -1);
        }
        self.tx.changes.insert(String::from(path), None);
    }

    fn owned_by(&self, domid: DomId) -> usize {
        let delta = self.tx.owned_delta.get(&domid).copied().unwrap_or(0);
        self.tree.owned_by(domid).saturating_add_signed(delta)
    }

    fn event(&mut self, event: Event) {
        self.tx.events.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owner: DomId) -> Node {
        Node::new(Vec::new(), Perms::new(owner, Access::None))
    }

    #[test]
    fn generations_change_on_every_put() {
        let mut tree = Tree::new();
        tree.put(String::from("/a"), node(0));
        let g1 = tree.generation("/a");
        tree.put(String::from("/a"), node(0));
        assert_ne!(tree.generation("/a"), g1);
        tree.remove("/a");
        assert_eq!(tree.generation("/a"), None);
    }

    #[test]
    fn ownership_is_counted() {
        let mut tree = Tree::new();
        tree.put(String::from("/a"), node(3));
        tree.put(String::from("/b"), node(3));
        assert_eq!(tree.owned_by(3), 2);
        tree.put(String::from("/b"), node(4));
        assert_eq!((tree.owned_by(3), tree.owned_by(4)), (1, 1));
        tree.remove("/a");
        assert_eq!(tree.owned_by(3), 0);
    }

    #[test]
    fn transaction_view_and_conflict() {
        let mut tree = Tree::new();
        let mut tx = Transaction::default();
        {
            let mut view = InTransaction {
                tree: &tree,
                tx: &mut tx,
            };
            assert!(view.node("/a").is_none());
            view.set("/a", node(2));
            assert!(view.node("/a").is_some());
            assert_eq!(view.owned_by(2), 1);
        }
        assert!(tree.get("/a").is_none(), "uncommitted changes stay private");
        tree.put(String::from("/a"), node(0));
        assert_eq!(tx.commit(&mut tree), Err(XsError::Again));
    }
}
