//! Tenant API tokens: how one is made and how it is kept. A token is 32 bytes
//! from the operating system's CSPRNG, written `skt_<base64url>` (the prefix
//! tells a tenant token from the admin token at a glance, and lets secret
//! scanners find leaked ones). It is shown once; the store keeps only its
//! SHA-256, so the database names no usable token.

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// What every tenant token starts with.
pub const PREFIX: &str = "skt_";

/// Random bytes in a token (256 bits: a hash of it cannot be searched).
const TOKEN_BYTES: usize = 32;

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct MintError;

/// A new token and its hash (what the store keeps).
pub fn mint() -> Result<(String, String), MintError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| MintError)?;
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&token);
    Ok((token, hash))
}

/// SHA-256 (hex) of a presented token: what it is looked up by.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuses a token name nobody could read back: 1-100 characters, no control
/// characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err("name must be 1-100 characters, without control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_prefixed_and_kept_only_as_their_hash() {
        let (a, hash_a) = mint().unwrap();
        let (b, _) = mint().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert_eq!(hash_a, hash(&a));
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a[PREFIX.len()..]));
        assert!(check_name("ci deploys").is_ok());
        assert!(check_name(" ").is_err());
        assert!(check_name("a\nb").is_err());
    }
}
