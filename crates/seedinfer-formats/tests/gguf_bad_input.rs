mod common;

use common::{raw_gguf, sample_writer, write_temp, RawTensorInfo, XorShift};
use seedinfer_formats::{FormatError, GgufFile};

fn open_bytes(bytes: &[u8]) -> Result<GgufFile, FormatError> {
    GgufFile::from_bytes(bytes.to_vec())
}

fn code_of(bytes: &[u8]) -> &'static str {
    match open_bytes(bytes) {
        Ok(_) => "OK",
        Err(e) => e.code(),
    }
}

#[test]
fn every_truncation_point_is_truncated_file() {
    let bytes = sample_writer().to_bytes().unwrap();
    let full = open_bytes(&bytes).unwrap();
    // Cutting inside the padding after the last tensor leaves a valid file.
    let data_end = full
        .tensors()
        .iter()
        .map(|t| full.data_offset() + t.offset + t.byte_len as u64)
        .max()
        .unwrap() as usize;
    drop(full);
    for cut in 0..data_end {
        let err = open_bytes(&bytes[..cut]).unwrap_err();
        assert_eq!(err.code(), "TRUNCATED_FILE", "cut at {cut}: {err}");
    }
    assert!(open_bytes(&bytes[..data_end]).is_ok());
    // The same through real files (mapping path, including the empty file).
    let dir = tempfile::tempdir().unwrap();
    for cut in [0, 3, 4, 20, 100, data_end - 1] {
        let path = write_temp(&dir, "cut.gguf", &bytes[..cut]);
        let err = GgufFile::open(&path).unwrap_err();
        assert_eq!(err.code(), "TRUNCATED_FILE", "cut at {cut}: {err}");
        assert!(err.to_string().contains("cut.gguf"), "{err}");
    }
}

#[test]
fn truncated_message_names_what_and_sizes() {
    let bytes = sample_writer().to_bytes().unwrap();
    let err = open_bytes(&bytes[..30]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("metadata"), "{msg}");
    assert!(msg.contains("needed") && msg.contains("available"), "{msg}");
}

#[test]
fn wrong_magic_is_bad_magic() {
    let mut bytes = sample_writer().to_bytes().unwrap();
    bytes[..4].copy_from_slice(b"GGML");
    let err = open_bytes(&bytes).unwrap_err();
    assert_eq!(err.code(), "BAD_MAGIC");
    assert!(
        err.to_string().starts_with("not a GGUF file: magic"),
        "{err}"
    );
    // A safetensors file handed to the GGUF reader must say so clearly too.
    assert_eq!(code_of(b"\x10\x00\x00\x00\x00\x00\x00\x00{}"), "BAD_MAGIC");
}

#[test]
fn versions_other_than_2_and_3_are_unsupported() {
    for version in [0u32, 1, 4, 99, 0x0300_0000] {
        let bytes = raw_gguf(version, &[], &[], &[]);
        let err = open_bytes(&bytes).unwrap_err();
        assert_eq!(err.code(), "UNSUPPORTED_GGUF_VERSION", "version {version}");
        assert!(err.to_string().contains(&version.to_string()));
    }
}

#[test]
fn q2_k_tensor_is_unsupported_tensor_type_and_k_quants_load() {
    let raw = |type_id: u32, cols: u64, bytes: usize| {
        raw_gguf(
            3,
            &[],
            &[RawTensorInfo {
                name: "blk.0.ffn_down.weight".into(),
                ne: vec![cols, 1],
                type_id,
                offset: 0,
            }],
            &vec![0u8; bytes],
        )
    };
    // IQ2_XXS: super-blocks of 256 in 66 bytes, named but not decoded.
    let err = open_bytes(&raw(16, 256, 66)).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_TENSOR_TYPE");
    let msg = err.to_string();
    assert!(
        msg.contains("IQ2_XXS") && msg.contains("blk.0.ffn_down.weight"),
        "{msg}"
    );
    // Q2_K .. Q6_K and IQ4_XS load; a row that is not whole 256-element super-blocks cannot match its bytes.
    for (type_id, name, block_bytes) in [
        (10, "Q2_K", 84),
        (11, "Q3_K", 110),
        (12, "Q4_K", 144),
        (13, "Q5_K", 176),
        (14, "Q6_K", 210),
        (23, "IQ4_XS", 136),
    ] {
        let file = open_bytes(&raw(type_id, 512, 2 * block_bytes)).expect(name);
        assert_eq!(file.tensors()[0].tensor_type.name(), name);
        let err = open_bytes(&raw(type_id, 576, 3 * block_bytes)).unwrap_err();
        assert_eq!(err.code(), "TENSOR_SHAPE_MISMATCH", "{name}");
        let msg = err.to_string();
        assert!(
            msg.contains("blk.0.ffn_down.weight") && msg.contains(name) && msg.contains("576"),
            "{msg}"
        );
    }

    let bytes = raw_gguf(
        3,
        &[],
        &[RawTensorInfo {
            name: "w".into(),
            ne: vec![1],
            type_id: 4242,
            offset: 0,
        }],
        &[0u8; 32],
    );
    let err = open_bytes(&bytes).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_TENSOR_TYPE");
    assert!(err.to_string().contains("4242"));
}

