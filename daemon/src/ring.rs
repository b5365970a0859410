//! A bounded history: the agents keep their last `N` events for the technician's `events`
//! command, and the oldest goes when a new one comes.
//!
//! The bound is part of the type, so a history read back from JSON (the drone's view of itself
//! is serialisable) keeps it too: only the newest `N` of a longer list are kept.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;

/// At most `N` items, oldest first. Serialised as a plain list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring<T, const N: usize> {
    items: VecDeque<T>,
}

impl<T, const N: usize> Ring<T, N> {
    pub fn new() -> Self {
        Self {
            items: VecDeque::new(),
        }
    }

    /// Adds `item` as the newest, dropping the oldest when `N` are already held.
    pub fn push(&mut self, item: T) {
        if N == 0 {
            return;
        }
        if self.items.len() == N {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }

    /// Oldest first.
    pub fn to_vec(&self) -> Vec<T>
    where
        T: Clone,
    {
        self.items.iter().cloned().collect()
    }
}

impl<T, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize, const N: usize> Serialize for Ring<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.items)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Ring<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut ring = Self::new();
        for item in Vec::<T>::deserialize(d)? {
            ring.push(item);
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_n_oldest_first() {
        let mut r = Ring::<u32, 3>::new();
        assert!(r.is_empty());
        for i in 1..=2 {
            r.push(i);
        }
        assert_eq!(r.to_vec(), [1, 2]);
        for i in 3..=5 {
            r.push(i);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.to_vec(), [3, 4, 5]);
        assert_eq!(r.iter().next_back(), Some(&5));
    }

    #[test]
    fn a_zero_bound_holds_nothing() {
        let mut r = Ring::<u32, 0>::new();
        r.push(1);
        assert!(r.is_empty());
    }

    #[test]
    fn json_is_a_list_and_reading_one_keeps_the_bound() {
        let mut r = Ring::<u32, 2>::new();
        r.push(7);
        r.push(8);
        assert_eq!(serde_json::to_string(&r).unwrap(), "[7,8]");
        let back: Ring<u32, 2> = serde_json::from_str("[1,2,3]").unwrap();
        assert_eq!(back.to_vec(), [2, 3]);
    }
}
