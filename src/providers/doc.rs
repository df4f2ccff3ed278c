//! [`Doc`]: a read-only JSON document over a request body's bytes — the one parse every reader
//! on the request path shares (inspection, the policies, the context guard's text walk).
//!
//! A `serde_json::Value` with `preserve_order` allocates every key and string and an `IndexMap`
//! per object, and SipHashes every key; for an agent's 256 KiB conversation that parse and its
//! drop were ~70 % of a request's instructions. A `Doc` keeps the body (a refcounted `Bytes`)
//! and a flat tape of nodes built by serde_json's own deserializer (so serde_json still
//! validates, with its numbers and its depth limit): a string without escapes is a byte range of
//! the body, one with escapes is unescaped once into a side buffer; an object's lookup is a
//! linear scan of its few keys. The owned `Value` is built only where a policy rewrites the body.
//!
//! Duplicate keys read as `Value` reads them (the last value, at the first key's place): a body
//! that repeats a key in an object — rare — is normalized through a `Value` once at parse.

use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Objects with at most this many keys are checked for repeats pair by pair (no allocation).
const SMALL_OBJECT: usize = 16;

/// One node of the tape.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    /// A string (or an object's key): a range of the body, or of the side buffer when it had
    /// escapes.
    Str {
        side: bool,
        start: u32,
        end: u32,
    },
    /// An array and its item count; the items follow.
    Array(u32),
    /// An object and its entry count; each entry is a key node followed by its value's nodes.
    Object(u32),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    /// The index just past this node's subtree (its next sibling, or its parent's end).
    next: u32,
}

/// A JSON document read once from a request body, for reading only.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The body, checked as UTF-8 once: strings are read as ranges of it with no further check.
    text: ByteString,
    tape: Vec<Entry>,
    side: String,
}

/// Why a body is not a [`Doc`].
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// Not JSON (serde_json's reason).
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not UTF-8 (JSON text is).
    #[error("body is not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// Larger than the tape's 32-bit offsets (4 GiB).
    #[error("body too large for a document")]
    TooLarge,
}

// === impl Doc ===

impl Doc {
    /// Parse `bytes` (shared, not copied) into a document.
    pub fn parse(bytes: Bytes) -> Result<Self, DocError> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(DocError::TooLarge);
        }
        // One UTF-8 check of the whole body: serde_json then reads it as `str` (no check per
        // string) and the nodes' strings are ranges of it (no check per read).
        let text = ByteString::try_from(bytes)?;
        let mut b = Builder {
            bytes: text.as_bytes(),
            // About one node per 16 bytes of an agent's request; the tape grows past it.
            tape: Vec::with_capacity(text.len() / 16 + 4),
            side: String::new(),
            repeats: false,
        };
        let mut de = serde_json::Deserializer::from_str(&text);
        Slot(&mut b).deserialize(&mut de)?;
        de.end()?;
        if b.repeats {
            // Repeated keys: `Value`'s reading (last value at the first key's place), once.
            let v: Value = serde_json::from_str(&text)?;
            return Self::parse(Bytes::from(serde_json::to_vec(&v)?));
        }
        let (tape, side) = (b.tape, b.side);
        Ok(Self { text, tape, side })
    }

    /// The document's root value.
    pub fn root(&self) -> Node<'_> {
        Node { doc: self, at: 0 }
    }

    /// The bytes the document was read from (the body, or its normalized form when it repeated
    /// a key).
    pub fn bytes(&self) -> &Bytes {
        self.text.as_bytes()
    }

    /// A document of `v`'s JSON text (tests build their bodies as `json!` values).
    #[cfg(test)]
    pub fn of(v: &Value) -> Self {
        Self::parse(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
            .unwrap_or_else(|_| Self::of(&Value::Null))
    }

    /// The owned `Value` of the whole document (for a rewrite).
    pub fn to_value(&self) -> Value {
        self.root().to_value()
    }

    fn str_at(&self, side: bool, start: u32, end: u32) -> &str {
        let src: &str = if side { &self.side } else { &self.text };
        // Ranges are strings serde_json read from `src` (an empty string if that ever failed
        // to hold: never a panic).
        src.get(start as usize..end as usize).unwrap_or("")
    }
}

/// The tape under construction.
struct Builder<'b> {
    bytes: &'b [u8],
    tape: Vec<Entry>,
    side: String,
    /// Some object repeated a key.
    repeats: bool,
}

