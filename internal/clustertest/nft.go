package clustertest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
)

// ClientIP is where test clients (and HAProxy) connect from.
const ClientIP = "127.0.0.1"

// nftTable is the only table the harness creates, in the test namespace.
const nftTable = "isobartest"

// splitState is what the nft table currently expresses.
type splitState struct {
	groups [][]int      // nil: no split between nodes
	reject bool         // reject (RST / ICMP) instead of drop
	cut    map[int]bool // nodes cut from ClientIP
}

// Partition splits the nodes into groups: traffic between the loopback
// addresses of nodes in different groups is dropped, both directions, TCP
// and UDP, established connections included (a silent split, not a
// refusal). A node in no group is alone. Client traffic from ClientIP is
// untouched (see CutClient). It replaces any previous split.
func (c *Cluster) Partition(groups ...[]int) {
	c.t.Helper()
	c.setSplit(groups, false)
}

// PartitionReject is Partition with the packets refused (TCP reset, ICMP
// unreachable) instead of dropped: peers notice at once.
func (c *Cluster) PartitionReject(groups ...[]int) {
	c.t.Helper()
	c.setSplit(groups, true)
}

// Isolate splits node i from every other node.
func (c *Cluster) Isolate(i int) {
	c.t.Helper()
	var rest []int
	for j := range c.Nodes {
		if j != i {
			rest = append(rest, j)
		}
	}
	c.Partition([]int{i}, rest)
}

// CutClient drops traffic between ClientIP (the tests' clients) and node i,
// both directions, established connections included. Heal restores it.
func (c *Cluster) CutClient(i int) {
	c.t.Helper()
	c.mu.Lock()
	s := c.cloneSplit()
	s.cut[i] = true
	c.mu.Unlock()
	c.apply(s)
}

// Heal removes every split and client cut (deletes the nft table).
func (c *Cluster) Heal() {
	c.t.Helper()
	if err := c.heal(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) heal() error {
	if err := assertNetns(); err != nil {
		return err
	}
	c.mu.Lock()
	installed := c.split != nil
	c.split = nil
	c.mu.Unlock()
	if !installed {
		return nil
	}
	if out, err := exec.Command("nft", "delete", "table", "inet", nftTable).CombinedOutput(); err != nil {
		return fmt.Errorf("nft delete table inet %s: %v: %s", nftTable, err, out)
	}
	return nil
}

func (c *Cluster) cloneSplit() *splitState {
	s := &splitState{cut: map[int]bool{}}
	if c.split != nil {
		s.groups, s.reject = c.split.groups, c.split.reject
		for k, v := range c.split.cut {
			s.cut[k] = v
		}
	}
	return s
}

func (c *Cluster) setSplit(groups [][]int, reject bool) {
	c.t.Helper()
	seen := map[int]bool{}
	var norm [][]int
	for _, g := range groups {
		var ng []int
		for _, i := range g {
			if i < 0 || i >= c.N() || seen[i] {
				c.t.Fatalf("Partition(%v): node %d out of range or in two groups", groups, i)
			}
			seen[i] = true
			ng = append(ng, i)
		}
		if len(ng) > 0 {
			norm = append(norm, ng)
		}
	}
	for i := range c.Nodes {
		if !seen[i] {
			norm = append(norm, []int{i})
		}
	}
	c.mu.Lock()
	s := c.cloneSplit()
	c.mu.Unlock()
	s.groups, s.reject = norm, reject
	c.checkSourceAddresses()
	c.apply(s)
}

// apply installs s atomically (one nft transaction replacing the table).
func (c *Cluster) apply(s *splitState) {
	c.t.Helper()
	if err := assertNetns(); err != nil {
		c.t.Fatal(err)
	}
	script := c.ruleset(s)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("nft -f: %v: %s\nscript:\n%s", err, out, script)
	}
	c.mu.Lock()
	c.split = s
	c.mu.Unlock()
}

