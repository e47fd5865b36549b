//! Run-time choice of instruction set. Kernels are compiled once per instruction set (one folder each:
//! `x86_avx2/` (which also holds the AVX-VNNI variants of its kernels), `x86_avx512/`, and in time
//! `aarch64_neon/`) from `#[target_feature]` functions, so the binary
//! assumes only the target's baseline and the scalar code stays the reference. Every kernel call is given one
//! explicit [`Isa`]; [`detected`] is the widest this machine offers, capped by `SEEDINFER_ISA`.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust: the oracle every SIMD kernel is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 + FMA + F16C with AVX-VNNI (`vpdpbusd` on 256-bit registers: Intel Alder Lake and later
    /// client CPUs, which lack AVX-512). Kernels without an AVX-VNNI version run their AVX2 one.
    AvxVnni,
    /// x86-64 AVX-512 F/BW/VL + VNNI (on top of AVX2). Kernels without an AVX-512 version run their AVX2 one.
    Avx512,
    /// aarch64 NEON (Advanced SIMD). Kernels without a NEON version run their scalar one.
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma+f16c",
            Isa::AvxVnni => "avx2+fma+f16c+avxvnni",
            Isa::Avx512 => "avx512f+bw+vnni",
            Isa::Neon => "neon",
        }
    }

    /// Parses a `SEEDINFER_ISA` value: `scalar`, `avx2`, `avxvnni`, `avx512` or `neon`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avxvnni" => Some(Isa::AvxVnni),
            "avx512" => Some(Isa::Avx512),
            "neon" => Some(Isa::Neon),
            _ => None,
        }
    }

    /// Whether code compiled for AVX2 + FMA + F16C may run under this instruction set.
    #[inline(always)]
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::AvxVnni | Isa::Avx512)
    }

    /// This instruction set if the machine has it (and the cap allows it), else the widest one it does have
    /// below it: what a kernel asked to run with `self` may use.
    pub fn usable(self) -> Isa {
        capped(self, detected())
    }
}

/// `cap` if `best` (what the machine offers) covers it, else the widest set below `cap` that it covers. On x86
/// the sets rank AVX2 < AVX-VNNI < AVX-512; AVX-VNNI is only used where the CPU reports it (an AVX-512 CPU may
/// lack it, as Zen 4 does).
fn capped(cap: Isa, best: Isa) -> Isa {
    let rank = |isa: Isa| match isa {
        Isa::Scalar => 0,
        Isa::Avx2 => 1,
        Isa::AvxVnni => 2,
        Isa::Avx512 => 3,
        Isa::Neon => 1,
    };
    match (cap, best) {
        (Isa::Scalar, _) | (_, Isa::Scalar) => Isa::Scalar,
        (Isa::Neon, _) | (_, Isa::Neon) => best,
        _ if rank(cap) >= rank(best) => best,
        (Isa::AvxVnni, _) if !has_avx_vnni() => Isa::Avx2,
        _ => cap,
    }
}

/// Whether the CPU has AVX-VNNI (the VEX-encoded 256-bit `vpdpbusd`).
fn has_avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Families of compute kernels, each with its own set of SIMD implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// f32 weights x f32 activations (`dense_f32`).
    DenseF32,
    /// f16/bf16 weights x f32 activations (`half_weights`).
    Half,
    /// SeedLM and q3_rtn weights x f32 activations (`seedlm_weights`, `q3_rtn_weights`).
    SeedLm,
}

/// The instruction set a kernel family runs with on this machine. (Block-quantised formats say it per format:
/// `QuantizedMatrix::kernel_isa`.)
pub fn kernel_isa(family: KernelFamily) -> &'static str {
    match (family, detected()) {
        (_, Isa::Scalar | Isa::Neon) => "scalar",
        (KernelFamily::DenseF32, Isa::Avx512) => "avx512f (vectorised by the compiler)",
        (KernelFamily::DenseF32, Isa::Avx2 | Isa::AvxVnni) => {
            "avx2+fma (vectorised by the compiler)"
        }
        // The half and SeedLM kernels have AVX2 intrinsics; AVX-512 machines run those too.
        (KernelFamily::Half | KernelFamily::SeedLm, _) => "avx2+fma+f16c",
    }
}

/// The widest instruction set this machine offers among those the kernels are built for.
/// `SEEDINFER_ISA=scalar|avx2|avxvnni|avx512|neon` caps it (for tests and comparisons); a cap the machine does
/// not reach changes nothing.
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let best = widest();
        match std::env::var("SEEDINFER_ISA")
            .ok()
            .as_deref()
            .and_then(Isa::parse)
        {
            Some(cap) => capped(cap, best),
            None => best,
        }
    })
}

fn widest() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        let avx512 = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni");
        match (avx2, avx512) {
            (true, true) => Isa::Avx512,
            (true, false) if has_avx_vnni() => Isa::AvxVnni,
            (true, false) => Isa::Avx2,
            _ => Isa::Scalar,
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            Isa::Neon
        } else {
            Isa::Scalar
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Isa::Scalar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_scalar_is_always_usable() {
        for isa in [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Neon] {
            let name = format!("{isa:?}").to_lowercase();
            assert_eq!(Isa::parse(&name), Some(isa));
        }
        assert_eq!(Isa::parse("sse2"), None);
        assert_eq!(Isa::Scalar.usable(), Isa::Scalar);
        // Whatever is asked for, what comes back is something this machine runs.
        for isa in [Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Neon] {
            assert!(
                matches!(isa.usable(), Isa::Scalar | Isa::Avx2 | Isa::AvxVnni)
                    || isa.usable() == detected()
            );
        }
        // Caps: never above what the machine has, never above the cap.
        assert_eq!(capped(Isa::Avx512, Isa::Avx2), Isa::Avx2);
        assert_eq!(capped(Isa::Avx2, Isa::Avx512), Isa::Avx2);
        assert_eq!(capped(Isa::AvxVnni, Isa::Avx2), Isa::Avx2);
        assert_eq!(capped(Isa::Avx512, Isa::AvxVnni), Isa::AvxVnni);
        assert_eq!(capped(Isa::Scalar, Isa::Avx512), Isa::Scalar);
        assert_eq!(capped(Isa::Neon, Isa::Scalar), Isa::Scalar);
    }
}
