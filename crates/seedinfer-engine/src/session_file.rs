//! Saved sessions: `session.save(path)` writes, `Session::load` reads and validates.
//!
//! Layout (little-endian): magic `SEEDSESS`, format version (u32), the model fingerprint (32 bytes), the cache
//! configuration (dtype u8, block size, layers, KV heads, head size, vocabulary, context size: u32 each), the
//! cached tokens (count u32, then u32 each), the pending tokens (count u32, then u32 each; version 1: one u32,
//! `u32::MAX` for none), the logits after the last cached token (count u32: 0 or the vocabulary size, then f32
//! each), the blocks that gave back their sliding-window layers' rows (count u32, then one byte per block, 1 for
//! those; absent in version 1), from version 3 the session's cache policies — ThinK's key channels (the distinct
//! channel sets: count u32, then each one's width u32 and its u16 channels per layer and KV head; per block, u32: 0,
//! or 1 + the set its keys keep), ThinK's settings (u8 flag, ratio f64, recent u32) and a bounded cache's (u8 flag,
//! max tokens u32, sinks u32, u8 SirLLM flag, recent u32, decay f64, evicted tokens u64, then one f32 score per cached
//! token) —, the KV bytes (length u64, then each block's positions as stored: a pruned block's keys in its kept
//! channels), and a SHA-256 of everything before it.

use crate::bounded_cache::{BoundedCache, SirLlm};
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvStore, PagedKv};
use crate::kv_pool::KvDtype;
use crate::model::Model;
use crate::session::Session;
use crate::think::{KeptChannels, Think};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SEEDSESS";
const VERSION: u32 = 3;
const NO_TOKEN: u32 = u32::MAX;

fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

/// The cache configuration a saved session must match, in file order.
fn configuration(model: &Model, context_size: usize) -> [usize; 7] {
    let (c, layout) = (&model.config, model.kv_pool.layout());
    [
        layout.dtype.code() as usize,
        layout.block_size,
        c.layers,
        c.kv_heads,
        c.head_dim,
        c.vocab_size,
        context_size,
    ]
}

const CONFIGURATION_NAMES: [&str; 7] = [
    "KV dtype",
    "block size",
    "layers",
    "KV heads",
    "head size",
    "vocabulary",
    "context size",
];

