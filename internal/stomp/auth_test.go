package stomp_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// aclFile is a Mosquitto ACL file with the STOMP rules: topics by their
// MQTT names, queues as $queue/<name with '.' as '/'>.
const aclFile = `user alice
topic readwrite allowed/#
topic read ro/#
topic readwrite $queue/mcollective/#
`

func authNode(t *testing.T) string {
	t.Helper()
	bin := peer.NeedBinary(t, "mosquitto_passwd", "mosquitto")
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command(bin, "-c", "-b", pw, "alice", "secret-a").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte(aclFile), 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr := runNode(t, fmt.Sprintf("auth:\n  allow_anonymous: false\n  password_file: %q\n  acl_file: %q\n  throttle: {disabled: true}\n", pw, acl))
	return addr
}

func TestLoginRefused(t *testing.T) {
	t.Parallel()
	addr := authNode(t)
	for _, hs := range [][]string{
		{"login:alice", "passcode:wrong"},
		{"login:mallory", "passcode:x"},
		{}, // anonymous, not allowed
	} {
		c := dial(t, addr)
		c.send(frame("CONNECT", append([]string{"accept-version:1.2"}, hs...)...))
		c.expectErrorClose("")
	}
	c := connect(t, addr, "1.2", "login:alice", "passcode:secret-a")
	c.disconnect()
}

func TestACL(t *testing.T) {
	t.Parallel()
	addr := authNode(t)
	alice := func() *client { return connect(t, addr, "1.2", "login:alice", "passcode:secret-a") }
	c := alice()
	c.subscribe("ok", "/topic/allowed.>")
	c.sendMsg("/topic/allowed.x", "yes")
	if f := c.expect("MESSAGE"); string(f.Body) != "yes" {
		t.Fatalf("got %q", f.Body)
	}
	c.subscribe("ro", "/topic/ro.>")
	c.sendMsg("/queue/mcollective.nodes", "q")
	c.subscribe("q", "/queue/mcollective.nodes")
	if f := c.expect("MESSAGE"); string(f.Body) != "q" {
		t.Fatalf("got %q", f.Body)
	}
	for _, tc := range []struct{ cmd, dest string }{
		{"SUBSCRIBE", "/topic/denied.x"},
		{"SUBSCRIBE", "/topic/>"},
		{"SEND", "/topic/ro.x"},
		{"SEND", "/topic/denied"},
		{"SEND", "/queue/other"},
		{"SUBSCRIBE", "/queue/other"},
	} {
		c := alice()
		c.send(frame(tc.cmd, "id:1", "destination:"+tc.dest, "receipt:r"))
		if e := c.expectErrorClose("not authorized"); e.Value("receipt-id") != "r" {
			t.Errorf("%s %s: ERROR %v", tc.cmd, tc.dest, e.Headers)
		}
	}
}
