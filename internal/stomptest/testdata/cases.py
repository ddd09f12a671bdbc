#!/usr/bin/python3
"""Black-box STOMP cases driven by python3-stomp (Debian python3-stomp 8.0).

Usage: cases.py --target isobar|activemq --addr HOST:PORT CASE

Each case prints what it saw and exits 0 when the broker behaved as
expected, 1 with a message otherwise. Where ActiveMQ 5.17 and Isobar
deliberately differ, the case says so and checks each target's own
expectation (variable TARGET). Every destination name carries a random
prefix so that cases sharing one broker never see each other's messages.

Users (the same on both targets, see target_test.go): admin/adminpw may
do everything; alice/alicepw may use alice.> (topics and queues), only read
ro.> and only write wo.> topics.
"""

import argparse
import queue
import socket
import sys
import threading
import time
import uuid

import stomp

TARGET = "isobar"
HOST, PORT = "127.0.0.1", 0
P = "t" + uuid.uuid4().hex[:8]  # destination prefix of this run
WAIT = 3.0  # seconds to wait for something that must arrive
QUIET = 0.7  # seconds of silence that mean "nothing arrives"


class Fail(Exception):
    pass


def check(cond, msg, *args):
    if not cond:
        raise Fail(msg % args if args else msg)


def log(msg, *args):
    print(msg % args if args else msg, flush=True)


class Rec(stomp.ConnectionListener):
    """Records everything a connection receives, in order."""

    def __init__(self, name):
        self.name = name
        self.msgs = queue.Queue()
        self.errors = queue.Queue()
        self.receipts = queue.Queue()
        self.connected = queue.Queue()
        self.gone = threading.Event()

    def on_message(self, f):
        self.msgs.put(f)

    def on_error(self, f):
        self.errors.put(f)

    def on_receipt(self, f):
        self.receipts.put(f.headers.get("receipt-id"))

    def on_connected(self, f):
        self.connected.put(f)

    def on_disconnected(self):
        self.gone.set()

    def msg(self, what="a message", timeout=WAIT):
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            raise Fail("%s: no MESSAGE within %.1fs (%s)" % (self.name, timeout, what))

    def bodies(self, n, what="messages"):
        return [body(self.msg("%s %d/%d" % (what, i + 1, n))) for i in range(n)]

    def nothing(self, what="nothing", wait=QUIET):
        try:
            f = self.msgs.get(timeout=wait)
        except queue.Empty:
            return
        raise Fail("%s: expected %s, got MESSAGE %s %r" % (self.name, what, f.headers, f.body))

    def receipt(self, rid, timeout=WAIT):
        try:
            got = self.receipts.get(timeout=timeout)
        except queue.Empty:
            raise Fail("%s: no RECEIPT %s within %.1fs" % (self.name, rid, timeout))
        check(got == rid, "%s: RECEIPT receipt-id %r, want %r", self.name, got, rid)

    def error(self, what, timeout=WAIT):
        try:
            return self.errors.get(timeout=timeout)
        except queue.Empty:
            raise Fail("%s: no ERROR frame within %.1fs (%s)" % (self.name, timeout, what))

    def no_error(self):
        check(self.errors.empty(), "%s: unexpected ERROR %s", self.name,
              None if self.errors.empty() else self.errors.queue[0].headers)


def body(f):
    b = f.body
    return b.decode() if isinstance(b, (bytes, bytearray)) else b


VERSIONS = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}


def connect(name="c", version="1.2", user="admin", pw="adminpw", heartbeats=(0, 0), decode=True, wait=True,
            headers=None):
    cls = VERSIONS[version]
    kw = {"auto_decode": decode, "reconnect_attempts_max": 1}
    if version != "1.0":
        kw["heartbeats"] = heartbeats
    c = cls([(HOST, PORT)], **kw)
    r = Rec(name)
    c.set_listener("rec", r)
    h = {"host": "localhost"}
    h.update(headers or {})
    c.connect(user, pw, wait=wait, headers=h)
    c.rec = r
    return c


def close(*conns):
    for c in conns:
        try:
            if c.is_connected():
                c.disconnect()
        except Exception:
            pass


def kill(c):
    """Drops the TCP connection without DISCONNECT (a crashed client)."""
    try:
        c.transport.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    c.rec.gone.wait(WAIT)


