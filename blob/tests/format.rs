//! The blob format against its spec (docs/blob-format.md): round trip, alignment, determinism,
//! and every way of breaking a file: each single-byte change of header and table, each
//! truncation, forged payloads under a signature, keys, random bytes (proptest).

use classmod_blob::*;
use proptest::prelude::*;

fn sample(key: Option<&SigningKey>) -> Vec<u8> {
    let mut w = BlobWriter::new(BlobKind::Module, [3; 32], [5; 16], r#"{"class":"cat"}"#);
    w.tensor_f32("head.weight", &[1, 3], &[0.5, -1.0, 2.25]).unwrap();
    w.tensor("mask.layer1.0.out", DType::U8, &[5], vec![0xff, 0x0f, 0, 1, 2]).unwrap();
    w.tensor_f32("golden.score", &[2], &[0.25, 0.75]).unwrap();
    w.finish(key)
}

fn open(bytes: &[u8], key: Option<&VerifyingKey>) -> Result<(), BlobError> {
    let a = AlignedBytes::new(bytes);
    Blob::open(a.bytes(), key).map(|_| ())
}

#[test]
fn round_trip_aligned_and_deterministic() {
    let bytes = sample(None);
    assert_eq!(bytes, sample(None), "same inputs, same bytes");
    let a = AlignedBytes::new(&bytes);
    let b = Blob::open(a.bytes(), None).unwrap();
    assert_eq!(b.kind(), BlobKind::Module);
    assert_eq!(b.meta(), r#"{"class":"cat"}"#);
    assert_eq!((b.base_key(), b.input_key()), ([3; 32], [5; 16]));
    assert_eq!(b.signer(), None);
    let names: Vec<&str> = b.tensors().map(|t| t.name).collect();
    assert_eq!(names, ["head.weight", "mask.layer1.0.out", "golden.score"]);
    assert_eq!(
        b.tensor("head.weight").unwrap().expect(DType::F32, &[1, 3]).unwrap().to_f32().unwrap(),
        [0.5, -1.0, 2.25]
    );
    assert_eq!(b.tensor("mask.layer1.0.out").unwrap().bytes, &[0xff, 0x0f, 0, 1, 2]);
    assert!(matches!(b.tensor("nope"), Err(BlobError::MissingTensor(_))));
    assert!(b.tensor("golden.score").unwrap().expect(DType::F32, &[3]).is_err());
    for t in b.tensors() {
        let at = t.bytes.as_ptr() as usize - a.bytes().as_ptr() as usize;
        assert_eq!(at % ALIGN, 0, "{} starts on a {ALIGN}-byte boundary", t.name);
    }
}

#[test]
fn every_byte_of_header_and_table_matters() {
    let bytes = sample(None);
    let table_end = HEADER_LEN + 3 * ENTRY_LEN;
    for i in 0..table_end {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            assert!(open(&bad, None).is_err(), "byte {i} ^ {flip:#x} accepted");
        }
    }
    // Every other byte before the trailer is covered by the content hash.
    for i in table_end..bytes.len() - TRAILER_LEN {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(open(&bad, None).is_err(), "byte {i} accepted");
    }
}

#[test]
fn header_changes_are_typed_errors_even_with_a_fixed_up_hash() {
    // A structural check must not depend on the hash: change a field and repair the hash.
    let bytes = sample(None);
    let fix = |mut b: Vec<u8>| {
        let end = b.len() - TRAILER_LEN;
        let h = *blake3::hash(&b[..end]).as_bytes();
        b[end..end + 32].copy_from_slice(&h);
        b
    };
    let set = |at: usize, v: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + v.len()].copy_from_slice(v);
        fix(b)
    };
    assert_eq!(open(&set(0, b"XLSMBLOB"), None), Err(BlobError::BadMagic));
    assert_eq!(open(&set(8, &2u32.to_le_bytes()), None), Err(BlobError::UnsupportedVersion(2)));
    assert_eq!(open(&set(12, &9u32.to_le_bytes()), None), Err(BlobError::UnknownKind(9)));
    assert!(matches!(open(&set(16, &1000u32.to_le_bytes()), None), Err(BlobError::Layout(_))));
    assert_eq!(open(&set(20, &1u32.to_le_bytes()), None), Err(BlobError::ReservedNotZero("flags")));
    // Tensor 0's dtype, rank, a shape entry past the rank, offset, byte count.
    let e0 = HEADER_LEN;
    assert!(matches!(open(&set(e0 + 48, &7u32.to_le_bytes()), None), Err(BlobError::BadTensor { index: 0, .. })));
    assert!(matches!(open(&set(e0 + 52, &5u32.to_le_bytes()), None), Err(BlobError::BadTensor { index: 0, .. })));
    assert!(matches!(open(&set(e0 + 64, &1u32.to_le_bytes()), None), Err(BlobError::BadTensor { index: 0, .. })));
    assert!(matches!(open(&set(e0 + 72, &64u64.to_le_bytes()), None), Err(BlobError::BadTensor { .. })));
    assert!(matches!(open(&set(e0 + 72, &u64::MAX.to_le_bytes()), None), Err(BlobError::BadTensor { .. })));
    assert!(matches!(open(&set(e0 + 80, &16u64.to_le_bytes()), None), Err(BlobError::BadTensor { .. })));
    // Tensor 1 renamed to tensor 0's name.
    let mut b = bytes.clone();
    let name0 = b[e0..e0 + MAX_NAME_LEN].to_vec();
    b[e0 + ENTRY_LEN..e0 + ENTRY_LEN + MAX_NAME_LEN].copy_from_slice(&name0);
    assert_eq!(open(&fix(b), None), Err(BlobError::DuplicateTensor("head.weight".into())));
}

