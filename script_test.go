package notify_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
)

// TestScriptHandlerTypes checks that ScriptHandler serves notify.d.ts for
// a path ending in .d.ts, with its content type, and notify.js otherwise.
func TestScriptHandlerTypes(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(notify.ScriptHandler())
	defer srv.Close()
	for path, want := range map[string]struct{ ctype, has string }{
		"/notify.d.ts": {"application/typescript", "export declare function connect("},
		"/notify.js":   {"text/javascript", "export function connect("},
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), want.ctype) || !strings.Contains(string(body), want.has) {
			t.Errorf("GET %s: %d %q, %d bytes; want %s with %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), want.ctype, want.has)
		}
	}
}

// matches returns the sorted, distinct first groups of re's matches in s.
func matches(re string, s string) []string {
	var out []string
	for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// section returns the part of s from the line starting with start to the
// next line that is exactly "}".
func section(t *testing.T, s, start string) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("notify.d.ts has no %q", start)
	}
	j := strings.Index(s[i:], "\n}\n")
	return s[i : i+j]
}

// TestTypesMatchScript checks notify.d.ts against notify.js, so that they
// cannot drift apart: the options notify.js reads (opts.NAME) are those
// ConnectOptions declares, the public methods of NotifyClient (those with
// a /** doc comment) are those the declared class has, and the states
// notify.js enters are those the State type lists. (e2e's TestTypeScript
// then type-checks a usage file against the declarations with tsc.)
func TestTypesMatchScript(t *testing.T) {
	t.Parallel()
	js, err := os.ReadFile("notify.js")
	if err != nil {
		t.Fatal(err)
	}
	dts, err := os.ReadFile("notify.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	code, decl := string(js), string(dts)

	opts := matches(`\bopts\.(\w+)`, code)
	declOpts := matches(`(?m)^  (\w+)\?:`, section(t, decl, "export interface ConnectOptions"))
	if diff := cmp.Diff(opts, declOpts); diff != "" {
		t.Errorf("options: notify.js (-) and ConnectOptions (+):\n%s", diff)
	}

	class := code[strings.Index(code, "export class NotifyClient"):]
	methods := matches(`\*/\n  (\w+)\(`, class)
	declMethods := slices.DeleteFunc(matches(`(?m)^  (\w+)(?:<[^>]*>)?\(`, section(t, decl, "export declare class NotifyClient")),
		func(m string) bool { return m == "constructor" })
	if diff := cmp.Diff(methods, declMethods); diff != "" {
		t.Errorf("methods: notify.js (-) and NotifyClient (+):\n%s", diff)
	}

	states := matches(`setState\("(\w+)"\)`, code)
	states = append(states, matches(`this\.state = "(\w+)"`, code)...)
	slices.Sort(states)
	states = slices.Compact(states)
	stateType := decl[strings.Index(decl, "export type State ="):]
	declStates := matches(`\| "(\w+)"`, stateType[:strings.Index(stateType, ";\n")])
	if diff := cmp.Diff(states, declStates); diff != "" {
		t.Errorf("states: notify.js (-) and State (+):\n%s", diff)
	}
}
