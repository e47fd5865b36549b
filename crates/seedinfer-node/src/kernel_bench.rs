//! Kernel benchmarks from JavaScript: one weight matrix in a chosen format, timed products on a worker thread
//! inside a rayon pool of a chosen size, and the machine-limit probes of `seedinfer_kernels::limits` measured in
//! the same process. Used by `bench/kernels.ts`.

use crate::error::{catch_panics, coded, Coded, CodedTask, Result};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use seedinfer_formats::blocks::SEARCHED_TYPES;
use seedinfer_formats::synthetic::random_k_quant_blocks;
use seedinfer_formats::{quantize_row, TensorType};
use seedinfer_kernels::dense_f32::DenseMatrix;
use seedinfer_kernels::half_weights::HalfMatrix;
use seedinfer_kernels::limits;
use seedinfer_kernels::quantized::{QuantizedInput, QuantizedMatrix};
use seedinfer_kernels::WeightMatrix;
use std::sync::Arc;
use std::time::Instant;

/// Largest matrix, activation or output buffer a bench may allocate.
const MAX_BYTES: usize = (2 << 30) - 1;
pub(crate) const MAX_THREADS: usize = 256;

pub(crate) fn invalid(message: String) -> crate::error::Failure {
    coded("INVALID_OPTION", &message)
}

/// A count from JavaScript: a whole number in `1..=max`.
pub(crate) fn count(name: &str, value: f64, max: usize) -> Result<usize> {
    if value.fract() != 0.0 || !(1.0..=max as f64).contains(&value) {
        return Err(invalid(format!(
            "{name} must be a whole number from 1 to {max}, got {value}"
        )));
    }
    Ok(value as usize)
}

/// Bytes of `elements` items of `size` bytes, if under `MAX_BYTES`.
fn checked_bytes(what: &str, elements: usize, size: usize) -> Result<usize> {
    elements
        .checked_mul(size)
        .filter(|b| *b <= MAX_BYTES)
        .ok_or_else(|| invalid(format!("{what} would need more than 2 GiB")))
}

/// Deterministic values in [-1, 1) for row `row` (xorshift32 seeded by `seed` and the row).
fn fill(values: &mut [f32], seed: u32, row: usize) {
    let mut s = seed ^ (row as u32).wrapping_mul(2654435761) ^ 0x9e37_79b9;
    s = s.max(1);
    for v in values {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        *v = (s as f32 / u32::MAX as f32) * 2.0 - 1.0;
    }
}

/// The formats a bench's matrix may take, by name.
const FORMATS: [(&str, TensorType); 15] = [
    ("f32", TensorType::F32),
    ("f16", TensorType::F16),
    ("bf16", TensorType::BF16),
    ("q8_0", TensorType::Q8_0),
    ("q4_0", TensorType::Q4_0),
    ("q4_1", TensorType::Q4_1),
    ("q5_0", TensorType::Q5_0),
    ("q5_1", TensorType::Q5_1),
    ("q2_k", TensorType::Q2_K),
    ("q3_k", TensorType::Q3_K),
    ("q4_k", TensorType::Q4_K),
    ("q5_k", TensorType::Q5_K),
    ("q6_k", TensorType::Q6_K),
    ("iq4_nl", TensorType::IQ4_NL),
    ("iq4_xs", TensorType::IQ4_XS),
];

/// Little-endian f32 bytes as values.
fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A bench's matrix, activations and pool, shared with the runs in flight.
pub struct Inner {
    weights: Box<dyn WeightMatrix>,
    rows: usize,
    tokens: usize,
    activations: Vec<f32>,
    weight_bytes: usize,
    pool: limits::ThreadPool,
}

