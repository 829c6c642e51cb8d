//! Development certificates and loading of the TLS files a node is configured with.
//!
//! [`generate`] makes a cluster CA and one certificate per node (rcgen, ECDSA P-256). Every node
//! certificate carries exactly one subject alternative name, the node id as a DNS name, and both
//! extended key usages (serverAuth and clientAuth), because a node is a TLS server when it is the
//! primary and a TLS client when it is a replica. The member check of [`crate::tls`] compares the
//! configured member names with that SAN.
//!
//! [`TlsFiles`] names the three PEM files a node needs (CA certificate, own certificate, own key);
//! [`TlsFiles::load`] reads and validates them into [`TlsMaterial`], with an error that names the
//! file and what is wrong with it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// File name of the cluster CA certificate written by [`generate`].
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the cluster CA private key written by [`generate`].
pub const CA_KEY_FILE: &str = "ca.key";

/// Errors of certificate generation and of loading TLS files.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A node id cannot be used as a certificate name or a file name.
    #[error("invalid node id {node_id:?}: {why}")]
    InvalidNodeId {
        /// The offending id.
        node_id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The same node id was given twice.
    #[error("node id {node_id:?} given more than once")]
    DuplicateNodeId {
        /// The repeated id.
        node_id: String,
    },
    /// [`generate`] refuses to overwrite existing key material.
    #[error("refusing to overwrite existing file {path}")]
    AlreadyExists {
        /// The file that exists.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("read", "create", "write", "create directory").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{path} is not valid PEM: {detail}")]
    NotPem {
        /// The file.
        path: PathBuf,
        /// The PEM parser's message.
        detail: String,
    },
    /// A certificate file contains no `CERTIFICATE` section.
    #[error("{path} contains no PEM CERTIFICATE section")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file contains no private key section.
    #[error("{path} contains no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// rcgen failed to make a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Paths of the three PEM files a node presents and trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (trust anchor for peers).
    pub ca: PathBuf,
    /// This node's certificate (chain), signed by the cluster CA.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// Parsed TLS material: trust anchors, own certificate chain and own private key.
#[derive(Debug)]
pub struct TlsMaterial {
    /// Certificates of the cluster CA (usually one).
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// This node's certificate followed by any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            ca_certs: self.ca_certs.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsFiles {
    /// The files [`generate`] writes for `node_id` in `dir`: `ca.pem`, `<node_id>.pem`, `<node_id>.key`.
    pub fn for_node(dir: &Path, node_id: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("{node_id}.pem")),
            key: dir.join(format!("{node_id}.key")),
        }
    }

    /// Reads and parses the three files. Each failure names the file and the problem.
    pub fn load(&self) -> Result<TlsMaterial, CertError> {
        let ca_certs = load_certs(&self.ca)?;
        let cert_chain = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        Ok(TlsMaterial {
            ca_certs,
            cert_chain,
            key,
        })
    }
}

