//! Mutual TLS for walship connections (rustls 0.23, ring provider, TLS 1.3 only as QUIC requires).
//!
//! Rules (spec/protocol.md, "TLS and membership"):
//! - Every node presents a certificate chain signed by the cluster CA.
//! - The server (primary) requires a client certificate that chains to the cluster CA **and**
//!   names exactly one member: its only subject alternative name is one DNS name, not a
//!   wildcard, equal to a configured member name ([`cert_member_name`]). Anything else fails
//!   the TLS handshake, so no byte of an unauthenticated peer ever reaches the protocol layer,
//!   and a certificate can never authenticate as a member it was not issued for alone.
//! - The client (replica) verifies the server certificate against the cluster CA and the name it
//!   dialled (the configured primary name), then [`peer_node_id`] applies the same
//!   exactly-one-member rule to it.
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

/// The member list that admits any node the cluster CA signed a certificate
/// for (one DNS name, not a wildcard): a node whose membership is data in its
/// log (spec/membership.md) checks membership above TLS, in the protocol (a
/// `Hello` from a non-member is refused, an election message from one is
/// ignored). Pass `&[ANY_MEMBER.into()]` as the member list.
pub const ANY_MEMBER: &str = "*";

/// A list of member names, validated as DNS names once.
#[derive(Clone, Debug)]
struct MemberNames {
    names: Arc<[(String, ServerName<'static>)]>,
    /// [`ANY_MEMBER`]: every name the CA signed.
    any: bool,
}

impl MemberNames {
    fn new(members: &[String]) -> Result<Self, TlsError> {
        if members.is_empty() {
            return Err(TlsError::NoMembers);
        }
        if members.len() == 1 && members[0] == ANY_MEMBER {
            return Ok(MemberNames {
                names: Arc::new([]),
                any: true,
            });
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
            any: false,
        })
    }

    /// The one member `cert` names (see [`cert_member_name`]). Does not check the chain.
    fn matching(&self, cert: &CertificateDer<'_>) -> Result<String, CertNameError> {
        let name = single_dns_name(cert)?;
        if self.any {
            return any_member_name(cert, name);
        }
        let (member, sn) = self
            .names
            .iter()
            .find(|(member, _)| member.eq_ignore_ascii_case(&name))
            .ok_or_else(|| CertNameError::NotAMember { name: name.clone() })?;
        confirm_with_webpki(cert, member, sn)?;
        Ok(member.clone())
    }
}

/// [`ANY_MEMBER`]: `name` (the certificate's only DNS name) if it is a DNS name
/// webpki accepts the certificate for.
fn any_member_name(cert: &CertificateDer<'_>, name: String) -> Result<String, CertNameError> {
    let sn = match ServerName::try_from(name.clone()) {
        Ok(sn @ ServerName::DnsName(_)) => sn,
        _ => return Err(CertNameError::NotAMember { name }),
    };
    confirm_with_webpki(cert, &name, &sn)?;
    Ok(name)
}

/// Why a peer certificate does not identify exactly one member. Every node certificate
/// carries exactly one subject alternative name, a DNS name equal to its node id
/// (spec/protocol.md §2); anything else would let one certificate speak for several nodes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertNameError {
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The certificate's subject alternative names could not be read.
    #[error("cannot read the certificate's subject alternative names: {reason}")]
    Unreadable {
        /// What failed.
        reason: String,
    },
    /// The certificate has no subject alternative name.
    #[error("the certificate has no subject alternative name; a node certificate names exactly one member")]
    NoName,
    /// The certificate has several subject alternative names.
    #[error("the certificate has {} subject alternative names ({}); a node certificate names exactly one member", names.len(), names.join(", "))]
    SeveralNames {
        /// Each name: the DNS name, or a description of a name of another kind.
        names: Vec<String>,
    },
    /// The only subject alternative name is not a DNS name (e.g. an IP address).
    #[error("the certificate's only subject alternative name is {name}, not a DNS name; a node certificate names exactly one member")]
    NotADnsName {
        /// A description of the name.
        name: String,
    },
    /// The only name is a wildcard: it names a pattern, not a member.
    #[error("the certificate names the wildcard {name:?}; a node certificate names exactly one member, not a pattern")]
    Wildcard {
        /// The wildcard name.
        name: String,
    },
    /// The one name is not among the names checked against.
    #[error("the certificate names {name:?}, which is not a configured member")]
    NotAMember {
        /// The certificate's name.
        name: String,
    },
}

/// The certificate's only subject alternative name, which must be a non-wildcard DNS name.
fn single_dns_name(cert: &CertificateDer<'_>) -> Result<String, CertNameError> {
    let mut names = subject_alt_names(cert.as_ref()).map_err(|e| CertNameError::Unreadable {
        reason: format!("{e:?}"),
    })?;
    match names.len() {
        0 => Err(CertNameError::NoName),
        1 => match names.remove(0) {
            AltName::Dns(name) if name.contains('*') => Err(CertNameError::Wildcard { name }),
            AltName::Dns(name) => Ok(name),
            other => Err(CertNameError::NotADnsName {
                name: other.to_string(),
            }),
        },
        _ => Err(CertNameError::SeveralNames {
            names: names.iter().map(ToString::to_string).collect(),
        }),
    }
}

