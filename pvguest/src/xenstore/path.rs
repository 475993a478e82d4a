//! Xenstore path rules (`docs/misc/xenstore.txt`): absolute paths start with `/`, relative ones
//! are taken under the caller's home `/local/domain/<domid>`; only ASCII alphanumerics and
//! `-/_@` are allowed; no doubled or trailing slash (except the root itself); at most
//! [`XENSTORE_ABS_PATH_MAX`] bytes once made absolute. Paths starting with `@` name special
//! watch events and are accepted only where those make sense.

use alloc::format;
use alloc::string::String;

use hypercall_abi::io::xs_wire::XENSTORE_ABS_PATH_MAX;

use super::{DomId, XsError};

/// Special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Special watch path fired when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// A domain's home directory, against which its relative paths are resolved.
pub fn home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'/' | b'_' | b'@')
}

/// Whether `path` is a well-formed absolute node path.
pub fn is_valid_absolute(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= XENSTORE_ABS_PATH_MAX
        && path.bytes().all(allowed)
        && !path.contains("//")
        && (path == "/" || !path.ends_with('/'))
}

/// A path as sent by a client, made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The absolute path (or the special `@...` name).
    pub path: String,
    /// Whether the client gave it relative to its home (watch events then answer relative).
    pub relative: bool,
}

fn resolve_any(raw: &[u8], domid: DomId) -> Result<Resolved, XsError> {
    let text = core::str::from_utf8(raw).map_err(|_| XsError::Invalid)?;
    if text.is_empty() || !text.bytes().all(allowed) {
        return Err(XsError::Invalid);
    }
    if text.starts_with('@') {
        return if text.len() <= XENSTORE_ABS_PATH_MAX {
            Ok(Resolved {
                path: String::from(text),
                relative: false,
            })
        } else {
            Err(XsError::Invalid)
        };
    }
    let (path, relative) = if text.starts_with('/') {
        (String::from(text), false)
    } else {
        (format!("{}/{text}", home(domid)), true)
    };
    if is_valid_absolute(&path) {
        Ok(Resolved { path, relative })
    } else {
        Err(XsError::Invalid)
    }
}

/// Resolves a node path sent by domain `domid`; special `@` names are refused.
pub fn resolve(raw: &[u8], domid: DomId) -> Result<String, XsError> {
    let resolved = resolve_any(raw, domid)?;
    if resolved.path.starts_with('@') {
        return Err(XsError::Invalid);
    }
    Ok(resolved.path)
}

/// Resolves a path that may also be a special `@` name (watches, permissions of special nodes).
pub fn resolve_watch(raw: &[u8], domid: DomId) -> Result<Resolved, XsError> {
    resolve_any(raw, domid)
}

/// The parent of an absolute path (`None` for the root).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of an absolute path (empty for the root).
pub fn leaf(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// `parent`'s child called `name`.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Xen's "child" relation: `child` is `parent` itself, anything when `parent` is the root, or
/// anything below `parent/`.
pub fn is_child(child: &str, parent: &str) -> bool {
    child == parent
        || parent == "/"
        || (child.len() > parent.len()
            && child.starts_with(parent)
            && child.as_bytes().get(parent.len()) == Some(&b'/'))
}

/// `path` as a client that registered relative to `domid`'s home expects it: relative when it
/// lies below the home, unchanged otherwise.
pub fn relative_to_home(path: &str, domid: DomId) -> String {
    let home = home(domid);
    match path.strip_prefix(home.as_str()) {
        Some(rest) if rest.len() > 1 && rest.starts_with('/') => String::from(&rest[1..]),
        _ => String::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn absolute_and_relative_paths_resolve() {
        assert_eq!(resolve(b"/a/b", 3).as_deref(), Ok("/a/b"));
        assert_eq!(resolve(b"/", 3).as_deref(), Ok("/"));
        assert_eq!(resolve(b"x/y", 3).as_deref(), Ok("/local/domain/3/x/y"));
        assert_eq!(
            resolve(b"A-z_0@", 0).as_deref(),
            Ok("/local/domain/0/A-z_0@")
        );
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in [
            &b""[..],
            b"//",
            b"/a//b",
            b"/a/",
            b"x/",
            b"/a b",
            b"/a.b",
            b"/\xff",
            b"/a\0b",
            b"@special",
        ] {
            assert_eq!(resolve(bad, 1), Err(XsError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn length_limit_is_on_the_absolute_path() {
        let mut ok = vec![b'/'];
        ok.resize(XENSTORE_ABS_PATH_MAX, b'a');
        assert!(resolve(&ok, 1).is_ok());
        ok.push(b'a');
        assert_eq!(resolve(&ok, 1), Err(XsError::Invalid));
        // A relative path that fits alone but not under the home.
        let rel = vec![b'a'; XENSTORE_ABS_PATH_MAX - 5];
        assert_eq!(resolve(&rel, 1), Err(XsError::Invalid));
    }

    #[test]
    fn special_names_only_for_watches() {
        let r = resolve_watch(b"@releaseDomain", 4).unwrap();
        assert_eq!(r.path, RELEASE_DOMAIN);
        assert!(!r.relative);
        assert!(resolve_watch(b"rel", 4).unwrap().relative);
        assert_eq!(resolve_watch(b"@a b", 4), Err(XsError::Invalid));
    }

    #[test]
    fn parent_leaf_join() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(leaf("/a/b"), "b");
        assert_eq!(leaf("/"), "");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }

    #[test]
    fn child_relation_follows_xen() {
        assert!(is_child("/a", "/a"));
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/anything", "/"));
        assert!(!is_child("/ab", "/a"));
        assert!(!is_child("/a", "/a/b"));
    }

    #[test]
    fn relative_answers_strip_the_home() {
        assert_eq!(relative_to_home("/local/domain/2/x/y", 2), "x/y");
        assert_eq!(relative_to_home("/local/domain/2", 2), "/local/domain/2");
        assert_eq!(
            relative_to_home("/local/domain/23/x", 2),
            "/local/domain/23/x"
        );
        assert_eq!(relative_to_home("/other", 2), "/other");
    }
}
