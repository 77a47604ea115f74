// Package release checks, before a release is tagged, that notify's modules
// install from a module proxy the way users will get them.
//
// Its one test packs the working tree into a throw-away module proxy on disk,
// at the version being prepared, with golang.org/x/mod/zip (which applies the
// public proxy's rules on file names and sizes and leaves nested modules
// out). Then, for each module users import, in a fresh module and a fresh
// module cache, outside the workspace, it runs the go get line of that
// module's README.md and builds and vets every complete program
// ("package main") the README shows.
//
// This module is not published for users: nothing imports it. make test
// runs it with every other module's tests.
package release
