package notify

import (
	"context"
	"encoding/base64"
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

// Handler returns the http.Handler that serves connections of both
// transports on one URL, e.g. mux.Handle("GET /ws", reg.Handler()):
//
//   - a WebSocket upgrade is served as [Registry.Add] does, on a goroutine
//     the Registry owns: the handler itself returns right after the
//     upgrade;
//   - a GET whose Accept header includes text/event-stream gets a
//     Server-Sent Events stream (Content-Type text/event-stream,
//     Cache-Control no-store, X-Accel-Buffering no), for networks that
//     break WebSocket and for clients without a library (EventSource,
//     curl -N). The handler returns when the stream ends. See sse.go for
//     the events; notify.js speaks both.
//
// One URL for both, rather than a second handler: the requests pass the
// same checks in the same order with the same statuses, a deployment
// routes and protects one path, and notify.js's auto mode tries WebSocket
// and then SSE on the same URL. Both kinds live in the same Registry, with
// the same limits, queues, ordering and resume.
//
// Requests are checked in this order, cheapest first, and refused before
// any upgrade or stream:
//
//	503  the Registry is closed, or Options.MaxConnections is reached
//	400  neither a WebSocket upgrade nor a stream request (a plain GET; a
//	     POST or HEAD, even with Accept: text/event-stream)
//	426  an Upgrade: websocket request that breaks the handshake rules: not
//	     a GET, no Connection: Upgrade, or a Sec-WebSocket-Version other
//	     than 13 (the answer names the versions supported)
//	400  a missing or malformed Sec-WebSocket-Key
//	403  an Origin not allowed by Options.OriginPatterns
//	400  bad query values; for a stream, also a malformed Last-Event-ID
//	     (only read when the query has no since)
//	401  Options.Authorize refused the request (403 if it wrapped ErrForbidden),
//	     or returned an Identity whose Expires has passed
//	403  Options.AuthorizeTopic refused a topic
//	429  Options.MaxConnectionsPerUser is reached
//	500  Options.Authorize or Options.AuthorizeTopic panicked (logged with
//	     its stack); for a stream, also a ResponseWriter that cannot flush
//	     (a middleware that wraps it without Flush or Unwrap; logged)
//
// (net/http itself answers 431 to request headers beyond
// http.Server.MaxHeaderBytes.) EventSource gives up for good on any of
// these statuses; notify.js reports them.
//
// A stream from an allowed Origin (the server's own host, or one that
// OriginPatterns names) gets Access-Control-Allow-Origin with that origin,
// Access-Control-Allow-Credentials: true and Vary: Origin, so that a page
// of another allowed origin can read it with its cookies (new
// EventSource(url, {withCredentials: true})); so do the refusals that
// follow the origin check, and the answers to probes (see [ProbeParam]),
// so that such a page can read their status. A same-origin EventSource
// sends no Origin and gets none of them.
//
// A GET with probe=1 in the query is a probe: it is checked as above and
// answered 204 or with the refusal's status, and never upgraded (see
// [ProbeParam]).
//
// The query may carry topic=NAME (repeatable), since=SEQ or since=now, and
// epoch=EPOCH; see [ParseQuery]. A stream may instead resume from the
// Last-Event-ID header that EventSource sends when it reconnects
// ("SEQ:EPOCH", as the stream's ids are written, or a bare "SEQ"); a stream
// with neither starts from now. Each refusal has a one-line text body, and
// is logged at Warn level at most once a minute per status (with the count
// of those not logged), so that a page served from another origin is
// noticed during development without flooding a production log.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(r.serveHTTP)
}

