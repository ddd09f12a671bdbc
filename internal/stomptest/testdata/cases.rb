# Black-box STOMP cases driven by ruby-stomp (Debian ruby-stomp 1.4.10, the
# client library of MCollective's activemq connector).
#
# Usage: ruby cases.rb --target isobar|activemq --addr HOST:PORT CASE
#
# Exit 0 and "ok" when the broker behaved as expected, 1 and "FAIL: ..."
# otherwise. Users as in cases.py (admin/adminpw, alice/alicepw).

require "stomp"
require "securerandom"

$target = nil
$host = nil
$port = nil
P = "r" + SecureRandom.hex(4) # destination prefix of this run
WAIT = 3.0
QUIET = 0.7

class Fail < StandardError; end

def check(cond, msg)
  raise Fail, msg unless cond
end

def connect(user: "admin", pw: "adminpw", version: "1.2", hb: "0,0")
  Stomp::Connection.new(
    hosts: [{ login: user, passcode: pw, host: $host, port: $port, ssl: false }],
    reliable: false, connect_timeout: 5, max_reconnect_attempts: 0, closed_check: false,
    connect_headers: { "accept-version" => version, "host" => "localhost", "heart-beat" => hb }
  )
end

# receive returns the next MESSAGE (or ERROR) frame, or nil after timeout.
def receive(c, timeout = WAIT)
  deadline = Time.now + timeout
  while Time.now < deadline
    m = c.poll
    return m if m
    sleep 0.02
  end
  nil
end

def msg(c, what)
  m = receive(c)
  check(m, "no frame within #{WAIT}s (#{what})")
  check(m.command == "MESSAGE", "#{what}: got #{m.command} #{m.headers} #{m.body}")
  m
end

def nothing(c, what)
  m = receive(c, QUIET)
  check(m.nil?, "#{what}: got #{m && m.command} #{m && m.headers} #{m && m.body.inspect}")
end

