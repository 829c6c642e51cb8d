//! Pins the wire format of spec/protocol.md: frame prefix, message and refuse-reason tags,
//! varint rules, and the byte-for-byte layout of a Hello. A change here is a protocol change.

use walship_wire::frame::{encode_frame, MAX_BATCH_BYTES, MAX_FRAME_BYTES};
use walship_wire::message::{
    EpochEntry, Hello, Message, Position, RecordBatch, Refuse, RefuseReason, Welcome,
    MAX_DECODED_BYTES,
};

fn body(msg: &Message) -> Vec<u8> {
    let mut frame = Vec::new();
    let n = encode_frame(msg, &mut frame).expect("encode");
    assert_eq!(n, frame.len());
    let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(
        len,
        frame.len() - 4,
        "prefix is the body length, little-endian"
    );
    frame[4..].to_vec()
}

#[test]
fn limits_have_the_values_in_the_spec() {
    assert_eq!(MAX_FRAME_BYTES, 8_454_144);
    assert_eq!(MAX_BATCH_BYTES, 8_388_608);
    assert_eq!(MAX_DECODED_BYTES, 33_816_576);
    assert_eq!(walship_wire::ALPN, b"walship/4");
    assert_eq!(walship_wire::PROTOCOL_VERSION, 4);
}

#[test]
fn message_tags_match_the_spec_table() {
    let p = Position::default();
    let cases: Vec<(u8, Message)> = vec![
        (
            0,
            Message::Hello(Hello {
                protocol_version: walship_wire::PROTOCOL_VERSION,
                cluster_id: String::new(),
                node_id: String::new(),
                incarnation: 0,
                last: p,
                commit_lsn: 0,
                epoch_history: vec![],
                highest_epoch_seen: 0,
            }),
        ),
        (
            1,
            Message::Welcome(Welcome {
                protocol_version: walship_wire::PROTOCOL_VERSION,
                primary_id: String::new(),
                epoch: 0,
                at_replica_last: None,
                primary_last: p,
                commit_lsn: 0,
                epoch_history: vec![],
            }),
        ),
        (
            2,
            Message::Refuse(Refuse {
                reason: RefuseReason::NotAMember {
                    node_id: String::new(),
                },
            }),
        ),
        (3, Message::Probe { lsn: 0 }),
        (
            4,
            Message::ProbeReply {
                lsn: 0,
                position: None,
            },
        ),
        (
            5,
            Message::Records(RecordBatch {
                first_lsn: 0,
                count: 0,
                bytes: vec![],
                commit_lsn: 0,
            }),
        ),
        (6, Message::Receipt { durable_lsn: 0 }),
        (7, Message::Commit { commit_lsn: 0 }),
    ];
    for (tag, msg) in cases {
        assert_eq!(body(&msg)[0], tag, "tag of {}", msg.kind());
    }
}

#[test]
fn refuse_reason_tags_match_the_spec_table() {
    let s = String::new;
    let reasons = [
        RefuseReason::UnsupportedVersion { ours: 0, theirs: 0 },
        RefuseReason::ClusterMismatch {
            ours: s(),
            theirs: s(),
        },
        RefuseReason::NotAMember { node_id: s() },
        RefuseReason::NodeIdMismatch {
            claimed: s(),
            certified: s(),
        },
        RefuseReason::NotPrimary {
            epoch: 0,
            primary_hint: None,
        },
        RefuseReason::StalePrimary {
            primary_epoch: 0,
            current_epoch: 0,
        },
    ];
    for (tag, reason) in reasons.into_iter().enumerate() {
        let b = body(&Message::Refuse(Refuse {
            reason: reason.clone(),
        }));
        assert_eq!((b[0], b[1] as usize), (2, tag), "{reason:?}");
    }
}

#[test]
fn failover_refusals_encode_byte_for_byte_as_specified() {
    let b = body(&Message::Refuse(Refuse {
        reason: RefuseReason::NotPrimary {
            epoch: 300,
            primary_hint: Some("n3".into()),
        },
    }));
    // Refuse, NotPrimary, epoch 300 (251 + u16 LE), Some, "n3".
    assert_eq!(b, vec![2, 4, 251, 0x2c, 0x01, 1, 2, b'n', b'3']);
    let b = body(&Message::Refuse(Refuse {
        reason: RefuseReason::NotPrimary {
            epoch: 5,
            primary_hint: None,
        },
    }));
    assert_eq!(b, vec![2, 4, 5, 0]);
    let b = body(&Message::Refuse(Refuse {
        reason: RefuseReason::StalePrimary {
            primary_epoch: 2,
            current_epoch: 3,
        },
    }));
    assert_eq!(b, vec![2, 5, 2, 3]);
}

