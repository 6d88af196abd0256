//! The proxy's rustls configurations, rebuilt when the workload certificate
//! rotates and cached otherwise (one server config; one client config per
//! set of allowed server identities), and the client configs for TLS
//! origination (DestinationRule SIMPLE / MUTUAL, from files or from the
//! Secret a `credentialName` names): built once per distinct
//! [`Origination`] and rebuilt when one of its files changes. PEM carried in
//! the config is part of the [`Origination`], so a changed Secret (a new
//! config) builds a new client config on the next connection.

use crate::ProxyError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;
use tokio::sync::watch;
use veil_identity::{SpiffeId, TrustBundle, WorkloadCertificate};
use veil_model::{ClientCertificate, PemSource, UpstreamTls};

/// Most distinct identity sets kept before the client cache is emptied.
const MAX_CLIENT_CONFIGS: usize = 1024;

/// Mesh TLS configs for the current workload certificate.
pub(crate) struct TlsConfigs {
    cert: watch::Receiver<Arc<WorkloadCertificate>>,
    bundle: TrustBundle,
    cache: Mutex<Cache>,
    originations: Mutex<HashMap<Origination, BuiltOrigination>>,
}

/// An origination config and the modification times of its files when built.
type BuiltOrigination = (Vec<Option<SystemTime>>, Arc<ClientConfig>);

struct Cache {
    /// The certificate the cached configs were built from.
    cert: Arc<WorkloadCertificate>,
    /// The server config, and its copy that also accepts streams one after
    /// another (`mesh_frames`), first.
    server: Option<(Arc<ServerConfig>, Arc<ServerConfig>)>,
    /// Per identity set: the client config, and its copy that also offers
    /// streams one after another (`mesh_frames`; they share the sessions).
    clients: HashMap<Vec<String>, (Arc<ClientConfig>, Arc<ClientConfig>)>,
}

impl TlsConfigs {
    pub(crate) fn new(cert: watch::Receiver<Arc<WorkloadCertificate>>, bundle: TrustBundle) -> Self {
        let current = cert.borrow().clone();
        TlsConfigs {
            cert,
            bundle,
            cache: Mutex::new(Cache { cert: current, server: None, clients: HashMap::new() }),
            originations: Mutex::new(HashMap::new()),
        }
    }

    /// The workload certificate in use now.
    pub(crate) fn certificate(&self) -> Arc<WorkloadCertificate> {
        self.cert.borrow().clone()
    }

