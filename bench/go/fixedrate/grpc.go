// The gRPC mode of fixedrate (-grpc): unary calls at a fixed rate over
// -conns HTTP/2 connections (grpc-go, h2c), open loop.
//
// One scheduler sends every call when it is due, whatever is still in
// flight, each in its own goroutine, on the connections in turn: a stall in
// the server delays no later call's start, so it is charged to every call it
// holds up (no coordinated omission). A call's latency runs from the moment
// its goroutine starts the call; how late that was against the schedule (our
// own wake-up and scheduling delay) is reported apart as lag, so it is not
// charged to the server but stays visible.
package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// rawCodec sends the request bytes as they are and keeps the response's:
// the client costs as little as possible per call, and the echo is compared
// byte for byte.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// grpcMessage is bench.Msg{payload: "switchyard-bench"} in protobuf, as the
// other gRPC scenarios send it; bench/go/grpc-backend echoes it back.
var grpcMessage = append([]byte{0x0a, 0x10}, "switchyard-bench"...)

type grpcResult struct {
	lat, lag []int64 // ns, measured calls only
	errors   int
	lastErr  string
}

func runGRPC(addr, authority, method string, rate float64, conns int, warmup, duration time.Duration) (grpcResult, error) {
	var res grpcResult
	clients := make([]*grpc.ClientConn, conns)
	for k := range clients {
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(authority),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			return res, err
		}
		defer cc.Close()
		clients[k] = cc
	}
	// One call per connection first, so every connection is up before the schedule starts.
	for _, cc := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out []byte
		err := cc.Invoke(ctx, method, &grpcMessage, &out)
		cancel()
		if err != nil {
			return res, fmt.Errorf("first call: %w", err)
		}
	}

	tm, err := newTimer()
	if err != nil {
		return res, err
	}
	defer tm.file.Close()
	period := time.Duration(float64(time.Second) / rate)
	start := time.Now().Add(50 * time.Millisecond)
	warmEnd := start.Add(warmup)
	end := warmEnd.Add(duration)
	total := int(end.Sub(start) / period)
	lat := make([]int64, total) // per call; 0: not measured (warm-up or failed)
	lag := make([]int64, total)
	var errs atomic.Int64
	var lastErr atomic.Value
	var wg sync.WaitGroup
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * period)
		if d := time.Until(due); d > 0 {
			if err := tm.sleep(d); err != nil {
				return res, err
			}
		}
		wg.Add(1)
		go func(i int, due time.Time, cc *grpc.ClientConn) {
			defer wg.Done()
			measured := !due.Before(warmEnd)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out []byte
			sent := time.Now()
			err := cc.Invoke(ctx, method, &grpcMessage, &out)
			done := time.Now()
			if err == nil && !bytes.Equal(out, grpcMessage) {
				err = fmt.Errorf("response is not the echoed message (%d bytes)", len(out))
			}
			if !measured {
				return
			}
			if err != nil {
				errs.Add(1)
				lastErr.Store(err.Error())
				return
			}
			lat[i] = max(1, done.Sub(sent).Nanoseconds())
			lag[i] = max(0, sent.Sub(due).Nanoseconds())
		}(i, due, clients[i%conns])
	}
	wg.Wait()
	for i := range lat {
		if lat[i] > 0 {
			res.lat = append(res.lat, lat[i])
			res.lag = append(res.lag, lag[i])
		}
	}
	res.errors = int(errs.Load())
	if e, ok := lastErr.Load().(string); ok {
		res.lastErr = e
	}
	return res, nil
}
