package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// info describes the machine and the invocation.
type info struct {
	Date, Go, CPU, Kernel, Mem, Flags string
	Notify                            string // the core's commit, and whether its files differ from it
	Cores                             int
	LoadBefore, LoadAfter, Elapsed    string
}

func machineInfo(args []string) info {
	in := info{
		Date:       time.Now().UTC().Format("2006-01-02 15:04 MST"),
		Go:         runtime.Version(),
		Cores:      runtime.NumCPU(),
		Flags:      strings.Join(args, " "),
		LoadBefore: loadavg(),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		in.Kernel = strings.TrimSpace(string(b))
	}
	in.CPU = procField("/proc/cpuinfo", "model name")
	in.Notify = notifyVersion()
	in.Mem = procField("/proc/meminfo", "MemTotal")
	return in
}

// notifyVersion names the core commit the bench module builds against
// (replace ../), noting uncommitted changes to the core package's files.
func notifyVersion() string {
	out, err := exec.Command("git", "-C", "..", "log", "-1", "--format=%h (%cd)", "--date=format:%Y-%m-%d %H:%M").Output()
	if err != nil {
		return "unknown"
	}
	v := strings.TrimSpace(string(out))
	dirty, err := exec.Command("git", "-C", "..", "status", "--porcelain", "--", ":(top,glob)*.go", ":(top,glob,exclude)*_test.go").Output()
	if err == nil && len(bytes.TrimSpace(dirty)) > 0 {
		v += " plus uncommitted changes"
	}
	return v
}

