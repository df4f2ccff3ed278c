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
use std::ops::RangeInclusive;

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::skim::{unescape, Bail, Skim, Skimmed};

mod recent;
mod tape;

use tape::{Entry, Feed, Kind, Span};

/// Objects with at most this many keys are checked for repeats pair by pair (no allocation).
const SMALL_OBJECT: usize = 16;

/// A JSON document read once from a request body, for reading only.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The body, checked as UTF-8 once: strings are read as ranges of it with no further check.
    text: ByteString,
    tape: Vec<Entry>,
    /// The strings that had escapes, unescaped, each followed by `\n`.
    side: String,
    /// The root's members' content hashes, read at parse ([`Doc::parse_hashing`]): tape index
    /// and hash, in document order.
    hashes: Vec<(u32, u64)>,
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
        Self::parse_with(bytes, false)
    }

    /// [`Doc::parse`], hashing the root's members as they are read: their
    /// [`Node::content_hash`] is then at hand without a second walk of the conversation (each
    /// string is hashed while the parse has it in cache).
    pub fn parse_hashing(bytes: Bytes) -> Result<Self, DocError> {
        Self::parse_with(bytes, true)
    }

    fn parse_with(bytes: Bytes, hashing: bool) -> Result<Self, DocError> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(DocError::TooLarge);
        }
        // One UTF-8 check of the whole body: serde_json then reads it as `str` (no check per
        // string) and the nodes' strings are ranges of it (no check per read).
        let text = ByteString::try_from(bytes)?;
        let mut b = Builder {
            bytes: text.as_bytes(),
            tape: Vec::with_capacity(tape_capacity(text.as_bytes())),
            side: String::new(),
            repeats: false,
            hashes: hashing.then(Vec::new),
            cursor: 0,
            recent: recent::take(),
            found: Vec::new(),
        };
        let mut skim = Skim::new(text.as_bytes());
        let scanned = b.scan_value(&mut skim, None, true, 0).is_ok() && skim.at_end();
        let mut recent = std::mem::take(&mut b.recent);
        let found = std::mem::take(&mut b.found);
        if scanned && !b.repeats && !found.is_empty() {
            recent.keep(text.as_bytes(), &b.tape, &b.side, found);
        }
        recent::give_back(recent);
        if !scanned {
            // What the scan leaves to serde_json (or a body that is not JSON): its visitor builds
            // the same tape, or says why there is none.
            b.tape.clear();
            b.side.clear();
            b.repeats = false;
            b.hashes = hashing.then(Vec::new);
            b.cursor = 0;
            Self::visit_into(&mut b, &text)?;
        }
        if b.repeats {
            // Repeated keys: `Value`'s reading (last value at the first key's place), once.
            let v: Value = serde_json::from_str(&text)?;
            return Self::parse_with(Bytes::from(serde_json::to_vec(&v)?), hashing);
        }
        let (tape, side) = (b.tape, b.side);
        let hashes = b.hashes.unwrap_or_default();
        Ok(Self {
            text,
            tape,
            side,
            hashes,
        })
    }

    /// Build `b`'s tape through serde_json's deserializer (a [`Slot`] per value).
    fn visit_into(b: &mut Builder<'_>, text: &str) -> Result<(), DocError> {
        let mut de = serde_json::Deserializer::from_str(text);
        Slot {
            b,
            feed: None,
            root: true,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(())
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

    /// The document's whole text (the body as sent, or as normalized at parse).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every string the text holds with escapes, unescaped, each followed by `\n`: with
    /// [`Doc::text`], every string of the document appears verbatim in one of the two.
    pub fn unescaped(&self) -> &str {
        &self.side
    }

    /// How many of the document's strings (keys and values alike, unescaped) of `lens` bytes
    /// `counted` accepts, leaving out the values of the root object's members whose key `skip`
    /// accepts: one pass over the tape that jumps over those values, and looks at a string's
    /// bytes only when its length fits (generic, so the test inlines into the pass: an agent's
    /// conversation is thousands of nodes).
    pub fn count_strings(
        &self,
        lens: RangeInclusive<usize>,
        counted: impl Fn(&[u8]) -> bool,
        skip: impl Fn(&str) -> bool,
    ) -> u64 {
        let (text, side) = (self.text.as_bytes(), self.side.as_bytes());
        let count = |nodes: &[Entry]| {
            let mut n = 0;
            for e in nodes {
                if let Kind::Str {
                    side: s,
                    start,
                    end,
                } = e.kind
                {
                    if lens.contains(&(end.saturating_sub(start) as usize)) {
                        let src = if s { side } else { text };
                        // Ranges are strings serde_json read from `src`: never out of it.
                        let b = src.get(start as usize..end as usize).unwrap_or_default();
                        n += u64::from(counted(b));
                    }
                }
            }
            n
        };
        // The root's entries, as any object's are read: each key, then (unless skipped) its
        // value's subtree.
        let Some(entries) = self.root().entries() else {
            return count(&self.tape);
        };
        entries
            .map(|(key, value)| {
                let at = value.at;
                let past = (self.tape[at].next as usize).clamp(at, self.tape.len());
                let value = if skip(key) {
                    0
                } else {
                    count(&self.tape[at..past])
                };
                count(&self.tape[at - 1..at]) + value
            })
            .sum()
    }

    fn str_at(&self, side: bool, start: u32, end: u32) -> &str {
        let src: &str = if side { &self.side } else { &self.text };
        // Ranges are strings serde_json read from `src` (an empty string if that ever failed
        // to hold: never a panic).
        src.get(start as usize..end as usize).unwrap_or("")
    }
}

/// The tape's length for `bytes`, sized once. Nearly every node is a string or an object's key,
/// two quotes each, and numbers and containers are fewer than strings: a small body's quotes
/// bound it (declared tools are dense: a node per 8 bytes). A large body is mostly
/// conversation (a node per ~30 bytes), where counting would cost more than growing once.
fn tape_capacity(bytes: &[u8]) -> usize {
    if bytes.len() > 64 * 1024 {
        return bytes.len() / 16;
    }
    // Counted per 64 bytes into a byte (at most 64 fits), which compiles to vector compares
    // and sums; a count straight into a `usize` stays a loop over bytes.
    let quotes: usize = bytes
        .chunks(64)
        .map(|c| usize::from(c.iter().fold(0u8, |n, b| n + u8::from(*b == b'"'))))
        .sum();
    quotes + 16
}

/// The tape under construction.
struct Builder<'b> {
    /// This thread's recent root arrays, when the scan may copy from them ([`recent`]).
    recent: recent::Recent,
    /// Root arrays scanned that are worth keeping for the next body.
    found: Vec<recent::Found>,
    bytes: &'b [u8],
    tape: Vec<Entry>,
    side: String,
    /// Some object repeated a key.
    repeats: bool,
    /// The root's members' content hashes, when the parse hashes.
    hashes: Option<Vec<(u32, u64)>>,
    /// The offset just past the last token whose end is known (`NOWHERE`: not known), from
    /// which a container's bracket is found ([`Span`]).
    cursor: u32,
}

