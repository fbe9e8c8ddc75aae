// grpc-backend: the gRPC peer of the benchmark, a real grpc-go server for
// bench.Echo/Unary (bench/proto/bench.proto) that sends the request message
// back unchanged. It runs on the load generator's core, so it must cost as
// little as possible per call: a raw-bytes codec (no protobuf decode/encode)
// and a hand-written ServiceDesc (no generated code, no protoc needed).
//
//	grpc-backend -addr 127.0.0.1:PORT
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
)

// rawCodec passes message bytes through: the echo needs no decoding.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func unary(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var msg []byte
	if err := dec(&msg); err != nil {
		return nil, err
	}
	return &msg, nil
}

var echoService = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: unary}},
	Metadata:    "bench.proto",
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "listen address")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.MaxConcurrentStreams(1000))
	srv.RegisterService(&echoService, struct{}{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Stop()
	}()
	fmt.Printf("listening %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
