//! Token counts the proxy computes itself, where the provider states none: admission estimates
//! for budgets and the context-window guard, and usage for responses that carry no usage
//! (servers that ignore `include_usage`, streams cut short by a client that went away).
//!
//! Counting uses a real BPE tokenizer (OpenAI's `o200k_base`, via tiktoken-rs). Other providers'
//! tokenizers differ by a few percent; numbers from here are always marked `estimated`. Text
//! past [`EXACT_BYTES`] is extrapolated from the tokens-per-byte of the text before it, so the
//! cost of an estimate is bounded whatever the request size.
//!
//! A request's text is counted in chunks, and the chunks' counts are kept in a bounded cache
//! ([`ChunkCache`]): an agent resends its whole conversation on every call, so a call tokenizes
//! only the text that is new (see [`count_request`]).

use std::hash::BuildHasher;
use std::sync::{Mutex, OnceLock};

use tiktoken_rs::CoreBPE;

/// Bytes of text tokenized exactly; the rest is extrapolated (about 20 µs per KiB, so an
/// estimate costs at most a few hundred microseconds however large the request).
pub const EXACT_BYTES: usize = 16 * 1024;
/// Tokens counted for each image, audio or file part (their bytes are not text).
pub const MEDIA_PART_TOKENS: u64 = 1_000;
/// Framing tokens per chat message (role and separators), as OpenAI documents for its models.
pub const PER_MESSAGE_TOKENS: u64 = 3;
/// Framing tokens that prime the reply.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

fn bpe() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// Load the tokenizer now, off the runtime's workers: loading takes ~0.1 s idle and several
/// times that under load, and done lazily it would stall the first near-limit call and every
/// request queued behind it on that worker — on every sidecar of a fleet at the same moment.
pub async fn warm() {
    let started = std::time::Instant::now();
    if tokio::task::spawn_blocking(|| {
        bpe();
    })
    .await
    .is_ok()
    {
        tracing::info!(
            load_ms = started.elapsed().as_secs_f64() * 1e3,
            "tokenizer loaded"
        );
    }
}

/// Tokens in `text` (exact up to [`EXACT_BYTES`], extrapolated past it).
pub fn count(text: &str) -> u64 {
    count_head(text, |head| bpe().encode_ordinary(head).len() as u64)
}

/// [`count`] of a request's text, the same number, with the counts of its chunks taken from
/// (and kept in) the process's [`ChunkCache`]: the history an agent resends is not tokenized
/// again. Output text is counted with [`count`] (it is new on every call).
pub fn count_request(text: &str) -> u64 {
    count_head(text, |head| chunk_cache().count(head))
}

/// `tokens(head)` of the text's first [`EXACT_BYTES`] (cut on a character boundary), and the
/// rest extrapolated from it.
fn count_head(text: &str, tokens: impl FnOnce(&str) -> u64) -> u64 {
    if text.len() <= EXACT_BYTES {
        return tokens(text);
    }
    let mut cut = EXACT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = tokens(&text[..cut]);
    // Round up: an estimate used for admission should not undercount.
    let rest = (text.len() - cut) as u64;
    head + (rest * head).div_ceil(cut.max(1) as u64)
}

/// Chunks are at least this long (shorter ones cost more to look up than to tokenize), and cut
/// only where the tokenizer's own pre-split cuts (see [`chunks`]).
const CHUNK_MIN: usize = 512;
/// Slots of the chunk cache: 8,192 × 16 bytes = 128 KiB, allocated once, whatever the traffic.
/// With [`EXACT_BYTES`] of text counted per request in chunks of ≥ 512 bytes, that holds the
/// counted text of a few hundred conversations.
pub const CHUNK_CACHE_SLOTS: usize = 8_192;

/// One cached chunk count: the chunk's hash and length, and its tokens.
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    len: u32,
    tokens: u32,
}

/// Token counts of text chunks, keyed by a hash of the chunk's bytes (foldhash's quality
/// variant, seeded at random per process, so a client cannot aim two chunks at one key) and
/// its length. Direct-mapped with a fixed number of slots: a new chunk overwrites whatever its
/// slot held, so nothing a client sends grows it. A collision of hash and length would give an
/// estimate a wrong chunk count; it is an estimate either way.
pub struct ChunkCache {
    hasher: foldhash::quality::RandomState,
    slots: Mutex<Box<[Slot]>>,
}

fn chunk_cache() -> &'static ChunkCache {
    static CACHE: OnceLock<ChunkCache> = OnceLock::new();
    CACHE.get_or_init(|| ChunkCache::new(CHUNK_CACHE_SLOTS))
}

/// `text` cut into chunks of at least [`CHUNK_MIN`] bytes (the last may be shorter), each cut
/// just after a newline followed by an ASCII letter or digit. The tokenizer's pre-split
/// (o200k's pattern) never lets a piece cross such a point — no piece continues past a newline
/// into a letter or digit, and none starts with a newline before one — and BPE runs per piece,
/// so the chunks' counts add up to the count of the whole text. Request text joins its values
/// with newlines, so the cuts fall between messages.
fn chunks(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let mut from = start + CHUNK_MIN;
        let end = loop {
            let Some(i) = bytes.get(from..).and_then(|b| memchr::memchr(b'\n', b)) else {
                break bytes.len();
            };
            let cut = from + i + 1;
            if bytes.get(cut).is_some_and(u8::is_ascii_alphanumeric) {
                break cut;
            }
            from = cut;
        };
        // Cuts are after an ASCII newline or at the end: always on a character boundary.
        let chunk = text.get(start..end);
        start = end;
        chunk
    })
}

// === impl ChunkCache ===

