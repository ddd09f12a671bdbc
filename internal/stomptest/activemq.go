package stomptest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"html"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ActiveMQHome is where the Debian package activemq installs the broker:
// bin/activemq.jar (the launcher, which builds its class path from
// lib/ and lib/optional/) and lib/. Nothing below /etc/activemq or
// /var/lib/activemq is used: those belong to the system's instances.
const ActiveMQHome = "/usr/share/activemq"

// ActiveMQUser is one user of the simpleAuthenticationPlugin.
type ActiveMQUser struct {
	Name, Password string
	Groups         []string
}

// ActiveMQEntry is one authorizationEntry: exactly one of Queue and Topic
// is set (an ActiveMQ destination pattern such as "mcollective.>"), and
// Read, Write and Admin are comma-separated group lists.
type ActiveMQEntry struct {
	Queue, Topic       string
	Read, Write, Admin string
}

// ActiveMQConfig describes a private broker.
type ActiveMQConfig struct {
	// Users switches authentication on (no anonymous access) when not
	// empty; Entries then switch authorization on too.
	Users   []ActiveMQUser
	Entries []ActiveMQEntry
	// TempGroups may read, write and create temporary destinations
	// (comma-separated groups; default "everyone" when Entries are set).
	TempGroups string
	// OpenWire adds an OpenWire transport on a free port (off by default:
	// only STOMP is reachable).
	OpenWire bool
	// HeapMB is the JVM's maximum heap (default 256).
	HeapMB int
	// MaxFrameSize bounds a STOMP frame (default 1 MiB, which is also
	// Isobar's default, so that the oversize-frame case means the same on
	// both).
	MaxFrameSize int
	// Java is the java binary (default: $JAVA_HOME/bin/java, else
	// /usr/lib/jvm/default-java/bin/java, else java in $PATH).
	Java string
}

// ActiveMQ is a running private broker. Stop it with Stop.
type ActiveMQ struct {
	// StompAddr is the STOMP transport's "127.0.0.1:port".
	StompAddr string
	// OpenWireAddr is set when ActiveMQConfig.OpenWire was.
	OpenWireAddr string
	// Dir is the broker's activemq.base (conf/, data/, activemq.log).
	Dir string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // the process's exit status, set before done is closed
	once sync.Once
}

// ActiveMQAvailable reports whether the Debian activemq package and a Java
// runtime are installed, and if not, why.
func ActiveMQAvailable() error {
	if _, err := os.Stat(filepath.Join(ActiveMQHome, "bin", "activemq.jar")); err != nil {
		return fmt.Errorf("ActiveMQ not installed (Debian package activemq): %w", err)
	}
	if _, err := javaBinary(""); err != nil {
		return err
	}
	return nil
}

func javaBinary(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	var candidates []string
	if h := os.Getenv("JAVA_HOME"); h != "" {
		candidates = append(candidates, filepath.Join(h, "bin", "java"))
	}
	candidates = append(candidates, "/usr/lib/jvm/default-java/bin/java")
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	p, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("no Java runtime (Debian package default-jre-headless, pulled in by activemq): %w", err)
	}
	return p, nil
}

// FreePort returns a loopback TCP port that was free a moment ago. The
// broker binds it shortly after; another process could take it in
// between, which on a test machine is rare enough (the start then fails
// clearly).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartActiveMQ writes a configuration into dir (which must exist and be
// private to this broker), starts the broker in the foreground of a child
// process and waits until its STOMP port answers a CONNECT. The child is
// killed by Stop, and by the kernel if the process that started it dies.
func StartActiveMQ(ctx context.Context, dir string, cfg ActiveMQConfig) (*ActiveMQ, error) {
	if err := ActiveMQAvailable(); err != nil {
		return nil, err
	}
	java, err := javaBinary(cfg.Java)
	if err != nil {
		return nil, err
	}
	if cfg.HeapMB == 0 {
		cfg.HeapMB = 256
	}
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = 1 << 20
	}
	stompPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	a := &ActiveMQ{StompAddr: fmt.Sprintf("127.0.0.1:%d", stompPort), Dir: dir, done: make(chan struct{})}
	var openwire string
	if cfg.OpenWire {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		a.OpenWireAddr = fmt.Sprintf("127.0.0.1:%d", p)
		openwire = fmt.Sprintf("\n      <transportConnector name=\"openwire\" uri=\"tcp://%s\"/>", a.OpenWireAddr)
	}
	conf := filepath.Join(dir, "conf")
	data := filepath.Join(dir, "data")
	for _, d := range []string{conf, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	xml := activeMQXML(cfg, data, a.StompAddr, openwire)
	if err := os.WriteFile(filepath.Join(conf, "activemq.xml"), []byte(xml), 0o644); err != nil {
		return nil, err
	}
	// The launcher's class path includes lib/optional/log4j-1.2.jar and
	// slf4j-log4j12, so log4j 1.2 does the logging; without a
	// configuration it prints three warnings and nothing else, which is
	// what a test wants. Errors still reach stderr through the launcher.
	logPath := filepath.Join(dir, "activemq.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(java,
		fmt.Sprintf("-Xmx%dm", cfg.HeapMB), "-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true",
		"-Dactivemq.home="+ActiveMQHome, "-Dactivemq.base="+dir, "-Dactivemq.conf="+conf, "-Dactivemq.data="+data,
		"-jar", filepath.Join(ActiveMQHome, "bin", "activemq.jar"),
		"start", "xbean:file:"+filepath.Join(conf, "activemq.xml"))
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ActiveMQ: %w", err)
	}
	a.cmd = cmd
	go func() {
		a.err = cmd.Wait()
		close(a.done)
	}()
	if err := a.waitReady(ctx, cfg); err != nil {
		a.Stop()
		return nil, fmt.Errorf("%w\n--- %s ---\n%s", err, logPath, tail(logPath, 4000))
	}
	return a, nil
}

