//! Run-time choice of instruction set. Kernels are compiled once per level from one `#[inline(always)]` body,
//! so the binary assumes only the x86-64 baseline and the scalar build stays the reference.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma+f16c",
            Isa::Avx512 => "avx512f+bw+vnni",
        }
    }
}

/// Families of compute kernels, each with its own set of SIMD implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// f32 weights x f32 activations (`dense_f32`).
    DenseF32,
    /// f16/bf16 weights x f32 activations (`half_weights`).
    Half,
    /// Q4_0/Q4_1/Q8_0 weights x int8 activations (`quantized`).
    Quantized,
    /// SeedLM and q3_rtn weights x f32 activations (`seedlm_weights`, `q3_rtn_weights`).
    SeedLm,
}

/// The instruction set a kernel family runs with on this machine.
pub fn kernel_isa(family: KernelFamily) -> &'static str {
    match (family, detected()) {
        (_, Isa::Scalar) => "scalar",
        (KernelFamily::DenseF32, Isa::Avx512) => "avx512f (vectorised by the compiler)",
        (KernelFamily::DenseF32, Isa::Avx2) => "avx2+fma (vectorised by the compiler)",
        // The int8 and half kernels have AVX2 intrinsics; AVX-512 machines run those too.
        (KernelFamily::Half | KernelFamily::Quantized, _) => "avx2+fma+f16c",
        (KernelFamily::SeedLm, _) => "avx2+fma+f16c",
    }
}

/// The widest instruction set this machine offers among those the kernels are built for.
/// `SEEDINFER_ISA=scalar|avx2` caps it (for tests and comparisons).
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let cap = match std::env::var("SEEDINFER_ISA").as_deref() {
            Ok("scalar") => Isa::Scalar,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        let mut best = Isa::Scalar;
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
            {
                best = Isa::Avx2;
            }
            if best == Isa::Avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                best = Isa::Avx512;
            }
        }
        best.min(cap)
    })
}
