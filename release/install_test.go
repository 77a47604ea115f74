package release

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"go/format"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

// version is the version being prepared: the root is tagged version and
// each nested module users import dir/version, at the same commit. Nested
// modules require the root at this version (see CONTRIBUTING.md for the
// bump at each release).
const version = "v0.1.0"

// rootPath is the root module's path; nested modules' paths extend it with
// their directory.
const rootPath = "github.com/wsnotify/notify"

// internal names the nested modules nobody imports: they are not packed or
// installed.
var internal = map[string]bool{"bench": true, "e2e": true, "release": true}

// A goModule is one module of the repository.
type goModule struct {
	path string // module path
	dir  string // absolute directory
	rel  string // directory relative to the root, slash-separated; "." for the root
}

// TestInstallFromProxy installs every importable module of the working tree,
// at version, from a module proxy, as a user would, and builds the programs
// its README shows.
func TestInstallFromProxy(t *testing.T) {
	t.Parallel()
	start := time.Now()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	mods := importableModules(t, root)

	proxy := t.TempDir()
	for _, m := range mods {
		if err := publish(proxy, m); err != nil {
			t.Errorf("module %s (%s) cannot be packed for a module proxy as %s@%s:\n%v", m.path, m.rel, m.path, version, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("packed %d modules at %s in %v", len(mods), version, time.Since(start).Round(time.Millisecond))

	// Dependencies come from this machine's module cache if it has them,
	// else from the proxies the go command uses here.
	outer := goEnv(t, "GOMODCACHE", "GOPROXY")
	goproxy := fileURL(proxy) + "," + fileURL(filepath.Join(outer["GOMODCACHE"], "cache", "download"))
	if p := outer["GOPROXY"]; p != "" {
		goproxy += "," + p
	}

	t.Cleanup(func() { t.Logf("install check took %v", time.Since(start).Round(time.Millisecond)) })
	for _, m := range mods {
		t.Run(m.rel, func(t *testing.T) {
			t.Parallel()
			install(t, m, goproxy)
		})
	}
}

// importableModules finds every go.mod under root and returns the root
// module and the nested modules not in internal.
func importableModules(t *testing.T, root string) []goModule {
	t.Helper()
	var mods []goModule
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			// The go command ignores these directories; so do we.
			name := d.Name()
			if p != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() != "go.mod" {
			return nil
		}
		dir := filepath.Dir(p)
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if internal[rel] {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		want := rootPath
		if rel != "." {
			want = rootPath + "/" + rel
		}
		if got := modfile.ModulePath(data); got != want {
			t.Errorf("%s declares module %q; in this repository it must be %q (or be listed as internal)", p, got, want)
			return nil
		}
		mods = append(mods, goModule{path: want, dir: dir, rel: rel})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) == 0 || mods[0].rel != "." {
		t.Fatalf("no go.mod for %s in %s", rootPath, root)
	}
	return mods
}

// publish adds m at version to the file-system module proxy in dir, in the
// layout GOPROXY=file://dir expects: <escaped path>/@v/{list,V.info,V.mod,V.zip}.
func publish(dir string, m goModule) error {
	esc, err := module.EscapePath(m.path)
	if err != nil {
		return err
	}
	v := filepath.Join(dir, filepath.FromSlash(esc), "@v")
	if err := os.MkdirAll(v, 0o777); err != nil {
		return err
	}
	gomod, err := os.ReadFile(filepath.Join(m.dir, "go.mod"))
	if err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return err
	}
	var zipped bytes.Buffer
	if err := zip.CreateFromDir(&zipped, module.Version{Path: m.path, Version: version}, m.dir); err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"list":            []byte(version + "\n"),
		version + ".info": info,
		version + ".mod":  gomod,
		version + ".zip":  zipped.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(v, name), data, 0o666); err != nil {
			return err
		}
	}
	return nil
}

