package stomp_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// pyScript drives python3-stomp through topics, ack modes, receipts,
// transactions, heart-beats, queue load balancing and a selector, and
// prints OK (or raises).
const pyScript = `
import sys, time, threading, stomp

host, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ns = 'py.v' + version.replace('.', '') + '.'
cls = {'1.0': stomp.Connection10, '1.1': stomp.Connection11, '1.2': stomp.Connection12}[version]

class L(stomp.ConnectionListener):
    def __init__(self):
        self.msgs, self.errors, self.cv = [], [], threading.Condition()
    def on_message(self, frame):
        with self.cv:
            self.msgs.append(frame); self.cv.notify_all()
    def on_error(self, frame):
        self.errors.append(frame)
    def wait(self, n, t=5.0):
        end = time.time() + t
        with self.cv:
            while len(self.msgs) < n and time.time() < end:
                self.cv.wait(0.05)
        assert len(self.msgs) >= n, "got %d messages, want %d" % (len(self.msgs), n)
        out, self.msgs = self.msgs[:n], self.msgs[n:]
        return out
    def none(self, t=0.3):
        time.sleep(t)
        assert not self.msgs, "unexpected %r" % self.msgs

def conn():
    kw = {} if version == '1.0' else {'heartbeats': (1000, 1000)}
    c = cls([(host, port)], **kw)
    l = L()
    c.set_listener('l', l)
    c.connect('guest', 'guest', wait=True)
    return c, l

def ack(c, f):
    h = f.headers
    if version == '1.2':
        c.ack(h['ack'])
    elif version == '1.1':
        c.ack(h['message-id'], h['subscription'])
    else:
        c.ack(h['message-id'])

c, l = conn()
# Topic with a receipt.
c.subscribe('/topic/' + ns + 't', id='t')
time.sleep(0.1)
c.send('/topic/' + ns + 't', 'hello', headers={'x-app': 'py', 'receipt': 'r1'})
m = l.wait(1)[0]
assert m.body == 'hello' and m.headers['x-app'] == 'py' and m.headers['destination'] == '/topic/' + ns + 't', m.headers

# Transactions.
c.begin('tx1')
c.send('/topic/' + ns + 't', 'a', transaction='tx1')
c.send('/topic/' + ns + 't', 'b', transaction='tx1')
l.none()
c.commit('tx1')
assert [m.body for m in l.wait(2)] == ['a', 'b']
c.begin('tx2')
c.send('/topic/' + ns + 't', 'lost', transaction='tx2')
c.abort('tx2')
l.none()

# Queue, client-individual acks, two consumers sharing the load.
c2, l2 = conn()
c.subscribe('/queue/' + ns + 'q', id='q1', ack='client-individual', headers={'activemq.prefetchSize': '1'})
c2.subscribe('/queue/' + ns + 'q', id='q2', ack='client-individual', headers={'activemq.prefetchSize': '1'})
time.sleep(0.1)
for i in range(6):
    c.send('/queue/' + ns + 'q', str(i), headers={'persistent': 'true'})
got = []
end = time.time() + 5
while len(got) < 6 and time.time() < end:
    for cc, ll in ((c, l), (c2, l2)):
        if ll.msgs:
            f = ll.msgs.pop(0)
            got.append((cc is c, f.body))
            ack(cc, f)
    time.sleep(0.01)
assert sorted(b for _, b in got) == [str(i) for i in range(6)], got
assert any(x for x, _ in got) and not all(x for x, _ in got), "one consumer got everything: %r" % got

# client (cumulative) acks: ack the last of three.
c.unsubscribe('q1')
c2.unsubscribe('q2')
c.subscribe('/queue/' + ns + 'c', id='c1', ack='client')
time.sleep(0.1)
for i in range(3):
    c.send('/queue/' + ns + 'c', str(i))
ms = l.wait(3)
ack(c, ms[-1])
c.unsubscribe('c1')
c.subscribe('/queue/' + ns + 'c', id='c2', ack='client')
l.none(0.3)

# Selector.
c.subscribe('/queue/' + ns + 's', id='s', headers={'selector': "kind = 'b' AND n > 1"})
time.sleep(0.1)
for kind, n in (('a', 5), ('b', 1), ('b', 2)):
    c.send('/queue/' + ns + 's', kind + str(n), headers={'kind': kind, 'n': str(n)})
assert [m.body for m in l.wait(1)] == ['b2']
l.none()

# Heart-beats keep an idle connection open (the node asks for 1s).
if version != '1.0':
    time.sleep(3.5)
    assert c.is_connected()
    c.send('/topic/' + ns + 't', 'after-idle')
    assert l.wait(1)[0].body == 'after-idle'

assert not l.errors and not l2.errors, [e.body for e in l.errors + l2.errors]
c.disconnect()
c2.disconnect()
print('OK')
`

func TestPythonStomp(t *testing.T) {
	t.Parallel()
	const py = "/usr/bin/python3"
	_, err := os.Stat(py)
	peer.Need(t, err == nil && exec.Command(py, "-c", "import stomp").Run() == nil,
		"python3-stomp is not installed (apt-get install python3-stomp)")
	_, addr := runNode(t, "stomp: {heart_beat_send: 1s, heart_beat_receive: 1s}\n")
	host, port, _ := net.SplitHostPort(addr)
	script := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(script, []byte(pyScript), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.0", "1.1", "1.2"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, py, script, host, port, v).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("python3-stomp %s: %v\n%s", v, err, out)
			}
		})
	}
}
