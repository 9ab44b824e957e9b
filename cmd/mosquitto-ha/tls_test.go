package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"mosquitto-ha/sysparse/mosqtest"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate into dir.
func pki(t *testing.T, dir string) (ca, serverCert, serverKey, clientCert, clientKey string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mosquitto-ha test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kb)
	}
	ca = write("ca.pem", "CERTIFICATE", caDER)
	serverCert, serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	clientCert, clientKey = leaf("agent", 3, x509.ExtKeyUsageClientAuth)
	return
}

// Agents reach brokers that accept only TLS with a client certificate, and relay between them.
func TestAgentsOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck := pki(t, dir)
	tlsConf := fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n", ca, sc, sk)
	var brokers []*mosqtest.Broker
	for i := 0; i < 2; i++ {
		brokers = append(brokers, mosqtest.Start(t, mosqtest.Options{Extra: "sys_interval 1\n" + tlsConf}))
	}
	cfg := writeCluster(t, brokers, fmt.Sprintf("  tls: {ca: %s, cert: %s, key: %s}\n", ca, cc, ck))
	out, errOut, code := runCmd(t, "check", "--config", cfg, "--node", "b1")
	if code != 0 {
		t.Fatalf("check over TLS: exit %d\n%s%s", code, out, errOut)
	}
	// Without the client certificate the broker refuses the agent.
	bad := writeCluster(t, brokers, fmt.Sprintf("  tls: {ca: %s}\n", ca))
	if _, _, code := runCmd(t, "check", "--config", bad, "--node", "b1"); code == 0 {
		t.Fatal("check without a client certificate succeeded against a broker that requires one")
	}

	a1, a2 := startAgentProc(t, cfg, "b1"), startAgentProc(t, cfg, "b2")
	waitLog(t, a1, "advertising exact interest", 15*time.Second)
	waitLog(t, a2, "advertising exact interest", 15*time.Second)
	tlsClient := func(addr, id string) mqtt.Client {
		c, err := (&Config{Agent: AgentConfig{TLS: &TLSConfig{CA: ca, Cert: cc, Key: ck}}}).TLSFor(Node{Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(id).SetTLSConfig(c))
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("TLS client: %v", tok.Error())
		}
		t.Cleanup(func() { cl.Disconnect(10) })
		return cl
	}
	got := make(chan string, 10)
	sub := tlsClient(brokers[1].Addr, "tls-sub")
	sub.Subscribe("secure/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }).WaitTimeout(5 * time.Second)
	pub := tlsClient(brokers[0].Addr, "tls-pub")
	deadline := time.After(10 * time.Second)
	for {
		pub.Publish("secure/x", 1, false, "over tls").WaitTimeout(time.Second)
		select {
		case p := <-got:
			if p != "over tls" {
				t.Fatalf("got %q", p)
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no relay over TLS:\n%s\n%s", a1.Out.String(), a2.Out.String())
		}
	}
}