/// Whitespace, commas and colons: what lies between a token and the next.
fn between_tokens(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b':')
}

/// [`Builder::cursor`] when the last token has no known end.
const NOWHERE: u32 = u32::MAX;

impl Builder<'_> {
    /// The offset of `bracket` next after the cursor, past whitespace, commas and colons only
    /// (what lies between a token and the next): `None` where the cursor is not known or
    /// something else comes first.
    fn next_bracket(&self, bracket: u8) -> Option<u32> {
        if self.cursor == NOWHERE {
            return None;
        }
        let rest = self.bytes.get(self.cursor as usize..)?;
        let i = rest.iter().position(|b| !between_tokens(*b))?;
        (rest[i] == bracket).then_some(self.cursor + i as u32)
    }

    /// A number, `true`, `false` or `null` was read: the cursor moves past it (its letters,
    /// digits, signs and points; none of them ends a token or separates two).
    fn past_scalar(&mut self) {
        let Some(rest) = self.bytes.get(self.cursor as usize..) else {
            return; // not known: stays so
        };
        let sep = rest
            .iter()
            .position(|b| !between_tokens(*b))
            .unwrap_or(rest.len());
        let token = rest[sep..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            .unwrap_or(rest.len() - sep);
        self.cursor += (sep + token) as u32;
    }

    /// A container opens with `bracket`: where its text starts (`NOWHERE`: not known).
    fn open(&mut self, bracket: u8) -> u32 {
        let start = self.next_bracket(bracket);
        self.cursor = start.map_or(NOWHERE, |s| s + 1);
        start.unwrap_or(NOWHERE)
    }

    /// The container opened at `start` closes with `bracket`: its text's span.
    fn close(&mut self, start: u32, bracket: u8) -> Span {
        let end = self.next_bracket(bracket);
        self.cursor = end.map_or(NOWHERE, |e| e + 1);
        match end {
            Some(e) if start != NOWHERE => Span { start, end: e + 1 },
            _ => Span::UNKNOWN,
        }
    }

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
            // Past the closing quote.
            self.cursor = start + s.len() as u32 + 1;
            return Kind::Str {
                side: false,
                start,
                end: start + s.len() as u32,
            };
        }
        self.cursor = NOWHERE;
        let start = self.side.len() as u32;
        self.side.push_str(s);
        let end = self.side.len() as u32;
        // Separated, so a search of the whole buffer sees each string's edges as a line's.
        self.side.push('\n');
        Kind::Str {
            side: true,
            start,
            end,
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
        // The key after entry `i`'s value.
        let after = |i: usize| self.tape.get(i + 1).map_or(end, |v| v.next as usize);
        if count > SMALL_OBJECT {
            let mut seen = HashSet::with_capacity(count);
            let mut i = at + 1;
            while i < end {
                if !seen.insert(self.key_bytes(i)) {
                    return true;
                }
                i = after(i);
            }
            return false;
        }
        // A small object's keys pair by pair, read from the tape (an agent's conversation has
        // thousands of objects, nearly all of two to four keys: no allocation, no copy).
        let mut i = after(at + 1);
        while i < end {
            let k = self.key_bytes(i);
            let mut j = at + 1;
            while j < i {
                if self.key_bytes(j) == k {
                    return true;
                }
                j = after(j);
            }
            i = after(i);
        }
        false
    }
}

/// Containers nested deeper than this are left to serde_json's visitor (which refuses past 128).
const SCAN_DEPTH: usize = 100;

