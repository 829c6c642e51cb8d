//! `read_frame` / `write_frame` over real quinn streams: clean end, truncation, garbage,
//! oversize, resets and lost connections, each a distinct outcome.

mod support;

use walship_wire::frame::{FrameError, MAX_FRAME_BYTES};
use walship_wire::message::{Message, RecordBatch};
use walship_wire::stream::{read_frame, write_frame};

/// Client writes `bytes` raw on a new stream and finishes it; server reads up to two frames.
async fn send_raw_and_read(bytes: &[u8]) -> Result<Option<Message>, FrameError> {
    let pair = support::connected_pair().await;
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    send.write_all(bytes).await.expect("write");
    send.finish().expect("finish");
    let (_s, mut recv) = pair.server.accept_bi().await.expect("accept");
    read_frame(&mut recv, MAX_FRAME_BYTES).await
}

#[tokio::test]
async fn frames_then_clean_finish_read_as_messages_then_end_of_stream() {
    let pair = support::connected_pair().await;
    let msgs = vec![
        Message::Commit { commit_lsn: 9 },
        Message::Records(RecordBatch {
            first_lsn: 10,
            count: 1,
            bytes: vec![5; 300_000],
            commit_lsn: 9,
        }),
        Message::Receipt { durable_lsn: 10 },
    ];
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    let writer = async {
        for m in &msgs {
            write_frame(&mut send, m).await.expect("write");
        }
        send.finish().expect("finish");
    };
    let reader = async {
        let (_s, mut recv) = pair.server.accept_bi().await.expect("accept");
        let mut got = Vec::new();
        while let Some(m) = read_frame(&mut recv, MAX_FRAME_BYTES).await.expect("read") {
            got.push(m);
        }
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(got, msgs);
}

#[tokio::test]
async fn stream_finished_inside_the_prefix_is_truncated() {
    match send_raw_and_read(&[10, 0]).await {
        Err(
            e @ FrameError::Truncated {
                received: 2,
                expected: 4,
            },
        ) => assert!(e.is_session_end()),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_finished_inside_the_body_is_truncated() {
    let mut bytes = 100u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 10]);
    match send_raw_and_read(&bytes).await {
        Err(
            e @ FrameError::Truncated {
                received: 14,
                expected: 104,
            },
        ) => {
            assert!(e.is_session_end())
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_body_is_malformed_and_not_a_session_end() {
    match send_raw_and_read(&[3, 0, 0, 0, 200, 1, 2]).await {
        Err(e @ FrameError::Malformed(_)) => assert!(!e.is_session_end()),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_prefix_is_too_large_before_the_body_arrives() {
    // Only the prefix is sent: the reader must refuse without waiting for (or allocating) a body.
    let len = MAX_FRAME_BYTES + 1;
    match send_raw_and_read(&len.to_le_bytes()).await {
        Err(e @ FrameError::TooLarge { .. }) => {
            assert!(matches!(e, FrameError::TooLarge { len: l, max: MAX_FRAME_BYTES } if l == len));
            assert!(!e.is_session_end());
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn reader_limit_below_protocol_maximum_is_enforced() {
    let pair = support::connected_pair().await;
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    let msg = Message::Records(RecordBatch {
        first_lsn: 1,
        count: 1,
        bytes: vec![1; 1000],
        commit_lsn: 0,
    });
    write_frame(&mut send, &msg).await.expect("write");
    let (_s, mut recv) = pair.server.accept_bi().await.expect("accept");
    assert!(matches!(
        read_frame(&mut recv, 512).await,
        Err(FrameError::TooLarge { max: 512, .. })
    ));
}

#[tokio::test]
async fn stream_reset_by_peer_mid_frame_is_a_session_end() {
    let pair = support::connected_pair().await;
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    send.write_all(&[50, 0, 0, 0, 1, 2]).await.expect("write");
    let (_s, mut recv) = pair.server.accept_bi().await.expect("accept");
    send.reset(quinn::VarInt::from_u32(7)).expect("reset");
    match read_frame(&mut recv, MAX_FRAME_BYTES).await {
        Err(e @ FrameError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code, quinn::VarInt::from_u32(7));
            assert!(e.is_session_end());
        }
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_closed_mid_frame_is_a_session_end() {
    let pair = support::connected_pair().await;
    let (mut send, _recv) = pair.client.open_bi().await.expect("open");
    send.write_all(&[50, 0, 0, 0, 1, 2]).await.expect("write");
    let (_s, mut recv) = pair.server.accept_bi().await.expect("accept");
    pair.client.close(quinn::VarInt::from_u32(1), b"bye");
    match read_frame(&mut recv, MAX_FRAME_BYTES).await {
        Err(e @ FrameError::Read(quinn::ReadError::ConnectionLost(_))) => {
            assert!(e.is_session_end())
        }
        other => panic!("expected a lost connection, got {other:?}"),
    }
}
