//! [`Skim`]: a validating JSON reader for the few members accounting reads from a response body,
//! which steps aside whenever it is not sure.
//!
//! Reading a chat completion through serde_json's derive cost ~15 k instructions for a toy body,
//! the largest share of a non-streamed call's own work: each key is identified through a visitor
//! (a string parse and a UTF-8 check each), each known string allocated on the way. A `Skim` walks
//! the bytes once: keys are compared as bytes, and values nobody asked for are skipped, validated
//! as serde_json validates what it ignores (structure, number grammar, literals, string escapes,
//! no control characters in strings; bytes of skipped strings are not checked as UTF-8, there as
//! here).
//!
//! It gives up ([`Bail`]) on anything outside the plain shapes its callers read: an escaped or
//! non-ASCII key where a struct reads keys, a value of a type the serde struct would reject, a
//! key a struct would read twice (serde's duplicate-field error), nesting deeper than
//! [`MAX_DEPTH`], a lone surrogate. Its callers then parse with serde_json as before, so a body
//! is either read the same both ways or read by serde_json alone (`skim_agrees_with_serde`
//! property tests hold the readers to that).

use std::borrow::Cow;

/// The skim gave up: parse the body with serde_json instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

/// What a skim step returns.
pub type Skimmed<T> = Result<T, Bail>;

/// Containers nested deeper than this inside a skipped value make the skim give up (serde_json
/// skips ignored values without a depth limit; this reader keeps its stack in one `u64`).
pub const MAX_DEPTH: usize = 64;
const _: () = assert!(
    MAX_DEPTH <= 64,
    "skip's stack is one bit per level of a u64"
);

