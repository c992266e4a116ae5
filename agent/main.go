// kubeprobe-agent: the pod-side twin of kubeprobe/net.py's RunnerTransport.
//
//	kubeprobe-agent probe   read ONE Probe JSON line on stdin, print ONE Exchange JSON
//	                        (HTTP/1.1, or one unary gRPC call over HTTP/2 when "grpc" is set)
//	kubeprobe-agent sleep   block until SIGTERM (the pod's main process)
//	kubeprobe-agent node-find CID               from a privileged hostPID pod: the node path
//	kubeprobe-agent node-plant CID DIR NAME     of container CID's root filesystem; copy this
//	kubeprobe-agent node-unplant PATH           binary into it as DIR/NAME; remove DIR again
//	                        (the node's mount namespace is reached through /proc/1/root)
//
// Keys and tokens travel on stdin, never argv, so they stay out of pods/exec audit events.
// Failures are data (exit 0); only malformed input exits 2.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const bodyLimit = 64 * 1024

type clientCert struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

type probe struct {
	Host           string            `json:"host"`
	Port           int               `json:"port"`
	TLS            bool              `json:"tls"`
	ClientCert     *clientCert       `json:"client_cert"`
	MaxTLSVersion  string            `json:"max_tls_version"`
	Method         *string           `json:"method"`
	Path           string            `json:"path"`
	Headers        map[string]string `json:"headers"`
	BodyB64        *string           `json:"body_b64"`
	ConnectTimeout float64           `json:"connect_timeout"`
	ReadTimeout    float64           `json:"read_timeout"`
	GRPC           bool              `json:"grpc"`
}

type exchange struct {
	Vantage           string            `json:"vantage"`
	Target            string            `json:"target"`
	StartedAt         string            `json:"started_at"`
	ElapsedMS         float64           `json:"elapsed_ms"`
	Connected         bool              `json:"connected"`
	Error             *string           `json:"error"`
	ErrorDetail       *string           `json:"error_detail"`
	TLSHandshake      bool              `json:"tls_handshake"`
	TLSAlert          *string           `json:"tls_alert"`
	TLSVersion        *string           `json:"tls_version"`
	TLSCertRequested  *bool             `json:"tls_cert_requested"`
	TLSALPN           *string           `json:"tls_alpn"`
	ServerCertSubject *string           `json:"server_cert_subject"`
	ServerCertIssuer  *string           `json:"server_cert_issuer"`
	HTTPStatus        *int              `json:"http_status"`
	HTTPReason        *string           `json:"http_reason"`
	HTTPHeaders       map[string]string `json:"http_headers"`
	Body              *string           `json:"body"`
	BodyTruncated     bool              `json:"body_truncated"`
	BytesReceived     int               `json:"bytes_received"`
}

// Go's alert texts (crypto/tls alert.go) -> RFC 8446 names, as net.py maps OpenSSL's.
var alerts = map[string]string{
	"close notify": "close_notify", "unexpected message": "unexpected_message",
	"bad record MAC": "bad_record_mac", "decryption failed": "decryption_failed",
	"record overflow": "record_overflow", "decompression failure": "decompression_failure",
	"handshake failure": "handshake_failure", "bad certificate": "bad_certificate",
	"unsupported certificate": "unsupported_certificate", "revoked certificate": "certificate_revoked",
	"expired certificate": "certificate_expired", "unknown certificate": "certificate_unknown",
	"illegal parameter": "illegal_parameter", "unknown certificate authority": "unknown_ca",
	"access denied": "access_denied", "error decoding message": "decode_error",
	"error decrypting message": "decrypt_error", "export restriction": "export_restriction",
	"protocol version not supported": "protocol_version", "insufficient security level": "insufficient_security",
	"internal error": "internal_error", "inappropriate fallback": "inappropriate_fallback",
	"user canceled": "user_canceled", "no renegotiation": "no_renegotiation",
	"missing extension": "missing_extension", "unsupported extension": "unsupported_extension",
	"certificate unobtainable": "certificate_unobtainable", "unrecognized name": "unrecognized_name",
	"bad certificate status response": "bad_certificate_status_response",
	"bad certificate hash value":      "bad_certificate_hash_value", "unknown PSK identity": "unknown_psk_identity",
	"certificate required": "certificate_required", "no application protocol": "no_application_protocol",
	"encrypted client hello required": "ech_required",
}

func str(s string) *string { return &s }

