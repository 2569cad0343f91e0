//! Encryption at rest for endpoint records (signing secrets, tokens, header values, URLs with
//! query tokens): XChaCha20-Poly1305 with a random 192-bit nonce per write.
//!
//! The key comes from configuration (`HERALD_SECRET_KEY`, base64 of 32 bytes) or from
//! `secret.key` in the data directory, created with mode 0600 on first start. Losing the key
//! makes endpoint records unreadable; back it up with — or better, apart from — the data.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, Generate, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// Seals and opens records with one key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer for a 32-byte key.
    pub fn new(key: &[u8; KEY_BYTES]) -> Sealer {
        // A 32-byte slice is always a valid XChaCha20-Poly1305 key.
        let Ok(cipher) = XChaCha20Poly1305::new_from_slice(key) else {
            unreachable!("32-byte key")
        };
        Sealer { cipher }
    }

    /// `nonce || ciphertext+tag`.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let nonce = XNonce::generate();
        let sealed = self
            .cipher
            .encrypt(&nonce, plain)
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext, or an error when the record was not sealed with this key.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_BYTES {
            return Err("sealed record is too short".into());
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| "bad nonce".to_string())?;
        self.cipher
            .decrypt(&nonce, body)
            .map_err(|_| "cannot decrypt: wrong secret key, or the record is damaged".into())
    }
}

/// Reads the key file, or creates it (mode 0600) with a fresh random key.
pub fn load_or_create_key(path: &Path) -> Result<[u8; KEY_BYTES], String> {
    match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|_| {
            format!(
                "{}: a key file holds exactly {KEY_BYTES} bytes",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; KEY_BYTES] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_with_their_key_only() {
        let sealer = Sealer::new(&[7; KEY_BYTES]);
        let sealed = sealer.seal(b"customer-api-key").unwrap();
        assert!(!sealed.windows(16).any(|w| w == b"customer-api-key"));
        assert_eq!(sealer.open(&sealed).unwrap(), b"customer-api-key");
        assert_ne!(
            sealer.seal(b"customer-api-key").unwrap(),
            sealed,
            "fresh nonce per write"
        );
        assert!(Sealer::new(&[8; KEY_BYTES]).open(&sealed).is_err());
        assert!(sealer.open(b"short").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = load_or_create_key(&path).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_create_key(&path).is_err());
    }
}
