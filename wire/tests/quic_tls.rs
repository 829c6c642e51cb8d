//! Real quinn connections on loopback with certificates from `certs::generate`: mutual TLS, the
//! member check, the server-name check, `peer_node_id`, and frames over a stream.

use std::net::SocketAddr;
use std::path::Path;

use walship_wire::certs::{generate, TlsFiles, TlsMaterial};
use walship_wire::endpoint::{client_endpoint_with, connect, server_endpoint_with, EndpointError};
use walship_wire::frame::MAX_FRAME_BYTES;
use walship_wire::message::{EpochEntry, Hello, Message, Position, PROTOCOL_VERSION};
use walship_wire::stream::{read_frame, write_frame};
use walship_wire::tls::peer_node_id;
use walship_wire::TransportOptions;

const PRIMARY: &str = "n1";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn material(dir: &Path, node: &str) -> TlsMaterial {
    TlsFiles::for_node(dir, node)
        .load()
        .expect("load generated files")
}

fn members(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A primary endpoint for n1 from `dir` accepting `accept`.
fn primary(dir: &Path, accept: &[&str]) -> quinn::Endpoint {
    server_endpoint_with(
        loopback(),
        &material(dir, PRIMARY),
        &members(accept),
        &TransportOptions::default(),
    )
    .expect("server endpoint")
}

fn client(m: &TlsMaterial) -> quinn::Endpoint {
    client_endpoint_with(loopback(), m, &TransportOptions::default()).expect("client endpoint")
}

/// Accepts one incoming connection; returns the handshake result on the server side.
async fn accept_one(server: &quinn::Endpoint) -> Result<quinn::Connection, quinn::ConnectionError> {
    let incoming = server.accept().await.expect("endpoint open");
    incoming.await
}

/// Asserts that the server refused the client during the TLS handshake with a crypto
/// (TLS alert) error, and that the client's connection does not survive.
async fn assert_refused(server: &quinn::Endpoint, client_m: &TlsMaterial) {
    let server_addr = server.local_addr().expect("addr");
    let c = client(client_m);
    let (server_side, client_side) =
        tokio::join!(accept_one(server), connect(&c, server_addr, PRIMARY));
    match server_side {
        Err(quinn::ConnectionError::TransportError(e)) => {
            assert!(
                e.code.to_string().contains("TLS alert") || e.code.to_string().contains("crypto"),
                "expected a TLS alert, got {e}"
            );
        }
        other => panic!("server accepted a client it must refuse: {other:?}"),
    }
    // In TLS 1.3 the client may finish its side before the server checks its certificate;
    // either the connect fails or the connection is closed by the server.
    if let Ok(conn) = client_side {
        let reason = conn.closed().await;
        assert!(
            matches!(reason, quinn::ConnectionError::ConnectionClosed(_)),
            "client connection should be closed by the server, got {reason:?}"
        );
    }
}

fn hello(node: &str) -> Message {
    Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "test-cluster".into(),
        node_id: node.into(),
        last: Position {
            lsn: 7,
            epoch: 2,
            crc: 0xdead_beef,
        },
        commit_lsn: 5,
        epoch_history: vec![
            EpochEntry {
                epoch: 1,
                start_lsn: 1,
            },
            EpochEntry {
                epoch: 2,
                start_lsn: 4,
            },
        ],
        highest_epoch_seen: 2,
    })
}

#[tokio::test]
async fn member_with_cluster_cert_connects_and_both_sides_learn_the_peer_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), &["n1", "n2", "n3"]).expect("generate");
    let server = primary(dir.path(), &["n2", "n3"]);
    let server_addr = server.local_addr().expect("addr");
    let c = client(&material(dir.path(), "n2"));

    let (server_conn, client_conn) =
        tokio::join!(accept_one(&server), connect(&c, server_addr, PRIMARY));
    let server_conn = server_conn.expect("server handshake");
    let client_conn = client_conn.expect("client handshake");

    assert_eq!(
        peer_node_id(&server_conn, &members(&["n2", "n3"])).as_deref(),
        Some("n2")
    );
    assert_eq!(peer_node_id(&server_conn, &members(&["n3"])), None);
    assert_eq!(
        peer_node_id(&client_conn, &members(&[PRIMARY])).as_deref(),
        Some(PRIMARY)
    );

    // A frame travels, then a clean finish reads as the end of the stream.
    let sent = hello("n2");
    let writer = async {
        let (mut send, _recv) = client_conn.open_bi().await.expect("open stream");
        write_frame(&mut send, &sent).await.expect("write");
        send.finish().expect("finish");
        send.stopped().await.ok();
    };
    let reader = async {
        let (_send, mut recv) = server_conn.accept_bi().await.expect("accept stream");
        let first = read_frame(&mut recv, MAX_FRAME_BYTES).await.expect("read");
        let second = read_frame(&mut recv, MAX_FRAME_BYTES)
            .await
            .expect("read end");
        (first, second)
    };
    let ((), (first, second)) = tokio::join!(writer, reader);
    assert_eq!(first, Some(sent));
    assert_eq!(second, None);
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused_and_members_still_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), &["n1", "n2"]).expect("generate");
    generate(other.path(), &["n2"]).expect("generate other CA");
    let server = primary(dir.path(), &["n2"]);

    // The rogue trusts the real CA (so it accepts the server) but its own cert, for the member
    // name n2, is signed by another CA.
    let real = material(dir.path(), "n2");
    let foreign = material(other.path(), "n2");
    let rogue = TlsMaterial {
        ca_certs: real.ca_certs.clone(),
        cert_chain: foreign.cert_chain,
        key: foreign.key,
    };
    assert_refused(&server, &rogue).await;

    // The primary keeps serving members.
    let c = client(&real);
    let (s, cl) = tokio::join!(
        accept_one(&server),
        connect(&c, server.local_addr().expect("addr"), PRIMARY)
    );
    s.expect("member accepted after a refusal");
    cl.expect("member connected after a refusal");
}

#[tokio::test]
async fn client_with_valid_cert_for_unlisted_name_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), &["n1", "n2", "n3"]).expect("generate");
    let server = primary(dir.path(), &["n2"]);
    assert_refused(&server, &material(dir.path(), "n3")).await;
}

#[tokio::test]
async fn replica_refuses_a_server_whose_cert_is_not_for_the_configured_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), &["n1", "n2", "n3"]).expect("generate");
    let server = primary(dir.path(), &["n2"]);
    let c = client(&material(dir.path(), "n2"));
    let addr = server.local_addr().expect("addr");
    // The server presents n1's certificate; the replica expects the primary to be n3.
    let accept = async {
        let incoming = server.accept().await.expect("endpoint open");
        incoming.await
    };
    let (s, cl) = tokio::join!(accept, connect(&c, addr, "n3"));
    assert!(s.is_err(), "server side must not complete the handshake");
    match cl {
        Err(EndpointError::Connection {
            source: quinn::ConnectionError::TransportError(e),
            ..
        }) => assert!(
            e.to_string().contains("certificate"),
            "unexpected error {e}"
        ),
        other => panic!("replica accepted the wrong primary: {other:?}"),
    }
}