func (e *exchange) fail(kind string, err error) {
	e.Error, e.ErrorDetail = str(kind), str(err.Error())
}

func classifyDial(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	default:
		return "unreachable"
	}
}

func classifyIO(e *exchange, err error) {
	msg := err.Error()
	if i := strings.Index(msg, "remote error: tls: "); i >= 0 {
		name := msg[i+len("remote error: tls: "):]
		if alert, ok := alerts[name]; ok {
			e.TLSAlert = str(alert)
		} else {
			e.TLSAlert = str(strings.ReplaceAll(name, " ", "_"))
		}
		e.fail("tls_alert", err)
		return
	}
	var netErr net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		e.fail("eof", err)
	case errors.Is(err, syscall.ECONNRESET):
		e.fail("reset", err)
	case errors.As(err, &netErr) && netErr.Timeout():
		e.fail("timeout", err)
	case !e.TLSHandshake && e.TLSAlert == nil && strings.Contains(msg, "tls"):
		e.fail("tls_error", err)
	default:
		e.fail("reset", err)
	}
}

func tlsVersion(v uint16) string {
	return map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[v]
}

func run(p probe, vantage string) exchange {
	scheme := "http"
	if p.TLS {
		scheme = "https"
	}
	host := p.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	e := exchange{Vantage: vantage, Target: fmt.Sprintf("%s://%s:%d%s", scheme, host, p.Port, p.Path),
		StartedAt: time.Now().UTC().Format("2006-01-02T15:04:05.000-07:00"), HTTPHeaders: map[string]string{}}
	started := time.Now()
	defer func() { e.ElapsedMS = float64(time.Since(started).Microseconds()) / 1000 }()
	raw, err := net.DialTimeout("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		time.Duration(p.ConnectTimeout*float64(time.Second)))
	if err != nil {
		e.fail(classifyDial(err), err)
		return e
	}
	defer raw.Close()
	e.Connected = true
	_ = raw.SetDeadline(time.Now().Add(time.Duration(p.ReadTimeout * float64(time.Second))))
	conn := raw
	if p.TLS {
		cfg := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12} // evidence, not trust
		if p.MaxTLSVersion == "1.3" {
			cfg.MaxVersion = tls.VersionTLS13
		}
		if net.ParseIP(p.Host) == nil {
			cfg.ServerName = p.Host // SNI for DNS names, as net.py sends it
		}
		if p.GRPC {
			cfg.NextProtos = []string{"h2"}
		}
		present := &tls.Certificate{} // an empty Certificate message when we hold none
		if p.ClientCert != nil {
			pair, err := tls.X509KeyPair([]byte(p.ClientCert.CertPEM), []byte(p.ClientCert.KeyPEM))
			if err != nil {
				fmt.Fprintln(os.Stderr, "bad client certificate:", err)
				os.Exit(2)
			}
			present = &pair
		}
		// Go calls this only when the server's CertificateRequest arrives: that is the
		// record of it. Always present our certificate: Go otherwise sends none when the
		// server's list of acceptable CAs does not name the issuer, turning a foreign-CA
		// probe into a no-cert probe.
		requested := false
		e.TLSCertRequested = &requested
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			requested = true
			return present, nil
		}
		var under net.Conn = raw
		deferred := &deferredWriteConn{Conn: raw}
		if p.GRPC {
			under = deferred // HTTP/2 writes several times: a refusal must not hide as EPIPE
		}
		t := tls.Client(under, cfg)
		if err := t.Handshake(); err != nil {
			classifyIO(&e, err)
			if e.Error != nil && *e.Error == "reset" && strings.Contains(err.Error(), "tls") {
				e.Error = str("tls_error")
			}
			return e
		}
		e.TLSHandshake = true
		state := t.ConnectionState()
		e.TLSVersion = str(tlsVersion(state.Version))
		if state.NegotiatedProtocol != "" {
			e.TLSALPN = str(state.NegotiatedProtocol)
		}
		if len(state.PeerCertificates) > 0 {
			e.ServerCertSubject = str(state.PeerCertificates[0].Subject.String())
			e.ServerCertIssuer = str(state.PeerCertificates[0].Issuer.String())
		}
		conn = t
		if p.GRPC && p.Method != nil {
			grpcCall(t, p, &e, deferred)
			return e
		}
	}
	if p.Method == nil {
		return e
	}
	var body []byte
	if p.BodyB64 != nil {
		body, _ = base64.StdEncoding.DecodeString(*p.BodyB64)
	}
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: kubeprobe\r\nAccept: application/json, */*\r\nConnection: close\r\n",
		*p.Method, p.Path, p.Host, p.Port)
	for k, v := range p.Headers {
		req += k + ": " + v + "\r\n"
	}
	if p.BodyB64 != nil {
		req += "Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
	}
	// A failed write is not the end: the server may already have refused us and closed (TLS
	// 1.3 sends the alert right after the handshake), and what it said can still be read.
	_, sendErr := conn.Write(append([]byte(req+"\r\n"), body...))
	readResponse(conn, &e, sendErr)
	return e
}

// grpcCall makes one unary gRPC call over HTTP/2 on the handshaken connection, as net.py's
// _grpc_call: the body is the request message; the exchange's body is the base64 of the first
// response message; headers beyond the status are not recorded.
func grpcCall(conn *tls.Conn, p probe, e *exchange, deferred *deferredWriteConn) {
	var message []byte
	if p.BodyB64 != nil {
		message, _ = base64.StdEncoding.DecodeString(*p.BodyB64)
	}
	framed := make([]byte, 5+len(message))
	binary.BigEndian.PutUint32(framed[1:5], uint32(len(message)))
	copy(framed[5:], message)
	dialed := false
	transport := &http.Transport{ForceAttemptHTTP2: true,
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			if dialed {
				return nil, errors.New("one connection per probe")
			}
			dialed = true
			return conn, nil
		}}
	defer transport.CloseIdleConnections()
	host := p.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	req, err := http.NewRequest("POST", fmt.Sprintf("https://%s:%d%s", host, p.Port, p.Path), bytes.NewReader(framed))
	if err != nil {
		e.fail("protocol", err)
		return
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("User-Agent", "kubeprobe")
	resp, err := transport.RoundTrip(req)
	if err != nil {
		classifyIO(e, err)
		switch {
		case e.TLSAlert != nil:
		case deferred.writeErr != nil:
			classifyIO(e, deferred.writeErr) // nothing said before the close: the failed write
		case strings.Contains(err.Error(), "http2:"):
			e.Error = str("protocol")
		}
		return
	}
	defer resp.Body.Close()
	code := resp.StatusCode
	e.HTTPStatus, e.HTTPReason = &code, str(http.StatusText(code))
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, bodyLimit+6))
	e.BytesReceived = len(data)
	truncated := readErr != nil || len(data) > bodyLimit+5
	if len(data) >= 5 {
		length := int(binary.BigEndian.Uint32(data[1:5]))
		first := data[5:min(5+length, len(data))]
		truncated = truncated || length > len(first) || len(first) > bodyLimit
		if len(first) > bodyLimit {
			first = first[:bodyLimit]
		}
		e.Body = str(base64.StdEncoding.EncodeToString(first))
	}
	e.BodyTruncated = truncated
}

// deferredWriteConn keeps a failed write from the TLS and HTTP/2 layers, as net.py does for
// its one sendall: they go on to read what the server said before it closed (TLS 1.3 sends
// its refusal of our certificate right after the handshake); the failure is reported only
// when nothing could be read.
type deferredWriteConn struct {
	net.Conn
	writeErr error
}

func (c *deferredWriteConn) Write(b []byte) (int, error) {
	if c.writeErr != nil {
		return len(b), nil
	}
	n, err := c.Conn.Write(b)
	var netErr net.Error
	if err != nil && !(errors.As(err, &netErr) && netErr.Timeout()) {
		c.writeErr = err
		return len(b), nil
	}
	return n, err
}

// readResponse reads until close, the declared Content-Length, the read cap or the deadline:
// some servers (etcd's peer port) keep the connection open after answering. Part of an answer
// followed by a reset or the deadline is still parsed (its body marked truncated).
func readResponse(conn net.Conn, e *exchange, sendErr error) {
	var data []byte
	var readErr error
	endedCleanly := false
	buf := make([]byte, 65536)
	for len(data) < bodyLimit+16*1024 {
		n, err := conn.Read(buf)
		data = append(data, buf[:n]...)
		if head, rest, ok := strings.Cut(string(data), "\r\n\r\n"); ok {
			if cl := contentLength(head); cl >= 0 && len(rest) >= cl {
				endedCleanly = true
				break
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				endedCleanly = true
			} else {
				readErr = err
			}
			break
		}
	}
	if len(data) == 0 {
		switch {
		case readErr != nil:
			classifyIO(e, readErr)
			if e.TLSAlert == nil && sendErr != nil {
				classifyIO(e, sendErr)
			}
		case sendErr != nil:
			classifyIO(e, sendErr)
		default:
			e.Error, e.ErrorDetail = str("eof"), str("peer closed the connection without a byte")
		}
		return
	}
	e.BytesReceived = len(data)
	parseHTTP(data, e, endedCleanly)
}

func contentLength(head string) int {
	for _, line := range strings.Split(head, "\r\n")[1:] {
		name, value, _ := strings.Cut(line, ":")
		if strings.EqualFold(strings.TrimSpace(name), "content-length") {
			if n, err := strconv.Atoi(strings.TrimSpace(value)); err == nil {
				return n
			}
		}
	}
	return -1
}

// parseHTTP: endedCleanly means the read stopped at Content-Length or the peer's close.
func parseHTTP(data []byte, e *exchange, endedCleanly bool) {
	head, body, ok := strings.Cut(string(data), "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	parts := strings.SplitN(lines[0], " ", 3)
	code, err := 0, error(nil)
	if len(parts) >= 2 {
		code, err = strconv.Atoi(parts[1])
	}
	if !ok || len(parts) < 2 || !strings.HasPrefix(parts[0], "HTTP/") || err != nil {
		e.Error, e.ErrorDetail = str("protocol"), str(fmt.Sprintf("not an HTTP response: %q", head[:min(80, len(head))]))
		return
	}
	e.HTTPStatus = &code
	reason := ""
	if len(parts) > 2 {
		reason = parts[2]
	}
	e.HTTPReason = str(reason)
	for _, line := range lines[1:] {
		name, value, _ := strings.Cut(line, ":")
		e.HTTPHeaders[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	}
	complete := endedCleanly
	if cl := contentLength(head); cl >= 0 {
		complete = len(body) >= cl
	}
	if strings.EqualFold(e.HTTPHeaders["transfer-encoding"], "chunked") {
		body, complete = dechunk(body)
	}
	e.BodyTruncated = len(body) > bodyLimit || !complete
	if len(body) > bodyLimit {
		body = body[:bodyLimit]
	}
	e.Body = str(strings.ToValidUTF8(body, "\uFFFD"))
}

// dechunk returns the chunked body and whether its last (zero-size) chunk arrived.
func dechunk(data string) (string, bool) {
	var out strings.Builder
	for data != "" {
		sizeLine, rest, _ := strings.Cut(data, "\r\n")
		size, err := strconv.ParseInt(strings.Split(sizeLine, ";")[0], 16, 64)
		if err != nil {
			break
		}
		if size == 0 {
			return out.String(), true
		}
		if int(size) > len(rest) {
			out.WriteString(rest)
			break
		}
		out.WriteString(rest[:size])
		data = rest[min(int(size)+2, len(rest)):]
	}
	return out.String(), false
}

// readSecretAfter is a long-running process that reads a mounted secret well after it
// started: what a run-time rule on proc.duration must catch. It waits (the wait is the
// behaviour under test, not a synchronisation), reads the file once and reports how much
// it read, never the content.
func readSecretAfter(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kubeprobe-agent read-secret-after SECONDS PATH [--kubeprobe-nonce=N]")
		return 2
	}
	seconds, err := strconv.ParseFloat(args[0], 64)
	if err != nil || seconds < 0 {
		fmt.Fprintf(os.Stderr, "kubeprobe-agent: bad SECONDS %q\n", args[0])
		return 2
	}
	started := time.Now()
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	data, err := os.ReadFile(args[1])
	if err != nil {
		fmt.Printf("kubeprobe-agent: could not read %s after %.1fs: %v\n", args[1], time.Since(started).Seconds(), err)
		return 3
	}
	fmt.Printf("kubeprobe-agent: read %d bytes of %s after %.1fs\n", len(data), args[1], time.Since(started).Seconds())
	return 0
}

// userManagementNames are the tools a "user management in a container" rule watches. Planted
// under one of these names (attacks/user_management_in_component.py), the agent only says
// what it stands in for: no user or group is touched.
var userManagementNames = map[string]bool{"useradd": true, "userdel": true, "usermod": true,
	"adduser": true, "passwd": true, "chpasswd": true, "groupadd": true, "gpasswd": true}

// listenOnce opens a TCP listening socket on an ephemeral loopback port, reports it and
// closes it: what a "process allowed to listen" rule must catch.
func listenOnce() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Printf("kubeprobe-agent: could not listen: %v\n", err)
		return 3
	}
	fmt.Printf("kubeprobe-agent: listening on %s\n", ln.Addr())
	_ = ln.Close()
	return 0
}

// systemBinaryNames are ordinary system tools that never talk to the network. Planted under
// one of these names (attacks/system_binary_network_in_component.py) with ADDRESS as its
// first argument, the agent opens one TCP connection to ADDRESS and closes it.
var systemBinaryNames = map[string]bool{"sha256sum": true, "md5sum": true, "cat": true,
	"ls": true, "date": true, "touch": true}

func connectAs(name string, args []string) int {
	if len(args) < 1 {
		fmt.Fprintf(os.Stderr, "usage: %s ADDRESS\n", name)
		return 2
	}
	conn, err := net.DialTimeout("tcp", args[0], 3*time.Second)
	if err != nil {
		fmt.Printf("kubeprobe-agent standing in for %s: dial %s: %v\n", name, args[0], err)
		return 3
	}
	fmt.Printf("kubeprobe-agent standing in for %s: connected to %s\n", name, conn.RemoteAddr())
	_ = conn.Close()
	return 0
}

// changeNetworkNamespace calls setns(2) for the calling thread on its own network namespace:
// what a "change thread namespace" rule watches. Without CAP_SYS_ADMIN the kernel refuses
// (EPERM); the call is made either way and its result is reported.
func changeNetworkNamespace() int {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		fmt.Printf("kubeprobe-agent: could not open /proc/self/ns/net: %v\n", err)
		return 3
	}
	defer ns.Close()
	number, known := setnsSyscall[runtime.GOARCH]
	if !known {
		fmt.Printf("kubeprobe-agent: no setns syscall number for %s\n", runtime.GOARCH)
		return 3
	}
	_, _, errno := syscall.RawSyscall(number, ns.Fd(), syscall.CLONE_NEWNET, 0)
	result := "0 (joined)"
	if errno != 0 {
		result = fmt.Sprintf("-1 %s (%s)", errnoName(errno), errno.Error())
	}
	fmt.Printf("kubeprobe-agent: setns(/proc/self/ns/net, CLONE_NEWNET) returned %s\n", result)
	return 0
}

// setnsSyscall: the standard library's syscall package does not name setns(2).
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268}

func errnoName(errno syscall.Errno) string {
	switch errno {
	case syscall.EPERM:
		return "EPERM"
	case syscall.EINVAL:
		return "EINVAL"
	}
	return fmt.Sprintf("errno %d", int(errno))
}

func main() {
	name := filepath.Base(os.Args[0])
	if userManagementNames[name] {
		fmt.Printf("kubeprobe-agent standing in for %s: no user or group was changed\n", name)
		os.Exit(0)
	}
	if systemBinaryNames[name] {
		os.Exit(connectAs(name, os.Args[1:]))
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kubeprobe-agent probe|sleep|listen|setns|read-secret-after|node-find|node-plant|node-unplant")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "sleep":
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
	case "probe":
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		var p probe
		if err != nil && line == "" || json.Unmarshal([]byte(line), &p) != nil || p.Host == "" {
			fmt.Fprintln(os.Stderr, "kubeprobe-agent: expected one Probe JSON line on stdin")
			os.Exit(2)
		}
		vantage := os.Getenv("KUBEPROBE_VANTAGE")
		if vantage == "" {
			vantage = "pod"
		}
		_ = json.NewEncoder(os.Stdout).Encode(run(p, vantage))
	case "listen":
		os.Exit(listenOnce())
	case "setns":
		os.Exit(changeNetworkNamespace())
	case "read-secret-after":
		os.Exit(readSecretAfter(os.Args[2:]))
	case "node-find":
		os.Exit(nodeFind(os.Args[2:]))
	case "node-plant":
		os.Exit(nodePlant(os.Args[2:]))
	case "node-unplant":
		os.Exit(nodeUnplant(os.Args[2:]))
	default:
		fmt.Fprintln(os.Stderr, "usage: kubeprobe-agent probe|sleep|listen|setns|read-secret-after|node-find|node-plant|node-unplant")
		os.Exit(2)
	}
}

// Node access from a privileged pod with hostPID: the node's processes are visible, and
// /proc/<pid>/root of one of them is the node's root directory in the node's mount
// namespace, where containerd mounts every container's root filesystem. PID 1 (the node's
// init) first, then containerd and the kubelet (an init that is not dumpable refuses its
// root even to root). Only the paths kubeprobe plants are accepted (the same shape
// kubeprobe/journal.py's PLANTED_PATH checks), so a forged argument removes nothing else.
var (
	containerIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	plantDirPattern    = regexp.MustCompile(`^/tmp/kubeprobe-[0-9a-f]{8,32}$`)
	plantNamePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	plantedPathPattern = regexp.MustCompile(`^/run/(?:[A-Za-z0-9._-]+/)?containerd/io\.containerd\.runtime\.v2\.task/k8s\.io/[0-9a-f]{64}/rootfs/tmp/kubeprobe-[0-9a-f]{8,32}$`)
	rootfsGlobs        = []string{"/run/containerd/io.containerd.runtime.v2.task/k8s.io/%s/rootfs",
		"/run/*/containerd/io.containerd.runtime.v2.task/k8s.io/%s/rootfs"}
	hostProcessNames = map[string]bool{"containerd": true, "kubelet": true}
)

