//! Shared test setup: a primary and a replica connected over loopback QUIC with mutual TLS.

use std::net::SocketAddr;

use walship_wire::certs::{generate, TlsFiles};
use walship_wire::endpoint::{client_endpoint_with, connect, server_endpoint_with};
use walship_wire::TransportOptions;

/// Both ends of one connection, plus what must stay alive for it.
pub struct Pair {
    /// The primary's side.
    pub server: quinn::Connection,
    /// The replica's side.
    pub client: quinn::Connection,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
    _dir: tempfile::TempDir,
}

/// Generates certificates for n1 (primary) and n2, and connects n2 to n1.
pub async fn connected_pair() -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), &["n1", "n2"]).expect("generate");
    let load = |n| TlsFiles::for_node(dir.path(), n).load().expect("load");
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let opts = TransportOptions::default();
    let server_ep =
        server_endpoint_with(any, &load("n1"), &["n2".to_string()], &opts).expect("server");
    let client_ep = client_endpoint_with(any, &load("n2"), &opts).expect("client");
    let addr = server_ep.local_addr().expect("addr");
    let accept = async {
        server_ep
            .accept()
            .await
            .expect("endpoint open")
            .await
            .expect("server handshake")
    };
    let (server, client) = tokio::join!(accept, connect(&client_ep, addr, "n1"));
    Pair {
        server,
        client: client.expect("client handshake"),
        _endpoints: (server_ep, client_ep),
        _dir: dir,
    }
}