def sub(c, dest, sid, ack="auto", receipt=True, **headers):
    if receipt:
        rid = "sub-" + sid
        headers["receipt"] = rid
    c.subscribe(dest, id=sid, ack=ack, headers=headers)
    if receipt:
        c.rec.receipt(rid)


def send(c, dest, text, receipt=True, **headers):
    if receipt:
        rid = "send-" + uuid.uuid4().hex[:8]
        headers["receipt"] = rid
    c.send(dest, text, headers=headers)
    if receipt:
        c.rec.receipt(rid)


def wait_gone(c, what, timeout=WAIT):
    check(c.rec.gone.wait(timeout), "%s: connection still open %.1fs after %s", c.rec.name, timeout, what)


# ---------------------------------------------------------------- connection

def case_connect_versions():
    for v in ["1.0", "1.1", "1.2"]:
        c = connect("v" + v, version=v)
        f = c.rec.connected.get(timeout=WAIT)
        h = f.headers
        log("%s CONNECTED %s", v, h)
        # A 1.0 client (stomp.py sends accept-version:1.0) gets 1.0; both
        # brokers name the version.
        check(h.get("version") == v, "version %r, want %s", h.get("version"), v)
        check(h.get("session"), "no session header")
        want = "ActiveMQ/" if TARGET == "activemq" else "Isobar/"
        check(h.get("server", "").startswith(want), "server %r, want %s...", h.get("server"), want)
        if v != "1.0":
            check("heart-beat" in h, "no heart-beat header")
        close(c)
    # Negotiation: the highest version both support.
    c = stomp.Connection12([(HOST, PORT)])
    r = Rec("nego")
    c.set_listener("rec", r)
    c.transport.start()
    c.transport.transmit(stomp.utils.Frame("CONNECT", {"accept-version": "1.0,1.1,2.0", "host": "localhost",
                                                        "login": "admin", "passcode": "adminpw"}))
    f = r.connected.get(timeout=WAIT)
    check(f.headers.get("version") == "1.1", "accept-version 1.0,1.1,2.0 -> %r, want 1.1", f.headers.get("version"))
    close(c)


def case_login_refused():
    for user, pw in [("admin", "wrong"), ("nobody", "x"), (None, None)]:
        c = connect("refused-%s" % user, user=user, pw=pw, wait=False)
        e = c.rec.error("login %s/%s" % (user, pw))
        log("login %s: ERROR %s %r", user, e.headers, e.body)
        check(e.headers.get("message"), "ERROR without message header")
        wait_gone(c, "the login ERROR")
        check(c.rec.connected.empty(), "CONNECTED after a refused login")


def case_heartbeat_client():
    # The client promises heart-beats every 500 ms and wants none (0): a
    # healthy connection stays up through several intervals.
    c = connect("hb", heartbeats=(500, 0))
    h = c.rec.connected.get(timeout=WAIT).headers
    log("CONNECTED heart-beat %s", h.get("heart-beat"))
    time.sleep(2.5)
    check(c.is_connected(), "connection closed although the client sent heart-beats")
    send(c, "/topic/%s.hb" % P, "still here")
    close(c)


def case_receipts():
    c = connect("rc")
    q = "/queue/%s.rc" % P
    c.send(q, "m1", headers={"receipt": "r-send"})
    c.rec.receipt("r-send")
    c.subscribe(q, id="s1", ack="client-individual", headers={"receipt": "r-sub"})
    c.rec.receipt("r-sub")
    m = c.rec.msg()
    c.ack(m.headers["ack"], receipt="r-ack")
    c.rec.receipt("r-ack")
    c.begin("tx1", headers={"receipt": "r-begin"})
    c.rec.receipt("r-begin")
    c.send(q, "m2", headers={"transaction": "tx1"})
    c.commit("tx1", headers={"receipt": "r-commit"})
    c.rec.receipt("r-commit")
    m = c.rec.msg("m2 after COMMIT")
    c.ack(m.headers["ack"])
    c.unsubscribe("s1", headers={"receipt": "r-unsub"})
    c.rec.receipt("r-unsub")
    c.begin("tx2", headers={"receipt": "r-begin2"})
    c.rec.receipt("r-begin2")
    c.abort("tx2", headers={"receipt": "r-abort"})
    c.rec.receipt("r-abort")
    c.disconnect(receipt="r-disc")
    c.rec.receipt("r-disc")
    wait_gone(c, "DISCONNECT receipt")
    c.rec.no_error()