// ruleset renders s as an nft script. Every packet between two loopback
// addresses comes back in through the input hook, so one chain there sees
// both directions of every flow. Input, not output: a packet dropped on
// output fails the sender's sendto/connect with EPERM at once, which no
// real network split does; dropped on input it is simply never received.
func (c *Cluster) ruleset(s *splitState) string {
	verdict := "drop"
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table inet %s {\n  chain split {\n    type filter hook input priority 0; policy accept;\n", nftTable)
	if s.reject {
		// The resets and ICMP errors the reject rules generate come
		// back through this hook too: let them reach the sender.
		b.WriteString("    tcp flags & rst == rst accept\n    meta l4proto icmp accept\n")
	}
	rule := func(from, to []int, fromIP string) {
		src := fromIP
		if src == "" {
			src = c.ipSet(from)
		}
		dst := c.ipSet(to)
		if s.reject {
			fmt.Fprintf(&b, "    meta l4proto tcp ip saddr %s ip daddr %s reject with tcp reset\n", src, dst)
			fmt.Fprintf(&b, "    ip saddr %s ip daddr %s reject\n", src, dst)
			return
		}
		fmt.Fprintf(&b, "    ip saddr %s ip daddr %s %s\n", src, dst, verdict)
	}
	for a := range s.groups {
		for z := range s.groups {
			if a != z {
				rule(s.groups[a], s.groups[z], "")
			}
		}
	}
	var cut []int
	for i := range s.cut {
		cut = append(cut, i)
	}
	sort.Ints(cut)
	for _, i := range cut {
		fmt.Fprintf(&b, "    ip saddr %s ip daddr %s drop\n", ClientIP, c.Nodes[i].IP)
		fmt.Fprintf(&b, "    ip saddr %s ip daddr %s drop\n", c.Nodes[i].IP, ClientIP)
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

func (c *Cluster) ipSet(nodes []int) string {
	ips := make([]string, len(nodes))
	for k, i := range nodes {
		ips[k] = c.Nodes[i].IP
	}
	return "{ " + strings.Join(ips, ", ") + " }"
}

// checkSourceAddresses warns when a connection to a node's cluster port
// comes from ClientIP: a node that dials its peers without binding its own
// address (net.Dialer.LocalAddr) looks like a test client, and a split by
// address cannot cut it.
func (c *Cluster) checkSourceAddresses() {
	c.t.Helper()
	if !c.clustered {
		return
	}
	ports := map[int]string{}
	for _, nd := range c.Nodes {
		if _, p, ok := strings.Cut(nd.Bind, ":"); ok {
			if n, err := strconv.Atoi(p); err == nil {
				ports[n] = nd.Name
			}
		}
	}
	for _, conn := range establishedTCP() {
		if name, ok := ports[conn.remotePort]; ok && conn.localIP == ClientIP && conn.remoteIP != ClientIP {
			c.t.Errorf("clustertest: a connection to %s's cluster port comes from %s:%d: the dialing node does not bind its own address, so splits cannot cut it (cluster transport must set net.Dialer.LocalAddr)", name, conn.localIP, conn.localPort)
			return
		}
	}
}

type tcpConn struct {
	localIP, remoteIP     string
	localPort, remotePort int
}

// establishedTCP reads this namespace's established IPv4 TCP connections.
func establishedTCP() []tcpConn {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil
	}
	var out []tcpConn
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		lip, lport, ok1 := parseProcAddr(f[1])
		rip, rport, ok2 := parseProcAddr(f[2])
		if ok1 && ok2 {
			out = append(out, tcpConn{lip, rip, lport, rport})
		}
	}
	return out
}

// parseProcAddr decodes "0B00007F:1F90" (little-endian IPv4, hex port).
func parseProcAddr(s string) (string, int, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return "", 0, false
	}
	ip, err1 := strconv.ParseUint(h, 16, 32)
	port, err2 := strconv.ParseUint(p, 16, 16)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	return fmt.Sprintf("%d.%d.%d.%d", ip&0xff, ip>>8&0xff, ip>>16&0xff, ip>>24), int(port), true
}
