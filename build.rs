//! The one place that names the platforms: `dasynq_epoll` on Linux,
//! `dasynq_kqueue` on the BSDs and Apple systems. Everything else in the crate selects on
//! these two cfgs.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dasynq_epoll)");
    println!("cargo::rustc-check-cfg=cfg(dasynq_kqueue)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    match os.as_str() {
        "linux" => println!("cargo::rustc-cfg=dasynq_epoll"),
        "freebsd" | "netbsd" | "openbsd" | "dragonfly" | "macos" | "ios" | "tvos" | "watchos"
        | "visionos" => println!("cargo::rustc-cfg=dasynq_kqueue"),
        _ => {}
    }
}