impl ChunkCache {
    /// A cache of `slots` entries (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            hasher: foldhash::quality::RandomState::default(),
            slots: Mutex::new(vec![Slot::default(); slots.max(1)].into_boxed_slice()),
        }
    }

    /// Tokens in `text` (exactly: no extrapolation), its chunks' counts taken from the cache
    /// where it holds them; the rest are tokenized (outside the lock) and kept.
    pub fn count(&self, text: &str) -> u64 {
        let mut total = 0;
        let mut missed: Vec<(u64, &str)> = Vec::new();
        {
            let Ok(slots) = self.slots.lock() else {
                return bpe().encode_ordinary(text).len() as u64;
            };
            for chunk in chunks(text) {
                let hash = self.hasher.hash_one(chunk.as_bytes());
                let slot = slots[hash as usize % slots.len()];
                if slot.hash == hash && slot.len as usize == chunk.len() && slot.len > 0 {
                    total += u64::from(slot.tokens);
                } else {
                    missed.push((hash, chunk));
                }
            }
        }
        let counted: Vec<(u64, usize, u64)> = missed
            .into_iter()
            .map(|(hash, chunk)| {
                let n = bpe().encode_ordinary(chunk).len() as u64;
                (hash, chunk.len(), n)
            })
            .collect();
        if let Ok(mut slots) = self.slots.lock() {
            let n = slots.len();
            for &(hash, len, tokens) in &counted {
                if let (Ok(len), Ok(tokens)) = (u32::try_from(len), u32::try_from(tokens)) {
                    slots[hash as usize % n] = Slot { hash, len, tokens };
                }
            }
        }
        total + counted.iter().map(|c| c.2).sum::<u64>()
    }
}

/// The text of a request, as a tokenizer should see it (read from a provider's body by
/// `providers`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestText {
    /// Every text value, newline-separated.
    pub text: String,
    /// Chat messages (items with a `role`).
    pub messages: usize,
    /// Image, audio and file parts.
    pub media_parts: usize,
}

/// Estimated input tokens of a request's text: the text, framing per message, and a fixed
/// count per media part.
pub fn estimate(t: &RequestText) -> u64 {
    let framing = if t.messages > 0 {
        t.messages as u64 * PER_MESSAGE_TOKENS + REPLY_PRIMING_TOKENS
    } else {
        0
    };
    count_request(&t.text) + framing + t.media_parts as u64 * MEDIA_PART_TOKENS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_o200k_tokenizer() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(5_000);
        let exact = bpe().encode_ordinary(&long).len() as u64;
        let est = count(&long);
        assert!(
            est >= exact && est <= exact + exact / 50,
            "{est} vs {exact}"
        );
    }

    /// Texts whose chunk cuts meet every kind of neighbour: punctuation before the newline,
    /// slashes, spaces and newlines after it, digits, non-ASCII letters, JSON.
    fn texts() -> Vec<String> {
        let mut out = Vec::new();
        let pieces = [
            "Step 12: look up the order status.",
            "/path/to/file.rs\n",
            "  indented line",
            "\n\nblank lines",
            "12345 numbers first",
            "Ünïcödé wörds and 日本語のテキスト",
            r#"[{"type":"function","function":{"name":"x"}}]"#,
            "ends with spaces   ",
            "'quoted' and \"double\"",
            "\r\nwindows line",
        ];
        for n in [1, 7, 40, 300] {
            let mut t = String::new();
            for i in 0..n {
                if !t.is_empty() {
                    t.push('\n');
                }
                t.push_str(pieces[i % pieces.len()]);
                t.push_str(&"word ".repeat(i % 150));
            }
            out.push(t);
        }
        out
    }

    #[test]
    fn chunk_counts_add_up_to_the_whole_count() {
        let cache = ChunkCache::new(64);
        for t in texts() {
            let whole = bpe().encode_ordinary(&t).len() as u64;
            assert_eq!(cache.count(&t), whole, "first count of {} bytes", t.len());
            assert_eq!(cache.count(&t), whole, "cached count of {} bytes", t.len());
            assert_eq!(chunks(&t).collect::<String>(), t);
        }
    }

    #[test]
    fn chunks_are_cut_after_a_newline_before_a_letter_or_digit() {
        let t = "a".repeat(600) + "\n/x" + &"b".repeat(10) + "\n" + &"c".repeat(600) + "\n9";
        let c: Vec<&str> = chunks(&t).collect();
        let lens: Vec<usize> = c.iter().map(|c| c.len()).collect();
        assert_eq!(
            lens,
            [614, 601, 1],
            "not after `\\n/`, then after `\\n` before c and 9"
        );
        assert!(c[1].starts_with('c') && c[2] == "9");
        assert_eq!(chunks("").count(), 0);
    }

    #[test]
    fn a_full_cache_overwrites_and_still_counts_right() {
        // Two slots for hundreds of distinct chunks: every count stays exact.
        let cache = ChunkCache::new(2);
        let long: String = (0..400)
            .map(|i| format!("Message {i}: {}", "text ".repeat(120)))
            .collect::<Vec<_>>()
            .join("\n");
        let whole = bpe().encode_ordinary(&long).len() as u64;
        assert_eq!(cache.count(&long), whole);
        assert_eq!(cache.count(&long), whole);
        assert_eq!(cache.slots.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_request_count_is_the_plain_count() {
        let long = "The quick brown fox jumps over the lazy dog.\n".repeat(5_000);
        assert_eq!(count_request(&long), count(&long));
        assert_eq!(count_request(&long), count(&long), "from the cache");
        assert_eq!(count_request("hello world"), 2);
    }
}
