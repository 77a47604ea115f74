package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// serverProc is the harness's handle on one server process.
type serverProc struct {
	name  string
	addr  string
	cmd   *exec.Cmd
	exit  chan struct{} // closed when the process has exited
	mu    sync.Mutex    // serializes commands and their replies
	in    io.WriteCloser
	lines chan string
}

// startServer re-executes this binary as the server of contender name.
func startServer(name string) (*serverProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), serveEnv+"="+name)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &serverProc{name: name, cmd: cmd, in: in, lines: make(chan string, 16), exit: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		_ = cmd.Wait()
		close(p.exit)
	}()
	line, err := p.reply(10 * time.Second)
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("%s: server did not start: %w", name, err)
	}
	addr, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		p.kill()
		return nil, fmt.Errorf("%s: server said %q", name, line)
	}
	p.addr = addr
	return p, nil
}

var errServerGone = errors.New("server process ended")

func (p *serverProc) reply(timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", errServerGone
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("no reply within %v", timeout)
	}
}

// send writes one command; it does not wait for a reply.
func (p *serverProc) send(cmd string) error {
	_, err := io.WriteString(p.in, cmd+"\n")
	return err
}

// call sends a command and returns its one-line reply.
func (p *serverProc) call(cmd string, timeout time.Duration) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.send(cmd); err != nil {
		return "", err
	}
	l, err := p.reply(timeout)
	if err != nil {
		return "", fmt.Errorf("%s: %q: %w", p.name, cmd, err)
	}
	return l, nil
}

func (p *serverProc) broadcast(i, t int64, pad int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.send(fmt.Sprintf("b %d %d %d", i, t, pad))
}

// burst has the server broadcast messages i … i+k-1 from k publishers at once.
func (p *serverProc) burst(i, t int64, k int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.send(fmt.Sprintf("B %d %d %d", i, t, k))
}

func (p *serverProc) stats(gc bool) (serverStats, error) {
	cmd := "s"
	if gc {
		cmd = "g"
	}
	var s serverStats
	l, err := p.call(cmd, 20*time.Second)
	if err == nil {
		err = json.Unmarshal([]byte(l), &s)
	}
	return s, err
}

// calls returns the durations of the broadcast calls since the last reset.
func (p *serverProc) calls() ([]time.Duration, error) {
	var ns []int64
	l, err := p.call("c", 10*time.Second)
	if err == nil {
		err = json.Unmarshal([]byte(l), &ns)
	}
	out := make([]time.Duration, len(ns))
	for i, v := range ns {
		out[i] = time.Duration(v)
	}
	return out, err
}

func (p *serverProc) resetCalls() error {
	_, err := p.call("r", 10*time.Second)
	return err
}

func (p *serverProc) startProfile(file string) error {
	_, err := p.call("p "+file, 10*time.Second)
	return err
}

func (p *serverProc) heapProfile(file string) error {
	_, err := p.call("h "+file, 20*time.Second)
	return err
}

func (p *serverProc) stopProfile() error {
	_, err := p.call("P", 10*time.Second)
	return err
}

// waitConns waits until the server has registered n connections.
func (p *serverProc) waitConns(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		s, err := p.stats(false)
		if err != nil {
			return err
		}
		if s.Conns == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d connections registered after %v", p.name, s.Conns, n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop asks the process to exit and kills it if it does not: the server
// closes its sockets first, so TIME_WAIT stays on its side.
func (p *serverProc) stop() {
	p.mu.Lock()
	_ = p.send("q")
	p.in.Close()
	p.mu.Unlock()
	select {
	case <-p.exit:
	case <-time.After(3 * time.Second):
		p.kill()
	}
}

func (p *serverProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exit
}
