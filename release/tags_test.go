package release

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// taggedTree writes into dst the tree that the release tags of version name
// in the git repository at root, as a module proxy will read it: the root
// module's tag (version) and each published nested module's (dir/version)
// must exist and name one commit, which it returns. Only what git tracks is
// written, so nothing untracked in a working tree can slip into the check.
func taggedTree(root, version, dst string) (commit string, err error) {
	if commit, err = tagCommit(root, version); err != nil {
		return "", err
	}
	if err := extract(root, commit, dst); err != nil {
		return "", err
	}
	mods, err := modules(dst)
	if err != nil {
		return "", fmt.Errorf("at tag %s: %w", version, err)
	}
	for _, m := range mods[1:] {
		if !m.published {
			continue
		}
		tag := m.rel + "/" + version
		c, err := tagCommit(root, tag)
		if err != nil {
			return "", err
		}
		if c != commit {
			return "", fmt.Errorf("tag %s names commit %s but %s names %s: the modules are released together, from one commit", tag, c, version, commit)
		}
	}
	return commit, nil
}

// tagCommit returns the commit that tag names in the repository at root.
func tagCommit(root, tag string) (string, error) {
	out, err := git(root, nil, "rev-parse", "--verify", "--quiet", "refs/tags/"+tag+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("no tag %s in %s: tag the release commit first (RELEASING.md)", tag, root)
	}
	return strings.TrimSpace(string(out)), nil
}

// extract writes the files of commit into dst, through git archive.
func extract(root, commit, dst string) error {
	var archive bytes.Buffer
	if _, err := git(root, &archive, "archive", "--format=tar", commit); err != nil {
		return err
	}
	tr := tar.NewReader(&archive)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Join(dst, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(name, dst+string(filepath.Separator)) {
			return fmt.Errorf("git archive of %s: entry %q leaves the tree", commit, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(name, 0o777)
		case tar.TypeReg:
			err = writeFile(name, tr, h.FileInfo().Mode().Perm())
		case tar.TypeXGlobalHeader: // git's commit id
		default:
			err = fmt.Errorf("git archive of %s: %s is neither a file nor a directory; module zips take only files", commit, h.Name)
		}
		if err != nil {
			return err
		}
	}
}

func writeFile(name string, r io.Reader, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o777); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// git runs git in dir with no user or system configuration, writing its
// standard output to stdout if not nil, and returns it otherwise.
func git(dir string, stdout io.Writer, args ...string) ([]byte, error) {
	var out, stderr bytes.Buffer
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_AUTHOR_NAME=release", "GIT_AUTHOR_EMAIL=release@example.com",
		"GIT_COMMITTER_NAME=release", "GIT_COMMITTER_EMAIL=release@example.com")
	cmd.Stdout = &out
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out.Bytes(), nil
}

// TestTaggedTree checks what -tagged relies on, in a repository made for the
// test: the tree comes from the tags, not from the working tree, and a
// missing tag or tags on two commits are refused.
func TestTaggedTree(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	repo := t.TempDir()
	files := map[string]string{
		"go.mod":                "module " + rootPath + "\n\ngo 1.23\n",
		"notify.go":             "package notify\n",
		"redisbroker/go.mod":    "module " + rootPath + "/redisbroker\n\ngo 1.23\n\nrequire " + rootPath + " v0.3.0\n",
		"redisbroker/broker.go": "package redisbroker\n",
		"bench/go.mod":          "module " + rootPath + "/bench\n\ngo 1.23\n\nrequire " + rootPath + " v0.3.0\n",
	}
	for name, content := range files {
		if err := writeFile(filepath.Join(repo, filepath.FromSlash(name)), strings.NewReader(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := git(repo, nil, args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "--quiet")
	run("add", ".")
	run("commit", "--quiet", "-m", "v0.3.0")
	tagged := run("rev-parse", "HEAD")
	run("tag", "v0.3.0")
	run("tag", "redisbroker/v0.3.0")
	// After the tags: a committed change and an untracked file, neither of
	// which is in the release.
	if err := os.WriteFile(filepath.Join(repo, "notify.go"), []byte("package notify // changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("commit", "--quiet", "-am", "after the release")
	if err := os.WriteFile(filepath.Join(repo, "untracked.go"), []byte("package notify\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	dst := t.TempDir()
	commit, err := taggedTree(repo, "v0.3.0", dst)
	if err != nil {
		t.Fatal(err)
	}
	if commit != tagged {
		t.Errorf("taggedTree returned commit %s, want the tagged %s", commit, tagged)
	}
	got := map[string]string{}
	err = filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dst, p)
		got[filepath.ToSlash(rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(files, got); diff != "" {
		t.Errorf("the tree at the tags differs from what was tagged (-tagged +extracted):\n%s", diff)
	}
	mods, err := modules(dst)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := releaseVersion(dst, mods, ""); err != nil || v != "v0.3.0" {
		t.Errorf("releaseVersion at the tags = %q, %v; want v0.3.0", v, err)
	}
	if _, err := releaseVersion(dst, mods, "v0.4.0"); err == nil || !strings.Contains(err.Error(), "move their require to v0.4.0") {
		t.Errorf("releaseVersion with -version v0.4.0 while the requires say v0.3.0: err = %v, want the require to move", err)
	}

	// A nested module's tag on another commit.
	run("tag", "-f", "redisbroker/v0.3.0", "HEAD")
	if _, err := taggedTree(repo, "v0.3.0", t.TempDir()); err == nil || !strings.Contains(err.Error(), "from one commit") {
		t.Errorf("tags on two commits: err = %v, want a refusal", err)
	}
	// A nested module's tag missing; the unpublished bench needs none.
	run("tag", "-d", "redisbroker/v0.3.0")
	if _, err := taggedTree(repo, "v0.3.0", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no tag redisbroker/v0.3.0") {
		t.Errorf("no redisbroker tag: err = %v, want a refusal naming it", err)
	}
}
