#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::frame::{encode_control, encode_data, DataKind, Frame, SYNC_FRAME};
use crate::message::{ErrorCode, Reply, Request, RunRequest};

fn run_request(id: u32) -> Request {
    Request::Run {
        id,
        run: RunRequest {
            argv: vec!["echo".into(), "hi".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            stdin: false,
            timeout_ms: Some(1000),
            uid: None,
            gid: None,
            layered_spec: None,
        },
    }
}

fn drain<M: serde::de::DeserializeOwned>(d: &mut Decoder<M>) -> Vec<Result<Frame<M>, DecodeError>> {
    std::iter::from_fn(|| d.next_frame()).collect()
}

#[test]
fn control_frame_bytes_are_exact() {
    let mut out = Vec::new();
    encode_control(&Request::ResourceUse { id: 7 }, &mut out).unwrap();
    let json = br#"{"type":"resource_use","id":7}"#;
    let mut expected = ((json.len() + 1) as u32).to_be_bytes().to_vec();
    expected.push(0x01);
    expected.extend_from_slice(json);
    assert_eq!(out, expected);
}

#[test]
fn data_frame_bytes_are_exact() {
    let mut out = Vec::new();
    encode_data(DataKind::Stdout, 0x0102_0304, b"hi\n", &mut out).unwrap();
    assert_eq!(out, [0, 0, 0, 8, 0x03, 1, 2, 3, 4, b'h', b'i', b'\n']);
}

#[test]
fn run_request_json_is_stable() {
    let json = serde_json::to_string(&run_request(1)).unwrap();
    assert_eq!(
        json,
        r#"{"type":"run","id":1,"argv":["echo","hi"],"env":[["PATH","/bin"]],"cwd":"/","stdin":false,"timeout_ms":1000,"uid":null,"gid":null,"layered_spec":null}"#
    );
    let minimal: Request =
        serde_json::from_str(r#"{"type":"run","id":2,"argv":["true"],"cwd":"/"}"#).unwrap();
    assert!(matches!(minimal, Request::Run { id: 2, run } if run.env.is_empty() && !run.stdin));
    // A 1.0 host's reserved flag is ignored; 1.1's spec decodes.
    let old: Request = serde_json::from_str(
        r#"{"type":"run","id":3,"argv":["true"],"cwd":"/","layered_ns":false}"#,
    )
    .unwrap();
    assert!(matches!(old, Request::Run { run, .. } if run.layered_spec.is_none()));
    let layered: Request = serde_json::from_str(
        r#"{"type":"run","id":4,"argv":["true"],"cwd":"/","layered_spec":"{\"tier\":\"ns\"}"}"#,
    )
    .unwrap();
    assert!(
        matches!(layered, Request::Run { run, .. } if run.layered_spec.as_deref() == Some(r#"{"tier":"ns"}"#))
    );
}

#[test]
fn frames_round_trip_fed_one_byte_at_a_time() {
    let mut out = Vec::new();
    encode_control(&run_request(3), &mut out).unwrap();
    encode_data(DataKind::Stdin, 3, b"input", &mut out).unwrap();
    out.extend_from_slice(&SYNC_FRAME);
    encode_data(DataKind::FileData, 4, b"", &mut out).unwrap();
    let mut d = Decoder::<Request>::new();
    let mut frames = Vec::new();
    for b in &out {
        d.feed(std::slice::from_ref(b));
        frames.extend(drain(&mut d));
    }
    let frames: Vec<_> = frames.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        frames,
        vec![
            Frame::Control(run_request(3)),
            Frame::Data {
                kind: DataKind::Stdin,
                id: 3,
                bytes: b"input".to_vec()
            },
            Frame::Sync,
            Frame::Data {
                kind: DataKind::FileData,
                id: 4,
                bytes: vec![]
            },
        ]
    );
    assert_eq!(d.buffered(), 0);
}

#[test]
fn replies_round_trip() {
    let replies = vec![
        Reply::Error {
            id: Some(1),
            code: ErrorCode::NotFound,
            message: "x".into(),
        },
        Reply::Exited {
            id: 2,
            exit: crate::ExitRecord {
                code: Some(7),
                signal: None,
                timed_out: false,
                usage: crate::Usage {
                    max_rss_kb: 1,
                    user_ms: 2,
                    sys_ms: 3,
                    wall_ms: 4,
                },
            },
        },
        Reply::Resources {
            id: 3,
            resources: crate::ResourceUse {
                load_1: 0.5,
                ..Default::default()
            },
        },
    ];
    let mut out = Vec::new();
    for r in &replies {
        encode_control(r, &mut out).unwrap();
    }
    let mut d = Decoder::<Reply>::new();
    d.feed(&out);
    let back: Vec<_> = drain(&mut d).into_iter().map(|f| f.unwrap()).collect();
    assert_eq!(
        back,
        replies.into_iter().map(Frame::Control).collect::<Vec<_>>()
    );
}

#[test]
fn bad_frame_with_intact_length_is_skipped() {
    let mut out = vec![0, 0, 0, 3, 0x42, 1, 2]; // unknown kind
    out.extend_from_slice(&[0, 0, 0, 3, 0x03, 1, 2]); // data shorter than its id
    let bad_json = br#"{"type":"nope","id":9}"#;
    out.extend_from_slice(&((bad_json.len() + 1) as u32).to_be_bytes());
    out.push(0x01);
    out.extend_from_slice(bad_json);
    encode_control(&Request::PowerOff { id: 1 }, &mut out).unwrap();
    let mut d = Decoder::<Request>::new();
    d.feed(&out);
    let got = drain(&mut d);
    assert_eq!(got[0], Err(DecodeError::UnknownKind { kind: 0x42 }));
    assert_eq!(got[1], Err(DecodeError::ShortData { kind: 0x03, len: 2 }));
    assert!(
        matches!(&got[2], Err(e @ DecodeError::BadMessage { id: Some(9), .. }) if !e.is_fatal())
    );
    assert_eq!(got[3], Ok(Frame::Control(Request::PowerOff { id: 1 })));
    assert!(!d.is_resyncing());
}

#[test]
fn bad_length_loses_framing_until_sync() {
    let mut out = vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    encode_control(&Request::PowerOff { id: 1 }, &mut out).unwrap(); // swallowed by the scan
    out.extend_from_slice(&SYNC_FRAME);
    encode_control(&Request::ResourceUse { id: 2 }, &mut out).unwrap();
    let mut d = Decoder::<Request>::new();
    d.feed(&out);
    let got = drain(&mut d);
    assert_eq!(
        got,
        vec![
            Err(DecodeError::TooLarge { len: u32::MAX }),
            Ok(Frame::Sync),
            Ok(Frame::Control(Request::ResourceUse { id: 2 })),
        ]
    );
}

#[test]
fn zero_length_is_fatal_and_resync_memory_is_bounded() {
    let mut d = Decoder::<Request>::new();
    d.feed(&[0, 0, 0, 0]);
    assert_eq!(d.next_frame(), Some(Err(DecodeError::EmptyFrame)));
    assert!(d.is_resyncing());
    for _ in 0..100 {
        d.feed(&[0x55; 10_000]);
        assert!(d.next_frame().is_none());
        assert!(d.buffered() < SYNC_FRAME.len());
    }
    // A sync frame split across feeds is still found.
    d.feed(&SYNC_FRAME[..6]);
    assert!(d.next_frame().is_none());
    d.feed(&SYNC_FRAME[6..]);
    assert_eq!(d.next_frame(), Some(Ok(Frame::Sync)));
}

#[test]
fn encoder_refuses_oversized_frames() {
    let mut out = Vec::new();
    let big = vec![0u8; crate::MAX_FRAME_LEN as usize];
    assert!(encode_data(DataKind::Stdout, 1, &big, &mut out).is_err());
    assert!(out.is_empty());
}
