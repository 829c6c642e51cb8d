//! Property tests of the frame codec: every message round-trips through `encode_frame` and a
//! `FrameDecoder` fed random chunk sizes; random, truncated and mutated input yields errors,
//! never panics.

use proptest::prelude::*;
use walship_wire::frame::{
    decode_frame_body, encode_frame, FrameDecoder, FrameError, FRAME_HEADER_LEN, MAX_FRAME_BYTES,
};
use walship_wire::message::{
    EpochEntry, Hello, Message, Position, RecordBatch, Refuse, RefuseReason, Welcome,
};

fn position() -> impl Strategy<Value = Position> {
    (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(lsn, epoch, crc)| Position {
        lsn,
        epoch,
        crc,
    })
}

fn epochs() -> impl Strategy<Value = Vec<EpochEntry>> {
    prop::collection::vec(
        (any::<u64>(), any::<u64>()).prop_map(|(epoch, start_lsn)| EpochEntry { epoch, start_lsn }),
        0..5,
    )
}

fn name() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

fn refuse_reason() -> impl Strategy<Value = RefuseReason> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(ours, theirs)| RefuseReason::UnsupportedVersion { ours, theirs }),
        (name(), name()).prop_map(|(ours, theirs)| RefuseReason::ClusterMismatch { ours, theirs }),
        name().prop_map(|node_id| RefuseReason::NotAMember { node_id }),
        (name(), name())
            .prop_map(|(claimed, certified)| RefuseReason::NodeIdMismatch { claimed, certified }),
        (any::<u64>(), proptest::option::of(name())).prop_map(|(epoch, primary_hint)| {
            RefuseReason::NotPrimary {
                epoch,
                primary_hint,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(primary_epoch, current_epoch)| {
            RefuseReason::StalePrimary {
                primary_epoch,
                current_epoch,
            }
        }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u32>(),
            name(),
            name(),
            any::<u64>(),
            position(),
            any::<u64>(),
            epochs(),
            any::<u64>()
        )
            .prop_map(
                |(
                    protocol_version,
                    cluster_id,
                    node_id,
                    incarnation,
                    last,
                    commit_lsn,
                    epoch_history,
                    highest_epoch_seen,
                )| {
                    Message::Hello(Hello {
                        protocol_version,
                        cluster_id,
                        node_id,
                        incarnation,
                        last,
                        commit_lsn,
                        epoch_history,
                        highest_epoch_seen,
                    })
                }
            ),
        (
            any::<u32>(),
            name(),
            any::<u64>(),
            prop::option::of(position()),
            position(),
            any::<u64>(),
            epochs()
        )
            .prop_map(
                |(
                    protocol_version,
                    primary_id,
                    epoch,
                    at_replica_last,
                    primary_last,
                    commit_lsn,
                    epoch_history,
                )| {
                    Message::Welcome(Welcome {
                        protocol_version,
                        primary_id,
                        epoch,
                        at_replica_last,
                        primary_last,
                        commit_lsn,
                        epoch_history,
                    })
                }
            ),
        refuse_reason().prop_map(|reason| Message::Refuse(Refuse { reason })),
        any::<u64>().prop_map(|lsn| Message::Probe { lsn }),
        (any::<u64>(), prop::option::of(position()))
            .prop_map(|(lsn, position)| Message::ProbeReply { lsn, position }),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..2048),
            any::<u64>()
        )
            .prop_map(|(first_lsn, count, bytes, commit_lsn)| {
                Message::Records(RecordBatch {
                    first_lsn,
                    count,
                    bytes,
                    commit_lsn,
                })
            }),
        any::<u64>().prop_map(|durable_lsn| Message::Receipt { durable_lsn }),
        any::<u64>().prop_map(|commit_lsn| Message::Commit { commit_lsn }),
    ]
}