func (r *Registry) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if isProbe(req) {
		r.serveProbe(w, req)
		return
	}
	stream := isEventStream(req)
	o, status, err := r.check(req, stream)
	if err != nil {
		r.stats.rejected.Add(1)
		r.logRefusal(status, req, err)
		r.allowOrigin(w.Header(), req)
		switch status {
		case http.StatusUpgradeRequired:
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Sec-WebSocket-Version", "13")
		case http.StatusInternalServerError:
			err = errors.New("notify: internal error") // the details are in the log
		}
		http.Error(w, err.Error(), status)
		return
	}
	if stream {
		r.serveSSE(w, req, o)
		return
	}

	// The ping hook captures the frameConn, never hw: coder/websocket keeps
	// the hook for the connection's life, and hw holds net/http's response,
	// request and 4 KiB buffers (11 KB per idle connection at 10k).
	fc := new(frameConn)
	hw := &hijacker{ResponseWriter: w, conn: fc}
	conn, err := websocket.Accept(hw, req, &websocket.AcceptOptions{
		OriginPatterns:     r.opts.OriginPatterns,
		InsecureSkipVerify: r.opts.InsecureAllowAnyOrigin,
		// Compression stays off: permessage-deflate costs a compressor per
		// connection (tens of KB) and CPU per frame for messages that are
		// mostly small, and mixing secrets with attacker-chosen text in one
		// compressed stream invites CRIME/BREACH-style attacks.
		CompressionMode: websocket.CompressionDisabled,
		OnPingReceived: func(ctx context.Context, payload []byte) bool {
			return fc.onPing == nil || fc.onPing(ctx, payload)
		},
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
	remote := req.RemoteAddr
	go func() {
		defer r.active.Done()
		if err := r.serveConn(r.base, conn, o, fc); err != nil {
			r.opts.Logger.Debug("notify: connection ended", "remote", remote, "err", err)
		}
	}()
}

// ProbeParam is the query parameter that makes a GET a probe: the Handler
// runs every check an upgrade or a stream request with the same URL and
// headers would pass, upgrades nothing, and answers 204 No Content if the
// connection would be accepted, or the status (and one-line body) it
// would be refused with: 401 or 403 from Options.Authorize or
// Options.AuthorizeTopic, 429, 503, 400. (403 for a foreign Origin too,
// but without CORS headers a page cannot read that one.)
//
// Browsers hide a refused upgrade's status, and an EventSource's, from
// scripts: a refusal looks like a network failure. So after a connection
// fails before it opens, notify.js fetches the same URL with probe=1 and
// stops retrying on 401 or 403 (state "unauthorized") rather than retrying
// for ever with credentials the server will never accept. The trade-off:
// one more request, only after a failure, which runs Options.Authorize
// once more; it tells the client nothing an upgrade attempt would not
// (the same statuses, for the same checks), and upgrades no one.
//
// A probe is neither counted in [Stats].Rejected nor logged: the attempt
// that failed before it was. Like a stream's answer, a probe's answer from
// an allowed Origin carries CORS headers (with credentials), so that a page
// of another allowed origin can read its status.
const ProbeParam = "probe"

// isProbe reports whether req is a probe (see ProbeParam).
func isProbe(req *http.Request) bool {
	return req.Method == http.MethodGet && !headerHasToken(req.Header, "Upgrade", "websocket") &&
		req.URL.Query().Get(ProbeParam) == "1"
}

// serveProbe answers a probe.
func (r *Registry) serveProbe(w http.ResponseWriter, req *http.Request) {
	h := w.Header()
	r.allowOrigin(h, req)
	h.Set("Cache-Control", "no-store")
	_, status, err := r.check(req, true)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case status == http.StatusInternalServerError:
		http.Error(w, "notify: internal error", status) // contain logged it
	default:
		http.Error(w, err.Error(), status)
	}
}

// allowOrigin lets a page of another origin read the answer to req, if its
// Origin is one the Registry allows (the check the request passes before
// any other that may refuse it): Access-Control-Allow-Origin with that
// origin, Access-Control-Allow-Credentials and Vary: Origin. A refusal
// after the origin check (401 from Authorize, 429, 503) then reaches a
// cross-origin page's probe as a status, not as a network error. A
// same-origin request without an Origin header gets none of them.
func (r *Registry) allowOrigin(h http.Header, req *http.Request) {
	origin := req.Header.Get("Origin")
	if origin == "" || (!r.opts.InsecureAllowAnyOrigin && checkOrigin(req, r.opts.OriginPatterns) != nil) {
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
}

// check makes every check of an upgrade request, or of a request for a
// Server-Sent Events stream, in the documented order, and returns the
// connection's options or the status to refuse it with.
func (r *Registry) check(req *http.Request, stream bool) (ConnOptions, int, error) {
	if r.isClosed() {
		return ConnOptions{}, http.StatusServiceUnavailable, ErrClosed
	}
	if err := r.checkCapacity(); err != nil {
		return ConnOptions{}, http.StatusServiceUnavailable, err
	}
	if !stream {
		if status, err := checkHandshake(req); err != nil {
			return ConnOptions{}, status, err
		}
	}
	if !r.opts.InsecureAllowAnyOrigin {
		if err := checkOrigin(req, r.opts.OriginPatterns); err != nil {
			return ConnOptions{}, http.StatusForbidden, err
		}
	}
	q, err := ParseQuery(req.URL.Query())
	if err != nil {
		return ConnOptions{}, http.StatusBadRequest, err
	}
	o := *q
	if stream {
		if !o.resumable() { // the query's since wins over Last-Event-ID
			if o.Resume, err = parseLastEventID(req.Header.Get("Last-Event-ID")); err != nil {
				return ConnOptions{}, http.StatusBadRequest, err
			}
		}
		if !o.resumable() { // every stream starts with a hello, and hears of gaps
			o.ResumeNow = true
		}
	}
	o.RemoteAddr = remoteIP(req)
	var status int
	if o.Identity, status, err = r.authorize(req); err != nil {
		return ConnOptions{}, status, err
	}
	if err := r.checkTopics(req.Context(), o.Identity, o.Topics); err != nil {
		switch {
		case errors.Is(err, errHookPanic):
			return ConnOptions{}, http.StatusInternalServerError, err
		case errors.Is(err, ErrForbidden):
			return ConnOptions{}, http.StatusForbidden, err
		}
		return ConnOptions{}, http.StatusBadRequest, err
	}
	if status, err := r.checkLimits(o); err != nil {
		return ConnOptions{}, status, err
	}
	return o, 0, nil
}

// checkHandshake checks the headers of a WebSocket handshake (RFC 6455,
// section 4.2.1) the way coder/websocket will, so that the statuses are the
// documented ones and Authorize never runs for a request that cannot be
// upgraded.
func checkHandshake(req *http.Request) (int, error) {
	if !headerHasToken(req.Header, "Upgrade", "websocket") {
		return http.StatusBadRequest, errors.New("notify: expected a WebSocket upgrade request")
	}
	if req.Method != http.MethodGet || !req.ProtoAtLeast(1, 1) || !headerHasToken(req.Header, "Connection", "upgrade") {
		return http.StatusUpgradeRequired, errors.New("notify: a WebSocket upgrade must be an HTTP/1.1 GET with Connection: Upgrade")
	}
	if req.Header.Get("Sec-WebSocket-Version") != "13" {
		return http.StatusUpgradeRequired, errors.New("notify: Sec-WebSocket-Version must be 13")
	}
	keys := req.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, errors.New("notify: a WebSocket upgrade needs one Sec-WebSocket-Key")
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, errors.New("notify: malformed Sec-WebSocket-Key")
	}
	return 0, nil
}

