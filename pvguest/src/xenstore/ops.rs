//! The node operations (READ, WRITE, MKDIR, RM, DIRECTORY, GET_PERMS, SET_PERMS), written once
//! over [`NodeStore`] so they behave the same inside and outside transactions. Paths are
//! already absolute and valid here.

use alloc::string::String;
use alloc::vec::Vec;

use super::daemon::Quotas;
use super::path;
use super::perms::{Caller, Perms};
use super::store::{Event, Node, NodeStore};
use super::XsError;

fn changed(path: &str, perms: &Perms) -> Event {
    Event::Node {
        path: String::from(path),
        removed: false,
        perms: perms.clone(),
    }
}

/// The node at `path` if the caller may read it.
fn readable<'s>(
    store: &'s mut dyn NodeStore,
    caller: Caller,
    path: &str,
) -> Result<&'s Node, XsError> {
    let node = store.node(path).ok_or(XsError::NoEntry)?;
    if caller.may_read(&node.perms) {
        Ok(node)
    } else {
        Err(XsError::Access)
    }
}

pub fn read(store: &mut dyn NodeStore, caller: Caller, path: &str) -> Result<Vec<u8>, XsError> {
    Ok(readable(store, caller, path)?.value.clone())
}

pub fn directory(
    store: &mut dyn NodeStore,
    caller: Caller,
    path: &str,
) -> Result<Vec<u8>, XsError> {
    let mut out = Vec::new();
    for child in &readable(store, caller, path)?.children {
        out.extend_from_slice(child.as_bytes());
        out.push(0);
    }
    Ok(out)
}

pub fn get_perms(
    store: &mut dyn NodeStore,
    caller: Caller,
    path: &str,
) -> Result<Vec<u8>, XsError> {
    let mut out = Vec::new();
    readable(store, caller, path)?.perms.encode(&mut out);
    Ok(out)
}

/// Creates `path` and any missing ancestors with empty values (the last one gets `value`).
/// New nodes inherit their parent's permissions, except that an unprivileged creator owns
/// what it creates; creating needs write access to the nearest existing ancestor and counts
/// against the new owner's node quota.
fn create(
    store: &mut dyn NodeStore,
    caller: Caller,
    quotas: &Quotas,
    path: &str,
    value: &[u8],
) -> Result<Perms, XsError> {
    let mut missing = Vec::new();
    let mut existing = path;
    while store.node(existing).is_none() {
        missing.push(existing);
        existing = path::parent(existing).ok_or(XsError::NoEntry)?;
    }
    let ancestor = store.node(existing).ok_or(XsError::NoEntry)?;
    if !caller.may_write(&ancestor.perms) {
        return Err(XsError::Access);
    }
    let mut perms = ancestor.perms.clone();
    if !caller.privileged {
        perms = perms.with_owner(caller.domid);
        if store.owned_by(caller.domid) + missing.len() > quotas.max_nodes {
            return Err(XsError::NoSpace);
        }
    }
    for &new in missing.iter().rev() {
        let parent_path = path::parent(new).ok_or(XsError::NoEntry)?;
        let mut parent = store.node(parent_path).ok_or(XsError::NoEntry)?.clone();
        parent.children.insert(String::from(path::leaf(new)));
        store.set(parent_path, parent);
        let node_value = if new == path {
            value.to_vec()
        } else {
            Vec::new()
        };
        store.set(new, Node::new(node_value, perms.clone()));
    }
    Ok(perms)
}

pub fn write(
    store: &mut dyn NodeStore,
    caller: Caller,
    quotas: &Quotas,
    path: &str,
    value: &[u8],
) -> Result<(), XsError> {
    if !caller.privileged && value.len() > quotas.max_value_size {
        return Err(XsError::NoSpace);
    }
    let perms = match store.node(path) {
        Some(node) => {
            if !caller.may_write(&node.perms) {
                return Err(XsError::Access);
            }
            let mut node = node.clone();
            node.value = value.to_vec();
            let perms = node.perms.clone();
            store.set(path, node);
            perms
        }
        None => create(store, caller, quotas, path, value)?,
    };
    store.event(changed(path, &perms));
    Ok(())
}

/// Like Xen, MKDIR of an existing node succeeds without touching it or firing watches.
pub fn mkdir(
    store: &mut dyn NodeStore,
    caller: Caller,
    quotas: &Quotas,
    path: &str,
) -> Result<(), XsError> {
    if store.node(path).is_some() {
        return Ok(());
    }
    let perms = create(store, caller, quotas, path, &[])?;
    store.event(changed(path, &perms));
    Ok(())
}

/// Removes `path` and everything below it. Removing an absent node is fine if its parent
/// exists; the root cannot be removed.
pub fn rm(store: &mut dyn NodeStore, caller: Caller, path: &str) -> Result<(), XsError> {
    let parent_path = path::parent(path).ok_or(XsError::Invalid)?;
    let Some(node) = store.node(path) else {
        return match store.node(parent_path) {
            Some(_) => Ok(()),
            None => Err(XsError::NoEntry),
        };
    };
    if !caller.may_write(&node.perms) {
        return Err(XsError::Access);
    }
    let perms = node.perms.clone();
    let mut pending = alloc::vec![String::from(path)];
    while let Some(victim) = pending.pop() {
        if let Some(n) = store.node(&victim) {
            pending.extend(n.children.iter().map(|c| path::join(&victim, c)));
        }
        store.delete(&victim);
    }
    if let Some(parent) = store.node(parent_path) {
        let mut parent = parent.clone();
        parent.children.remove(path::leaf(path));
        store.set(parent_path, parent);
    }
    store.event(Event::Node {
        path: String::from(path),
        removed: true,
        perms,
    });
    Ok(())
}

/// Replaces a node's permissions. Only the owner (or a privileged caller) may; an unprivileged
/// owner may not give the node away, nor attach more than the quota of entries.
pub fn set_perms(
    store: &mut dyn NodeStore,
    caller: Caller,
    quotas: &Quotas,
    path: &str,
    perms: Perms,
) -> Result<(), XsError> {
    let node = store.node(path).ok_or(XsError::NoEntry)?;
    if !caller.may_set_perms(&node.perms) {
        return Err(XsError::Access);
    }
    if !caller.privileged {
        if perms.owner() != node.perms.owner() {
            return Err(XsError::Permission);
        }
        if perms.entries().len() > quotas.max_perms {
            return Err(XsError::NoSpace);
        }
    }
    let mut node = node.clone();
    node.perms = perms;
    let event = changed(path, &node.perms);
    store.set(path, node);
    store.event(event);
    Ok(())
}
