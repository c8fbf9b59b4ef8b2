// go-copy-echo: the data-records-off reference for `deno task bench`. One
// goroutine per connection, io.Copy from the socket to itself: what a Go
// programmer writes for an echo server. Listens on 127.0.0.1:$TCP_PORT.
package main

import (
	"io"
	"log"
	"net"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("TCP_PORT"))
	if err != nil {
		log.Fatal(err)
	}
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
