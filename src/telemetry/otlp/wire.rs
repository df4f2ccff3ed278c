//! Protobuf wire encoding for the OTLP trace messages we send, written straight into one
//! growing buffer.
//!
//! Why by hand: going through the SDK's `SpanData` and opentelemetry-proto's structs copies
//! every attribute twice (owned key and value strings) before prost walks them twice more
//! (`encoded_len`, then `encode`); on a proxy that saturates a core that was +7–9 µs per
//! request. Here a span is one `Vec<u8>`, keys are `&'static str`, and a batch is assembled by
//! concatenation, since a repeated embedded message is just its encodings one after another.
//! Unit tests decode what this writes with prost and opentelemetry-proto.

use bytes::BufMut;

const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

/// Bytes a varint of `v` takes.
pub fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 significant bits; `| 1` makes 0 take one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Write `v` as a base-128 varint.
pub fn put_varint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_tag(buf: &mut impl BufMut, field: u32, wire_type: u32) {
    put_varint(buf, u64::from(field << 3 | wire_type));
}

/// Bytes a length-delimited field of `len` content bytes takes (fields below 16: one tag byte).
pub fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Tag and length of a length-delimited field whose content the caller writes next.
pub fn put_len_prefix(buf: &mut impl BufMut, field: u32, len: usize) {
    put_tag(buf, field, LEN);
    put_varint(buf, len as u64);
}

/// A `bytes` or embedded-message field from its encoded content.
pub fn put_bytes(buf: &mut impl BufMut, field: u32, bytes: &[u8]) {
    put_len_prefix(buf, field, bytes.len());
    buf.put_slice(bytes);
}

/// A `string` field.
pub fn put_str(buf: &mut impl BufMut, field: u32, s: &str) {
    put_bytes(buf, field, s.as_bytes());
}

/// Longest text a span carries from traffic (model names, ids, tool names, error types): a
/// client's 30 MiB `model` must not become a 30 MiB span (the export queue is bounded by count).
pub const MAX_TEXT: usize = 256;
/// Most items of an array attribute made from traffic (tool calls, finish reasons).
pub const MAX_ITEMS: usize = 128;

/// `s` cut to [`MAX_TEXT`] bytes on a character boundary.
pub fn cap(s: &str) -> &str {
    crate::record::truncate(s, MAX_TEXT)
}

/// A `string` field made of `parts` joined by one space, without building the string.
pub fn put_str_joined(buf: &mut impl BufMut, field: u32, parts: &[&str]) {
    let len = parts.iter().map(|p| p.len()).sum::<usize>() + parts.len().saturating_sub(1);
    put_len_prefix(buf, field, len);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b' ');
        }
        buf.put_slice(p.as_bytes());
    }
}

/// A varint field (`uint32`, `uint64`, `int64`, `bool`, enums).
pub fn put_uint(buf: &mut impl BufMut, field: u32, v: u64) {
    put_tag(buf, field, VARINT);
    put_varint(buf, v);
}

/// A `fixed64` field.
pub fn put_fixed64(buf: &mut impl BufMut, field: u32, v: u64) {
    put_tag(buf, field, I64);
    buf.put_u64_le(v);
}

/// A `fixed32` field.
pub fn put_fixed32(buf: &mut impl BufMut, field: u32, v: u32) {
    put_tag(buf, field, I32);
    buf.put_u32_le(v);
}

/// An embedded message whose content `write` appends; its length is filled in afterwards.
///
/// One byte is reserved for the length, enough below 128 bytes (almost every attribute); a
/// longer message moves its content up by the extra length bytes.
pub fn put_message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    put_message_in(buf, field, 1, write);
}

/// [`put_message`] with `room` bytes reserved for the length: a message whose length needs
/// fewer moves its content down, one that needs more moves it up.
pub fn put_message_in(
    buf: &mut Vec<u8>,
    field: u32,
    room: usize,
    write: impl FnOnce(&mut Vec<u8>),
) {
    put_tag(buf, field, LEN);
    let at = buf.len();
    buf.resize(at + room, 0);
    write(buf);
    debug_assert!(buf.len() >= at + room, "`write` may only append");
    let end = buf.len();
    let len = end - at - room;
    let n = varint_len(len as u64);
    if n > room {
        buf.resize(end + n - room, 0);
        buf.copy_within(at + room..end, at + n);
    } else if n < room {
        buf.copy_within(at + room..end, at + n);
        buf.truncate(end - (room - n));
    }
    let mut slot = &mut buf[at..at + n];
    put_varint(&mut slot, len as u64);
}