impl Builder<'_> {
    fn push(&mut self, kind: Kind) -> usize {
        let at = self.tape.len();
        self.tape.push(Entry {
            kind,
            next: at as u32 + 1,
        });
        at
    }

    /// A string: its place in the body when serde_json borrowed it from there, else copied
    /// (unescaped) to the side buffer.
    fn string(&mut self, s: &str, borrowed: bool) -> Kind {
        let base = self.bytes.as_ptr() as usize;
        let p = s.as_ptr() as usize;
        if borrowed && p >= base && p + s.len() <= base + self.bytes.len() {
            let start = (p - base) as u32;
            return Kind::Str {
                side: false,
                start,
                end: start + s.len() as u32,
            };
        }
        let start = self.side.len() as u32;
        self.side.push_str(s);
        Kind::Str {
            side: true,
            start,
            end: self.side.len() as u32,
        }
    }

    fn key_bytes(&self, at: usize) -> &[u8] {
        match self.tape[at].kind {
            Kind::Str { side, start, end } => {
                let src = if side {
                    self.side.as_bytes()
                } else {
                    self.bytes
                };
                src.get(start as usize..end as usize).unwrap_or(&[])
            }
            _ => &[],
        }
    }

    /// Whether the object at `at` (complete) repeats a key.
    fn repeats_a_key(&self, at: usize, count: usize) -> bool {
        if count < 2 {
            return false;
        }
        let end = self.tape[at].next as usize;
        // A small object's keys on the stack (an agent's conversation has thousands of
        // objects, nearly all of two to four keys: no allocation for them).
        let mut small: [&[u8]; SMALL_OBJECT] = [&[]; SMALL_OBJECT];
        let mut held = 0;
        let mut seen = (count > SMALL_OBJECT).then(|| HashSet::with_capacity(count));
        let mut i = at + 1;
        while i < end {
            let k = self.key_bytes(i);
            match seen.as_mut() {
                Some(set) => {
                    if !set.insert(k) {
                        return true;
                    }
                }
                None => {
                    let earlier = small.get(..held).unwrap_or_default();
                    if earlier.contains(&k) {
                        return true;
                    }
                    if let Some(slot) = small.get_mut(held) {
                        *slot = k;
                        held += 1;
                    }
                }
            }
            i = self.tape[i + 1].next as usize;
        }
        false
    }
}

/// Reads one value onto the tape.
struct Slot<'a, 'b>(&'a mut Builder<'b>);

impl<'de> DeserializeSeed<'de> for Slot<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Slot<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Kind::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Kind::Bool(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Kind::U64(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Kind::I64(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Kind::F64(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        let k = self.0.string(v, true);
        self.0.push(k);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        let k = self.0.string(v, false);
        self.0.push(k);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.push(Kind::Array(0));
        let mut count = 0u32;
        while seq.next_element_seed(Slot(self.0))?.is_some() {
            count += 1;
        }
        let next = self.0.tape.len() as u32;
        self.0.tape[at] = Entry {
            kind: Kind::Array(count),
            next,
        };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.push(Kind::Object(0));
        let mut count = 0u32;
        while map.next_key_seed(Slot(self.0))?.is_some() {
            map.next_value_seed(Slot(self.0))?;
            count += 1;
        }
        let next = self.0.tape.len() as u32;
        self.0.tape[at] = Entry {
            kind: Kind::Object(count),
            next,
        };
        if !self.0.repeats && self.0.repeats_a_key(at, count as usize) {
            self.0.repeats = true;
        }
        Ok(())
    }
}

/// One value of a [`Doc`]: the reading API of `serde_json::Value`, borrowed from the document.
#[derive(Clone, Copy)]
pub struct Node<'d> {
    doc: &'d Doc,
    at: usize,
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("<node>"),
        }
    }
}

// === impl Node ===

impl<'d> Node<'d> {
    fn kind(self) -> Kind {
        self.doc.tape[self.at].kind
    }

    /// The member `key` of an object (`None` for a missing key or a non-object).
    pub fn get(self, key: &str) -> Option<Node<'d>> {
        self.entries()?.find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The length in bytes of the whole document's text (a capacity hint for its readers).
    pub fn document_len(self) -> usize {
        self.doc.text.len()
    }