/// The tape read straight from the text with a [`Skim`]: serde_json's visitor (a [`Slot`] per
/// value, each string parsed and identified through it) cost ~40 instructions per byte of an
/// agent's declared tools. Strings are found eight bytes at a time and kept as ranges, numbers
/// read in place, hashes fed as the visitor feeds them. It gives up ([`Bail`]) on what it leaves
/// to the visitor — nesting past [`SCAN_DEPTH`], a lone surrogate, anything not JSON — which then
/// builds the same tape or the error. Containers' spans are always known here (the visitor loses
/// them after an escaped string or a number).
impl Builder<'_> {
    fn scan_value(
        &mut self,
        s: &mut Skim<'_>,
        feed: Option<&mut Feed>,
        root: bool,
        depth: usize,
    ) -> Skimmed<()> {
        let kind = match s.peek()? {
            b'"' => return self.scan_string(s, feed),
            b'{' => return self.scan_object(s, feed, root, depth),
            b'[' => return self.scan_array(s, feed, depth, None),
            b'n' => {
                s.literal(b"null")?;
                Kind::Null
            }
            b't' => {
                s.literal(b"true")?;
                Kind::Bool(true)
            }
            b'f' => {
                s.literal(b"false")?;
                Kind::Bool(false)
            }
            b'-' | b'0'..=b'9' => {
                let start = s.pos();
                s.number()?;
                number_kind(self.bytes.get(start..s.pos()).ok_or(Bail)?)?
            }
            _ => return Err(Bail),
        };
        self.push(kind);
        if let Some(f) = feed {
            f.scalar(kind);
        }
        Ok(())
    }

    /// A string at the reader (a value or a key): a range of the text, or unescaped into the
    /// side buffer, as [`Builder::string`] keeps them.
    fn scan_string(&mut self, s: &mut Skim<'_>, feed: Option<&mut Feed>) -> Skimmed<()> {
        let start = s.pos() + 1;
        let (raw, escaped) = s.raw_string()?;
        let kind = if escaped {
            // The whole text is UTF-8 and the string's quotes are ASCII: so is the slice.
            let text = unescape(std::str::from_utf8(raw).map_err(|_| Bail)?)?;
            let start = u32::try_from(self.side.len()).map_err(|_| Bail)?;
            self.side.push_str(&text);
            let end = start + text.len() as u32;
            self.side.push('\n');
            if let Some(f) = feed {
                f.str(&text);
            }
            Kind::Str {
                side: true,
                start,
                end,
            }
        } else {
            if let Some(f) = feed {
                f.bytes(raw);
            }
            Kind::Str {
                side: false,
                start: start as u32,
                end: (start + raw.len()) as u32,
            }
        };
        self.push(kind);
        Ok(())
    }

    /// An array; `key` (its raw text's range) for a root member's, which may copy its leading
    /// items from a recent body's ([`recent`]) and is kept for the next.
    fn scan_array(
        &mut self,
        s: &mut Skim<'_>,
        mut feed: Option<&mut Feed>,
        depth: usize,
        key: Option<(u32, u32)>,
    ) -> Skimmed<()> {
        if depth == SCAN_DEPTH {
            return Err(Bail);
        }
        let start = s.pos() as u32;
        s.bump();
        let at = self.push(Kind::Array {
            count: 0,
            text: Span::UNKNOWN,
        });
        if let Some(f) = feed.as_deref_mut() {
            f.array();
        }
        let side_start = self.side.len() as u32;
        let mut count = 0u32;
        let mut copied = None;
        let mut copied_count = 0u32;
        let mut replaces = None;
        if let Some((k0, k1)) = key {
            let key_text = self.bytes.get(k0 as usize..k1 as usize).ok_or(Bail)?;
            let rest = self.bytes.get(start as usize..).ok_or(Bail)?;
            if let Some(i) = self.recent.lookup(key_text, rest) {
                let fragment = self.recent.get(i);
                // A hashing parse needs the hash state a fragment kept only when its parse
                // hashed too; without it the array is read again, and kept in its place.
                let state = match (feed.as_deref_mut(), fragment.feed()) {
                    (Some(f), Some(state)) => Some(Some((f, state))),
                    (Some(_), None) => None,
                    (None, _) => Some(None),
                };
                if let Some(state) = state {
                    if let Some((f, kept)) = state {
                        *f = kept.clone();
                    }
                    fragment.copy_into(&mut self.tape, &mut self.side, start, at as u32);
                    count = fragment.count();
                    copied_count = count;
                    s.advance(fragment.len() - 1);
                    copied = Some(i);
                }
                replaces = Some(i);
            }
        }
        // After copied items, the next token says whether more follow (anything else — a
        // number's next digit — is not the array the fragment was: the visitor reads it).
        let mut more = match (copied, s.peek()?) {
            (_, b']') => {
                s.bump();
                false
            }
            (None, _) => true,
            (Some(_), b',') => {
                s.bump();
                true
            }
            (Some(_), _) => return Err(Bail),
        };
        let mut items_end = s.pos() as u32;
        while more {
            self.scan_value(s, feed.as_deref_mut(), false, depth + 1)?;
            count += 1;
            items_end = s.pos() as u32;
            match s.peek()? {
                b',' => s.bump(),
                b']' => {
                    s.bump();
                    more = false;
                }
                _ => return Err(Bail),
            }
        }
        let text = Span {
            start,
            end: s.pos() as u32,
        };
        let next = self.tape.len() as u32;
        self.tape[at] = Entry {
            kind: Kind::Array { count, text },
            next,
        };
        // A body that only repeated a fragment leaves nothing new to keep; nor does an array
        // whose last item is a number or a literal (a later body's could go on past it, and
        // then every body starting so would be left to the visitor).
        let closed = items_end
            .checked_sub(1)
            .and_then(|i| self.bytes.get(i as usize))
            .is_some_and(|b| matches!(b, b'"' | b'}' | b']'));
        if let Some(key) = key {
            if count > copied_count && closed && (items_end - start) as usize >= recent::MIN_BYTES {
                self.found.push(recent::Found {
                    key,
                    text: (start, items_end),
                    tape: (at as u32, next),
                    side: (side_start, self.side.len() as u32),
                    count,
                    feed: feed.as_deref().cloned(),
                    extends: replaces,
                });
            }
        }
        if let Some(f) = feed {
            f.array_end(count);
        }
        Ok(())
    }

    fn scan_object(
        &mut self,
        s: &mut Skim<'_>,
        feed: Option<&mut Feed>,
        root: bool,
        depth: usize,
    ) -> Skimmed<()> {
        if depth == SCAN_DEPTH {
            return Err(Bail);
        }
        let start = s.pos() as u32;
        s.bump();
        let at = self.push(Kind::Object {
            count: 0,
            text: Span::UNKNOWN,
        });
        let members = root && self.hashes.is_some();
        let mut count = 0u32;
        let mut sum = 0u64;
        if s.peek()? == b'}' {
            s.bump();
        } else {
            loop {
                if s.peek()? != b'"' {
                    return Err(Bail);
                }
                // As the visitor: inside a hashed value each entry has its own hash, summed; a
                // root member's value is hashed alone.
                let mut entry = feed.is_some().then(Feed::new);
                let key_start = s.pos() as u32 + 1;
                self.scan_string(s, entry.as_mut())?;
                let key = (key_start, s.pos() as u32 - 1);
                s.eat(b':')?;
                let value_at = self.tape.len() as u32;
                let mut member = members.then(Feed::new);
                let value_feed = entry.as_mut().or(member.as_mut());
                if root && s.peek()? == b'[' {
                    self.scan_array(s, value_feed, depth + 1, Some(key))?;
                } else {
                    self.scan_value(s, value_feed, false, depth + 1)?;
                }
                if let Some(e) = entry {
                    sum = sum.wrapping_add(e.finish());
                }
                if let (Some(m), Some(hashes)) = (member, self.hashes.as_mut()) {
                    hashes.push((value_at, m.finish()));
                }
                count += 1;
                match s.peek()? {
                    b',' => s.bump(),
                    b'}' => {
                        s.bump();
                        break;
                    }
                    _ => return Err(Bail),
                }
            }
        }
        let text = Span {
            start,
            end: s.pos() as u32,
        };
        let next = self.tape.len() as u32;
        self.tape[at] = Entry {
            kind: Kind::Object { count, text },
            next,
        };
        if !self.repeats && self.repeats_a_key(at, count as usize) {
            self.repeats = true;
        }
        if let Some(f) = feed {
            f.object(count, sum);
        }
        Ok(())
    }
}

