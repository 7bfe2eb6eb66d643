//! TLS between cluster nodes: `nimbus cluster certs` makes a certificate authority and one certificate per
//! node; a node started with `--tls-dir` accepts only peers with a certificate of that authority (mutual
//! TLS), and presents its own.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use nimbus_actors::app::bootstrap::write_private;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name every node certificate is valid for; clients check it.
pub const SERVER_NAME: &str = "nimbus-node";

/// Writes `ca.pem`, `ca.key`, and `<node>.pem` / `<node>.key` for each node into `dir`. An existing CA is
/// reused, so nodes can be added later.
pub fn make_certs(dir: &Path, nodes: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca_key_pair = if ca_key.exists() {
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?).context("reading the CA key")?
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "nimbus cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        std::fs::write(&ca_cert, cert.pem())?;
        key
    };
    let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(&ca_cert)?, ca_key_pair)
        .context("reading the CA certificate")?;
    for node in nodes {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string(), node.clone()])?;
        params.distinguished_name.push(DnType::CommonName, node.as_str());
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&dir.join(format!("{node}.key")), &key.serialize_pem())?;
        std::fs::write(dir.join(format!("{node}.pem")), cert.pem())?;
    }
    Ok(())
}

struct Material {
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn load(dir: &Path, node: &str) -> anyhow::Result<Material> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).context("reading ca.pem")? {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_file_iter(dir.join(format!("{node}.pem")))
        .with_context(|| format!("reading {node}.pem (make it with `nimbus cluster certs --node {node}`)"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(dir.join(format!("{node}.key"))).with_context(|| format!("reading {node}.key"))?;
    Ok(Material { roots, chain, key })
}

/// What a node listening with TLS accepts: peers with a certificate of the cluster's CA.
pub fn acceptor(dir: &Path, node: &str) -> anyhow::Result<TlsAcceptor> {
    let m = load(dir, node)?;
    let verifier = WebPkiClientVerifier::builder(Arc::new(m.roots)).build()?;
    let config = ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(m.chain, m.key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How a node joins over TLS: it checks the peer against the cluster's CA and presents its own certificate.
pub fn connector(dir: &Path, node: &str) -> anyhow::Result<(TlsConnector, ServerName<'static>)> {
    let m = load(dir, node)?;
    let config = ClientConfig::builder().with_root_certificates(m.roots).with_client_auth_cert(m.chain, m.key)?;
    Ok((TlsConnector::from(Arc::new(config)), ServerName::try_from(SERVER_NAME)?))
}
