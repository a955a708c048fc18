//! Bearer tokens: generated from the kernel's random source, stored only as
//! a hash.
//!
//! A token carries 256 random bits, so a fast cryptographic hash (BLAKE3) is
//! enough: there is nothing to brute-force that a slow password hash would
//! protect. The database never holds a token, only its hash.

use std::io::Read;

/// The hash under which a token is stored and looked up.
pub type TokenHash = [u8; 32];

/// Tokens start with this so that they are recognisable in a secret scanner.
pub const TOKEN_PREFIX: &str = "vgt_";

/// A fresh token: the prefix and 64 hex digits.
pub fn generate_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> TokenHash {
    *blake3::hash(token.as_bytes()).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hash_stably() -> std::io::Result<()> {
        let a = generate_token()?;
        let b = generate_token()?;
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        Ok(())
    }
}
