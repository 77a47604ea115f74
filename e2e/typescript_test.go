package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTypeScript type-checks notify.d.ts, the declarations ScriptHandler
// serves beside notify.js, with tsc --noEmit against typescript/usage.ts,
// a typed page that uses every option, event, state and method, and
// expects a few misuses to be rejected. TypeScript's version is pinned in
// typescript/package.json and package-lock.json; npm ci installs it into
// typescript/node_modules unless that version is there already. (The root
// module's TestTypesMatchScript checks the declarations against
// notify.js.) Without node and npm the test is skipped, loudly, except
// under CI=true, where it fails: .ci/run installs them.
func TestTypeScript(t *testing.T) {
	t.Parallel()
	var missing []string
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		msg := "node and npm are needed to type-check notify.d.ts; install them with: apt-get install -y nodejs npm"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING the TypeScript check: " + msg)
	}
	dir := "typescript"
	var pkg struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	var installed struct {
		Version string `json:"version"`
	}
	readJSON(t, filepath.Join(dir, "package.json"), &pkg)
	want := pkg.DevDependencies["typescript"]
	if b, err := os.ReadFile(filepath.Join(dir, "node_modules", "typescript", "package.json")); err != nil || json.Unmarshal(b, &installed) != nil || installed.Version != want {
		runIn(t, dir, "npm", "ci", "--no-audit", "--no-fund")
	}
	out := runIn(t, dir, "node", filepath.Join("node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", ".", "--listFiles")
	var ours []string
	for _, f := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(f, "node_modules") {
			ours = append(ours, f)
		}
	}
	t.Logf("tsc %s checked %s", want, strings.Join(ours, ", "))
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// runIn runs a command in dir and returns its output; a failure ends the test
// with the output.
func runIn(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}