/// A reader over one JSON text.
pub struct Skim<'a> {
    b: &'a [u8],
    i: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bytes of `w` (little-endian lanes) that end a plain run of string bytes: `"`, `\` or a
/// control character. The lowest flagged lane is exact (higher ones may be false positives).
fn string_stops(w: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))
}

// === impl Skim ===

impl<'a> Skim<'a> {
    /// A reader at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }

    /// The next byte that is not JSON whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Skimmed<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Ok(c);
            }
            self.i += 1;
        }
        Err(Bail)
    }

    /// Consume `c` (after whitespace).
    pub(crate) fn eat(&mut self, c: u8) -> Skimmed<()> {
        if self.peek()? != c {
            return Err(Bail);
        }
        self.i += 1;
        Ok(())
    }

    /// Consume the literal `word` (its first byte already peeked).
    pub(crate) fn literal(&mut self, word: &[u8]) -> Skimmed<()> {
        if !self.b[self.i..].starts_with(word) {
            return Err(Bail);
        }
        self.i += word.len();
        Ok(())
    }

    /// The offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.i
    }

    /// Consume `n` bytes the caller has already checked.
    pub(crate) fn advance(&mut self, n: usize) {
        self.i += n;
    }

    /// Consume one byte (the caller peeked it).
    pub(crate) fn bump(&mut self) {
        self.i += 1;
    }

    /// Whether nothing but whitespace is left (serde_json's check after the root value).
    pub fn at_end(&mut self) -> bool {
        self.peek().is_err()
    }

    /// `null` (consumed: true) or something else (left: false).
    fn null(&mut self) -> Skimmed<bool> {
        if self.peek()? != b'n' {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    /// Past the string whose opening quote is at `self.i`: the raw bytes between the quotes, and
    /// whether they hold an escape. Escapes are checked as serde_json checks skipped ones.
    pub(crate) fn raw_string(&mut self) -> Skimmed<(&'a [u8], bool)> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Sixteen bytes at a time to the next quote, backslash or control character.
            let c = match self.seek_stop(string_stops) {
                Some(c) => c,
                None => *self.b.get(self.i).ok_or(Bail)?,
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok((&self.b[start..self.i - 1], escaped));
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1).ok_or(Bail)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Bail)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Bail);
                            }
                            self.i += 6;
                        }
                        _ => return Err(Bail),
                    }
                }
                c if c < 0x20 => return Err(Bail),
                _ => self.i += 1,
            }
        }
    }

    /// Move to the first byte `stops` flags, sixteen bytes at a time while sixteen are left,
    /// and return it; `None` when fewer than sixteen bytes are left before one (the reader is
    /// at the first of them). `stops` flags a lane by its high bit, the lowest flagged lane of a
    /// word exactly.
    fn seek_stop(&mut self, stops: impl Fn(u64) -> u64) -> Option<u8> {
        while let Some(block) = self.b.get(self.i..self.i + 16) {
            let mut lanes = [0u8; 16];
            lanes.copy_from_slice(block);
            let w = u128::from_le_bytes(lanes);
            // Truncation keeps the low word, the shift the high one; both tested before
            // either is branched on (most strings end within the first sixteen bytes).
            let flagged = u128::from(stops(w as u64)) | u128::from(stops((w >> 64) as u64)) << 64;
            if flagged != 0 {
                let bits = flagged.trailing_zeros();
                self.i += (bits / 8) as usize;
                // Taken from the block already loaded, not read again.
                return Some((w >> (bits & !7)) as u8);
            }
            self.i += 16;
        }
        None
    }

    /// Past a key whose opening quote is at `self.i`: its bytes, which must be plain ASCII with
    /// no escape (serde_json identifies struct keys after unescaping and checking UTF-8; the
    /// skim leaves those keys to it).
    fn plain_key(&mut self) -> Skimmed<&'a [u8]> {
        self.i += 1;
        let start = self.i;
        // A quote, a backslash, a control character or a byte past ASCII.
        let stop = match self.seek_stop(|w| string_stops(w) | w & HIGHS) {
            Some(c) => c,
            None => {
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|&c| c != b'"' && c != b'\\' && (0x20..0x80).contains(&c))
                {
                    self.i += 1;
                }
                *self.b.get(self.i).ok_or(Bail)?
            }
        };
        if stop != b'"' {
            return Err(Bail);
        }
        self.i += 1;
        Ok(&self.b[start..self.i - 1])
    }

    /// `null`, consumed; anything else gives up (an `Option` member serde_json must read).
    pub fn null_only(&mut self) -> Skimmed<()> {
        if self.null()? {
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// A string value as serde_json reads a `Cow<str>` it may borrow: unescaped and valid UTF-8,
    /// borrowed from the text unless it holds escapes.
    fn str_value(&mut self) -> Skimmed<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return Err(Bail);
        }
        let (raw, escaped) = self.raw_string()?;
        let plain = std::str::from_utf8(raw).map_err(|_| Bail)?;
        if escaped {
            unescape(plain).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(plain))
        }
    }

    /// `null` or a string, as serde_json reads an `Option<Cow<str>>` (borrowing where it can).
    pub fn opt_str(&mut self) -> Skimmed<Option<Cow<'a, str>>> {
        if self.null()? {
            return Ok(None);
        }
        self.str_value().map(Some)
    }

    /// `null` or a string, as serde_json reads an `Option<String>`.
    pub fn opt_string(&mut self) -> Skimmed<Option<String>> {
        Ok(self.opt_str()?.map(Cow::into_owned))
    }

    /// A string, as serde_json reads a `String` (not `null`).
    pub fn string(&mut self) -> Skimmed<String> {
        self.str_value().map(Cow::into_owned)
    }

    /// `null` or a non-negative integer, as serde_json reads an `Option<u64>` (a fraction, an
    /// exponent, a sign or an overflow make it give up: serde_json rejects them).
    pub fn opt_u64(&mut self) -> Skimmed<Option<u64>> {
        if self.null()? {
            return Ok(None);
        }
        let digits = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let text = &self.b[self.i..self.i + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return Err(Bail);
        }
        if matches!(self.b.get(self.i + digits), Some(b'.' | b'e' | b'E')) {
            return Err(Bail);
        }
        let n = text.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        self.i += digits;
        n.map(Some).ok_or(Bail)
    }

    /// A non-negative integer that fits a `u32` (not `null`).
    pub fn u32(&mut self) -> Skimmed<u32> {
        let n = self.opt_u64()?.ok_or(Bail)?;
        u32::try_from(n).map_err(|_| Bail)
    }

    /// Read an object's entries, handing each key (its raw bytes: plain ASCII, no escapes) to
    /// `entry`, which must consume the value. The reader is at the value; `null` reads as no
    /// object (false), anything but an object gives up.
    pub fn opt_object(
        &mut self,
        mut entry: impl FnMut(&mut Self, &'a [u8]) -> Skimmed<()>,
    ) -> Skimmed<bool> {
        if self.null()? {
            return Ok(false);
        }
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(true);
        }
        loop {
            if self.peek()? != b'"' {
                return Err(Bail);
            }
            let key = self.plain_key()?;
            self.eat(b':')?;
            entry(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(true);
                }
                _ => return Err(Bail),
            }
        }
    }

    /// An object (not `null`), as [`Self::opt_object`].
    pub fn object(&mut self, entry: impl FnMut(&mut Self, &'a [u8]) -> Skimmed<()>) -> Skimmed<()> {
        if self.opt_object(entry)? {
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Read an array, handing the reader to `item` at each item (which must consume it); `null`
    /// reads as no array (false).
    pub fn opt_array(&mut self, mut item: impl FnMut(&mut Self) -> Skimmed<()>) -> Skimmed<bool> {
        if self.null()? {
            return Ok(false);
        }
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(true);
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(true);
                }
                _ => return Err(Bail),
            }
        }
    }

    /// Skip one value, checked as serde_json checks an ignored one.
    pub fn skip(&mut self) -> Skimmed<()> {
        // Most skipped values are scalars: no container stack for them.
        match self.peek()? {
            b'"' => return self.raw_string().map(drop),
            b'{' | b'[' => {}
            _ => return self.scalar(),
        }
        // The open containers, innermost at bit `depth - 1`: set for an object.
        let mut stack = 0u64;
        let mut depth = 0;
        loop {
            // One value.
            match self.peek()? {
                b'"' => {
                    self.raw_string()?;
                }
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    if depth == MAX_DEPTH {
                        return Err(Bail);
                    }
                    let object = open == b'{';
                    stack = stack & !(1 << depth) | u64::from(object) << depth;
                    depth += 1;
                    let close = if object { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                        depth -= 1;
                    } else {
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // After a value: a comma and the next entry, or the end of containers.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = stack >> (depth - 1) & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    b']' if !object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return Err(Bail),
                }
            }
        }
    }

    /// A literal or a number (its first byte peeked); anything else gives up.
    fn scalar(&mut self) -> Skimmed<()> {
        match self.b.get(self.i) {
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Bail),
        }
    }

    /// A key of a skipped object and its colon.
    fn key(&mut self) -> Skimmed<()> {
        if self.peek()? != b'"' {
            return Err(Bail);
        }
        self.raw_string()?;
        self.eat(b':')
    }

    /// A number, by JSON's grammar (serde_json's `ignore_integer` and what follows it).
    pub(crate) fn number(&mut self) -> Skimmed<()> {
        let digit = |s: &Self, at: usize| s.b.get(at).is_some_and(u8::is_ascii_digit);
        let digits_from = |s: &Self, mut at: usize| {
            while digit(s, at) {
                at += 1;
            }
            at
        };
        let mut at = self.i;
        if self.b.get(at) == Some(&b'-') {
            at += 1;
        }
        match self.b.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => at = digits_from(self, at + 1),
            _ => return Err(Bail),
        }
        if self.b.get(at) == Some(&b'.') {
            if !digit(self, at + 1) {
                return Err(Bail);
            }
            at = digits_from(self, at + 1);
        }
        if matches!(self.b.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(self.b.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            if !digit(self, at) {
                return Err(Bail);
            }
            at = digits_from(self, at);
        }
        self.i = at;
        Ok(())
    }
}

/// Mark `bit` of `seen` for a key a struct reads, giving up if it was read already (serde's
/// duplicate-field error).
pub fn once(seen: &mut u32, bit: u32) -> Skimmed<()> {
    if *seen & bit != 0 {
        return Err(Bail);
    }
    *seen |= bit;
    Ok(())
}

/// A struct member read into `slot` (`value`, read by the caller), marked as bit `bit` of `seen`:
/// a member read twice gives up, as serde's duplicate-field error refuses the body.
pub fn member<T>(seen: &mut u32, bit: u32, slot: &mut T, value: Skimmed<T>) -> Skimmed<()> {
    once(seen, bit)?;
    *slot = value?;
    Ok(())
}

/// The string a JSON string's text stands for (its escapes checked already); a lone surrogate
/// gives up.
pub(crate) fn unescape(text: &str) -> Skimmed<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let esc = rest.as_bytes().get(at + 1).ok_or(Bail)?;
        rest = &rest[at + 2..];
        out.push(match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let (unit, after) = hex_unit(rest)?;
                rest = after;
                match unit {
                    0xD800..=0xDBFF => {
                        let after = rest.strip_prefix("\\u").ok_or(Bail)?;
                        let (low, after) = hex_unit(after)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Bail);
                        }
                        rest = after;
                        let c = 0x10000
                            + ((u32::from(unit) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        char::from_u32(c).ok_or(Bail)?
                    }
                    0xDC00..=0xDFFF => return Err(Bail),
                    u => char::from_u32(u32::from(u)).ok_or(Bail)?,
                }
            }
            _ => return Err(Bail),
        });
    }
    out.push_str(rest);
    Ok(out)
}

/// Four hex digits at the start of `s`, and what follows them.
fn hex_unit(s: &str) -> Skimmed<(u16, &str)> {
    let hex = s.get(..4).ok_or(Bail)?;
    let unit = u16::from_str_radix(hex, 16).map_err(|_| Bail)?;
    Ok((unit, &s[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether serde_json accepts `b` as one JSON value when it ignores it.
    fn serde_skips(b: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
    }

    fn skims(b: &[u8]) -> bool {
        let mut s = Skim::new(b);
        s.skip().is_ok() && s.at_end()
    }

    #[test]
    fn skipping_accepts_what_serde_accepts_in_plain_documents() {
        for doc in [
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"],"b":{},"c":[]}"#,
            " [ { \"k\" : [ [ ] , { } ] } ] ",
            "0",
            "-0.0E-0",
            "\"caf\u{e9}\"",
        ] {
            assert!(serde_skips(doc.as_bytes()), "{doc}");
            assert!(skims(doc.as_bytes()), "{doc}");
        }
    }

    #[test]
    fn skipping_rejects_what_serde_rejects() {
        for doc in [
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "\"a\u{1}\"",
            "\"\\x\"",
            "\"\\u12g4\"",
            "nul",
            "tru",
            "[",
            "{\"a\":",
            "\"abc",
            "]",
        ] {
            assert!(!serde_skips(doc.as_bytes()), "{doc}");
            assert!(!skims(doc.as_bytes()), "{doc}");
        }
    }

    #[test]
    fn strings_read_as_serde_reads_them() {
        for text in [
            r#""plain""#,
            r#""caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n""#,
            r#""""#,
            "\"caf\u{e9}\"",
        ] {
            let want: String = serde_json::from_str(text).expect("valid");
            assert_eq!(Skim::new(text.as_bytes()).string(), Ok(want), "{text}");
        }
        for lone in [r#""\ud83d""#, r#""\ude00""#, r#""\ud83dx""#] {
            assert_eq!(Skim::new(lone.as_bytes()).string(), Err(Bail), "{lone}");
        }
    }

    /// The keys `opt_object` hands over, or `Err` where it leaves the object to serde_json.
    fn keys(text: &str) -> Skimmed<Vec<String>> {
        let mut s = Skim::new(text.as_bytes());
        let mut keys = Vec::new();
        s.object(|s, key| {
            keys.push(String::from_utf8_lossy(key).into_owned());
            s.skip()
        })?;
        Ok(keys)
    }

    #[test]
    fn keys_are_handed_over_only_when_plain_ascii() {
        // Stops in every lane of an eight-byte word and in the tail after the last whole word.
        let long = "abcdefghijklmnopq";
        for cut in 0..=long.len() {
            let key = &long[..cut];
            assert_eq!(
                keys(&format!(r#"{{"{key}":1}}"#)),
                Ok(vec![key.to_string()])
            );
            for odd in ["\\u0041", "\\\\", "\u{e9}", "\u{1}", "\u{7f}x"] {
                let text = format!(r#"{{"{key}{odd}":1}}"#);
                let plain = odd == "\u{7f}x";
                assert_eq!(keys(&text).is_ok(), plain, "{text:?}");
            }
            assert_eq!(
                keys(&format!(r#"{{"{key}"#)),
                Err(Bail),
                "unterminated {key}"
            );
        }
        let nested = r#"{"a":{"b":[1,{"c":null}]},"d":"x"}"#;
        assert_eq!(keys(nested), Ok(vec!["a".to_string(), "d".to_string()]));
    }

    #[test]
    fn integers_read_as_serde_reads_u64() {
        for text in ["0", "7", "18446744073709551615", "null"] {
            let want: Option<u64> = serde_json::from_str(text).expect("valid");
            assert_eq!(Skim::new(text.as_bytes()).opt_u64(), Ok(want), "{text}");
        }
        for text in ["-1", "1.0", "1e3", "18446744073709551616", "01", "\"1\""] {
            assert!(serde_json::from_str::<Option<u64>>(text).is_err(), "{text}");
            assert_eq!(Skim::new(text.as_bytes()).opt_u64(), Err(Bail), "{text}");
        }
    }

    #[test]
    fn nesting_past_the_bound_gives_up() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!skims(deep.as_bytes()));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(skims(ok.as_bytes()));
    }

    /// Bytes JSON is made of, weighted towards its punctuation.
    fn json_bytes() -> impl Strategy<Value = Vec<u8>> {
        let alphabet: Vec<u8> =
            b"{}[],:\"\\ \n0123456789-+.eEtrufalsn\x01\x7f\xc3\xa9abu/".to_vec();
        proptest::collection::vec(proptest::sample::select(alphabet), 0..48)
    }

    proptest! {
        #[test]
        fn skipping_never_accepts_what_serde_rejects(b in json_bytes()) {
            if skims(&b) {
                prop_assert!(serde_skips(&b), "{:?}", String::from_utf8_lossy(&b));
            }
        }

        #[test]
        fn skipping_accepts_every_value_serde_writes(v in any::<Vec<(String, Option<i64>, f32)>>()) {
            let text = serde_json::to_vec(&v).expect("serializable");
            prop_assert!(skims(&text));
        }

        /// Strings of every length, their end at every offset of a sixteen-byte block, and
        /// raw bytes (a control character, a lone quote) anywhere in them.
        #[test]
        fn strings_read_as_serde_reads_them_wherever_they_end(
            text in "[a-z\"\\\u{1}\u{e9}\u{1F600} ]{0,40}",
            pad in 0usize..20,
            raw in proptest::option::of((0usize..48, proptest::sample::select(b"\x01\"\\a".to_vec()))),
        ) {
            let mut json = serde_json::to_vec(&text).expect("serializable");
            if let Some((at, byte)) = raw {
                let at = 1 + at % json.len().max(1);
                json.insert(at.min(json.len() - 1), byte);
            }
            json.extend(std::iter::repeat_n(b' ', pad));
            let want = serde_json::from_slice::<String>(&json).ok();
            let mut s = Skim::new(&json);
            let read = s.string().ok().filter(|_| s.at_end());
            prop_assert_eq!(read, want.clone());
            // A key reads the same wherever serde reads it as a plain ASCII key.
            let mut obj = b"{".to_vec();
            obj.extend_from_slice(&json[..json.len() - pad]);
            obj.extend_from_slice(b":0}");
            obj.extend(std::iter::repeat_n(b' ', pad));
            let plain = want.filter(|k| k.is_ascii() && !json.contains(&b'\\'));
            prop_assert_eq!(keys(std::str::from_utf8(&obj).unwrap_or("")).ok(), plain.map(|k| vec![k]));
        }
    }
}