    /// Runs `f` on the cache, after emptying it if the certificate rotated.
    fn with_cache<T>(&self, f: impl FnOnce(&mut Cache, &TrustBundle) -> T) -> T {
        let current = self.certificate();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&cache.cert, &current) {
            *cache = Cache { cert: current, server: None, clients: HashMap::new() };
        }
        f(&mut cache, &self.bundle)
    }

    /// The server config for mesh mTLS (client certificate from the mesh CA
    /// required, TLS 1.3, ALPN `istio*`): a gateway's `ISTIO_MUTUAL` servers.
    ///
    /// Errors: [`ProxyError::Identity`] when the certificate cannot be used.
    pub(crate) fn server(&self) -> Result<Arc<ServerConfig>, ProxyError> {
        self.servers().map(|(plain, _)| plain)
    }

    /// [`Self::server`] that prefers [`crate::mesh_frames::STREAMS_ALPN`]
    /// when the client offers it: a sidecar's inbound ports.
    ///
    /// Errors: as [`Self::server`].
    pub(crate) fn server_streams(&self) -> Result<Arc<ServerConfig>, ProxyError> {
        self.servers().map(|(_, streams)| streams)
    }

    fn servers(&self) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), ProxyError> {
        self.with_cache(|cache, bundle| {
            if let Some(servers) = &cache.server {
                return Ok(servers.clone());
            }
            let server = veil_identity::mesh_server_config(&cache.cert, bundle)
                .map_err(|e| ProxyError::Identity(e.to_string()))?;
            let mut streams = (*server).clone();
            streams.alpn_protocols.insert(0, crate::mesh_frames::STREAMS_ALPN.to_vec());
            let servers = (server, Arc::new(streams));
            cache.server = Some(servers.clone());
            Ok(servers)
        })
    }

    /// The client config that accepts only a server presenting one of
    /// `identities` (SPIFFE IDs), ALPN `istio`.
    ///
    /// Errors: [`ProxyError::Identity`] when an identity is not a SPIFFE ID or
    /// the certificate cannot be used.
    pub(crate) fn client(&self, identities: &[String]) -> Result<Arc<ClientConfig>, ProxyError> {
        self.clients(identities).map(|(plain, _)| plain)
    }

    /// [`Self::client`] that offers [`crate::mesh_frames::STREAMS_ALPN`]
    /// first: a Veil server carries streams one after another on its
    /// connections; others answer `istio`.
    ///
    /// Errors: as [`Self::client`].
    pub(crate) fn client_streams(&self, identities: &[String]) -> Result<Arc<ClientConfig>, ProxyError> {
        self.clients(identities).map(|(_, streams)| streams)
    }

    fn clients(&self, identities: &[String]) -> Result<(Arc<ClientConfig>, Arc<ClientConfig>), ProxyError> {
        // The model sends identities sorted: look them up without a copy.
        if identities.windows(2).all(|pair| pair.first() < pair.get(1)) {
            let found = self.with_cache(|cache, _| cache.clients.get(identities).cloned());
            if let Some(client) = found {
                return Ok(client);
            }
        }
        let mut key = identities.to_vec();
        key.sort();
        key.dedup();
        self.with_cache(|cache, bundle| {
            if let Some(client) = cache.clients.get(&key) {
                return Ok(client.clone());
            }
            let allowed = key
                .iter()
                .map(|id| {
                    id.parse::<SpiffeId>().map_err(|e| {
                        ProxyError::Identity(format!("destination identity {id:?} is not a SPIFFE ID: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let client = veil_identity::mesh_client_config(&cache.cert, bundle, &allowed)
                .map_err(|e| ProxyError::Identity(e.to_string()))?;
            let mut streams = (*client).clone();
            streams.alpn_protocols.insert(0, crate::mesh_frames::STREAMS_ALPN.to_vec());
            let pair = (client, Arc::new(streams));
            if cache.clients.len() >= MAX_CLIENT_CONFIGS {
                cache.clients.clear();
            }
            cache.clients.insert(key, pair.clone());
            Ok(pair)
        })
    }
}

/// The settings of one TLS origination that shape its rustls config (the
/// SNI is given per connection).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origination {
    /// PEM CA bundle; `None` fails closed unless `insecure_skip_verify`.
    pub(crate) ca: Option<PemSource>,
    /// Accepted server SANs; empty: the SNI (else the endpoint address).
    pub(crate) subject_alt_names: Vec<String>,
    pub(crate) insecure_skip_verify: bool,
    /// Client certificate chain and key (MUTUAL).
    pub(crate) client: Option<ClientCertificate>,
    /// The Secret the PEM came from (`Secret ns/name`), for messages;
    /// `None` for files, which are named by path.
    pub(crate) secret: Option<String>,
}

impl Origination {
    /// The origination settings and SNI of `tls`, for SIMPLE and MUTUAL.
    pub(crate) fn of(tls: &UpstreamTls) -> Option<(Origination, Option<String>)> {
        let file = |p: &PathBuf| PemSource::File(p.clone());
        match tls {
            UpstreamTls::Simple { sni, ca_file, subject_alt_names, insecure_skip_verify } => Some((
                Origination {
                    ca: ca_file.as_ref().map(file),
                    subject_alt_names: subject_alt_names.clone(),
                    insecure_skip_verify: *insecure_skip_verify,
                    client: None,
                    secret: None,
                },
                sni.clone(),
            )),
            UpstreamTls::Mutual { sni, ca_file, subject_alt_names, insecure_skip_verify, cert_file, key_file } => Some((
                Origination {
                    ca: ca_file.as_ref().map(file),
                    subject_alt_names: subject_alt_names.clone(),
                    insecure_skip_verify: *insecure_skip_verify,
                    client: Some(ClientCertificate { cert: file(cert_file), key: file(key_file) }),
                    secret: None,
                },
                sni.clone(),
            )),
            UpstreamTls::Credential { sni, subject_alt_names, insecure_skip_verify, source, ca, client } => Some((
                Origination {
                    ca: ca.clone(),
                    subject_alt_names: subject_alt_names.clone(),
                    insecure_skip_verify: *insecure_skip_verify,
                    client: client.clone(),
                    secret: Some(source.clone()),
                },
                sni.clone(),
            )),
            _ => None,
        }
    }

    fn files(&self) -> Vec<&Path> {
        let client = self.client.iter().flat_map(|c| [&c.cert, &c.key]);
        self.ca
            .iter()
            .chain(client)
            .filter_map(|s| match s {
                PemSource::File(p) => Some(p.as_path()),
                PemSource::Pem(_) => None,
            })
            .collect()
    }

    /// How messages name `source`: `caCertificates /etc/ca.pem` for a file,
    /// `the CA (ca.crt or cacert) of Secret ns/name` for PEM.
    fn describe(&self, source: &PemSource, field: &str, secret_keys: &str) -> String {
        match (source, &self.secret) {
            (PemSource::File(p), _) => format!("{field} {}", p.display()),
            (PemSource::Pem(_), Some(secret)) => format!("{secret_keys} of {secret}"),
            (PemSource::Pem(_), None) => format!("{field} (PEM in the config)"),
        }
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        self.files().iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
    }

    /// Builds the rustls client config (TLS 1.2 and 1.3, no ALPN).
    ///
    /// Errors: a message naming the file that cannot be read or parsed, or
    /// the missing `caCertificates`.
    fn build(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = match (&self.ca, self.insecure_skip_verify) {
            (_, true) => None,
            (None, false) => return Err("the DestinationRule gives no caCertificates and Veil has no system roots; add caCertificates (a PEM CA file), or insecureSkipVerify: true".into()),
            (Some(ca), false) => {
                let what = self.describe(ca, "caCertificates", "the CA (ca.crt or cacert)");
                let mut store = RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(read_certs(ca, &what)?);
                if added == 0 {
                    return Err(format!("{what} holds no usable CA certificate"));
                }
                Some(Arc::new(store))
            }
        };
        let verifier = Arc::new(OriginationVerifier {
            roots,
            subject_alt_names: self.subject_alt_names.clone(),
            signatures: veil_identity::HandshakeSignatures::default(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some(ClientCertificate { cert, key }) => {
                let cert_what = self.describe(cert, "clientCertificate", "the certificate (tls.crt or cert)");
                let key_what = self.describe(key, "privateKey", "the private key (tls.key or key)");
                let chain = read_certs(cert, &cert_what)?;
                let key = match key {
                    PemSource::File(path) => PrivateKeyDer::from_pem_file(path),
                    PemSource::Pem(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()),
                }
                .map_err(|e| format!("cannot read {key_what}: {e}; it must be a PEM private key"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{cert_what} and {key_what} cannot be used together: {e}"))?
            }
        };
        Ok(Arc::new(config))
    }
}

/// The certificates of `source`, which messages call `what`.
fn read_certs(source: &PemSource, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = match source {
        PemSource::File(path) => CertificateDer::pem_file_iter(path).and_then(|it| it.collect::<Result<Vec<_>, _>>()),
        PemSource::Pem(text) => CertificateDer::pem_slice_iter(text.as_bytes()).collect::<Result<Vec<_>, _>>(),
    }
    .map_err(|e| format!("cannot read {what}: {e}; it must be readable PEM"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

impl TlsConfigs {
    /// The client config for `origination`, from the cache unless one of
    /// its files changed since it was built.
    ///
    /// Errors: why the config cannot be built (see [`Origination`]).
    pub(crate) fn origination(&self, origination: &Origination) -> Result<Arc<ClientConfig>, String> {
        let mtimes = origination.mtimes();
        let mut cache = self.originations.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((built, config)) = cache.get(origination) {
            if *built == mtimes {
                return Ok(config.clone());
            }
        }
        let config = origination.build()?;
        if cache.len() >= MAX_CLIENT_CONFIGS {
            cache.clear();
        }
        cache.insert(origination.clone(), (mtimes, config.clone()));
        Ok(config)
    }
}

/// Verifies an originated connection's server: the chain must end in one
/// of `roots`, and the leaf must carry one of `subject_alt_names` (DNS and
/// IP SANs by webpki's name rules, URI SANs exactly), else the name the
/// connection was made for. `roots: None` (`insecureSkipVerify`) accepts
/// any certificate.
#[derive(Debug)]
struct OriginationVerifier {
    roots: Option<Arc<RootCertStore>>,
    subject_alt_names: Vec<String>,
    signatures: veil_identity::HandshakeSignatures,
}

/// The SANs of a certificate as strings: DNS names, IP addresses, URIs.
fn presented_sans(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_string()),
            GeneralName::URI(u) => Some((*u).to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(|a| std::net::Ipv4Addr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b).ok().map(|a| std::net::Ipv6Addr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl ServerCertVerifier for OriginationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else { return Ok(ServerCertVerified::assertion()) };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.signatures.algorithms().all,
        )?;
        if self.subject_alt_names.is_empty() {
            rustls::client::verify_server_name(&cert, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        let by_name = self.subject_alt_names.iter().any(|san| {
            ServerName::try_from(san.as_str()).is_ok_and(|name| rustls::client::verify_server_name(&cert, &name).is_ok())
        });
        let presented = presented_sans(end_entity);
        if by_name || presented.iter().any(|u| u.contains("://") && self.subject_alt_names.contains(u)) {
            return Ok(ServerCertVerified::assertion());
        }
        let expected = self
            .subject_alt_names
            .iter()
            .find_map(|san| ServerName::try_from(san.clone()).ok())
            .unwrap_or_else(|| server_name.to_owned());
        Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { expected, presented }))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}
