// Command bench measures notify side by side with the libraries users would
// pick instead, each server in a fresh process of its own, against one
// load-generator process (this one). See README.md.
//
//	go run .            full measurement (3 runs, about 12 minutes)
//	go run . -quick     smoke test for CI (well under a minute)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// serveEnv, when set, makes this binary a server process (see server.go).
const serveEnv = "BENCH_SERVE"

var allContenders = []string{"notify", "notify-sse", "melody", "centrifuge", "centrifuge-sse", "gorilla", "naive", "raw", "raw2", "rawq"}

// stallContenders excludes the raw baseline: it has no defence against a
// stalled client by design.
var stallContenders = []string{"notify", "notify-sse", "melody", "centrifuge", "centrifuge-sse", "gorilla", "naive"}

func main() {
	if name := os.Getenv(serveEnv); name != "" {
		if err := serverMain(name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return
	}
	os.Exit(benchMain(os.Args[1:]))
}

func fullConfig() config {
	return config{
		runs: 3, workers: 2, dialPar: 64, window: 4,
		small: 1000, large: 10000,
		warm: time.Second, measure: 3 * time.Second,
		smallRate: 50, smallDur: 3 * time.Second,
		largeRate: 5, largeDur: 6 * time.Second,
		settle:     time.Second,
		stallConns: 400, stallEvery: 100, stallRate: 100, stallDur: 6 * time.Second, stallPad: 900,
		stallWatch: 12 * time.Second,
		drain:      10 * time.Second,
		publishers: 8, burstRate: 1,
		rateConns: 10, rateWindow: 128, // below every peer's queue (256 for notify, melody and the gorilla hub)
	}
}

func quickConfig() config {
	c := fullConfig()
	c.runs = 1
	c.small, c.large = 100, 400
	c.warm, c.measure = 200*time.Millisecond, 400*time.Millisecond
	c.smallDur, c.largeRate, c.largeDur = 400*time.Millisecond, 20, 400*time.Millisecond
	c.settle = 100 * time.Millisecond
	c.stallConns, c.stallDur, c.stallWatch = 200, 400*time.Millisecond, 0
	c.drain = 3 * time.Second
	c.burstRate = 5
	return c
}

func benchMain(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke test: small counts, one run, well under a minute")
	runs := fs.Int("runs", 0, "repetitions of every measurement (default 3, 1 with -quick)")
	only := fs.String("contenders", strings.Join(allContenders, ","), "contenders to run")
	parts := fs.String("scenarios", "small,large,rate,stall", "process kinds to run: small (fan-out and latency at 1k), large (idle memory, latency, Broadcast call time with 1 and 8 publishers, and fan-out at 10k), rate (one publisher, few connections, as many small messages as they take), stall")
	large := fs.Int("large", 0, "connections of the large kind (default 10000; at most what the open-files limit allows, about 19000 here)")
	window := fs.Int("window", 0, "broadcasts in flight in the saturated fan-out (default 4)")
	mdFile := fs.String("md", "", "write the result tables (Markdown) to this file")
	svgFile := fs.String("svg", "", "write the chart (SVG) to this file")
	jsonFile := fs.String("json", "", "write every measurement (JSON) to this file")
	profDir := fs.String("cpuprofile", "", "directory for CPU profiles of the -profile servers during the saturated fan-out")
	profile := fs.String("profile", "notify", "contenders to profile when -cpuprofile is set")
	restart := fs.Int("restart", 0, "instead of the scenarios: the restart measurement with this many clients (see restart.go), both reconnect rules")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *restart > 0 {
		raiseFileLimit()
		return restartMain(*restart, 2*time.Minute)
	}
	cfg := fullConfig()
	if *quick {
		cfg = quickConfig()
	}
	if *runs > 0 {
		cfg.runs = *runs
	}
	if *window > 0 {
		cfg.window = *window
	}
	if *large > 0 {
		cfg.large = *large
	}
	raiseFileLimit()
	cfg.contenders = strings.Split(*only, ",")
	for _, c := range cfg.contenders {
		if _, ok := peers[c]; !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown contender %q (have %s)\n", c, strings.Join(allContenders, ", "))
			return 2
		}
	}
	if *profDir != "" {
		cfg.profileDir, cfg.profile = *profDir, strings.Split(*profile, ",")
	}
	kinds := strings.Split(*parts, ",")

	info := machineInfo(args)
	start := time.Now()
	var results []result
	for run := 1; run <= cfg.runs; run++ {
		// Interleave: every contender once per process kind, in an order
		// that rotates from run to run.
		order := slices.Clone(cfg.contenders)
		k := (run - 1) % len(order)
		order = append(order[k:], order[:k]...)
		for _, kind := range kinds {
			for _, c := range order {
				t := time.Now()
				rs := runKind(&cfg, kind, c, run)
				status := "ok"
				for _, r := range rs {
					if r.Err != "" {
						status = r.Scenario + ": " + r.Err
					}
				}
				if rs != nil {
					fmt.Fprintf(os.Stderr, "run %d/%d %-5s %-10s %5.1fs  %s\n", run, cfg.runs, kind, c, time.Since(t).Seconds(), status)
				}
				results = append(results, rs...)
			}
		}
	}
	info.Elapsed = time.Since(start).Round(time.Second).String()
	info.LoadAfter = loadavg()

	rep := newReport(&cfg, info, results)
	md := rep.markdown()
	fmt.Print(md)
	failed := rep.failures()
	for _, f := range failed {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", f)
	}
	if err := writeOutputs(*mdFile, md, *svgFile, rep.svg(), *jsonFile, results); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if len(failed) > 0 {
		return 1
	}
	return 0
}

