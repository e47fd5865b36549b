//! llama.cpp's quantisation mixes (`q2_k`, `q3_k_s`/`_m`/`_l`, `q4_k_s`/`_m`, `q5_k_s`/`_m`, `q6_k`, `iq4_nl`,
//! `iq4_xs`): which type each tensor of a model gets — llama.cpp 0.3.36's `llama_tensor_get_type` for dense models,
//! its per-category rules, layer counters and fallbacks — and a standard GGUF of the whole model in them, written
//! tensor for tensor as `llama_model_quantize` writes it from the same GGUF source without an importance matrix
//! (same types, same bytes: the block quantisers are ggml's reference ones, `seedinfer_formats::blocks`).

use crate::error::{EngineError, Result};
use crate::quantize::{quantize_rows, QuantizeProgress, QuantizeReport};
use seedinfer_formats::{FormatError, GgufFile, GgufValue, GgufWriter, TensorType};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A llama.cpp quantisation mix (`enum llama_ftype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Q2K,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
    Iq4Nl,
    Iq4Xs,
}

impl Mix {
    /// Every mix with its option name, llama.cpp's file type and the type most of its tensors take.
    pub const ALL: [(Self, &'static str, u32, TensorType); 11] = [
        (Self::Q2K, "q2_k", 10, TensorType::Q2_K),
        (Self::Q3KS, "q3_k_s", 11, TensorType::Q3_K),
        (Self::Q3KM, "q3_k_m", 12, TensorType::Q3_K),
        (Self::Q3KL, "q3_k_l", 13, TensorType::Q3_K),
        (Self::Q4KS, "q4_k_s", 14, TensorType::Q4_K),
        (Self::Q4KM, "q4_k_m", 15, TensorType::Q4_K),
        (Self::Q5KS, "q5_k_s", 16, TensorType::Q5_K),
        (Self::Q5KM, "q5_k_m", 17, TensorType::Q5_K),
        (Self::Q6K, "q6_k", 18, TensorType::Q6_K),
        (Self::Iq4Nl, "iq4_nl", 25, TensorType::IQ4_NL),
        (Self::Iq4Xs, "iq4_xs", 30, TensorType::IQ4_XS),
    ];

    fn entry(self) -> (Self, &'static str, u32, TensorType) {
        Self::ALL
            .into_iter()
            .find(|e| e.0 == self)
            .unwrap_or(Self::ALL[0])
    }

    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// llama.cpp's `general.file_type` for the mix.
    pub fn file_type(self) -> u32 {
        self.entry().2
    }

    /// `llama_ftype_get_default_type`.
    pub fn default_type(self) -> TensorType {
        self.entry().3
    }
}

/// What the rules read of a model's hyper-parameters.
#[derive(Clone, Debug)]
pub struct MixModel {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// llama.cpp's `LLM_TYPE_70B`, which takes `attn_v` up a type: a llama model of 80 layers with grouped keys.
    pub is_70b: bool,
}

impl MixModel {
    fn gqa(&self) -> usize {
        self.heads.checked_div(self.kv_heads).unwrap_or(0)
    }
}

/// `tensor_get_category`, for the categories a dense model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    /// `attn_v`, `attn_qkv`, `attn_kv_b` (`category_is_attn_v`).
    AttnV,
    AttnOutput,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if ["attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight"]
        .iter()
        .any(|p| name.contains(p))
    {
        Category::AttnV
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// `tensor_allows_quantization` for a dense model: matrices named `*weight`, not norms, not routers, not
/// Gemma 3n's small `altup`/`laurel`/`per_layer_model_proj` ones, not position or token-type embeddings.
fn allows_quantization(name: &str, dims: usize) -> bool {
    dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && ![
            "ffn_gate_inp.weight",
            "ffn_gate_tid2eid.weight",
            "altup",
            "laurel",
            "per_layer_model_proj",
            "ssm_conv1d",
            "shortconv.conv.weight",
            "indexer.k_proj.weight",
            "indexer.q_proj.weight",
        ]
        .iter()
        .any(|p| name.contains(p))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The layer of a `blk.N.` tensor, -1 for the others (`weight_name_comparer`).
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// The order llama.cpp's quantiser walks (and writes) the tensors: those outside the layers first, then layer
/// by layer, by name within each (`llama_model_loader::weights_map`).
pub fn llama_order(names: &[&str]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| (layer_of(names[a]), names[a]).cmp(&(layer_of(names[b]), names[b])));
    order
}

/// One tensor as the rules see it.
pub struct MixTensor<'a> {
    pub name: &'a str,
    /// Dimensions (a matrix has 2).
    pub dims: usize,
    /// Row length (GGUF's `ne[0]`).
    pub cols: usize,
    pub stored: TensorType,
}

/// `tensor_type_fallback`: a type whose blocks do not divide the rows gives way to llama.cpp's 32-wide choice
/// for it ([`TensorType::llama_fallback`]), and that to F16.
pub(crate) fn fallback(cols: usize, target: TensorType) -> TensorType {
    [Some(target), target.llama_fallback()]
        .into_iter()
        .flatten()
        .find(|t| cols.is_multiple_of(t.block_elements()))
        .unwrap_or(TensorType::F16)
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64).rem_euclid(3) == 2
}

/// The type each tensor gets in `mix` (in the order given), as `llama_tensor_get_type` chooses it; tensors that
/// are not quantised keep their stored type.
pub fn tensor_types(mix: Mix, model: &MixModel, tensors: &[MixTensor]) -> Vec<TensorType> {
    use TensorType::{Q3_K, Q4_K, Q5_K, Q6_K, Q8_0};
    let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
    let categories: Vec<Category> = names.iter().map(|n| category(n)).collect();
    let n_attention_wv = categories.iter().filter(|&&c| c == Category::AttnV).count();
    let tied_embeddings = !categories.contains(&Category::Output);
    let (mut i_attention_wv, mut i_ffn_down) = (0usize, 0usize);
    let default = mix.default_type();
    let mut types: Vec<TensorType> = tensors.iter().map(|t| t.stored).collect();
    for i in llama_order(&names) {
        let tensor = &tensors[i];
        if !allows_quantization(tensor.name, tensor.dims) {
            continue;
        }
        let mut new_type = default;
        match categories[i] {
            Category::Output | Category::TokenEmbd
                if categories[i] == Category::Output || tied_embeddings =>
            {
                if !tensor.cols.is_multiple_of(default.block_elements()) {
                    new_type = Q8_0;
                } else if new_type != Q8_0 {
                    new_type = Q6_K;
                }
            }
            Category::AttnV => {
                let (i_wv, gqa4) = (i_attention_wv, model.gqa() >= 4);
                new_type = match mix {
                    Mix::Q2K if gqa4 => Q4_K,
                    Mix::Q2K => Q3_K,
                    Mix::Q3KM if i_wv < 2 => Q5_K,
                    Mix::Q3KM => Q4_K,
                    Mix::Q3KL => Q5_K,
                    Mix::Iq4Nl | Mix::Iq4Xs if gqa4 => Q5_K,
                    Mix::Q4KM | Mix::Q5KM if use_more_bits(i_wv, n_attention_wv) => Q6_K,
                    Mix::Q4KS if i_wv < 4 => Q5_K,
                    _ => new_type,
                };
                if model.is_70b && matches!(new_type, Q3_K | Q4_K) {
                    new_type = Q5_K;
                }
                i_attention_wv += 1;
            }
            Category::FfnDown => {
                let (i_layer, n_layer) = (i_ffn_down, model.layers);
                new_type = match mix {
                    Mix::Q2K => Q3_K,
                    Mix::Q3KM if i_layer < n_layer / 16 => Q5_K,
                    Mix::Q3KM => Q4_K,
                    Mix::Q3KL => Q5_K,
                    Mix::Q4KM if use_more_bits(i_layer, n_layer) => Q6_K,
                    Mix::Iq4Nl | Mix::Iq4Xs if i_layer < n_layer / 8 => Q5_K,
                    Mix::Q5KM if use_more_bits(i_layer, n_layer) => Q6_K,
                    Mix::Q4KS if i_layer < n_layer / 8 => Q5_K,
                    _ => new_type,
                };
                i_ffn_down += 1;
            }
            Category::AttnOutput => {
                new_type = match mix {
                    Mix::Q2K => Q3_K,
                    Mix::Q3KM => Q4_K,
                    Mix::Q3KL => Q5_K,
                    _ => new_type,
                };
            }
            _ => {}
        }
        types[i] = fallback(tensor.cols, new_type);
    }
    types
}

/// The hyper-parameters the rules read from a GGUF's `{arch}.*` keys. Mixture-of-experts models and Falcon take
/// rules not written here: refused.
fn mix_model(gguf: &GgufFile, path: &Path) -> Result<MixModel> {
    let arch = gguf.get_str("general.architecture").unwrap_or("llama");
    let key = |k: &str| gguf.get_u64(&format!("{arch}.{k}")).map(|v| v as usize);
    if arch == "falcon" || key("expert_count").unwrap_or(0) > 1 {
        return Err(EngineError::InvalidOption(format!(
            "{}: llama.cpp's mixes for {arch} models (and mixture-of-experts models) are not written yet",
            path.display()
        )));
    }
    let layers = key("block_count").ok_or_else(|| {
        EngineError::Format(FormatError::Corrupt {
            file: path.display().to_string(),
            reason: format!("{arch}.block_count is missing"),
        })
    })?;
    let heads = key("attention.head_count").unwrap_or(0);
    let kv_heads = key("attention.head_count_kv").unwrap_or(heads);
    Ok(MixModel {
        layers,
        heads,
        kv_heads,
        is_70b: arch == "llama" && layers == 80 && heads != kv_heads,
    })
}

/// Writes the GGUF file `source_path` in `mix` to `out`: every tensor in llama.cpp's order with the type
/// [`tensor_types`] gives it (quantised from its values as stored, or copied when the type stays), the source's
/// metadata with `general.file_type` and `general.quantization_version` set as llama.cpp sets them. Progress,
/// abort and the atomic output as [`crate::quantize_model`].
pub fn write_mix(
    source_path: &Path,
    mix: Mix,
    out: &Path,
    progress: &(dyn Fn(&QuantizeProgress) + Sync),
    stop: &AtomicBool,
) -> Result<QuantizeReport> {
    let started = Instant::now();
    if source_path.is_dir() {
        return Err(EngineError::InvalidOption(format!(
            "{} is a Hugging Face directory: llama.cpp's mixes are written from a GGUF file (convert the checkpoint \
             with llama.cpp's convert_hf_to_gguf.py first), or choose a container format",
            source_path.display()
        )));
    }
    let gguf = GgufFile::open(source_path)?;
    crate::quantize::refuse_container(&gguf, source_path)?;
    let model = mix_model(&gguf, source_path)?;
    let infos = gguf.tensors();
    let described: Vec<MixTensor> = infos
        .iter()
        .map(|t| MixTensor {
            name: &t.name,
            dims: t.shape.len(),
            cols: t.shape.last().copied().unwrap_or(1),
            stored: t.tensor_type,
        })
        .collect();
    let types = tensor_types(mix, &model, &described);
    let names: Vec<&str> = described.iter().map(|t| t.name).collect();
    let order = llama_order(&names);

    let mut writer = GgufWriter::new();
    writer.set_alignment(gguf.alignment());
    for (key, value) in gguf.metadata() {
        if key != "general.alignment" {
            writer.add_metadata(key, value.clone());
        }
    }
    writer.add_metadata("general.quantization_version", GgufValue::U32(2));
    writer.add_metadata("general.file_type", GgufValue::U32(mix.file_type()));

    let converted = |i: usize| types[i] != infos[i].tensor_type;
    let total_weights: u64 = (0..infos.len())
        .filter(|&i| converted(i))
        .map(|i| infos[i].element_count() as u64)
        .sum();
    let done = AtomicU64::new(0);
    let mut report = QuantizeReport {
        format: crate::QuantFormat::Mix(mix),
        out_bytes: 0,
        quantized_tensors: 0,
        quantized_weights: 0,
        quantized_bytes: 0,
        kept: Vec::new(),
        tensor_types: BTreeMap::new(),
        seconds: 0.0,
    };
    for i in order {
        let (info, target) = (&infos[i], types[i]);
        *report
            .tensor_types
            .entry(target.name().to_string())
            .or_default() += 1;
        let view = gguf.tensor(&info.name)?;
        if !converted(i) {
            writer.add_tensor(
                &info.name,
                info.tensor_type,
                &info.shape,
                view.data.to_vec(),
            )?;
            continue;
        }
        let values = view.to_f32()?;
        if !values.iter().all(|v| v.is_finite()) {
            return Err(EngineError::Format(FormatError::Corrupt {
                file: source_path.display().to_string(),
                reason: format!("tensor {} contains NaN or infinite values", info.name),
            }));
        }
        let cols = view.row_len();
        let on_rows = |rows: usize| {
            let now =
                done.fetch_add((rows * cols) as u64, Ordering::Relaxed) + (rows * cols) as u64;
            progress(&QuantizeProgress {
                tensor: info.name.clone(),
                done_weights: now,
                total_weights,
            });
        };
        let bytes = quantize_rows(target, &values, cols, &on_rows, stop)?;
        if stop.load(Ordering::Relaxed) {
            return Err(EngineError::Aborted("quantisation".into()));
        }
        report.quantized_tensors += 1;
        report.quantized_weights += values.len() as u64;
        report.quantized_bytes += bytes.len() as u64;
        writer.add_tensor(&info.name, target, &info.shape, bytes)?;
        gguf.release_tensor(&info.name);
    }
    progress(&QuantizeProgress {
        tensor: String::new(),
        done_weights: total_weights,
        total_weights,
    });
    report.out_bytes = crate::quantize::write_atomically(&writer, out)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(layers: usize, heads: usize, kv_heads: usize) -> MixModel {
        MixModel {
            layers,
            heads,
            kv_heads,
            is_70b: false,
        }
    }

    /// A llama model's tensors in file order: embeddings, then per layer the norms and the seven matrices.
    fn llama_tensors(
        layers: usize,
        hidden: usize,
        ffn: usize,
        output: bool,
    ) -> Vec<(String, usize, usize)> {
        let mut t = vec![("token_embd.weight".to_string(), 2, hidden)];
        for i in 0..layers {
            for (part, dims, cols) in [
                ("attn_norm.weight", 1, hidden),
                ("attn_q.weight", 2, hidden),
                ("attn_k.weight", 2, hidden),
                ("attn_v.weight", 2, hidden),
                ("attn_output.weight", 2, hidden),
                ("ffn_norm.weight", 1, hidden),
                ("ffn_gate.weight", 2, hidden),
                ("ffn_up.weight", 2, hidden),
                ("ffn_down.weight", 2, ffn),
            ] {
                t.push((format!("blk.{i}.{part}"), dims, cols));
            }
        }
        t.push(("output_norm.weight".to_string(), 1, hidden));
        if output {
            t.push(("output.weight".to_string(), 2, hidden));
        }
        t
    }

    fn types_by_name(
        mix: Mix,
        m: &MixModel,
        tensors: &[(String, usize, usize)],
    ) -> BTreeMap<String, TensorType> {
        let described: Vec<MixTensor> = tensors
            .iter()
            .map(|(name, dims, cols)| MixTensor {
                name,
                dims: *dims,
                cols: *cols,
                stored: if *dims == 1 {
                    TensorType::F32
                } else {
                    TensorType::F16
                },
            })
            .collect();
        let types = tensor_types(mix, m, &described);
        tensors.iter().map(|t| t.0.clone()).zip(types).collect()
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_a_third_of_attn_v_and_ffn_down_and_q6_k_to_the_head() {
        // Llama 3.2 1B's shape: 16 layers, 32 heads over 8 KV heads, untied head.
        let tensors = llama_tensors(16, 2048, 8192, true);
        let types = types_by_name(Mix::Q4KM, &model(16, 32, 8), &tensors);
        let more: Vec<usize> = (0..16).filter(|&i| use_more_bits(i, 16)).collect();
        assert_eq!(more, [0, 1, 4, 7, 10, 13, 14, 15]);
        for i in 0..16 {
            let expected = if more.contains(&i) {
                TensorType::Q6_K
            } else {
                TensorType::Q4_K
            };
            assert_eq!(
                types[&format!("blk.{i}.attn_v.weight")],
                expected,
                "layer {i}"
            );
            assert_eq!(
                types[&format!("blk.{i}.ffn_down.weight")],
                expected,
                "layer {i}"
            );
            assert_eq!(types[&format!("blk.{i}.attn_q.weight")], TensorType::Q4_K);
            assert_eq!(types[&format!("blk.{i}.attn_norm.weight")], TensorType::F32);
        }
        assert_eq!(types["output.weight"], TensorType::Q6_K);
        assert_eq!(types["token_embd.weight"], TensorType::Q4_K);
    }

    #[test]
    fn tied_embeddings_take_the_heads_rule_and_narrow_rows_fall_back() {
        // SmolLM2-135M's shape: 576 wide (not whole super-blocks), 1536-wide ffn_down, 9 heads over 3, tied.
        let tensors = llama_tensors(30, 576, 1536, false);
        let types = types_by_name(Mix::Q2K, &model(30, 9, 3), &tensors);
        assert_eq!(types["token_embd.weight"], TensorType::Q8_0);
        assert_eq!(types["blk.0.attn_q.weight"], TensorType::Q4_0); // Q2_K falls back
        assert_eq!(types["blk.0.attn_v.weight"], TensorType::Q4_0); // Q3_K (gqa 3) falls back
        assert_eq!(types["blk.0.ffn_down.weight"], TensorType::Q3_K);
        let types = types_by_name(Mix::Q3KM, &model(30, 9, 3), &tensors);
        assert_eq!(types["blk.0.ffn_down.weight"], TensorType::Q5_K); // layer < 30 / 16
        assert_eq!(types["blk.1.ffn_down.weight"], TensorType::Q4_K);
        assert_eq!(types["blk.0.attn_v.weight"], TensorType::Q5_1); // Q5_K for the first two, falls back
        let types = types_by_name(Mix::Iq4Xs, &model(30, 9, 3), &tensors);
        assert_eq!(types["blk.0.attn_q.weight"], TensorType::IQ4_NL);
        assert_eq!(types["blk.2.ffn_down.weight"], TensorType::Q5_K); // layer < 30 / 8
        assert_eq!(types["blk.3.ffn_down.weight"], TensorType::IQ4_XS);
    }

    #[test]
    fn llama_order_puts_global_tensors_first_then_layers_by_number() {
        let names = [
            "blk.10.attn_q.weight",
            "token_embd.weight",
            "blk.2.ffn_up.weight",
            "blk.2.attn_k.weight",
            "output.weight",
        ];
        let order: Vec<&str> = llama_order(&names).into_iter().map(|i| names[i]).collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_q.weight"
            ]
        );
    }
}
