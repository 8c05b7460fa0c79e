//! Nothing here: the benchmarks are in `benches/hot_paths.rs`.
