// Package release checks, before a release is tagged, that notify's modules
// install from a module proxy the way users will get them.
//
// TestInstallFromProxy packs the published modules (the root, redisbroker,
// pgbroker) into a throw-away module proxy on disk with golang.org/x/mod/zip
// (which applies the public proxy's rules on file names and sizes and leaves
// nested modules out), at the version being cut: the one the nested modules
// require of the root. Then, for each of them, in a fresh module and a fresh
// module cache, outside the workspace, it runs the go get line of that
// module's README.md, checks that no unpublished module (bench, e2e, release)
// enters the user's build, and builds and vets every complete program
// ("package main") the README shows.
//
// By default it packs the working tree; make test runs it so, with every
// other module's tests. At a release, once the tags are made and before they
// are pushed, run it on the tags, as the proxy will read them:
//
//	cd release && go test -count=1 -run TestInstallFromProxy . -args -version v0.1.0 -tagged
//
// -version fails unless the go.mod files name that version; -tagged packs the
// tree of the tags v0.1.0, redisbroker/v0.1.0 and pgbroker/v0.1.0, which must
// name one commit. RELEASING.md describes the whole release.
//
// This module is not published for users: nothing imports it.
package release