# -------------------------------------------------------------------- topics

def case_topic_fanout():
    t = "/topic/%s.fan" % P
    subs = [connect("sub%d" % i) for i in range(4)]
    for i, s in enumerate(subs):
        sub(s, t, "s%d" % i)
    pub = connect("pub")
    for i in range(20):
        send(pub, t, "m%d" % i, receipt=(i == 19))
    want = ["m%d" % i for i in range(20)]
    for s in subs:
        got = s.rec.bodies(20)
        check(got == want, "%s got %s, want %s", s.rec.name, got, want)
        s.rec.nothing("no duplicate")
    close(pub, *subs)


def case_topic_wildcards():
    c = connect("wild")
    subs = {"star": "/topic/%s.w.*" % P, "gt": "/topic/%s.w.>" % P, "a-gt": "/topic/%s.w.a.>" % P,
            "mid": "/topic/%s.*.a" % P}
    for sid, dest in subs.items():
        sub(c, dest, sid)
    pub = connect("pub")
    for leaf in ["w", "w.a", "w.a.b", "w.b.c", "x.a"]:
        send(pub, "/topic/%s.%s" % (P, leaf), leaf, receipt=False)
    send(pub, "/topic/%s.end" % P, "end")  # a receipt orders it after the others
    got = {}
    deadline = time.time() + WAIT
    while time.time() < deadline:
        try:
            f = c.rec.msgs.get(timeout=QUIET)
        except queue.Empty:
            break
        got.setdefault(f.headers["subscription"], []).append(body(f))
        log("%s <- %s (destination %s)", f.headers["subscription"], body(f), f.headers["destination"])
        check(f.headers["destination"] == "/topic/%s.%s" % (P, body(f)),
              "destination header %r for %s", f.headers["destination"], body(f))
    for k in got:
        got[k].sort()
    # X.> matches X itself on both brokers (ActiveMQ 5.17 and MQTT's X/#).
    want = {"star": ["w.a"], "gt": sorted(["w", "w.a", "w.a.b", "w.b.c"]), "a-gt": ["w.a", "w.a.b"],
            "mid": sorted(["w.a", "x.a"])}
    check(got == want, "wildcard deliveries %s, want %s", got, want)
    close(c, pub)


def case_headers_roundtrip():
    t = "/topic/%s.hdr" % P
    r = connect("r")
    sub(r, t, "s")
    s = connect("s")
    hdrs = {"app-id": "42", "x-spaces": "a b  c", "x-unicode": "h\u00e9llo \u2603", "x-colon": "a:b:c",
            "x-empty": "", "correlation-id": "corr-1", "type": "mytype", "reply-to": "/queue/%s.replies" % P}
    send(s, t, "payload", **dict(hdrs, **{"content-type": "text/plain"}))
    m = r.rec.msg()
    log("MESSAGE %s", m.headers)
    for k, v in hdrs.items():
        check(m.headers.get(k) == v, "header %s = %r, want %r", k, m.headers.get(k), v)
    check(m.headers.get("content-type", "").startswith("text/plain"), "content-type %r", m.headers.get("content-type"))
    check(m.headers.get("message-id"), "no message-id")
    check(m.headers.get("subscription") == "s", "subscription %r", m.headers.get("subscription"))
    check(body(m) == "payload", "body %r", body(m))
    close(r, s)


def case_body_nul():
    t = "/topic/%s.nul" % P
    r = connect("r", decode=False)
    sub(r, t, "s")
    s = connect("s", decode=False)
    payload = b"\x00a\x00\x00b\xff\x00"
    send(s, t, payload)  # stomp.py adds content-length
    m = r.rec.msg()
    check(m.body == payload, "body %r, want %r", m.body, payload)
    check(m.headers.get("content-length") == str(len(payload)), "content-length %r", m.headers.get("content-length"))
    # A large binary body too (512 KiB, below both brokers' 1 MiB limit).
    big = bytes(range(256)) * 2048
    send(s, t, big)
    m = r.rec.msg("512 KiB body")
    check(m.body == big, "512 KiB body differs (got %d bytes)", len(m.body))
    close(r, s)


