//! The root arrays of recent documents (an agent's declared tools, its conversation so far),
//! kept per thread, so that the next body repeating them copies their nodes instead of reading
//! them again.
//!
//! An agent sends the same tools on every call and its conversation grows at the end: reading
//! 20 declared tools cost ~175 k instructions a request, two thirds of a bare proxy's work, and
//! a 256 KiB conversation ~0.1 ms, nearly all of it text the previous request already had. A
//! [`Fragment`] is such an array's text up to the end of its last item, with the tape nodes,
//! unescaped strings and content-hash state its scan produced. A later body whose root member of
//! the same name starts with exactly that text holds exactly those items (a JSON value ends
//! where its text says, whatever follows it), so the builder copies them, shifting their offsets,
//! and scans only what follows: nothing for repeated tools, the new turns of a conversation.
//!
//! Bounded per thread by [`MAX_FRAGMENTS`] and [`MAX_BYTES`] (a fragment's own copy of its text,
//! nodes and strings: a slice of the body would keep the whole read buffer it came in alive);
//! the least recently used goes first. An array whose last item is a number or a literal is not
//! kept (a later body's may go on past it). Nothing here is exported: a document reads the same
//! with or without it (property tests hold it to that).

use std::cell::Cell;

use bytes::Bytes;

use super::tape::{Entry, Feed, Kind, Span};

/// Arrays shorter than this are scanned again (comparing costs about what scanning saves).
pub(super) const MIN_BYTES: usize = 1024;

/// Fragments kept per thread.
const MAX_FRAGMENTS: usize = 16;

/// Bytes kept per thread: the fragments' texts, nodes and unescaped strings.
const MAX_BYTES: usize = 4 << 20;

thread_local! {
    /// This thread's fragments: taken out for a parse ([`take`]) and put back after.
    static RECENT: Cell<Recent> = const { Cell::new(Recent::new()) };
}

/// This thread's fragments, for one parse (a parse inside it would find none).
pub(super) fn take() -> Recent {
    RECENT.with(Cell::take)
}

/// Give this thread's fragments back after a parse.
pub(super) fn give_back(recent: Recent) {
    RECENT.with(|r| r.set(recent));
}

/// One root array as a scan left it.
pub(super) struct Fragment {
    /// The root member's key, as its raw text.
    key: Bytes,
    /// The array's text from `[` to the end of its last item (no closing bracket).
    text: Bytes,
    /// Where `text` started in its body: the offset its nodes' text offsets are shifted from.
    text_at: u32,
    /// The items' nodes (not the array's own), as in their tape.
    nodes: Vec<Entry>,
    /// The array node's index in its tape: the base of the nodes' `next` indices.
    tape_at: u32,
    /// The items' unescaped strings, and where they started in their side buffer.
    side: String,
    side_at: u32,
    /// The items.
    count: u32,
    /// The member's content-hash state after the last item, when that parse hashed.
    feed: Option<Feed>,
    /// What the fragment keeps alive, for [`MAX_BYTES`].
    cost: usize,
    used: Cell<u64>,
}

/// A fragment's bytes to be made, from a finished scan of one root array.
pub(super) struct Found {
    /// The key's raw text: offsets in the body.
    pub key: (u32, u32),
    /// The array's `[` and the end of its last item.
    pub text: (u32, u32),
    /// The array node's index and the end of its subtree.
    pub tape: (u32, u32),
    /// The items' range of the side buffer.
    pub side: (u32, u32),
    pub count: u32,
    pub feed: Option<Feed>,
    /// The fragment this array extended (replaced by it).
    pub extends: Option<usize>,
}

/// A thread's fragments.
#[derive(Default)]
pub(super) struct Recent {
    fragments: Vec<Fragment>,
    bytes: usize,
    tick: Cell<u64>,
}

impl Recent {
    const fn new() -> Self {
        Self {
            fragments: Vec::new(),
            bytes: 0,
            tick: Cell::new(0),
        }
    }

    /// The longest fragment of root member `key` whose text `rest` (the text from the array's
    /// `[`) starts with.
    pub(super) fn lookup(&self, key: &[u8], rest: &[u8]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, f) in self.fragments.iter().enumerate() {
            if f.key.as_ref() != key
                || f.text.len() > rest.len()
                || best.is_some_and(|b| self.fragments[b].text.len() >= f.text.len())
            {
                continue;
            }
            // The last bytes first: a conversation that went another way differs at its end.
            let n = f.text.len();
            if rest[n - 1] == f.text[n - 1] && rest[..n] == f.text[..] {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            let t = self.tick.get() + 1;
            self.tick.set(t);
            self.fragments[b].used.set(t);
        }
        best
    }

