package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// shutdownGrace bounds how long in-flight requests may take to finish after a
// shutdown signal.
const shutdownGrace = 20 * time.Second

// serveUntilDone serves srv on ln until ctx is cancelled, then stops accepting
// connections and waits (at most grace) for in-flight requests to finish.
// ready, if not nil, receives the listening address once serving.
func serveUntilDone(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration, logger *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("listening", slog.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", slog.Duration("grace", grace))
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: in-flight requests did not finish within %s: %w", grace, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// serveBoth serves the public listener and, when admin is not nil, the admin
// listener, until ctx is cancelled or either fails; then both shut down.
func serveBoth(ctx context.Context, public *http.Server, pln net.Listener, admin *http.Server, aln net.Listener, logger *slog.Logger) error {
	if aln == nil {
		return serveUntilDone(ctx, public, pln, shutdownGrace, logger)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	aerr := make(chan error, 1)
	go func() {
		err := serveUntilDone(ctx, admin, aln, shutdownGrace, logger.With(slog.String("listener", "admin")))
		cancel() // the admin listener failing stops the public one too: no silent loss of probes
		aerr <- err
	}()
	err := serveUntilDone(ctx, public, pln, shutdownGrace, logger)
	cancel()
	return errors.Join(err, <-aerr)
}
