//! Probes of the machine's own limits, run in the same process (and with the same thread pools) as the kernels
//! so that kernel speeds can be read as fractions of what this machine can do right now:
//!
//! - [`read_bandwidth`]: streaming read from memory (GB/s), the bound of a matrix-vector product;
//! - [`f32_fma_throughput`]: f32 fused multiply-add peak (GFLOP/s), the bound of an f32 matrix product;
//! - [`int8_dot_throughput`]: int8 multiply-add peak (GOP/s) with the instructions the block-quantised kernels
//!   use, the bound of a quantised matrix product.
//!
//! Each probe runs its loop on every thread of a rayon pool of the requested size until `seconds` have passed.

use crate::isa::detected;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// The pool type of [`thread_pool`], for callers that do not depend on rayon themselves.
pub type ThreadPool = rayon::ThreadPool;

/// A rayon pool of `threads` workers (at least one).
///
/// # Panics
/// When the operating system refuses to start the threads.
pub fn thread_pool(threads: usize) -> ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .expect("the operating system starts the pool's threads")
}

/// Runs `batch` (which returns the operations it did) on every thread of a `threads`-sized pool until `seconds`
/// have passed, and returns operations per second summed over the threads.
fn per_second_on_all_threads(threads: usize, seconds: f64, batch: impl Fn() -> f64 + Sync) -> f64 {
    let pool = thread_pool(threads);
    // One batch per thread first, so that every thread is awake and at its vector clock speed.
    pool.broadcast(|_| batch());
    let start = Instant::now();
    let operations: f64 = pool
        .broadcast(|_| {
            let mut operations = 0.0;
            loop {
                operations += batch();
                if start.elapsed().as_secs_f64() >= seconds {
                    return operations;
                }
            }
        })
        .into_iter()
        .sum();
    operations / start.elapsed().as_secs_f64()
}

/// Streaming read bandwidth in GB/s (10^9 bytes per second) over a buffer of `bytes` (use much more than the
/// last-level cache, e.g. 512 MiB), read by `threads` threads, each summing its own contiguous share with wide
/// integer loads, for at least `seconds` (and at least one full pass after a warm-up pass).
pub fn read_bandwidth(bytes: usize, threads: usize, seconds: f64) -> f64 {
    let threads = threads.max(1);
    let words = (bytes / 8).max(threads * 64);
    let pool = thread_pool(threads);
    let share = words.div_ceil(threads);
    // Written, not just allocated: untouched pages all map the kernel's single zero page, which stays in cache.
    // Each thread writes the share it will read (first touch places its pages near that thread).
    let mut buffer = vec![0u64; words];
    pool.install(|| {
        buffer
            .par_chunks_mut(share)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (i, w) in chunk.iter_mut().enumerate() {
                    *w = (c * share + i) as u64 | 1;
                }
            })
    });
    let pass = || -> u64 {
        pool.install(|| {
            buffer
                .par_chunks(share)
                .with_max_len(1)
                .map(sum_words)
                .reduce(|| 0, u64::wrapping_add)
        })
    };
    black_box(pass());
    let start = Instant::now();
    let mut passes = 0usize;
    loop {
        black_box(pass());
        passes += 1;
        if start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    (passes * words * 8) as f64 / start.elapsed().as_secs_f64() / 1e9
}

#[inline(always)]
fn sum_words_body(words: &[u64]) -> u64 {
    // Eight independent lanes: the compiler keeps them in two 256-bit registers with AVX2.
    let mut acc = [0u64; 8];
    let chunks = words.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, w| a.wrapping_add(*w));
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    acc.iter().fold(tail, |a, w| a.wrapping_add(*w))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_words_avx2(words: &[u64]) -> u64 {
    sum_words_body(words)
}

fn sum_words(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if detected().has_avx2() {
        // SAFETY: `detected` only reports instruction sets this machine has.
        return unsafe { sum_words_avx2(words) };
    }
    sum_words_body(words)
}