    /// Fragment `i` (from [`Recent::lookup`]).
    pub(super) fn get(&self, i: usize) -> &Fragment {
        &self.fragments[i]
    }

    /// Keep what a scan of `body` found (its tape and side buffer as the scan left them).
    pub(super) fn keep(&mut self, body: &[u8], tape: &[Entry], side: &str, found: Vec<Found>) {
        // Replaced fragments first, from the highest index, so lower indices stay valid.
        let mut gone: Vec<usize> = found.iter().filter_map(|f| f.extends).collect();
        gone.sort_unstable();
        gone.dedup();
        for i in gone.into_iter().rev() {
            let f = self.fragments.swap_remove(i);
            self.bytes -= f.cost;
        }
        for f in found {
            let nodes = tape
                .get(f.tape.0 as usize + 1..f.tape.1 as usize)
                .unwrap_or(&[])
                .to_vec();
            let side = side.get(f.side.0 as usize..f.side.1 as usize).unwrap_or("");
            let (Some(key), Some(text)) = (
                body.get(f.key.0 as usize..f.key.1 as usize),
                body.get(f.text.0 as usize..f.text.1 as usize),
            ) else {
                continue;
            };
            let cost = key.len() + text.len() + nodes.len() * size_of::<Entry>() + side.len();
            if cost > MAX_BYTES {
                continue;
            }
            while self.fragments.len() == MAX_FRAGMENTS || self.bytes + cost > MAX_BYTES {
                let Some(oldest) =
                    (0..self.fragments.len()).min_by_key(|&i| self.fragments[i].used.get())
                else {
                    break;
                };
                let f = self.fragments.swap_remove(oldest);
                self.bytes -= f.cost;
            }
            let t = self.tick.get() + 1;
            self.tick.set(t);
            self.bytes += cost;
            self.fragments.push(Fragment {
                key: Bytes::copy_from_slice(key),
                text: Bytes::copy_from_slice(text),
                text_at: f.text.0,
                nodes,
                tape_at: f.tape.0,
                side: side.to_owned(),
                side_at: f.side.0,
                count: f.count,
                feed: f.feed,
                cost,
                used: Cell::new(t),
            });
        }
    }
}

impl Fragment {
    /// The text's length: where the scan resumes, from the array's `[`.
    pub(super) fn len(&self) -> usize {
        self.text.len()
    }

    /// The items.
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// The hash state after the last item (`None`: its parse did not hash).
    pub(super) fn feed(&self) -> Option<&Feed> {
        self.feed.as_ref()
    }

    /// Append the items' nodes to `tape` and their strings to `side`, for an array whose `[` is
    /// at `text_at` of its body and whose node is `tape[tape_at]`.
    pub(super) fn copy_into(
        &self,
        tape: &mut Vec<Entry>,
        side: &mut String,
        text_at: u32,
        tape_at: u32,
    ) {
        // Offsets move by the difference (wrapping: a fragment may lie later in its body).
        let text = text_at.wrapping_sub(self.text_at);
        let at = tape_at.wrapping_sub(self.tape_at);
        let side_at = (side.len() as u32).wrapping_sub(self.side_at);
        side.push_str(&self.side);
        if (text, at, side_at) == (0, 0, 0) {
            // At the same place as before (a conversation after the same few members, the same
            // body again): the nodes as they are.
            tape.extend_from_slice(&self.nodes);
            return;
        }
        let span = |s: Span| Span {
            start: s.start.wrapping_add(text),
            end: s.end.wrapping_add(text),
        };
        tape.extend(self.nodes.iter().map(|e| Entry {
            kind: match e.kind {
                Kind::Str { side, start, end } => {
                    let by = if side { side_at } else { text };
                    Kind::Str {
                        side,
                        start: start.wrapping_add(by),
                        end: end.wrapping_add(by),
                    }
                }
                Kind::Array { count, text } => Kind::Array {
                    count,
                    text: span(text),
                },
                Kind::Object { count, text } => Kind::Object {
                    count,
                    text: span(text),
                },
                k => k,
            },
            next: e.next.wrapping_add(at),
        }));
    }
}

/// This thread's fragments as (key, text length), and forgetting them: for tests.
#[cfg(test)]
pub(super) fn kept() -> Vec<(String, usize)> {
    let recent = take();
    let kept = recent
        .fragments
        .iter()
        .map(|f| (String::from_utf8_lossy(&f.key).into_owned(), f.text.len()))
        .collect();
    give_back(recent);
    kept
}

/// Forget this thread's fragments: for tests.
#[cfg(test)]
pub(super) fn forget() {
    drop(take());
}
