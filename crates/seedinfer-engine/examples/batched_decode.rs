//! Aggregate decode throughput of N sessions stepping together in one forward pass (`Session::feed_together`)
//! against the same N sessions stepping one after another (what concurrent generations do today), same model,
//! same tokens, same run, alternating. The effect continuous batching is after: decode reads every weight once
//! per step whatever the number of rows.
//!
//!     cargo run --release -p seedinfer-engine --example batched_decode -- <model> [threads=2] [steps=32] [1,2,4,8]

use seedinfer_engine::sampler::argmax;
use seedinfer_engine::{LoadOptions, Model, Session};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

fn sessions(model: &Arc<Model>, n: usize) -> Vec<Session> {
    (0..n)
        .map(|i| {
            let mut s = Session::new(Arc::clone(model), 512).expect("session");
            let prompt: Vec<u32> = (0..32u32).map(|t| 100 + 7 * t + 13 * i as u32).collect();
            s.predict_next(&prompt, &AtomicBool::new(false))
                .expect("prompt");
            s
        })
        .collect()
}

fn next_tokens(sessions: &[Session]) -> Vec<Vec<u32>> {
    sessions
        .iter()
        .map(|s| vec![argmax(s.last_logits().expect("logits"))])
        .collect()
}

/// Seconds for `steps` decode steps of every session, all in one pass per step.
fn together(model: &Arc<Model>, n: usize, steps: usize) -> f64 {
    let mut all = sessions(model, n);
    let started = Instant::now();
    for _ in 0..steps {
        let next = next_tokens(&all);
        let refs: Vec<&[u32]> = next.iter().map(|t| t.as_slice()).collect();
        let mut live: Vec<&mut Session> = all.iter_mut().collect();
        Session::feed_together(&mut live, &refs).expect("step");
    }
    started.elapsed().as_secs_f64()
}

/// Seconds for the same steps with each session's pass run on its own.
fn one_by_one(model: &Arc<Model>, n: usize, steps: usize) -> f64 {
    let mut all = sessions(model, n);
    let started = Instant::now();
    for _ in 0..steps {
        let next = next_tokens(&all);
        for (s, t) in all.iter_mut().zip(&next) {
            Session::feed_together(&mut [s], &[t.as_slice()]).expect("step");
        }
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: batched_decode <model> [threads] [steps] [counts]");
    let threads = args.get(2).map_or(2, |a| a.parse().expect("threads"));
    let steps = args.get(3).map_or(32, |a| a.parse().expect("steps"));
    let counts: Vec<usize> = args
        .get(4)
        .map_or("1,2,4,8", String::as_str)
        .split(',')
        .map(|c| c.parse().expect("count"))
        .collect();
    let options = LoadOptions {
        threads: Some(threads),
        ..Default::default()
    };
    let model = Arc::new(Model::load(path.as_ref(), &options).expect("model loads"));
    println!(
        "{path}: {}, {threads} threads, {steps} steps",
        model.info.compute_format
    );
    println!("| sessions | one by one tok/s | together tok/s | together / one by one |");
    println!("|---:|---:|---:|---:|");
    together(&model, 1, 4); // warm-up
    for n in counts {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            a.push(one_by_one(&model, n, steps));
            b.push(together(&model, n, steps));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let tokens = (n * steps) as f64;
        let (a, b) = (tokens / median(&mut a), tokens / median(&mut b));
        println!("| {n} | {a:.1} | {b:.1} | {:.2}× |", b / a);
    }
}
