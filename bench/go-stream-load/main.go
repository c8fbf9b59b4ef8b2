// go-stream-load: the stream client of `deno task bench`. It opens CONNS
// connections, reads and skips the banner (everything before the echo of a
// sync line), then streams CHUNK-byte writes of a repeating pattern for
// SECONDS while a reader checks every echoed byte. Prints one JSON line.
// Usage: go-stream-load PORT CONNS CHUNK SECONDS
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var sync_token = []byte("\x01SYNC\n")

func main() {
	if len(os.Args) != 5 {
		os.Exit(2)
	}
	port := os.Args[1]
	conns, _ := strconv.Atoi(os.Args[2])
	chunk, _ := strconv.Atoi(os.Args[3])
	seconds, _ := strconv.ParseFloat(os.Args[4], 64)
	pattern := make([]byte, 1<<20)
	for i := range pattern {
		pattern[i] = byte(i*7 + i>>8)
	}
	var verified, failures int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(time.Duration(seconds * float64(time.Second)))
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := stream(port, pattern, chunk, deadline)
			atomic.AddInt64(&verified, n)
			if err != nil {
				atomic.AddInt64(&failures, 1)
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("{\"conns\":%d,\"chunk\":%d,\"seconds\":%.3f,\"bytes\":%d,\"mb_per_sec\":%.1f,\"failures\":%d}\n",
		conns, chunk, elapsed, verified, float64(verified)/elapsed/1e6, failures)
}

func stream(port string, pattern []byte, chunk int, deadline time.Time) (int64, error) {
	conn, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if _, err := conn.Write(sync_token); err != nil {
		return 0, err
	}
	seen := make([]byte, 0, 4096)
	one := make([]byte, 4096)
	for !bytes.HasSuffix(seen, sync_token) {
		n, err := conn.Read(one)
		if err != nil {
			return 0, err
		}
		seen = append(seen, one[:n]...)
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
		conn.(*net.TCPConn).CloseWrite()
		errs <- nil
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
