//! What the benchmarks share: the price table and the bill of what the local stack counted.

pub mod bill;
