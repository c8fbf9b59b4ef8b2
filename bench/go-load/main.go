// go-load: the load client of `deno task bench` where a Go client is used.
// Prints one JSON line.
//
//	go-load PORT stream CONNS CHUNK SECONDS [tls]
//	go-load PORT connect CONNS SECONDS [tls]
//
// stream: CONNS connections each send a sync line and skip everything before
// its echo (the banner), then write CHUNK-byte pieces of a repeating pattern
// for SECONDS while a reader checks every echoed byte, then half-close.
// connect: CONNS workers each connect (with tls, a full TLS 1.3 handshake:
// ECDHE, no session resumption), send the sync line, read until its echo
// and close, again and again: connections (handshakes) per second.
// With tls, server certificates are not verified (the bench makes its own).
// The process's CPU time over the run is reported as client_cpu (1.0 = a
// whole core), to tell a server limit from the client's.
package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var syncToken = []byte("\x01SYNC\n")

func config() *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true,
		NextProtos:         []string{"echo"},
		ServerName:         "localhost",
		// A fresh handshake every time: no session tickets.
		ClientSessionCache: nil,
		MinVersion:         tls.VersionTLS13,
	}
}

// conn is what both kinds of connection offer: TCP's and TLS's.
type conn interface {
	net.Conn
	CloseWrite() error
}

func dial(port string, secure bool) (conn, error) {
	raw, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil || !secure {
		if err != nil {
			return nil, err
		}
		return raw.(*net.TCPConn), nil
	}
	c := tls.Client(raw, config())
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// synchronize writes the sync line and reads until its echo: whatever came before is a banner.
func synchronize(conn conn) error {
	if _, err := conn.Write(syncToken); err != nil {
		return err
	}
	seen := make([]byte, 0, 4096)
	one := make([]byte, 4096)
	for !bytes.HasSuffix(seen, syncToken) {
		n, err := conn.Read(one)
		if err != nil {
			return err
		}
		seen = append(seen, one[:n]...)
	}
	return nil
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

func main() {
	if len(os.Args) < 5 {
		os.Exit(2)
	}
	port, mode := os.Args[1], os.Args[2]
	conns, _ := strconv.Atoi(os.Args[3])
	rest := os.Args[4:]
	chunk := 0
	if mode == "stream" {
		chunk, _ = strconv.Atoi(rest[0])
		rest = rest[1:]
	}
	seconds, _ := strconv.ParseFloat(rest[0], 64)
	secure := len(rest) > 1 && rest[1] == "tls"
	pattern := make([]byte, 1<<20)
	for i := range pattern {
		pattern[i] = byte(i*7 + i>>8)
	}
	var done, verified, failures int64
	var wg sync.WaitGroup
	cpuStart := cpuSeconds()
	start := time.Now()
	deadline := start.Add(time.Duration(seconds * float64(time.Second)))
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if mode == "connect" {
				for time.Now().Before(deadline) && err == nil {
					var conn conn
					if conn, err = dial(port, secure); err == nil {
						err = synchronize(conn)
						conn.Close()
						if err == nil {
							atomic.AddInt64(&done, 1)
						}
					}
				}
			} else {
				var n int64
				n, err = stream(port, secure, pattern, chunk, deadline)
				atomic.AddInt64(&verified, n)
			}
			if err != nil {
				atomic.AddInt64(&failures, 1)
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("{\"mode\":%q,\"conns\":%d,\"seconds\":%.3f,\"connections_per_sec\":%.1f,"+
		"\"mb_per_sec\":%.1f,\"client_cpu\":%.2f,\"failures\":%d}\n",
		mode, conns, elapsed, float64(done)/elapsed, float64(verified)/elapsed/1e6,
		(cpuSeconds()-cpuStart)/elapsed, failures)
}

func stream(port string, secure bool, pattern []byte, chunk int, deadline time.Time) (int64, error) {
	conn, err := dial(port, secure)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := synchronize(conn); err != nil {
		return 0, err
	}
	var sent int64
	errs := make(chan error, 1)
	go func() {
		for time.Now().Before(deadline) {
			off := int(sent % int64(len(pattern)))
			end := off + chunk
			if end > len(pattern) {
				end = len(pattern)
			}
			if _, err := conn.Write(pattern[off:end]); err != nil {
				errs <- err
				return
			}
			sent += int64(end - off)
		}
		errs <- conn.CloseWrite()
	}()
	buf := make([]byte, 65536)
	var got int64
	for {
		n, err := conn.Read(buf)
		for i := 0; i < n; {
			off := int((got + int64(i)) % int64(len(pattern)))
			run := len(pattern) - off
			if run > n-i {
				run = n - i
			}
			if !bytes.Equal(buf[i:i+run], pattern[off:off+run]) {
				return got, fmt.Errorf("byte %d differs", got+int64(i))
			}
			i += run
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return got, err
		}
	}
	if werr := <-errs; werr != nil {
		return got, werr
	}
	if got != sent {
		return got, fmt.Errorf("%d of %d bytes came back", got, sent)
	}
	return got, nil
}
