//! What the benchmarks share: the price table and the bill of what the local stack counted.

pub mod bill;

/// The `p`th percentile (nearest rank) of `sorted`, ascending; 0 when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
