//! The x86-64 AVX-512 instruction set (F + BW + VL + VNNI, on top of AVX2 + FMA + F16C): one file per kernel
//! family, each computing what its AVX2 twin in `x86_avx2/` computes with wider registers and `vpdpbusd` int8
//! dot products. Chosen at run time (`Isa::Avx512`, see `isa`); nothing here may be called unless
//! `isa::detected()` reports it. A kernel family without a file here runs its AVX2 kernel on these machines.

#![cfg(target_arch = "x86_64")]

pub(crate) mod k_quants;
pub(crate) mod quads;
