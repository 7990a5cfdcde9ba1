/// Deterministic test data shared with `tests/vectors/gen.mjs`: xorshift32
/// words, little-endian, truncated to `size`.
pub fn test_data(size: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 4);
    let mut x = seed;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}
