package relayclickhouse

import (
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DefaultOptions returns connection options suited to a Recorder: the
// native protocol, LZ4 compression, a small pool (the relay writes from one
// goroutine; readiness pings take another connection) and a 5s DialTimeout,
// so that a dead server fails a write well within the AsyncRecorder's
// default 10s WriteTimeout. The user is "default" with no password.
//
// Change what you need before passing them to clickhouse.Open: Auth for
// credentials, TLS for an encrypted connection. Leave DialContext unset
// when using TLS: the driver ignores TLS when DialContext is set. Servers
// before 19.x (such as 18.16) accept only integer and boolean Settings.
func DefaultOptions(addrs ...string) *clickhouse.Options {
	return &clickhouse.Options{
		Addr:            addrs,
		Protocol:        clickhouse.Native,
		Compression:     &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		DialTimeout:     5 * time.Second,
		MaxOpenConns:    4,
		MaxIdleConns:    2,
		ConnMaxLifetime: 10 * time.Minute,
	}
}

// Open opens a connection pool to the servers at addrs (host:port of the
// native protocol, port 9000 by default) with DefaultOptions. It does not
// dial: the first use does. Close the connection when done.
func Open(addrs ...string) (driver.Conn, error) {
	return clickhouse.Open(DefaultOptions(addrs...))
}
