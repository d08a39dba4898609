//! Ed25519 signing of a blob's content hash, key ids, and the text form of key files.

pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::BlobError;

/// Signed message = this domain string followed by the 32-byte content hash, so a signature made
/// for a blob can never be replayed as a signature of anything else.
pub const SIGNATURE_DOMAIN: &[u8] = b"classmod-blob-v1 content hash\0";

const SECRET_TAG: &str = "classmod-ed25519-secret-v1";
const PUBLIC_TAG: &str = "classmod-ed25519-public-v1";

/// First 8 bytes of BLAKE3 of the public key: names the signer in the trailer.
pub fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let h = blake3::hash(key.as_bytes());
    h.as_bytes()[..8].try_into().expect("8 of 32 bytes")
}

pub(crate) fn message(hash: &[u8; 32]) -> Vec<u8> {
    [SIGNATURE_DOMAIN, hash].concat()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `classmod-ed25519-secret-v1 <64 hex digits>` (one line).
pub fn secret_key_text(key: &SigningKey) -> String {
    format!("{SECRET_TAG} {}\n", hex(key.as_bytes()))
}

/// `classmod-ed25519-public-v1 <64 hex digits>` (one line).
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG} {}\n", hex(key.as_bytes()))
}

fn parse_line<'a>(text: &'a str, tag: &str) -> Result<[u8; 32], BlobError> {
    let line = text.trim();
    let rest: &'a str =
        line.strip_prefix(tag).ok_or_else(|| BlobError::BadKey(format!("expected a line starting with `{tag}`")))?;
    unhex32(rest.trim()).ok_or_else(|| BlobError::BadKey("expected 64 hexadecimal digits after the tag".into()))
}

/// Reads a secret key file written by [`secret_key_text`] (the 32-byte Ed25519 seed).
pub fn parse_secret_key(text: &str) -> Result<SigningKey, BlobError> {
    Ok(SigningKey::from_bytes(&parse_line(text, SECRET_TAG)?))
}

/// Reads a public key file written by [`public_key_text`]; rejects bytes that are not a valid
/// Ed25519 public key.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, BlobError> {
    VerifyingKey::from_bytes(&parse_line(text, PUBLIC_TAG)?)
        .map_err(|_| BlobError::BadKey("not a valid Ed25519 public key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_reject_garbage() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let pk = sk.verifying_key();
        assert_eq!(parse_secret_key(&secret_key_text(&sk)).unwrap().as_bytes(), sk.as_bytes());
        assert_eq!(parse_public_key(&public_key_text(&pk)).unwrap(), pk);
        assert!(parse_public_key(&secret_key_text(&sk)).is_err(), "a secret key is not a public key file");
        assert!(parse_secret_key("classmod-ed25519-secret-v1 00").is_err());
        assert!(parse_secret_key(&format!("classmod-ed25519-secret-v1 {}", "zz".repeat(32))).is_err());
        assert!(parse_secret_key(&format!("classmod-ed25519-secret-v1 {}", "é".repeat(32))).is_err());
        assert_ne!(key_id(&pk), [0u8; 8]);
    }
}
