package e2e_test

import (
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: every server,
// registry, proxy and browser a test starts is stopped by its cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// chromium returns the path of the Chromium binary. When there is none the
// test is skipped, loudly, except under CI=true, where it fails: CI installs
// chromium, so a missing one there is a broken setup, not a reason to pass.
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	msg := "chromium not found on PATH (" + err.Error() + "); install it with: apt-get install -y chromium"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("SKIPPING browser test: " + msg)
	return ""
}
