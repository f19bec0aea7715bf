//! Link settings for the `ward` binary.

fn main() {
    // Relative relocations packed (DT_RELR, glibc 2.36+): a position-independent binary of this size carries
    // ~1.7 MB of them, which the loader reads at every start and which then stay resident in every sidecar
    // (issue 18: RSS per sidecar). Packed they are a few kilobytes; ASLR is unchanged. Linkers that do not know
    // the option (GNU ld < 2.38) warn and ignore it.
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
