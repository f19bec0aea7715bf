# ward's image: one binary, /ward, running as the non-root user 65532. Unbuilt on the machines ward is developed
# on (no container runtime there); build with `docker build -t ghcr.io/ward-mesh/ward:<version> .`.
#
# glibc, not a static musl binary: the workspace links C code (ring's assembly and C, SQLite via rusqlite's
# `bundled`), and a musl build of it has not been verified (the musl target is not installed where ward is built
# and tested). So the binary is a glibc one on distroless/cc, which carries exactly glibc, libgcc and CA
# certificates: no shell, no package manager. Moving to `x86_64-unknown-linux-musl` + `scratch` needs only the
# build stage changed once that build is tested.

# --- build ------------------------------------------------------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The manifests are compiled into the binary (ward_kube::install embeds deploy/kubernetes/ with include_str!).
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates ./crates
COPY deploy ./deploy
RUN cargo build --locked --release -p ward --bin ward \
 && install -D -m 0755 target/release/ward /out/ward \
 && strip /out/ward

# --- run --------------------------------------------------------------------------------------------------------
# Debian 12's glibc matches the build stage's (bookworm): 2.36, which the binary's packed relocations (DT_RELR,
# crates/cli/build.rs) need.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ward /ward
USER 65532:65532
ENTRYPOINT ["/ward"]
