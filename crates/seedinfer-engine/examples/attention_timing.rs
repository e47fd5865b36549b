//! Times the engine's attention on SmolLM2's shape: `cargo run --release -p seedinfer-engine --example
//! attention_timing -- <context> <tokens> <threads> [f32|f16|int8]`.
use seedinfer_engine::attention_bench::{AttentionBench, AttentionShape};
use seedinfer_engine::KvDtype;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (context, tokens, threads) = (arg(1, 0), arg(2, 512), arg(3, 1));
    let dtype = args
        .get(4)
        .and_then(|d| KvDtype::parse(d))
        .unwrap_or(KvDtype::F16);
    let shape = AttentionShape {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        context,
        tokens,
        dtype,
        block_size: 32,
    };
    let mut bench = match AttentionBench::new(shape, threads) {
        Ok(b) => b,
        Err(e) => return eprintln!("{e}"),
    };
    bench.run(2);
    let iterations = 20;
    let seconds = bench.run(iterations) / iterations as f64;
    println!(
        "context {context} tokens {tokens} threads {threads} {}: {:.1} µs",
        dtype.name(),
        seconds * 1e6
    );
}
