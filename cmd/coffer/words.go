package main

import (
	"fmt"
	"strconv"
	"time"
)

// plural says n things: "1 snapshot", "2 snapshots".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// humanDuration says how long d is in the largest whole units that keep
// it exact to a second: "2 h", "1 h 30 min", "45 s", "3 days".
func humanDuration(d time.Duration) string {
	if d < 0 {
		return "-" + humanDuration(-d)
	}
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	d = d.Round(time.Second)
	days := int64(d / (24 * time.Hour))
	d -= time.Duration(days) * 24 * time.Hour
	h, m, s := int64(d/time.Hour), int64(d%time.Hour/time.Minute), int64(d%time.Minute/time.Second)
	var out string
	add := func(n int64, unit string) {
		if n == 0 {
			return
		}
		if out != "" {
			out += " "
		}
		out += strconv.FormatInt(n, 10) + " " + unit
	}
	switch days {
	case 0:
	case 1:
		out = "1 day"
	default:
		out = strconv.FormatInt(days, 10) + " days"
	}
	add(h, "h")
	add(m, "min")
	add(s, "s")
	return out
}
