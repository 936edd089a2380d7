# Builds the fusebox binary and ships it on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/fusebox /fusebox

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /fusebox /usr/local/bin/fusebox
ENV FUSEBOX_ADDR=0.0.0.0:4242 \
    DATABASE_URL=sqlite:///var/lib/fusebox/fusebox.db \
    FUSEBOX_LOG_FORMAT=json
VOLUME /var/lib/fusebox
EXPOSE 4242
ENTRYPOINT ["/usr/local/bin/fusebox"]