def case_escape12():
    # stomp.py 1.2 escapes \n : \\ \r in header values and unescapes them
    # on receipt: the value must survive the broker unchanged.
    t = "/topic/%s.esc" % P
    r = connect("r")
    sub(r, t, "s")
    s = connect("s")
    v = "line1\nline2:colon\\backslash\rcr"
    send(s, t, "x", **{"x-esc": v})
    m = r.rec.msg()
    log("MESSAGE %r", m.headers)
    check(m.headers.get("x-esc") == v, "x-esc %r, want %r", m.headers.get("x-esc"), v)
    close(r, s)


# -------------------------------------------------------------------- queues

def case_queue_one_consumer():
    q = "/queue/%s.lb" % P
    a, b = connect("a"), connect("b")
    sub(a, q, "sa")
    sub(b, q, "sb")
    s = connect("s")
    for i in range(20):
        send(s, q, "m%d" % i, receipt=(i == 19))
    got = {"a": [], "b": []}
    for name, c in [("a", a), ("b", b)]:
        while True:
            try:
                got[name].append(body(c.rec.msgs.get(timeout=QUIET)))
            except queue.Empty:
                break
    log("a=%s b=%s", got["a"], got["b"])
    allm = got["a"] + got["b"]
    check(sorted(allm) == sorted("m%d" % i for i in range(20)), "queue deliveries %s: each message exactly once", allm)
    # Load balancing: both consumers get a share (ActiveMQ and Isobar dispatch round robin).
    check(len(got["a"]) >= 5 and len(got["b"]) >= 5, "unbalanced: a=%d b=%d", len(got["a"]), len(got["b"]))
    for name in "ab":
        check(got[name] == sorted(got[name], key=lambda x: int(x[1:])), "%s out of order: %s", name, got[name])
    close(a, b, s)


def case_queue_stored():
    q = "/queue/%s.store" % P
    s = connect("s")
    for i in range(5):
        send(s, q, "m%d" % i)
    close(s)
    time.sleep(0.3)
    r = connect("r")
    sub(r, q, "s")
    got = r.rec.bodies(5)
    check(got == ["m%d" % i for i in range(5)], "stored messages %s", got)
    r.rec.nothing()
    close(r)


def drain(c, wait=QUIET):
    out = []
    while True:
        try:
            out.append(c.rec.msgs.get(timeout=wait))
        except queue.Empty:
            return out


def case_ack_client():
    q = "/queue/%s.ackc" % P
    s = connect("s")
    for i in range(4):
        send(s, q, "m%d" % i)
    r = connect("r")
    sub(r, q, "s", ack="client")
    ms = [r.rec.msg() for _ in range(4)]
    # client mode is cumulative: acking m2 acknowledges m0..m2.
    r.ack(ms[2].headers["ack"], receipt="ack2")
    r.rec.receipt("ack2")
    close(r)
    r2 = connect("r2")
    sub(r2, q, "s", ack="client")
    m = r2.rec.msg("m3 again")
    log("redelivered %s %s", body(m), m.headers)
    check(body(m) == "m3", "after cumulative ack of m2 got %r, want m3", body(m))
    check(m.headers.get("redelivered") == "true", "redelivered header %r, want true", m.headers.get("redelivered"))
    r2.ack(m.headers["ack"])
    r2.rec.nothing()
    close(r2, s)


def case_ack_individual():
    q = "/queue/%s.acki" % P
    s = connect("s")
    for i in range(4):
        send(s, q, "m%d" % i)
    r = connect("r")
    sub(r, q, "s", ack="client-individual")
    ms = [r.rec.msg() for _ in range(4)]
    for i in (0, 2, 3):
        r.ack(ms[i].headers["ack"])
    close(r)
    r2 = connect("r2")
    sub(r2, q, "s", ack="client-individual")
    m = r2.rec.msg("m1 again")
    check(body(m) == "m1", "after individual acks got %r, want m1", body(m))
    r2.ack(m.headers["ack"])
    r2.rec.nothing()
    close(r2, s)