impl Inner {
    fn build(
        tensor_type: TensorType,
        rows: usize,
        cols: usize,
        tokens: usize,
        threads: usize,
    ) -> Self {
        // Validated before: cols is a whole number of blocks.
        let row_bytes = tensor_type.row_bytes(cols).unwrap_or(0);
        let mut bytes = vec![0u8; rows * row_bytes];
        let encode = |chunk: &mut [u8], first_row: usize| {
            let mut values = vec![0.0f32; cols];
            let mut row = Vec::with_capacity(row_bytes);
            for (i, out) in chunk.chunks_exact_mut(row_bytes).enumerate() {
                row.clear();
                if SEARCHED_TYPES.contains(&tensor_type) {
                    // No quantiser for it yet: random blocks of about the same spread.
                    let blocks = cols / tensor_type.block_elements();
                    random_k_quant_blocks(tensor_type, blocks, (first_row + i) as u64, &mut row);
                } else {
                    fill(&mut values, 1, first_row + i);
                    // The type and length were validated, so encoding cannot fail.
                    let _ = quantize_row(tensor_type, &values, &mut row);
                }
                out.copy_from_slice(&row);
            }
        };
        par_row_chunks(&mut bytes, row_bytes, encode);
        let weights: Box<dyn WeightMatrix> = match tensor_type {
            TensorType::F32 => Box::new(
                DenseMatrix::new(rows, cols, f32_values(&bytes))
                    .expect("the bytes were sized for this matrix"),
            ),
            TensorType::F16 | TensorType::BF16 => Box::new(
                HalfMatrix::from_bytes(tensor_type, rows, cols, &bytes)
                    .expect("the bytes were sized for this matrix"),
            ),
            _ => Box::new(
                QuantizedMatrix::from_bytes(tensor_type, rows, cols, &bytes)
                    .expect("the bytes were sized for this matrix"),
            ),
        };
        let weight_bytes = weights.resident_bytes();
        let mut activations = vec![0.0f32; tokens * cols];
        for (t, x) in activations.chunks_exact_mut(cols).enumerate() {
            fill(x, 2, t);
        }
        Self {
            weights,
            rows,
            tokens,
            activations,
            weight_bytes,
            pool: limits::thread_pool(threads),
        }
    }

    /// Seconds taken by `iterations` products, each including the activation quantisation of block formats.
    fn run(&self, iterations: usize) -> f64 {
        // Written (not zero-allocated) so that page faults on the output stay out of the timed loop.
        let mut out = vec![1.0f32; self.tokens * self.rows];
        let mut quantized = QuantizedInput::default();
        self.pool.install(|| {
            let start = Instant::now();
            for _ in 0..iterations {
                match self.weights.quantized() {
                    Some(m) => {
                        quantized.quantize(&self.activations, [m]);
                        m.matmul(quantized.as_input(), self.tokens, &mut out);
                    }
                    None => self
                        .weights
                        .matmul_f32(&self.activations, self.tokens, &mut out),
                }
                std::hint::black_box(&mut out);
            }
            start.elapsed().as_secs_f64()
        })
    }
}

/// Calls `work(chunk, first_row)` on contiguous chunks of whole rows (`row_len` items each), one chunk per
/// available core on scoped threads: building the matrix is not what is measured, so it may use every core.
fn par_row_chunks<T: Send>(data: &mut [T], row_len: usize, work: impl Fn(&mut [T], usize) + Sync) {
    let rows = data.len() / row_len.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows_per_chunk = rows.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (c, chunk) in data.chunks_mut(rows_per_chunk * row_len).enumerate() {
            let work = &work;
            scope.spawn(move || work(chunk, c * rows_per_chunk));
        }
    });
}

pub struct CreateKernelBenchTask {
    tensor_type: TensorType,
    rows: usize,
    cols: usize,
    tokens: usize,
    threads: usize,
}

impl CodedTask for CreateKernelBenchTask {
    type Output = Inner;
    type JsValue = NativeKernelBench;

    fn compute(&mut self) -> Result<Self::Output> {
        catch_panics(|| {
            Ok(Inner::build(
                self.tensor_type,
                self.rows,
                self.cols,
                self.tokens,
                self.threads,
            ))
        })
    }

    fn resolve(&mut self, inner: Self::Output) -> Result<Self::JsValue> {
        Ok(NativeKernelBench {
            inner: Some(Arc::new(inner)),
        })
    }
}

/// Builds (on a worker thread) a deterministic pseudo-random `rows x cols` weight matrix in `format`
/// (`f32`, `f16`, `bf16`, `q8_0`, `q4_0`, `q4_1`, `q5_0` or `q5_1`, encoded with the GGUF quantisers), `tokens` rows of activations,
/// and a pool of `threads` threads for the products.
#[napi(ts_return_type = "Promise<NativeKernelBench>")]
pub fn create_kernel_bench(
    format: String,
    rows: f64,
    cols: f64,
    tokens: f64,
    threads: f64,
) -> Result<AsyncTask<Coded<CreateKernelBenchTask>>> {
    let Some(&(_, tensor_type)) = FORMATS.iter().find(|(name, _)| *name == format) else {
        let names: Vec<&str> = FORMATS.iter().map(|(name, _)| *name).collect();
        return Err(invalid(format!(
            "format must be one of {}, got {format:?}",
            names.join(", ")
        )));
    };
    let rows = count("rows", rows, MAX_BYTES)?;
    let cols = count("cols", cols, MAX_BYTES)?;
    let tokens = count("tokens", tokens, MAX_BYTES)?;
    let threads = count("threads", threads, MAX_THREADS)?;
    if !cols.is_multiple_of(tensor_type.block_elements()) {
        return Err(invalid(format!(
            "cols must be a multiple of {} for {format}, got {cols}",
            tensor_type.block_elements()
        )));
    }
    let row_bytes = tensor_type
        .row_bytes(cols)
        .map_err(|e| invalid(e.to_string()))?;
    checked_bytes("the weight matrix", rows, row_bytes)?;
    checked_bytes("the activations", tokens, cols * 4)?;
    checked_bytes("the output", tokens, rows * 4)?;
    Ok(AsyncTask::new(Coded(CreateKernelBenchTask {
        tensor_type,
        rows,
        cols,
        tokens,
        threads,
    })))
}

