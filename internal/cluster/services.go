package cluster

import (
	"slices"
	"sync"
)

// Services are a small, generic seam for other packages (the STOMP
// gateway's cluster-wide queues) to talk to other nodes over the node
// links without knowing about frames, peers or links. A service is a
// name; its messages are opaque bodies carried in FrameService frames on
// the sender's outbound link to the target node, so messages from one
// node to another arrive in the order they were sent while that link
// stays up. Request and response are built on top by the service itself
// (a request id in its body, an answer sent back the same way).
//
// A message queued on a link that then drops is lost: a service learns of
// that through OnPeerDown and must start over with that node (the links
// carry no acknowledgement for service frames).

// serviceRegistry holds the handlers and observers. It has its own lock:
// handlers run on link read loops and must never wait for Node.mu.
type serviceRegistry struct {
	mu       sync.RWMutex
	handlers map[string]func(from string, body []byte)
	changed  []func()
	down     []func(node string)
}

// ServiceHandle sends the messages of one service.
type ServiceHandle struct {
	n    *Node
	name string
}

// Service registers handler for the messages of the named service and
// returns the handle to send them. handler is called on the link's read
// loop, one message at a time per sending node, in order: it must not
// block (hand slow work to a goroutine); body is its own copy. Register
// before Start, or be ready to miss messages sent before registration.
func (n *Node) Service(name string, handler func(from string, body []byte)) ServiceHandle {
	r := &n.svc
	r.mu.Lock()
	if r.handlers == nil {
		r.handlers = make(map[string]func(string, []byte))
	}
	r.handlers[name] = handler
	r.mu.Unlock()
	return ServiceHandle{n: n, name: name}
}

// Send queues body for the service of the same name on node. It returns
// false when the node is unknown or its link is down (nothing was sent);
// true means queued on the link, not delivered: see OnPeerDown. It never
// blocks.
func (h ServiceHandle) Send(node string, body []byte) bool {
	p := h.n.peer(node)
	if p == nil {
		return false
	}
	l := p.link()
	if l == nil {
		return false
	}
	return l.SendFunc(FrameService, true, func(b []byte) []byte {
		e := Enc{B: b}
		e.String(h.name)
		return append(e.B, body...)
	})
}

// Members returns the live members (this node included), sorted by name:
// those membership reports alive, or whose link arrived first.
func (n *Node) Members() []string {
	n.mu.Lock()
	out := make([]string, 0, len(n.peers)+1)
	out = append(out, n.cfg.NodeName)
	for name := range n.peers {
		out = append(out, name)
	}
	n.mu.Unlock()
	slices.Sort(out)
	return out
}

// Owner returns the node of Members that ranks first for key by
// rendezvous hashing (the same ranking as session placement), so every
// node that sees the same members picks the same owner, and a member
// joining or leaving moves only the keys it wins or held.
func (n *Node) Owner(key string) string {
	return rank(key, n.Members())[0]
}

// OnMembersChanged calls f (on a goroutine of the cluster, without its
// locks held; f must not block) whenever the live members change, and
// when a link to or from a member comes up or goes down (a service that
// waits for a link can retry then).
func (n *Node) OnMembersChanged(f func()) {
	n.svc.mu.Lock()
	n.svc.changed = append(n.svc.changed, f)
	n.svc.mu.Unlock()
}

// OnPeerDown calls f(node) when a link to or from node closes or node
// leaves or dies: service messages sent to it may have been lost, and
// those it sent may be missing. f must not block. For the link from node
// (the one its messages arrive on), f runs after the last message that
// link delivered and before the first of the next link from the same
// incarnation of node.
func (n *Node) OnPeerDown(f func(node string)) {
	n.svc.mu.Lock()
	n.svc.down = append(n.svc.down, f)
	n.svc.mu.Unlock()
}

// servicesChanged runs the OnMembersChanged observers.
func (n *Node) servicesChanged() {
	n.svc.mu.RLock()
	fs := n.svc.changed
	n.svc.mu.RUnlock()
	for _, f := range fs {
		f()
	}
}

// servicesPeerDown runs the OnPeerDown observers, then the
// OnMembersChanged ones.
func (n *Node) servicesPeerDown(node string) {
	n.svc.mu.RLock()
	fs := n.svc.down
	n.svc.mu.RUnlock()
	for _, f := range fs {
		f(node)
	}
	n.servicesChanged()
}

// handleService dispatches one FrameService body from node from.
func (n *Node) handleService(from string, body []byte) error {
	d := Dec{B: body}
	name := d.String()
	if d.Err != nil {
		return d.Err
	}
	n.svc.mu.RLock()
	h := n.svc.handlers[name]
	n.svc.mu.RUnlock()
	if h != nil {
		h(from, d.B)
	}
	return nil
}

// Rank orders nodes for key by rendezvous hashing (the first is the
// owner), for a service that places keys over its own subset of Members.
func (n *Node) Rank(key string, nodes []string) []string { return rank(key, nodes) }