// authorize runs Options.Authorize.
func (r *Registry) authorize(req *http.Request) (Identity, int, error) {
	hook := r.opts.Authorize
	if hook == nil {
		return Identity{}, 0, nil
	}
	var id Identity
	var err error
	if perr := r.contain("Authorize", func() { id, err = hook(req) }, "remote", req.RemoteAddr); perr != nil {
		return Identity{}, http.StatusInternalServerError, perr
	}
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

// checkCapacity applies Options.MaxConnections before anything costly runs.
func (r *Registry) checkCapacity() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if max := r.opts.MaxConnections; max > 0 && len(r.clients) >= max {
		return errTooManyConns
	}
	return nil
}

// checkLimits applies the connection limits once the identity is known;
// register applies them again, atomically, after the upgrade.
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

// logRefusal logs a refused upgrade or stream (see warnThrottled). Query
// strings are never logged, since they may carry tokens.
func (r *Registry) logRefusal(status int, req *http.Request, err error) {
	if status == http.StatusInternalServerError {
		return // contain logged it, with the stack
	}
	msg := "notify: upgrade refused"
	if isEventStream(req) {
		msg = "notify: event stream refused"
	}
	r.warnThrottled(status, msg,
		"status", status, "remote", req.RemoteAddr, "path", req.URL.Path, "origin", req.Header.Get("Origin"), "err", err)
}

// ParseQuery reads a connection's options from an upgrade URL's query:
//
//	topic=NAME   subscribe to NAME (repeatable; see ValidTopic)
//	since=SEQ    resume after SEQ, a decimal seq (ConnOptions.Resume), or
//	             since=now for live messages only (ConnOptions.ResumeNow);
//	             either way the client first gets notify.hello
//	epoch=EPOCH  the epoch SEQ belongs to (from notify.hello or Position;
//	             ignored with since=now)
//	keepalive=MS ask for a notify.keepalive every MS milliseconds (see
//	             ConnOptions.KeepAlive); 0 or absent: none
//
// Other parameters are ignored, so the URL may carry the application's own,
// such as the access_token that notify.js's token option adds for
// Options.Authorize to read. It returns an error for a bad topic name, a
// since that is neither a number nor "now", an epoch without since, a
// keepalive that is not a number of milliseconds, or a repeated since,
// epoch or keepalive.
// Callers that accept connections themselves can pass its result to
// [Registry.Add].
func ParseQuery(q url.Values) (*ConnOptions, error) {
	o := new(ConnOptions)
	for _, t := range q["topic"] {
		if !ValidTopic(t) {
			return nil, fmt.Errorf("%w: invalid topic name %q", errTopic, t)
		}
		o.Topics = append(o.Topics, t)
	}
	since, epoch := q["since"], q["epoch"]
	if len(since) > 1 || len(epoch) > 1 {
		return nil, errors.New("notify: since and epoch may be given once")
	}
	if len(epoch) == 1 && len(since) == 0 {
		return nil, errors.New("notify: epoch needs since")
	}
	if len(since) == 1 {
		if since[0] == "now" {
			o.ResumeNow = true
		} else {
			n, err := strconv.ParseUint(since[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("notify: since must be a sequence number or \"now\", not %q", since[0])
			}
			o.Resume = &Position{Seq: n}
		}
	}
	if len(epoch) == 1 {
		if len(epoch[0]) > 64 {
			return nil, errors.New("notify: epoch too long")
		}
		if o.Resume != nil {
			o.Resume.Epoch = epoch[0]
		}
	}
	if ka := q["keepalive"]; len(ka) > 0 {
		ms, err := strconv.ParseUint(ka[0], 10, 32)
		if err != nil || len(ka) > 1 {
			return nil, errors.New("notify: keepalive must be given once, in milliseconds")
		}
		o.KeepAlive = time.Duration(ms) * time.Millisecond
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
