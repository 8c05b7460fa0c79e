//! Builds the C side of the comparisons against the system's libev (Debian: `libev-dev`;
//! `ci/peers` installs it).

fn main() {
    println!("cargo:rerun-if-changed=c/libev_timers.c");
    println!("cargo:rerun-if-changed=c/libev_pipe_chain.c");
    cc::Build::new()
        .file("c/libev_timers.c")
        .file("c/libev_pipe_chain.c")
        .opt_level(2)
        .warnings(true)
        .compile("peers_libev");
    println!("cargo:rustc-link-lib=ev");
}
