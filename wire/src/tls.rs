//! Mutual TLS for walship connections (rustls 0.23, ring provider, TLS 1.3 only as QUIC requires).
//!
//! Rules (spec/protocol.md, "TLS and membership"):
//! - Every node presents a certificate chain signed by the cluster CA.
//! - The server (primary) requires a client certificate that chains to the cluster CA **and** is
//!   valid for one of the configured member names (DNS SAN). Anything else fails the TLS handshake,
//!   so no byte of an unauthenticated peer ever reaches the protocol layer.
//! - The client (replica) verifies the server certificate against the cluster CA and the name it
//!   dialled (the configured primary name).
//! - ALPN is [`crate::ALPN`]; a peer that does not offer it fails the handshake.
//!
//! The crypto provider is passed explicitly ([`provider`]), so nothing depends on a process-wide
//! default provider being installed.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::certs::TlsMaterial;
use crate::ALPN;

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA certificate could not be used as a trust anchor.
    #[error("CA certificate #{index} is not a usable trust anchor: {source}")]
    BadCaCertificate {
        /// Position of the certificate in the CA file.
        index: usize,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The member list is empty: no peer could ever be accepted.
    #[error("the member list is empty")]
    NoMembers,
    /// A configured member or server name is not a DNS name.
    #[error("member name {name:?} is not a valid DNS name")]
    BadMemberName {
        /// The offending name.
        name: String,
    },
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls rejected the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The configuration cannot carry QUIC (no TLS 1.3 AES-128-GCM suite).
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The crypto provider every walship TLS configuration uses: rustls' ring provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(material: &TlsMaterial) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, ca) in material.ca_certs.iter().enumerate() {
        roots
            .add(ca.clone())
            .map_err(|source| TlsError::BadCaCertificate { index, source })?;
    }
    Ok(roots)
}

/// A list of member names, validated as DNS names once.
#[derive(Clone, Debug)]
struct MemberNames {
    names: Arc<[(String, ServerName<'static>)]>,
}

impl MemberNames {
    fn new(members: &[String]) -> Result<Self, TlsError> {
        if members.is_empty() {
            return Err(TlsError::NoMembers);
        }
        let names = members
            .iter()
            .map(|name| match ServerName::try_from(name.clone()) {
                Ok(sn @ ServerName::DnsName(_)) => Ok((name.clone(), sn)),
                _ => Err(TlsError::BadMemberName { name: name.clone() }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MemberNames {
            names: names.into(),
        })
    }

    /// The first member name `cert` is valid for. Does not check the chain.
    fn matching(&self, cert: &CertificateDer<'_>) -> Option<&str> {
        let ee = webpki::EndEntityCert::try_from(cert).ok()?;
        self.names
            .iter()
            .find(|(_, sn)| ee.verify_is_valid_for_subject_name(sn).is_ok())
            .map(|(name, _)| name.as_str())
    }
}

/// Client-certificate verifier: the cluster-CA chain check of [`WebPkiClientVerifier`], then the
/// member check (the end-entity certificate must be valid for a configured member name).
#[derive(Debug)]
struct MemberClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    members: MemberNames,
}

impl ClientCertVerifier for MemberClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(error = %e, "refused client: certificate does not chain to the cluster CA");
            return Err(e);
        }
        match self.members.matching(end_entity) {
            Some(name) => {
                tracing::debug!(node_id = name, "client certificate accepted");
                Ok(ClientCertVerified::assertion())
            }
            None => {
                tracing::warn!(
                    "refused client: certificate is valid for none of the configured members"
                );
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server (primary) TLS configuration: presents `material`'s certificate, requires a client
/// certificate signed by the cluster CA and valid for one of `members`, TLS 1.3, ALPN `walship/1`.
pub fn server_config(
    material: &TlsMaterial,
    members: &[String],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let members = MemberNames::new(members)?;
    let inner = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(material)?),
        provider.clone(),
    )
    .build()?;
    let verifier = Arc::new(MemberClientVerifier { inner, members });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.cert_chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Client (replica) TLS configuration: presents `material`'s certificate, verifies the server
/// against the cluster CA and the server name given at connect time, TLS 1.3, ALPN `walship/1`.
pub fn client_config(material: &TlsMaterial) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(material)?)
        .with_client_auth_cert(material.cert_chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Which of `names` the peer of `conn` proved with its certificate.
///
/// The chain to the cluster CA was already verified by the TLS handshake (on both sides); this
/// re-checks the peer's end-entity certificate against `names` and returns the first match. On
/// the primary pass the member list (the handshake guaranteed there is a match); on a replica
/// pass the configured primary name. `None` if the peer presented no certificate or matches none
/// of the names (or a name is not a valid DNS name).
pub fn peer_node_id(conn: &quinn::Connection, names: &[String]) -> Option<String> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let end_entity = certs.first()?;
    cert_matching_name(end_entity, names)
}

/// The first of `names` that `cert` (DER end-entity certificate) is valid for. Checks only the
/// names, not the chain.
pub fn cert_matching_name(cert: &CertificateDer<'_>, names: &[String]) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    names
        .iter()
        .find(|name| match ServerName::try_from(name.as_str()) {
            Ok(sn @ ServerName::DnsName(_)) => ee.verify_is_valid_for_subject_name(&sn).is_ok(),
            _ => false,
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_reject_empty_list_and_ip_addresses() {
        assert!(matches!(MemberNames::new(&[]), Err(TlsError::NoMembers)));
        assert!(matches!(
            MemberNames::new(&["n1".into(), "127.0.0.1".into()]),
            Err(TlsError::BadMemberName { name }) if name == "127.0.0.1"
        ));
    }
}
