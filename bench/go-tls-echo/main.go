// go-tls-echo: the TLS reference for `deno task bench`. crypto/tls with the
// certificate in $TLS_CERT_FILE and $TLS_KEY_FILE, ALPN "echo", one
// goroutine per connection, io.Copy from the TLS connection to itself.
// Listens on 127.0.0.1:$TLS_PORT (and on $TCP_PORT with plain TCP, so the
// bench starts and stops it as it does the others).
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

func main() {
	cert, err := tls.LoadX509KeyPair(os.Getenv("TLS_CERT_FILE"), os.Getenv("TLS_KEY_FILE"))
	if err != nil {
		log.Fatal(err)
	}
	config := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"echo"}}
	secure, err := tls.Listen("tcp", "127.0.0.1:"+os.Getenv("TLS_PORT"), config)
	if err != nil {
		log.Fatal(err)
	}
	plain, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("TCP_PORT"))
	if err != nil {
		log.Fatal(err)
	}
	go serve(plain)
	serve(secure)
}
