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

// rbScript drives ruby-stomp (Stomp::Connection): connect, topic and
// queue with client acks, a receipt and a transaction; prints OK.
const rbScript = `
require 'stomp'
require 'timeout'
host, port, version = ARGV[0], ARGV[1].to_i, ARGV[2]
ns = "rb.v" + version.delete('.') + "."
hash = { hosts: [{ login: 'guest', passcode: 'guest', host: host, port: port }], reliable: false,
         connect_timeout: 5, max_reconnect_attempts: 1 }
if version != '1.0'
  hash[:connect_headers] = { 'accept-version' => version, 'host' => 'isobar', 'heart-beat' => '0,0' }
end
c = Stomp::Connection.new(hash)
raise "protocol #{c.protocol}" unless c.protocol == version
def recv(c)
  Timeout.timeout(5) { c.receive }
end
def ack(c, version, m, sid)
  case version
  when '1.2' then c.ack(m.headers['ack'])
  when '1.1' then c.ack(m.headers['message-id'], 'subscription' => sid)
  else c.ack(m.headers['message-id'])
  end
end

c.subscribe("/topic/#{ns}t", { 'id' => 't1' })
c.publish("/topic/#{ns}t", 'hello', { 'receipt' => 'r1', 'x-rb' => 'yes' })
got = []
2.times { got << recv(c) }
r = got.find { |f| f.command == 'RECEIPT' }
m = got.find { |f| f.command == 'MESSAGE' }
raise "no receipt: #{got.map(&:command)}" unless r && r.headers['receipt-id'] == 'r1'
raise "message #{m.inspect}" unless m && m.body == 'hello' && m.headers['x-rb'] == 'yes'

c.subscribe("/queue/#{ns}q", { 'id' => 'q1', 'ack' => 'client-individual' })
c.begin('tx')
c.publish("/queue/#{ns}q", 'in-tx', { 'transaction' => 'tx' })
c.commit('tx')
m = recv(c)
raise "queue message #{m.command} #{m.body}" unless m.command == 'MESSAGE' && m.body == 'in-tx'
ack(c, version, m, 'q1')
c.unsubscribe("/queue/#{ns}q", { 'id' => 'q1' })
c.disconnect
puts 'OK'
`

func TestRubyStomp(t *testing.T) {
	t.Parallel()
	rb, err := exec.LookPath("ruby")
	peer.Need(t, err == nil && exec.Command(rb, "-e", `require "stomp"`).Run() == nil,
		"ruby-stomp is not installed (apt-get install ruby-stomp)")
	_, addr := runNode(t, "")
	host, port, _ := net.SplitHostPort(addr)
	script := filepath.Join(t.TempDir(), "client.rb")
	if err := os.WriteFile(script, []byte(rbScript), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.0", "1.1", "1.2"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, rb, script, host, port, v).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("ruby-stomp %s: %v\n%s", v, err, out)
			}
		})
	}
}
