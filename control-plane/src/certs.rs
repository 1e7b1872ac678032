//! The federation's certificates, so a user can stand up a secure federation with no other
//! tool: `meridian certs init` makes a CA, `meridian certs issue` issues node certificates.
//!
//! A node certificate names its hostname (DNS SAN — the identity TLS verifies), its role in
//! the organizational unit (`plane` or `agent`), and for agents the one cluster they may act
//! for (URI SAN `meridian:cluster:<name>`). Keys are ECDSA P-256, PKCS#8 PEM, written 0600.

use std::path::{Path, PathBuf};

use meridian_transport::{CLUSTER_URI_PREFIX, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        source: std::io::Error,
    },
    #[error("{doing}: {source}")]
    Rcgen { doing: String, source: rcgen::Error },
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// Creates a new CA.
pub fn new_ca(name: &str) -> Result<Pem, CertError> {
    let doing = || format!("creating CA `{name}`");
    let rc = |source| CertError::Rcgen {
        doing: doing(),
        source,
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "meridian");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.self_signed(&key).map_err(rc)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issues a node certificate signed by `ca`.
pub fn issue(
    ca: &Pem,
    hostname: &str,
    role: Role,
    cluster: Option<&str>,
) -> Result<Pem, CertError> {
    if hostname.is_empty() || hostname.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(CertError::Invalid(format!(
            "--hostname `{hostname}` is not a hostname"
        )));
    }
    match (role, cluster) {
        (Role::Agent, None) => {
            return Err(CertError::Invalid(
                "--cluster: an agent certificate must name the cluster the agent serves".into(),
            ));
        }
        (Role::Plane, Some(_)) => {
            return Err(CertError::Invalid(
                "--cluster: only agent certificates name a cluster".into(),
            ));
        }
        _ => {}
    }
    let doing = || format!("issuing a certificate for `{hostname}`");
    let rc = |source| CertError::Rcgen {
        doing: doing(),
        source,
    };
    let ca_key = KeyPair::from_pem(&ca.key).map_err(rc)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(rc)?;
    let mut params = CertificateParams::new(vec![hostname.to_owned()]).map_err(rc)?;
    if let Some(cluster) = cluster {
        let uri = format!("{CLUSTER_URI_PREFIX}{cluster}");
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().map_err(rc)?));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hostname);
    dn.push(
        DnType::OrganizationalUnitName,
        match role {
            Role::Plane => "plane",
            Role::Agent => "agent",
        },
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both: it serves gRPC and dials peers.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.signed_by(&key, &issuer).map_err(rc)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn io(doing: String) -> impl FnOnce(std::io::Error) -> CertError {
    move |source| CertError::Io { doing, source }
}

/// Writes a PEM pair as `<dir>/<stem>.pem` and `<dir>/<stem>.key` (mode 0600), refusing to
/// overwrite an existing key.
pub fn write(dir: &Path, stem: &str, pem: &Pem) -> Result<(PathBuf, PathBuf), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(io(format!(
            "writing {} (remove it first to replace it)",
            key_path.display()
        )))?;
    key_file
        .write_all(pem.key.as_bytes())
        .map_err(io(format!("writing {}", key_path.display())))?;
    std::fs::write(&cert_path, &pem.cert)
        .map_err(io(format!("writing {}", cert_path.display())))?;
    Ok((cert_path, key_path))
}

/// Reads the CA written by `init` from `dir`.
pub fn read_ca(dir: &Path) -> Result<Pem, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(io(format!(
            "reading {} (run `meridian certs init` first)",
            path.display()
        )))
    };
    Ok(Pem {
        cert: read(CA_CERT)?,
        key: read(CA_KEY)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_transport::PeerIdentity;

    fn der(pem: &str) -> Vec<u8> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        pem.contents
    }

    #[test]
    fn an_agent_certificate_names_hostname_role_and_cluster() {
        let ca = new_ca("test CA").unwrap();
        let leaf = issue(&ca, "agent-1.dc-a.example", Role::Agent, Some("dc-a-main")).unwrap();
        let id = PeerIdentity::from_der(&der(&leaf.cert)).unwrap();
        assert_eq!(id.hostname, "agent-1.dc-a.example");
        assert_eq!(id.role, Role::Agent);
        assert_eq!(id.cluster.as_deref(), Some("dc-a-main"));
        let plane = issue(&ca, "plane-1", Role::Plane, None).unwrap();
        let id = PeerIdentity::from_der(&der(&plane.cert)).unwrap();
        assert_eq!((id.role, id.cluster), (Role::Plane, None));
    }

    #[test]
    fn roles_and_clusters_must_agree() {
        let ca = new_ca("test CA").unwrap();
        assert!(
            issue(&ca, "a", Role::Agent, None)
                .unwrap_err()
                .to_string()
                .contains("--cluster")
        );
        assert!(issue(&ca, "p", Role::Plane, Some("c")).is_err());
    }

    #[test]
    fn keys_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("test CA").unwrap();
        let (_, key) = write(dir.path(), "ca", &ca).unwrap();
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = write(dir.path(), "ca", &ca).unwrap_err().to_string();
        assert!(again.contains("remove it first"), "{again}");
    }
}
