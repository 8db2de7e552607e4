//! Structured cache keys (namespace + params) and their rendering into L1/L2 key strings.
//! Never interprets a namespace (tenant, resource): it only escapes, tags and formats.

use std::fmt;
use std::sync::Arc;

/// A set of keys that is invalidated as one (for the server: one tenant's view of one resource),
/// plus the low-cardinality `label` its metrics are reported under.
///
/// Its keys render as `{prefix}{tag}/{name}:{generation}:{params}`, where `{tag}` is the Redis
/// Cluster hash tag: every key of a namespace (and its generation counter) lives in one slot,
/// which the generation-checked store needs. [`Namespace::new`] makes the whole name the tag;
/// [`Namespace::with_hash_tag`] lets the caller choose it (e.g. the tenant, so that all of a
/// tenant's namespaces share a slot).
///
/// The label must never contain the tenant: it becomes a metrics label and a policy selector.
/// Cloning is cheap (the rendered identity is reference-counted).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// `{tag}` or `{tag}/name`, escaped so that the rendering is injective: the tag contains
    /// no `{`/`}` (so it is exactly the hash tag), and the name no `:` (so it ends at the first
    /// `:`, where the generation starts).
    id: Arc<str>,
    label: &'static str,
}

/// Percent-escapes `%` and each ASCII byte that is `special`. Runs on every read that builds a
/// key: the unescaped stretches between escapes are copied whole.
fn escape(out: &mut String, s: &str, special: impl Fn(u8) -> bool) {
    use std::fmt::Write;
    let mut rest = s;
    // Only ASCII bytes are ever escaped, so each escape is a whole character.
    while let Some(i) = rest
        .bytes()
        .position(|b| b == b'%' || (b.is_ascii() && special(b)))
    {
        out.push_str(&rest[..i]);
        // Writing into a String cannot fail.
        let _ = write!(out, "%{:02X}", rest.as_bytes()[i]);
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

impl Namespace {
    /// A namespace named `name` (e.g. `"acme:contacts"`), which is also its hash tag, whose
    /// metrics and policy use `label` (e.g. `"contacts"`). Any string is accepted.
    pub fn new(name: impl AsRef<str>, label: &'static str) -> Self {
        let mut id = String::with_capacity(name.as_ref().len() + 2);
        id.push('{');
        escape(&mut id, name.as_ref(), |b| matches!(b, b'{' | b'}'));
        id.push('}');
        Self {
            id: id.into(),
            label,
        }
    }

    /// A namespace named `name` inside hash tag `tag` (e.g. tag `"acme"`, name `"contacts"`):
    /// all namespaces with the same tag live in one Redis Cluster slot. Any strings are
    /// accepted.
    pub fn with_hash_tag(tag: impl AsRef<str>, name: impl AsRef<str>, label: &'static str) -> Self {
        let (tag, name) = (tag.as_ref(), name.as_ref());
        let mut id = String::with_capacity(tag.len() + name.len() + 3);
        id.push('{');
        escape(&mut id, tag, |b| matches!(b, b'{' | b'}'));
        id.push_str("}/");
        escape(&mut id, name, |b| matches!(b, b'{' | b'}' | b':'));
        Self {
            id: id.into(),
            label,
        }
    }

    /// The rendered (escaped) identity, `{tag}` or `{tag}/name`, exactly as it appears in every
    /// Redis key of the namespace.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The low-cardinality label used for metrics and per-label policies.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// A key of this namespace; `params` identifies the entry inside it (e.g. a hash of the
    /// normalised query parameters). Any string is accepted.
    pub fn key(&self, params: impl Into<String>) -> Key {
        Key {
            ns: self.clone(),
            params: params.into().into(),
        }
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({:?}, label={:?})", self.id, self.label)
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

/// `{prefix}{tag}[/name]:{generation}:v2:{params}`: the key in L2. The braces are the Redis
/// Cluster hash tag, so a namespace's data keys and its generation key share one slot (the
/// generation-checking store script needs both in one slot). `v2` is the value format (an
/// 8-byte position header before the bytes): a cache of the earlier format, sharing the Redis
/// during a rolling upgrade, never reads the other's values.
pub(crate) fn data_key(prefix: &str, key: &Key, generation: u64) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(prefix.len() + key.ns.id.len() + key.params.len() + 26);
    // Writing into a String cannot fail.
    let _ = write!(s, "{prefix}{}:{generation}:v2:{}", key.ns.id, key.params);
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
            ns: key.ns.id.clone(),
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
            ns: &key.ns.id,
            generation,
            params: &key.params,
        }
    }

    /// From the parts of a key another instance rendered (a namespace [`id`](Namespace::id)).
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

/// `{prefix}{tag}[/name]:g`: the namespace's generation counter (a hash with fields `g`, the
/// generation, and `p`, the highest invalidation position). It cannot collide with a data key,
/// whose segment after the namespace is always a number followed by `:`.
pub(crate) fn generation_key(prefix: &str, ns: &Namespace) -> String {
    format!("{prefix}{}:g", ns.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_hash_tag_and_generation() {
        let ns = Namespace::new("acme:contacts", "contacts");
        let k = ns.key("p=1");
        assert_eq!(data_key("tc:", &k, 7), "tc:{acme:contacts}:7:v2:p=1");
        assert_eq!(generation_key("tc:", &ns), "tc:{acme:contacts}:g");

        let ns = Namespace::with_hash_tag("acme", "contacts", "contacts");
        assert_eq!(
            data_key("tc:", &ns.key("p=1"), 7),
            "tc:{acme}/contacts:7:v2:p=1"
        );
        assert_eq!(generation_key("tc:", &ns), "tc:{acme}/contacts:g");
    }

    #[test]
    fn renderings_are_injective() {
        let a = Namespace::new("a{b}", "x");
        assert_eq!(a.id(), "{a%7Bb%7D}");
        assert_ne!(a.id(), Namespace::new("a%7Bb%7D", "x").id());
        // Other characters, multi-byte ones too, are kept as they are.
        assert_eq!(Namespace::new("é%{ü}", "x").id(), "{é%25%7Bü%7D}");
        // A name cannot pose as a generation, nor a tag swallow a name.
        let tagged = Namespace::with_hash_tag("x", "5", "l");
        let plain = Namespace::new("x", "l");
        assert_ne!(
            data_key("", &tagged.key("p"), 1),
            data_key("", &plain.key("1:p"), 5)
        );
        assert_eq!(Namespace::with_hash_tag("t", "a:1", "l").id(), "{t}/a%3A1");
        assert_ne!(
            Namespace::with_hash_tag("a}/b", "c", "l").id(),
            Namespace::with_hash_tag("a", "b}/c", "l").id()
        );
    }
}