impl TlsMaterial {
    /// Parses PEM text held in memory (for embedders that do not keep the material in files).
    /// Errors name the pseudo-paths `<ca>`, `<cert>` and `<key>`.
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        Ok(TlsMaterial {
            ca_certs: parse_certs(ca_pem, Path::new("<ca>"))?,
            cert_chain: parse_certs(cert_pem, Path::new("<cert>"))?,
            key: parse_key(key_pem, Path::new("<key>"))?,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    parse_certs(&read_file(path)?, path)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    parse_key(&read_file(path)?, path)
}

fn not_pem(path: &Path, e: pem::Error) -> CertError {
    CertError::NotPem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn parse_certs(text: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(path, e))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn parse_key(text: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    match PrivateKeyDer::from_pem_slice(text) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(CertError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(not_pem(path, e)),
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct GeneratedCerts {
    /// Path of the CA certificate (`ca.pem`).
    pub ca_cert: PathBuf,
    /// Path of the CA private key (`ca.key`, mode 0600).
    pub ca_key: PathBuf,
    /// Per node, in the order given: the node id and its files.
    pub nodes: Vec<(String, TlsFiles)>,
}

/// Checks that `node_id` can be a certificate DNS name and a file name in the output directory.
pub fn validate_node_id(node_id: &str) -> Result<(), CertError> {
    let invalid = |why| CertError::InvalidNodeId {
        node_id: node_id.to_string(),
        why,
    };
    if node_id.is_empty() {
        return Err(invalid("empty"));
    }
    if node_id == "ca" {
        return Err(invalid("\"ca\" is reserved for the cluster CA files"));
    }
    if !node_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(invalid(
            "only ASCII letters, digits, '-' and '.' are allowed",
        ));
    }
    match ServerName::try_from(node_id) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        Ok(_) => Err(invalid("an IP address is not a node id")),
        Err(_) => Err(invalid("not a valid DNS name")),
    }
}

/// Makes a cluster CA and one certificate per node in `out_dir` (created if missing).
///
/// Writes `ca.pem`, `ca.key`, and `<id>.pem` / `<id>.key` for every id in `node_ids`. Key files
/// get mode 0600. Refuses to overwrite any existing file (a CA key is not something to replace
/// by accident). For development and tests; production clusters bring their own PKI.
pub fn generate<S: AsRef<str>>(
    out_dir: &Path,
    node_ids: &[S],
) -> Result<GeneratedCerts, CertError> {
    let node_ids: Vec<&str> = node_ids.iter().map(AsRef::as_ref).collect();
    let mut seen = std::collections::BTreeSet::new();
    for id in &node_ids {
        validate_node_id(id)?;
        if !seen.insert(*id) {
            return Err(CertError::DuplicateNodeId {
                node_id: id.to_string(),
            });
        }
    }
    fs::create_dir_all(out_dir).map_err(|source| CertError::Io {
        op: "create directory",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let ca_cert_path = out_dir.join(CA_CERT_FILE);
    let ca_key_path = out_dir.join(CA_KEY_FILE);
    let nodes: Vec<(String, TlsFiles)> = node_ids
        .iter()
        .map(|id| (id.to_string(), TlsFiles::for_node(out_dir, id)))
        .collect();
    // Check every target first so a refusal leaves the directory untouched.
    let targets = [&ca_cert_path, &ca_key_path]
        .into_iter()
        .chain(nodes.iter().flat_map(|(_, f)| [&f.cert, &f.key]));
    for path in targets {
        if path.exists() {
            return Err(CertError::AlreadyExists { path: path.clone() });
        }
    }

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "walship cluster CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write_new(&ca_cert_path, ca_cert.pem().as_bytes(), false)?;
    write_new(&ca_key_path, ca_key.serialize_pem().as_bytes(), true)?;

    for (id, files) in &nodes {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![id.clone()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        write_new(&files.cert, cert.pem().as_bytes(), false)?;
        write_new(&files.key, key.serialize_pem().as_bytes(), true)?;
    }
    tracing::info!(dir = %out_dir.display(), nodes = node_ids.len(), "generated cluster CA and node certificates");
    Ok(GeneratedCerts {
        ca_cert: ca_cert_path,
        ca_key: ca_key_path,
        nodes,
    })
}

/// Creates `path` (never overwriting) and writes `bytes`; `secret` files get mode 0600 from the
/// start, so the key is never readable by others, not even briefly.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CertError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let io_err = |op, source: io::Error| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            CertError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            CertError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let mut file = opts.open(path).map_err(|e| io_err("create", e))?;
    file.write_all(bytes).map_err(|e| io_err("write", e))?;
    file.sync_all().map_err(|e| io_err("sync", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rules_reject_paths_ips_and_reserved_names() {
        for bad in ["", "ca", "../x", "a/b", "10.0.0.1", "white space", "-lead"] {
            assert!(
                matches!(validate_node_id(bad), Err(CertError::InvalidNodeId { .. })),
                "{bad:?} should be rejected"
            );
        }
        for good in ["n1", "node-2", "replica.east"] {
            assert!(
                validate_node_id(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
    }
}
