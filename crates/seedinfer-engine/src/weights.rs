//! Llama weights, checked against the configuration. Block-quantised tensors stay as stored unless another
//! storage format is requested at load (`WeightFormat`), in which case they are converted once here.

use crate::config::{Architecture, LlamaConfig};
use crate::error::{EngineError, Result};
use rayon::prelude::*;
use seedinfer_formats::{
    blocks::{BLOCK_TYPES, SEARCHED_TYPES},
    container, quantize_row, FormatError, GgufFile, SafetensorsDir, TensorType, TensorView, QK_K,
    SEEDINFER_TENSOR_TYPES,
};
use seedinfer_kernels::dense_f32::DenseMatrix;
use seedinfer_kernels::half_weights::HalfMatrix;
use seedinfer_kernels::q3_rtn_weights::Q3RtnMatrix;
use seedinfer_kernels::quantized::QuantizedMatrix;
use seedinfer_kernels::seedlm_weights::SeedLmMatrix;
use seedinfer_kernels::WeightMatrix;
use std::collections::BTreeMap;

/// Storage format requested for every weight matrix at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Iq4Nl,
    Iq4Xs,
}

impl WeightFormat {
    /// Every format with its option name and tensor type: the one list the API, the CLI and their error messages
    /// use.
    pub const ALL: [(Self, &'static str, TensorType); 14] = [
        (Self::F32, "f32", TensorType::F32),
        (Self::F16, "f16", TensorType::F16),
        (Self::Q8_0, "q8_0", TensorType::Q8_0),
        (Self::Q4_0, "q4_0", TensorType::Q4_0),
        (Self::Q4_1, "q4_1", TensorType::Q4_1),
        (Self::Q5_0, "q5_0", TensorType::Q5_0),
        (Self::Q5_1, "q5_1", TensorType::Q5_1),
        (Self::Q2K, "q2_k", TensorType::Q2_K),
        (Self::Q3K, "q3_k", TensorType::Q3_K),
        (Self::Q4K, "q4_k", TensorType::Q4_K),
        (Self::Q5K, "q5_k", TensorType::Q5_K),
        (Self::Q6K, "q6_k", TensorType::Q6_K),
        (Self::Iq4Nl, "iq4_nl", TensorType::IQ4_NL),
        (Self::Iq4Xs, "iq4_xs", TensorType::IQ4_XS),
    ];

    /// Parses an option name of [`WeightFormat::ALL`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|f| f.1 == name).map(|f| f.0)
    }

    /// The option names, in order.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|f| f.1).collect()
    }

    fn tensor_type(self) -> TensorType {
        Self::ALL
            .iter()
            .find(|f| f.0 == self)
            .map_or(TensorType::F32, |f| f.2)
    }
}

/// A weight matrix `[rows, cols]`: block-quantised and half-precision tensors stay as stored, behind one trait
/// object (`WeightMatrix`) whatever the storage.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Box<dyn WeightMatrix>,
}

impl Matrix {
    fn new(rows: usize, cols: usize, data: impl WeightMatrix + 'static) -> Self {
        Self {
            rows,
            cols,
            data: Box::new(data),
        }
    }

    pub fn resident_bytes(&self) -> usize {
        self.data.resident_bytes()
    }

    /// How the products with this matrix are computed, e.g. `Q4_1 x int8` or `f32`.
    pub fn compute_format(&self) -> String {
        self.data.compute_format()
    }

    /// The instruction set this matrix's products run with on this machine.
    pub fn kernel_isa(&self) -> &'static str {
        self.data.kernel_isa()
    }

    /// Copies row `row` as f32 into `out` (an embedding lookup).
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        self.data.row_to_f32(row, out)
    }

    /// The block-quantised matrix, if the products read int8 activations.
    pub fn quantized(&self) -> Option<&QuantizedMatrix> {
        self.data.quantized()
    }
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
    /// qwen2: the biases added to the q, k and v projections.
    pub qkv_bias: Option<[Vec<f32>; 3]>,
    /// qwen3, gemma3: the RMSNorm weights of each head of q and of k (`head_dim` each), applied before RoPE.
    pub qk_norm: Option<[Vec<f32>; 2]>,
    /// gemma3: the RMSNorm weights of the attention output and of the MLP output, applied before each residual
    /// addition.
    pub post_norms: Option<[Vec<f32>; 2]>,
}

