package notify

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Handler returns the http.Handler that upgrades requests to WebSocket
// connections and serves them as [Registry.Add] does, on a goroutine the
// Registry owns: the handler itself returns right after the upgrade. Mount
// it where clients connect, e.g. mux.Handle("GET /ws", reg.Handler()).
//
// Requests are checked in this order, and refused before any upgrade:
//
//	503  the Registry is closed, or Options.MaxConnections is reached
//	400  not a WebSocket upgrade request (a plain GET), or bad query values
//	426  an Upgrade: websocket request that breaks the handshake rules
//	403  an Origin not allowed by Options.OriginPatterns
//	401  Options.Authorize refused the request (403 if it wrapped ErrForbidden),
//	     or returned an Identity whose Expires has passed
//	403  Options.AuthorizeTopic refused a topic
//	429  Options.MaxConnectionsPerUser is reached
//
// The query may carry topic=NAME (repeatable), since=SEQ or since=now, and
// epoch=EPOCH; see [ParseQuery]. Each refusal has a one-line text body.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(r.serveHTTP)
}

func (r *Registry) serveHTTP(w http.ResponseWriter, req *http.Request) {
	status, err := r.admit(req)
	if err != nil {
		r.stats.rejected.Add(1)
		r.opts.Logger.Debug("notify: upgrade refused", "status", status, "remote", req.RemoteAddr, "path", req.URL.Path, "err", err)
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "websocket")
		}
		http.Error(w, err.Error(), status)
		return
	}
	o, err := ParseQuery(req.URL.Query())
	if err == nil {
		o.RemoteAddr = remoteIP(req)
		o.Identity, status, err = r.authorize(req)
	} else {
		status = http.StatusBadRequest
	}
	if err == nil {
		if err = r.checkTopics(req.Context(), o.Identity, o.Topics); err != nil {
			status = http.StatusBadRequest
			if errors.Is(err, ErrForbidden) {
				status = http.StatusForbidden
			}
		}
	}
	if err == nil {
		status, err = r.checkLimits(o)
	}
	if err != nil {
		r.stats.rejected.Add(1)
		r.opts.Logger.Debug("notify: upgrade refused", "status", status, "remote", req.RemoteAddr, "path", req.URL.Path, "err", err)
		http.Error(w, err.Error(), status)
		return
	}

	hw := &hijacker{ResponseWriter: w}
	conn, err := websocket.Accept(hw, req, &websocket.AcceptOptions{
		OriginPatterns:     r.opts.OriginPatterns,
		InsecureSkipVerify: r.opts.InsecureAllowAnyOrigin,
		// Compression stays off: permessage-deflate costs a compressor per
		// connection (tens of KB) and CPU per frame for messages that are
		// mostly small, and mixing secrets with attacker-chosen text in one
		// compressed stream invites CRIME/BREACH-style attacks.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		r.stats.rejected.Add(1)
		return // Accept wrote the response
	}
	// The handler returns and the connection is served on a goroutine of
	// the Registry's: net/http's goroutine, with its request, its 4 KiB read
	// and write buffers and a stack grown by the handshake, would otherwise
	// stay alive as long as the connection, which is most of an idle
	// connection's memory. The request's context is not used after the
	// hijack; the connection lives until it ends or the Registry stops.
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		conn.Close(websocket.StatusGoingAway, ErrClosed.Error())
		return
	}
	r.active.Add(1) // under r.mu, before stop can start waiting
	r.mu.RUnlock()
	remote, fc := req.RemoteAddr, hw.conn
	go func() {
		defer r.active.Done()
		if err := r.serveConn(r.base, conn, o, fc); err != nil {
			r.opts.Logger.Debug("notify: connection ended", "remote", remote, "err", err)
		}
	}()
}

// admit makes the checks that need no parsing: open registry, upgrade
// request, handshake headers, origin.
func (r *Registry) admit(req *http.Request) (int, error) {
	if r.isClosed() {
		return http.StatusServiceUnavailable, ErrClosed
	}
	if !headerHasToken(req.Header, "Upgrade", "websocket") {
		return http.StatusBadRequest, errors.New("notify: expected a WebSocket upgrade request")
	}
	if req.Method != http.MethodGet || !headerHasToken(req.Header, "Connection", "upgrade") {
		return http.StatusUpgradeRequired, errors.New("notify: a WebSocket upgrade must be a GET with Connection: Upgrade")
	}
	if !r.opts.InsecureAllowAnyOrigin {
		if err := checkOrigin(req, r.opts.OriginPatterns); err != nil {
			return http.StatusForbidden, err
		}
	}
	return 0, nil
}