#[test]
fn tensor_data_past_end_of_file() {
    let info = |offset, ne| RawTensorInfo {
        name: "w".into(),
        ne,
        type_id: 0,
        offset,
    };
    // Data section shorter than the tensor.
    let bytes = raw_gguf(3, &[], &[info(0, vec![16])], &[0u8; 60]);
    assert_eq!(code_of(&bytes), "TRUNCATED_FILE");
    // Offset far beyond the file, and an offset that overflows u64.
    let bytes = raw_gguf(3, &[], &[info(1 << 40, vec![1])], &[0u8; 32]);
    assert_eq!(code_of(&bytes), "TRUNCATED_FILE");
    let bytes = raw_gguf(3, &[], &[info(u64::MAX - 31, vec![1])], &[0u8; 32]);
    assert!(matches!(code_of(&bytes), "TRUNCATED_FILE" | "CORRUPT_FILE"));
    // Misaligned offset.
    let bytes = raw_gguf(3, &[], &[info(4, vec![1])], &[0u8; 64]);
    assert_eq!(code_of(&bytes), "CORRUPT_FILE");
    // Element count overflow.
    let bytes = raw_gguf(3, &[], &[info(0, vec![u32::MAX as u64 * 4, 1 << 40])], &[]);
    assert!(matches!(code_of(&bytes), "TRUNCATED_FILE" | "CORRUPT_FILE"));
    // Quantized row that is not a whole number of blocks.
    let bytes = raw_gguf(
        3,
        &[],
        &[RawTensorInfo {
            name: "q".into(),
            ne: vec![33],
            type_id: 8,
            offset: 0,
        }],
        &[0u8; 64],
    );
    assert_eq!(code_of(&bytes), "TENSOR_SHAPE_MISMATCH");
}

#[test]
fn absurd_counts_fail_without_allocating() {
    let mut header = b"GGUF".to_vec();
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&u64::MAX.to_le_bytes()); // kv count
    assert_eq!(code_of(&header), "TRUNCATED_FILE");

    // 2^60 tensors, no metadata.
    let mut header = b"GGUF".to_vec();
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(1u64 << 60).to_le_bytes()); // tensor count
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&[0u8; 64]);
    assert_eq!(code_of(&header), "TRUNCATED_FILE");

    // A metadata key claiming 2^40 bytes.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    bytes.extend_from_slice(&[b'k'; 64]);
    assert_eq!(code_of(&bytes), "TRUNCATED_FILE");

    // One array value claiming 2^62 u64 elements.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(b"arr");
    bytes.extend_from_slice(&9u32.to_le_bytes());
    bytes.extend_from_slice(&10u32.to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
    bytes.extend_from_slice(&[0u8; 64]);
    assert_eq!(code_of(&bytes), "TRUNCATED_FILE");

    // A string length of u64::MAX.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 64]);
    assert_eq!(code_of(&bytes), "TRUNCATED_FILE");
}

#[test]
fn invalid_utf8_unknown_value_type_and_bad_alignment_are_corrupt() {
    let mut bytes = raw_gguf(3, &[("key", "ok")], &[], &[]);
    // The value string starts after magic(4)+version(4)+counts(16)+key(8+3)+tag(4)+len(8).
    bytes[47] = 0xff;
    assert_eq!(code_of(&bytes), "CORRUPT_FILE");

    let mut bytes = raw_gguf(3, &[("key", "ok")], &[], &[]);
    bytes[35] = 13; // value type tag
    assert_eq!(code_of(&bytes), "CORRUPT_FILE");

    // general.alignment stored as a string is not valid.
    let bytes = raw_gguf(3, &[("general.alignment", "32")], &[], &[]);
    assert_eq!(code_of(&bytes), "CORRUPT_FILE");

    let bytes = raw_gguf(3, &[("a", "1"), ("a", "2")], &[], &[]);
    assert_eq!(code_of(&bytes), "CORRUPT_FILE");
}

#[test]
fn missing_file_is_model_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = GgufFile::open(&dir.path().join("absent.gguf")).unwrap_err();
    assert_eq!(err.code(), "MODEL_NOT_FOUND");
    assert!(err.to_string().contains("absent.gguf"));
}

#[test]
fn random_corruption_never_panics() {
    let original = sample_writer().to_bytes().unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for _ in 0..5000 {
        let mut bytes = original.clone();
        // Header bytes are where the interesting structure is; bias toward them.
        let header_len = 1200.min(bytes.len());
        for _ in 0..1 + rng.below(4) {
            let at = if rng.below(4) == 0 {
                rng.below(bytes.len())
            } else {
                rng.below(header_len)
            };
            bytes[at] = match rng.below(3) {
                0 => rng.next_u64() as u8,
                1 => 0xff,
                _ => bytes[at] ^ (1 << rng.below(8)),
            };
        }
        if rng.below(8) == 0 {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        let code = match GgufFile::from_bytes(bytes) {
            Ok(file) => {
                for info in file.tensors() {
                    if let Ok(view) = file.tensor(&info.name) {
                        let _ = view.to_f32();
                    }
                }
                "OK"
            }
            Err(e) => e.code(),
        };
        *outcomes.entry(code).or_default() += 1;
    }
    // Sanity: the corpus exercised both success and several failure kinds.
    assert!(outcomes.len() >= 3, "{outcomes:?}");
}