pub struct LlamaWeights {
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Matrix>,
    /// Tensor count per storage format in the file, e.g. `Q4_1 -> 210`.
    pub file_tensor_formats: BTreeMap<String, usize>,
    pub parameter_count: usize,
    /// Matrices that could not take the requested format, and why.
    pub fallbacks: Vec<String>,
}

impl LlamaWeights {
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    fn matrices(&self) -> impl Iterator<Item = &Matrix> {
        let layers = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
        std::iter::once(&self.embed)
            .chain(self.lm_head.as_ref())
            .chain(layers)
    }

    /// Each compute format with the instruction set its kernel uses, e.g. `Q4_1 x int8: avx2+fma+f16c`.
    pub fn kernel_isas(&self) -> String {
        let isas: BTreeMap<String, &str> = self
            .matrices()
            .map(|m| (m.compute_format(), m.kernel_isa()))
            .collect();
        isas.iter()
            .map(|(f, isa)| format!("{f}: {isa}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Compute formats of the matrices with their counts, e.g. `Q4_1 x int8 ×210, Q8_0 x int8 ×1`
    /// (a tied embedding counts once).
    pub fn compute_formats(&self) -> String {
        let mut formats: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.matrices() {
            *formats.entry(m.compute_format()).or_default() += 1;
        }
        formats
            .iter()
            .map(|(f, n)| format!("{f} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn resident_bytes(&self) -> usize {
        let m = |m: &Matrix| m.resident_bytes();
        let mut total =
            m(&self.embed) + self.final_norm.len() * 4 + self.lm_head.as_ref().map_or(0, m);
        for l in &self.layers {
            let norms = l.qk_norm.iter().chain(&l.post_norms).flatten();
            total +=
                (l.attn_norm.len() + l.ffn_norm.len() + norms.map(Vec::len).sum::<usize>()) * 4;
            total += m(&l.wq)
                + m(&l.wk)
                + m(&l.wv)
                + m(&l.wo)
                + m(&l.w_gate)
                + m(&l.w_up)
                + m(&l.w_down);
        }
        total
    }
}

/// Where tensors come from: names differ between Hugging Face checkpoints and GGUF files.
pub enum TensorSource<'a> {
    Safetensors(&'a SafetensorsDir),
    Gguf(&'a GgufFile),
}

impl TensorSource<'_> {
    fn view(&self, name: &str) -> std::result::Result<TensorView<'_>, FormatError> {
        match self {
            TensorSource::Safetensors(s) => s.tensor(name),
            TensorSource::Gguf(g) => g.tensor(name),
        }
    }

    fn path(&self) -> String {
        match self {
            TensorSource::Safetensors(s) => s.dir().display().to_string(),
            TensorSource::Gguf(g) => g.path().display().to_string(),
        }
    }

    /// The tensor has been copied out: its file pages need not stay resident (GGUF mappings).
    fn release(&self, name: &str) {
        if let TensorSource::Gguf(g) = self {
            g.release_tensor(name);
        }
    }

    fn has(&self, name: &str) -> bool {
        match self {
            TensorSource::Safetensors(s) => s.tensor_names().contains(&name),
            TensorSource::Gguf(g) => g.tensors().iter().any(|t| t.name == name),
        }
    }

    fn names(&self, arch: Architecture, layer: Option<usize>, part: Part) -> String {
        match (self, layer) {
            (TensorSource::Safetensors(_), Some(i)) => {
                format!("model.layers.{i}.{}", part.hf_name_in(arch))
            }
            (TensorSource::Safetensors(_), None) => part.hf_name_in(arch).to_string(),
            (TensorSource::Gguf(_), Some(i)) => format!("blk.{i}.{}", part.gguf_name()),
            (TensorSource::Gguf(_), None) => part.gguf_name().to_string(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Embed,
    FinalNorm,
    LmHead,
    AttnNorm,
    Q,
    K,
    V,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    PostAttnNorm,
    PostFfnNorm,
    /// phi3: q, k and v stacked in one matrix.
    Qkv,
    /// phi3: gate and up stacked in one matrix.
    GateUp,
}

impl Part {
    pub(crate) fn hf_name(self) -> &'static str {
        match self {
            Part::Embed => "model.embed_tokens.weight",
            Part::FinalNorm => "model.norm.weight",
            Part::LmHead => "lm_head.weight",
            Part::AttnNorm => "input_layernorm.weight",
            Part::Q => "self_attn.q_proj.weight",
            Part::K => "self_attn.k_proj.weight",
            Part::V => "self_attn.v_proj.weight",
            Part::O => "self_attn.o_proj.weight",
            Part::FfnNorm => "post_attention_layernorm.weight",
            Part::Gate => "mlp.gate_proj.weight",
            Part::Up => "mlp.up_proj.weight",
            Part::Down => "mlp.down_proj.weight",
            Part::QBias => "self_attn.q_proj.bias",
            Part::KBias => "self_attn.k_proj.bias",
            Part::VBias => "self_attn.v_proj.bias",
            Part::QNorm => "self_attn.q_norm.weight",
            Part::KNorm => "self_attn.k_norm.weight",
            Part::PostAttnNorm => "post_attention_layernorm.weight",
            Part::PostFfnNorm => "post_feedforward_layernorm.weight",
            Part::Qkv => "self_attn.qkv_proj.weight",
            Part::GateUp => "mlp.gate_up_proj.weight",
        }
    }

    /// The Hugging Face name in `arch`'s checkpoints: Gemma calls its norm before the MLP
    /// `pre_feedforward_layernorm` (its `post_attention_layernorm` follows the attention).
    pub(crate) fn hf_name_in(self, arch: Architecture) -> &'static str {
        match (arch, self) {
            (Architecture::Gemma3, Part::FfnNorm) => "pre_feedforward_layernorm.weight",
            _ => self.hf_name(),
        }
    }

    /// Whether the tensor is an RMSNorm weight.
    fn is_norm(self) -> bool {
        matches!(
            self,
            Part::AttnNorm
                | Part::FfnNorm
                | Part::FinalNorm
                | Part::QNorm
                | Part::KNorm
                | Part::PostAttnNorm
                | Part::PostFfnNorm
        )
    }

    pub(crate) fn gguf_name(self) -> &'static str {
        match self {
            Part::Embed => "token_embd.weight",
            Part::FinalNorm => "output_norm.weight",
            Part::LmHead => "output.weight",
            Part::AttnNorm => "attn_norm.weight",
            Part::Q => "attn_q.weight",
            Part::K => "attn_k.weight",
            Part::V => "attn_v.weight",
            Part::O => "attn_output.weight",
            Part::FfnNorm => "ffn_norm.weight",
            Part::Gate => "ffn_gate.weight",
            Part::Up => "ffn_up.weight",
            Part::Down => "ffn_down.weight",
            Part::QBias => "attn_q.bias",
            Part::KBias => "attn_k.bias",
            Part::VBias => "attn_v.bias",
            Part::QNorm => "attn_q_norm.weight",
            Part::KNorm => "attn_k_norm.weight",
            Part::PostAttnNorm => "post_attention_norm.weight",
            Part::PostFfnNorm => "post_ffw_norm.weight",
            Part::Qkv => "attn_qkv.weight",
            // llama.cpp keeps phi3's fused gate/up under the up projection's name.
            Part::GateUp => "ffn_up.weight",
        }
    }
}

fn check_finite(file: &str, name: &str, all_finite: bool) -> Result<()> {
    if !all_finite {
        return Err(EngineError::Format(FormatError::Corrupt {
            file: file.to_string(),
            reason: format!("tensor {name} contains NaN or infinite values"),
        }));
    }
    Ok(())
}

/// The tensor as f32, rejecting NaN and infinity (a corrupt file).
fn finite_f32(file: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let values = view.to_f32()?;
    check_finite(file, view.name, values.iter().all(|v| v.is_finite()))?;
    Ok(values)
}

struct Loader<'a> {
    source: TensorSource<'a>,
    arch: Architecture,
    requested: Option<WeightFormat>,
    fallbacks: Vec<String>,
    formats: BTreeMap<String, usize>,
    parameters: usize,
}

impl Loader<'_> {
    fn view(
        &mut self,
        layer: Option<usize>,
        part: Part,
        expected: &[usize],
    ) -> Result<TensorView<'_>> {
        let name = self.source.names(self.arch, layer, part);
        let view = self.source.view(&name)?;
        if view.shape != expected {
            return Err(FormatError::ShapeMismatch {
                name,
                expected: expected.to_vec(),
                found: view.shape.clone(),
            }
            .into());
        }
        *self
            .formats
            .entry(view.tensor_type.name().to_string())
            .or_default() += 1;
        self.parameters += view.element_count();
        Ok(view)
    }

    fn load(&mut self, layer: Option<usize>, part: Part, expected: &[usize]) -> Result<Vec<f32>> {
        let file = self.source.path();
        let view = self.view(layer, part, expected)?;
        let (mut values, name) = (finite_f32(&file, &view)?, view.name.to_string());
        self.source.release(&name);
        let offset = self.arch.hf_norm_offset();
        if part.is_norm() && offset != 0.0 && matches!(self.source, TensorSource::Safetensors(_)) {
            values.iter_mut().for_each(|w| *w += offset);
        }
        Ok(values)
    }

    fn matrix(
        &mut self,
        layer: Option<usize>,
        part: Part,
        rows: usize,
        cols: usize,
    ) -> Result<Matrix> {
        let [matrix] = self.matrices_in_rows(layer, part, [rows], cols)?;
        Ok(matrix)
    }

    /// The matrices stacked in one tensor (phi3's fused q/k/v and gate/up), split by rows: `rows[i]` rows each,
    /// in order.
    fn matrices_in_rows<const N: usize>(
        &mut self,
        layer: Option<usize>,
        part: Part,
        rows: [usize; N],
        cols: usize,
    ) -> Result<[Matrix; N]> {
        let file = self.source.path();
        let requested = self.requested;
        let base = match &self.source {
            TensorSource::Gguf(g) => {
                let name = self.source.names(self.arch, layer, part);
                match g.tensor_info(&name) {
                    Some(t) if t.tensor_type.seedlm_config().is_some() => {
                        Some(container::exponent_base(g, &name)?)
                    }
                    _ => None,
                }
            }
            TensorSource::Safetensors(_) => None,
        };
        let view = self.view(layer, part, &[rows.iter().sum(), cols])?;
        let name = view.name.to_string();
        let row_bytes = view.tensor_type.row_bytes(cols)?;
        let mut fallbacks = Vec::new();
        let mut first_row = 0;
        let mut matrices = Vec::with_capacity(N);
        for count in rows {
            let part_view = TensorView {
                name: view.name,
                tensor_type: view.tensor_type,
                shape: vec![count, cols],
                data: view
                    .data
                    .get(first_row * row_bytes..(first_row + count) * row_bytes)
                    .ok_or_else(|| {
                        EngineError::Format(FormatError::Corrupt {
                            file: file.clone(),
                            reason: format!("tensor {name} is shorter than its shape"),
                        })
                    })?,
            };
            first_row += count;
            let (matrix, fallback) = build_matrix(&file, &part_view, count, cols, base, requested)?;
            matrices.push(matrix);
            fallbacks.extend(fallback);
        }
        self.source.release(&name);
        self.fallbacks.extend(fallbacks);
        matrices
            .try_into()
            .map_err(|_| EngineError::Internal(format!("splitting {name} lost a matrix")))
    }
}

/// A weight matrix of `rows x cols` from `view`, in the `requested` format if any (with the reason when it cannot
/// take it), else as stored; `base`: a SeedLM tensor's exponent base.
fn build_matrix(
    file: &str,
    view: &TensorView<'_>,
    rows: usize,
    cols: usize,
    base: Option<i32>,
    requested: Option<WeightFormat>,
) -> Result<(Matrix, Option<String>)> {
    let name = view.name.to_string();
    if SEEDINFER_TENSOR_TYPES.contains(&view.tensor_type) {
        let matrix = own_format_matrix(file, view, rows, cols, base)?;
        let kept = view.tensor_type.name();
        let fallback = requested.map(|r| {
            format!(
                "{name}: kept {kept} (seedinfer's own formats are not converted at load, asked for {r:?})"
            )
        });
        return Ok((matrix, fallback));
    }
    let mut target = requested.map_or(view.tensor_type, WeightFormat::tensor_type);
    let mut fallback = None;
    if requested.is_some() && target.block_elements() == QK_K && !cols.is_multiple_of(QK_K) {
        // A 256-wide type asked for rows that are not whole super-blocks: llama.cpp's 32-wide choice for it.
        let smaller = crate::quantize_mix::fallback(cols, target);
        fallback = Some(format!(
            "{name}: {cols} columns are not a multiple of {QK_K}, {} instead of {} (llama.cpp's fallback)",
            smaller.name(),
            target.name()
        ));
        target = smaller;
    }
    let block_format = BLOCK_TYPES.contains(&target) || SEARCHED_TYPES.contains(&target);
    let half_format = matches!(target, TensorType::F16 | TensorType::BF16);
    let dense = |values: Vec<f32>| {
        DenseMatrix::new(rows, cols, values)
            .map(|d| Matrix::new(rows, cols, d))
            .ok_or_else(|| EngineError::Internal(format!("{name} has the wrong size")))
    };
    let block = target.block_elements();
    let matrix = if block_format && !cols.is_multiple_of(block) {
        fallback = Some(format!(
            "{name}: {cols} columns are not a multiple of {block}, kept f32 instead of {}",
            target.name()
        ));
        dense(finite_f32(file, view)?)?
    } else if block_format && target == view.tensor_type {
        let q = QuantizedMatrix::from_bytes(target, rows, cols, view.data).ok_or_else(|| {
            EngineError::Format(FormatError::Corrupt {
                file: file.to_string(),
                reason: format!("tensor {name} has the wrong byte length"),
            })
        })?;
        check_finite(file, &name, q.scales_are_finite())?;
        Matrix::new(rows, cols, q)
    } else if block_format {
        let values = finite_f32(file, view)?;
        let bytes = quantize_rows(target, &values, cols)?;
        let q = QuantizedMatrix::from_bytes(target, rows, cols, &bytes).ok_or_else(|| {
            EngineError::Internal(format!("quantising {name} to {} failed", target.name()))
        })?;
        Matrix::new(rows, cols, q)
    } else if half_format {
        // Converted through f32 also when the file already holds this type, to reject NaN and infinity.
        let values = finite_f32(file, view)?;
        let bytes: Vec<u8> = if target == view.tensor_type {
            view.data.to_vec()
        } else {
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect()
        };
        let h = HalfMatrix::from_bytes(target, rows, cols, &bytes).ok_or_else(|| {
            EngineError::Internal(format!("storing {name} as {} failed", target.name()))
        })?;
        Matrix::new(rows, cols, h)
    } else {
        dense(finite_f32(file, view)?)?
    };
    Ok((matrix, fallback))
}

/// A matrix in one of seedinfer's own tensor types, as stored (`base`: a SeedLM tensor's exponent base).
fn own_format_matrix(
    file: &str,
    view: &TensorView<'_>,
    rows: usize,
    cols: usize,
    base: Option<i32>,
) -> Result<Matrix> {
    let corrupt = |reason: String| {
        EngineError::Format(FormatError::Corrupt {
            file: file.to_string(),
            reason,
        })
    };
    match view.tensor_type {
        TensorType::Q3Rtn => Q3RtnMatrix::from_bytes(rows, cols, view.data)
            .map(|m| Matrix::new(rows, cols, m))
            .ok_or_else(|| corrupt(format!("tensor {} has the wrong byte length", view.name))),
        t => {
            let base = base
                .ok_or_else(|| corrupt(format!("{t} tensor {} has no exponent base", view.name)))?;
            SeedLmMatrix::from_bytes(t, rows, cols, view.data, base)
                .map(|m| Matrix::new(rows, cols, m))
                .ok_or_else(|| {
                    corrupt(format!(
                        "tensor {} has the wrong byte length or exponent base",
                        view.name
                    ))
                })
        }
    }
}

/// Quantises a row-major matrix whose rows are whole blocks, rows in parallel.
fn quantize_rows(target: TensorType, values: &[f32], cols: usize) -> Result<Vec<u8>> {
    let rows_per_task = 64;
    let parts: Vec<Vec<u8>> = values
        .par_chunks(cols * rows_per_task)
        .map(|chunk| {
            let mut bytes = Vec::new();
            quantize_row(target, chunk, &mut bytes).map(|()| bytes)
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(parts.concat())
}

impl LlamaWeights {
    /// Loads and checks every tensor; `config.tied_embeddings` is updated for GGUF files from the tensor table.
    pub fn load(
        source: TensorSource<'_>,
        config: &mut LlamaConfig,
        requested: Option<WeightFormat>,
    ) -> Result<Self> {
        let c = config.clone();
        let lm_head_present = source.has(&source.names(c.arch, None, Part::LmHead));
        let mut loader = Loader {
            arch: c.arch,
            requested,
            fallbacks: Vec::new(),
            source,
            formats: BTreeMap::new(),
            parameters: 0,
        };
        let embed = loader.matrix(None, Part::Embed, c.vocab_size, c.hidden_size)?;
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let l = Some(i);
            let (d, ff) = (c.hidden_size, c.intermediate_size);
            let attn_norm = loader.load(l, Part::AttnNorm, &[d])?;
            let [wq, wk, wv] = match c.arch.has_fused_projections() {
                true => {
                    loader.matrices_in_rows(l, Part::Qkv, [c.q_dim(), c.kv_dim(), c.kv_dim()], d)?
                }
                false => [
                    loader.matrix(l, Part::Q, c.q_dim(), d)?,
                    loader.matrix(l, Part::K, c.kv_dim(), d)?,
                    loader.matrix(l, Part::V, c.kv_dim(), d)?,
                ],
            };
            let wo = loader.matrix(l, Part::O, d, c.q_dim())?;
            let ffn_norm = loader.load(l, Part::FfnNorm, &[d])?;
            let [w_gate, w_up] = match c.arch.has_fused_projections() {
                true => loader.matrices_in_rows(l, Part::GateUp, [ff, ff], d)?,
                false => [
                    loader.matrix(l, Part::Gate, ff, d)?,
                    loader.matrix(l, Part::Up, ff, d)?,
                ],
            };
            layers.push(LayerWeights {
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                ffn_norm,
                w_gate,
                w_up,
                w_down: loader.matrix(l, Part::Down, d, ff)?,
                qkv_bias: match c.arch.has_qkv_bias() {
                    true => Some([
                        loader.load(l, Part::QBias, &[c.q_dim()])?,
                        loader.load(l, Part::KBias, &[c.kv_dim()])?,
                        loader.load(l, Part::VBias, &[c.kv_dim()])?,
                    ]),
                    false => None,
                },
                qk_norm: match c.arch.has_qk_norm() {
                    true => Some([
                        loader.load(l, Part::QNorm, &[c.head_dim])?,
                        loader.load(l, Part::KNorm, &[c.head_dim])?,
                    ]),
                    false => None,
                },
                post_norms: match c.arch.has_post_norms() {
                    true => Some([
                        loader.load(l, Part::PostAttnNorm, &[c.hidden_size])?,
                        loader.load(l, Part::PostFfnNorm, &[c.hidden_size])?,
                    ]),
                    false => None,
                },
            });
        }
        let final_norm = loader.load(None, Part::FinalNorm, &[c.hidden_size])?;
        let is_gguf = matches!(loader.source, TensorSource::Gguf(_));
        // GGUF marks tied embeddings by omitting output.weight; HF checkpoints say so in config.json
        // (and some still ship an lm_head copy, which we then ignore).
        let tied = if is_gguf {
            !lm_head_present
        } else {
            c.tied_embeddings
        };
        let lm_head = if tied {
            None
        } else {
            Some(loader.matrix(None, Part::LmHead, c.vocab_size, c.hidden_size)?)
        };
        config.tied_embeddings = tied;
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
            file_tensor_formats: loader.formats,
            parameter_count: loader.parameters,
            fallbacks: loader.fallbacks,
        })
    }
}
