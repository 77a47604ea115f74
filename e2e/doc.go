// Package e2e holds notify's end-to-end tests: the customers demo and the
// JavaScript client driven in a real, headless Chromium through chromedp.
// It has no non-test code; see README.md for what the tests prove and how
// to run them.
//
// It is a module of its own so that chromedp never becomes a dependency of
// github.com/wsnotify/notify.
package e2e
