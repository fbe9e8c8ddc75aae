// fixedrate: an open-loop HTTP/1.1 load generator that sends at a fixed rate
// and reports latency percentiles — what wrk2 does (wrk2 is not packaged in
// Debian, and h2load --rps reports no percentiles).
//
//	fixedrate -addr 127.0.0.1:8080 -host h1.bench -path /small \
//	          -rate 5000 -conns 50 -warmup 2s -duration 10s
//
// Each of the -conns keep-alive connections sends on its own schedule
// (rate/conns per second, offset so the connections interleave), as wrk2
// does. A request's latency runs from the moment it was due if the connection
// was still busy with the previous one then — so a stall is charged to every
// request it delayed (no coordinated omission) — and from the moment it was
// sent otherwise, so our own wake-up delay is not charged to the server.
// Waits use a timerfd: Go's time.Sleep wakes up to ~1 ms late here, which is
// as much as the latency being measured.
//
// With -grpc it makes gRPC unary calls instead (-path is the method, -host
// the :authority): see grpc.go.
//
// Prints one JSON object; latencies in microseconds.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http/httputil"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type timer struct {
	fd   int
	file *os.File
	buf  []byte
}

func newTimer() (*timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// A non-blocking fd in os.NewFile is served by Go's netpoller, which wakes
	// as soon as the timer fires.
	return &timer{fd: fd, file: os.NewFile(uintptr(fd), "timerfd"), buf: make([]byte, 8)}, nil
}

func (t *timer) sleep(d time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	if err := unix.TimerfdSettime(t.fd, 0, &spec, nil); err != nil {
		return err
	}
	_, err := t.file.Read(t.buf)
	return err
}

type conn struct {
	c net.Conn
	r *bufio.Reader
}

