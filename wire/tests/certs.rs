//! `certs::generate` output (files, modes, names, usages as seen by TLS) and `TlsFiles::load`
//! errors.

use std::fs;

use walship_wire::certs::{generate, CertError, TlsFiles, TlsMaterial};
use walship_wire::tls::{cert_member_name, client_config, server_config, TlsError};

#[test]
fn generate_writes_ca_and_node_files_with_private_keys_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let g = generate(&out, &["n1", "n2"]).expect("generate");
    assert_eq!(g.ca_cert, out.join("ca.pem"));
    assert_eq!(g.ca_key, out.join("ca.key"));
    assert_eq!(
        g.nodes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    let mut names: Vec<String> = fs::read_dir(&out)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ca.key", "ca.pem", "n1.key", "n1.pem", "n2.key", "n2.pem"]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "n1.key", "n2.key"] {
            let mode = fs::metadata(out.join(key))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
    // Each node certificate is valid for its own id only.
    let names = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
    for (id, files) in &g.nodes {
        let m = files.load().expect("load");
        assert_eq!(m.cert_chain.len(), 1);
        assert_eq!(
            cert_member_name(&m.cert_chain[0], &names).as_deref(),
            Ok(id.as_str())
        );
        server_config(&m, &names).expect("usable as a server");
        client_config(&m).expect("usable as a client");
    }
}

#[test]
fn generate_refuses_to_overwrite_and_leaves_the_directory_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("n2.key"), b"precious").expect("write");
    match generate(dir.path(), &["n1", "n2"]) {
        Err(CertError::AlreadyExists { path }) => assert_eq!(path, dir.path().join("n2.key")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(
        !dir.path().join("ca.pem").exists(),
        "nothing written on refusal"
    );
    assert_eq!(
        fs::read(dir.path().join("n2.key")).expect("read"),
        b"precious"
    );
}

#[test]
fn generate_rejects_duplicate_and_invalid_node_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        generate(dir.path(), &["n1", "n1"]),
        Err(CertError::DuplicateNodeId { node_id }) if node_id == "n1"
    ));
    assert!(matches!(
        generate(dir.path(), &["n1", "../evil"]),
        Err(CertError::InvalidNodeId { node_id, .. }) if node_id == "../evil"
    ));
}

#[test]
fn load_names_the_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles::for_node(dir.path(), "n1");
    match files.load() {
        Err(CertError::Io {
            op: "read",
            path,
            source,
        }) => {
            assert_eq!(path, dir.path().join("ca.pem"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn load_reports_non_pem_cert_and_key_file_without_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), &["n1"]).expect("generate");
    let good = TlsFiles::for_node(dir.path(), "n1");

    let no_cert = dir.path().join("empty.pem");
    fs::write(&no_cert, b"just some text\n").expect("write");
    let files = TlsFiles {
        cert: no_cert.clone(),
        ..good.clone()
    };
    assert!(matches!(files.load(), Err(CertError::NoCertificate { path }) if path == no_cert));

    let broken = dir.path().join("broken.pem");
    fs::write(
        &broken,
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n",
    )
    .expect("write");
    let files = TlsFiles {
        cert: broken.clone(),
        ..good.clone()
    };
    assert!(matches!(files.load(), Err(CertError::NotPem { path, .. }) if path == broken));

    // A certificate file given as the key: PEM, but no private key in it.
    let files = TlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    };
    assert!(matches!(files.load(), Err(CertError::NoPrivateKey { path }) if path == good.cert));
}

#[test]
fn key_that_does_not_match_the_certificate_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path(), &["n1", "n2"]).expect("generate");
    let n1 = TlsFiles::for_node(dir.path(), "n1").load().expect("load");
    let n2 = TlsFiles::for_node(dir.path(), "n2").load().expect("load");
    let mixed = TlsMaterial { key: n2.key, ..n1 };
    assert!(matches!(
        server_config(&mixed, &["n2".to_string()]),
        Err(TlsError::Rustls(_))
    ));
    assert!(matches!(client_config(&mixed), Err(TlsError::Rustls(_))));
}
