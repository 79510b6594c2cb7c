//! The host <-> guest agent wire protocol: arbitrary bytes, fed in pieces whose sizes the input
//! chooses, to both directions' decoders. None may panic, and a decoder never holds more than one
//! frame plus one feed.

#![no_main]

use agentbox_protocol::{Decoder, Reply, Request, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fn drain<M: serde::de::DeserializeOwned>(decoder: &mut Decoder<M>, data: &[u8], piece: usize) {
    for chunk in data.chunks(piece) {
        decoder.feed(chunk);
        while decoder.next_frame().is_some() {}
        assert!(decoder.buffered() <= 4 + MAX_FRAME_LEN as usize + piece);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first) + 1;
    drain(&mut Decoder::<Request>::new(), rest, piece);
    drain(&mut Decoder::<Reply>::new(), rest, piece);
});
