package broker

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzServerInput feeds arbitrary bytes to a live server after a valid
// CONNECT (MQTT 3.1.1 or 5.0, chosen by the first byte): whatever arrives,
// the server answers or closes, never panics, and never blocks the
// connection's goroutine (the pipe is drained until the server closes it).
func FuzzServerInput(f *testing.F) {
	for _, seed := range [][]byte{
		{5, 0x82, 0x07, 0x12, 0x34, 0x00, 0x00, 0x01, 'a', 0x01},                             // SUBSCRIBE a
		{5, 0x30, 0x06, 0x00, 0x01, 'a', 0x00, 'h', 'i'},                                     // PUBLISH
		{4, 0x32, 0x07, 0x00, 0x01, 'a', 0x00, 0x01, 'h', 'i'},                               // PUBLISH QoS 1
		{5, 0x34, 0x08, 0x00, 0x01, 'a', 0x00, 0x01, 0x00, 'h', 'i', 0x62, 0x02, 0x00, 0x01}, // QoS 2 + PUBREL
		{5, 0x30, 0x0A, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 'x'},                             // alias without topic
		{4, 0xC0, 0x00, 0xE0, 0x00},                                                          // PINGREQ, DISCONNECT
		{5, 0x10, 0x00},                                                                      // second CONNECT
		{5, 0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F},                                              // bad remaining length
		{5, 0xA2, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00},                                        // UNSUBSCRIBE empty filter
		{5, 0xF0, 0x02, 0x18, 0x00},                                                          // AUTH
	} {
		f.Add(seed)
	}
	fuzzSrv := New(Options{ConnectTimeout: time.Second, WriteTimeout: time.Second}, nil, nil)
	f.Cleanup(func() { _ = fuzzSrv.Shutdown(context.Background()) })
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		version := byte(4)
		if data[0]&1 == 1 {
			version = 5
		}
		connect := []byte{0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 0x02, 0x00, 0x3C, 0x00, 0x01, 'f'}
		if version == 5 {
			connect = []byte{0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 5, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x01, 'f'}
		}
		client, server := net.Pipe()
		fuzzSrv.ServeConn(server, "fuzz")
		done := make(chan struct{})
		go func() { // drain whatever the server sends
			defer close(done)
			_, _ = io.Copy(io.Discard, client)
		}()
		_ = client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = client.Write(connect)
		_, _ = client.Write(data[1:])
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server did not finish with the connection")
		}
	})
}
