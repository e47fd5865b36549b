//! `seedinfer quantize`: rewrites a model's layer matrices in one of seedinfer's own formats (`seedlm4`,
//! `seedlm3`, `q3_rtn`), or in ggml's `q8_0`/`q4_0`/`q4_1`/`q5_0`/`q5_1` for comparisons, into a seedinfer container (a GGUF v3 file, see `seedinfer_formats::container` and
//! docs/container.md) that [`crate::Model::load`] reads; or a whole GGUF model in one of llama.cpp's mixes
//! (`q4_k_m`, …: [`crate::quantize_mix`]) as a standard GGUF that llama.cpp loads too.
//!
//! The seven matrices of every layer (q, k, v, o, gate, up, down) are quantised from their values as stored
//! (block-quantised GGUF tensors are dequantised first); the embedding, the output head and the norms are copied
//! as stored. The source's metadata comes along: a GGUF source's keys verbatim, a Hugging Face directory's config
//! as `llama.*` keys and its tokenizer files verbatim.

use crate::config::{Architecture, LlamaConfig, RopeScaling, RopeStyle};
use crate::error::{EngineError, Result};
use crate::quantize_mix::{write_mix, Mix};
use crate::weights::Part;
use rayon::prelude::*;
use seedinfer_formats::container::{self, CONTAINER_VERSION};
use seedinfer_formats::seedlm::{encode_matrix, pack_matrix, LfsrCycle, SeedTable};
use seedinfer_formats::{
    quantize_row, FormatError, GgufFile, GgufValue, GgufWriter, SafetensorsDir, TensorType,
    TensorView,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A format `quantize` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantFormat {
    SeedLm4,
    SeedLm3,
    Q3Rtn,
    /// ggml's formats, for comparisons that change the layer matrices only (as the formats above do).
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    /// A llama.cpp mix of the whole model, written as a standard GGUF ([`crate::quantize_mix`]).
    Mix(Mix),
}

impl QuantFormat {
    /// The container formats with their option names and tensor types (the mixes' are [`Mix::ALL`]'s).
    const CONTAINER: [(Self, &'static str, TensorType); 8] = [
        (Self::SeedLm4, "seedlm4", TensorType::SeedLm4),
        (Self::SeedLm3, "seedlm3", TensorType::SeedLm3),
        (Self::Q3Rtn, "q3_rtn", TensorType::Q3Rtn),
        (Self::Q8_0, "q8_0", TensorType::Q8_0),
        (Self::Q4_0, "q4_0", TensorType::Q4_0),
        (Self::Q4_1, "q4_1", TensorType::Q4_1),
        (Self::Q5_0, "q5_0", TensorType::Q5_0),
        (Self::Q5_1, "q5_1", TensorType::Q5_1),
    ];

    /// Every format with its option name and its main tensor type: the one list the API, the CLI and their errors
    /// use (the container formats, then llama.cpp's mixes).
    pub fn all() -> impl Iterator<Item = (Self, &'static str, TensorType)> {
        Self::CONTAINER
            .into_iter()
            .chain(Mix::ALL.map(|(mix, name, _, t)| (Self::Mix(mix), name, t)))
    }

    /// Parses an option name of [`QuantFormat::all`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::all().find(|f| f.1 == name).map(|f| f.0)
    }

    /// The option names, in order.
    pub fn names() -> Vec<&'static str> {
        Self::all().map(|f| f.1).collect()
    }

    pub fn name(self) -> &'static str {
        Self::all().find(|f| f.0 == self).map_or("", |f| f.1)
    }

    fn tensor_type(self) -> TensorType {
        Self::all()
            .find(|f| f.0 == self)
            .map_or(TensorType::F32, |f| f.2)
    }
}

/// Progress of a quantisation: weights of the layer matrices encoded so far, of all of them.
#[derive(Clone, Debug)]
pub struct QuantizeProgress {
    pub tensor: String,
    pub done_weights: u64,
    pub total_weights: u64,
}

