//! MurmurHash3 (x86, 32-bit) and Unleash's bucket normalisation.
//!
//! Every Unleash SDK buckets users with `murmur3("{groupId}:{id}", seed) % modulus + 1`,
//! so this must be bit-exact with yggdrasil (UTF-8 bytes, as Edge does). The hash is
//! streamed so the hot path resumes from a precomputed `"{groupId}:"` state instead of
//! building the joined string.

use std::hash::{BuildHasher, Hasher};

/// Seed for strategy rollouts (`flexibleRollout`, `gradualRollout*`).
pub const ROLLOUT_SEED: u32 = 0;
/// Seed for variant selection (yggdrasil's `VARIANT_NORMALIZATION_SEED`).
pub const VARIANT_SEED: u32 = 86_028_157;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// MurmurHash3 x86_32 of `data`.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    let mut m = Murmur3::new(seed);
    m.update(data);
    m.finish()
}

/// `murmur3("{group_id}:{id}", seed) % modulus + 1`, i.e. a bucket in `1..=modulus`.
///
/// A zero modulus has no buckets and yields 0 (callers never ask for it; this keeps the
/// function total instead of dividing by zero).
pub fn normalized_hash(group_id: &str, id: &str, modulus: u32, seed: u32) -> u32 {
    GroupHasher::new(group_id, seed)
        .hash(id)
        .checked_rem(modulus)
        .map_or(0, |bucket| bucket + 1)
}

/// Murmur3 with `"{groupId}:"` already absorbed, so each evaluation hashes only the
/// stickiness id: the group is fixed per strategy and the seed per use.
#[derive(Debug, Clone)]
pub(crate) struct GroupHasher(Murmur3);

impl GroupHasher {
    pub(crate) fn new(group_id: &str, seed: u32) -> Self {
        let mut m = Murmur3::new(seed);
        m.update(group_id.as_bytes());
        m.update(b":");
        Self(m)
    }

    /// `murmur3("{groupId}:{id}")`.
    #[inline]
    pub(crate) fn hash(&self, id: &str) -> u32 {
        let mut m = self.0.clone();
        m.update(id.as_bytes());
        m.finish()
    }
}

#[inline]
fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

#[inline]
fn mix_block(h: u32, k: u32) -> u32 {
    (h ^ mix_k(k))
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// Streaming MurmurHash3; 4-byte blocks may straddle `update` calls. Partial blocks
/// accumulate in a word rather than a buffer, avoiding variable-length copies.
#[derive(Debug, Clone)]
struct Murmur3 {
    h: u32,
    /// Bytes of the current partial block, little-endian.
    tail: u32,
    carried: u32,
    /// Input length; the reference mixes it in modulo 2^32.
    len: u32,
}

impl Murmur3 {
    fn new(seed: u32) -> Self {
        Self {
            h: seed,
            tail: 0,
            carried: 0,
            len: 0,
        }
    }

    #[inline]
    fn update(&mut self, mut bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u32);
        while self.carried > 0 {
            let Some((&byte, rest)) = bytes.split_first() else {
                return;
            };
            bytes = rest;
            self.push(byte);
        }
        let mut blocks = bytes.chunks_exact(4);
        for block in &mut blocks {
            let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
            self.h = mix_block(self.h, k);
        }
        for &byte in blocks.remainder() {
            self.push(byte);
        }
    }

    #[inline]
    fn push(&mut self, byte: u8) {
        self.tail |= u32::from(byte) << (8 * self.carried);
        self.carried += 1;
        if self.carried == 4 {
            self.h = mix_block(self.h, self.tail);
            self.tail = 0;
            self.carried = 0;
        }
    }

    #[inline]
    fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.carried > 0 {
            h ^= mix_k(self.tail);
        }
        h ^= self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

/// FxHash-style hasher for the engine's own string maps (flag names, value sets).
///
/// Keys are admin-defined, so SipHash's flooding resistance buys nothing there, while
/// the flag-name lookup sits on every evaluation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

pub(crate) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(word);
            self.add(u64::from_le_bytes(buf));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        input: String,
        seed: u32,
        modulus: u32,
        murmur3_x86_32_utf8: u32,
        normalized: u32,
    }

    fn vectors() -> Vec<Vector> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/unleash/hash-vectors.jsonl"
        );
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    #[test]
    fn murmur3_matches_every_reference_vector_as_utf8() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 12, "hash-vectors.jsonl not fully read");
        for v in &vectors {
            assert_eq!(
                murmur3_x86_32(v.input.as_bytes(), v.seed),
                v.murmur3_x86_32_utf8,
                "{}",
                v.input
            );
        }
    }

    #[test]
    fn normalized_hash_matches_every_reference_vector_split_at_the_first_colon() {
        for v in vectors() {
            let (group, id) = v.input.split_once(':').unwrap_or(("", ""));
            assert_eq!(
                normalized_hash(group, id, v.modulus, v.seed),
                v.normalized,
                "{}",
                v.input
            );
        }
    }

    #[test]
    fn hashing_in_parts_equals_hashing_the_joined_bytes_for_every_split() {
        let joined = "Feature.flexibleRollout.10:174ø用户".as_bytes();
        for a in 0..=joined.len() {
            for b in a..=joined.len() {
                let mut m = Murmur3::new(42);
                for part in [&joined[..a], &joined[a..b], &joined[b..]] {
                    m.update(part);
                }
                assert_eq!(m.finish(), murmur3_x86_32(joined, 42), "split {a}/{b}");
            }
        }
    }

    #[test]
    fn murmur3_of_the_empty_input_is_the_published_value() {
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514e_28b7);
    }

    #[test]
    fn a_zero_modulus_yields_no_bucket_instead_of_panicking() {
        assert_eq!(normalized_hash("g", "id", 0, 0), 0);
    }
}
