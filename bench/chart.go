package main

import (
	"fmt"
	"html"
	"strings"
)

// svg draws three small bar charts side by side: throughput and server CPU
// per delivery in the large fan-out, and idle RSS per connection. Bars are
// medians, whiskers the range over runs.
func (r *report) svg() string {
	l := count(r.cfg.large)
	panels := []struct {
		title, scn, key string
		digits          int
	}{
		{"deliveries/s, fan-out " + l + " (higher is better)", "fanout-" + l, "dps", 0},
		{"server CPU µs per delivery, fan-out " + l, "fanout-" + l, "cpu_us", 2},
		{"idle RSS KB per connection, " + l, "idle-" + l, "rss_kb", 1},
	}
	const (
		panelW, labelW, barH, gap, top = 300, 78, 16, 6, 34
	)
	rows := len(r.cfg.contenders)
	height := top + rows*(barH+gap) + 10
	width := len(panels) * (panelW + labelW + 20)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	for p, pn := range panels {
		x0 := p*(panelW+labelW+20) + labelW
		fmt.Fprintf(&b, `<text x="%d" y="16" font-weight="bold">%s</text>`+"\n", x0-labelW+4, html.EscapeString(pn.title))
		var hi float64
		for _, c := range r.cfg.contenders {
			if s, ok := r.get(pn.scn, c, pn.key); ok {
				hi = max(hi, s.hi)
			}
		}
		if hi == 0 {
			continue
		}
		scale := float64(panelW-60) / hi
		for i, c := range r.cfg.contenders {
			y := top + i*(barH+gap)
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", x0-6, y+barH-4, c)
			s, ok := r.get(pn.scn, c, pn.key)
			if !ok {
				fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#888">n/a</text>`+"\n", x0+4, y+barH-4)
				continue
			}
			fill := "#9aa7b8"
			if c == "notify" {
				fill = "#d9534f"
			} else if strings.HasPrefix(c, "raw") {
				fill = "#d0d0d0"
			}
			w := s.med * scale
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y, w, barH, fill)
			if s.n > 1 {
				y2 := y + barH/2
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", float64(x0)+s.lo*scale, y2, float64(x0)+s.hi*scale, y2)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(x0)+max(w, s.hi*scale)+4, y+barH-4, num(s.med, pn.digits))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}