#[test]
fn every_truncation_and_extension_is_an_error() {
    let bytes = sample(None);
    for n in 0..bytes.len() {
        assert!(open(&bytes[..n], None).is_err(), "truncated to {n} bytes accepted");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(open(&longer, None).is_err());
}

#[test]
fn misaligned_bytes_are_an_error_not_a_panic() {
    let bytes = sample(None);
    let mut v = vec![0u64; bytes.len().div_ceil(8) + 1];
    let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
    raw[1..1 + bytes.len()].copy_from_slice(&bytes);
    assert!(matches!(Blob::parse(&raw[1..1 + bytes.len()]), Err(BlobError::Layout(_))));
}

#[test]
fn signatures() {
    let sk = SigningKey::from_bytes(&[9; 32]);
    let pk = sk.verifying_key();
    let other = SigningKey::from_bytes(&[10; 32]).verifying_key();
    let signed = sample(Some(&sk));
    assert_eq!(open(&signed, Some(&pk)), Ok(()));
    assert_eq!(open(&signed, None), Ok(()), "a device without a key still checks the hash");
    {
        let a = AlignedBytes::new(&signed);
        assert_eq!(Blob::parse(a.bytes()).unwrap().signer(), Some(key_id(&pk)));
    }
    assert_eq!(open(&sample(None), Some(&pk)), Err(BlobError::Unsigned), "unsigned refused by a device with a key");
    assert!(matches!(open(&signed, Some(&other)), Err(BlobError::WrongKey { .. })));
    // A forger changes one payload byte and recomputes the content hash: the signature catches it.
    let b = Blob::parse(AlignedBytes::new(&signed).bytes()).map(|b| b.header().data_offset).unwrap();
    let mut forged = signed.clone();
    forged[u64::from_le(b) as usize] ^= 1;
    let end = forged.len() - TRAILER_LEN;
    let h = *blake3::hash(&forged[..end]).as_bytes();
    forged[end..end + 32].copy_from_slice(&h);
    assert_eq!(open(&forged, None), Ok(()), "the hash alone is not proof against tampering");
    assert_eq!(open(&forged, Some(&pk)), Err(BlobError::BadSignature));
    // A flipped signature byte.
    let mut bad_sig = signed.clone();
    bad_sig[end + 40] ^= 1;
    assert_eq!(open(&bad_sig, Some(&pk)), Err(BlobError::BadSignature));
}

#[test]
fn writer_refuses_what_the_reader_would() {
    let mut w = BlobWriter::new(BlobKind::Base, [0; 32], [0; 16], "{}");
    assert!(w.tensor("", DType::U8, &[1], vec![0]).is_err());
    assert!(w.tensor(&"x".repeat(MAX_NAME_LEN + 1), DType::U8, &[1], vec![0]).is_err());
    assert!(w.tensor("a", DType::U8, &[], vec![]).is_err());
    assert!(w.tensor("a", DType::U8, &[1, 1, 1, 1, 1], vec![0]).is_err());
    assert!(w.tensor("a", DType::F32, &[2], vec![0; 4]).is_err());
    w.tensor("a", DType::U8, &[1], vec![0]).unwrap();
    assert!(matches!(w.tensor("a", DType::U8, &[1], vec![0]), Err(BlobError::DuplicateTensor(_))));
    // An empty blob (no tensors) is valid.
    let empty = BlobWriter::new(BlobKind::Base, [0; 32], [0; 16], "").finish(None);
    assert_eq!(open(&empty, None), Ok(()));
}

/// Every prefix of a blob peeks as a blob being written (its kind once 16 bytes are there, its
/// declared length once the header is whole, and that length is the file's); other bytes, a
/// broken magic and an unknown kind are told apart.
#[test]
fn a_prefix_says_what_it_starts() {
    let b = sample(None);
    for n in 0..=b.len() {
        let want = match n {
            0..16 => Peek::Partial { kind: None },
            16..HEADER_LEN => Peek::Partial { kind: Some(BlobKind::Module) },
            _ => Peek::Declares { kind: BlobKind::Module, file_len: b.len() as u64 },
        };
        assert_eq!(Header::peek(&b[..n]), want, "{n} bytes");
    }
    assert_eq!(Header::peek(b"CLSMBLOX"), Peek::NotBlob);
    assert_eq!(Header::peek(b"PK\x03\x04"), Peek::NotBlob);
    let mut unknown = b.clone();
    unknown[12..16].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(Header::peek(&unknown), Peek::UnknownKind(7));
    let mut huge = b.clone();
    huge[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(Header::peek(&huge), Peek::NotBlob, "a declared length that overflows");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = open(&bytes, None);
        let _ = Header::peek(&bytes);
    }

    #[test]
    fn mutated_blobs_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut b = sample(None);
        for (at, v) in edits {
            let i = at % b.len();
            b[i] = v;
        }
        let n = b.len();
        b.truncate(n - cut % 64);
        let _ = open(&b, None);
    }
}
