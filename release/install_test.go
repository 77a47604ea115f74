package release

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/zip"
)

// The version checked is the one every other module of the repository
// requires of the root: at a release the nested modules' require moves to
// the version being cut (RELEASING.md), so the check follows it. -version
// states it explicitly, and fails if the go.mod files say otherwise; -tagged
// packs each module from its release tag in git instead of the working tree.
var (
	flagVersion = flag.String("version", "", "the version being cut, vX.Y.Z; it must be the version the nested modules require of the root (the default)")
	flagTagged  = flag.Bool("tagged", false, "pack each published module from its release tag (vX.Y.Z, redisbroker/vX.Y.Z, …) in this repository's git, as a module proxy will, instead of from the working tree")
)

// rootPath is the root module's path; nested modules' paths extend it with
// their directory.
const rootPath = "github.com/wsnotify/notify"

// internal names the nested modules nobody imports: they are not packed or
// installed.
var internal = map[string]bool{"bench": true, "e2e": true, "release": true}

// A goModule is one module of the repository.
type goModule struct {
	path      string // module path
	dir       string // absolute directory
	rel       string // directory relative to the root, slash-separated; "." for the root
	published bool   // users import it: the root and the nested modules not in internal
}

// TestInstallFromProxy installs every importable module of the working tree
// (or, with -tagged, of the release tags), at the version being cut, from a
// module proxy, as a user would, and builds the programs its README shows.
func TestInstallFromProxy(t *testing.T) {
	t.Parallel()
	start := time.Now()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	all, err := modules(root)
	if err != nil {
		t.Fatal(err)
	}
	version, err := releaseVersion(root, all, *flagVersion)
	if err != nil {
		t.Fatal(err)
	}
	source := "the working tree"
	if *flagTagged {
		tree := t.TempDir()
		commit, err := taggedTree(root, version, tree)
		if err != nil {
			t.Fatal(err)
		}
		if all, err = modules(tree); err != nil {
			t.Fatal(err)
		}
		if _, err := releaseVersion(tree, all, version); err != nil {
			t.Fatalf("at the tags: %v", err)
		}
		source = "the tags at " + commit
	}
	var mods []goModule
	var unpublished []string
	for _, m := range all {
		if m.published {
			mods = append(mods, m)
		} else {
			unpublished = append(unpublished, m.path)
		}
	}

	proxy := t.TempDir()
	for _, m := range mods {
		if err := publish(proxy, m, version); err != nil {
			t.Errorf("module %s (%s) cannot be packed for a module proxy as %s@%s:\n%v", m.path, m.rel, m.path, version, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("packed %d modules at %s from %s in %v", len(mods), version, source, time.Since(start).Round(time.Millisecond))

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
			install(t, m, version, goproxy, unpublished)
		})
	}
}

// modules finds every go.mod under root and checks that each declares the
// module path its directory gives it. The root module comes first.
func modules(root string) ([]goModule, error) {
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
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		want := rootPath
		if rel != "." {
			want = rootPath + "/" + rel
		}
		if got := modfile.ModulePath(data); got != want {
			return fmt.Errorf("%s declares module %q; in this repository it must be %q", p, got, want)
		}
		mods = append(mods, goModule{path: want, dir: dir, rel: rel, published: !internal[rel]})
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The root first: the walk reaches bench/go.mod before ./go.mod.
	i := slices.IndexFunc(mods, func(m goModule) bool { return m.rel == "." })
	if i < 0 {
		return nil, fmt.Errorf("no go.mod for %s in %s", rootPath, root)
	}
	rootMod := mods[i]
	return slices.Insert(slices.Delete(mods, i, i+1), 0, rootMod), nil
}

// releaseVersion returns the version being cut: the one every other module
// under root requires of the root module. They must agree, the go.work
// replace (if any) must map that version, and want, if not empty, must be it.
func releaseVersion(root string, mods []goModule, want string) (string, error) {
	requires := map[string][]string{} // version → modules requiring the root at it
	for _, m := range mods[1:] {
		name := filepath.Join(m.dir, "go.mod")
		data, err := os.ReadFile(name)
		if err != nil {
			return "", err
		}
		f, err := modfile.ParseLax(name, data, nil)
		if err != nil {
			return "", err
		}
		for _, r := range f.Require {
			if r.Mod.Path == rootPath {
				requires[r.Mod.Version] = append(requires[r.Mod.Version], m.rel)
			}
		}
	}
	if len(requires) != 1 {
		return "", fmt.Errorf("the nested modules must all require %s at the version being cut; they require %v", rootPath, requires)
	}
	var version string
	for v := range requires {
		version = v
	}
	if !semver.IsValid(version) || semver.Canonical(version) != version || semver.Build(version) != "" {
		return "", fmt.Errorf("the nested modules require %s %s, not a release version vX.Y.Z", rootPath, version)
	}
	if want != "" && want != version {
		return "", fmt.Errorf("-version %s, but the nested modules %v require %s %s: move their require to %s first (RELEASING.md)", want, requires[version], rootPath, version, want)
	}
	if data, err := os.ReadFile(filepath.Join(root, "go.work")); err == nil {
		w, err := modfile.ParseWork("go.work", data, nil)
		if err != nil {
			return "", err
		}
		for _, r := range w.Replace {
			if r.Old.Path == rootPath && r.Old.Version != "" && r.Old.Version != version {
				return "", fmt.Errorf("go.work replaces %s %s, but the nested modules require %s: the workspace would not build them against this tree", rootPath, r.Old.Version, version)
			}
		}
	} else if !os.IsNotExist(err) {
		return "", err
	}
	return version, nil
}

// publish adds m at version to the file-system module proxy in dir, in the
// layout GOPROXY=file://dir expects: <escaped path>/@v/{list,V.info,V.mod,V.zip}.
func publish(dir string, m goModule, version string) error {
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
// shows, and builds and vets them. None of the unpublished modules may enter
// the user's build.
func install(t *testing.T, m goModule, version, goproxy string, unpublished []string) {
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
	for _, line := range strings.Split(run("go", "list", "-m", "all"), "\n") {
		if p, _, _ := strings.Cut(line, " "); slices.Contains(unpublished, p) {
			t.Errorf("a user of %s gets %s, a module that is not published: %s", m.path, p, line)
		}
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