/// webpki must agree that `cert` is valid for `member` (the name check is ours; this keeps
/// it from ever accepting what webpki's own name matching would not).
fn confirm_with_webpki(
    cert: &CertificateDer<'_>,
    member: &str,
    sn: &ServerName<'_>,
) -> Result<(), CertNameError> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| CertNameError::Unreadable {
        reason: e.to_string(),
    })?;
    ee.verify_is_valid_for_subject_name(sn)
        .map_err(|e| CertNameError::Unreadable {
            reason: format!("webpki does not accept the certificate for {member:?}: {e}"),
        })
}

/// One subject alternative name (RFC 5280 `GeneralName`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum AltName {
    /// `dNSName` ([2] IA5String).
    Dns(String),
    /// Any other kind, by its context tag number (7 = IP address, 6 = URI, ...).
    Other(u64),
}

impl std::fmt::Display for AltName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AltName::Dns(name) => write!(f, "DNS {name}"),
            AltName::Other(7) => write!(f, "an IP address"),
            AltName::Other(tag) => write!(f, "a non-DNS name (GeneralName tag {tag})"),
        }
    }
}

/// OID of the subject alternative name extension (RFC 5280 §4.2.1.6): 2.5.29.17.
const SUBJECT_ALT_NAME_OID: &[u64] = &[2, 5, 29, 17];

/// Every subject alternative name of a DER X.509 certificate, in order (none if it has no
/// such extension). webpki offers no list of the names, only a match against one name.
fn subject_alt_names(der: &[u8]) -> Result<Vec<AltName>, yasna::ASN1Error> {
    use yasna::Tag;
    let mut names = Vec::new();
    yasna::parse_der(der, |r| {
        r.read_sequence(|cert| {
            cert.next().read_sequence(|tbs| {
                // version [0] EXPLICIT OPTIONAL
                tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
                for _ in 0..6 {
                    tbs.next().read_der()?;
                }
                // issuerUniqueID [1], subjectUniqueID [2], extensions [3]: all optional.
                while tbs
                    .read_optional(|r| {
                        if r.lookahead_tag()? == Tag::context(3) {
                            r.read_tagged(Tag::context(3), |r| read_extensions(r, &mut names))
                        } else {
                            r.read_der().map(drop)
                        }
                    })?
                    .is_some()
                {}
                Ok(())
            })?;
            cert.next().read_der()?; // signatureAlgorithm
            cert.next().read_der()?; // signatureValue
            Ok(())
        })
    })?;
    Ok(names)
}

fn read_extensions(r: yasna::BERReader<'_, '_>, names: &mut Vec<AltName>) -> yasna::ASN1Result<()> {
    r.read_sequence_of(|ext| {
        ext.read_sequence(|e| {
            let oid = e.next().read_oid()?;
            e.read_default(false, |r| r.read_bool())?; // critical
            let value = e.next().read_bytes()?;
            if oid.components().as_slice() == SUBJECT_ALT_NAME_OID {
                names.extend(yasna::parse_der(&value, |r| {
                    r.collect_sequence_of(|gn| {
                        let tag = gn.lookahead_tag()?;
                        if tag == yasna::Tag::context(2) {
                            gn.read_tagged_implicit(tag, |r| r.read_ia5_string())
                                .map(AltName::Dns)
                        } else {
                            gn.read_der()?;
                            Ok(AltName::Other(tag.tag_number))
                        }
                    })
                })?);
            }
            Ok(())
        })
    })
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
            Ok(name) => {
                tracing::debug!(node_id = name, "client certificate accepted");
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused client: certificate does not name exactly one configured member");
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(e)),
                )))
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
/// certificate signed by the cluster CA and valid for one of `members`, TLS 1.3, ALPN `walship/4`.
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
/// against the cluster CA and the server name given at connect time, TLS 1.3, ALPN `walship/4`.
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
/// re-checks the peer's end-entity certificate by [`cert_member_name`]: its one name must be
/// one of `names`. On the primary pass the member list (the handshake already applied the same
/// rule); on a replica pass the configured primary name.
pub fn peer_node_id(conn: &quinn::Connection, names: &[String]) -> Result<String, CertNameError> {
    let identity = conn.peer_identity().ok_or(CertNameError::NoCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| CertNameError::NoCertificate)?;
    let end_entity = certs.first().ok_or(CertNameError::NoCertificate)?;
    cert_member_name(end_entity, names)
}

/// The member `cert` (DER end-entity certificate) names: its only subject alternative name
/// must be one DNS name, not a wildcard, equal (ASCII case-insensitive, as DNS names compare)
/// to one of `names`, and webpki must accept the certificate for it. Checks only the names,
/// not the chain. A name in `names` that is not a DNS name matches nothing.
pub fn cert_member_name(
    cert: &CertificateDer<'_>,
    names: &[String],
) -> Result<String, CertNameError> {
    let name = single_dns_name(cert)?;
    if names.len() == 1 && names[0] == ANY_MEMBER {
        return any_member_name(cert, name);
    }
    let not_member = || CertNameError::NotAMember { name: name.clone() };
    let member = names
        .iter()
        .find(|m| m.eq_ignore_ascii_case(&name))
        .ok_or_else(not_member)?;
    let sn = match ServerName::try_from(member.as_str()) {
        Ok(sn @ ServerName::DnsName(_)) => sn,
        _ => return Err(not_member()),
    };
    confirm_with_webpki(cert, member, &sn)?;
    Ok(member.clone())
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