def case_ack_v11_v10():
    # ACK with the 1.1 headers (message-id + subscription) and 1.0 (message-id).
    for v in ["1.0", "1.1"]:
        q = "/queue/%s.ack%s" % (P, v.replace(".", ""))
        s = connect("s", version=v)
        send(s, q, "m")
        r = connect("r" + v, version=v)
        if v == "1.0":
            r.subscribe(q, ack="client", headers={"receipt": "sub"})
        else:
            r.subscribe(q, id="s", ack="client-individual", headers={"receipt": "sub"})
        r.rec.receipt("sub")
        m = r.rec.msg()
        if v == "1.0":
            r.ack(m.headers["message-id"], receipt="ack")
        else:
            r.ack(m.headers["message-id"], "s", receipt="ack")
        r.rec.receipt("ack")
        r.rec.no_error()
        close(r)
        r2 = connect("again")
        sub(r2, q, "s")
        r2.rec.nothing("nothing after the %s ACK" % v)
        close(r2, s)


def case_nack():
    q = "/queue/%s.nack" % P
    s = connect("s")
    send(s, q, "m0", persistent="true")
    r = connect("r")
    sub(r, q, "s", ack="client-individual")
    m = r.rec.msg()
    r.nack(m.headers["ack"], receipt="nack")
    r.rec.receipt("nack")
    # ActiveMQ 5.17 turns a STOMP NACK into a poison ack, and Isobar does
    # the same: the message goes straight to ActiveMQ.DLQ, never back to
    # the consumer (a non-persistent one is discarded:
    # processNonPersistent=false).
    r.rec.nothing("no redelivery after NACK (DLQ)")
    close(r)
    d = connect("dlq")
    if TARGET == "activemq":
        sub(d, "/queue/ActiveMQ.DLQ", "d", selector="JMSMessageID = '%s'" % m.headers["message-id"])
    else:
        # Isobar's message ids are per delivery (docs/stomp.md), so no
        # JMSMessageID selector; only this case NACKs, and Isobar drops
        # expired messages instead of dead-lettering them, so the DLQ of
        # the suite's broker holds only this message.
        sub(d, "/queue/ActiveMQ.DLQ", "d")
    dm = d.rec.msg("the NACKed message in ActiveMQ.DLQ")
    check(body(dm) == "m0", "DLQ body %r", body(dm))
    close(d)
    close(s)


def case_unacked_to_other():
    q = "/queue/%s.unacked" % P
    a = connect("a")
    sub(a, q, "sa", ack="client-individual", **{"activemq.prefetchSize": "1"})
    s = connect("s")
    send(s, q, "m0")
    m = a.rec.msg()
    b = connect("b")
    sub(b, q, "sb", ack="client-individual")
    b.rec.nothing("nothing while a holds m0")
    kill(a)  # a crashes without DISCONNECT or ACK
    m2 = b.rec.msg("m0 after a dropped")
    log("b got %s %s", body(m2), m2.headers)
    check(body(m2) == "m0", "b got %r", body(m2))
    check(m2.headers.get("redelivered") == "true", "redelivered header %r, want true", m2.headers.get("redelivered"))
    b.ack(m2.headers["ack"])
    close(b, s)


def case_selectors():
    q = "/queue/%s.sel" % P
    x, y = connect("x"), connect("y")
    sub(x, q, "sx", selector="mc_identity = 'x'")
    sub(y, q, "sy", selector="mc_identity = 'y'")
    s = connect("s")
    for ident in ["x", "z", "y", "x", "y"]:
        send(s, q, ident, mc_identity=ident)
    check(x.rec.bodies(2) == ["x", "x"], "x selector")
    check(y.rec.bodies(2) == ["y", "y"], "y selector")
    x.rec.nothing("z is for nobody yet")
    y.rec.nothing("z is for nobody yet")
    # The message that matched no consumer waited; a matching one gets it.
    z = connect("z")
    sub(z, q, "sz", selector="mc_identity = 'z'")
    check(z.rec.bodies(1) == ["z"], "waiting message")
    close(x, y, z)

    q = "/queue/%s.sel2" % P
    cases = [("n > 5", [("n", "7"), ("n", "3"), ("n", "10")], ["7", "10"]),
             ("color IN ('red', 'blue')", [("color", "red"), ("color", "green"), ("color", "blue")], ["red", "blue"]),
             ("name LIKE 'ab%'", [("name", "abc"), ("name", "xab"), ("name", "ab")], ["abc", "ab"]),
             ("name LIKE 'a_c' OR n = 1", [("name", "abc"), ("name", "abbc")], ["abc", "-"]),
             ("name IS NULL AND n = 1", [("name", "abc")], ["-"])]
    for i, (selector, msgs, want) in enumerate(cases):
        dest = "%s%d" % (q, i)
        r = connect("sel%d" % i)
        sub(r, dest, "s", selector=selector)
        for k, v in msgs:
            send(s, dest, v, receipt=False, **{k: v})
        send(s, dest, "-", receipt=True, **{"n": "1"})  # matches no case's selector except maybe numeric
        got = [body(f) for f in drain(r)]
        if selector == "n > 5":
            want = want  # "-" has n=1
        check(got == want, "selector %r delivered %s, want %s", selector, got, want)
        close(r)
    close(s)


