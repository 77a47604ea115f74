package app_test

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
)

func TestChangesReachEveryClient(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	// Plain clients, as `new WebSocket(".../ws")` in a browser: no query.
	a := s.dial(t, "")
	b := s.dial(t, "")

	// Failed changes broadcast nothing...
	s.send(t, "POST", "/api/customers", `{"name":""}`, http.StatusBadRequest)
	s.send(t, "PUT", "/api/customers/1", `{"name":"Ada","email":"ada@example.com"}`, http.StatusNotFound)
	s.send(t, "DELETE", "/api/customers/1", "", http.StatusNotFound)
	// ...successful ones broadcast exactly one message each.
	s.send(t, "POST", "/api/customers", `{"name":"Ada","email":"ada@example.com"}`, http.StatusCreated)
	s.send(t, "PUT", "/api/customers/1", `{"name":"Ada King","email":"ada@example.com"}`, http.StatusOK)
	s.send(t, "DELETE", "/api/customers/1", "", http.StatusOK)

	want := []event{
		{1, "customer.created", app.Customer{ID: 1, Name: "Ada", Email: "ada@example.com"}},
		{2, "customer.updated", app.Customer{ID: 1, Name: "Ada King", Email: "ada@example.com"}},
		{3, "customer.deleted", app.Customer{ID: 1, Name: "Ada King", Email: "ada@example.com"}},
	}
	if diff := cmp.Diff(want, read(t, a, 3)); diff != "" {
		t.Errorf("client a (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, read(t, b, 3)); diff != "" {
		t.Errorf("client b (-want +got):\n%s", diff)
	}
}

// TestListHandoff is the REST→WebSocket handoff the page performs: a client
// that connects with the position of a GET /api/customers response receives
// exactly the changes the list does not hold.
func TestListHandoff(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	s.send(t, "POST", "/api/customers", `{"name":"Ada","email":"ada@example.com"}`, http.StatusCreated)

	r := s.send(t, "GET", "/api/customers", "", http.StatusOK)
	epoch, seq := r.header.Get("Notify-Epoch"), r.header.Get("Notify-Seq")
	if epoch == "" || seq != "1" {
		t.Fatalf("GET list: Notify-Epoch %q, Notify-Seq %q; want an epoch and seq 1", epoch, seq)
	}
	if got := decode[[]app.Customer](t, r.body); len(got) != 1 {
		t.Fatalf("GET list = %v, want Ada alone", got)
	}

	// A change between the list and the socket is replayed...
	s.send(t, "POST", "/api/customers", `{"name":"Grace","email":"grace@example.com"}`, http.StatusCreated)
	c := s.dial(t, "?"+url.Values{"since": {seq}, "epoch": {epoch}}.Encode())
	// ...and those after it arrive live.
	s.send(t, "PUT", "/api/customers/2", `{"name":"Grace Hopper","email":"grace@example.com"}`, http.StatusOK)
	s.send(t, "DELETE", "/api/customers/1", "", http.StatusOK)

	want := []event{
		{0, notify.TypeHello, notify.Position{Epoch: epoch, Seq: 2}},
		{2, "customer.created", app.Customer{ID: 2, Name: "Grace", Email: "grace@example.com"}},
		{3, "customer.updated", app.Customer{ID: 2, Name: "Grace Hopper", Email: "grace@example.com"}},
		{4, "customer.deleted", app.Customer{ID: 1, Name: "Ada", Email: "ada@example.com"}},
	}
	if diff := cmp.Diff(want, read(t, c, len(want))); diff != "" {
		t.Errorf("resumed client (-want +got):\n%s", diff)
	}
}

// TestNotificationOrderIsStoreOrder races updates of one customer: the last
// notification must carry what the store finally holds, or pages that
// apply notifications in order would show something else.
func TestNotificationOrderIsStoreOrder(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	c := s.dial(t, "")
	s.send(t, "POST", "/api/customers", `{"name":"Ada","email":"ada@example.com"}`, http.StatusCreated)

	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"name":"Ada %d","email":"ada@example.com"}`, i)
			if r, err := s.try("PUT", "/api/customers/1", "application/json", body); err != nil || r.status != http.StatusOK {
				t.Errorf("PUT: status %d, body %s, error %v", r.status, r.body, err)
			}
		}()
	}
	wg.Wait()

	events := read(t, c, 1+n)
	last := events[len(events)-1]
	stored := decode[app.Customer](t, s.send(t, "GET", "/api/customers/1", "", http.StatusOK).body)
	if diff := cmp.Diff(event{1 + n, "customer.updated", stored}, last); diff != "" {
		t.Errorf("last notification (-stored +got):\n%s", diff)
	}
	for i, e := range events {
		if e.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, e.Seq)
		}
	}
}
