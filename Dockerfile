# layerlens container image: the HTTP service (`layerlens serve`) and its web page.
#
#   docker build -t layerlens .
#   docker run -p 8080:8080 -v "$PWD/weights:/weights:ro" layerlens
#   (weights/gpt2, weights/clip, and weights/benchmarks for /v1/evaluate)
#
# Two stages: the build stage compiles with the Makefile, exactly as on a
# developer machine (`make deps`, then `make`); the runtime stage is
# debian:bookworm-slim with only the shared libraries the binary links, plus
# curl for the health check and the optional weights download.
# Configuration is by LAYERLENS_* environment variables (`layerlens serve
# --help`, docs/deploy.md); the weights are a volume at /weights.

ARG DEBIAN=bookworm

# ---------------------------------------------------------------- build ----
FROM debian:${DEBIAN} AS build
# The C code's instruction set.  The image may run on any x86-64 server, so
# the default is the x86-64-v2 baseline rather than the Makefile's -march=native;
# OpenBLAS picks its own kernels for the CPU at run time either way.
ARG ARCHFLAGS="-march=x86-64-v2 -mtune=generic"
RUN apt-get update && apt-get install -y --no-install-recommends make ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
# The Makefile's own package step, restricted to what the server build needs
# (the test, fuzzing and browser packages stay out of the image).
RUN make deps DEB_PKGS="build-essential pkg-config libopenblas-dev libjansson-dev libpcre2-dev libutf8proc-dev libmicrohttpd-dev libssl-dev" \
    && rm -rf /var/lib/apt/lists/*
COPY include/ include/
COPY src/ src/
COPY web/ web/
RUN make -j"$(nproc)" ARCHFLAGS="$ARCHFLAGS" all && build/layerlens serve --help >/dev/null

# -------------------------------------------------------------- runtime ----
FROM debian:${DEBIAN}-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        libopenblas0-pthread libjansson4 libpcre2-8-0 libutf8proc2 libmicrohttpd12 libssl3 \
        curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin layerlens \
    && mkdir -p /weights/gpt2 /weights/clip /weights/benchmarks /results \
    && chown -R 10001:10001 /weights /results
COPY --from=build /src/build/layerlens /usr/local/bin/layerlens
COPY weights/download.sh /usr/local/share/layerlens/download.sh
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# Listen on every interface inside the container; the port is published by
# `docker run -p` / the Service.  Models and benchmark files come from the
# /weights volume; finished evaluations are kept in /results.
ENV LAYERLENS_HOST=0.0.0.0 \
    LAYERLENS_PORT=8080 \
    LAYERLENS_GPT2=/weights/gpt2 \
    LAYERLENS_CLIP=/weights/clip \
    LAYERLENS_DATA=/weights/benchmarks \
    LAYERLENS_RESULTS_DIR=/results \
    LAYERLENS_FETCH_WEIGHTS=0
VOLUME ["/weights", "/results"]
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${LAYERLENS_PORT}/healthz" >/dev/null || exit 1
# SIGTERM: the server finishes the requests it accepted, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["serve"]