def case_expires():
    q = "/queue/%s.exp" % P
    s = connect("s")
    now = int(time.time() * 1000)
    send(s, q, "short", expires=str(now + 300))
    send(s, q, "long", expires=str(now + 60000))
    send(s, q, "never")
    time.sleep(1.2)
    r = connect("r")
    sub(r, q, "s")
    got = [body(f) for f in drain(r)]
    check(got == ["long", "never"], "after expiry got %s, want [long, never]", got)
    close(r, s)


def case_priority():
    q = "/queue/%s.prio" % P
    s = connect("s")
    for p in [1, 9, 4, 9, 0]:
        send(s, q, "p%d-%d" % (p, time.monotonic_ns() % 1000), priority=str(p))
    time.sleep(0.3)
    r = connect("r")
    sub(r, q, "s")
    got = [body(f).split("-")[0] for f in drain(r)]
    check(got == ["p9", "p9", "p4", "p1", "p0"], "priority order %s", got)
    close(r, s)


# -------------------------------------------------------------- transactions

def case_transactions():
    q = "/queue/%s.tx" % P
    r = connect("r")
    sub(r, q, "s", ack="client-individual")
    s = connect("s")
    s.begin("t1")
    s.send(q, "a", headers={"transaction": "t1"})
    s.send(q, "b", headers={"transaction": "t1"})
    r.rec.nothing("nothing before COMMIT")
    s.commit("t1", headers={"receipt": "c1"})
    s.rec.receipt("c1")
    ms = [r.rec.msg("after COMMIT") for _ in range(2)]
    check([body(m) for m in ms] == ["a", "b"], "committed %s", [body(m) for m in ms])
    s.begin("t2")
    s.send(q, "aborted", headers={"transaction": "t2"})
    s.abort("t2", headers={"receipt": "a2"})
    s.rec.receipt("a2")
    r.rec.nothing("an aborted SEND")
    # ACK inside a transaction: aborted -> the message is still unacked.
    r.begin("t3")
    r.ack(ms[0].headers["ack"], transaction="t3")
    r.abort("t3")
    r.begin("t4")
    r.ack(ms[1].headers["ack"], transaction="t4")
    r.commit("t4", headers={"receipt": "c4"})
    r.rec.receipt("c4")
    close(r)
    r2 = connect("r2")
    sub(r2, q, "s", ack="client-individual")
    got = [body(f) for f in drain(r2)]
    check(got == ["a"], "after ACK aborted (a) and committed (b): %s, want [a]", got)
    close(r2, s)


# ---------------------------------------------------------------- reply-to

def responder(svc, name="svc"):
    c = connect(name)
    sub(c, svc, "svc")

    def serve():
        try:
            while True:
                m = c.rec.msgs.get(timeout=WAIT * 2)
                rt = m.headers.get("reply-to")
                log("request %s reply-to %s", body(m), rt)
                c.send(rt, "re:" + body(m), headers={"correlation-id": m.headers.get("correlation-id", "")})
        except Exception:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return c


def case_temp_queue():
    svc = "/queue/%s.svc" % P
    rsp = responder(svc)
    c = connect("req")
    sub(c, "/temp-queue/replies", "r")
    for i in range(3):
        send(c, svc, "q%d" % i, **{"reply-to": "/temp-queue/replies", "correlation-id": "c%d" % i})
        m = c.rec.msg("reply %d" % i)
        log("reply %s %s", body(m), m.headers)
        check(body(m) == "re:q%d" % i, "reply %r", body(m))
        check(m.headers.get("correlation-id") == "c%d" % i, "correlation-id %r", m.headers.get("correlation-id"))
    # Another connection's /temp-queue/replies is a different queue.
    other = connect("other")
    sub(other, "/temp-queue/replies", "r")
    send(c, svc, "q9", **{"reply-to": "/temp-queue/replies"})
    check(body(c.rec.msg("reply 9")) == "re:q9", "reply 9")
    other.rec.nothing("another connection's temp queue")
    close(c, rsp, other)


