# Multi-stage build of the riskstream binary.
# librdkafka builds from rdkafka's bundled sources with its own configure (make and a C compiler,
# both in the rust image).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin riskstream && cp target/release/riskstream /riskstream

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /riskstream /usr/local/bin/riskstream
ENTRYPOINT ["riskstream"]
