//! The set of files `dev-certs` keeps for local runs: one CA and one
//! certificate per identity, and the development token-signing key. Re-running it is cheap and changes nothing that
//! is still good, so `just up` calls it every time.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::token_key::DevTokenKey;
use crate::{CertificateAuthority, LeafSpec};

const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// A certificate closer than this to expiry is re-issued.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

/// The services of the suite and the operator's client identity.
pub const SERVICE_NAMES: [&str; 3] = ["user-service", "order-service", "edge-gateway"];
pub const OPERATOR_NAME: &str = "operator";

#[derive(Debug, Clone)]
pub struct DevSetOptions {
    pub dir: PathBuf,
    pub trust_domain: String,
    pub namespace: String,
    /// Re-issue every leaf certificate even if it is still good (to watch a hot reload).
    pub renew: bool,
}

/// What one run did, per file stem.
#[derive(Debug, Default)]
pub struct DevSetReport {
    pub created_ca: bool,
    /// Whether the token-signing key (and its JWKS) was created by this run.
    pub created_token_key: bool,
    pub issued: Vec<(String, String)>,
    pub kept: Vec<String>,
}

pub fn spiffe_id(trust_domain: &str, namespace: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{name}")
}

/// Makes sure `dir` holds a valid CA and a valid certificate for every identity.
pub fn ensure(options: &DevSetOptions) -> anyhow::Result<DevSetReport> {
    std::fs::create_dir_all(&options.dir).with_context(|| format!("cannot create {}", options.dir.display()))?;
    let mut report = DevSetReport::default();
    let ca_cert = options.dir.join("ca.pem");
    let ca_key = options.dir.join("ca-key.pem");
    let existing_ca = match (std::fs::read_to_string(&ca_cert), std::fs::read_to_string(&ca_key)) {
        (Ok(cert), Ok(key)) if still_good(cert.as_bytes(), None) => Some(CertificateAuthority::load(&cert, &key)?),
        _ => None,
    };
    let ca = match existing_ca {
        Some(ca) => ca,
        None => {
            let ca = CertificateAuthority::generate("suite development CA", CA_VALIDITY)?;
            write_atomically(&ca_key, ca.key_pem().as_bytes(), true)?;
            write_atomically(&ca_cert, ca.certificate_pem().as_bytes(), false)?;
            report.created_ca = true;
            ca
        }
    };

    let leaves = SERVICE_NAMES
        .iter()
        .map(|name| (*name, true))
        .chain(std::iter::once((OPERATOR_NAME, false)));
    for (name, is_service) in leaves {
        let id = spiffe_id(&options.trust_domain, &options.namespace, name);
        let cert_path = options.dir.join(format!("{name}.pem"));
        let key_path = options.dir.join(format!("{name}-key.pem"));
        let current = std::fs::read(&cert_path).ok();
        let keep =
            !options.renew && !report.created_ca && key_path.exists() && current.as_deref().is_some_and(|pem| still_good(pem, Some(&id)));
        if keep {
            report.kept.push(name.to_owned());
            continue;
        }
        let spec = if is_service {
            LeafSpec::service(name, &id, LEAF_VALIDITY)
        } else {
            LeafSpec::client(name, &id, LEAF_VALIDITY)
        };
        let issued = ca.issue(&spec)?;
        // Key first: a reloading service rejects a certificate whose key has not arrived yet.
        write_atomically(&key_path, issued.key_pem.as_bytes(), true)?;
        write_atomically(&cert_path, issued.certificate_pem.as_bytes(), false)?;
        report.issued.push((name.to_owned(), issued.serial));
    }
    let (_, created_token_key) = DevTokenKey::ensure(&options.dir)?;
    report.created_token_key = created_token_key;
    Ok(report)
}

/// Whether a PEM certificate parses, is valid for at least another day, and names `identity`.
fn still_good(pem: &[u8], identity: Option<&str>) -> bool {
    let Ok(text) = std::str::from_utf8(pem) else { return false };
    let Some(der) = pem_body(text) else { return false };
    let Ok((_, certificate)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
    if certificate.validity().not_after.timestamp() < renew_at.unix_timestamp() {
        return false;
    }
    let Some(identity) = identity else { return true };
    let Ok(Some(names)) = certificate.subject_alternative_name() else {
        return false;
    };
    names
        .value
        .general_names
        .iter()
        .any(|name| matches!(name, GeneralName::URI(uri) if *uri == identity))
}

fn pem_body(text: &str) -> Option<Vec<u8>> {
    let (_, x509_parser::pem::Pem { contents, .. }) = x509_parser::pem::parse_x509_pem(text.as_bytes()).ok()?;
    Some(contents)
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let temporary = dir.join(format!(".{file_name}.tmp"));
    let mut file = std::fs::File::create(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
