//! Key pairs: each user's SSH public keys by name, as nova keeps them. A key pair is either generated here
//! (ed25519; its private half goes to the caller once and is never stored) or imported from a public key,
//! which must parse as an OpenSSH key. A server created with `key_name` keeps a copy of the public key.

use md5::{Digest, Md5};
use nimbus_protocol::ids::{ProjectId, UserId};
use nimbus_storage::records::{AllocationCursor, InstanceKey, KeyPair, now_ms};
use nimbus_storage::schema::{COUNTERS, KEY_PAIRS};
use nimbus_storage::{Pair, Reads, StoreError, WriteTx};
use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::quota;

/// The comment a generated key carries.
const GENERATED_COMMENT: &str = "Generated-by-nimbus";

/// A key pair as created: the stored record, and the private key if nimbus generated it.
#[derive(Debug)]
pub struct Created {
    pub pair: KeyPair,
    pub private_key: Option<String>,
}

/// Why a key-pair name is refused, as nova words it (1 to 255 characters: letters, digits, `_`, `-` and
/// inner spaces).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.chars().count() > 255 {
        return Some("Keypair name must be string and between 1 and 255 characters long".into());
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ');
    if !name.chars().all(safe) || name.starts_with(' ') || name.ends_with(' ') {
        return Some(format!(
            "Keypair data is invalid: keypair name {name:?} contains unsafe characters (letters, digits, '_', '-' \
             and inner spaces only)"
        ));
    }
    None
}

/// The public key in its one-line OpenSSH form and its fingerprint, if `text` is one.
pub fn parse_public_key(text: &str) -> Result<(String, String), CloudError> {
    let key = PublicKey::from_openssh(text.trim())
        .map_err(|e| CloudError::BadRequest(format!("Keypair data is invalid: not an OpenSSH public key ({e}).")))?;
    let public_key = key
        .to_openssh()
        .map_err(|e| CloudError::BadRequest(format!("Keypair data is invalid: the key does not encode ({e}).")))?;
    Ok((public_key, fingerprint(&key)?))
}

