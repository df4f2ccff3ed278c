//! Newline-delimited JSON streams (Ollama): one JSON value per line, split anywhere.

use memchr::memchr;

/// One decoded line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdjsonItem<'a> {
    /// A non-empty line, without its line end.
    Line(&'a [u8]),
    /// A line longer than the decoder's maximum; its content was dropped.
    Oversized,
}

/// Incremental NDJSON line splitter with bounded memory.
#[derive(Debug)]
pub struct NdjsonDecoder {
    max: usize,
    partial: Vec<u8>,
    skipping: bool,
}

// === impl NdjsonDecoder ===

impl NdjsonDecoder {
    /// A decoder keeping lines of at most `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max: max_line_bytes,
            partial: Vec::new(),
            skipping: false,
        }
    }

    /// Feed the next chunk; `f` is called for every complete line.
    pub fn feed(&mut self, mut chunk: &[u8], mut f: impl FnMut(NdjsonItem<'_>)) {
        while let Some(end) = memchr(b'\n', chunk) {
            if self.skipping {
                self.skipping = false;
                f(NdjsonItem::Oversized);
            } else if self.partial.is_empty() {
                emit(&chunk[..end], &mut f);
            } else if self.partial.len() + end > self.max {
                self.partial.clear();
                f(NdjsonItem::Oversized);
            } else {
                self.partial.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.partial);
                emit(&line, &mut f);
                self.partial = line;
                self.partial.clear();
            }
            chunk = &chunk[end + 1..];
        }
        if self.skipping || chunk.is_empty() {
            return;
        }
        if self.partial.len() + chunk.len() > self.max {
            self.partial.clear();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(chunk);
        }
    }

    /// End of stream: a last line without a line end still counts.
    pub fn finish(&mut self, mut f: impl FnMut(NdjsonItem<'_>)) {
        if self.skipping {
            self.skipping = false;
            f(NdjsonItem::Oversized);
        } else if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            emit(&line, &mut f);
        }
    }
}

fn emit(line: &[u8], f: &mut impl FnMut(NdjsonItem<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().all(u8::is_ascii_whitespace) {
        f(NdjsonItem::Line(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut d = NdjsonDecoder::new(max);
        let mut out = Vec::new();
        let mut push = |it: NdjsonItem<'_>| {
            out.push(match it {
                NdjsonItem::Line(l) => String::from_utf8_lossy(l).into_owned(),
                NdjsonItem::Oversized => "<big>".into(),
            })
        };
        for c in chunks {
            d.feed(c, &mut push);
        }
        d.finish(&mut push);
        out
    }

    #[test]
    fn splits_anywhere() {
        let s: &[u8] = b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}";
        let whole = lines(&[s], 64);
        assert_eq!(whole, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(lines(&bytes, 64), whole);
    }

    #[test]
    fn oversized_lines_are_reported() {
        let s = format!("{}\n{{\"ok\":1}}\n", "x".repeat(100));
        let bytes: Vec<&[u8]> = s.as_bytes().chunks(7).collect();
        assert_eq!(lines(&bytes, 16), ["<big>", "{\"ok\":1}"]);
    }
}
