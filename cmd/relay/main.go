// Command relay is Stream Relay as a standalone server: a streaming gateway
// for LLM and TTS APIs configured by a YAML file.
//
//	relay -config relay.yaml
//	relay -demo              # a built-in mock upstream; no network needed
//
// See README.md beside this file for the configuration reference.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process at once.
		<-ctx.Done()
		stop()
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, hup)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "relay:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}