// runKind runs one process kind for one contender (nil if it does not apply).
func runKind(cfg *config, kind, c string, run int) []result {
	switch kind {
	case "small":
		return runProcess(cfg, c, run, cfg.small, 0,
			latency("latency-"+count(cfg.small), false, cfg.smallRate, cfg.smallDur, 0),
			fanout("fanout-"+count(cfg.small), 0))
	case "large":
		return runProcess(cfg, c, run, cfg.large, 0,
			idle("idle-"+count(cfg.large)),
			latency("latency-"+count(cfg.large), true, cfg.largeRate, cfg.largeDur, 0),
			burstCalls("calls-"+count(cfg.large), cfg.largeDur),
			fanout("fanout-"+count(cfg.large), 0))
	case "rate":
		return runProcess(cfg, c, run, cfg.rateConns, 0,
			fanout("rate-"+count(cfg.rateConns), cfg.rateWindow))
	case "stall":
		if !slices.Contains(stallContenders, c) {
			return nil
		}
		rs := runProcess(cfg, c, run, cfg.stallConns, 0, stall("nostall-"+count(cfg.stallConns)))
		return append(rs, runProcess(cfg, c, run, cfg.stallConns, cfg.stallEvery, stall("stall-"+count(cfg.stallConns)))...)
	}
	return []result{{Scenario: kind, Contender: c, Run: run, Err: "unknown process kind"}}
}

// count names a connection count: 1000 → "1k".
func count(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func writeOutputs(mdFile, md, svgFile, svg, jsonFile string, results []result) error {
	if mdFile != "" {
		if err := os.WriteFile(mdFile, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if svgFile != "" {
		if err := os.WriteFile(svgFile, []byte(svg), 0o644); err != nil {
			return err
		}
	}
	if jsonFile != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(jsonFile, b, 0o644)
	}
	return nil
}

// raiseFileLimit raises this process's soft limit on open files to the
// hard one (server processes inherit it) and says what it used: 10,000
// connections cost 10,000 descriptors on each side.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		fmt.Fprintln(os.Stderr, "bench: open-files limit:", err)
		return
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			fmt.Fprintln(os.Stderr, "bench: raising the open-files limit:", err)
		}
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	fmt.Fprintf(os.Stderr, "bench: open-files limit %d (hard %d)\n", l.Cur, l.Max)
}

// selfCPU is the load generator's own CPU time, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return tv(ru.Utime) + tv(ru.Stime)
}
