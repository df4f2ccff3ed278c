//! Token counts the proxy computes itself, where the provider states none: admission estimates
//! for budgets and the context-window guard, and usage for responses that carry no usage
//! (servers that ignore `include_usage`, streams cut short by a client that went away).
//!
//! Counting uses a real BPE tokenizer (OpenAI's `o200k_base`, via tiktoken-rs). Other providers'
//! tokenizers differ by a few percent; numbers from here are always marked `estimated`. Text
//! past [`EXACT_BYTES`] is extrapolated from the tokens-per-byte of the text before it, so the
//! cost of an estimate is bounded whatever the request size.

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
    if text.len() <= EXACT_BYTES {
        return bpe().encode_ordinary(text).len() as u64;
    }
    let mut cut = EXACT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = bpe().encode_ordinary(&text[..cut]).len() as u64;
    // Round up: an estimate used for admission should not undercount.
    let rest = (text.len() - cut) as u64;
    head + (rest * head).div_ceil(cut.max(1) as u64)
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
    count(&t.text) + framing + t.media_parts as u64 * MEDIA_PART_TOKENS
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
}
