//! Continuous batching: sessions generating at the same time on one model (each on its own thread) hand their
//! next decode step to the model's [`Batcher`], and one of them — the leader — runs a single forward pass over
//! every step waiting (`forward::forward_sequences`: each weight read once for all of them), then wakes the
//! others with their logits. Sessions join and leave between passes. A batched step gives a session the bits it
//! gets alone (`tests/batched_sessions.rs`, `tests/concurrent_generation.rs`).
//!
//! Prompts join too, in chunks (chunked prefill): while other sessions decode, a session prefills through the
//! batcher in chunks of [`Batcher::prefill_chunk`] tokens, and a pass takes every waiting decode step plus prompt
//! chunks, oldest first, while its tokens fit in `max_batch_tokens` (at least one chunk). Running streams then wait at most one such pass per token
//! instead of sharing the thread pool with a whole prompt's forward pass (which measured stalls of up to seconds).
//!
//! Flat combining: the waiting threads are blocked inside [`Batcher::step`] while the leader works on their caches
//! and logits through the pointers they handed over, so no two threads touch one session's data at once.

use crate::forward::{forward_sequences, Scratch};
use crate::kv_cache::PagedKv;
use crate::model::Model;
use crate::ops_seedinfer::SeedinferOps;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a leader waits for the other generating sessions' steps before running the pass without them.
const GATHER_WINDOW: Duration = Duration::from_micros(500);

/// One session's step, handed to the leader: its tokens (a decode token, a decode token and its drafts, or a
/// chunk of a prompt) at positions `cache.len()..` of its cache, and where the logits go: after the last of them,
/// or after each with `all_logits`.
struct Request {
    id: u64,
    /// A generating session's decode step (the gather window waits for these), not a prompt chunk.
    decode: bool,
    /// Logits after every token (verifying drafts), not only the last.
    all_logits: bool,
    tokens: *const [u32],
    cache: *mut PagedKv,
    logits: *mut Vec<f32>,
}

// SAFETY: the pointers are only dereferenced by the leader while the thread that owns them is blocked in
// `Batcher::step` waiting for this request (see the module documentation).
unsafe impl Send for Request {}

#[derive(Default)]
struct State {
    queue: Vec<Request>,
    /// A thread is running passes.
    leading: bool,
    /// Sessions in their decode loop: how many steps a leader may expect.
    generating: usize,
    next_id: u64,
    /// Finished requests: `true` when the pass succeeded.
    finished: HashMap<u64, bool>,
    stats: BatchStats,
}

/// Counts of the passes run so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Forward passes run by the batcher.
    pub passes: u64,
    /// Decode steps they computed (steps / passes = mean batch size).
    pub steps: u64,
    /// The largest batch.
    pub largest: usize,
    /// Prompt tokens they computed (chunked prefill next to decode steps).
    pub prompt_tokens: u64,
    /// Drafts verified in decode steps (speculative sessions' steps carry their drafts).
    pub verified_tokens: u64,
}

/// Tokens one batched pass takes when none is configured.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 32;

pub struct Batcher {
    state: Mutex<State>,
    changed: Condvar,
    max_batch_tokens: usize,
}

impl Default for Batcher {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BATCH_TOKENS)
    }
}

/// Registration of a session's decode loop (see [`Batcher::generating`]); ends when dropped.
pub(crate) struct Generating<'a>(&'a Batcher);

impl Drop for Generating<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.generating -= 1;
        drop(state);
        self.0.changed.notify_all();
    }
}

