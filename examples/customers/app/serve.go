package app

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/wsnotify/notify"
)

// Limits for a server open to the Internet; copy them with the rest. The
// demo has no login, so the per-user limit applies per remote address.
const (
	MaxConnections        = 10_000
	MaxConnectionsPerAddr = 50
)

// Limits returns opts with the demo's connection limits set.
func Limits(opts notify.Options) *notify.Options {
	opts.MaxConnections = MaxConnections
	opts.MaxConnectionsPerUser = MaxConnectionsPerAddr
	return &opts
}

// Serve serves h on ln until ctx ends, then stops the HTTP server and reg
// together and waits for both: http.Server.Shutdown does not wait for
// WebSocket connections (it handed them over at the upgrade), so the
// Registry flushes and closes its own, under the same deadline. If the
// server fails first, reg is closed and the error returned.
func Serve(ctx context.Context, ln net.Listener, reg *notify.Registry, h http.Handler) error {
	srv := &http.Server{
		Handler: h,
		// Timeouts against clients that open connections and then trickle
		// or stall: the headers, a whole request, a whole response, and an
		// idle keep-alive connection each get a bound. WebSocket connections
		// are not cut by them: net/http clears a connection's deadlines when
		// it is hijacked, and notify has its own (WriteTimeout, heartbeats).
		// Neither are Server-Sent Events streams: notify lifts the deadlines
		// when a stream starts and bounds its writes the same way.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		reg.Close()
		return err
	case <-ctx.Done():
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	regDone := make(chan error, 1)
	go func() { regDone <- reg.Shutdown(ctx) }()
	err := srv.Shutdown(ctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, <-regDone)
}

// RefuseUpgrades returns h behind a refusal of every WebSocket upgrade
// (403 Forbidden), as a corporate proxy that blocks WebSocket would answer.
// The page then reaches the same endpoint over Server-Sent Events: notify.js
// falls back to them when the upgrade fails. The demo's -no-websocket flag
// uses it, and so do the browser tests of that fallback.
func RefuseUpgrades(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(strings.ToLower(r.Header.Get("Upgrade")), "websocket") {
			http.Error(w, "WebSocket upgrades are refused here (-no-websocket)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