/// What a quantisation did.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    pub format: QuantFormat,
    pub out_bytes: u64,
    /// Layer matrices written in the format, and their weights.
    pub quantized_tensors: usize,
    pub quantized_weights: u64,
    /// Bytes of the quantised matrices, and bits per weight they take.
    pub quantized_bytes: u64,
    /// Matrices kept as stored, with the reason (q3_rtn needs rows of whole groups of 32).
    pub kept: Vec<String>,
    /// Tensors of the output by type name.
    pub tensor_types: BTreeMap<String, u32>,
    pub seconds: f64,
}

const LAYER_MATRICES: [Part; 7] = [
    Part::Q,
    Part::K,
    Part::V,
    Part::O,
    Part::Gate,
    Part::Up,
    Part::Down,
];

const LAYER_VECTORS: [Part; 2] = [Part::AttnNorm, Part::FfnNorm];

/// The tokenizer files of a Hugging Face directory that a container carries.
const HF_TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
];

enum Source {
    Gguf(GgufFile),
    Hf(SafetensorsDir),
}

impl Source {
    fn view(
        &self,
        gguf_name: &str,
        hf_name: &str,
    ) -> std::result::Result<TensorView<'_>, FormatError> {
        match self {
            Source::Gguf(g) => g.tensor(gguf_name),
            Source::Hf(s) => s.tensor(hf_name),
        }
    }
}

/// The container's tensors in file order: `(gguf name, hf name, layer matrix?)`.
fn tensor_plan(config: &LlamaConfig, has_lm_head: bool) -> Vec<(String, String, bool)> {
    let mut plan = vec![(
        Part::Embed.gguf_name().to_string(),
        Part::Embed.hf_name().to_string(),
        false,
    )];
    for i in 0..config.layers {
        for part in LAYER_VECTORS.iter().chain(&LAYER_MATRICES) {
            plan.push((
                format!("blk.{i}.{}", part.gguf_name()),
                format!("model.layers.{i}.{}", part.hf_name()),
                LAYER_MATRICES.contains(part),
            ));
        }
    }
    plan.push((
        Part::FinalNorm.gguf_name().to_string(),
        Part::FinalNorm.hf_name().to_string(),
        false,
    ));
    if has_lm_head {
        plan.push((
            Part::LmHead.gguf_name().to_string(),
            Part::LmHead.hf_name().to_string(),
            false,
        ));
    }
    plan
}

/// The container holds llama's tensors and keys only: other architectures and scaled RoPE are refused.
fn check_writable(config: &LlamaConfig) -> Result<()> {
    if config.arch != Architecture::Llama || config.rope_scaling != RopeScaling::None {
        return Err(EngineError::InvalidOption(format!(
            "quantize writes llama models without RoPE scaling for now; this one is {} with RoPE scaling {}",
            config.arch.name(),
            config.rope_scaling.describe()
        )));
    }
    Ok(())
}

