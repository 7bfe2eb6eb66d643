//! Password hashes: argon2id with the crate's default parameters (19 MiB, 2 passes), stored as PHC strings.
//!
//! Each thread computes its hashes in a working memory of its own that it keeps for the next one. Allocated
//! afresh for every hash, the 19 MiB end up retained by the allocator several times over per thread (freed
//! blocks that size are kept, not returned), so memory grew with every login; reused, it stays one block
//! per hashing thread, and only the login guard's few threads hash.

use std::cell::RefCell;

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;

thread_local! {
    static WORKING_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The PHC string of `password` hashed with `algorithm`, `version`, `params` and `salt`.
fn hash_with(
    password: &[u8],
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Salt<'_>,
) -> argon2::password_hash::Result<String> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let blocks = params.block_count();
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let params_string = ParamsString::try_from(&params)?;
    let argon2 = Argon2::new(algorithm, version, params);
    let output = Output::init_with(output_len, |out| {
        WORKING_MEMORY.with(|memory| {
            let mut memory = memory.borrow_mut();
            if memory.len() != blocks {
                *memory = vec![Block::default(); blocks];
            }
            argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..])
        })?;
        Ok(())
    })?;
    let phc = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: params_string,
        salt: Some(salt),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// A new hash of `password`, with a random salt.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    hash_with(password.as_bytes(), Algorithm::Argon2id, Version::V0x13, Params::default(), salt.as_salt())
        .expect("argon2id with its default parameters")
}

/// Whether `password` is the one `phc` was made from (compared in constant time).
pub fn verify(phc: &str, password: &str) -> bool {
    let Ok(stored) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(stored.algorithm), Params::try_from(&stored)) else {
        return false;
    };
    let version = match stored.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(computed) = hash_with(password.as_bytes(), algorithm, version, params, salt) else { return false };
    PasswordHash::new(&computed).ok().and_then(|c| c.hash).is_some_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let phc = hash("s3cret");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(&phc, "s3cret"));
        assert!(!verify(&phc, "s3cre"));
        assert!(!verify("not a hash", "s3cret"));
    }

    #[test]
    fn hashes_are_those_of_the_argon2_crate_both_ways() {
        // Made by the crate's own PasswordHasher, as nimbus stored them before; and the other way round.
        let salt = SaltString::encode_b64(b"somesaltsomesalt").unwrap();
        let theirs = Argon2::default().hash_password(b"password", &salt).unwrap().to_string();
        assert!(verify(&theirs, "password"), "{theirs}");
        assert!(!verify(&theirs, "Password"));
        let same_salt = hash_with(b"password", Algorithm::Argon2id, Version::V0x13, Params::default(), salt.as_salt());
        assert_eq!(same_salt.unwrap(), theirs, "the same string for the same salt");
        let ours = hash("password");
        assert!(Argon2::default().verify_password(b"password", &PasswordHash::new(&ours).unwrap()).is_ok());
    }
}