def with_receipt(c, rid)
  yield rid
  m = receive(c)
  check(m && m.command == "RECEIPT" && m.headers["receipt-id"] == rid,
        "expected RECEIPT #{rid}, got #{m ? "#{m.command} #{m.headers}" : "nothing"}")
end

def case_connect
  %w[1.0 1.1 1.2].each do |v|
    c = connect(version: v)
    f = c.connection_frame
    puts "#{v}: #{f.command} #{f.headers}"
    check(f.command == "CONNECTED", "#{v}: #{f.command}")
    check(f.headers["version"] == v, "#{v}: version #{f.headers["version"]}")
    check(c.protocol == v, "ruby-stomp negotiated #{c.protocol}")
    c.disconnect(receipt: "bye")
  end
end

def case_login_refused
  [%w[admin wrong], %w[nobody x]].each do |u, p|
    begin
      c = connect(user: u, pw: p)
      f = c.connection_frame
      puts "#{u}: #{f.command} #{f.headers}"
      check(f.command == "ERROR", "login #{u}/#{p}: #{f.command}")
    rescue Stomp::Error::StompServerError, Stomp::Error::ProtocolError, Errno::ECONNRESET, EOFError => e
      # ruby-stomp raises on an ERROR answer to CONNECT in some versions.
      puts "#{u}: #{e.class} #{e.message}"
    end
  end
end

def case_topic
  t = "/topic/#{P}.rb"
  subs = (0..2).map { |i| c = connect; with_receipt(c, "s#{i}") { |r| c.subscribe(t, { id: "s#{i}", receipt: r }) }; c }
  pub = connect(version: "1.1")
  10.times { |i| pub.publish(t, "m#{i}", { "x-seq" => i.to_s, "x-esc" => "a:b" }) }
  with_receipt(pub, "p") { |r| pub.publish(t, "last", { receipt: r }) }
  subs.each_with_index do |c, i|
    got = (0..10).map { msg(c, "sub #{i}").body }
    check(got == (0..9).map { |j| "m#{j}" } + ["last"], "sub #{i} got #{got}")
  end
  (subs + [pub]).each(&:disconnect)
end

def case_queue_client_ack
  q = "/queue/#{P}.rbq"
  s = connect
  with_receipt(s, "snd") { |r| 3.times { |i| s.publish(q, "m#{i}") }; s.publish(q, "m3", { receipt: r }) }
  c = connect
  c.subscribe(q, { id: "q", ack: "client-individual" })
  ms = (0..3).map { msg(c, "queued") }
  check(ms.map(&:body) == %w[m0 m1 m2 m3], "queue order #{ms.map(&:body)}")
  [0, 1, 3].each { |i| c.ack(ms[i].headers["ack"]) }
  c.disconnect
  c = connect(version: "1.1")
  c.subscribe(q, { id: "q2", ack: "client" })
  m = msg(c, "m2 again")
  check(m.body == "m2", "after acks got #{m.body}")
  check(m.headers["redelivered"] == "true", "redelivered header #{m.headers["redelivered"].inspect}")
  c.ack(m.headers["message-id"], { subscription: "q2" })
  nothing(c, "all acked")
  c.disconnect
  s.disconnect
end

def case_selector
  q = "/queue/#{P}.nodes"
  a = connect
  b = connect
  with_receipt(a, "a") { |r| a.subscribe(q, { id: "a", selector: "mc_identity = 'node1'", receipt: r }) }
  with_receipt(b, "b") { |r| b.subscribe(q, { id: "b", selector: "mc_identity = 'node2'", receipt: r }) }
  s = connect
  %w[node2 node1 node3 node1].each { |n| s.publish(q, n, { mc_identity: n }) }
  check([msg(a, "node1").body, msg(a, "node1").body] == %w[node1 node1], "node1 selector")
  check(msg(b, "node2").body == "node2", "node2 selector")
  nothing(a, "node3 is for nobody")
  nothing(b, "node3 is for nobody")
  [a, b, s].each(&:disconnect)
end

def case_heartbeat
  # ruby-stomp sends heart-beats from its own thread and checks the
  # server's; the connection must stay up for 3 s. The rates are negotiated
  # (the larger of offer and wish in each direction), so the counts are
  # checked against what CONNECTED says.
  c = connect(hb: "500,1000")
  hb = c.connection_frame.headers["heart-beat"]
  puts "CONNECTED heart-beat #{hb}"
  sx, sy = hb.split(",").map(&:to_i)
  sleep 3
  check(c.open?, "connection closed despite heart-beats")
  send_ms = sy.zero? ? 0 : [500, sy].max
  recv_ms = sx.zero? ? 0 : [sx, 1000].max
  puts "negotiated: client every #{send_ms} ms, server every #{recv_ms} ms; sent #{c.hbsend_count} received #{c.hbrecv_count}"
  check(send_ms.zero? || send_ms > 1500 || c.hbsend_count > 1, "ruby-stomp sent #{c.hbsend_count} heart-beats")
  check(recv_ms.zero? || recv_ms > 1500 || c.hbrecv_count > 0, "ruby-stomp received #{c.hbrecv_count} heart-beats")
  check(recv_ms.positive? && recv_ms <= 1500, "server sends no heart-beats every 1 s: #{hb}")
  t = "/topic/#{P}.hb"
  with_receipt(c, "sub") { |r| c.subscribe(t, { id: "x", receipt: r }) }
  c.publish(t, "alive")
  check(msg(c, "after heart-beats").body == "alive", "message after heart-beats")
  c.disconnect
end

def case_transaction
  q = "/queue/#{P}.rbtx"
  s = connect
  r = connect
  with_receipt(r, "sub") { |x| r.subscribe(q, { id: "q", receipt: x }) }
  s.begin("t1")
  s.publish(q, "in-tx", { transaction: "t1" })
  nothing(r, "before COMMIT")
  s.commit("t1")
  check(msg(r, "after COMMIT").body == "in-tx", "committed")
  s.begin("t2")
  s.publish(q, "aborted", { transaction: "t2" })
  s.abort("t2")
  nothing(r, "after ABORT")
  [r, s].each(&:disconnect)
end

def main
  args = ARGV.dup
  while args.size > 1
    k = args.shift
    case k
    when "--target" then $target = args.shift
    when "--addr" then $host, port = args.shift.split(":"); $port = port.to_i
    else
      puts "unknown flag #{k}"
      exit 2
    end
  end
  name = "case_#{args.shift}"
  unless respond_to?(name, true)
    puts "unknown case #{name}"
    exit 2
  end
  begin
    send(name)
  rescue Fail => e
    puts "FAIL: #{e.message}"
    exit 1
  end
  puts "ok"
  exit 0
end

main
