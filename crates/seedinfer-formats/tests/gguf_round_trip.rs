mod common;

use common::{
    every_metadata_type, every_tensor_type, k_quant_tensors, raw_gguf, sample_writer, write_temp,
    RawTensorInfo,
};
use seedinfer_formats::{
    dequantize_row, quantize_row, GgufFile, GgufValue, GgufWriter, TensorType,
};

#[test]
fn writer_reader_round_trip_of_all_metadata_and_tensor_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.gguf");
    sample_writer().write_file(&path).unwrap();

    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.metadata(), every_metadata_type().as_slice());
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset() % 32, 0);
    assert_eq!(file.file_bytes(), std::fs::metadata(&path).unwrap().len());

    let expected = every_tensor_type();
    let k_quants = k_quant_tensors();
    assert_eq!(file.tensors().len(), expected.len() + k_quants.len());
    for ((name, t, shape, bytes), info) in k_quants.iter().zip(&file.tensors()[expected.len()..]) {
        assert_eq!(
            (&info.name, info.tensor_type, &info.shape),
            (name, *t, shape)
        );
        let view = file.tensor(name).unwrap();
        assert_eq!(view.data, bytes.as_slice(), "{name} bytes");
        let mut decoded = vec![0.0; 2 * 512];
        dequantize_row(*t, bytes, &mut decoded).unwrap();
        assert_eq!(view.to_f32().unwrap(), decoded);
        assert_eq!(view.row_to_f32(1).unwrap(), decoded[512..]);
    }
    for ((name, t, shape, values), info) in expected.iter().zip(file.tensors()) {
        assert_eq!(&info.name, name);
        assert_eq!(info.tensor_type, *t);
        assert_eq!(&info.shape, shape);
        assert_eq!(info.offset % 32, 0);
        let view = file.tensor(name).unwrap();
        assert_eq!(view.name, name);
        assert_eq!(view.element_count(), 3 * 64);
        let mut encoded = Vec::new();
        quantize_row(*t, values, &mut encoded).unwrap();
        assert_eq!(view.data, encoded.as_slice(), "{name} bytes");
        let mut decoded = vec![0.0; values.len()];
        dequantize_row(*t, &encoded, &mut decoded).unwrap();
        assert_eq!(view.to_f32().unwrap(), decoded);
        assert_eq!(view.row_to_f32(2).unwrap(), decoded[128..]);
        assert!(view.row_to_f32(3).is_err());
    }
    let missing = file.tensor("nope").unwrap_err();
    assert_eq!(missing.code(), "MISSING_TENSOR");
}

#[test]
fn typed_getters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.gguf");
    sample_writer().write_file(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.get_str("general.architecture"), Some("llama"));
    assert_eq!(file.get_u64("t.u32"), Some(4_000_000_000));
    assert_eq!(file.get_u64("t.i8"), None);
    assert_eq!(file.get_f64("t.f32"), Some(1.25e-5f32 as f64));
    assert_eq!(file.get_f64("t.u8"), Some(200.0));
    assert_eq!(file.get_bool("t.bool"), Some(true));
    assert_eq!(
        file.get_str_array("t.array.str"),
        Some(vec!["<s>", "</s>", "a b"])
    );
    assert_eq!(file.get_str_array("t.array.f32"), None);
    assert_eq!(file.get_f32_array("t.array.f32"), Some(vec![-1.5, 0.0]));
    assert_eq!(file.get_i32_array("t.array.i32"), Some(vec![1, -7]));
    assert_eq!(file.get_i32_array("t.array.empty"), Some(vec![]));
    assert_eq!(file.get("absent"), None);
}

#[test]
fn custom_alignment_is_recorded_and_honoured() {
    let mut writer = GgufWriter::new();
    writer.set_alignment(64);
    writer.add_metadata("general.name", "aligned".into());
    writer
        .add_tensor("a", TensorType::F32, &[3], vec![0; 12])
        .unwrap();
    writer
        .add_tensor("b", TensorType::F16, &[5], vec![0; 10])
        .unwrap();
    let mut bytes = Vec::new();
    writer.write_to(&mut bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "aligned.gguf", &bytes);
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.get_u64("general.alignment"), Some(64));
    assert_eq!(file.data_offset() % 64, 0);
    assert_eq!(file.tensors()[1].offset, 64);
    assert_eq!(file.tensor("b").unwrap().data.len(), 10);
}