/// Writes `KeyValue`s into a repeated attributes field (`Span.attributes` is field 9,
/// `Event.attributes` 3, `Resource.attributes` 1).
pub struct Attrs<'a> {
    buf: &'a mut Vec<u8>,
    field: u32,
}

// `AnyValue` oneof fields.
const STRING_VALUE: u32 = 1;
const BOOL_VALUE: u32 = 2;
const INT_VALUE: u32 = 3;
const DOUBLE_VALUE: u32 = 4;
const ARRAY_VALUE: u32 = 5;

impl<'a> Attrs<'a> {
    /// Attributes appended to `buf` as field `field` (below 16: a one-byte tag).
    pub fn new(buf: &'a mut Vec<u8>, field: u32) -> Self {
        debug_assert!(field < 16, "attributes field {field} needs a two-byte tag");
        Self { buf, field }
    }

    fn kv(&mut self, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
        put_message(self.buf, self.field, |b| {
            put_str(b, 1, key);
            put_message(b, 2, value);
        });
    }

    /// A `KeyValue` whose `AnyValue` content is `head` then `tail`, when every length fits in
    /// one byte (almost every attribute): four slice copies, no varint loops or back-patching.
    /// Attributes are most of a span's encoding time. `false` when something is too long.
    #[inline(always)]
    fn short(&mut self, key: &str, head: &[u8], tail: &[u8]) -> bool {
        let any_len = head.len() + tail.len();
        let kv_len = 2 + key.len() + 2 + any_len;
        if kv_len >= 128 {
            return false;
        }
        let b = &mut *self.buf;
        b.reserve(2 + kv_len);
        // field < 16, so the tag is one byte: (field << 3) | LEN.
        b.extend_from_slice(&[
            (self.field << 3 | LEN) as u8,
            kv_len as u8,
            0x0a,
            key.len() as u8,
        ]);
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&[0x12, any_len as u8]);
        b.extend_from_slice(head);
        b.extend_from_slice(tail);
        true
    }

    /// A string attribute.
    #[inline(always)]
    pub fn str(&mut self, key: &str, value: &str) {
        let head = [(STRING_VALUE << 3 | LEN) as u8, value.len() as u8];
        if value.len() >= 128 || !self.short(key, &head, value.as_bytes()) {
            self.kv(key, |b| put_str(b, STRING_VALUE, value));
        }
    }

    /// An integer attribute.
    #[inline(always)]
    pub fn int(&mut self, key: &str, value: i64) {
        // int64 is the two's complement as a varint.
        let mut head = [0u8; 11];
        head[0] = (INT_VALUE << 3 | VARINT) as u8;
        let mut rest = &mut head[1..];
        put_varint(&mut rest, value as u64);
        let n = 1 + varint_len(value as u64);
        if !self.short(key, &head[..n], &[]) {
            self.kv(key, |b| put_uint(b, INT_VALUE, value as u64));
        }
    }

    /// A floating-point attribute.
    #[inline(always)]
    pub fn double(&mut self, key: &str, value: f64) {
        let head = [(DOUBLE_VALUE << 3 | I64) as u8];
        if !self.short(key, &head, &value.to_bits().to_le_bytes()) {
            self.kv(key, |b| put_fixed64(b, DOUBLE_VALUE, value.to_bits()));
        }
    }

    /// A boolean attribute.
    #[inline(always)]
    pub fn bool(&mut self, key: &str, value: bool) {
        let head = [(BOOL_VALUE << 3 | VARINT) as u8, u8::from(value)];
        if !self.short(key, &head, &[]) {
            self.kv(key, |b| put_uint(b, BOOL_VALUE, u64::from(value)));
        }
    }

    /// A string-array attribute.
    pub fn str_array<S: AsRef<str>>(&mut self, key: &str, values: impl IntoIterator<Item = S>) {
        self.kv(key, |b| {
            put_message(b, ARRAY_VALUE, |b| {
                for v in values {
                    put_message(b, 1, |b| put_str(b, STRING_VALUE, v.as_ref()));
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn value(kv: &KeyValue) -> &any_value::Value {
        kv.value
            .as_ref()
            .and_then(|v| v.value.as_ref())
            .expect("a value")
    }

    #[test]
    fn varint_lengths_match_prost() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut ours = Vec::new();
            put_varint(&mut ours, v);
            assert_eq!(ours.len(), varint_len(v), "{v}");
            assert_eq!(ours.len(), prost::encoding::encoded_len_varint(v), "{v}");
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
        }
    }

    #[test]
    fn every_attribute_kind_decodes_with_prost() {
        let long = "x".repeat(20_000); // a length that needs three varint bytes
        let mut buf = Vec::new();
        let mut a = Attrs::new(&mut buf, 1);
        a.str("s", "value");
        a.str("empty", "");
        a.str("long", &long);
        a.int("i", -42);
        a.int("big", i64::MAX);
        a.double("d", 0.125);
        a.bool("b", true);
        a.str_array("arr", ["stop", "", "tool_calls"]);
        a.str_array("none", Vec::<String>::new());
        let r = Resource::decode(&buf[..]).expect("decodes");
        let keys: Vec<_> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            ["s", "empty", "long", "i", "big", "d", "b", "arr", "none"]
        );
        let s = |v: &str| any_value::Value::StringValue(v.into());
        assert_eq!(value(&r.attributes[0]), &s("value"));
        assert_eq!(value(&r.attributes[1]), &s(""));
        assert_eq!(value(&r.attributes[2]), &s(&long));
        assert_eq!(value(&r.attributes[3]), &any_value::Value::IntValue(-42));
        assert_eq!(
            value(&r.attributes[4]),
            &any_value::Value::IntValue(i64::MAX)
        );
        assert_eq!(
            value(&r.attributes[5]),
            &any_value::Value::DoubleValue(0.125)
        );
        assert_eq!(value(&r.attributes[6]), &any_value::Value::BoolValue(true));
        let any = |v: &str| AnyValue { value: Some(s(v)) };
        let any_value::Value::ArrayValue(arr) = value(&r.attributes[7]) else {
            panic!("not an array: {:?}", r.attributes[7]);
        };
        assert_eq!(arr.values, [any("stop"), any(""), any("tool_calls")]);
        let any_value::Value::ArrayValue(none) = value(&r.attributes[8]) else {
            panic!("not an array: {:?}", r.attributes[8]);
        };
        assert!(none.values.is_empty());
    }

    #[test]
    fn attributes_at_the_one_byte_length_boundary_decode() {
        // Around kv_len = 128 and value length = 128, where the short form gives way.
        for key_len in [1, 60, 119, 120, 121, 126, 127, 128, 200] {
            for value_len in [0, 1, 100, 120, 121, 127, 128, 129, 300] {
                let key = "k".repeat(key_len);
                let text = "v".repeat(value_len);
                let mut buf = Vec::new();
                let mut a = Attrs::new(&mut buf, 1);
                a.str(&key, &text);
                a.int(&key, i64::MIN);
                a.double(&key, -1.5);
                a.bool(&key, false);
                let r = Resource::decode(&buf[..]).expect("decodes");
                assert_eq!(r.attributes.len(), 4, "{key_len}/{value_len}");
                assert!(r.attributes.iter().all(|kv| kv.key == key));
                assert_eq!(
                    value(&r.attributes[0]),
                    &any_value::Value::StringValue(text.clone())
                );
                assert_eq!(
                    value(&r.attributes[1]),
                    &any_value::Value::IntValue(i64::MIN)
                );
                assert_eq!(
                    value(&r.attributes[2]),
                    &any_value::Value::DoubleValue(-1.5)
                );
                assert_eq!(value(&r.attributes[3]), &any_value::Value::BoolValue(false));
            }
        }
    }

    #[test]
    fn joined_string_is_one_field() {
        let mut buf = Vec::new();
        put_str_joined(&mut buf, 1, &["chat", "gpt-4o"]);
        put_str_joined(&mut buf, 2, &["chat"]);
        let mut expect = Vec::new();
        put_str(&mut expect, 1, "chat gpt-4o");
        put_str(&mut expect, 2, "chat");
        assert_eq!(buf, expect);
    }

    #[test]
    fn a_message_is_framed_alike_whatever_room_its_length_had() {
        for len in [0usize, 5, 127, 128, 300, 16_383, 16_384, 20_000, 2_097_152] {
            let content = vec![0xa5u8; len];
            let mut expect = b"before".to_vec();
            put_bytes(&mut expect, 2, &content);
            expect.extend_from_slice(b"after");
            for room in 1..=3 {
                let mut buf = b"before".to_vec();
                put_message_in(&mut buf, 2, room, |b| b.extend_from_slice(&content));
                buf.extend_from_slice(b"after");
                assert!(
                    buf == expect,
                    "content of {len} bytes, {room} bytes of room"
                );
            }
        }
    }
}