// install does what a user of m does, in a fresh module with a fresh module
// cache: runs the go get line of m's README, writes each program the README
// shows, and builds and vets them.
func install(t *testing.T, m goModule, goproxy string) {
	readmePath := filepath.Join(m.dir, "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	gets, programs := readmeCode(readme, m.path)
	if len(gets) == 0 {
		t.Fatalf("%s has no `go get %s` line for users to run", readmePath, m.path)
	}

	work := t.TempDir()
	env := append(os.Environ(),
		"GOENV=off",  // no settings from this machine's go env file
		"GOWORK=off", // a user has no workspace
		"GOTOOLCHAIN=local",
		"GOMODCACHE="+t.TempDir(), // nothing cached from earlier builds of the same version
		// -modcacherw: a writable cache, so that t.TempDir can remove it.
		// (Not -trimpath, which would make dependencies' builds cacheable
		// across runs but costs a rebuild of the standard library.)
		"GOFLAGS=-mod=mod -modcacherw",
		"GOPROXY="+goproxy,
		// The modules being released are in no checksum database yet;
		// everything else is checked as usual.
		"GONOSUMDB="+rootPath,
		"GOPRIVATE=",
		"GONOPROXY=",
	)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = work
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("installing %s@%s as a user would: `%s` failed in a fresh module: %v\n%s",
				m.path, version, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	run("go", "mod", "init", "example.com/user")
	for _, line := range gets {
		run(strings.Fields(line)...)
	}
	if got := strings.TrimSpace(run("go", "list", "-m", "-f", "{{.Version}}", m.path)); got != version {
		t.Fatalf("the README's `%s` got %s %s, want %s", gets[0], m.path, got, version)
	}
	if len(programs) == 0 {
		t.Fatalf("%s has no ```go block starting with `package main`: show users one complete program", readmePath)
	}
	for i, src := range programs {
		if formatted, err := format.Source([]byte(src)); err != nil {
			t.Errorf("program %d of %s does not parse: %v", i+1, readmePath, err)
		} else if string(formatted) != src {
			t.Errorf("program %d of %s is not gofmt-formatted; users copy it as it is", i+1, readmePath)
		}
		dir := filepath.Join(work, fmt.Sprintf("readme%d", i+1))
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	run("go", "build", "-o", t.TempDir(), "./...")
	run("go", "vet", "./...")
}

// readmeCode returns, from the fenced code blocks of a README, the go get
// lines that name modPath, and the Go blocks that are complete programs
// (their first line is "package main").
func readmeCode(readme []byte, modPath string) (gets, programs []string) {
	var (
		in    bool
		lang  string
		block strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		if fence, ok := strings.CutPrefix(strings.TrimSpace(line), "```"); ok {
			if !in {
				in, lang = true, strings.TrimSpace(fence)
				block.Reset()
				continue
			}
			in = false
			if src := block.String(); lang == "go" && strings.HasPrefix(src, "package main\n") {
				programs = append(programs, src)
			}
			continue
		}
		if !in {
			continue
		}
		block.WriteString(line + "\n")
		if args, ok := strings.CutPrefix(strings.TrimSpace(line), "go get "); ok {
			for _, a := range strings.Fields(args) {
				if p, _, _ := strings.Cut(a, "@"); p == modPath {
					gets = append(gets, strings.TrimSpace(line))
					break
				}
			}
		}
	}
	return gets, programs
}

// goEnv returns the named variables as the go command sees them here.
func goEnv(t *testing.T, names ...string) map[string]string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"env", "-json"}, names...)...).Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	vars := map[string]string{}
	if err := json.Unmarshal(out, &vars); err != nil {
		t.Fatalf("go env -json: %v", err)
	}
	return vars
}

// fileURL turns a directory into a file:// URL for GOPROXY.
func fileURL(dir string) string {
	p := filepath.ToSlash(dir)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a Windows drive letter
	}
	return (&url.URL{Scheme: "file", Path: path.Clean(p)}).String()
}
