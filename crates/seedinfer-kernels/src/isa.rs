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
