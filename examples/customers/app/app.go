// Package app is the customers demo of github.com/wsnotify/notify: a small
// REST API whose every change is broadcast to the browsers connected over
// WebSocket, and a page that shows the list live.
//
// It lives in its own package so that tests in other modules can mount
// it: [New] returns the whole site as one http.Handler.
package app

import (
	"context"
	_ "embed"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/wsnotify/notify"
)

// New returns the demo's handler, serving:
//
//	GET    /                    the live page (index.html, embedded)
//	GET    /notify.js           the JavaScript client, [notify.ScriptHandler]
//	GET    /ws                  the WebSocket endpoint, reg's [notify.Registry.Handler]
//	GET    /api/customers       every customer, plus the headers Notify-Epoch and Notify-Seq
//	POST   /api/customers       create one from {"name":…,"email":…}: 201
//	GET    /api/customers/{id}  one customer
//	PUT    /api/customers/{id}  replace its name and email: 200
//	DELETE /api/customers/{id}  delete it: 200 with the deleted customer
//
// After each change the store accepted, and only then, it broadcasts a
// [notify.SocketMessage] with no topic, so every connection hears it:
// Type "customer.created", "customer.updated" or "customer.deleted", and
// Data the [Customer] as stored (for a deletion, as it was just before).
// A store that implements [ChangeNotifier] announces its changes itself,
// in the change's own transaction, and New then broadcasts nothing.
//
// Errors are JSON, {"error":"…"}: 400 for a bad ID or a body that is not
// one JSON object with exactly the fields name and email, valid as
// described at [MaxNameLen] and [MaxEmailLen]; 404 for an unknown ID or
// API path; 405 (with Allow) for a wrong method; 413 for a body over
// [MaxBodyBytes]; 415 unless the body is sent as application/json, which
// keeps cross-site HTML forms from posting to the API; 500 when the store
// fails.
//
// New does not own reg or store: the caller shuts reg down (see the
// customers command). Every page asset is addressed relative to the page,
// so the handler also works mounted under a prefix with http.StripPrefix.
func New(reg *notify.Registry, store Store) http.Handler {
	a := &api{reg: reg, store: store}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", servePage)
	mux.Handle("GET /notify.js", notify.ScriptHandler())
	mux.Handle("GET /ws", reg.Handler())

	mux.HandleFunc("GET /api/customers", a.list)
	mux.HandleFunc("POST /api/customers", a.create)
	mux.HandleFunc("GET /api/customers/{id}", a.get)
	mux.HandleFunc("PUT /api/customers/{id}", a.update)
	mux.HandleFunc("DELETE /api/customers/{id}", a.delete)
	// The mux would answer a wrong method or path with plain text; these
	// less specific patterns catch what the ones above do not, so API
	// clients always get JSON.
	mux.HandleFunc("/api/customers", methodNotAllowed("GET, POST"))
	mux.HandleFunc("/api/customers/{id}", methodNotAllowed("GET, PUT, DELETE"))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return mux
}

//go:embed index.html
var page []byte

func servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(page)
}

// api holds the handlers of /api/customers.
type api struct {
	reg   *notify.Registry
	store Store

	// mu makes each change and its broadcast one step, so that the order
	// of sequence numbers is the order in which the store applied the
	// changes. Without it, an update and a delete of one customer racing
	// in two requests could be saved as update, delete but broadcast as
	// delete, update, and every page would bring the customer back. A
	// database-backed service gets the same guarantee from a row lock or
	// a version column instead.
	mu sync.Mutex
}

// list answers the customers and the stream position they correspond to.
//
// The position is read before the store, and the order matters. Each
// change is saved before it is broadcast, so a message with seq <= the
// position belongs to a change saved before the position was read, and
// hence before the snapshot: it is in the list. Every change the list
// might miss is broadcast later, with a larger seq, and the page, which
// connects with ?since=<Notify-Seq>&epoch=<Notify-Epoch>, has it replayed.
// Read the other way round, a change saved and broadcast between the two
// reads would be in neither the list nor the replay.
func (a *api) list(w http.ResponseWriter, r *http.Request) {
	pos := a.reg.Position()
	customers, err := a.store.List(r.Context())
	if err != nil {
		storeError(w, r, err)
		return
	}
	pos.SetHeader(w.Header())
	writeJSON(w, http.StatusOK, customers)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	c, err := a.store.Get(r.Context(), id)
	if err != nil {
		storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	in, ok := readCustomer(w, r)
	if !ok {
		return
	}
	c, err := a.change(r, "customer.created", func() (Customer, error) {
		return a.store.Create(r.Context(), in)
	})
	if err != nil {
		storeError(w, r, err)
		return
	}
	// Relative to /api/customers, so it stays right under a path prefix.
	w.Header().Set("Location", "customers/"+strconv.FormatInt(c.ID, 10))
	writeJSON(w, http.StatusCreated, c)
}

func (a *api) update(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	in, ok := readCustomer(w, r)
	if !ok {
		return
	}
	in.ID = id
	c, err := a.change(r, "customer.updated", func() (Customer, error) {
		return a.store.Update(r.Context(), in)
	})
	if err != nil {
		storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	c, err := a.change(r, "customer.deleted", func() (Customer, error) {
		return a.store.Delete(r.Context(), id)
	})
	if err != nil {
		storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// change applies one change to the store and, only if it succeeded,
// broadcasts it as typ with the customer do returned.
func (a *api) change(r *http.Request, typ string, do func() (Customer, error)) (Customer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, err := do()
	if err != nil {
		return Customer{}, err
	}
	if n, ok := a.store.(ChangeNotifier); ok && n.NotifiesChanges() {
		return c, nil // announced in the change's own transaction
	}
	// The change is saved, so announce it even if the client that asked
	// for it has gone away meanwhile: hence a context without its cancel.
	msg := notify.SocketMessage{Type: typ, Data: c}
	if err := a.reg.Broadcast(context.WithoutCancel(r.Context()), msg); err != nil {
		// The change stands. With the default MemoryBroker only a closed
		// registry gets here: the server is stopping, and pages that
		// reconnect to the next process see a new epoch and reload. With
		// a remote broker the notification would be lost; a production
		// service would retry, or save it in an outbox with the change.
		slog.WarnContext(r.Context(), "customers: broadcast failed", "type", typ, "id", c.ID, "err", err)
	}
	return c, nil
}