/// A number token (its grammar checked) as serde_json's `deserialize_any` reads it: a
/// non-negative integer that fits as `U64`, a negative one as `I64`, anything else (fractions,
/// exponents, `-0`, overflows) as serde_json's own reading of the token says.
fn number_kind(token: &[u8]) -> Skimmed<Kind> {
    if token.len() <= 19 && token.iter().all(u8::is_ascii_digit) {
        let v = token.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Ok(Kind::U64(v));
    }
    let n: serde_json::Number = std::str::from_utf8(token)
        .map_err(|_| Bail)?
        .parse()
        .map_err(|_| Bail)?;
    if let Some(v) = n.as_u64() {
        Ok(Kind::U64(v))
    } else if let Some(v) = n.as_i64() {
        Ok(Kind::I64(v))
    } else {
        n.as_f64().map(Kind::F64).ok_or(Bail)
    }
}

/// Reads one value onto the tape, and into `feed` when the parse hashes.
struct Slot<'a, 'b, 'h> {
    b: &'a mut Builder<'b>,
    feed: Option<&'h mut Feed>,
    /// The document's root: its members are hashed on their own ([`Doc::parse_hashing`]).
    root: bool,
}

impl Slot<'_, '_, '_> {
    #[inline]
    fn scalar(self, kind: Kind) {
        self.b.push(kind);
        self.b.past_scalar();
        if let Some(f) = self.feed {
            f.scalar(kind);
        }
    }

    #[inline]
    fn string(self, v: &str, borrowed: bool) {
        let k = self.b.string(v, borrowed);
        self.b.push(k);
        if let Some(f) = self.feed {
            f.str(v);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Slot<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Slot<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.scalar(Kind::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.scalar(Kind::Bool(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.scalar(Kind::U64(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.scalar(Kind::I64(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.scalar(Kind::F64(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.string(v, true);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.string(v, false);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Slot { b, mut feed, .. } = self;
        let start = b.open(b'[');
        let at = b.push(Kind::Array {
            count: 0,
            text: Span::UNKNOWN,
        });
        if let Some(f) = feed.as_deref_mut() {
            f.array();
        }
        let mut count = 0u32;
        while seq
            .next_element_seed(Slot {
                b: &mut *b,
                feed: feed.as_deref_mut(),
                root: false,
            })?
            .is_some()
        {
            count += 1;
        }
        let next = b.tape.len() as u32;
        let text = b.close(start, b']');
        b.tape[at] = Entry {
            kind: Kind::Array { count, text },
            next,
        };
        if let Some(f) = feed {
            f.array_end(count);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Slot { b, feed, root } = self;
        let start = b.open(b'{');
        let at = b.push(Kind::Object {
            count: 0,
            text: Span::UNKNOWN,
        });
        let members = root && b.hashes.is_some();
        let mut count = 0u32;
        let mut sum = 0u64;
        loop {
            // Inside a hashed value each entry (key and value) has its own hash, summed;
            // a root member's value is hashed alone.
            let mut entry = feed.is_some().then(Feed::new);
            let key = Slot {
                b: &mut *b,
                feed: entry.as_mut(),
                root: false,
            };
            if map.next_key_seed(key)?.is_none() {
                break;
            }
            let value_at = b.tape.len() as u32;
            let mut member = members.then(Feed::new);
            map.next_value_seed(Slot {
                b: &mut *b,
                feed: entry.as_mut().or(member.as_mut()),
                root: false,
            })?;
            if let Some(e) = entry {
                sum = sum.wrapping_add(e.finish());
            }
            if let (Some(m), Some(hashes)) = (member, b.hashes.as_mut()) {
                hashes.push((value_at, m.finish()));
            }
            count += 1;
        }
        let next = b.tape.len() as u32;
        let text = b.close(start, b'}');
        b.tape[at] = Entry {
            kind: Kind::Object { count, text },
            next,
        };
        if !b.repeats && b.repeats_a_key(at, count as usize) {
            b.repeats = true;
        }
        if let Some(f) = feed {
            f.object(count, sum);
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

    /// The document this node belongs to.
    pub fn document(self) -> &'d Doc {
        self.doc
    }

    /// This array's or object's JSON text as it lies in the body (`None`: not a container,
    /// or one the parse could not place — right after a number or an escaped string).
    pub fn raw_json(self) -> Option<&'d str> {
        let (Kind::Array { text, .. } | Kind::Object { text, .. }) = self.kind() else {
            return None;
        };
        if text.start == NOWHERE {
            return None;
        }
        self.doc.text.get(text.start as usize..text.end as usize)
    }

    /// A hash of this value's content: equal values hash equal, whatever their key order and
    /// whitespace. Read from the parse for the root's members of a [`Doc::parse_hashing`]
    /// document, else computed by a walk of the subtree.
    pub fn content_hash(self) -> u64 {
        if let Some(&(_, h)) = self
            .doc
            .hashes
            .iter()
            .find(|(at, _)| *at as usize == self.at)
        {
            return h;
        }
        let mut f = Feed::new();
        self.feed(&mut f);
        f.finish()
    }

    /// This subtree into `f`, as the parse feeds it.
    fn feed(self, f: &mut Feed) {
        match self.kind() {
            Kind::Str { .. } => f.str(self.as_str().unwrap_or("")),
            Kind::Array { count: n, .. } => {
                f.array();
                self.items_or_none().for_each(|x| x.feed(f));
                f.array_end(n);
            }
            Kind::Object { count: n, .. } => {
                let sum = self.entries_or_none().fold(0u64, |acc, (k, x)| {
                    let mut e = Feed::new();
                    e.str(k);
                    x.feed(&mut e);
                    acc.wrapping_add(e.finish())
                });
                f.object(n, sum);
            }
            k => f.scalar(k),
        }
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
        matches!(self.kind(), Kind::Object { .. })
    }

    /// Whether this is an array.
    pub fn is_array(self) -> bool {
        matches!(self.kind(), Kind::Array { .. })
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
            Kind::Array { count: n, .. } => n as usize,
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
            Kind::Object { count: n, .. } => n as usize,
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
            Kind::Array { .. } => {
                let items = self.items_or_none();
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&item)?;
                }
                seq.end()
            }
            Kind::Object { .. } => {
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
            Kind::Array { .. } => {
                let mut seq = SeqDe(self.items_or_none());
                let out = v.visit_seq(&mut seq)?;
                match seq.0.len() {
                    0 => Ok(out),
                    _ => Err(de::Error::custom("fewer elements in array")),
                }
            }
            Kind::Object { .. } => v.visit_map(MapDe {
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

    /// What a build left: the tape, the side buffer, the root members' hashes, whether a key
    /// repeated.
    type Built = (Vec<Entry>, String, Vec<(u32, u64)>, bool);

    fn builder(text: &str, hashing: bool) -> Builder<'_> {
        Builder {
            bytes: text.as_bytes(),
            tape: Vec::new(),
            side: String::new(),
            repeats: false,
            hashes: hashing.then(Vec::new),
            cursor: 0,
            recent: recent::Recent::default(),
            found: Vec::new(),
        }
    }

    /// The tape serde_json's visitor builds.
    fn visited(text: &str, hashing: bool) -> Option<Built> {
        let mut b = builder(text, hashing);
        Doc::visit_into(&mut b, text).ok()?;
        Some((b.tape, b.side, b.hashes.unwrap_or_default(), b.repeats))
    }

    /// The tape the scan builds, where it does not step aside.
    fn scanned(text: &str, hashing: bool) -> Option<Built> {
        let mut b = builder(text, hashing);
        let mut s = Skim::new(text.as_bytes());
        let ok = b.scan_value(&mut s, None, true, 0).is_ok() && s.at_end();
        ok.then(|| (b.tape, b.side, b.hashes.unwrap_or_default(), b.repeats))
    }

    /// Whether two tapes hold the same nodes: numbers to the bit, spans equal wherever the
    /// visitor knew them (the scan always does).
    fn same_tape(scan: &[Entry], visit: &[Entry]) -> bool {
        let span = |s: Span, v: Span| v.start == NOWHERE || (s.start, s.end) == (v.start, v.end);
        scan.len() == visit.len()
            && scan.iter().zip(visit).all(|(s, v)| {
                s.next == v.next
                    && match (s.kind, v.kind) {
                        (Kind::Null, Kind::Null) => true,
                        (Kind::Bool(a), Kind::Bool(b)) => a == b,
                        (Kind::U64(a), Kind::U64(b)) => a == b,
                        (Kind::I64(a), Kind::I64(b)) => a == b,
                        (Kind::F64(a), Kind::F64(b)) => a.to_bits() == b.to_bits(),
                        (
                            Kind::Str { side, start, end },
                            Kind::Str {
                                side: s2,
                                start: a2,
                                end: e2,
                            },
                        ) => (side, start, end) == (s2, a2, e2),
                        (
                            Kind::Array { count, text },
                            Kind::Array {
                                count: c2,
                                text: t2,
                            },
                        )
                        | (
                            Kind::Object { count, text },
                            Kind::Object {
                                count: c2,
                                text: t2,
                            },
                        ) => count == c2 && span(text, t2),
                        _ => false,
                    }
            })
    }

    /// The scan either steps aside or builds exactly the visitor's document.
    fn agrees(text: &str) -> Result<bool, TestCaseError> {
        for hashing in [false, true] {
            let Some(scan) = scanned(text, hashing) else {
                return Ok(false);
            };
            let visit = visited(text, hashing);
            prop_assert!(
                visit.is_some(),
                "the scan accepted what serde refuses: {text:?}"
            );
            let visit = visit.unwrap_or_default();
            prop_assert!(same_tape(&scan.0, &visit.0), "tapes differ: {text:?}");
            prop_assert_eq!(&scan.1, &visit.1, "side buffers differ: {:?}", text);
            prop_assert_eq!(&scan.2, &visit.2, "hashes differ: {:?}", text);
            prop_assert_eq!(scan.3, visit.3, "repeats differ: {:?}", text);
        }
        Ok(true)
    }

    /// JSON values with the strings, numbers and nesting request bodies carry.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            Just(json!(-0.0)),
            "[a-z \"\\/\n\t\u{1}\u{e9}\u{1F600}]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-e\"\u{e9}]{0,3}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn the_scan_builds_the_visitors_document() {
        let texts = [
            r#"{"model":"m","n":-3,"f":1.5,"e":1e3,"z":-0,"zf":-0.0,"big":18446744073709551615,"bigger":18446744073709551616,"min":-9223372036854775808,"under":-9223372036854775809,"ok":true,"nil":null,"list":[1,"two",{"three":3}]}"#,
            r#" { "a" : [ "x\"y" , 1 , { } , [ ] ] , "b\u00e9" : "\ud83d\ude00" } "#,
            r#"[{"a":1,"a":2}]"#,
            // Keys of one length, different; a key repeated through an escape.
            r#"{"aYXcb":1,"aZXcb":2,"b\u00e9":3,"bé":4}"#,
            "\"root\"",
            "7",
        ];
        for text in texts {
            assert!(matches!(agrees(text), Ok(true)), "{text}");
        }
        for refused in [
            "{\"a\":1,}",
            "[1 2]",
            "\"\\ud800\"",
            "1e400",
            "{\"a\":01}",
            "",
        ] {
            assert!(scanned(refused, true).is_none(), "{refused}");
        }
        let deep = format!(
            "{}{}",
            "[".repeat(SCAN_DEPTH + 1),
            "]".repeat(SCAN_DEPTH + 1)
        );
        assert!(scanned(&deep, false).is_none(), "past the scan's depth");
        assert!(
            Doc::parse(Bytes::from(deep)).is_ok(),
            "the visitor reads it"
        );
    }

    /// A cached parse of `text` (this thread's recent arrays in play) against the scan or the
    /// visitor without them.
    fn cached_agrees(text: &str) -> Result<(), TestCaseError> {
        for hashing in [false, true] {
            let d = Doc::parse_with(Bytes::from(text.to_owned()), hashing);
            let want = scanned(text, hashing).or_else(|| visited(text, hashing));
            let (Ok(d), Some(want)) = (d, want) else {
                prop_assert!(false, "one parse refused what the other read: {text:?}");
                unreachable!();
            };
            prop_assert!(same_tape(&d.tape, &want.0), "tapes differ: {text:?}");
            prop_assert_eq!(&d.side, &want.1, "side buffers differ: {:?}", text);
            prop_assert_eq!(&d.hashes, &want.2, "hashes differ: {:?}", text);
        }
        Ok(())
    }

    /// An agent's body: 20 tools (escaped strings among them) and `turns` turns after a system
    /// prompt, then `last` (if any), members in one of two orders.
    fn agent_body(turns: usize, tools_first: bool, last: &str) -> String {
        let tools: Vec<String> = (1..=20)
            .map(|i| format!(r#"{{"type":"function","function":{{"name":"tool_{i}","description":"Tool \"{i}\" \u00e9","parameters":{{"type":"object","properties":{{"id":{{"type":"string"}},"limit":{{"type":"integer","minimum":1,"maximum":100}}}},"required":["id"]}}}}}}"#))
            .collect();
        let mut msgs =
            vec![r#"{"role":"system","content":"You are a helpful assistant."}"#.to_owned()];
        msgs.extend((0..turns).map(|t| format!(r#"{{"role":"user","content":"Step {t}: look up the order status for customer {t}, and what changed since."}}"#)));
        if !last.is_empty() {
            msgs.push(last.to_owned());
        }
        let tools = format!(r#""tools":[{}]"#, tools.join(","));
        let msgs = format!(r#""messages": [ {} ]"#, msgs.join(" , "));
        match tools_first {
            true => format!(
                r#"{{"model":"gpt-4o-mini",{tools},"max_tokens":64,{msgs},"stream":false}}"#
            ),
            false => format!(r#"{{ "stream":true, {msgs}, "model":"gpt-4o", {tools} }}"#),
        }
    }

    #[test]
    fn recent_arrays_are_copied_as_a_scan_reads_them() {
        recent::forget();
        let first = agent_body(10, true, "");
        cached_agrees(&first).unwrap();
        let mut kept = recent::kept();
        kept.sort();
        assert_eq!(kept.len(), 2, "tools and messages kept: {kept:?}");
        assert_eq!(kept[0].0, "messages");
        assert_eq!(kept[1].0, "tools");
        // The same body again: both arrays copied where they were.
        cached_agrees(&first).unwrap();
        assert_eq!(recent::kept().len(), 2);
        // The same tools, the conversation grown, members moved: the tools are copied (not kept
        // again), the grown conversation replaces the one it extended.
        let grown = agent_body(14, false, "");
        cached_agrees(&grown).unwrap();
        let mut now = recent::kept();
        now.sort();
        assert_eq!(now.len(), 2, "{now:?}");
        assert!(now[0].1 > kept[0].1, "the grown conversation kept: {now:?}");
        assert_eq!(now[1], kept[1], "the tools not kept twice");
        // An array ending with a number is not kept (a later body's could go on past it and
        // leave every such body to the visitor): the conversation kept before stays.
        cached_agrees(&agent_body(14, false, "1")).unwrap();
        let mut after = recent::kept();
        after.sort();
        assert_eq!(after, now);
        let other = agent_body(14, false, "17");
        cached_agrees(&other).unwrap();
        let d = Doc::parse(Bytes::from(other.clone())).unwrap();
        assert_eq!(d.to_value(), serde_json::from_str::<Value>(&other).unwrap());
        // A conversation that went another way, and bodies that are not JSON after a kept
        // prefix, read as without it.
        cached_agrees(&agent_body(9, true, r#"{"role":"user","content":"else"}"#)).unwrap();
        let broken = agent_body(14, false, "1,");
        assert!(Doc::parse(Bytes::from(broken.replace("1, ]", "1, ,]"))).is_err());
        assert!(Doc::parse(Bytes::from(grown[..grown.len() - 30].to_owned())).is_err());
    }

    #[test]
    fn recent_arrays_stay_within_their_bounds() {
        recent::forget();
        for n in 0..40 {
            let body = agent_body(n, n % 2 == 0, "{}");
            cached_agrees(&body).unwrap();
        }
        let kept = recent::kept();
        assert!(kept.len() <= 16, "{}", kept.len());
        // An array past the bytes bound is not kept; its body's smaller tools are.
        recent::forget();
        let big = agent_body(40_000, true, "{}");
        assert!(big.len() > 4 << 20);
        Doc::parse(Bytes::from(big)).unwrap();
        let kept = recent::kept();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].0, "tools");
    }

    proptest! {
        #[test]
        fn recent_arrays_read_as_without_them(
            items in prop::collection::vec(any_json(), 1..8),
            cuts in prop::collection::vec((0..8usize, any::<bool>(), any::<bool>()), 1..5),
        ) {
            recent::forget();
            // A kept prefix needs a kilobyte.
            let pad = Value::from("p".repeat(1100));
            for (n, pretty, first) in cuts {
                let mut list = vec![pad.clone()];
                list.extend(items.iter().take(n).cloned());
                let v = match first {
                    true => json!({"messages": list, "model": "m", "tools": [pad.clone()]}),
                    false => json!({"n": 1, "tools": [pad.clone(), 2], "messages": list}),
                };
                let text = match pretty {
                    true => serde_json::to_string_pretty(&v).unwrap_or_default(),
                    false => serde_json::to_string(&v).unwrap_or_default(),
                };
                cached_agrees(&text)?;
            }
        }
    }

    proptest! {
        #[test]
        fn the_scan_agrees_with_the_visitor(v in any_json(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                serde_json::to_string(&v).unwrap_or_default()
            };
            prop_assert!(agrees(&text)?, "the scan stepped aside on {text:?}");
        }

        #[test]
        fn the_scan_agrees_on_damaged_text(
            v in any_json(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, proptest::sample::select(b"{}[],:\"\\ 019-.eEnul".to_vec())), 1..4),
        ) {
            let mut text = serde_json::to_string(&v).unwrap_or_default().into_bytes();
            for (at, op, byte) in edits {
                let at = if text.is_empty() { 0 } else { at.index(text.len()) };
                match op {
                    0 if at < text.len() => text[at] = byte,
                    1 => text.insert(at.min(text.len()), byte),
                    _ if at < text.len() => { text.remove(at); }
                    _ => {}
                }
            }
            // Edits can split a character: such a body is no text, and no document.
            if let Ok(text) = String::from_utf8(text) {
                agrees(&text)?;
            }
        }
    }

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
        // The strings with escapes, unescaped and each ended by a newline; the rest lie in
        // the text.
        assert_eq!(d.unescaped(), "a\"b\nline\nbreak é 😀\nkey\n");
        assert!(d.text().contains(r#""héllo 😀""#));
    }

    #[test]
    fn content_hashes_ignore_key_order_and_whitespace_but_not_content() {
        let hashed = |t: &str| Doc::parse_hashing(Bytes::from(t.to_string())).unwrap();
        let a = hashed(r#"{"m":[{"role":"user","content":"hi"},1,-2,0.5,null,true]}"#);
        let b = hashed(
            "{ \"m\" : [ {\"content\":\"hi\",\n \"role\":\"user\"}, 1, -2, 0.5, null, true ] }",
        );
        let walked = doc(r#"{"m":[{"content":"hi","role":"user"},1,-2,0.5,null,true]}"#);
        let m = |d: &Doc| d.root().get("m").map(Node::content_hash);
        assert_eq!(m(&a), m(&b));
        assert_eq!(m(&a), m(&walked), "read at parse or walked: the same");
        for other in [
            r#"{"m":[{"role":"user","content":"hi!"},1,-2,0.5,null,true]}"#,
            r#"{"m":[{"role":"user","content":"hi"},1,-2,0.5,null]}"#,
            r#"{"m":[{"role":"user","content":"hi"},[1,-2],0.5,null,true]}"#,
            r#"{"m":[{"role":"user","contents":"hi"},1,-2,0.5,null,true]}"#,
            r#"{"m":[{"role":"user","content":"hi"},1,2,0.5,null,true]}"#,
            r#"{"m":[{"role":"user","content":"hi"},1,-2,0.5,false,true]}"#,
        ] {
            assert_ne!(m(&hashed(other)), m(&a), "{other}");
            assert_ne!(m(&doc(other)), m(&a), "{other}");
        }
        // Two strings are not their concatenation.
        assert_ne!(
            m(&doc(r#"{"m":["ab","c"]}"#)),
            m(&doc(r#"{"m":["a","bc"]}"#))
        );
    }

    /// Every container of `n` whose text the parse placed: that text reads as the container.
    /// Returns how many were placed.
    fn placed_texts_read_as_their_nodes(n: Node<'_>) -> usize {
        let own = match n.raw_json() {
            Some(t) => {
                let v: Value = serde_json::from_str(t).unwrap();
                assert_eq!(v, n.to_value(), "{t}");
                1
            }
            None => 0,
        };
        let inner: usize = match (n.items(), n.entries()) {
            (Some(items), _) => items.map(placed_texts_read_as_their_nodes).sum(),
            (_, Some(entries)) => entries
                .map(|(_, x)| placed_texts_read_as_their_nodes(x))
                .sum(),
            _ => 0,
        };
        own + inner
    }

    #[test]
    fn containers_know_their_text() {
        let text = r#" {"model":"m","tools":[{"type":"function","function":{"name":"a","parameters":{ "type" : "object", "properties" : {} }}}],
            "n": [1, {"after":"a number"}], "e": ["x\ty", {"after":"an escape"}, []], "z": {"k": [true]} } "#;
        let d = doc(text);
        let r = d.root();
        assert_eq!(r.raw_json(), Some(text.trim()));
        let tools = r.get("tools").unwrap();
        let params = tools
            .items()
            .unwrap()
            .next()
            .unwrap()
            .get("function")
            .unwrap()
            .get("parameters")
            .unwrap();
        assert_eq!(
            params.raw_json(),
            Some(r#"{ "type" : "object", "properties" : {} }"#)
        );
        assert_eq!(params.get("properties").unwrap().raw_json(), Some("{}"));
        // The scan knows every container's place (serde_json's visitor, its fallback, loses it
        // right after an escaped string). Numbers and literals are stepped over.
        let after = |k: &str, i: usize| r.get(k).unwrap().items().unwrap().nth(i).unwrap();
        assert_eq!(after("n", 1).raw_json(), Some(r#"{"after":"a number"}"#));
        assert_eq!(
            r.get("n").unwrap().raw_json(),
            Some(r#"[1, {"after":"a number"}]"#)
        );
        assert_eq!(after("e", 1).raw_json(), Some(r#"{"after":"an escape"}"#));
        assert_eq!(after("e", 2).raw_json(), Some("[]"));
        assert_eq!(
            r.get("e").unwrap().raw_json(),
            Some(r#"["x\ty", {"after":"an escape"}, []]"#),
            "opened before the escape"
        );
        assert_eq!(r.get("z").unwrap().raw_json(), Some(r#"{"k": [true]}"#));
        assert_eq!(
            r.get("z").unwrap().get("k").unwrap().raw_json(),
            Some("[true]")
        );
        assert_eq!(r.get("model").unwrap().raw_json(), None, "not a container");
        assert!(placed_texts_read_as_their_nodes(r) > 5);
    }

    /// Every string of `v` (keys too) lies verbatim in the document's text between quotes, or
    /// in its unescaped strings ended by a newline.
    fn strings_lie_in_text_or_unescaped(d: &Doc, v: &Value) -> bool {
        let here = |s: &str| {
            d.text().contains(&format!("\"{s}\"")) || d.unescaped().contains(&format!("{s}\n"))
        };
        match v {
            Value::String(s) => here(s),
            Value::Array(a) => a.iter().all(|x| strings_lie_in_text_or_unescaped(d, x)),
            Value::Object(o) => o
                .iter()
                .all(|(k, x)| here(k) && strings_lie_in_text_or_unescaped(d, x)),
            _ => true,
        }
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
                prop_assert!(strings_lie_in_text_or_unescaped(&d, &want));
                // The root's members hashed at parse: as a walk hashes them.
                let h = Doc::parse_hashing(Bytes::from(text.clone())).unwrap();
                if let (Some(read), Some(walked)) = (h.root().entries(), d.root().entries()) {
                    for ((k, x), (_, y)) in read.zip(walked) {
                        prop_assert_eq!(x.content_hash(), y.content_hash(), "{}", k);
                    }
                }
                prop_assert_eq!(h.root().content_hash(), d.root().content_hash());
                placed_texts_read_as_their_nodes(d.root());
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
