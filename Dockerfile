# Cairn's release binaries in a small image: `docker build -t cairn .`, then
#   docker run -p 2379:2379 -p 2380:2380 -v cairn-data:/var/lib/cairn cairn
# (the build downloads crates, so it needs the network; CI does not build it).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cairn --bin cairnctl

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/cairn cairn \
    && mkdir -p /var/lib/cairn && chown cairn:cairn /var/lib/cairn
COPY --from=build /src/target/release/cairn /src/target/release/cairnctl /usr/local/bin/
USER cairn
VOLUME /var/lib/cairn
EXPOSE 2379 2380
ENTRYPOINT ["cairn", "--data-dir", "/var/lib/cairn/data", \
    "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://127.0.0.1:2379", \
    "--listen-peer-urls", "http://0.0.0.0:2380", "--log-format", "json"]