// authorize runs Options.Authorize.
func (r *Registry) authorize(req *http.Request) (Identity, int, error) {
	if r.opts.Authorize == nil {
		return Identity{}, 0, nil
	}
	id, err := r.opts.Authorize(req)
	if err == nil && !id.Expires.IsZero() && !time.Now().Before(id.Expires) {
		err = errExpired // never upgrade for an authorisation that has already ended
	}
	if err == nil {
		return id, 0, nil
	}
	if errors.Is(err, ErrForbidden) {
		return Identity{}, http.StatusForbidden, err
	}
	return Identity{}, http.StatusUnauthorized, err
}

// checkLimits applies the connection limits before the upgrade; register
// applies them again, atomically, after it.
func (r *Registry) checkLimits(o ConnOptions) (int, error) {
	r.mu.RLock()
	err := r.overLimit(o.Identity.User, o.RemoteAddr, 0)
	r.mu.RUnlock()
	switch {
	case errors.Is(err, errTooManyConns):
		return http.StatusServiceUnavailable, err
	case err != nil:
		return http.StatusTooManyRequests, err
	}
	return 0, nil
}

// ParseQuery reads a connection's options from an upgrade URL's query:
//
//	topic=NAME   subscribe to NAME (repeatable; see ValidTopic)
//	since=SEQ    resume after SEQ (a decimal seq), or since=now for live
//	             messages only; either way the client first gets notify.hello
//	epoch=EPOCH  the epoch SEQ belongs to (from notify.hello or Position)
//
// It returns an error for a bad topic name, a since that is neither a
// number nor "now", an epoch without since, or a repeated since or epoch.
// Callers that accept connections themselves can pass its result to
// [Registry.Add].
func ParseQuery(q url.Values) (ConnOptions, error) {
	var o ConnOptions
	for _, t := range q["topic"] {
		if !ValidTopic(t) {
			return ConnOptions{}, fmt.Errorf("%w: invalid topic name %q", errTopic, t)
		}
		o.Topics = append(o.Topics, t)
	}
	since, epoch := q["since"], q["epoch"]
	if len(since) > 1 || len(epoch) > 1 {
		return ConnOptions{}, errors.New("notify: since and epoch may be given once")
	}
	if len(epoch) == 1 && len(since) == 0 {
		return ConnOptions{}, errors.New("notify: epoch needs since")
	}
	if len(since) == 1 {
		o.Resume = true
		if since[0] == "now" {
			o.FromNow = true
		} else {
			n, err := strconv.ParseUint(since[0], 10, 64)
			if err != nil {
				return ConnOptions{}, fmt.Errorf("notify: since must be a sequence number or \"now\", not %q", since[0])
			}
			o.Since = n
		}
	}
	if len(epoch) == 1 {
		if len(epoch[0]) > 64 {
			return ConnOptions{}, errors.New("notify: epoch too long")
		}
		o.Epoch = epoch[0]
	}
	return o, nil
}

// checkOrigin allows requests without an Origin (non-browser clients), from
// the request's own host, or matching one of patterns. Patterns mean what
// they mean to coder/websocket, which checks them again during the upgrade;
// checking first lets the handler answer 403 before running Authorize.
func checkOrigin(req *http.Request, patterns []string) error {
	origin := req.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("notify: malformed Origin %q", origin)
	}
	if strings.EqualFold(u.Host, req.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		ok, err := path.Match(strings.ToLower(p), strings.ToLower(target))
		if err != nil { // coder/websocket then refuses every foreign origin; so do we
			return fmt.Errorf("notify: origin %q is not allowed: Options.OriginPatterns has a malformed pattern", u.Host)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("notify: origin %q is not allowed", u.Host)
}

// headerHasToken reports whether a comma-separated header has token.
func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// remoteIP is the request's peer IP, without port: it keys the anonymous
// connection limit. Behind a proxy every client shares the proxy's IP; set
// Options.Authorize to identify users instead.
func remoteIP(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		return req.RemoteAddr
	}
	return host
}