// waitReady polls the STOMP port until a CONNECT is answered (CONNECTED,
// or ERROR for a refused login: either way the broker is up), for at most
// 60 s: a cold JVM on a loaded two-core machine takes several seconds.
func (a *ActiveMQ) waitReady(ctx context.Context, cfg ActiveMQConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	login := ""
	if len(cfg.Users) > 0 {
		login = fmt.Sprintf("login:%s\npasscode:%s\n", cfg.Users[0].Name, cfg.Users[0].Password)
	}
	for {
		select {
		case <-a.done:
			return fmt.Errorf("ActiveMQ exited during start: %v", a.err)
		case <-ctx.Done():
			return fmt.Errorf("ActiveMQ not ready on %s: %w", a.StompAddr, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		c, err := net.DialTimeout("tcp", a.StompAddr, time.Second)
		if err != nil {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = fmt.Fprintf(c, "CONNECT\naccept-version:1.2\nhost:localhost\n%s\n\x00", login)
		var line string
		if err == nil {
			line, err = bufio.NewReader(c).ReadString('\n')
		}
		if err == nil {
			_, _ = c.Write([]byte("DISCONNECT\n\n\x00"))
		}
		_ = c.Close()
		if err == nil && (line == "CONNECTED\n" || line == "ERROR\n") {
			return nil
		}
	}
}

// Stop kills the broker (it holds nothing worth a graceful shutdown: the
// store is in memory) and waits for it to exit. Calling it twice is
// harmless.
func (a *ActiveMQ) Stop() {
	a.once.Do(func() {
		if a.cmd == nil || a.cmd.Process == nil {
			return
		}
		// The whole process group: the JVM is its only member, but a
		// launcher script in between would be too.
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// PID is the JVM's process id.
func (a *ActiveMQ) PID() int {
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Log returns the last bytes of the broker's log (for failure messages).
func (a *ActiveMQ) Log() string { return tail(filepath.Join(a.Dir, "activemq.log"), 4000) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// activeMQXML renders the broker configuration: no JMX, no web console
// (the Jetty part of the stock configuration is simply absent), an
// in-memory store, strict priority order on queues (ActiveMQ orders by
// priority only with prioritizedMessages, which Isobar always does), and a
// STOMP transport on the loopback address.
func activeMQXML(cfg ActiveMQConfig, dataDir, stompAddr, openwire string) string {
	e := html.EscapeString
	var plugins bytes.Buffer
	if len(cfg.Users) > 0 {
		plugins.WriteString("    <plugins>\n      <simpleAuthenticationPlugin anonymousAccessAllowed=\"false\">\n        <users>\n")
		for _, u := range cfg.Users {
			fmt.Fprintf(&plugins, "          <authenticationUser username=\"%s\" password=\"%s\" groups=\"%s\"/>\n",
				e(u.Name), e(u.Password), e(strings.Join(u.Groups, ",")))
		}
		plugins.WriteString("        </users>\n      </simpleAuthenticationPlugin>\n")
		if len(cfg.Entries) > 0 {
			temp := cfg.TempGroups
			if temp == "" {
				temp = "everyone"
			}
			plugins.WriteString("      <authorizationPlugin>\n        <map>\n          <authorizationMap>\n            <authorizationEntries>\n")
			for _, a := range cfg.Entries {
				kind, dest := "topic", a.Topic
				if a.Queue != "" {
					kind, dest = "queue", a.Queue
				}
				fmt.Fprintf(&plugins, "              <authorizationEntry %s=\"%s\" read=\"%s\" write=\"%s\" admin=\"%s\"/>\n",
					kind, e(dest), e(a.Read), e(a.Write), e(a.Admin))
			}
			fmt.Fprintf(&plugins, `            </authorizationEntries>
            <tempDestinationAuthorizationEntry>
              <tempDestinationAuthorizationEntry read="%s" write="%s" admin="%s"/>
            </tempDestinationAuthorizationEntry>
          </authorizationMap>
        </map>
      </authorizationPlugin>
`, e(temp), e(temp), e(temp))
		}
		plugins.WriteString("    </plugins>\n")
	}
	return fmt.Sprintf(`<!-- generated by internal/stomptest -->
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="stomptest" useJmx="false"
          persistent="false" schedulerSupport="false" dataDirectory="%s" useShutdownHook="false">
    <destinationPolicy>
      <policyMap>
        <policyEntries>
          <policyEntry queue=">" prioritizedMessages="true" expireMessagesPeriod="200"/>
          <policyEntry topic=">" expireMessagesPeriod="200"/>
        </policyEntries>
      </policyMap>
    </destinationPolicy>
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
        <tempUsage><tempUsage limit="256 mb"/></tempUsage>
      </systemUsage>
    </systemUsage>
%s    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://%s?wireFormat.maxFrameSize=%d&amp;wireFormat.maxDataLength=%d"/>%s
    </transportConnectors>
  </broker>
</beans>
`, e(dataDir), plugins.String(), stompAddr, cfg.MaxFrameSize, cfg.MaxFrameSize, openwire)
}