def case_reply_named_queue():
    svc = "/topic/%s.svc" % P
    rsp = responder(svc)
    c = connect("req")
    rq = "/queue/%s.reply.node1_%d" % (P, 1234)
    sub(c, rq, "r")
    send(c, svc, "hello", **{"reply-to": rq})
    m = c.rec.msg("reply")
    check(body(m) == "re:hello", "reply %r", body(m))
    close(c, rsp)


# -------------------------------------------------------------------- ACLs

def case_acl():
    a = connect("alice", user="alice", pw="alicepw")
    sub(a, "/topic/alice.x", "ok1")
    sub(a, "/topic/ro.x", "ok2")
    sub(a, "/queue/alice.q", "ok3")
    send(a, "/topic/wo.x", "ok")
    send(a, "/queue/alice.q", "ok")
    check(body(a.rec.msg("own queue")) == "ok", "own queue")
    a.rec.no_error()
    close(a)
    for what, op in [("SUBSCRIBE /topic/wo.x", lambda c: c.subscribe("/topic/wo.x", id="no", headers={"receipt": "r"})),
                     ("SUBSCRIBE /queue/admin.q", lambda c: c.subscribe("/queue/%s.admin" % P, id="no",
                                                                        headers={"receipt": "r"})),
                     ("SEND /topic/ro.x", lambda c: c.send("/topic/ro.x", "no", headers={"receipt": "r"})),
                     ("SEND /queue/other", lambda c: c.send("/queue/%s.other" % P, "no", headers={"receipt": "r"}))]:
        a = connect("alice", user="alice", pw="alicepw")
        op(a)
        e = a.rec.error(what)
        log("%s: ERROR %s %r", what, e.headers, e.body)
        check(e.headers.get("message"), "ERROR without message")
        if TARGET == "isobar":
            # Isobar closes the connection after every ERROR (STOMP 1.2:
            # "the server MUST then close the connection").
            wait_gone(a, what)
        # ActiveMQ 5.17 keeps the connection open after a security ERROR.
        close(a)
    # The refused SEND did not get through.
    r = connect("admin")
    sub(r, "/queue/%s.other" % P, "s")
    r.rec.nothing("refused SEND stored")
    close(r)


def case_acl_mcollective():
    # MCollective-style ACL: the main collective for every MCollective user,
    # the sub-collective sub1 only for user mcollective.
    for user, pw, ok in [("mcollective", "mcpw", True), ("mcmain", "mcmainpw", False)]:
        c = connect(user, user=user, pw=pw)
        sub(c, "/topic/mcollective.discovery.agent", "a")
        sub(c, "/queue/mcollective.nodes", "n", selector="mc_identity = 'none'")
        send(c, "/topic/mcollective.discovery.agent", "x")
        send(c, "/queue/mcollective.reply.%s_1" % user, "y")
        c.rec.no_error()
        if ok:
            sub(c, "/topic/sub1.discovery.agent", "b")
            send(c, "/topic/sub1.discovery.agent", "z")
            c.rec.no_error()
        else:
            c.subscribe("/topic/sub1.discovery.agent", id="b", headers={"receipt": "r"})
            e = c.rec.error("sub-collective subscribe by %s" % user)
            log("%s: ERROR %s", user, e.headers)
        close(c)


def main():
    global TARGET, HOST, PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, choices=["isobar", "activemq"])
    ap.add_argument("--addr", required=True)
    ap.add_argument("case")
    a = ap.parse_args()
    TARGET = a.target
    HOST, port = a.addr.rsplit(":", 1)
    PORT = int(port)
    fn = globals().get("case_" + a.case)
    if fn is None:
        print("unknown case %s" % a.case)
        return 2
    try:
        fn()
    except Fail as e:
        print("FAIL: %s" % e, flush=True)
        return 1
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
