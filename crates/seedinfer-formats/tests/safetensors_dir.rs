mod common;

use std::path::Path;

use common::{write_temp, XorShift};
use safetensors::tensor::{Dtype, TensorView as StView};
use seedinfer_formats::blocks::f32_to_bf16;
use seedinfer_formats::{SafetensorsDir, TensorType};

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small checkpoint with every supported dtype plus an unsupported I64 tensor.
fn sample_safetensors(values: &[f32]) -> Vec<u8> {
    let f32_data = f32_bytes(values);
    let f16_data: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16_data: Vec<u8> = values
        .iter()
        .flat_map(|&v| f32_to_bf16(v).to_le_bytes())
        .collect();
    let i64_data: Vec<u8> = (0..6i64).flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        (
            "w.f32",
            StView::new(Dtype::F32, vec![2, 3], &f32_data).unwrap(),
        ),
        (
            "w.f16",
            StView::new(Dtype::F16, vec![2, 3], &f16_data).unwrap(),
        ),
        (
            "w.bf16",
            StView::new(Dtype::BF16, vec![3, 2], &bf16_data).unwrap(),
        ),
        (
            "ids.i64",
            StView::new(Dtype::I64, vec![6], &i64_data).unwrap(),
        ),
    ];
    safetensors::serialize(tensors, None).unwrap()
}

const VALUES: [f32; 6] = [0.5, -1.25, 3.0, 0.0, 1024.0, -0.125];

#[test]
fn single_file_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample_safetensors(&VALUES);
    write_temp(&dir, "model.safetensors", &bytes);
    let st = SafetensorsDir::open(dir.path()).unwrap();
    assert_eq!(st.tensor_names(), ["ids.i64", "w.bf16", "w.f16", "w.f32"]);
    assert_eq!(st.file_bytes(), bytes.len() as u64);
    for (name, t, shape) in [
        ("w.f32", TensorType::F32, vec![2, 3]),
        ("w.f16", TensorType::F16, vec![2, 3]),
        ("w.bf16", TensorType::BF16, vec![3, 2]),
    ] {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.name, name);
        assert_eq!(view.tensor_type, t);
        assert_eq!(view.shape, shape);
        // All sample values are exactly representable in f16 and bf16.
        assert_eq!(view.to_f32().unwrap(), VALUES, "{name}");
    }
    let err = st.tensor("ids.i64").unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_TENSOR_TYPE");
    assert!(err.to_string().contains("I64") && err.to_string().contains("ids.i64"));
    assert_eq!(st.tensor("absent").unwrap_err().code(), "MISSING_TENSOR");

    // A path to the file itself works as well.
    let direct = SafetensorsDir::open(&dir.path().join("model.safetensors")).unwrap();
    assert_eq!(direct.tensor_names().len(), 4);
}

fn write_shard(dir: &Path, name: &str, tensor: &str, values: &[f32]) {
    let data = f32_bytes(values);
    let bytes = safetensors::serialize(
        [(
            tensor,
            StView::new(Dtype::F32, vec![values.len()], &data).unwrap(),
        )],
        None,
    )
    .unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn sharded_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(
        dir.path(),
        "model-00001-of-00002.safetensors",
        "a",
        &[1.0, 2.0],
    );
    write_shard(dir.path(), "model-00002-of-00002.safetensors", "b", &[3.0]);
    let index = r#"{"metadata": {"total_size": 12}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let st = SafetensorsDir::open(dir.path()).unwrap();
    assert_eq!(st.tensor_names(), ["a", "b"]);
    assert_eq!(st.tensor("a").unwrap().to_f32().unwrap(), [1.0, 2.0]);
    assert_eq!(st.tensor("b").unwrap().to_f32().unwrap(), [3.0]);

    // Index pointing at a shard that does not exist.
    let index =
        r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "c": "gone.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let err = SafetensorsDir::open(dir.path()).unwrap_err();
    assert_eq!(err.code(), "CORRUPT_FILE");
    assert!(err.to_string().contains("gone.safetensors"), "{err}");

    // Index listing a tensor its shard does not hold.
    let index = r#"{"weight_map": {"z": "model-00001-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    assert_eq!(
        SafetensorsDir::open(dir.path()).unwrap_err().code(),
        "CORRUPT_FILE"
    );

    // Shard names must not escape the directory.
    let index = r#"{"weight_map": {"a": "../model-00001-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    assert_eq!(
        SafetensorsDir::open(dir.path()).unwrap_err().code(),
        "CORRUPT_FILE"
    );

    std::fs::write(dir.path().join("model.safetensors.index.json"), "{not json").unwrap();
    assert_eq!(
        SafetensorsDir::open(dir.path()).unwrap_err().code(),
        "CORRUPT_FILE"
    );
}

#[test]
fn truncated_safetensors_is_truncated_file() {
    let bytes = sample_safetensors(&VALUES);
    let dir = tempfile::tempdir().unwrap();
    for cut in [0, 5, 8, 20, bytes.len() - 30, bytes.len() - 1] {
        write_temp(&dir, "model.safetensors", &bytes[..cut]);
        let err = SafetensorsDir::open(dir.path()).unwrap_err();
        assert_eq!(err.code(), "TRUNCATED_FILE", "cut at {cut}: {err}");
    }
}

#[test]
fn bad_header_json_is_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let header = b"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]"; // unclosed
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    write_temp(&dir, "model.safetensors", &bytes);
    let err = SafetensorsDir::open(dir.path()).unwrap_err();
    assert_eq!(err.code(), "CORRUPT_FILE");
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // Offsets that disagree with the shape.
    let header = br#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    write_temp(&dir, "model.safetensors", &bytes);
    assert_eq!(
        SafetensorsDir::open(dir.path()).unwrap_err().code(),
        "CORRUPT_FILE"
    );

    // Trailing bytes after the declared data.
    let mut bytes = sample_safetensors(&VALUES);
    bytes.extend_from_slice(&[0u8; 3]);
    write_temp(&dir, "model.safetensors", &bytes);
    assert_eq!(
        SafetensorsDir::open(dir.path()).unwrap_err().code(),
        "CORRUPT_FILE"
    );
}

#[test]
fn missing_checkpoint_is_model_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = SafetensorsDir::open(dir.path()).unwrap_err();
    assert_eq!(err.code(), "MODEL_NOT_FOUND");
    let err = SafetensorsDir::open(&dir.path().join("nope")).unwrap_err();
    assert_eq!(err.code(), "MODEL_NOT_FOUND");
}

#[test]
fn random_corruption_never_panics() {
    let original = sample_safetensors(&VALUES);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next_u64() as u8;
        }
        write_temp(&dir, "model.safetensors", &bytes);
        if let Ok(st) = SafetensorsDir::open(dir.path()) {
            for name in st.tensor_names() {
                if let Ok(view) = st.tensor(name) {
                    let _ = view.to_f32();
                }
            }
        }
    }
}