/// Feeds `bytes` to a fresh decoder in chunks of the given sizes (cycled), collecting messages.
fn decode_chunked(bytes: &[u8], chunk_sizes: &[usize]) -> Result<Vec<Message>, FrameError> {
    let mut decoder = FrameDecoder::default();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while offset < bytes.len() {
        let size = chunk_sizes[i % chunk_sizes.len()].max(1);
        let end = (offset + size).min(bytes.len());
        decoder.push(&bytes[offset..end])?;
        while let Some(msg) = decoder.next_message()? {
            out.push(msg);
        }
        offset = end;
        i += 1;
    }
    decoder.finish()?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_message_sequence_round_trips_through_random_chunking(
        msgs in prop::collection::vec(message(), 1..8),
        chunk_sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut bytes = Vec::new();
        for m in &msgs {
            let n = encode_frame(m, &mut bytes).expect("encode");
            prop_assert!(n > FRAME_HEADER_LEN);
        }
        let decoded = decode_chunked(&bytes, &chunk_sizes).expect("decode");
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn every_strict_prefix_of_a_body_is_malformed(msg in message(), cut in any::<prop::sample::Index>()) {
        let mut frame = Vec::new();
        encode_frame(&msg, &mut frame).expect("encode");
        let body = &frame[FRAME_HEADER_LEN..];
        let short = &body[..cut.index(body.len())];
        let result = decode_frame_body(short);
        let is_error = matches!(
            result,
            Err(FrameError::Malformed(_)) | Err(FrameError::UnsupportedVersion { .. })
        );
        prop_assert!(is_error, "strict prefix decoded: {:?}", result);
    }

    #[test]
    fn stream_ending_inside_a_frame_is_truncated(msg in message(), cut in any::<prop::sample::Index>()) {
        let mut frame = Vec::new();
        encode_frame(&msg, &mut frame).expect("encode");
        let cut = 1 + cut.index(frame.len() - 1); // 1 ..= len-1: strictly inside the frame
        let mut decoder = FrameDecoder::default();
        decoder.push(&frame[..cut]).expect("push");
        prop_assert!(decoder.next_message().expect("no error yet").is_none());
        let expected = if cut < FRAME_HEADER_LEN { FRAME_HEADER_LEN } else { frame.len() };
        match decoder.finish() {
            Err(FrameError::Truncated { received, expected: e }) => {
                prop_assert_eq!(received, cut);
                prop_assert_eq!(e, expected);
            }
            other => prop_assert!(false, "expected Truncated, got {:?}", other),
        }
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        chunk_sizes in prop::collection::vec(1usize..32, 1..4),
    ) {
        let _ = decode_chunked(&bytes, &chunk_sizes);
        let _ = decode_frame_body(&bytes);
    }

    #[test]
    fn mutated_bodies_decode_or_fail_without_panicking(
        msg in message(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut frame = Vec::new();
        encode_frame(&msg, &mut frame).expect("encode");
        let i = FRAME_HEADER_LEN + at.index(frame.len() - FRAME_HEADER_LEN);
        frame[i] ^= xor;
        let mut decoder = FrameDecoder::default();
        decoder.push(&frame).expect("prefix unchanged");
        let _ = decoder.next_message();
    }

    #[test]
    fn length_prefix_above_limit_is_too_large(len in (MAX_FRAME_BYTES + 1)..=u32::MAX) {
        let mut decoder = FrameDecoder::default();
        match decoder.push(&len.to_le_bytes()) {
            Err(FrameError::TooLarge { len: l, max }) => {
                prop_assert_eq!(l, len);
                prop_assert_eq!(max, MAX_FRAME_BYTES);
            }
            other => prop_assert!(false, "expected TooLarge, got {:?}", other),
        }
    }
}

#[test]
fn record_batch_at_the_limit_round_trips_and_one_byte_more_is_refused_by_the_encoder() {
    // Body overhead of a batch with small field values: tag 1 + first_lsn 1 + count 1 +
    // byte-string length varint 5 (u32 form) + commit_lsn 1 = 9 bytes.
    let batch = |len: usize| {
        Message::Records(RecordBatch {
            first_lsn: 1,
            count: 1,
            bytes: vec![7; len],
            commit_lsn: 0,
        })
    };
    let fits = MAX_FRAME_BYTES as usize - 9;
    let mut frame = Vec::new();
    let n = encode_frame(&batch(fits), &mut frame).expect("a body of exactly the limit encodes");
    assert_eq!(n, FRAME_HEADER_LEN + MAX_FRAME_BYTES as usize);
    let mut decoder = FrameDecoder::default();
    decoder.push(&frame).expect("push");
    assert_eq!(decoder.next_message().expect("decode"), Some(batch(fits)));

    let mut out = vec![1, 2, 3];
    match encode_frame(&batch(fits + 1), &mut out) {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(len, MAX_FRAME_BYTES + 1);
            assert_eq!(max, MAX_FRAME_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        out,
        vec![1, 2, 3],
        "a failed encode leaves the buffer unchanged"
    );
}

#[test]
fn decoder_with_lower_limit_rejects_frames_above_it() {
    let mut frame = Vec::new();
    encode_frame(
        &Message::Records(RecordBatch {
            first_lsn: 1,
            count: 1,
            bytes: vec![0; 100],
            commit_lsn: 0,
        }),
        &mut frame,
    )
    .expect("encode");
    let mut decoder = FrameDecoder::new(64);
    assert!(matches!(
        decoder.push(&frame),
        Err(FrameError::TooLarge { max: 64, .. })
    ));
}

#[test]
fn decoder_refuses_further_use_after_a_malformed_body() {
    let mut decoder = FrameDecoder::default();
    // Tag 200 is no Message variant.
    decoder.push(&[1, 0, 0, 0, 200]).expect("prefix ok");
    assert!(matches!(
        decoder.next_message(),
        Err(FrameError::Malformed(_))
    ));
    let mut good = Vec::new();
    encode_frame(&Message::Commit { commit_lsn: 1 }, &mut good).expect("encode");
    assert!(matches!(decoder.push(&good), Err(FrameError::Malformed(_))));
}

#[test]
fn hello_of_another_version_with_undecodable_fields_is_unsupported_version() {
    // Tag 0 (Hello), version 1 (before failover), 2 (before incarnations), 3 (before
    // snapshot configurations) or 5 (a future one), then bytes that are not a Hello of this
    // build's version.
    for version in [1u8, 2, 3, 5] {
        let body = [0u8, version, 0xff, 0xff, 0xff];
        match decode_frame_body(&body) {
            Err(FrameError::UnsupportedVersion { theirs }) => {
                assert_eq!(theirs, u32::from(version))
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }
}