// roundTrip sends one request and reads the whole response. It returns the
// status code, and whether the server asked to close the connection.
func (c *conn) roundTrip(req []byte) (int, bool, error) {
	if _, err := c.c.Write(req); err != nil {
		return 0, true, err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return 0, true, err
	}
	parts := strings.SplitN(line, " ", 3)
	if len(parts) < 2 {
		return 0, true, fmt.Errorf("bad status line %q", line)
	}
	code, err := strconv.Atoi(parts[1])
	if err != nil {
		return 0, true, err
	}
	length, chunked, closing := int64(-1), false, false
	for {
		h, err := c.r.ReadString('\n')
		if err != nil {
			return 0, true, err
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		name, value, _ := strings.Cut(h, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			length, _ = strconv.ParseInt(value, 10, 64)
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		case "connection":
			closing = strings.EqualFold(value, "close")
		}
	}
	switch {
	case chunked:
		_, err = io.Copy(io.Discard, httputil.NewChunkedReader(c.r))
		if err == nil { // the empty trailer section
			_, err = c.r.ReadString('\n')
		}
	case length >= 0:
		_, err = io.CopyN(io.Discard, c.r, length)
	default:
		_, err = io.Copy(io.Discard, c.r)
		closing = true
	}
	return code, closing, err
}

type tally struct {
	lat     []int64 // ns, measured requests only
	errors  int
	non2xx  int
	lastErr string
}

func worker(addr string, req []byte, start time.Time, offset, period time.Duration, warmEnd, end time.Time) tally {
	var t tally
	tm, err := newTimer()
	if err != nil {
		t.errors++
		t.lastErr = err.Error()
		return t
	}
	defer tm.file.Close()
	var c *conn
	for i := 0; ; i++ {
		due := start.Add(offset + time.Duration(i)*period)
		if !due.Before(end) {
			break
		}
		busy := !time.Now().Before(due)
		if !busy {
			if err := tm.sleep(time.Until(due)); err != nil {
				t.errors++
				t.lastErr = err.Error()
				break
			}
		}
		if c == nil {
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.errors++
				t.lastErr = err.Error()
				continue
			}
			c = &conn{c: nc, r: bufio.NewReaderSize(nc, 64*1024)}
		}
		sent := time.Now()
		from := sent
		if busy {
			from = due
		}
		c.c.SetDeadline(sent.Add(10 * time.Second))
		code, closing, err := c.roundTrip(req)
		done := time.Now()
		if err != nil {
			if !due.Before(warmEnd) {
				t.errors++
				t.lastErr = err.Error()
			}
			c.c.Close()
			c = nil
			continue
		}
		if closing {
			c.c.Close()
			c = nil
		}
		if due.Before(warmEnd) {
			continue
		}
		if code < 200 || code > 299 {
			t.non2xx++
		}
		t.lat = append(t.lat, done.Sub(from).Nanoseconds())
	}
	if c != nil {
		c.c.Close()
	}
	return t
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "host:port to connect to")
	host := flag.String("host", "", "Host header (default: -addr)")
	path := flag.String("path", "/", "request path")
	rate := flag.Float64("rate", 5000, "requests per second, all connections together")
	conns := flag.Int("conns", 50, "keep-alive connections")
	warmup := flag.Duration("warmup", 2*time.Second, "sent at the rate but not counted")
	duration := flag.Duration("duration", 10*time.Second, "measured time after the warm-up")
	grpcMode := flag.Bool("grpc", false, "gRPC unary calls over h2c (-path: the method, e.g. /bench.Echo/Unary)")
	flag.Parse()
	if *host == "" {
		*host = *addr
	}
	if *rate <= 0 || *conns <= 0 {
		fmt.Fprintln(os.Stderr, "fixedrate: -rate and -conns must be > 0")
		os.Exit(2)
	}
	var all, lag []int64
	var errs, non2xx int
	lastErr := ""
	var elapsed time.Duration
	if *grpcMode {
		measureFrom := time.Now()
		r, err := runGRPC(*addr, *host, *path, *rate, *conns, *warmup, *duration)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fixedrate:", err)
			os.Exit(1)
		}
		all, lag, errs, lastErr = r.lat, r.lag, r.errors, r.lastErr
		elapsed = time.Since(measureFrom) - *warmup
	} else {
		req := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *host + "\r\nUser-Agent: switchyard-bench-fixedrate\r\n\r\n")
		period := time.Duration(float64(*conns) / *rate * float64(time.Second))
		start := time.Now().Add(50 * time.Millisecond)
		warmEnd := start.Add(*warmup)
		end := warmEnd.Add(*duration)

		results := make([]tally, *conns)
		var wg sync.WaitGroup
		for k := 0; k < *conns; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				results[k] = worker(*addr, req, start, time.Duration(k)*period/time.Duration(*conns), period, warmEnd, end)
			}(k)
		}
		wg.Wait()
		elapsed = time.Since(warmEnd)
		for _, t := range results {
			all = append(all, t.lat...)
			errs += t.errors
			non2xx += t.non2xx
			if t.lastErr != "" {
				lastErr = t.lastErr
			}
		}
	}
	out := map[string]any{
		"rate": *rate, "conns": *conns, "durationS": duration.Seconds(),
		"requests": len(all), "errors": errs, "non2xx": non2xx,
		"achievedRps": float64(len(all)) / math.Min(elapsed.Seconds(), duration.Seconds()),
	}
	if lastErr != "" {
		out["lastError"] = lastErr
	}
	if len(all) == 0 {
		json.NewEncoder(os.Stdout).Encode(out)
		os.Exit(1)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	var sum float64
	for _, v := range all {
		sum += float64(v)
	}
	us := func(ns float64) float64 { return math.Round(ns/10) / 100 } // µs, 2 decimals
	pctOf := func(v []int64, q float64) float64 { return us(float64(v[int(math.Ceil(q*float64(len(v))))-1])) }
	pct := func(q float64) float64 { return pctOf(all, q) }
	out["meanUs"] = us(sum / float64(len(all)))
	out["p50Us"] = pct(0.50)
	out["p90Us"] = pct(0.90)
	out["p99Us"] = pct(0.99)
	out["p999Us"] = pct(0.999)
	out["maxUs"] = us(float64(all[len(all)-1]))
	if len(lag) > 0 {
		// How late the client started calls against the schedule: its own delay, not the server's.
		sort.Slice(lag, func(a, b int) bool { return lag[a] < lag[b] })
		out["lagP99Us"] = pctOf(lag, 0.99)
		out["lagMaxUs"] = us(float64(lag[len(lag)-1]))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
