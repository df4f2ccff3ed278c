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
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
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
            "gzip" | "x-gzip" => Inner::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            "deflate" => Inner::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => Inner::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                4096,
            ))),
            "zstd" => Inner::Zstd(Box::new(
                zstd::stream::write::Decoder::new(Vec::new()).ok()?,
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

    /// Decompress `chunk`; the bytes that came out are handed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: impl FnOnce(&[u8])) -> Result<(), DecompressError> {
        let buf = match &mut self.inner {
            // flush: the writers hold decompressed bytes back until asked.
            Inner::Gzip(d) => d
                .write_all(chunk)
                .and_then(|()| d.flush())
                .map(|()| d.get_mut()),
            Inner::Deflate(d) => d
                .write_all(chunk)
                .and_then(|()| d.flush())
                .map(|()| d.get_mut()),
            Inner::Brotli(d) => d
                .write_all(chunk)
                .and_then(|()| d.flush())
                .map(|()| d.get_mut()),
            Inner::Zstd(d) => d
                .write_all(chunk)
                .and_then(|()| d.flush())
                .map(|()| d.get_mut()),
        }
        .map_err(|_| DecompressError::Corrupt)?;
        self.total = self.total.saturating_add(buf.len());
        if self.total > self.limit {
            buf.clear();
            return Err(DecompressError::TooLarge);
        }
        out(buf);
        buf.clear();
        Ok(())
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
