//! The development token-signing key: an ES256 (P-256) key pair whose private
//! half signs development tokens (`edge-gateway dev-token`) and whose public
//! half the gateway reads as a JWKS document. Kept across runs, like the CA.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::KeyPair;
use sha2::Digest as _;

/// Private key file (PKCS#8 PEM) in the dev set's directory.
pub const SIGNING_KEY_FILE: &str = "token-signing-key.pem";
/// The public key as a JWKS document, for `JWKS_FILE`.
pub const JWKS_FILE: &str = "jwks.json";

/// The development signing key, as files and as what a signer needs.
#[derive(Debug, Clone)]
pub struct DevTokenKey {
    pub key_path: PathBuf,
    pub jwks_path: PathBuf,
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
    /// The `kid` tokens name.
    pub kid: String,
}

impl DevTokenKey {
    /// Reads the key from `dir`, creating it (and the JWKS) when absent or unreadable.
    pub fn ensure(dir: &Path) -> anyhow::Result<(Self, bool)> {
        let key_path = dir.join(SIGNING_KEY_FILE);
        let jwks_path = dir.join(JWKS_FILE);
        let existing = std::fs::read_to_string(&key_path)
            .ok()
            .and_then(|pem| KeyPair::from_pem(&pem).ok().map(|key| (pem, key)));
        let created = existing.is_none() || !jwks_path.exists();
        let (key_pem, key) = match existing {
            Some(existing) => existing,
            None => {
                let key = KeyPair::generate().context("cannot generate the token-signing key")?;
                (key.serialize_pem(), key)
            }
        };
        let (kid, jwks) = jwks_of(&key)?;
        if created {
            crate::dev_set::write_atomically(&key_path, key_pem.as_bytes(), true)?;
            crate::dev_set::write_atomically(&jwks_path, jwks.as_bytes(), false)?;
        }
        Ok((
            Self {
                key_path,
                jwks_path,
                key_pem,
                kid,
            },
            created,
        ))
    }

    /// Loads an existing key (for minting tokens); it must have been created by `ensure`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let key_path = dir.join(SIGNING_KEY_FILE);
        let key_pem =
            std::fs::read_to_string(&key_path).with_context(|| format!("cannot read {} (run `dev-certs` first)", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a usable key", key_path.display()))?;
        let (kid, _) = jwks_of(&key)?;
        Ok(Self {
            key_path,
            jwks_path: dir.join(JWKS_FILE),
            key_pem,
            kid,
        })
    }
}

/// The key id (a digest of the public key, so a new key gets a new id) and the JWKS document.
fn jwks_of(key: &KeyPair) -> anyhow::Result<(String, String)> {
    let point = key.public_key_raw();
    // An uncompressed P-256 point: 0x04, then X and Y, 32 bytes each.
    anyhow::ensure!(point.len() == 65 && point[0] == 4, "the token-signing key is not a P-256 key");
    let digest = sha2::Sha256::digest(point);
    let kid = format!("dev-{}", URL_SAFE_NO_PAD.encode(&digest[..9]));
    let jwks = format!(
        concat!(
            "{{\"keys\":[{{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES256\",\"use\":\"sig\",",
            "\"kid\":\"{kid}\",\"x\":\"{x}\",\"y\":\"{y}\"}}]}}\n"
        ),
        kid = kid,
        x = URL_SAFE_NO_PAD.encode(&point[1..33]),
        y = URL_SAFE_NO_PAD.encode(&point[33..65]),
    );
    Ok((kid, jwks))
}
