//! Structured cache keys (namespace + params) and their rendering into L1/L2 key strings.
//! Never interprets a namespace (tenant, resource): it only escapes, tags and formats.

use std::fmt;
use std::sync::Arc;

/// A set of keys that is invalidated as one (for the server: one tenant's view of one resource,
/// e.g. `"acme:contacts"`), plus the low-cardinality `label` its metrics are reported under.
///
/// The label must never contain the tenant: it becomes a metrics label and a policy selector.
/// Cloning is cheap (the name is reference-counted).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// Escaped so that it contains no `{`/`}`: the whole name is then exactly the Redis Cluster
    /// hash tag, and distinct names can never render to the same key.
    escaped: Arc<str>,
    label: &'static str,
}

impl Namespace {
    /// A namespace named `name` whose metrics and policy use `label` (e.g. `"contacts"`).
    ///
    /// Any string is accepted; `{`, `}` and `%` are percent-escaped so the rendering stays
    /// injective and the Redis hash tag covers the whole name.
    pub fn new(name: impl AsRef<str>, label: &'static str) -> Self {
        let name = name.as_ref();
        let escaped = if name.contains(['{', '}', '%']) {
            let mut s = String::with_capacity(name.len() + 8);
            for c in name.chars() {
                match c {
                    '%' => s.push_str("%25"),
                    '{' => s.push_str("%7B"),
                    '}' => s.push_str("%7D"),
                    c => s.push(c),
                }
            }
            s
        } else {
            name.to_owned()
        };
        Self {
            escaped: escaped.into(),
            label,
        }
    }

    /// The (escaped) name, as it appears inside the hash tag of every Redis key.
    pub fn name(&self) -> &str {
        &self.escaped
    }

    /// The low-cardinality label used for metrics and per-label policies.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// A key of this namespace; `params` identifies the entry inside it (e.g. a hash of the
    /// normalised query parameters).
    pub fn key(&self, params: impl Into<String>) -> Key {
        Key {
            ns: self.clone(),
            params: params.into().into(),
        }
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({:?}, label={:?})", self.escaped, self.label)
    }
}

/// One cache entry's identity: a [`Namespace`] plus its params. The namespace's current
/// generation is added when the key is rendered, so bumping it makes every key miss at once.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    ns: Namespace,
    params: Box<str>,
}

impl Key {
    /// The namespace this key belongs to.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The params part of the key.
    pub fn params(&self) -> &str {
        &self.params
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?}, {:?})", self.ns, self.params)
    }
}

/// `{prefix}{ns}:{generation}:{params}`: the effective key, used verbatim in L1 and L2.
/// The braces are the Redis Cluster hash tag, so a namespace's data keys and its generation
/// key share one slot (the generation-checking store script needs both in one slot).
pub(crate) fn data_key(prefix: &str, key: &Key, generation: u64) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(prefix.len() + key.ns.escaped.len() + key.params.len() + 26);
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "{prefix}{{{}}}:{generation}:{}",
        key.ns.escaped, key.params
    );
    s
}

/// The L1 key: the same parts as [`data_key`] without rendering them, so a lookup needs no
/// allocation (it borrows them through [`L1KeyRef`]).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct L1Key {
    ns: Arc<str>,
    generation: u64,
    params: Box<str>,
}

impl L1Key {
    pub(crate) fn new(key: &Key, generation: u64) -> Self {
        Self {
            ns: key.ns.escaped.clone(),
            generation,
            params: key.params.clone(),
        }
    }

    /// Bytes this key holds, for the L1 weigher.
    pub(crate) fn len(&self) -> usize {
        self.ns.len() + self.params.len()
    }
}

/// A borrowed [`L1Key`]; hashes exactly like it (both hash through this type).
#[derive(Hash)]
pub(crate) struct L1KeyRef<'a> {
    ns: &'a str,
    generation: u64,
    params: &'a str,
}

impl<'a> L1KeyRef<'a> {
    pub(crate) fn new(key: &'a Key, generation: u64) -> Self {
        Self {
            ns: &key.ns.escaped,
            generation,
            params: &key.params,
        }
    }

    /// From the parts of a key another instance rendered (an escaped namespace name).
    pub(crate) fn from_parts(ns: &'a str, generation: u64, params: &'a str) -> Self {
        Self {
            ns,
            generation,
            params,
        }
    }
}

impl std::hash::Hash for L1Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        L1KeyRef {
            ns: &self.ns,
            generation: self.generation,
            params: &self.params,
        }
        .hash(state)
    }
}

impl quick_cache::Equivalent<L1Key> for L1KeyRef<'_> {
    fn equivalent(&self, key: &L1Key) -> bool {
        self.generation == key.generation && self.params == &*key.params && self.ns == &*key.ns
    }
}

/// `{prefix}{ns}:g`: the namespace's generation counter (a hash with fields `g`, the generation,
/// and `p`, the highest invalidation position). It cannot collide with a data key, whose
/// segment after the hash tag is always a number followed by `:`.
pub(crate) fn generation_key(prefix: &str, ns: &Namespace) -> String {
    format!("{prefix}{{{}}}:g", ns.escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_hash_tag_and_generation() {
        let ns = Namespace::new("acme:contacts", "contacts");
        let k = ns.key("p=1");
        assert_eq!(data_key("tc:", &k, 7), "tc:{acme:contacts}:7:p=1");
        assert_eq!(generation_key("tc:", &ns), "tc:{acme:contacts}:g");
    }

    #[test]
    fn braces_are_escaped_injectively() {
        let a = Namespace::new("a{b}", "x");
        let b = Namespace::new("a%7Bb%7D", "x");
        assert_eq!(a.name(), "a%7Bb%7D");
        assert_ne!(a.name(), b.name());
    }
}
