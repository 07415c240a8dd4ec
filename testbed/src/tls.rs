//! Certificates for the mTLS listener: a throwaway CA, a server certificate
//! for `localhost`, and client certificates carrying a SPIFFE URI SAN.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::{MtlsFiles, TestbedError};

/// A PEM certificate and its private key, written to disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that issues the testbed's certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

fn tls_err(e: rcgen::Error) -> TestbedError {
    TestbedError::Other(format!("certificate generation: {e}"))
}

impl TestCa {
    /// Creates a CA and writes `ca.pem` into `dir`.
    pub fn create(dir: &Path, name: &str) -> Result<Self, TestbedError> {
        std::fs::create_dir_all(dir).map_err(|e| TestbedError::io(dir, e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(tls_err)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(tls_err)?;
        let ca = Self {
            issuer,
            dir: dir.to_owned(),
        };
        write(&ca.ca_path(), &ca.issuer.pem())?;
        Ok(ca)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(&self, file_stem: &str, params: CertificateParams) -> Result<CertFiles, TestbedError> {
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_err)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}-key.pem")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }

    /// A server certificate for `localhost` / 127.0.0.1.
    pub fn server(&self) -> Result<CertFiles, TestbedError> {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(tls_err)?;
        self.issue("server", params)
    }

    /// A client certificate whose URI SAN is `spiffe_id`.
    pub fn client(&self, file_stem: &str, spiffe_id: &str) -> Result<CertFiles, TestbedError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, file_stem);
        let uri = spiffe_id.try_into().map_err(tls_err)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        self.issue(file_stem, params)
    }

    /// Files for the gateway's mTLS listener, trusting this CA for clients.
    pub fn listener_files(&self) -> Result<MtlsFiles, TestbedError> {
        let server = self.server()?;
        Ok(MtlsFiles {
            server_cert: server.cert,
            server_key: server.key,
            client_ca: self.ca_path(),
        })
    }
}

fn write(path: &Path, text: &str) -> Result<(), TestbedError> {
    std::fs::write(path, text).map_err(|e| TestbedError::io(path, e))
}