#[test]
fn writer_rejects_inconsistent_input() {
    let mut writer = GgufWriter::new();
    let err = writer
        .add_tensor("short", TensorType::Q8_0, &[2, 32], vec![0; 34])
        .unwrap_err();
    assert!(err.to_string().contains("68"), "{err}");
    assert!(writer
        .add_tensor("ragged", TensorType::Q4_0, &[1, 33], vec![0; 18])
        .is_err());
    writer
        .add_tensor("x", TensorType::F32, &[1], vec![0; 4])
        .unwrap();
    assert!(writer
        .add_tensor("x", TensorType::F32, &[1], vec![0; 4])
        .is_err());
    writer.add_metadata(
        "mixed",
        GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(1)]),
    );
    assert!(writer.to_bytes().is_err());
    let mut bad_alignment = GgufWriter::new();
    bad_alignment.set_alignment(24);
    assert!(bad_alignment.to_bytes().is_err());
}

#[test]
fn hand_written_version_2_file_is_readable() {
    let values: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = raw_gguf(
        2,
        &[("general.architecture", "llama")],
        &[RawTensorInfo {
            name: "w".into(),
            ne: vec![4, 2], // 2 rows of 4 columns
            type_id: 0,
            offset: 0,
        }],
        &data,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "v2.gguf", &bytes);
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.get_str("general.architecture"), Some("llama"));
    let w = file.tensor("w").unwrap();
    assert_eq!(w.shape, vec![2, 4]);
    assert_eq!(w.to_f32().unwrap(), values);
}

#[test]
fn ggml_reference_quantizer_bytes_match_gguf_py() {
    // Golden bytes from gguf-py's `gguf.quants.quantize` (a port of ggml's *_ref
    // quantizers) for the same 64 values.
    let mut x: Vec<f32> = (0..64)
        .map(|i| (((i * 37) % 101) as f32 - 50.0) / 16.0)
        .collect();
    x[5] = 1e-3;
    x[40] = -7.3;
    let golden = [
        (TensorType::Q4_0, "4036e046acf258b81379df358be046acf2684d3b9ab5789a5678ab6780b5679ab578aa56"),
        (TensorType::Q4_1, "ab3640c2d0369bf257b81369ce258ae0469cf25887394dc7bdf79ace68abde79b0e68acdf79ade78"),
        (TensorType::Q8_0, "4d2681df3d9af800b41270cd2b89e745a2005ebb1977d53390ee4caa0866c3217fdc5c2b19d3fc24de072fe981ccf41cd7ff27e20a32ec15cff720da022ae50d35f018d2"),
        (TensorType::F16, "40c280ba003e00c100b2191480bf0037804100bd403ce0c100b9c03ea0c00000a040c0be0039e04140bc003d80c100b7803f40c00032004100be803a404200bbc03d20c100b42040c0bf0036604140bd4dc700c280b9803ec0c000ac804000bf8038c04180bcc03ca0c100b8403f60c00030e04040be003a204280bb803d40c1"),
        (TensorType::BF16, "48c050bfc03f20c040be833af0bfe03e3040a0bf883f3cc020bfd83f14c000001440d8bf203f3c4088bfa03f30c0e0bef03f08c0403e2040c0bf503f484060bfb83f24c080be0440f8bfc03e2c40a8bfeac040c030bfd03f18c080bd1040e0bf103f384090bf983f34c000bfe83f0cc0003e1c40c8bf403f444070bfb03f28c0"),
    ];
    for (t, hex) in golden {
        let mut bytes = Vec::new();
        quantize_row(t, &x, &mut bytes).unwrap();
        let got: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, hex, "{t}");
    }
}
