//! The tape's nodes and the content hash fed while they are read: shared by the document's
//! builders and the recent arrays they copy from ([`super::recent`]).

use std::hash::{BuildHasher, Hasher};

/// One node of the tape.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
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
    Array {
        count: u32,
        text: Span,
    },
    /// An object and its entry count; each entry is a key node followed by its value's nodes.
    Object {
        count: u32,
        text: Span,
    },
}

/// Where a container's JSON text lies in the body, when the parse could tell.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) end: u32,
}

impl Span {
    /// Not known: a value without a place in the body (a number, an escaped string) came
    /// right before the container's bracket.
    pub(super) const UNKNOWN: Span = Span {
        start: u32::MAX,
        end: u32::MAX,
    };
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) kind: Kind,
    /// The index just past this node's subtree (its next sibling, or its parent's end).
    pub(super) next: u32,
}

/// The seed of [`Node::content_hash`](super::Node::content_hash): foldhash's quality variant with a fixed seed (a 256 KiB
/// conversation hashes in a fraction of SipHash's time; hashes are compared only within this
/// process).
pub(super) const CONTENT_SEED: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x1f0c_a5e7);
/// Streams a value's content into a hash: the one scheme of [`Node::content_hash`](super::Node::content_hash), fed by the
/// parse ([`Slot`](super::Slot)) and by a walk of the tape ([`Node::feed`](super::Node::feed)) alike. An object's entries are
/// hashed one by one and summed, so key order does not matter; whitespace is never seen.
#[derive(Clone)]
pub(super) struct Feed(foldhash::quality::FoldHasher<'static>);

impl Feed {
    pub(super) fn new() -> Self {
        Self(CONTENT_SEED.build_hasher())
    }

    pub(super) fn scalar(&mut self, kind: Kind) {
        let h = &mut self.0;
        match kind {
            Kind::Null => h.write_u8(0),
            Kind::Bool(b) => {
                h.write_u8(1);
                h.write_u8(u8::from(b));
            }
            Kind::U64(v) => {
                h.write_u8(2);
                h.write_u64(v);
            }
            Kind::I64(v) => {
                h.write_u8(2);
                h.write_i64(v);
            }
            Kind::F64(v) => {
                h.write_u8(6);
                h.write_u64(v.to_bits());
            }
            // Containers and strings have their own calls.
            Kind::Str { .. } | Kind::Array { .. } | Kind::Object { .. } => {}
        }
    }

    pub(super) fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// A string's bytes (as [`Feed::str`]).
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.0.write_u8(3);
        // `write` folds the length in itself.
        self.0.write(b);
    }

    /// An array opens; its items are fed into the same hash, then [`Feed::array_end`].
    pub(super) fn array(&mut self) {
        self.0.write_u8(4);
    }

    pub(super) fn array_end(&mut self, count: u32) {
        self.0.write_u32(count);
    }

    /// An object: its entry count and the sum of its entries' own hashes.
    pub(super) fn object(&mut self, count: u32, sum: u64) {
        self.0.write_u8(5);
        self.0.write_u32(count);
        self.0.write_u64(sum);
    }

    pub(super) fn finish(&self) -> u64 {
        self.0.finish()
    }
}