#[test]
fn retired_refuse_reason_tags_6_to_8_do_not_decode() {
    for tag in 6u8..=8 {
        // Refuse (message tag 2), reason tag, no fields.
        let body = [2u8, tag];
        let got = walship_wire::frame::decode_frame_body(&body);
        assert!(
            matches!(got, Err(walship_wire::FrameError::Malformed(_))),
            "reason tag {tag}: {got:?}"
        );
    }
}

#[test]
fn hello_encodes_byte_for_byte_as_specified() {
    let msg = Message::Hello(Hello {
        protocol_version: 3,
        cluster_id: "c1".into(),
        node_id: "n2".into(),
        incarnation: 0x0102_0304_0506_0708,
        last: Position {
            lsn: 300,
            epoch: 2,
            crc: 0x0102_0304,
        },
        commit_lsn: 250,
        epoch_history: vec![
            EpochEntry {
                epoch: 1,
                start_lsn: 1,
            },
            EpochEntry {
                epoch: 2,
                start_lsn: 70_000,
            },
        ],
        highest_epoch_seen: 2,
    });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0,                          // tag Hello
        3,                          // protocol_version
        2, b'c', b'1',              // cluster_id
        2, b'n', b'2',              // node_id
        253, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // incarnation (253 + u64 LE)
        251, 0x2c, 0x01,            // last.lsn = 300 (251 + u16 LE)
        2,                          // last.epoch
        252, 0x04, 0x03, 0x02, 0x01, // last.crc (252 + u32 LE)
        250,                        // commit_lsn (< 251: one byte)
        2,                          // epoch_history length
        1, 1,                       // {epoch 1, start_lsn 1}
        2, 252, 0x70, 0x11, 0x01, 0x00, // {epoch 2, start_lsn 70000}
        2,                          // highest_epoch_seen
    ];
    assert_eq!(body(&msg), expected);
    // Incarnation 0 (unknown) is one byte.
    let Message::Hello(mut hello) = msg else {
        unreachable!()
    };
    hello.incarnation = 0;
    let b = body(&Message::Hello(hello));
    assert_eq!(&b[..9], &[0, 3, 2, b'c', b'1', 2, b'n', b'2', 0]);
    assert_eq!(b.len(), expected.len() - 8);
}

#[test]
fn version_2_hello_bytes_are_read_as_version_2_never_as_this_version() {
    // The pinned version-2 Hello (no incarnation field). Decoded by this build it is either
    // a Hello of version 2 (its later fields shifted) or, when the shifted fields do not
    // decode, `UnsupportedVersion{theirs: 2}`: both are refused by version (spec/protocol.md §7).
    #[rustfmt::skip]
    let v2: Vec<u8> = vec![
        0, 2, 2, b'c', b'1', 2, b'n', b'2',
        251, 0x2c, 0x01, 2, 252, 0x04, 0x03, 0x02, 0x01, 250,
        2, 1, 1, 2, 252, 0x70, 0x11, 0x01, 0x00, 2,
    ];
    match walship_wire::frame::decode_frame_body(&v2) {
        Err(walship_wire::FrameError::UnsupportedVersion { theirs: 2 }) => {}
        Ok(Message::Hello(h)) => assert_eq!(h.protocol_version, 2),
        other => panic!("a version-2 Hello must be read as version 2: {other:?}"),
    }
}

#[test]
fn record_batch_bytes_are_copied_unchanged_after_their_length() {
    let records = vec![0xde, 0xad, 0xbe, 0xef];
    let b = body(&Message::Records(RecordBatch {
        first_lsn: 5,
        count: 1,
        bytes: records.clone(),
        commit_lsn: 4,
    }));
    assert_eq!(b, vec![5, 5, 1, 4, 0xde, 0xad, 0xbe, 0xef, 4]);
}
