//! Verification keys: a JWKS document parsed into keys that each carry the one
//! algorithm they verify. The algorithm comes from the key (its type and
//! curve, and its `alg` when present), never from a token.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One usable key.
#[derive(Clone)]
pub struct VerificationKey {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys of one JWKS document, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, VerificationKey>,
    /// Keys without a `kid`; usable only when a token names none.
    anonymous: Vec<VerificationKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Syntax(String),
    #[error("the JWKS document holds no usable signing key ({skipped} skipped)")]
    NoUsableKey { skipped: usize },
}

#[derive(serde::Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document. Keys this gateway cannot or must not use
    /// (symmetric keys, unsupported curves, encryption keys) are skipped with a
    /// warning, so one exotic key does not hide the others.
    pub fn from_jwks(json: &[u8]) -> Result<Self, JwksError> {
        let document: Document = serde_json::from_slice(json).map_err(|error| JwksError::Syntax(error.to_string()))?;
        let mut set = Self::default();
        let mut skipped = 0;
        for value in document.keys {
            match parse_key(value) {
                Ok((kid, key)) => match kid {
                    Some(kid) => {
                        set.by_kid.insert(kid, key);
                    }
                    None => set.anonymous.push(key),
                },
                Err(reason) => {
                    skipped += 1;
                    tracing::warn!(reason, "skipping a JWKS key");
                }
            }
        }
        if set.is_empty() {
            return Err(JwksError::NoUsableKey { skipped });
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.anonymous.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// The key a token names; a token without `kid` may use the only key without one.
    pub fn find(&self, kid: Option<&str>) -> Option<&VerificationKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => match self.anonymous.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }
}

fn parse_key(value: serde_json::Value) -> Result<(Option<String>, VerificationKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|error| format!("unreadable key: {error}"))?;
    let kid = jwk.common.key_id.clone();
    let described = || format!("key {}", kid.as_deref().unwrap_or("without kid"));
    if matches!(jwk.common.public_key_use, Some(ref usage) if *usage != PublicKeyUse::Signature) {
        return Err(format!("{} is not a signing key", described()));
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!("{} is a symmetric key; shared secrets never come from a JWKS", described()));
        }
        _ => return Err(format!("{} uses a curve this gateway does not support", described())),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let matches = matches!(
            (declared, algorithm),
            (KeyAlgorithm::RS256, Algorithm::RS256) | (KeyAlgorithm::ES256, Algorithm::ES256) | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !matches {
            return Err(format!("{} declares alg {declared:?}, which is not {algorithm:?}", described()));
        }
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|error| format!("{}: {error}", described()))?;
    Ok((kid, VerificationKey { algorithm, decoding }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1","alg":"ES256","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn keys_carry_their_algorithm() {
        let set = KeySet::from_jwks(format!(r#"{{"keys":[{EC_KEY}]}}"#).as_bytes()).unwrap();
        assert_eq!(set.find(Some("ec1")).unwrap().algorithm, Algorithm::ES256);
        assert!(set.find(Some("other")).is_none());
        assert!(set.find(None).is_none());
    }

    #[test]
    fn symmetric_and_mislabelled_keys_are_skipped() {
        let json = format!(
            r#"{{"keys":[{EC_KEY},
                {{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}},
                {{"kty":"EC","crv":"P-256","kid":"liar","alg":"RS256",
                  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}]}}"#
        );
        let set = KeySet::from_jwks(json.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.find(Some("hmac")).is_none());
        assert!(set.find(Some("liar")).is_none());
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        assert!(KeySet::from_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(KeySet::from_jwks(b"not json").is_err());
    }
}
