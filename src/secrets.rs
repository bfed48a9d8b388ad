//! Secrets at rest: the client secrets and refresh tokens of `oauth_credentials`
//! are stored sealed with AES-256-GCM (ring, already in the tree for TLS), each
//! beside the id of the key that sealed it, so keys can be rotated: the first key
//! of `SUBKEEPER_SECRET_KEYS` seals, every listed key opens, and `subkeeper
//! rotate-key` re-seals everything under the first.
//!
//! A sealed value is bound to where it is stored (the credentials row and the
//! field, as associated data): copied into another row or field, it does not
//! open. Owns the keys and the cipher; never logs, formats or returns a key or a
//! plaintext except to the caller that asked to open it (`Debug` shows key ids
//! only).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

/// Length of an AES-256 key, in bytes.
pub const KEY_LEN: usize = 32;

/// Longest key id, in characters.
const MAX_KEY_ID_LEN: usize = 32;

/// Why a key list or a sealed value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `SUBKEEPER_SECRET_KEYS` does not parse; the message says which entry and
    /// why, never the key material.
    #[error("SUBKEEPER_SECRET_KEYS: {0}")]
    Keys(String),
    /// A value was sealed with a key that is not configured.
    #[error(
        "a secret is sealed with key '{0}', which SUBKEEPER_SECRET_KEYS does not list (keep old keys listed until `subkeeper rotate-key` has run)"
    )]
    UnknownKey(String),
    /// A sealed value does not open: altered, copied from elsewhere, or not sealed
    /// by us.
    #[error("a sealed secret does not open with key '{0}' (altered, or stored elsewhere)")]
    Tampered(String),
    /// The system's random source failed.
    #[error("no randomness for a nonce")]
    Random,
}