impl Session {
    /// Writes this session (tokens, cached keys and values, last logits) to `path`, replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.pruned.is_some() {
            return Err(EngineError::InvalidOption(
                "a session whose prompt was pruned (prefill strategy other than dense) cannot be saved: its cache lacks some layers' keys and values".into(),
            ));
        }
        let model = self.model();
        let mut out = Vec::with_capacity(64 + self.cache.held_bytes());
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, VERSION as usize);
        out.extend_from_slice(&model.fingerprint);
        for v in configuration(model, self.context_size()) {
            put_u32(&mut out, v);
        }
        put_u32(&mut out, self.tokens.len());
        for &t in &self.tokens {
            put_u32(&mut out, t as usize);
        }
        put_u32(&mut out, self.pending.len());
        for &t in &self.pending {
            put_u32(&mut out, t as usize);
        }
        let logits = self.last_logits.as_deref().unwrap_or_default();
        put_u32(&mut out, logits.len());
        out.extend_from_slice(bytemuck::cast_slice(logits));
        let dropped = self.cache.local_dropped();
        put_u32(&mut out, dropped.len());
        out.extend(dropped.iter().map(|&d| u8::from(d)));
        let kept = self.cache.kept_channels_per_block();
        let mut sets: Vec<&Arc<KeptChannels>> = Vec::new();
        let mut block_sets = Vec::with_capacity(kept.len());
        for k in &kept {
            block_sets.push(match k {
                None => 0,
                Some(k) => match sets.iter().position(|s| Arc::ptr_eq(s, k)) {
                    Some(i) => i + 1,
                    None => {
                        sets.push(k);
                        sets.len()
                    }
                },
            });
        }
        put_u32(&mut out, sets.len());
        for set in &sets {
            put_u32(&mut out, set.width);
            out.extend(set.index().iter().flat_map(|c| c.to_le_bytes()));
        }
        put_u32(&mut out, block_sets.len());
        for &s in &block_sets {
            put_u32(&mut out, s);
        }
        out.push(u8::from(self.think.is_some()));
        let think = self.think.unwrap_or_default();
        out.extend_from_slice(&think.ratio.to_le_bytes());
        put_u32(&mut out, think.recent);
        out.push(u8::from(self.bounded.is_some()));
        let bound = self.bounded.unwrap_or(BoundedCache {
            max_tokens: 0,
            sinks: 0,
            sirllm: None,
        });
        put_u32(&mut out, bound.max_tokens);
        put_u32(&mut out, bound.sinks);
        out.push(u8::from(bound.sirllm.is_some()));
        let sirllm = bound.sirllm.unwrap_or(SirLlm {
            recent: 0,
            decay: 1.0,
        });
        put_u32(&mut out, sirllm.recent);
        out.extend_from_slice(&sirllm.decay.to_le_bytes());
        out.extend_from_slice(&(self.evicted as u64).to_le_bytes());
        // One score per cached token (SirLLM's; a streaming bound keeps zeros).
        let mut scores = Vec::new();
        if self.bounded.is_some() {
            scores.extend_from_slice(&self.scores[..self.scores.len().min(self.tokens.len())]);
            scores.resize(self.tokens.len(), 0.0);
        }
        put_u32(&mut out, scores.len());
        out.extend_from_slice(bytemuck::cast_slice(&scores));
        let scales = self.cache.key_channel_scales();
        put_u32(&mut out, scales.len());
        for layer in scales {
            put_u32(&mut out, layer.len());
            out.extend_from_slice(bytemuck::cast_slice(layer));
        }
        let kv_bytes = self.cache.saved_bytes(self.cache.len(), &dropped, &kept);
        out.extend_from_slice(&(kv_bytes as u64).to_le_bytes());
        self.cache.save(&mut out);
        let digest: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&digest);
        let write_error = |e: std::io::Error| EngineError::SessionFile {
            path: path.display().to_string(),
            reason: format!("cannot write: {e}"),
        };
        let partial = path.with_extension(format!(
            "{}.partial",
            path.extension().and_then(|e| e.to_str()).unwrap_or("")
        ));
        std::fs::write(&partial, &out).map_err(write_error)?;
        std::fs::rename(&partial, path).map_err(write_error)
    }

    /// Reads a session saved by [`Session::save`] for `model`. A damaged file is `SESSION_FILE_INVALID`; a file
    /// of another model or cache configuration is `SESSION_FILE_MISMATCH`.
    pub fn load(model: Arc<Model>, path: &Path) -> Result<Session> {
        let name = path.display().to_string();
        let invalid = |reason: String| EngineError::SessionFile {
            path: name.clone(),
            reason,
        };
        let mismatch = |reason: String| EngineError::SessionMismatch {
            path: name.clone(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
        if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..8] != MAGIC {
            return Err(invalid("not a seedinfer session file (bad magic)".into()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if !(1..=VERSION).contains(&version) {
            return Err(invalid(format!(
                "format version {version}, this seedinfer reads versions 1 to {VERSION}"
            )));
        }
        if Sha256::digest(body).as_slice() != digest {
            return Err(invalid(
                "checksum mismatch: the file is truncated or corrupted".into(),
            ));
        }
        let mut reader = Reader { bytes: &body[12..] };
        let short = || invalid("the file ends early".into());
        let fingerprint = reader.take(32).ok_or_else(short)?;
        if fingerprint != model.fingerprint {
            return Err(mismatch(
                "it was saved from a different model (fingerprint differs)".into(),
            ));
        }
        let mut saved = [0usize; 7];
        for v in saved.iter_mut() {
            *v = reader.u32().ok_or_else(short)? as usize;
        }
        let context_size = saved[6];
        let expected = configuration(&model, context_size);
        for ((name, s), e) in CONFIGURATION_NAMES.iter().zip(saved).zip(expected) {
            if s != e {
                let show = |v: usize| {
                    if *name == "KV dtype" {
                        KvDtype::from_code(v as u8)
                            .map_or(format!("code {v}"), |d| d.name().to_string())
                    } else {
                        v.to_string()
                    }
                };
                return Err(mismatch(format!(
                    "{name} is {} in the file and {} in this model",
                    show(s),
                    show(e)
                )));
            }
        }
        let vocab = model.config.vocab_size;
        let mut session =
            Session::new(Arc::clone(&model), context_size).map_err(|e| mismatch(e.to_string()))?;
        let cached = reader.u32().ok_or_else(short)? as usize;
        // A session whose generation stopped at contextFull holds a full context (and a pending token).
        if cached > context_size {
            return Err(invalid(format!(
                "{cached} cached tokens do not fit its context of {context_size}"
            )));
        }
        let mut tokens = Vec::with_capacity(cached);
        for _ in 0..cached {
            let t = reader.u32().ok_or_else(short)?;
            if t as usize >= vocab {
                return Err(invalid(format!("token id {t} is outside the vocabulary")));
            }
            tokens.push(t);
        }
        let pending = if version == 1 {
            match reader.u32().ok_or_else(short)? {
                NO_TOKEN => Vec::new(),
                t => vec![t],
            }
        } else {
            let count = reader.u32().ok_or_else(short)? as usize;
            if cached + count > context_size + 1 {
                return Err(invalid(format!(
                    "{cached} cached and {count} pending tokens do not fit its context of {context_size}"
                )));
            }
            (0..count)
                .map(|_| reader.u32().ok_or_else(short))
                .collect::<Result<Vec<u32>>>()?
        };
        if let Some(t) = pending.iter().find(|&&t| t as usize >= vocab) {
            return Err(invalid(format!("token id {t} is outside the vocabulary")));
        }
        let logits_len = reader.u32().ok_or_else(short)? as usize;
        if logits_len != 0 && logits_len != vocab {
            return Err(invalid(format!(
                "{logits_len} logits for a vocabulary of {vocab}"
            )));
        }
        let logits: Vec<f32> = reader.f32s(logits_len).ok_or_else(short)?;
        let cache_blocks = cached.div_ceil(model.kv_pool.layout().block_size);
        let dropped: Vec<bool> = if version == 1 {
            Vec::new()
        } else {
            let blocks = reader.u32().ok_or_else(short)? as usize;
            let flags = reader.take(blocks).ok_or_else(short)?;
            if blocks != cache_blocks
                || flags.iter().any(|&f| f > 1)
                || (flags.contains(&1) && !model.kv_pool.layout().has_local_layers())
            {
                return Err(invalid(
                    "the record of blocks without sliding-window rows does not fit the cache"
                        .into(),
                ));
            }
            flags.iter().map(|&f| f == 1).collect()
        };
        let mut key_scales = None;
        let mut kept: Vec<Option<Arc<KeptChannels>>> = vec![None; cache_blocks];
        if version >= 3 {
            let c = &model.config;
            let bad_sets =
                || invalid("the record of pruned key channels does not fit the model".into());
            let count = reader.u32().ok_or_else(short)? as usize;
            let mut sets = Vec::new();
            for _ in 0..count.min(cache_blocks) {
                let width = reader.u32().ok_or_else(short)? as usize;
                let n = c.layers * c.kv_heads * width.min(c.head_dim);
                let index: Vec<u16> = reader
                    .take(n * 2)
                    .ok_or_else(short)?
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect();
                let set = KeptChannels::from_index(width, c.layers, c.kv_heads, c.head_dim, index)
                    .ok_or_else(bad_sets)?;
                sets.push(Arc::new(set));
            }
            if sets.len() != count || reader.u32().ok_or_else(short)? as usize != cache_blocks {
                return Err(bad_sets());
            }
            for k in kept.iter_mut() {
                *k = match reader.u32().ok_or_else(short)? as usize {
                    0 => None,
                    s => Some(Arc::clone(sets.get(s - 1).ok_or_else(bad_sets)?)),
                };
            }
            let has_think = reader.byte().ok_or_else(short)?;
            let ratio = reader.f64().ok_or_else(short)?;
            let recent = reader.u32().ok_or_else(short)? as usize;
            let think = (has_think == 1).then_some(Think { ratio, recent });
            let has_bound = reader.byte().ok_or_else(short)?;
            let max_tokens = reader.u32().ok_or_else(short)? as usize;
            let sinks = reader.u32().ok_or_else(short)? as usize;
            let has_sirllm = reader.byte().ok_or_else(short)?;
            let recent = reader.u32().ok_or_else(short)? as usize;
            let decay = reader.f64().ok_or_else(short)?;
            let evicted = reader.u64().ok_or_else(short)? as usize;
            let scores_len = reader.u32().ok_or_else(short)? as usize;
            let scores: Vec<f32> = reader.f32s(scores_len.min(cached)).ok_or_else(short)?;
            let bound = (has_bound == 1).then_some(BoundedCache {
                max_tokens,
                sinks,
                sirllm: (has_sirllm == 1).then_some(SirLlm { recent, decay }),
            });
            if has_think > 1
                || has_bound > 1
                || has_sirllm > 1
                || scores_len != if bound.is_some() { cached } else { 0 }
            {
                return Err(invalid(
                    "the record of the cache's policies is damaged".into(),
                ));
            }
            // The settings are checked as `createSession` checks them.
            session
                .set_bounded_cache(bound)
                .map_err(|e| invalid(e.to_string()))?;
            session
                .set_think(think)
                .map_err(|e| invalid(e.to_string()))?;
            session.scores = scores;
            session.evicted = evicted;
            let layers = reader.u32().ok_or_else(short)? as usize;
            if layers != c.layers {
                return Err(invalid(
                    "the record of key channel scales does not fit the model".into(),
                ));
            }
            let mut scales = Vec::with_capacity(layers);
            for _ in 0..layers {
                let n = reader.u32().ok_or_else(short)? as usize;
                if n != 0 && n != c.kv_heads * c.head_dim {
                    return Err(invalid(
                        "the record of key channel scales does not fit the model".into(),
                    ));
                }
                let layer: Vec<f32> = reader.f32s(n).ok_or_else(short)?;
                if layer.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                    return Err(invalid(
                        "a key channel scale is not a positive number".into(),
                    ));
                }
                scales.push(layer);
            }
            key_scales = Some(scales);
        }
        let kv_len = reader.u64().ok_or_else(short)? as usize;
        let expected_kv = session.cache.saved_bytes(cached, &dropped, &kept);
        if kv_len != expected_kv || reader.bytes.len() != kv_len {
            return Err(invalid(format!(
                "{kv_len} bytes of keys and values ({} present) where {cached} tokens need {expected_kv}",
                reader.bytes.len()
            )));
        }
        let mut cache = PagedKv::new(model.kv_pool.clone(), context_size);
        cache.restore(cached, &dropped, &kept, reader.bytes)?;
        if let Some(scales) = key_scales {
            cache.set_key_channel_scales(scales);
        }
        // A bounded cache's keys were re-rotated and ThinK's pruned: neither is offered for reuse.
        if session.bounded.is_none() && session.think.is_none() && !cache.has_pruned_keys() {
            cache.offer_full_blocks(&tokens);
        }
        session.cache = cache;
        session.tokens = tokens;
        session.pending = pending;
        session.last_logits = (!logits.is_empty()).then_some(logits);
        Ok(session)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    /// `count` little-endian f32s.
    fn f32s(&mut self, count: usize) -> Option<Vec<f32>> {
        let bytes = self.take(count.checked_mul(4)?)?;
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    fn f64(&mut self) -> Option<f64> {
        self.take(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    }
}
