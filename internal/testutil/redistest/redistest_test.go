package redistest

import (
	"testing"
	"time"
)

func TestStandalone(t *testing.T) {
	s := Start(t, Options{Password: "pw"})
	if _, err := s.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Do("GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET = %v, %v", v, err)
	}
	if _, err := Do(s.Addr, "", "GET", "k"); err == nil {
		t.Fatal("GET without the password succeeded")
	}
	s.Kill()
	if s.Running() {
		t.Fatal("running after Kill")
	}
	s.Restart()
	if v, err := s.Do("GET", "k"); err != nil || v != nil {
		t.Fatalf("GET after restart (no persistence) = %v, %v", v, err)
	}
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 6-node cluster")
	}
	start := time.Now()
	c := StartCluster(t, 3, 1, Options{})
	t.Logf("cluster ok after %v", time.Since(start))
	ms := c.Masters()
	if len(ms) != 3 {
		t.Fatalf("masters = %d", len(ms))
	}
	ms[0].Kill()
	start = time.Now()
	c.WaitOK(20 * time.Second)
	t.Logf("failover done after %v", time.Since(start))
	if n := len(c.Masters()); n != 3 {
		t.Fatalf("masters after failover = %d", n)
	}
}
