# syntax=docker/dockerfile:1
#
# The broker image: a static Go binary on a distroless base with no shell,
# running as the unprivileged "nonroot" user. The binary needs no files at run
# time (migrations, the policy model and console assets are embedded), and the
# image carries no configuration: every setting, secrets included, comes from
# the environment when the container starts (see deploy/README.md).
#
#   docker build -t broker .            # or: docker compose up --build

# Base images are pinned by digest (the tag stays for the reader): a rebuild
# gets the same bytes, and a moved tag cannot change the image. Refresh both
# deliberately, e.g. `crane digest golang:1.26` / `crane digest
# gcr.io/distroless/static-debian12:nonroot`, and review the change.
FROM golang:1.26@sha256:595c7847cff97c9a9e76f015083c481d26078f961c9c8dca3923132f51fe12f1 AS build
WORKDIR /src
# Dependencies first, so a source-only change reuses this layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# VERSION is printed by `broker version`; it is not a secret.
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/broker ./cmd/broker

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/broker /broker
USER nonroot:nonroot
EXPOSE 8080
# distroless has no curl or shell: the binary checks itself. With
# BROKER_ADDR other than :8080, override it: HEALTHCHECK CMD ["/broker", "healthcheck", "http://127.0.0.1:PORT/healthz"].
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["/broker", "healthcheck"]
ENTRYPOINT ["/broker"]
CMD ["serve"]
