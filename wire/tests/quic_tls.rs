//! Real quinn connections on loopback with certificates from `certs::generate`: mutual TLS, the
//! member check, the server-name check, `peer_node_id`, and frames over a stream.

use std::net::SocketAddr;
use std::path::Path;

use walship_wire::certs::{generate, TlsFiles, TlsMaterial};
use walship_wire::endpoint::{client_endpoint_with, connect, server_endpoint_with, EndpointError};
use walship_wire::frame::MAX_FRAME_BYTES;
use walship_wire::message::{EpochEntry, Hello, Message, Position, PROTOCOL_VERSION};
use walship_wire::stream::{read_frame, write_frame};
use walship_wire::tls::{cert_member_name, peer_node_id, CertNameError};
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
/// (TLS alert) error, and that the client's connection does not survive. Returns the server's
/// error text.
async fn assert_refused(server: &quinn::Endpoint, client_m: &TlsMaterial) -> String {
    let server_addr = server.local_addr().expect("addr");
    let c = client(client_m);
    let (server_side, client_side) =
        tokio::join!(accept_one(server), connect(&c, server_addr, PRIMARY));
    let refusal = match server_side {
        Err(quinn::ConnectionError::TransportError(e)) => {
            assert!(
                e.code.to_string().contains("TLS alert") || e.code.to_string().contains("crypto"),
                "expected a TLS alert, got {e}"
            );
            e.to_string()
        }
        other => panic!("server accepted a client it must refuse: {other:?}"),
    };
    // In TLS 1.3 the client may finish its side before the server checks its certificate;
    // either the connect fails or the connection is closed by the server.
    if let Ok(conn) = client_side {
        let reason = conn.closed().await;
        assert!(
            matches!(reason, quinn::ConnectionError::ConnectionClosed(_)),
            "client connection should be closed by the server, got {reason:?}"
        );
    }
    refusal
}

fn hello(node: &str) -> Message {
    Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "test-cluster".into(),
        node_id: node.into(),
        incarnation: 0x0123_4567_89ab_cdef,
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
        Ok("n2")
    );
    assert_eq!(
        peer_node_id(&server_conn, &members(&["n3"])),
        Err(CertNameError::NotAMember { name: "n2".into() })
    );
    assert_eq!(
        peer_node_id(&client_conn, &members(&[PRIMARY])).as_deref(),
        Ok(PRIMARY)
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

/// A cluster CA made here (not by `generate`), to sign certificates with any names.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("ca cert");
        TestCa { cert, key }
    }

    /// A node certificate with exactly these subject alternative names (an IP-shaped one
    /// becomes an IP address name), usable as server and client.
    fn material(&self, sans: &[&str]) -> TlsMaterial {
        let key = rcgen::KeyPair::generate().expect("key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = rcgen::CertificateParams::new(sans).expect("params");
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        TlsMaterial::from_pem(
            self.cert.pem().as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .expect("material")
    }
}

#[test]
fn a_certificate_must_name_exactly_one_member_and_not_a_pattern() {
    let ca = TestCa::new();
    let m = members(&["n2", "n3", "n2.walship", "n3.walship"]);
    let name = |sans: &[&str]| cert_member_name(&ca.material(sans).cert_chain[0], &m);
    assert_eq!(name(&["n2"]), Ok("n2".to_string()));
    assert_eq!(
        name(&["n2", "n3"]),
        Err(CertNameError::SeveralNames {
            names: vec!["DNS n2".into(), "DNS n3".into()]
        })
    );
    assert_eq!(
        name(&["*.walship"]),
        Err(CertNameError::Wildcard {
            name: "*.walship".into()
        })
    );
    assert_eq!(
        name(&["n2", "127.0.0.1"]),
        Err(CertNameError::SeveralNames {
            names: vec!["DNS n2".into(), "an IP address".into()]
        })
    );
    assert_eq!(
        name(&["127.0.0.1"]),
        Err(CertNameError::NotADnsName {
            name: "an IP address".into()
        })
    );
    assert_eq!(
        name(&["n4"]),
        Err(CertNameError::NotAMember { name: "n4".into() })
    );
    assert_eq!(name(&[]), Err(CertNameError::NoName));
    // The message tells an operator what is wrong with the certificate.
    let e = name(&["n2", "n3"]).unwrap_err().to_string();
    assert!(
        e.contains("2 subject alternative names (DNS n2, DNS n3)")
            && e.contains("exactly one member"),
        "{e}"
    );
}

#[tokio::test]
async fn client_certificate_naming_several_members_or_a_wildcard_is_refused_at_the_handshake() {
    let ca = TestCa::new();
    let accept = members(&["n2", "n3", "n2.walship", "n3.walship"]);
    let server = server_endpoint_with(
        loopback(),
        &ca.material(&[PRIMARY]),
        &accept,
        &TransportOptions::default(),
    )
    .expect("server endpoint");

    // Valid for two members at once: it used to authenticate as the first (n2).
    let refusal = assert_refused(&server, &ca.material(&["n2", "n3"])).await;
    assert!(refusal.contains("SeveralNames"), "{refusal}");
    // A wildcard matches both n2.walship and n3.walship: it names no member.
    let refusal = assert_refused(&server, &ca.material(&["*.walship"])).await;
    assert!(refusal.contains("Wildcard"), "{refusal}");

    // A certificate naming one member still connects and proves that member.
    let c = client(&ca.material(&["n3"]));
    let (s, cl) = tokio::join!(
        accept_one(&server),
        connect(&c, server.local_addr().expect("addr"), PRIMARY)
    );
    let s = s.expect("member accepted after the refusals");
    cl.expect("member connected after the refusals");
    assert_eq!(peer_node_id(&s, &accept).as_deref(), Ok("n3"));
}

#[tokio::test]
async fn replica_finds_that_a_primary_certificate_naming_several_members_proves_no_primary() {
    let ca = TestCa::new();
    // The CA-signed server certificate is valid for n1 (so TLS accepts it) but also for n2.
    let server = server_endpoint_with(
        loopback(),
        &ca.material(&[PRIMARY, "n2"]),
        &members(&["n3"]),
        &TransportOptions::default(),
    )
    .expect("server endpoint");
    let c = client(&ca.material(&["n3"]));
    let (s, cl) = tokio::join!(
        accept_one(&server),
        connect(&c, server.local_addr().expect("addr"), PRIMARY)
    );
    let _s = s.expect("server handshake");
    let cl = cl.expect("client handshake");
    assert_eq!(
        peer_node_id(&cl, &members(&[PRIMARY])),
        Err(CertNameError::SeveralNames {
            names: vec![format!("DNS {PRIMARY}"), "DNS n2".into()]
        })
    );
}
