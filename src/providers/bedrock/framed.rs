//! An event stream read message by message: [`Framed`] decodes the framing and hands each
//! event's type and payload to the operation's reader ([`Messages`]); exceptions become the
//! record's error, and a message that fails its checksum is counted unparsed (its bytes went to
//! the client untouched all the same).

use crate::providers::adapter::FramedStream;
use crate::providers::usage::ResponseRecord;

use super::eventstream::{EventItem, EventStreamDecoder};

/// What reads one operation's events.
pub(super) trait Messages: Send {
    /// One event (`kind` is its `:event-type`): `Some(true)` when it carried output, `None`
    /// when its payload could not be read.
    fn message(&mut self, kind: &[u8], payload: &[u8]) -> Option<bool>;

    /// The output of the event last read, as the format's output text reads it (estimates,
    /// content capture): by default its payload.
    fn output<'a>(&'a self, payload: &'a [u8]) -> &'a [u8] {
        payload
    }

    /// What the stream said so far.
    fn record_mut(&mut self) -> &mut ResponseRecord;

    /// The stream ended: everything it said.
    fn into_record(self) -> ResponseRecord;
}

/// One event stream being read.
pub(super) struct Framed<M> {
    decoder: EventStreamDecoder,
    messages: M,
}

impl<M: Messages> Framed<M> {
    /// A stream read by `messages`, keeping messages of at most `max_bytes`.
    pub(super) fn new(messages: M, max_bytes: usize) -> Self {
        Self {
            decoder: EventStreamDecoder::new(max_bytes),
            messages,
        }
    }
}

impl<M: Messages> FramedStream for Framed<M> {
    fn feed(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(usize, Option<&[u8]>)) -> u32 {
        let mut output = 0;
        let m = &mut self.messages;
        self.decoder.feed(chunk, |item, end| {
            let carried = match item {
                EventItem::Message(msg) => match msg.header(":message-type") {
                    Some(b"event") | None => {
                        let kind = msg.header(":event-type").unwrap_or_default();
                        match m.message(kind, msg.payload) {
                            Some(true) => Some(m.output(msg.payload)),
                            Some(false) => None,
                            None => {
                                m.record_mut().unparsed.get_or_insert("invalid_event");
                                None
                            }
                        }
                    }
                    // `exception` (modelStreamErrorException, throttlingException, ...) or
                    // `error`: the stream failed here.
                    Some(_) => {
                        let name = msg
                            .header(":exception-type")
                            .or_else(|| msg.header(":error-code"))
                            .unwrap_or(b"error");
                        m.record_mut().error_type = Some(String::from_utf8_lossy(name).into());
                        None
                    }
                },
                EventItem::Corrupt(_) => {
                    m.record_mut().unparsed.get_or_insert("bad_checksum");
                    None
                }
                EventItem::Oversized => {
                    m.record_mut().unparsed.get_or_insert("event_too_large");
                    None
                }
            };
            output += u32::from(carried.is_some());
            on_event(end, carried);
        });
        output
    }

    fn finish(self: Box<Self>) -> ResponseRecord {
        self.messages.into_record()
    }
}
