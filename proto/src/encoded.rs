//! A `WatchEvent` that is already protobuf-encoded.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::v1::WatchEvent;

/// The protobuf encoding of a [`WatchEvent`], shared by reference among streams.
///
/// Encoding it writes the stored bytes verbatim, so a server that sends one version to many
/// watchers pays for the encoding once. It decodes from any valid `WatchEvent` encoding.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncodedWatchEvent(Bytes);

impl EncodedWatchEvent {
    /// Encodes `event` once.
    pub fn new(event: &WatchEvent) -> Self {
        Self(Bytes::from(event.encode_to_vec()))
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Decodes the bytes back into a [`WatchEvent`].
    pub fn decode_event(&self) -> Result<WatchEvent, DecodeError> {
        WatchEvent::decode(self.0.clone())
    }
}

impl std::fmt::Debug for EncodedWatchEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedWatchEvent")
            .field("len", &self.0.len())
            .finish()
    }
}

impl Message for EncodedWatchEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Decoding is off the hot path (servers only encode): merge into a typed event and keep
        // its canonical encoding.
        let mut event = if self.0.is_empty() {
            WatchEvent::default()
        } else {
            WatchEvent::decode(self.0.clone())?
        };
        event.merge_field(tag, wire_type, buf, ctx)?;
        self.0 = Bytes::from(event.encode_to_vec());
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Delta, Topic, watch_event::Event};

    #[test]
    fn round_trips_byte_for_byte() {
        let ev = WatchEvent {
            event: Some(Event::Delta(Delta {
                from_version: 4,
                to_version: 5,
                upsert_topics: vec![Topic {
                    name: "orders".into(),
                    cluster: "east".into(),
                    partitions: 6,
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        let enc = EncodedWatchEvent::new(&ev);
        let wire = enc.encode_to_vec();
        assert_eq!(wire, ev.encode_to_vec());
        assert_eq!(WatchEvent::decode(&wire[..]).unwrap(), ev);
        let back = EncodedWatchEvent::decode(&wire[..]).unwrap();
        assert_eq!(back, enc);
        assert_eq!(back.decode_event().unwrap(), ev);
    }
}
