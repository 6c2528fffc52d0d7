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
# The shipped jobs name their SQL files and default models from the repository root: the demo
# and `riskstream run jobs/specs/...` run from a copy of those folders.
WORKDIR /opt/riskstream
COPY --from=build /src/jobs/specs jobs/specs
COPY --from=build /src/jobs/models jobs/models
COPY --from=build /src/sql sql
ENTRYPOINT ["riskstream"]