/// One weight matrix and its activations, ready to be multiplied.
#[napi]
pub struct NativeKernelBench {
    inner: Option<Arc<Inner>>,
}

impl NativeKernelBench {
    fn inner(&self) -> Result<&Arc<Inner>> {
        self.inner
            .as_ref()
            .ok_or_else(|| coded("DISPOSED", "this kernel bench was disposed"))
    }
}

pub struct RunTask {
    inner: Arc<Inner>,
    iterations: usize,
}

impl CodedTask for RunTask {
    type Output = f64;
    type JsValue = f64;

    fn compute(&mut self) -> Result<Self::Output> {
        catch_panics(|| Ok(self.inner.run(self.iterations)))
    }

    fn resolve(&mut self, seconds: Self::Output) -> Result<Self::JsValue> {
        Ok(seconds)
    }
}

#[napi]
impl NativeKernelBench {
    /// Runs `iterations` products (for block formats each includes quantising the activations, as the engine
    /// does) on a worker thread inside the bench's pool; resolves to the elapsed seconds.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn run(&self, iterations: f64) -> Result<AsyncTask<Coded<RunTask>>> {
        Ok(AsyncTask::new(Coded(RunTask {
            inner: Arc::clone(self.inner()?),
            iterations: count("iterations", iterations, u32::MAX as usize)?,
        })))
    }

    /// Bytes of weights one product reads.
    #[napi(getter)]
    pub fn weight_bytes(&self) -> Result<f64> {
        Ok(self.inner()?.weight_bytes as f64)
    }

    /// Instruction set of the kernels, e.g. `avx2+fma+f16c`.
    #[napi(getter)]
    pub fn isa(&self) -> String {
        seedinfer_kernels::detected_isa().name().to_string()
    }

    /// Frees the matrix now (runs already started keep it until they finish).
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

#[napi(object)]
pub struct NativeLimits {
    /// Streaming read bandwidth over 512 MiB, GB/s (10^9 bytes).
    pub read_gb_per_second: f64,
    /// f32 FMA peak, GFLOP/s (2 flops per FMA lane).
    pub f32_gflops: f64,
    /// int8 multiply-add peak, GOP/s (2 ops per int8 multiply-add): AVX-512 VNNI `vpdpbusd` where the kernels use
    /// it, else AVX2 `vpmaddubsw`+`vpmaddwd`.
    pub int8_gops: f64,
}

pub struct ProbeLimitsTask {
    threads: usize,
    seconds: f64,
}

impl CodedTask for ProbeLimitsTask {
    type Output = NativeLimits;
    type JsValue = NativeLimits;

    fn compute(&mut self) -> Result<Self::Output> {
        catch_panics(|| {
            Ok(NativeLimits {
                read_gb_per_second: limits::read_bandwidth(512 << 20, self.threads, self.seconds),
                f32_gflops: limits::f32_fma_throughput(self.threads, self.seconds),
                int8_gops: limits::int8_dot_throughput(self.threads, self.seconds),
            })
        })
    }

    fn resolve(&mut self, limits: Self::Output) -> Result<Self::JsValue> {
        Ok(limits)
    }
}

/// Probes the machine's read bandwidth, f32 and int8 compute peaks with `threads` threads, about `seconds` each.
#[napi(ts_return_type = "Promise<NativeLimits>")]
pub fn probe_limits(threads: f64, seconds: f64) -> Result<AsyncTask<Coded<ProbeLimitsTask>>> {
    let threads = count("threads", threads, MAX_THREADS)?;
    if !(seconds > 0.0 && seconds <= 60.0) {
        return Err(invalid(format!(
            "seconds must be more than 0 and at most 60, got {seconds}"
        )));
    }
    Ok(AsyncTask::new(Coded(ProbeLimitsTask { threads, seconds })))
}