    /// The string, when this is one (unescaped).
    pub fn as_str(self) -> Option<&'d str> {
        match self.kind() {
            Kind::Str { side, start, end } => Some(self.doc.str_at(side, start, end)),
            _ => None,
        }
    }

    /// The boolean, when this is one.
    pub fn as_bool(self) -> Option<bool> {
        match self.kind() {
            Kind::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The number as a `u64`, when it is a non-negative integer (as `Value::as_u64`).
    pub fn as_u64(self) -> Option<u64> {
        match self.kind() {
            Kind::U64(n) => Some(n),
            Kind::I64(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The number as an `i64`, when it is an integer in range (as `Value::as_i64`).
    pub fn as_i64(self) -> Option<i64> {
        match self.kind() {
            Kind::U64(n) => i64::try_from(n).ok(),
            Kind::I64(n) => Some(n),
            _ => None,
        }
    }

    /// The number as an `f64`, when this is a number (as `Value::as_f64`).
    pub fn as_f64(self) -> Option<f64> {
        match self.kind() {
            Kind::U64(n) => Some(n as f64),
            Kind::I64(n) => Some(n as f64),
            Kind::F64(n) => Some(n),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(self) -> bool {
        matches!(self.kind(), Kind::Null)
    }

    /// Whether this is a string.
    pub fn is_string(self) -> bool {
        matches!(self.kind(), Kind::Str { .. })
    }

    /// Whether this is a number.
    pub fn is_number(self) -> bool {
        matches!(self.kind(), Kind::U64(_) | Kind::I64(_) | Kind::F64(_))
    }

    /// Whether this is an object.
    pub fn is_object(self) -> bool {
        matches!(self.kind(), Kind::Object(_))
    }

    /// Whether this is an array.
    pub fn is_array(self) -> bool {
        matches!(self.kind(), Kind::Array(_))
    }

    /// The items, when this is an array.
    pub fn items(self) -> Option<Items<'d>> {
        self.is_array().then(|| self.items_or_none())
    }

    /// The `(key, value)` entries in document order, when this is an object.
    pub fn entries(self) -> Option<Entries<'d>> {
        self.is_object().then(|| self.entries_or_none())
    }

    /// [`Node::items`], empty for a non-array.
    fn items_or_none(self) -> Items<'d> {
        let left = match self.kind() {
            Kind::Array(n) => n as usize,
            _ => 0,
        };
        Items {
            doc: self.doc,
            at: self.at + 1,
            left,
        }
    }

    /// [`Node::entries`], empty for a non-object.
    fn entries_or_none(self) -> Entries<'d> {
        let left = match self.kind() {
            Kind::Object(n) => n as usize,
            _ => 0,
        };
        Entries {
            doc: self.doc,
            at: self.at + 1,
            left,
        }
    }

    /// The subtree as an owned `Value` (equal to what `serde_json` parses from its text).
    pub fn to_value(self) -> Value {
        Value::deserialize(self).unwrap_or(Value::Null)
    }
}

/// The items of an array [`Node`], in order.
#[derive(Clone)]
pub struct Items<'d> {
    doc: &'d Doc,
    at: usize,
    left: usize,
}

impl<'d> Iterator for Items<'d> {
    type Item = Node<'d>;

    fn next(&mut self) -> Option<Node<'d>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let node = Node {
            doc: self.doc,
            at: self.at,
        };
        self.at = self.doc.tape[self.at].next as usize;
        Some(node)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Items<'_> {}

/// The entries of an object [`Node`], in document order.
#[derive(Clone)]
pub struct Entries<'d> {
    doc: &'d Doc,
    at: usize,
    left: usize,
}

impl<'d> Iterator for Entries<'d> {
    type Item = (&'d str, Node<'d>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = Node {
            doc: self.doc,
            at: self.at,
        }
        .as_str()
        .unwrap_or("");
        let value = Node {
            doc: self.doc,
            at: self.at + 1,
        };
        self.at = self.doc.tape[self.at + 1].next as usize;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Entries<'_> {}

/// Compact JSON of the subtree, as `serde_json` writes the equal `Value`.
impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.kind() {
            Kind::Null => s.serialize_unit(),
            Kind::Bool(b) => s.serialize_bool(b),
            Kind::U64(n) => s.serialize_u64(n),
            Kind::I64(n) => s.serialize_i64(n),
            Kind::F64(n) => s.serialize_f64(n),
            Kind::Str { .. } => s.serialize_str(self.as_str().unwrap_or("")),
            Kind::Array(_) => {
                let items = self.items_or_none();
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&item)?;
                }
                seq.end()
            }
            Kind::Object(_) => {
                let entries = self.entries_or_none();
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, &v)?;
                }
                map.end()
            }
        }
    }
}

