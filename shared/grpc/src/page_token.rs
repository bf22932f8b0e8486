//! Opaque, tamper-evident page tokens for keyset-paginated List methods.
//!
//! A token is base64url(format byte, last id seen, truncated HMAC-SHA256 tag).
//! The tag makes a token a client edited or invented fail verification, so a
//! bad token is rejected instead of silently listing from a forged position.
//! The tag also covers a scope the token is not carried in (the listing's
//! filter, say a user id), so a token from one listing fails on another.
//! Every replica must share the secret for tokens to work across replicas.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const FORMAT_V1: u8 = 1;
const TAG_BYTES: usize = 16;
const TOKEN_BYTES: usize = 1 + 16 + TAG_BYTES;

#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

impl PageTokens {
    /// Tokens signed with a key derived from `secret`; without one, a random
    /// key (tokens then stop working when the process restarts).
    pub fn new(secret: Option<&str>) -> Self {
        let key = match secret {
            Some(secret) => Sha256::digest(secret.as_bytes()).into(),
            None => {
                tracing::warn!("no PAGE_TOKEN_SECRET set: page tokens are valid only within this process");
                let mut key = [0_u8; 32];
                rand::rng().fill_bytes(&mut key);
                key
            }
        };
        Self { key }
    }

    /// A token that resumes the listing `scope` after `last_id`.
    pub fn encode(&self, scope: &str, last_id: Uuid) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.push(FORMAT_V1);
        bytes.extend_from_slice(last_id.as_bytes());
        let tag = self.tag(&bytes, scope);
        bytes.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The id a token resumes after, if this service issued it for `scope`.
    pub fn decode(&self, scope: &str, token: &str) -> Result<Uuid, &'static str> {
        const INVALID: &str = "is not a page token this service issued";
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| INVALID)?;
        if bytes.len() != TOKEN_BYTES || bytes[0] != FORMAT_V1 {
            return Err(INVALID);
        }
        let (payload, tag) = bytes.split_at(1 + 16);
        let mut mac = self.mac();
        mac.update(payload);
        mac.update(scope.as_bytes());
        mac.verify_truncated_left(tag).map_err(|_| INVALID)?;
        Uuid::from_slice(&payload[1..]).map_err(|_| INVALID)
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }

    fn tag(&self, payload: &[u8], scope: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(payload);
        mac.update(scope.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_tampering() {
        let tokens = PageTokens::new(Some("secret"));
        let id = Uuid::now_v7();
        let token = tokens.encode("users", id);
        assert_eq!(tokens.decode("users", &token), Ok(id));

        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("valid base64");
        bytes[5] ^= 1;
        assert!(tokens.decode("users", &URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        assert!(tokens.decode("users", "not a token").is_err());
        assert!(tokens.decode("users", "").is_err());
        assert!(PageTokens::new(Some("other")).decode("users", &token).is_err());
        assert!(
            tokens.decode("orders", &token).is_err(),
            "a token works only for the listing it came from"
        );
    }
}
