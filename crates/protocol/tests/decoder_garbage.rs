//! Property-style: random bytes, random garbage between valid frames, random feed sizes. The
//! decoder never panics, never holds more than one frame plus one feed, and after the host's
//! resync sequence (MAX_FRAME_LEN + 4 zeros, then the sync frame) decodes valid frames again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agentbox_protocol::{encode_control, Decoder, Frame, Request, MAX_FRAME_LEN, SYNC_FRAME};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn feed_in_pieces(
    d: &mut Decoder<Request>,
    data: &[u8],
    rng: &mut XorShift,
) -> Vec<Frame<Request>> {
    let mut frames = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = (rng.below(4096) as usize + 1).min(rest.len());
        d.feed(&rest[..n]);
        rest = &rest[n..];
        while let Some(f) = d.next_frame() {
            if let Ok(f) = f {
                frames.push(f);
            }
        }
        assert!(d.buffered() <= 4 + MAX_FRAME_LEN as usize + 4096);
    }
    frames
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let len = rng.below(20_000) as usize;
        let mut data = rng.bytes(len);
        // Bias some rounds toward plausible headers: small lengths and known kinds.
        if round % 3 == 0 {
            for chunk in data.chunks_mut(17) {
                if chunk.len() >= 5 {
                    chunk[..3].fill(0);
                    chunk[4] = [0x01, 0x02, 0x03, 0x05, 0x7f][rng.below(5) as usize];
                }
            }
        }
        let mut d = Decoder::<Request>::new();
        let _ = feed_in_pieces(&mut d, &data, &mut rng);
    }
}

#[test]
fn resync_sequence_recovers_after_any_garbage() {
    let mut rng = XorShift(12345);
    let mut resync = vec![0u8; MAX_FRAME_LEN as usize + 4];
    resync.extend_from_slice(&SYNC_FRAME);
    for _ in 0..20 {
        let garbage_len = rng.below(3000) as usize;
        let mut data = rng.bytes(garbage_len);
        data.extend_from_slice(&resync);
        encode_control(&Request::ResourceUse { id: 77 }, &mut data).unwrap();
        let mut d = Decoder::<Request>::new();
        let frames = feed_in_pieces(&mut d, &data, &mut rng);
        assert_eq!(
            frames.last(),
            Some(&Frame::Control(Request::ResourceUse { id: 77 })),
            "the request after the resync sequence is decoded"
        );
        assert!(frames.contains(&Frame::Sync));
    }
}
