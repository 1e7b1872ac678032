//! Users' passwords: Argon2id (the `argon2` crate) in PHC strings, so the parameters travel with
//! each hash and can be raised later without invalidating old ones.
//!
//! The cost is chosen so one sign-in takes 50–250 ms on the plane's machines (BENCHMARKS.md has
//! the figure on the reference machine): slow enough that a stolen database is expensive to
//! guess against, fast enough for people. Hashing runs on blocking threads, at most
//! [`CONCURRENT`] at once, so a burst of sign-ins neither stalls the API nor takes
//! `CONCURRENT × MEMORY_KIB` of memory more than that.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory per hash, in KiB (46 MiB: OWASP's recommended minimum for Argon2id is 46 MiB with
/// one pass; we make two).
pub const MEMORY_KIB: u32 = 46 * 1024;
/// Passes over that memory.
pub const ITERATIONS: u32 = 2;
/// Hashes computed at once by one node.
pub const CONCURRENT: usize = 2;
/// The shortest password accepted.
pub const MIN_LENGTH: usize = 12;

fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(MEMORY_KIB, ITERATIONS, 1, None).expect("the parameters are valid"),
    )
}

/// Why a password cannot be used.
pub fn check(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LENGTH {
        return Err(format!("must be at least {MIN_LENGTH} characters"));
    }
    if password.len() > 1024 {
        return Err("must be at most 1024 bytes".into());
    }
    Ok(())
}

/// The PHC string of `password` with a fresh salt. CPU- and memory-heavy: call it off the
/// async runtime.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("the OS gave no random bytes: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Whether `password` matches `phc` (with whatever parameters `phc` records). As slow as
/// [`hash`].
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a password nobody has: verifying against it costs what a real check costs, so a
/// sign-in for a user that does not exist takes as long as a wrong password.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("not a password anyone has").expect("hashing works"))
}

/// A fresh password for a user created without one: 24 characters from an alphabet without
/// look-alikes (about 139 bits).
pub fn generate() -> Result<String, String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS gave no random bytes: {e}"))?;
    // 256 is not a multiple of the alphabet's 55 letters; the bias is a fraction of a bit.
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=47104,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterY", &phc));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(phc, hash("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn passwords_are_checked_and_generated_long() {
        assert!(check("short").unwrap_err().contains("at least 12"));
        assert!(check("long enough password").is_ok());
        let p = generate().unwrap();
        assert_eq!(p.chars().count(), 24);
        assert!(check(&p).is_ok());
        assert_ne!(p, generate().unwrap());
    }
}