impl Batcher {
    /// A batcher whose passes take at most `max_batch_tokens` tokens (at least one request).
    pub fn new(max_batch_tokens: usize) -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            max_batch_tokens: max_batch_tokens.max(2),
        }
    }

    /// Tokens of a prompt chunk fed through the batcher: half a pass, leaving room for decode steps.
    pub fn prefill_chunk(&self) -> usize {
        self.max_batch_tokens / 2
    }

    /// Whether sessions are decoding now (a prompt then prefills through the batcher, in chunks).
    pub(crate) fn others_decoding(&self) -> bool {
        self.lock().generating > 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every change is a single step).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a session as decoding until the returned guard drops, so leaders wait for its steps.
    pub(crate) fn generating(&self) -> Generating<'_> {
        self.lock().generating += 1;
        Generating(self)
    }

    pub fn stats(&self) -> BatchStats {
        self.lock().stats
    }

    /// Feeds `tokens` at positions `cache.len()..` and leaves the logits after the last in `logits` (after each of
    /// them, in order, with `all_logits`), in one forward pass with the steps of any other sessions of `model`
    /// waiting at the same time. `cache` must have room reserved for the positions. Returns `false` if the pass
    /// failed (a panic inside it), leaving `cache` without the positions.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step(
        &self,
        model: &Model,
        decode: bool,
        all_logits: bool,
        tokens: &[u32],
        cache: &mut PagedKv,
        scratch: &mut Scratch,
        logits: &mut Vec<f32>,
    ) -> bool {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push(Request {
            id,
            decode,
            all_logits,
            tokens,
            cache,
            logits,
        });
        self.changed.notify_all();
        loop {
            if let Some(ok) = state.finished.remove(&id) {
                return ok;
            }
            if state.leading {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leading = true;
            let deadline = Instant::now() + GATHER_WINDOW;
            while state.queue.iter().filter(|r| r.decode).count() < state.generating {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = self
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let batch = take_batch(&mut state.queue, self.max_batch_tokens);
            drop(state);
            let ok = run(model, &batch, scratch);
            state = self.lock();
            state.leading = false;
            state.stats.passes += 1;
            state.stats.steps += batch.iter().filter(|r| r.decode).count() as u64;
            state.stats.verified_tokens += batch
                .iter()
                .filter(|r| r.decode)
                .map(|r| r.tokens.len() as u64 - 1)
                .sum::<u64>();
            state.stats.prompt_tokens += batch
                .iter()
                .filter(|r| !r.decode)
                .map(|r| r.tokens.len() as u64)
                .sum::<u64>();
            state.stats.largest = state.stats.largest.max(batch.len());
            for r in &batch {
                state.finished.insert(r.id, ok);
            }
            self.changed.notify_all();
        }
    }
}

/// The next pass, removed from `queue`: every decode step (a token, with its drafts if any: a running stream never
/// waits behind a prompt), then prompt chunks oldest first while the pass stays within `budget` tokens (at least one
/// chunk, so prompts progress however many streams decode).
fn take_batch(queue: &mut Vec<Request>, budget: usize) -> Vec<Request> {
    let mut total: usize = queue
        .iter()
        .filter(|r| r.decode)
        .map(|r| r.tokens.len())
        .sum();
    let mut batch = Vec::with_capacity(queue.len());
    let mut rest = Vec::new();
    let mut chunks = 0;
    for r in queue.drain(..) {
        if r.decode {
            batch.push(r);
            continue;
        }
        let len = r.tokens.len();
        if rest.is_empty() && (chunks == 0 || total + len <= budget) {
            total += len;
            chunks += 1;
            batch.push(r);
        } else {
            rest.push(r);
        }
    }
    *queue = rest;
    batch
}

/// One forward pass over `batch`, each request's logits written to it; `false` if it panicked.
fn run(model: &Model, batch: &[Request], scratch: &mut Scratch) -> bool {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: each request's owner is blocked in `step` until this batch is marked finished, and no two
        // requests share a cache (one session steps once at a time).
        let mut sequences: Vec<(&[u32], &mut PagedKv)> = batch
            .iter()
            .map(|r| unsafe { (&*r.tokens, &mut *r.cache) })
            .collect();
        let all_rows: Vec<bool> = batch.iter().map(|r| r.all_logits).collect();
        let mut logits = Vec::new();
        model.install(|| {
            forward_sequences::<SeedinferOps, PagedKv>(
                &model.config,
                &model.weights,
                &mut sequences,
                &all_rows,
                scratch,
                &mut logits,
            )
        });
        let vocab_size = model.config.vocab_size;
        let mut at = 0;
        for r in batch {
            let rows = if r.all_logits { r.tokens.len() } else { 1 };
            // SAFETY: as above.
            let out = unsafe { &mut *r.logits };
            out.clear();
            out.extend_from_slice(&logits[at..at + rows * vocab_size]);
            at += rows * vocab_size;
        }
    }));
    outcome.is_ok()
}
