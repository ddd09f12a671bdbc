package client

import (
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	c, err := New(Config{URL: "wss://example.org/mqtt", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.target.addr != "example.org:443" || c.target.ws.Path != "/mqtt" || !c.target.tls {
		t.Errorf("target %+v", c.target)
	}
	for url, addr := range map[string]string{"mqtt://h": "h:1883", "mqtts://h": "h:8883", "ws://h": "h:80", "tcp://h:1": "h:1"} {
		tg, err := parseURL(url)
		if err != nil || tg.addr != addr {
			t.Errorf("%s: %+v %v", url, tg, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	c, err := New(Config{URL: "mqtt://h", ClientID: "a", MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for n := 1; n < 10; n++ {
		hi := min(100*time.Millisecond<<n, time.Second)
		for range 50 {
			if d := c.backoff(n); d < 100*time.Millisecond || d > hi {
				t.Fatalf("backoff(%d) = %v, want [100ms, %v]", n, d, hi)
			}
		}
	}
}