/// Writes `source` (a GGUF file or a Hugging Face directory) with its layer matrices in `format` to `out`, on the
/// current rayon pool. `progress` is called as rows finish; once `stop` is set the work ends with
/// [`EngineError::Aborted`] and nothing is written. The output appears whole or not at all.
pub fn quantize_model(
    source_path: &Path,
    format: QuantFormat,
    out: &Path,
    progress: &(dyn Fn(&QuantizeProgress) + Sync),
    stop: &AtomicBool,
) -> Result<QuantizeReport> {
    let started = Instant::now();
    if !source_path.exists() {
        return Err(EngineError::ModelNotFound(
            source_path.display().to_string(),
        ));
    }
    if let QuantFormat::Mix(mix) = format {
        return write_mix(source_path, mix, out, progress, stop);
    }
    let mut writer = GgufWriter::new();
    let (source, config, has_lm_head) = if source_path.is_dir() {
        let mut config = LlamaConfig::from_hf_config(&source_path.join("config.json"))?;
        let tensors = SafetensorsDir::open(source_path)?;
        let has_lm_head =
            !config.tied_embeddings && tensors.tensor_names().contains(&Part::LmHead.hf_name());
        config.tied_embeddings = !has_lm_head;
        write_hf_metadata(&mut writer, &config, source_path)?;
        (Source::Hf(tensors), config, has_lm_head)
    } else {
        let gguf = GgufFile::open(source_path)?;
        refuse_container(&gguf, source_path)?;
        let config = LlamaConfig::from_gguf(&gguf)?;
        for (key, value) in gguf.metadata() {
            if key != "general.alignment" {
                writer.add_metadata(key, value.clone());
            }
        }
        let has_lm_head = gguf.tensor_info(Part::LmHead.gguf_name()).is_some();
        (Source::Gguf(gguf), config, has_lm_head)
    };
    check_writable(&config)?;
    writer.add_metadata(
        "general.file_type",
        GgufValue::U32(seedinfer_formats::synthetic::llama_file_type(
            format.tensor_type(),
        )),
    );
    writer.add_metadata(container::VERSION_KEY, GgufValue::U32(CONTAINER_VERSION));
    writer.add_metadata(
        container::FORMAT_KEY,
        GgufValue::String(format.name().to_string()),
    );
    writer.add_metadata(
        container::SOURCE_KEY,
        GgufValue::String(source_path.display().to_string()),
    );
    writer.add_metadata(
        container::ROPE_STYLE_KEY,
        GgufValue::String(config.rope_style.name().to_string()),
    );

    let plan = tensor_plan(&config, has_lm_head);
    let mut total_weights = 0u64;
    for (gguf_name, hf_name, matrix) in &plan {
        if *matrix {
            total_weights += source.view(gguf_name, hf_name)?.element_count() as u64;
        }
    }
    let table = format.tensor_type().seedlm_config().map(|config| {
        let cycle = LfsrCycle::new(config.block * config.coefficients);
        SeedTable::new(config, &cycle)
    });
    let done = AtomicU64::new(0);
    let mut report = QuantizeReport {
        format,
        out_bytes: 0,
        quantized_tensors: 0,
        quantized_weights: 0,
        quantized_bytes: 0,
        kept: Vec::new(),
        tensor_types: BTreeMap::new(),
        seconds: 0.0,
    };
    for (gguf_name, hf_name, matrix) in &plan {
        let view = source.view(gguf_name, hf_name)?;
        let shape = view.shape.clone();
        let cols = view.row_len();
        // Group formats need rows of whole groups of 32; SeedLM pads a row's last block.
        let fits = format.tensor_type().seedlm_config().is_some() || cols.is_multiple_of(32);
        let written = if *matrix && fits {
            format.tensor_type()
        } else {
            view.tensor_type
        };
        *report
            .tensor_types
            .entry(written.name().to_string())
            .or_default() += 1;
        if !*matrix || !fits {
            if *matrix {
                report.kept.push(format!(
                    "{gguf_name}: {cols} columns are not a multiple of 32, kept {}",
                    view.tensor_type.name()
                ));
                done.fetch_add(view.element_count() as u64, Ordering::Relaxed);
            }
            writer.add_tensor(gguf_name, view.tensor_type, &shape, view.data.to_vec())?;
            continue;
        }
        let values = view.to_f32()?;
        if !values.iter().all(|v| v.is_finite()) {
            return Err(EngineError::Format(FormatError::Corrupt {
                file: source_path.display().to_string(),
                reason: format!("tensor {gguf_name} contains NaN or infinite values"),
            }));
        }
        let on_rows = |rows: usize| {
            let now =
                done.fetch_add((rows * cols) as u64, Ordering::Relaxed) + (rows * cols) as u64;
            progress(&QuantizeProgress {
                tensor: gguf_name.clone(),
                done_weights: now,
                total_weights,
            });
        };
        let should_stop = || stop.load(Ordering::Relaxed);
        let bytes = match (&table, format.tensor_type().seedlm_config()) {
            (Some(table), Some(config)) => {
                let (blocks, base) = encode_matrix(table, &values, cols, &on_rows, &should_stop)
                    .ok_or_else(|| EngineError::Aborted("quantisation".into()))?;
                writer.add_metadata(
                    &container::exponent_base_key(gguf_name),
                    GgufValue::I32(base),
                );
                pack_matrix(config, &blocks, cols, base)
            }
            _ => quantize_rows(format.tensor_type(), &values, cols, &on_rows, stop)?,
        };
        if stop.load(Ordering::Relaxed) {
            return Err(EngineError::Aborted("quantisation".into()));
        }
        report.quantized_tensors += 1;
        report.quantized_weights += values.len() as u64;
        report.quantized_bytes += bytes.len() as u64;
        writer.add_tensor(gguf_name, format.tensor_type(), &shape, bytes)?;
    }
    progress(&QuantizeProgress {
        tensor: String::new(),
        done_weights: total_weights,
        total_weights,
    });
    report.out_bytes = write_atomically(&writer, out)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `values` (rows of `cols`) in `target`'s blocks, the rows in parallel on the current rayon pool; `on_rows(1)` after
/// each row. Once `stop` is set the work ends with [`EngineError::Aborted`].
pub(crate) fn quantize_rows(
    target: TensorType,
    values: &[f32],
    cols: usize,
    on_rows: &(dyn Fn(usize) + Sync),
    stop: &AtomicBool,
) -> Result<Vec<u8>> {
    let rows: Vec<Option<Vec<u8>>> = values
        .par_chunks(cols)
        .map(|row| {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let mut bytes = Vec::new();
            quantize_row(target, row, &mut bytes).ok()?;
            on_rows(1);
            Some(bytes)
        })
        .collect();
    let rows: Option<Vec<Vec<u8>>> = rows.into_iter().collect();
    Ok(rows
        .ok_or_else(|| EngineError::Aborted("quantisation".into()))?
        .concat())
}

/// A seedinfer container is not quantised again: its matrices are already in a lossy format.
pub(crate) fn refuse_container(gguf: &GgufFile, path: &Path) -> Result<()> {
    if gguf.get(container::VERSION_KEY).is_some() {
        return Err(EngineError::InvalidOption(format!(
            "{} is already a seedinfer container; quantise the original model",
            path.display()
        )));
    }
    Ok(())
}

/// Writes `writer`'s file to `out` whole or not at all (a temporary name, then a rename); returns its bytes.
pub(crate) fn write_atomically(writer: &GgufWriter, out: &Path) -> Result<u64> {
    let bytes = writer.to_bytes()?;
    let partial = out.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, &bytes)
        .and_then(|()| std::fs::rename(&partial, out))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            EngineError::Format(FormatError::Io {
                path: out.to_path_buf(),
                source: e,
            })
        })?;
    Ok(bytes.len() as u64)
}