/// Iterations of the inner loop of one compute batch: long enough that reading the clock is negligible, short
/// enough (well under a millisecond) that a probe stops close to its deadline.
const BATCH: usize = 1 << 14;

/// Peak f32 multiply-add rate in GFLOP/s (one FMA lane counts 2 flops) on `threads` threads for `seconds`.
///
/// With AVX2+FMA: twelve independent chains of `vfmadd` on 8-lane registers per thread, enough to cover the
/// instruction's latency on both FMA ports. Otherwise: sixteen scalar multiply-then-add chains (2 flops each).
pub fn f32_fma_throughput(threads: usize, seconds: f64) -> f64 {
    per_second_on_all_threads(threads, seconds, || {
        #[cfg(target_arch = "x86_64")]
        if detected().has_avx2() {
            // SAFETY: `detected` only reports instruction sets this machine has.
            return unsafe { fma_batch_avx2() };
        }
        fma_batch_scalar()
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_batch_avx2() -> f64 {
    use std::arch::x86_64::*;
    const CHAINS: usize = 12;
    // acc = acc * a + b with a just under 1 converges to b / (1 - a): no overflow, no subnormals.
    let a = _mm256_set1_ps(black_box(0.999_9));
    let b = _mm256_set1_ps(black_box(1e-4));
    let mut acc = [_mm256_set1_ps(black_box(1.0)); CHAINS];
    for _ in 0..BATCH {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for v in acc {
        sum = _mm256_add_ps(sum, v);
    }
    black_box(sum);
    (BATCH * CHAINS * 8 * 2) as f64
}

fn fma_batch_scalar() -> f64 {
    const CHAINS: usize = 16;
    let (a, b) = (black_box(0.999_9f32), black_box(1e-4f32));
    let mut acc = [black_box(1.0f32); CHAINS];
    for _ in 0..BATCH {
        for v in acc.iter_mut() {
            *v = *v * a + b;
        }
    }
    black_box(acc);
    (BATCH * CHAINS * 2) as f64
}

/// Peak int8 multiply-add rate in GOP/s (one int8 multiply-add counts 2 operations, matching the 2 flops of an
/// FMA lane and the `2 * rows * cols * tokens` of a matrix product) on `threads` threads for `seconds`.
///
/// With AVX2: `vpmaddubsw` (`_mm256_maddubs_epi16`, 32 u8 x i8 multiply-adds into 16 i16 pair sums) followed
/// by `vpmaddwd` (`_mm256_madd_epi16` with ones, widening pairs to i32), the pair the block-quantised dot
/// kernels use for every 32 weights; only the 32 multiply-adds of `vpmaddubsw` are counted. Twelve independent
/// chains per thread, each feeding its result back as the next input so nothing can be hoisted out of the loop.
/// With AVX-512 VNNI (what the block-quantised kernels use there): `vpdpbusd` on 512-bit registers, 64 u8 x i8
/// multiply-adds added by fours into i32 lanes, twelve independent chains; with AVX-VNNI, the same on 256-bit
/// registers. Otherwise: scalar i8 x i8 into i32 chains.
pub fn int8_dot_throughput(threads: usize, seconds: f64) -> f64 {
    per_second_on_all_threads(threads, seconds, || {
        #[cfg(target_arch = "x86_64")]
        if detected() == crate::isa::Isa::Avx512 {
            // SAFETY: `detected` only reports instruction sets this machine has.
            return unsafe { int8_batch_avx512_vnni() };
        }
        #[cfg(target_arch = "x86_64")]
        if detected() == crate::isa::Isa::AvxVnni {
            // SAFETY: `detected` only reports instruction sets this machine has.
            return unsafe { int8_batch_avx_vnni() };
        }
        #[cfg(target_arch = "x86_64")]
        if detected().has_avx2() {
            // SAFETY: `detected` only reports instruction sets this machine has.
            return unsafe { int8_batch_avx2() };
        }
        int8_batch_scalar()
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn int8_batch_avx2() -> f64 {
    use std::arch::x86_64::*;
    const CHAINS: usize = 12;
    let weights = _mm256_set1_epi8(black_box(3));
    let ones = _mm256_set1_epi16(black_box(1));
    let mut x = [_mm256_set1_epi8(black_box(7)); CHAINS];
    for _ in 0..BATCH {
        for v in x.iter_mut() {
            // The i32 pair sums, reinterpreted as bytes, are the next round's unsigned activations.
            *v = _mm256_madd_epi16(_mm256_maddubs_epi16(*v, weights), ones);
        }
    }
    let mut sum = _mm256_setzero_si256();
    for v in x {
        sum = _mm256_add_epi32(sum, v);
    }
    black_box(sum);
    (BATCH * CHAINS * 32 * 2) as f64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn int8_batch_avx512_vnni() -> f64 {
    use std::arch::x86_64::*;
    const CHAINS: usize = 12;
    let weights = _mm512_set1_epi8(black_box(3));
    let mut x = [_mm512_set1_epi8(black_box(7)); CHAINS];
    for _ in 0..BATCH {
        for v in x.iter_mut() {
            // The i32 sums, reinterpreted as bytes, are the next round's unsigned activations.
            *v = _mm512_dpbusd_epi32(*v, *v, weights);
        }
    }
    let mut sum = _mm512_setzero_si512();
    for v in x {
        sum = _mm512_add_epi32(sum, v);
    }
    black_box(sum);
    (BATCH * CHAINS * 64 * 2) as f64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn int8_batch_avx_vnni() -> f64 {
    use std::arch::x86_64::*;
    const CHAINS: usize = 12;
    let weights = _mm256_set1_epi8(black_box(3));
    let mut x = [_mm256_set1_epi8(black_box(7)); CHAINS];
    for _ in 0..BATCH {
        for v in x.iter_mut() {
            // The i32 sums, reinterpreted as bytes, are the next round's unsigned activations.
            *v = _mm256_dpbusd_avx_epi32(*v, *v, weights);
        }
    }
    let mut sum = _mm256_setzero_si256();
    for v in x {
        sum = _mm256_add_epi32(sum, v);
    }
    black_box(sum);
    (BATCH * CHAINS * 32 * 2) as f64
}

fn int8_batch_scalar() -> f64 {
    const CHAINS: usize = 16;
    let w = black_box(3i32);
    let mut acc = [black_box(7i32); CHAINS];
    for _ in 0..BATCH {
        for v in acc.iter_mut() {
            // An i8 x i8 product accumulated in i32, as the scalar reference kernels do.
            *v = v.wrapping_add((*v as i8 as i32) * w);
        }
    }
    black_box(acc);
    (BATCH * CHAINS * 2) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sane(v: f64) -> bool {
        v.is_finite() && v > 0.0
    }

    #[test]
    fn bandwidth_is_positive_and_finite() {
        for threads in [1, 2] {
            let gb = read_bandwidth(8 << 20, threads, 0.01);
            assert!(sane(gb), "{threads} threads: {gb} GB/s");
        }
    }

    #[test]
    fn compute_throughputs_are_positive_and_finite() {
        for threads in [1, 2] {
            let f = f32_fma_throughput(threads, 0.01);
            let i = int8_dot_throughput(threads, 0.01);
            assert!(
                sane(f) && sane(i),
                "{threads} threads: {f} GFLOP/s, {i} GOP/s"
            );
        }
    }

    #[test]
    fn scalar_batches_count_their_operations() {
        assert_eq!(fma_batch_scalar(), (BATCH * 16 * 2) as f64);
        assert_eq!(int8_batch_scalar(), (BATCH * 16 * 2) as f64);
    }
}
