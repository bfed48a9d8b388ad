# syntax=docker/dockerfile:1
# Builds the `subkeeper` binary; the same image runs the service (`run`), the
# migrations (`migrate`) and the provider simulator (`simulate`).

# Build and runtime share a Debian release so the binary's glibc matches.
FROM rust:1.95-trixie AS build
WORKDIR /src
# sqlx's query macros must not need a live database at build time: they read
# the prepared metadata in .sqlx/ (cargo sqlx prepare) instead.
ENV SQLX_OFFLINE=true
COPY . .
# Cache mounts keep the registry and target dir between builds without
# baking them into a layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin subkeeper \
 && install -m 0755 target/release/subkeeper /usr/local/bin/subkeeper

FROM debian:trixie-slim
# CA roots for TLS to Microsoft Graph, Google and the OAuth endpoints.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/subkeeper /usr/local/bin/subkeeper
# Nothing here needs root.
RUN useradd --system --uid 10001 --no-create-home subkeeper
USER subkeeper
EXPOSE 8080
ENV SUBKEEPER_HTTP_ADDR=0.0.0.0:8080
ENTRYPOINT ["subkeeper"]
CMD ["run"]