/// `llama.*` keys from a Hugging Face config, and the directory's tokenizer files verbatim.
fn write_hf_metadata(writer: &mut GgufWriter, config: &LlamaConfig, dir: &Path) -> Result<()> {
    let u = |v: usize| GgufValue::U32(v as u32);
    writer.add_metadata("general.architecture", GgufValue::String("llama".into()));
    if let Some(name) = dir.file_name() {
        writer.add_metadata(
            "general.name",
            GgufValue::String(name.to_string_lossy().into_owned()),
        );
    }
    for (key, value) in [
        ("llama.context_length", u(config.context_length)),
        ("llama.embedding_length", u(config.hidden_size)),
        ("llama.block_count", u(config.layers)),
        ("llama.feed_forward_length", u(config.intermediate_size)),
        ("llama.attention.head_count", u(config.heads)),
        ("llama.attention.head_count_kv", u(config.kv_heads)),
        ("llama.rope.dimension_count", u(config.head_dim)),
        ("llama.vocab_size", u(config.vocab_size)),
        ("llama.rope.freq_base", GgufValue::F32(config.rope_theta)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(config.rms_norm_eps),
        ),
    ] {
        writer.add_metadata(key, value);
    }
    debug_assert_eq!(config.rope_style, RopeStyle::Half);
    for name in HF_TOKENIZER_FILES {
        let path = dir.join(name);
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                EngineError::Format(FormatError::Io {
                    path: path.clone(),
                    source: e,
                })
            })?;
            writer.add_metadata(
                &format!("{}{name}", container::HF_FILE_PREFIX),
                GgufValue::String(text),
            );
        }
    }
    Ok(())
}
