//! Vectors by text, in memory, capped in entries: the oldest entry goes first when full. It keeps
//! the parent answers' vectors of the device reward, which repeat on every update of a run.

use std::collections::{HashMap, VecDeque};

pub struct VectorCache {
    cap: usize,
    map: HashMap<String, Vec<f32>>,
    /// Texts in the order they came in, oldest first.
    order: VecDeque<String>,
}

impl VectorCache {
    /// A cache of at most `cap` vectors; 0 keeps nothing.
    pub fn new(cap: usize) -> Self {
        VectorCache {
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, text: &str) -> Option<&[f32]> {
        self.map.get(text).map(|v| v.as_slice())
    }

    /// Keeps `vector` for `text`, dropping the oldest entries beyond the cap.
    pub fn insert(&mut self, text: &str, vector: Vec<f32>) {
        if self.cap == 0 {
            return;
        }
        if self.map.insert(text.to_string(), vector).is_none() {
            self.order.push_back(text.to_string());
        }
        while self.map.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}
