// go-copy-echo: the reference servers of `deno task bench`. One goroutine
// per connection, io.Copy from the connection to itself: what a Go
// programmer writes for an echo server. Listens on 127.0.0.1:$TCP_PORT; with
// $TLS_PORT also there with crypto/tls (the certificate in $TLS_CERT_FILE
// and $TLS_KEY_FILE, ALPN "echo"); with $UDP_PORT, a UDP echo there too: one
// goroutine, ReadFrom and WriteTo on one buffer, every datagram back as it came.
package main

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"os"
)

func serve(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			io.Copy(c, c)
		}(conn)
	}
}

func serveUDP(port string) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:"+port)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 65536)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		pc.WriteTo(buf[:n], addr)
	}
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("TCP_PORT"))
	if err != nil {
		log.Fatal(err)
	}
	if port := os.Getenv("TLS_PORT"); port != "" {
		cert, err := tls.LoadX509KeyPair(os.Getenv("TLS_CERT_FILE"), os.Getenv("TLS_KEY_FILE"))
		if err != nil {
			log.Fatal(err)
		}
		config := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"echo"}}
		secure, err := tls.Listen("tcp", "127.0.0.1:"+port, config)
		if err != nil {
			log.Fatal(err)
		}
		go serve(secure)
	}
	if port := os.Getenv("UDP_PORT"); port != "" {
		go serveUDP(port)
	}
	serve(ln)
}