func procField(file, key string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// stat is one figure over the runs: median and range.
type stat struct {
	med, lo, hi float64
	n           int
}

type report struct {
	cfg     *config
	info    info
	results []result
	stats   map[[3]string]stat // scenario, contender, key
}

func newReport(cfg *config, in info, results []result) *report {
	r := &report{cfg: cfg, info: in, results: results, stats: map[[3]string]stat{}}
	vals := map[[3]string][]float64{}
	for _, res := range results {
		if res.Err != "" {
			continue
		}
		for k, v := range res.V {
			key := [3]string{res.Scenario, res.Contender, k}
			vals[key] = append(vals[key], v)
		}
	}
	for k, v := range vals {
		r.stats[k] = stat{med: median(v), lo: slices.Min(v), hi: slices.Max(v), n: len(v)}
	}
	return r
}

func (r *report) get(scn, c, key string) (stat, bool) {
	s, ok := r.stats[[3]string{scn, c, key}]
	return s, ok
}

// failures lists what went wrong with the harness itself (never a judgement
// of the numbers): a process that did not start or connect, a scenario that
// timed out or delivered nothing.
func (r *report) failures() []string {
	var out []string
	for _, res := range r.results {
		if res.Err != "" {
			out = append(out, fmt.Sprintf("run %d %s %s: %s", res.Run, res.Contender, res.Scenario, res.Err))
		}
	}
	return out
}

// column is one figure of a table.
type column struct {
	key, head string
	digits    int
	ratio     bool // add a "× notify" column after it
	rng       bool // show the range over runs
}

type table struct {
	scenario, title, note string
	contenders            []string
	cols                  []column
}

func (r *report) tables() []table {
	cfg := r.cfg
	s, l, st := count(cfg.small), count(cfg.large), count(cfg.stallConns)
	all, stallers := cfg.contenders, intersect(cfg.contenders, stallContenders)
	noRaw := intersect(all, []string{"notify", "notify-sse", "melody", "centrifuge", "centrifuge-sse", "gorilla", "naive", "raw"})
	fan := func(n string) table {
		return table{
			scenario:   "fanout-" + n,
			title:      "Saturated fan-out, " + n + " connections",
			note:       fmt.Sprintf("~110-byte JSON to every connection; at most %d broadcasts in flight (a new one once the one %d back reached every connection); %v warm-up, %v measured. CPU and allocations are the server process's, per delivered message; load gen is this process's CPU per delivery. Lost: notifications a healthy connection had not received when the step ended (skipped, or later than the drain); closed: healthy connections the server closed.", cfg.window, cfg.window, cfg.warm, cfg.measure),
			contenders: all,
			cols: []column{
				{key: "dps", head: "deliveries/s", ratio: true, rng: true},
				{key: "cpu_us", head: "server CPU µs/delivery", digits: 2, ratio: true, rng: true},
				{key: "allocs", head: "allocs/delivery", digits: 2},
				{key: "bps", head: "broadcasts/s"},
				{key: "lg_us", head: "load gen µs/delivery", digits: 2},
				{key: "lost", head: "lost"},
				{key: "closed", head: "closed"},
			},
		}
	}
	rate := func(n string) table {
		t := fan(n)
		t.scenario = "rate-" + n
		t.title = "High rate: one publisher, " + n + " connections"
		t.note = fmt.Sprintf("~110-byte JSON to every connection, as many as they take: at most %d broadcasts in flight (a new one once the one %d back reached every connection); %v warm-up, %v measured. Columns as in the saturated fan-out.", cfg.rateWindow, cfg.rateWindow, cfg.warm, cfg.measure)
		return t
	}
	lat := func(n string, rate float64, d time.Duration) table {
		return table{
			scenario:   "latency-" + n,
			title:      fmt.Sprintf("Latency, open loop, %s connections at %g broadcasts/s", n, rate),
			note:       fmt.Sprintf("From the scheduled send time (carried in the payload) to its arrival at each client, over %v; milliseconds.", d),
			contenders: all,
			cols: []column{
				{key: "p50_ms", head: "p50", digits: 2, rng: true},
				{key: "p99_ms", head: "p99", digits: 2, ratio: true, rng: true},
				{key: "p999_ms", head: "p99.9", digits: 2},
				{key: "max_ms", head: "max", digits: 2},
				{key: "lost", head: "lost"},
				{key: "closed", head: "closed"},
			},
		}
	}
	return []table{
		fan(s), fan(l), lat(s, cfg.smallRate, cfg.smallDur), lat(l, cfg.largeRate, cfg.largeDur),
		{
			scenario:   "latency-" + l,
			title:      "How long one broadcast call blocks its caller, " + l + " connections",
			note:       fmt.Sprintf("Duration of each call on the application goroutine during the %s latency run (%g/s, idle in between); microseconds. melody and the gorilla hub hand the message to a hub goroutine, notify to its dispatcher, rawq to its shards, and return; centrifuge queues it for every connection before returning; naive and raw write to every socket.", l, cfg.largeRate),
			contenders: all,
			cols: []column{
				{key: "call_p50_us", head: "p50", ratio: true, rng: true},
				{key: "call_p99_us", head: "p99"},
				{key: "call_max_us", head: "max"},
			},
		},
		{
			scenario:   "calls-" + l,
			title:      fmt.Sprintf("Broadcast call with %d concurrent publishers, %s connections", cfg.publishers, l),
			note:       fmt.Sprintf("%g bursts/s for %v, each burst %d broadcasts from %d goroutines started together; duration of each call, microseconds. Lost: deliveries missing after the drain.", cfg.burstRate, cfg.largeDur, cfg.publishers, cfg.publishers),
			contenders: all,
			cols: []column{
				{key: "call_p50_us", head: "p50", ratio: true, rng: true},
				{key: "call_p99_us", head: "p99", rng: true},
				{key: "call_max_us", head: "max"},
				{key: "calls", head: "calls"},
				{key: "lost", head: "lost"},
			},
		},
		rate(count(cfg.rateConns)),
		{
			scenario:   "idle-" + l,
			title:      "Memory per idle connection, " + l + " connections",
			note:       "Server process after runtime.GC and debug.FreeOSMemory, minus the same before any connection, divided by the connections; KB = 1024 bytes.",
			contenders: noRaw,
			cols: []column{
				{key: "rss_kb", head: "RSS KB/conn", digits: 1, ratio: true, rng: true},
				{key: "heap_kb", head: "heap KB/conn", digits: 1},
				{key: "stack_kb", head: "stack KB/conn", digits: 1},
				{key: "goroutines", head: "goroutines/conn", digits: 2},
			},
		},
		{
			scenario:   "nostall-" + st,
			title:      "Baseline for the stall scenario: " + st + " connections, none stalled",
			note:       fmt.Sprintf("Open loop, %g broadcasts/s of ~1 KB for %v; latency of every connection, milliseconds.", cfg.stallRate, cfg.stallDur),
			contenders: stallers,
			cols: []column{
				{key: "p50_ms", head: "p50", digits: 2},
				{key: "p99_ms", head: "p99", digits: 2, ratio: true, rng: true},
				{key: "max_ms", head: "max", digits: 2},
				{key: "lost", head: "lost"},
				{key: "rss_mb", head: "server RSS MB", digits: 1},
			},
		},
		{
			scenario:   "stall-" + st,
			title:      fmt.Sprintf("1%% stalled: %s connections, every %dth never reads", st, cfg.stallEvery),
			note:       fmt.Sprintf("Same stream as the baseline. Latency and losses are the healthy connections'. A staller is evicted when the server closes its socket (seen in the kernel socket table through sock_diag, polled every 100 ms in the baseline too), watched for %v from the start of the stream; its buffers count as full once they held 90%% of their peak (server send queue plus client receive queue).", cfg.stallWatch),
			contenders: stallers,
			cols: []column{
				{key: "p99_ms", head: "healthy p99 ms", digits: 2, ratio: true, rng: true},
				{key: "max_ms", head: "healthy max ms", digits: 2},
				{key: "lost", head: "lost (healthy)"},
				{key: "closed", head: "healthy closed"},
				{key: "evicted", head: "stallers evicted"},
				{key: "evict_after_full_s", head: "evicted s after buffers full", digits: 1},
				{key: "stall_buf_kb", head: "KB buffered per staller"},
				{key: "rss_mb", head: "server RSS MB", digits: 1},
			},
		},
	}
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func (r *report) markdown() string {
	var b strings.Builder
	in := r.info
	fmt.Fprintf(&b, "Measured %s with `go run . %s` (%s, %d runs, contenders interleaved; median [min–max]).\n\n", in.Date, in.Flags, in.Go, r.cfg.runs)
	fmt.Fprintf(&b, "notify at commit %s. Machine: %d × %s, %s, Linux %s. Load average before: %s; after: %s. Took %s.\n\n",
		in.Notify, in.Cores, in.CPU, in.Mem, in.Kernel, in.LoadBefore, in.LoadAfter, in.Elapsed)
	for _, t := range r.tables() {
		b.WriteString(r.tableMarkdown(t))
	}
	b.WriteString(r.targets())
	if f := r.failures(); len(f) > 0 {
		b.WriteString("### Failures\n\n")
		for _, s := range f {
			fmt.Fprintf(&b, "- %s\n", s)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (r *report) tableMarkdown(t table) string {
	var b strings.Builder
	empty := true
	for _, name := range t.contenders {
		if _, ok := r.get(t.scenario, name, t.cols[0].key); ok {
			empty = false
		}
	}
	if empty {
		return ""
	}
	fmt.Fprintf(&b, "### %s\n\n%s\n\n| contender |", t.title, t.note)
	sep := "|---|"
	for _, c := range t.cols {
		fmt.Fprintf(&b, " %s |", c.head)
		sep += "--:|"
		if c.ratio {
			b.WriteString(" × notify |")
			sep += "--:|"
		}
	}
	fmt.Fprintf(&b, "\n%s\n", sep)
	for _, name := range t.contenders {
		fmt.Fprintf(&b, "| %s |", name)
		for _, c := range t.cols {
			s, ok := r.get(t.scenario, name, c.key)
			cell := "—"
			if ok {
				cell = num(s.med, c.digits)
				if c.rng && s.n > 1 {
					cell += fmt.Sprintf(" [%s–%s]", num(s.lo, c.digits), num(s.hi, c.digits))
				}
			}
			fmt.Fprintf(&b, " %s |", cell)
			if c.ratio {
				ratio := "—"
				if base, ok2 := r.get(t.scenario, "notify", c.key); ok && ok2 && base.med != 0 {
					ratio = fmt.Sprintf("%.2f", s.med/base.med)
				}
				fmt.Fprintf(&b, " %s |", ratio)
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

// num formats a figure with thousands separators.
func num(v float64, digits int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	s := fmt.Sprintf("%.*f", digits, v)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var out []byte
	for i := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, intPart[i])
	}
	s = string(out)
	if neg {
		s = "-" + s
	}
	if frac != "" {
		s += "." + frac
	}
	return s
}

// targets checks the targets, as ratios within this measurement.
func (r *report) targets() string {
	l, st := count(r.cfg.large), count(r.cfg.stallConns)
	fan := "fanout-" + l
	med := func(scn, c, key string) (float64, bool) {
		s, ok := r.get(scn, c, key)
		return s.med, ok
	}
	var b strings.Builder
	b.WriteString("### Targets (from the issue), in this measurement\n\n| target | measured | met |\n|---|--:|:-:|\n")
	row := func(target string, v float64, ok bool, limit float64, atMost bool, detail string) {
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			fmt.Fprintf(&b, "| %s | — | — |\n", target)
			return
		}
		met := v >= limit
		if atMost {
			met = v <= limit
		}
		mark := "no"
		if met {
			mark = "yes"
		}
		fmt.Fprintf(&b, "| %s | %.2f%s | %s |\n", target, v, detail, mark)
	}
	lat := "latency-" + l
	c50, ok50 := med(lat, "notify", "call_p50_us")
	c99, ok99 := med(lat, "notify", "call_p99_us")
	row("Broadcast call at "+l+", 1 publisher: p50 ≤ 0.1 ms", c50/1e3, ok50, 0.1, true, " ms")
	row("Broadcast call at "+l+", 1 publisher: p99 ≤ 1 ms", c99/1e3, ok99, 1, true, " ms")
	calls := "calls-" + l
	b50, okb50 := med(calls, "notify", "call_p50_us")
	b99, okb99 := med(calls, "notify", "call_p99_us")
	row(fmt.Sprintf("Broadcast call at %s, %d publishers: p50 ≤ 0.1 ms", l, r.cfg.publishers), b50/1e3, okb50, 0.1, true, " ms")
	row(fmt.Sprintf("Broadcast call at %s, %d publishers: p99 ≤ 1 ms", l, r.cfg.publishers), b99/1e3, okb99, 1, true, " ms")
	n, okN := med(fan, "notify", "dps")
	q, okQ := med(fan, "rawq", "dps")
	row("fan-out at "+l+" ≥ 0.5× the coalescing raw floor's deliveries/s", n/q, okN && okQ, 0.5, false, "× rawq")
	nc, okC := med(fan, "notify", "cpu_us")
	qc, okQC := med(fan, "rawq", "cpu_us")
	row("fan-out at "+l+": server CPU per delivery ≤ 3× the floor's", nc/qc, okC && okQC, 3, true, "× rawq")
	p99, okP := med(lat, "notify", "p99_ms")
	row("latency at "+l+", "+fmt.Sprint(r.cfg.largeRate)+"/s: p99 ≤ 125 ms", p99, okP, 125, true, " ms")
	idle := "idle-" + l
	nr, okR := med(idle, "notify", "rss_kb")
	row("idle RSS per connection ≤ 9.2 KB (the commit before the fan-out redesign)", nr, okR, 9.2, true, " KB")
	mr, okM := med(idle, "melody", "rss_kb")
	row("idle RSS ≤ 0.45× melody", nr/mr, okR && okM, 0.45, true, "")
	gr, okG := med(idle, "gorilla", "rss_kb")
	row("idle RSS ≤ 0.8× gorilla", nr/gr, okR && okG, 0.8, true, "")
	sp, okS := med("stall-"+st, "notify", "p99_ms")
	np, okNP := med("nostall-"+st, "notify", "p99_ms")
	row("healthy p99 with 1% stalled ≤ 1.2× no stall", sp/np, okS && okNP, 1.2, true, "")
	lost, okL := med("stall-"+st, "notify", "lost")
	row("nothing lost to healthy clients with 1% stalled", lost, okL, 0, true, " lost")
	b.WriteString("\n")
	return b.String()
}
