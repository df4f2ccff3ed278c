//! Decompressing a bounded copy of a compressed response for parsing. The client still gets
//! the compressed bytes untouched; only the parser sees the decompressed copy.

use std::io::Write;

/// Decompressed bytes kept per response before parsing gives up (a decompression bomb stops
/// here, not in memory).
pub const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// An incremental decompressor for one `Content-Encoding`.
pub struct Decompressor {
    inner: Inner,
    total: usize,
    limit: usize,
}

enum Inner {
    Gzip(flate2::write::GzDecoder<Sink>),
    Deflate(flate2::write::ZlibDecoder<Sink>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Sink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Sink>>),
}

/// Where a decoder writes: refuses a write past `room`, so a chunk that expands enormously
/// (16 KiB of zstd makes 500 MiB) stops at the bound instead of in memory.
#[derive(Default)]
struct Sink {
    buf: Vec<u8>,
    room: usize,
    over: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.room {
            self.over = true;
            return Err(std::io::Error::other("decompressed past the bound"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why decompressing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecompressError {
    /// The bytes are not valid for the encoding.
    Corrupt,
    /// More than [`MAX_DECOMPRESSED`] bytes came out.
    TooLarge,
}

// === impl Decompressor ===

impl Decompressor {
    /// A decompressor for a `Content-Encoding` value, or `None` when it is not one we read.
    pub fn for_encoding(encoding: &[u8]) -> Option<Self> {
        let e = std::str::from_utf8(encoding)
            .ok()?
            .trim()
            .to_ascii_lowercase();
        let inner = match e.as_str() {
            "gzip" | "x-gzip" => Inner::Gzip(flate2::write::GzDecoder::new(Sink::default())),
            "deflate" => Inner::Deflate(flate2::write::ZlibDecoder::new(Sink::default())),
            "br" => Inner::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Sink::default(),
                4096,
            ))),
            "zstd" => Inner::Zstd(Box::new(
                zstd::stream::write::Decoder::new(Sink::default()).ok()?,
            )),
            _ => return None,
        };
        Some(Self {
            inner,
            total: 0,
            limit: MAX_DECOMPRESSED,
        })
    }

    /// No bound on the total decompressed: for a body read line by line as it passes (a batch
    /// output file of hundreds of MiB), where each chunk's output is handed on and dropped and
    /// each line is bounded by its reader, so the total is never held.
    pub fn unbounded(mut self) -> Self {
        self.limit = usize::MAX;
        self
    }

    /// Decompress `chunk`; the bytes that came out are handed to `out`. One chunk's output is
    /// bounded too ([`MAX_DECOMPRESSED`], what remains of the total), unbounded or not.
    pub fn feed(&mut self, chunk: &[u8], out: impl FnOnce(&[u8])) -> Result<(), DecompressError> {
        let room = self.limit.saturating_sub(self.total).min(MAX_DECOMPRESSED);
        self.sink().room = room;
        let res = match &mut self.inner {
            // flush: the writers hold decompressed bytes back until asked.
            Inner::Gzip(d) => d.write_all(chunk).and_then(|()| d.flush()),
            Inner::Deflate(d) => d.write_all(chunk).and_then(|()| d.flush()),
            Inner::Brotli(d) => d.write_all(chunk).and_then(|()| d.flush()),
            Inner::Zstd(d) => d.write_all(chunk).and_then(|()| d.flush()),
        };
        let sink = self.sink();
        if sink.over {
            sink.buf = Vec::new();
            return Err(DecompressError::TooLarge);
        }
        res.map_err(|_| DecompressError::Corrupt)?;
        let n = sink.buf.len();
        out(&sink.buf);
        sink.buf.clear();
        self.total = self.total.saturating_add(n);
        Ok(())
    }

    fn sink(&mut self) -> &mut Sink {
        match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
            Inner::Brotli(d) => d.get_mut(),
            Inner::Zstd(d) => d.get_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(encoding: &str, compressed: Vec<u8>, want: &[u8]) {
        for split in [1usize, 7, compressed.len().max(1)] {
            let mut d = Decompressor::for_encoding(encoding.as_bytes()).unwrap();
            let mut got = Vec::new();
            for c in compressed.chunks(split) {
                d.feed(c, |b| got.extend_from_slice(b)).unwrap();
            }
            assert!(
                got == want,
                "{encoding} split {split}: {} of {} bytes",
                got.len(),
                want.len()
            );
        }
    }

    /// A bomb stops at the bound while it decompresses, not after: even unbounded (a batch file
    /// read line by line), one chunk's output never passes [`MAX_DECOMPRESSED`].
    #[test]
    fn one_chunk_never_decompresses_past_the_bound() {
        let zeros = vec![0u8; MAX_DECOMPRESSED + 4096];
        let bomb = zstd::encode_all(&zeros[..], 1).unwrap();
        drop(zeros);
        assert!(bomb.len() < 64 * 1024);
        for unbounded in [false, true] {
            let mut d = Decompressor::for_encoding(b"zstd").unwrap();
            if unbounded {
                d = d.unbounded();
            }
            let mut got = 0;
            let res = d.feed(&bomb, |b| got += b.len());
            assert_eq!(
                res,
                Err(DecompressError::TooLarge),
                "unbounded: {unbounded}"
            );
            assert_eq!(got, 0);
        }
    }

    #[test]
    fn every_encoding_in_any_split() {
        let text: Vec<u8> = b"data: {\"usage\":{\"prompt_tokens\":3}}\n\n".repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        roundtrip("gzip", gz.finish().unwrap(), &text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        roundtrip("deflate", z.finish().unwrap(), &text);
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&text).unwrap();
        }
        roundtrip("br", br, &text);
        roundtrip("zstd", zstd::encode_all(&text[..], 3).unwrap(), &text);
        assert!(Decompressor::for_encoding(b"compress").is_none());
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut d = Decompressor::for_encoding(b"gzip").unwrap();
        assert_eq!(
            d.feed(b"not gzip at all", |_| {}),
            Err(DecompressError::Corrupt)
        );
    }
}