func nodeFail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "kubeprobe-agent: "+format+"\n", args...)
	return 1
}

// hostRoots: /proc/1/root, then /proc/<pid>/root of containerd and the kubelet; each with
// why it cannot be used, if it cannot.
func hostRoots() (usable []string, refused []string) {
	pids := []string{"1"}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == "1" {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && hostProcessNames[strings.TrimSpace(string(comm))] {
			pids = append(pids, e.Name())
		}
	}
	for _, pid := range pids {
		root := "/proc/" + pid + "/root"
		if _, err := os.ReadDir(root + "/run"); err != nil {
			refused = append(refused, err.Error())
			continue
		}
		usable = append(usable, root)
	}
	return usable, refused
}

// containerRootfs: the host root it was found through, and the node path (without that
// prefix) of the container's root filesystem.
func containerRootfs(cid string) (string, string, error) {
	if !containerIDPattern.MatchString(cid) {
		return "", "", fmt.Errorf("%q is not a containerd container id", cid)
	}
	roots, refused := hostRoots()
	for _, root := range roots {
		var found []string
		for _, pattern := range rootfsGlobs {
			matches, _ := filepath.Glob(root + fmt.Sprintf(pattern, cid))
			for _, m := range matches {
				if info, err := os.Stat(m); err == nil && info.IsDir() {
					found = append(found, strings.TrimPrefix(m, root))
				}
			}
		}
		if len(found) == 1 {
			return root, found[0], nil
		}
	}
	return "", "", fmt.Errorf("root filesystem of container %s not found on the node (through %d host root(s) %s; refused: %s)",
		cid[:12], len(roots), strings.Join(roots, " "), strings.Join(refused, "; "))
}

