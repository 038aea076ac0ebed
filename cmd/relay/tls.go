package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certificate serves server.tls: the certificate and key files, read again
// when either changes (a renewal by certbot or cert-manager, a Kubernetes
// Secret's new version) and on every reload, so that a new certificate
// needs no restart. A handshake looks at the files' modification times
// and sizes (two stats) at most once per certCheckEvery, and only one
// handshake at a time does: a flood of handshakes, which any client can
// send, costs no extra syscalls and never queues on a lock. A pair that
// does not load — say, the certificate is new but the key is not written
// yet — leaves the previous certificate in use and is logged once.
//
// It is safe for concurrent use.
type certificate struct {
	log *slog.Logger
	now func() time.Time // time.Now unless a test steps it

	current atomic.Pointer[tls.Certificate]
	next    atomic.Int64 // UnixNano before which handshakes do not look at the files

	mu       sync.Mutex
	certFile string
	keyFile  string
	stamp    [2]fileStamp // of the files the current certificate came from
	badStamp [2]fileStamp // of the last pair that failed to load
}

// certCheckEvery is how often handshakes look for renewed files: a renewal
// is served within a second, and a handshake flood stats the files once
// per second at most.
const certCheckEvery = time.Second

// fileStamp tells a file's versions apart.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// newCertificate loads the pair, failing when it does not load.
// now is the clock the renewal checks are paced by (nil: time.Now).
func newCertificate(certFile, keyFile string, log *slog.Logger, now func() time.Time) (*certificate, error) {
	if now == nil {
		now = time.Now
	}
	c := &certificate{log: log, now: now}
	if err := c.use(certFile, keyFile); err != nil {
		return nil, err
	}
	return c, nil
}

// use loads a pair (new paths on a reload, or the same files again) and
// serves it from now on; on error the current certificate stays.
func (c *certificate) use(certFile, keyFile string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.load(certFile, keyFile)
	if err != nil {
		return err
	}
	c.certFile, c.keyFile, c.stamp = certFile, keyFile, st
	c.next.Store(c.now().Add(certCheckEvery).UnixNano())
	return nil
}

// load reads and parses a pair. Errors name the files, never their
// content. Called with c.mu held.
func (c *certificate) load(certFile, keyFile string) ([2]fileStamp, error) {
	var st [2]fileStamp
	for i, p := range []string{certFile, keyFile} {
		s, err := stampOf(p)
		if err != nil {
			return st, fmt.Errorf("tls: %w", err)
		}
		st[i] = s
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return st, fmt.Errorf("tls: %w", err)
		}
		// crypto/tls's parse errors describe the PEM, never the key.
		return st, fmt.Errorf("tls: %s and %s: %w", certFile, keyFile, err)
	}
	c.current.Store(&pair)
	return st, nil
}

// get is tls.Config.GetCertificate.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	t := c.now()
	if t.UnixNano() < c.next.Load() || !c.mu.TryLock() {
		// Checked lately, or another handshake is checking now.
		return c.current.Load(), nil
	}
	defer c.mu.Unlock()
	c.next.Store(t.Add(certCheckEvery).UnixNano())
	var now [2]fileStamp
	for i, p := range []string{c.certFile, c.keyFile} {
		s, err := stampOf(p)
		if err != nil {
			// A file replaced by a rename may be missing for an instant.
			return c.current.Load(), nil
		}
		now[i] = s
	}
	if now == c.stamp || now == c.badStamp {
		return c.current.Load(), nil
	}
	st, err := c.load(c.certFile, c.keyFile)
	if err != nil {
		c.badStamp = now
		c.log.Warn("tls: the changed certificate files do not load; still serving the previous certificate",
			"cert_file", c.certFile, "key_file", c.keyFile, "error", err.Error())
		return c.current.Load(), nil
	}
	c.stamp = st
	cur := c.current.Load()
	c.log.Info("tls: certificate reloaded", "cert_file", c.certFile, "not_after", cur.Leaf.NotAfter)
	return cur, nil
}

// tlsConfig is the listener's TLS configuration: TLS 1.2 or later, the
// certificate from c, and ALPN as http.Server sets it (h2, http/1.1).
func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
}
