//! A cheap builder for response bodies: everything is written into one buffer and each frame
//! (one SSE event, or a whole JSON body) becomes a zero-copy slice of it.

use std::fmt::Write as _;
use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use flate2::write::GzEncoder;
use flate2::Compression;

pub(crate) struct Frames {
    buf: BytesMut,
    ends: Vec<usize>,
}

impl Frames {
    pub(crate) fn with_capacity(bytes: usize, frames: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(bytes),
            ends: Vec::with_capacity(frames),
        }
    }

    /// Appends raw text.
    pub(crate) fn s(&mut self, s: &str) -> &mut Self {
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    /// Appends raw bytes.
    pub(crate) fn b(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Appends `s` as a quoted JSON string.
    pub(crate) fn q(&mut self, s: &str) -> &mut Self {
        self.buf.extend_from_slice(b"\"");
        escape_into(&mut self.buf, s);
        self.buf.extend_from_slice(b"\"");
        self
    }

    /// Appends a decimal number.
    pub(crate) fn n(&mut self, n: u64) -> &mut Self {
        // Writing into a BytesMut cannot fail.
        let _ = write!(self.buf, "{n}");
        self
    }

    /// Appends a quoted numbered id, e.g. `"call_mock_0001"` for `("call_mock_", None, 0)`, with
    /// a scripted turn's number when there is one: `"call_mock_t2_0001"` for `Some(2)`.
    pub(crate) fn turn_id(&mut self, prefix: &str, turn: Option<u32>, i: u32) -> &mut Self {
        self.buf.extend_from_slice(b"\"");
        self.buf.extend_from_slice(prefix.as_bytes());
        if let Some(t) = turn {
            let _ = write!(self.buf, "t{t}_");
        }
        let _ = write!(self.buf, "{:04}\"", u64::from(i) + 1);
        self
    }

    /// Ends the current frame (empty frames are skipped).
    pub(crate) fn end(&mut self) -> &mut Self {
        let last = self.ends.last().copied().unwrap_or(0);
        if self.buf.len() > last {
            self.ends.push(self.buf.len());
        }
        self
    }

    /// Ends the current frame and returns all frames.
    pub(crate) fn finish(mut self) -> Vec<Bytes> {
        self.end();
        let all = self.buf.freeze();
        let mut out = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for end in self.ends {
            out.push(all.slice(start..end));
            start = end;
        }
        out
    }
}

/// JSON string escaping (RFC 8259) without the surrounding quotes.
pub(crate) fn escape_into(buf: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            let _ = write!(buf, "\\u{:04x}", c);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// Gzips a body frame by frame: every frame but the last ends with a sync flush, so a client can
/// decompress each event as it arrives; the last frame carries the gzip trailer. Deterministic
/// (the gzip header has mtime 0 and no file name).
pub(crate) fn gzip_frames(frames: &[Bytes]) -> std::io::Result<Vec<Bytes>> {
    let total: usize = frames.iter().map(Bytes::len).sum();
    let mut enc = GzEncoder::new(Vec::with_capacity(total / 2 + 64), Compression::fast());
    let mut out = Vec::with_capacity(frames.len().max(1));
    let last = frames.len().saturating_sub(1);
    for (i, f) in frames.iter().enumerate() {
        enc.write_all(f)?;
        if i < last {
            enc.flush()?;
            out.push(Bytes::from(std::mem::take(enc.get_mut())));
        }
    }
    out.push(Bytes::from(enc.finish()?));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn frames_are_slices_of_one_buffer() {
        let mut f = Frames::with_capacity(64, 4);
        f.s("data: ").q("a\"b\\c\n\u{1}é").s("\n\n").end();
        f.end(); // empty frame is skipped
        f.s("{").q("n").s(":").n(42).s(",").q("t").s(":true}");
        let v = f.finish();
        assert_eq!(v.len(), 2);
        assert_eq!(&v[0][..], "data: \"a\\\"b\\\\c\\n\\u0001é\"\n\n".as_bytes());
        let json: serde_json::Value = serde_json::from_slice(&v[1]).unwrap();
        assert_eq!(json, serde_json::json!({"n": 42, "t": true}));
    }

    #[test]
    fn escaping_matches_serde_json() {
        let s = "plain \"quoted\" back\\slash \t tab \r\n \u{7} bell ünïcode €";
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\"");
        escape_into(&mut buf, s);
        buf.extend_from_slice(b"\"");
        let back: String = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn gzip_is_deterministic_and_streamable() {
        let frames: Vec<Bytes> = (0..5)
            .map(|i| Bytes::from(format!("data: {{\"i\":{i}}}\n\n")))
            .collect();
        let a = gzip_frames(&frames).unwrap();
        let b = gzip_frames(&frames).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        // The first frame alone already decompresses to the first event (sync flush).
        let mut d = flate2::write::GzDecoder::new(Vec::new());
        std::io::Write::write_all(&mut d, &a[0]).unwrap();
        std::io::Write::flush(&mut d).unwrap();
        assert_eq!(d.get_ref().as_slice(), b"data: {\"i\":0}\n\n");
        let all: Vec<u8> = a.concat();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), frames.concat());
    }
}