func nodeFind(args []string) int {
	if len(args) < 1 {
		return nodeFail("usage: node-find CONTAINER_ID")
	}
	root, rootfs, err := containerRootfs(args[0])
	if err != nil {
		return nodeFail("%v", err)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"rootfs": rootfs, "via": root})
	return 0
}

func nodePlant(args []string) int {
	if len(args) < 3 || !plantDirPattern.MatchString(args[1]) || !plantNamePattern.MatchString(args[2]) {
		return nodeFail("usage: node-plant CONTAINER_ID /tmp/kubeprobe-<nonce> NAME")
	}
	root, rootfs, err := containerRootfs(args[0])
	if err != nil {
		return nodeFail("%v", err)
	}
	dir := root + rootfs + args[1]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nodeFail("%v", err)
	}
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return nodeFail("%v", err)
	}
	defer self.Close()
	target := dir + "/" + args[2]
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return nodeFail("%v", err)
	}
	size, err := io.Copy(out, self)
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Chmod(target, 0o755)
	}
	if err != nil {
		return nodeFail("%v", err)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"rootfs": rootfs, "via": root,
		"planted": rootfs + args[1] + "/" + args[2], "bytes": size})
	return 0
}

func nodeUnplant(args []string) int {
	if len(args) < 1 || !plantedPathPattern.MatchString(args[0]) {
		return nodeFail("usage: node-unplant <containerd task>/<id>/rootfs/tmp/kubeprobe-<nonce>")
	}
	roots, refused := hostRoots()
	if len(roots) == 0 {
		return nodeFail("no host root directory can be read: %s", strings.Join(refused, "; "))
	}
	for _, root := range roots {
		path := root + args[0]
		if _, err := os.Lstat(path); err != nil {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			return nodeFail("%v", err)
		}
		fmt.Println("removed")
		return 0
	}
	fmt.Println("absent")
	return 0
}
