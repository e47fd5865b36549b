//! A session's key/value cache: per layer, contiguous f32 rows of `kv_dim` values, one per position.
//! It grows with use, so memory follows the tokens actually held rather than the context size.

pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    len: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> Self {
        Self {
            kv_dim,
            capacity,
            len: 0,
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this cache may hold (the session's context size).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends keys and values (`[tokens, kv_dim]`) for one layer; `commit` advances the length once all layers
    /// have been written.
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        self.keys[layer].truncate(self.len * self.kv_dim);
        self.values[layer].truncate(self.len * self.kv_dim);
        self.keys[layer].extend_from_slice(keys);
        self.values[layer].extend_from_slice(values);
    }

    pub fn commit(&mut self, tokens: usize) {
        self.len += tokens;
    }

    /// Keys of `layer` for positions `0..positions`, `[positions, kv_dim]`.
    pub fn keys(&self, layer: usize, positions: usize) -> &[f32] {
        &self.keys[layer][..positions * self.kv_dim]
    }

    pub fn values(&self, layer: usize, positions: usize) -> &[f32] {
        &self.values[layer][..positions * self.kv_dim]
    }

    /// Forgets everything after the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        for layer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            layer.truncate(self.len * self.kv_dim);
        }
    }

    pub fn resident_bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(self.values.iter())
            .map(|v| v.capacity() * 4)
            .sum()
    }
}