/// Nova's fingerprint of a key: the MD5 of its wire form, in colon-separated hex.
fn fingerprint(key: &PublicKey) -> Result<String, CloudError> {
    let wire = key.to_bytes().map_err(|e| {
        CloudError::BadRequest(format!("Keypair data is invalid: failed to generate fingerprint ({e})."))
    })?;
    Ok(Md5::digest(&wire).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// A new ed25519 key: its private half (OpenSSH PEM), public half (one line) and fingerprint. Ed25519 rather
/// than nova's RSA: small keys, made in microseconds, and OpenSSH's default.
fn generate() -> Result<(String, String, String), CloudError> {
    let internal = |e: ssh_key::Error| CloudError::Internal(format!("generating a key pair: {e}"));
    let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).map_err(internal)?;
    key.set_comment(GENERATED_COMMENT);
    let private_key = key.to_openssh(LineEnding::LF).map_err(internal)?.to_string();
    let public = key.public_key();
    Ok((private_key, public.to_openssh().map_err(internal)?, fingerprint(public)?))
}

fn not_found(name: &str, user: UserId) -> CloudError {
    CloudError::NotFound(format!("Keypair {name} not found for user {user}"))
}

/// Creates `user`'s key pair `name`, from `public_key` or generated. Counted against the key-pair limit of
/// `project`, the one the user asks in.
pub async fn create(
    app: &App,
    user: UserId,
    project: ProjectId,
    name: String,
    public_key: Option<String>,
) -> Result<Created, CloudError> {
    if let Some(problem) = name_problem(&name) {
        return Err(CloudError::BadRequest(problem));
    }
    let (private_key, public_key, fingerprint) = match public_key {
        Some(text) => {
            let (public_key, fingerprint) = parse_public_key(&text)?;
            (None, public_key, fingerprint)
        }
        None => {
            let (private_key, public_key, fingerprint) = generate()?;
            (Some(private_key), public_key, fingerprint)
        }
    };
    let pair = app
        .store
        .write(move |tx| {
            let key = Pair(user, name.clone());
            if tx.get(&KEY_PAIRS, &key)?.is_some() {
                return Err(CloudError::Conflict(format!("Key pair '{name}' already exists.")));
            }
            if let Some(limit) = quota::quota(tx, project)?.key_pairs {
                let mut held = 0;
                tx.visit_keys(&KEY_PAIRS, &Pair::<UserId, String>::prefix(&user), None, |_| {
                    held += 1;
                    Ok(held < limit)
                })?;
                if held >= limit {
                    return Err(CloudError::QuotaExceeded(format!(
                        "Quota exceeded, too many key pairs: user {user} holds {held} of {limit}."
                    )));
                }
            }
            let pair =
                KeyPair { user, name, number: next_number_in(tx)?, public_key, fingerprint, created_at: now_ms() };
            tx.put(&KEY_PAIRS, &key, &pair)?;
            Ok(pair)
        })
        .await?;
    tracing::info!(user = %pair.user, name = %pair.name, generated = private_key.is_some(), "key pair created");
    Ok(Created { pair, private_key })
}

fn next_number_in(tx: &mut WriteTx<'_>) -> Result<u32, StoreError> {
    let key = "key_pair".to_string();
    let next = tx.get(&COUNTERS, &key)?.map_or(1, |c| c.next);
    tx.put(&COUNTERS, &key, &AllocationCursor { next: next + 1 })?;
    Ok(next)
}

/// The user's key pairs, by name.
pub fn list(app: &App, user: UserId) -> Result<Vec<KeyPair>, StoreError> {
    let pairs = app.store.read(|r| r.scan_prefix(&KEY_PAIRS, &Pair::<UserId, String>::prefix(&user)))?;
    Ok(pairs.into_iter().map(|(_, pair)| pair).collect())
}

pub fn get(app: &App, user: UserId, name: &str) -> Result<KeyPair, CloudError> {
    app.store.read(|r| r.get(&KEY_PAIRS, &Pair(user, name.to_string())))?.ok_or_else(|| not_found(name, user))
}

pub async fn delete(app: &App, user: UserId, name: String) -> Result<(), CloudError> {
    app.store
        .write(move |tx| match tx.delete(&KEY_PAIRS, &Pair(user, name.clone()))? {
            Some(_) => Ok(()),
            None => Err(not_found(&name, user)),
        })
        .await
}

/// Deletes every key pair of a user (the user is being deleted).
pub(crate) fn delete_all_in(tx: &mut WriteTx<'_>, user: UserId) -> Result<(), StoreError> {
    for (key, _) in tx.scan_prefix(&KEY_PAIRS, &Pair::<UserId, String>::prefix(&user))? {
        tx.delete(&KEY_PAIRS, &key)?;
    }
    Ok(())
}

/// The copy of the user's key pair `name` a new instance keeps; a 400 if they have none by that name.
pub fn instance_key(r: &impl Reads, user: UserId, name: &str) -> Result<InstanceKey, CloudError> {
    let pair = r.get(&KEY_PAIRS, &Pair(user, name.to_string()))?.ok_or_else(|| {
        CloudError::BadRequest(format!("Invalid key_name provided: the user has no key pair {name:?}."))
    })?;
    Ok(InstanceKey { name: pair.name, public_key: pair.public_key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pair_names_are_checked_as_nova_checks_them() {
        let long = "k".repeat(256);
        for (name, refused) in [
            ("mykey", false),
            ("my key_1-a", false),
            (&"k".repeat(255), false),
            ("", true),
            (long.as_str(), true),
            (" leading", true),
            ("trailing ", true),
            ("semi;colon", true),
            ("slash/key", true),
            ("ünïcode", true),
        ] {
            assert_eq!(name_problem(name).is_some(), refused, "{name:?}");
        }
    }

    #[test]
    fn a_generated_key_parses_back_to_the_same_public_key_and_fingerprint() {
        let (private_key, public_key, fingerprint) = generate().unwrap();
        assert!(private_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{private_key}");
        assert!(public_key.starts_with("ssh-ed25519 AAAA") && public_key.ends_with(GENERATED_COMMENT));
        assert_eq!(parse_public_key(&public_key).unwrap(), (public_key.clone(), fingerprint.clone()));
        let private = PrivateKey::from_openssh(&private_key).unwrap();
        assert_eq!(private.public_key().to_openssh().unwrap(), public_key);
        let (_, other, other_fingerprint) = generate().unwrap();
        assert_ne!((other, other_fingerprint), (public_key, fingerprint), "two keys are different");
    }

    #[test]
    fn public_keys_are_validated_and_fingerprinted_as_nova_does() {
        // Made by `ssh-keygen -t ed25519` and `-t rsa -b 2048`; the fingerprints are `ssh-keygen -l -E md5`'s.
        let ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPBefgBEwFmamFM1wrSTgBJ4uGdS8OnEPjgXqZchC+CQ alice@host";
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCxfVUxZFZePpon7rnnRkWIjF0QvCxrKzcMB/wngnEzI9fHtCoCQTj+F4xTqokHczm2G/b+Q4Y9oYgJ/waHkrGOHFytAvgNcoP59mTuVJOPGnrsVIh40iAlyv1OGc9eVX1DjkKYiv4wJ5BMVMDMuzbHOhIJHfPcwzgBG5DUeSShfgt/GgZpxkXOxfJnV4UGLX5EqrfxinAZxezY0jVZS6x+OAxpTHtUQsEXbmKAkKJr2sL2gr6mMrqWgIRbc9cHdp6HoYrlV3+KqcYOGvWeh6BHc8pNAKEvUqry+VzNU8VsDSyd7I7SLSakYvZF1nFzoT6UHTS0n/Xg00z3uz9g17v1 bob@host";
        for (key, fingerprint) in [
            (ed25519, "db:b4:36:8b:ea:65:bb:f6:de:83:87:8a:6b:68:c5:08"),
            (rsa, "7c:ff:69:e4:de:88:d1:2c:4d:b1:34:9b:65:d6:80:f1"),
        ] {
            let parsed = parse_public_key(&format!("  {key}\n")).unwrap();
            assert_eq!(parsed, (key.to_string(), fingerprint.to_string()));
        }
        for bad in [
            "",
            "not a key",
            "ssh-ed25519",
            // Cut short, and an ed25519 key under the RSA name.
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPBefgBEwFmamFM1wrSTgBJ4uGdS8OnEPjgXqZch",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIPBefgBEwFmamFM1wrSTgBJ4uGdS8OnEPjgXqZchC+CQ",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
        ] {
            assert!(matches!(parse_public_key(bad), Err(CloudError::BadRequest(_))), "{bad:?}");
        }
    }
}
