//! How keys and records become bytes: ordered key encodings, and versioned bincode records.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::StoreError;

/// A key: encoded so that byte order is the order range scans should follow.
pub trait KeyCodec: Sized {
    fn encode_key(&self) -> Vec<u8>;
    fn decode_key(bytes: &[u8]) -> Option<Self>;
}

impl KeyCodec for String {
    fn encode_key(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl KeyCodec for u32 {
    fn encode_key(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl KeyCodec for u64 {
    fn encode_key(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl KeyCodec for () {
    fn encode_key(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        bytes.is_empty().then_some(())
    }
}

/// A persisted value. Stored as one version byte followed by the bincode encoding of that version's shape;
/// a record kind that changes shape bumps `VERSION` and teaches `upgrade` to read the older bytes.
pub trait Record: Serialize + DeserializeOwned {
    /// Name used in errors.
    const KIND: &'static str;
    const VERSION: u8;

    /// Reads a record written by an older nimbus. The default knows no older versions.
    fn upgrade(version: u8, _bytes: &[u8]) -> Result<Self, StoreError> {
        Err(StoreError::UnknownRecordVersion { kind: Self::KIND, found: version })
    }
}

pub(crate) fn encode_record<V: Record>(value: &V) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![V::VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|source| StoreError::Encode { kind: V::KIND, source })?;
    Ok(out)
}

pub(crate) fn decode_record<V: Record>(bytes: &[u8]) -> Result<V, StoreError> {
    let (&version, body) = bytes.split_first().ok_or(StoreError::EmptyRecord { kind: V::KIND })?;
    if version == V::VERSION {
        let (value, _) = bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|source| StoreError::Decode { kind: V::KIND, source })?;
        Ok(value)
    } else if version > V::VERSION {
        Err(StoreError::RecordFromNewerVersion { kind: V::KIND, found: version, supported: V::VERSION })
    } else {
        V::upgrade(version, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ThingV1 {
        name: String,
    }
    impl Record for ThingV1 {
        const KIND: &'static str = "thing";
        const VERSION: u8 = 1;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ThingV2 {
        name: String,
        size: u32,
    }
    impl Record for ThingV2 {
        const KIND: &'static str = "thing";
        const VERSION: u8 = 2;
        fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
            assert_eq!(version, 1, "only v1 is older");
            let (old, _): (ThingV1, _) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
                .map_err(|source| StoreError::Decode { kind: "thing", source })?;
            Ok(ThingV2 { name: old.name, size: 0 })
        }
    }

    #[test]
    fn records_round_trip_and_upgrade() {
        let v1 = encode_record(&ThingV1 { name: "a".into() }).unwrap();
        assert_eq!(decode_record::<ThingV1>(&v1).unwrap(), ThingV1 { name: "a".into() });
        assert_eq!(decode_record::<ThingV2>(&v1).unwrap(), ThingV2 { name: "a".into(), size: 0 });
        let v2 = encode_record(&ThingV2 { name: "b".into(), size: 3 }).unwrap();
        let err = decode_record::<ThingV1>(&v2).unwrap_err();
        assert!(matches!(err, StoreError::RecordFromNewerVersion { found: 2, supported: 1, .. }), "{err}");
        let err = decode_record::<ThingV1>(&[0]).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownRecordVersion { found: 0, .. }),
            "an older version nobody reads: {err}"
        );
        assert!(matches!(decode_record::<ThingV1>(&[]).unwrap_err(), StoreError::EmptyRecord { .. }));
    }

    #[test]
    fn keys_sort_like_values() {
        let mut keys: Vec<Vec<u8>> = [300u32, 2, 70_000].iter().map(KeyCodec::encode_key).collect();
        keys.sort();
        let decoded: Vec<u32> = keys.iter().map(|k| u32::decode_key(k).unwrap()).collect();
        assert_eq!(decoded, vec![2, 300, 70_000]);
    }
}
