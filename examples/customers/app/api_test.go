package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify/examples/customers/app"
)

func TestCustomersLifecycle(t *testing.T) {
	t.Parallel()
	s := newSite(t)

	if got := decode[[]app.Customer](t, s.send(t, "GET", "/api/customers", "", http.StatusOK).body); len(got) != 0 {
		t.Fatalf("new store lists %v, want none", got)
	}

	r := s.send(t, "POST", "/api/customers", `{"name":"  Ada Lovelace ","email":"ada@example.com"}`, http.StatusCreated)
	ada := app.Customer{ID: 1, Name: "Ada Lovelace", Email: "ada@example.com"} // name trimmed
	if diff := cmp.Diff(ada, decode[app.Customer](t, r.body)); diff != "" {
		t.Errorf("POST answered (-want +got):\n%s", diff)
	}
	if got := r.header.Get("Location"); got != "customers/1" {
		t.Errorf("Location %q, want customers/1 (relative to /api/customers)", got)
	}
	r = s.send(t, "POST", "/api/customers", `{"name":"Grace Hopper","email":"grace@example.com"}`, http.StatusCreated)
	grace := decode[app.Customer](t, r.body)

	if diff := cmp.Diff(ada, decode[app.Customer](t, s.send(t, "GET", "/api/customers/1", "", http.StatusOK).body)); diff != "" {
		t.Errorf("GET one (-want +got):\n%s", diff)
	}

	r = s.send(t, "PUT", "/api/customers/1", `{"name":"Ada King","email":"ada@example.org"}`, http.StatusOK)
	ada = app.Customer{ID: 1, Name: "Ada King", Email: "ada@example.org"}
	if diff := cmp.Diff(ada, decode[app.Customer](t, r.body)); diff != "" {
		t.Errorf("PUT answered (-want +got):\n%s", diff)
	}

	r = s.send(t, "GET", "/api/customers", "", http.StatusOK)
	if diff := cmp.Diff([]app.Customer{ada, grace}, decode[[]app.Customer](t, r.body)); diff != "" {
		t.Errorf("GET list (-want +got):\n%s", diff)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}

	r = s.send(t, "DELETE", "/api/customers/2", "", http.StatusOK)
	if diff := cmp.Diff(grace, decode[app.Customer](t, r.body)); diff != "" {
		t.Errorf("DELETE answered (-want +got):\n%s", diff)
	}
	s.send(t, "GET", "/api/customers/2", "", http.StatusNotFound)
	r = s.send(t, "GET", "/api/customers", "", http.StatusOK)
	if diff := cmp.Diff([]app.Customer{ada}, decode[[]app.Customer](t, r.body)); diff != "" {
		t.Errorf("GET list after DELETE (-want +got):\n%s", diff)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	s.send(t, "POST", "/api/customers", `{"name":"Ada","email":"ada@example.com"}`, http.StatusCreated) // id 1

	const ok = `{"name":"Ada","email":"ada@example.com"}`
	js := "application/json"
	tests := []struct {
		name                    string
		method, path, ctype, in string
		status                  int
		err                     string
		allow                   string
	}{
		{"empty body", "POST", "/api/customers", js, "", 400, "request body is empty", ""},
		{"malformed", "POST", "/api/customers", js, `{"name":"Ada",}`, 400, "malformed JSON at byte 15", ""},
		{"truncated", "POST", "/api/customers", js, `{"name":"Ada"`, 400, "malformed JSON: unexpected end of body", ""},
		{"not an object", "POST", "/api/customers", js, `["Ada"]`, 400, "request body must be a JSON object", ""},
		{"two objects", "POST", "/api/customers", js, ok + ok, 400, "request body must hold a single JSON object", ""},
		{"unknown field", "POST", "/api/customers", js, `{"name":"Ada","email":"ada@example.com","age":36}`, 400, `unknown field "age"`, ""},
		{"id in body", "PUT", "/api/customers/1", js, `{"id":2,"name":"Ada","email":"ada@example.com"}`, 400, `unknown field "id"`, ""},
		{"wrong type", "POST", "/api/customers", js, `{"name":42,"email":"ada@example.com"}`, 400, `field "name" must be a string, not a number`, ""},
		{"no name", "POST", "/api/customers", js, `{"email":"ada@example.com"}`, 400, "name is required", ""},
		{"blank name", "PUT", "/api/customers/1", js, `{"name":"  ","email":"ada@example.com"}`, 400, "name is required", ""},
		{"long name", "POST", "/api/customers", js, `{"name":"` + strings.Repeat("é", app.MaxNameLen+1) + `","email":"ada@example.com"}`, 400, "name is longer than 100 characters", ""},
		{"control in name", "POST", "/api/customers", js, `{"name":"Ada\u0007","email":"ada@example.com"}`, 400, "name must not contain control characters", ""},
		{"no email", "POST", "/api/customers", js, `{"name":"Ada"}`, 400, "email is required", ""},
		{"long email", "POST", "/api/customers", js, `{"name":"Ada","email":"` + strings.Repeat("a", app.MaxEmailLen-11) + `@example.com"}`, 400, "email is longer than 254 bytes", ""},
		{"bad email", "POST", "/api/customers", js, `{"name":"Ada","email":"ada at example.com"}`, 400, "email is not a valid address", ""},
		{"email with display name", "POST", "/api/customers", js, `{"name":"Ada","email":"Ada <ada@example.com>"}`, 400, "email is not a valid address", ""},
		{"body too large", "POST", "/api/customers", js, `{"name":"` + strings.Repeat("a", app.MaxBodyBytes) + `"}`, 413, "request body is larger than 4096 bytes", ""},
		{"no content type", "POST", "/api/customers", "", ok, 415, "Content-Type must be application/json", ""},
		{"form content type", "PUT", "/api/customers/1", "text/plain", ok, 415, "Content-Type must be application/json", ""},
		{"id not a number", "GET", "/api/customers/abc", "", "", 400, `invalid customer id "abc"`, ""},
		{"id zero", "PUT", "/api/customers/0", js, ok, 400, `invalid customer id "0"`, ""},
		{"id negative", "DELETE", "/api/customers/-1", "", "", 400, `invalid customer id "-1"`, ""},
		{"id not canonical", "GET", "/api/customers/01", "", "", 400, `invalid customer id "01"`, ""},
		{"id overflows", "GET", "/api/customers/9223372036854775808", "", "", 400, `invalid customer id "9223372036854775808"`, ""},
		{"get unknown", "GET", "/api/customers/99", "", "", 404, "customer 99 not found", ""},
		{"put unknown", "PUT", "/api/customers/99", js, ok, 404, "customer 99 not found", ""},
		{"delete unknown", "DELETE", "/api/customers/99", "", "", 404, "customer 99 not found", ""},
		{"unknown path", "GET", "/api/orders", "", "", 404, "no such endpoint", ""},
		{"method on list", "DELETE", "/api/customers", "", "", 405, "method DELETE not allowed; use GET, POST", "GET, POST"},
		{"method on one", "PATCH", "/api/customers/1", js, ok, 405, "method PATCH not allowed; use GET, PUT, DELETE", "GET, PUT, DELETE"},
	}
	type answer struct {
		Status      int
		ContentType string
		Allow       string
		Error       string
	}
	t.Run("group", func(t *testing.T) { // returns once the parallel subtests are done
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				r := s.request(t, tt.method, tt.path, tt.ctype, tt.in)
				want := answer{tt.status, "application/json", tt.allow, tt.err}
				got := answer{r.status, r.header.Get("Content-Type"), r.header.Get("Allow"), decode[struct{ Error string }](t, r.body).Error}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s %s (-want +got):\n%s", tt.method, tt.path, diff)
				}
			})
		}
	})
	// None of those changed anything.
	r := s.send(t, "GET", "/api/customers/1", "", http.StatusOK)
	if diff := cmp.Diff(app.Customer{ID: 1, Name: "Ada", Email: "ada@example.com"}, decode[app.Customer](t, r.body)); diff != "" {
		t.Errorf("customer 1 after the failed requests (-want +got):\n%s", diff)
	}
}

func TestPageScriptAndSocketEndpoint(t *testing.T) {
	t.Parallel()
	s := newSite(t)

	page := s.send(t, "GET", "/", "", http.StatusOK)
	if got := page.header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("page Content-Type %q", got)
	}
	// The hooks the browser test relies on, and the client it loads.
	for _, hook := range []string{`id="customers"`, `id="state"`, `id="name"`, `id="email"`, `id="add"`, `id="offline"`, `id="log"`, "li.dataset.kind", `from "./notify.js"`, `connect("ws"`, "tr.dataset.id"} {
		if !strings.Contains(page.body, hook) {
			t.Errorf("page lacks %s", hook)
		}
	}

	js := s.send(t, "GET", "/notify.js", "", http.StatusOK)
	if got := js.header.Get("Content-Type"); got != "text/javascript; charset=utf-8" {
		t.Errorf("notify.js Content-Type %q", got)
	}
	if !strings.Contains(js.body, "export function connect") {
		t.Errorf("notify.js does not export connect")
	}

	// A plain GET is not an upgrade, as in the original controller.
	s.send(t, "GET", "/ws", "", http.StatusBadRequest)
	s.send(t, "GET", "/nothing-here", "", http.StatusNotFound)
}
