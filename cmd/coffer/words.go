package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

type count interface {
	~int | ~int32 | ~int64 | ~uint | ~uint32 | ~uint64
}

// plural says n things: "1 snapshot", "2 snapshots".
func plural[N count](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprint(n) + " " + many
}

// pick is one when n is 1, else many: "it"/"them", "waits"/"wait".
func pick[N count](n N, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// tableTime and shortTime show a time in the local zone, and say which.
func tableTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }
func shortTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04 MST") }

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

// durationValue is a time.Duration flag whose default help shows as
// "12 h", not Go's "12h0m0s"; it accepts Go durations and days ("30d").
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil || *v.d == 0 {
		return "0"
	}
	return humanDuration(*v.d)
}

func (v durationValue) Set(s string) error {
	d, err := parseDaysOrDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 12h or 30d")
	}
	*v.d = d
	return nil
}

// parseDaysOrDuration parses a number of days ("30d") or a Go duration
// ("12h"); a number of days too large for a duration is an error, never
// a wrapped value.
func parseDaysOrDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, err
		}
		if int64(days) > math.MaxInt64/int64(24*time.Hour) || int64(days) < math.MinInt64/int64(24*time.Hour) {
			return 0, fmt.Errorf("%s: out of range", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func (v durationValue) Type() string { return "duration" }

// durationFlag defines a duration flag shown in human units.
func durationFlag(f *pflag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	f.Var(durationValue{p}, name, usage)
}