/// The configured keys: the first seals, all open.
pub struct Keyring {
    /// (id, key), the sealing key first.
    keys: Vec<(String, LessSafeKey)>,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A secret as stored: the sealing key's id and `base64(nonce ‖ ciphertext ‖ tag)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which key sealed it.
    pub key_id: String,
    /// The sealed bytes, base64.
    pub value: String,
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key…]`; the first entry seals. Ids are
    /// 1–32 characters of `A-Za-z0-9_-`, unique; keys are 32 bytes.
    pub fn parse(spec: &str) -> Result<Self, SecretError> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        for (i, entry) in spec.split(',').map(str::trim).enumerate() {
            let n = i + 1;
            let Some((id, material)) = entry.split_once(':') else {
                return Err(SecretError::Keys(format!("entry {n} is not id:base64-key")));
            };
            let valid_id = !id.is_empty()
                && id.len() <= MAX_KEY_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_id {
                return Err(SecretError::Keys(format!(
                    "entry {n}: the key id must be 1-{MAX_KEY_ID_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"
                )));
            }
            if keys.iter().any(|(other, _)| other == id) {
                return Err(SecretError::Keys(format!("key id '{id}' is listed twice")));
            }
            let bytes = BASE64
                .decode(material.trim())
                .map_err(|_| SecretError::Keys(format!("key '{id}' is not base64")))?;
            if bytes.len() != KEY_LEN {
                return Err(SecretError::Keys(format!(
                    "key '{id}' is {} bytes; AES-256 needs {KEY_LEN}",
                    bytes.len()
                )));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| SecretError::Keys(format!("key '{id}' is not usable")))?;
            keys.push((id.to_owned(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(SecretError::Keys("no key".into()));
        }
        Ok(Self {
            keys,
            random: SystemRandom::new(),
        })
    }

    /// A new key entry, `id:base64key`, with a random key and an id naming the
    /// day it was made (and a random suffix, so two made on one day differ).
    pub fn generate_entry(today: chrono::NaiveDate) -> Result<String, SecretError> {
        let random = SystemRandom::new();
        let mut key = [0u8; KEY_LEN];
        random.fill(&mut key).map_err(|_| SecretError::Random)?;
        let mut suffix = [0u8; 2];
        random.fill(&mut suffix).map_err(|_| SecretError::Random)?;
        Ok(format!(
            "k{}-{:02x}{:02x}:{}",
            today.format("%Y%m%d"),
            suffix[0],
            suffix[1],
            BASE64.encode(key)
        ))
    }

    /// The id of the sealing key.
    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id)
    }

    /// Seals `plaintext` for the place `context` names (e.g.
    /// `oauth_credentials:<id>:client_secret`).
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<Sealed, SecretError> {
        let Some((id, key)) = self.keys.first() else {
            return Err(SecretError::Keys("no key".into()));
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut in_out = plaintext.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut in_out,
        )
        .map_err(|_| SecretError::Tampered(id.clone()))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&in_out);
        Ok(Sealed {
            key_id: id.clone(),
            value: BASE64.encode(stored),
        })
    }

    /// Opens a value sealed for `context` with key `key_id`.
    pub fn open(&self, key_id: &str, value: &str, context: &str) -> Result<String, SecretError> {
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, key)| key)
            .ok_or_else(|| SecretError::UnknownKey(key_id.to_owned()))?;
        let tampered = || SecretError::Tampered(key_id.to_owned());
        let bytes = BASE64.decode(value).map_err(|_| tampered())?;
        if bytes.len() < NONCE_LEN {
            return Err(tampered());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| tampered())?;
        let mut in_out = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| tampered())?;
        String::from_utf8(plain.to_vec()).map_err(|_| tampered())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    fn key(byte: u8) -> String {
        BASE64.encode([byte; KEY_LEN])
    }

    #[test]
    fn a_sealed_secret_opens_only_where_it_was_stored_and_never_shows_in_clear() {
        let ring = keyring(&format!("k1:{}", key(1)));
        let sealed = ring
            .seal("s3cret-value", "oauth_credentials:a:client_secret")
            .unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.value.contains("s3cret"));
        assert_eq!(
            ring.open("k1", &sealed.value, "oauth_credentials:a:client_secret")
                .unwrap(),
            "s3cret-value"
        );
        // Copied into another row or field: refused.
        assert_eq!(
            ring.open("k1", &sealed.value, "oauth_credentials:b:client_secret"),
            Err(SecretError::Tampered("k1".into()))
        );
        assert!(
            ring.open("k1", &sealed.value, "oauth_credentials:a:refresh_token")
                .is_err()
        );
        // Two seals of one value differ (fresh nonce).
        assert_ne!(
            sealed.value,
            ring.seal("s3cret-value", "oauth_credentials:a:client_secret")
                .unwrap()
                .value
        );
        assert!(!format!("{ring:?}").contains(&key(1)));
    }

    #[test]
    fn the_first_key_seals_and_every_listed_key_opens() {
        let old = keyring(&format!("old:{}", key(1)));
        let sealed = old.seal("x", "c").unwrap();
        let rotated = keyring(&format!("new:{},old:{}", key(2), key(1)));
        assert_eq!(rotated.current_id(), "new");
        assert_eq!(rotated.open("old", &sealed.value, "c").unwrap(), "x");
        assert_eq!(rotated.seal("x", "c").unwrap().key_id, "new");
        let dropped = keyring(&format!("new:{}", key(2)));
        assert_eq!(
            dropped.open("old", &sealed.value, "c"),
            Err(SecretError::UnknownKey("old".into()))
        );
    }

    #[test]
    fn bad_key_lists_are_refused_without_echoing_key_material() {
        let material = key(7);
        for (spec, says) in [
            ("", "not id:base64-key"),
            ("k1", "not id:base64-key"),
            ("k 1:AAAA", "key id must be"),
            (&format!("k1:{material},k1:{material}"), "listed twice"),
            ("k1:not*base64", "not base64"),
            (&format!("k1:{}", BASE64.encode([1u8; 16])), "is 16 bytes"),
        ] {
            let e = Keyring::parse(spec).unwrap_err().to_string();
            assert!(e.contains(says), "{spec}: {e}");
            assert!(!e.contains(&material), "{e}");
        }
        let entry =
            Keyring::generate_entry(chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()).unwrap();
        assert!(entry.starts_with("k20261202-"), "{entry}");
        assert_eq!(
            keyring(&entry).seal("x", "c").unwrap().key_id.len(),
            "k20261202-abcd".len()
        );
    }
}