/// Typed reads straight from the document (as `Value` implements `Deserializer`): strings are
/// borrowed from it.
impl<'de> Deserializer<'de> for Node<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.kind() {
            Kind::Null => v.visit_unit(),
            Kind::Bool(b) => v.visit_bool(b),
            Kind::U64(n) => v.visit_u64(n),
            Kind::I64(n) => v.visit_i64(n),
            Kind::F64(n) => v.visit_f64(n),
            Kind::Str { .. } => v.visit_borrowed_str(self.as_str().unwrap_or("")),
            Kind::Array(_) => {
                let mut seq = SeqDe(self.items_or_none());
                let out = v.visit_seq(&mut seq)?;
                match seq.0.len() {
                    0 => Ok(out),
                    _ => Err(de::Error::custom("fewer elements in array")),
                }
            }
            Kind::Object(_) => v.visit_map(MapDe {
                entries: self.entries_or_none(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.kind() {
            Kind::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        // Unit variants by name, as `Value` reads them; other shapes go to `deserialize_any`.
        match self.as_str() {
            Some(s) => v.visit_enum(BorrowedStrDeserializer::<Self::Error>::new(s)),
            None => self.deserialize_any(v),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

impl<'d> IntoDeserializer<'d, serde_json::Error> for Node<'d> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

struct SeqDe<I>(I);

impl<'d, I: Iterator<Item = Node<'d>>> SeqAccess<'d> for SeqDe<I> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'d>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|n| seed.deserialize(n)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.size_hint().0)
    }
}

struct MapDe<'d, I> {
    entries: I,
    value: Option<Node<'d>>,
}

impl<'d, I: Iterator<Item = (&'d str, Node<'d>)>> MapAccess<'d> for MapDe<'d, I> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'d>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(BorrowedStrDeserializer::new(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'d>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(v),
            None => Err(de::Error::custom("value missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.size_hint().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn doc(s: &str) -> Doc {
        Doc::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn reads_like_value() {
        let text = r#"{"model":"m","n":-3,"f":1.5,"big":18446744073709551615,"ok":true,"nil":null,"list":[1,"two",{"three":3}]}"#;
        let d = doc(text);
        let r = d.root();
        assert_eq!(r.get("model").and_then(Node::as_str), Some("m"));
        assert_eq!(r.get("n").and_then(Node::as_i64), Some(-3));
        assert_eq!(r.get("n").and_then(Node::as_u64), None);
        assert_eq!(r.get("f").and_then(Node::as_f64), Some(1.5));
        assert_eq!(r.get("f").and_then(Node::as_u64), None);
        assert_eq!(r.get("big").and_then(Node::as_u64), Some(u64::MAX));
        assert_eq!(r.get("ok").and_then(Node::as_bool), Some(true));
        assert!(r.get("nil").is_some_and(Node::is_null));
        assert!(r.get("missing").is_none());
        let list: Vec<_> = r.get("list").and_then(Node::items).unwrap().collect();
        assert_eq!(list.len(), 3);
        assert_eq!(list[2].get("three").and_then(Node::as_u64), Some(3));
        assert_eq!(d.to_value(), serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap()
        );
    }

    #[test]
    fn escapes_and_unicode_are_unescaped() {
        let d =
            doc(r#"{"a\"b":"line\nbreak \u00e9 \ud83d\ude00","plain":"héllo 😀","k\u0065y":1}"#);
        let r = d.root();
        assert_eq!(
            r.get("a\"b").and_then(Node::as_str),
            Some("line\nbreak é 😀")
        );
        assert_eq!(r.get("plain").and_then(Node::as_str), Some("héllo 😀"));
        assert_eq!(r.get("key").and_then(Node::as_u64), Some(1));
        let keys: Vec<_> = r.entries().unwrap().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a\"b", "plain", "key"]);
    }

    #[test]
    fn repeated_keys_read_as_value_reads_them() {
        let text = r#"{"a":1,"b":[{"x":1,"x":2}],"a":{"c":3}}"#;
        let d = doc(text);
        let want: Value = serde_json::from_str(text).unwrap();
        assert_eq!(d.to_value(), want);
        assert_eq!(d.root().get("a").unwrap().to_value(), json!({"c": 3}));
        let keys: Vec<_> = d.root().entries().unwrap().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["a", "b"],
            "the first key's place, as preserve_order keeps it"
        );
        // Many keys (the hashed check) repeat too.
        let many = format!(
            "{{{},\"k0\":\"last\"}}",
            (0..40)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let d = doc(&many);
        assert_eq!(d.root().get("k0").and_then(Node::as_str), Some("last"));
        assert_eq!(d.to_value(), serde_json::from_str::<Value>(&many).unwrap());
    }

    #[test]
    fn invalid_json_and_trailing_bytes_are_errors() {
        for bad in ["{", r#"{"a":1} x"#, r#"{"a":"\ud800"}"#, "[1,]", ""] {
            assert!(Doc::parse(Bytes::from(bad)).is_err(), "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            Doc::parse(Bytes::from(deep)).is_err(),
            "serde_json's depth limit holds"
        );
        assert!(Doc::parse(Bytes::from(" [] ")).is_ok());
        assert!(
            Doc::parse(Bytes::from("[1e400]")).is_err(),
            "out of range, as for a Value"
        );
        // Bytes that are not UTF-8 are refused as a `Value` refuses them, in a string or not.
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":1}\xc3",
            b"\xef\xbb\xbf{}",
        ] {
            assert!(serde_json::from_slice::<Value>(bad).is_err());
            assert!(Doc::parse(Bytes::copy_from_slice(bad)).is_err());
        }
        let ok = "{\"a\":\"caf\u{e9} \u{1F600}\"}";
        let d = Doc::parse(Bytes::from(ok)).unwrap();
        assert_eq!(
            d.root().get("a").and_then(|n| n.as_str()),
            Some("caf\u{e9} \u{1F600}")
        );
    }

    #[test]
    fn typed_reads_borrow_from_the_document() {
        #[derive(Deserialize)]
        struct T<'a> {
            #[serde(borrow)]
            model: std::borrow::Cow<'a, str>,
            stream: Option<bool>,
            max: Option<u64>,
            tools: Option<Vec<serde::de::IgnoredAny>>,
        }
        let d = doc(r#"{"model":"gpt","stream":null,"max":7,"tools":[{},{}],"x":[1]}"#);
        let t = T::deserialize(d.root()).unwrap();
        assert!(matches!(t.model, std::borrow::Cow::Borrowed("gpt")));
        assert_eq!(
            (t.stream, t.max, t.tools.map(|t| t.len())),
            (None, Some(7), Some(2))
        );
        let d = doc(r#"{"model":"gpt","stream":"yes"}"#);
        assert!(
            T::deserialize(d.root()).is_err(),
            "a wrong type fails as from a Value"
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            "[a-c\"\\\\\n\u{e9}]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec(("[a-d\"]{0,2}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// JSON text of `v` with its first key written twice (another value first), when it is an
    /// object with keys.
    fn with_repeat(v: &Value) -> String {
        let text = serde_json::to_string(v).unwrap_or_default();
        match v.as_object().and_then(|o| o.keys().next()) {
            Some(k) => format!("{{{}:0,{}", serde_json::to_string(k).unwrap(), &text[1..]),
            None => text,
        }
    }

    proptest! {
        #[test]
        fn answers_equal_values_on_arbitrary_json(v in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            for text in [text.clone(), with_repeat(&v)] {
                let want: Value = serde_json::from_str(&text).unwrap();
                let d = Doc::parse(Bytes::from(text.clone())).unwrap();
                prop_assert_eq!(d.to_value(), want.clone());
                prop_assert_eq!(serde_json::to_string(&d.root()).unwrap(), serde_json::to_string(&want).unwrap());
                if let (Some(obj), Some(entries)) = (want.as_object(), d.root().entries()) {
                    prop_assert_eq!(obj.len(), entries.len());
                    for (k, x) in obj {
                        let got = d.root().get(k).map(Node::to_value);
                        prop_assert_eq!(got.as_ref(), Some(x));
                        let n = d.root().get(k).unwrap();
                        prop_assert_eq!(n.as_str(), x.as_str());
                        prop_assert_eq!(n.as_u64(), x.as_u64());
                        prop_assert_eq!(n.as_i64(), x.as_i64());
                        prop_assert_eq!(n.as_f64(), x.as_f64());
                        prop_assert_eq!(n.as_bool(), x.as_bool());
                    }
                }
            }
        }
    }
}
