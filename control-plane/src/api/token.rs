//! API token and session secrets: 256 random bits, shown once; only their SHA-256 is kept. A plain hash is
//! enough because the secret is random, not a password: there is nothing to guess.

use sha2::{Digest, Sha256};

/// Prefix that makes a Meridian token recognisable in a leaked-secrets scan.
pub const PREFIX: &str = "mrd_";
/// Prefix of a session's secret (the cookie's value).
pub const SESSION_PREFIX: &str = "mrs_";

/// A fresh token secret: `mrd_` and 64 hex digits.
pub fn generate() -> Result<String, String> {
    secret(PREFIX)
}

/// A fresh secret: `prefix` and 256 random bits in hex.
pub fn secret(prefix: &str) -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS gave no random bytes: {e}"))?;
    Ok(format!("{prefix}{}", hex(&bytes)))
}

/// Lower-case hex SHA-256 of `secret`, as stored and looked up.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_hashes_are_sha256() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64);
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
