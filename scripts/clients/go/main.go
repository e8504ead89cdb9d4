// Example Go client of the zambeze-mesh `Campaigns` service, built from proto/ alone.
//
// It connects to an agent's mTLS port with a client certificate issued by the mesh
// (`zmesh cert issue-client NAME --out DIR`), submits a two-activity campaign where the
// second activity reads the first one's output through "@output:produce" (which also
// makes it depend on it), follows Watch, drops the stream on purpose after a few events
// and resumes it with after_seq = the last seq received, checks that the sequence
// numbers have no gap and no repeat, and checks that an agent-only RPC
// (Membership.Ping) is refused to a client certificate with PERMISSION_DENIED.
//
// Build it with ./build (GOPATH mode, Debian's Go packages, no module download).
//
// Usage:
//
//	zmesh-go-client -target HOST:PORT -ca ca.crt -cert client.crt -key client.key
//
// Exit codes: 0 everything as expected, 1 the campaign or a check failed,
// 2 usage error, 3 an RPC failed (its status code is printed).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"strings"
	"time"

	zm "github.com/zambeze-mesh/zambeze-mesh/gen/go/zambeze_mesh/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

type options struct {
	target, ca, cert, key, serverName, name string
	dropAfter                               int
	timeout                                 time.Duration
}

type checkError struct{ msg string }

func (e checkError) Error() string { return e.msg }

func fail(format string, args ...interface{}) error {
	return checkError{fmt.Sprintf(format, args...)}
}

func parse() (options, error) {
	var o options
	flag.StringVar(&o.target, "target", "", "agent HOST:PORT (its mTLS listener)")
	flag.StringVar(&o.ca, "ca", "", "mesh CA bundle (ca.crt)")
	flag.StringVar(&o.cert, "cert", "", "client certificate (client.crt)")
	flag.StringVar(&o.key, "key", "", "client key (client.key)")
	flag.StringVar(&o.serverName, "server-name", "", "name expected in the agent certificate (default: the target host)")
	flag.StringVar(&o.name, "name", "go client", "campaign name")
	flag.IntVar(&o.dropAfter, "drop-after", 3, "drop the Watch stream after this many events, then resume")
	flag.DurationVar(&o.timeout, "timeout", 120*time.Second, "give up after this long")
	flag.Parse()
	if o.target == "" || o.ca == "" || o.cert == "" || o.key == "" {
		return o, errors.New("-target, -ca, -cert and -key are required")
	}
	if o.serverName == "" {
		host, _, err := net.SplitHostPort(o.target)
		if err != nil {
			return o, fmt.Errorf("bad -target %q: %v", o.target, err)
		}
		o.serverName = host
	}
	return o, nil
}

func dial(o options) (*grpc.ClientConn, error) {
	pair, err := tls.LoadX509KeyPair(o.cert, o.key)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %v", err)
	}
	pem, err := ioutil.ReadFile(o.ca)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", o.ca)
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      roots,
		ServerName:   o.serverName,
		MinVersion:   tls.VersionTLS12,
	})
	return grpc.Dial(o.target, grpc.WithTransportCredentials(creds))
}

func shell(name, cmd string, dataURIs ...string) *zm.ActivitySpec {
	return &zm.ActivitySpec{
		Name:     name,
		Body:     &zm.ActivitySpec_Shell{Shell: &zm.ShellSpec{Cmd: cmd}},
		DataUris: dataURIs,
	}
}

func isFinal(ev *zm.Event) bool {
	return ev.Activity == "" && ev.CampaignState != zm.CampaignState_CAMPAIGN_STATE_UNSPECIFIED &&
		ev.CampaignState != zm.CampaignState_CAMPAIGN_STATE_RUNNING
}

// follow reads Watch from after_seq = 0 to the final campaign-level event. After
// dropAfter events it cancels the stream on purpose and subscribes again with
// after_seq = the last seq received; every seq must be exactly last + 1.
func follow(ctx context.Context, c zm.CampaignsClient, id string, dropAfter int) ([]*zm.Event, int, error) {
	var events []*zm.Event
	var last uint64
	resumes := 0
	for {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := c.Watch(sctx, &zm.WatchRequest{CampaignId: id, AfterSeq: last, Follow: true})
		if err != nil {
			cancel()
			return events, resumes, err
		}
		dropped := false
		for {
			ev, err := stream.Recv()
			if err == io.EOF {
				cancel()
				return events, resumes, fail("the stream ended after seq %d without a final event", last)
			}
			if err != nil {
				cancel()
				return events, resumes, err
			}
			if ev.Seq != last+1 {
				cancel()
				return events, resumes, fail("seq %d after %d: a gap or a repeat", ev.Seq, last)
			}
			last = ev.Seq
			events = append(events, ev)
			fmt.Printf("event seq=%d activity=%q state=%s campaign_state=%s agent=%q\n",
				ev.Seq, ev.Activity, ev.State, ev.CampaignState, ev.Agent)
			if isFinal(ev) {
				cancel()
				return events, resumes, nil
			}
			if resumes == 0 && len(events) == dropAfter {
				dropped = true
				break
			}
		}
		cancel() // drop the stream mid-campaign
		if dropped {
			resumes++
			fmt.Printf("dropped the stream after seq %d; resuming with after_seq=%d\n", last, last)
		}
	}
}

func run(o options) error {
	conn, err := dial(o)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	campaigns := zm.NewCampaignsClient(conn)

	req := &zm.SubmitRequest{
		Name: o.name,
		Activities: []*zm.ActivitySpec{
			shell("produce", "echo 42 > \"$ZMESH_OUTPUT_DIR/n.txt\""),
			shell("consume", "cat \"$ZMESH_INPUT_0/n.txt\"", "@output:produce"),
		},
	}
	sub, err := campaigns.Submit(ctx, req)
	if err != nil {
		return err
	}
	fmt.Printf("submitted campaign %s to monitor %s\n", sub.CampaignId, sub.Monitor)
	events, resumes, err := follow(ctx, campaigns, sub.CampaignId, o.dropAfter)
	if err != nil {
		return err
	}
	final := events[len(events)-1]
	fmt.Printf("campaign %s ended %s after %d events, %d resume(s), no gap\n",
		sub.CampaignId, final.CampaignState, len(events), resumes)
	if final.CampaignState != zm.CampaignState_CAMPAIGN_STATE_SUCCEEDED {
		return fail("campaign ended %s: %s", final.CampaignState, final.Message)
	}
	if resumes != 1 {
		return fail("expected one resume, made %d (the campaign had %d events)", resumes, len(events))
	}
	got, err := campaigns.Get(ctx, &zm.GetCampaignRequest{CampaignId: sub.CampaignId})
	if err != nil {
		return err
	}
	if got.LastSeq != final.Seq {
		return fail("Get says last_seq %d, the stream ended at %d", got.LastSeq, final.Seq)
	}
	for _, a := range got.Activities {
		if a.Name == "consume" {
			out := a.Detail["stdout_tail"]
			fmt.Printf("consume read %q from produce's output on %s\n", strings.TrimSpace(out), a.Agent)
			if strings.TrimSpace(out) != "42" {
				return fail("consume printed %q, not 42", out)
			}
		}
	}

	membership := zm.NewMembershipClient(conn)
	_, err = membership.Ping(ctx, &zm.PingRequest{From: "go-client", Target: "x"})
	if status.Code(err) != codes.PermissionDenied {
		return fail("Membership.Ping with a client certificate: want PERMISSION_DENIED, got %v", err)
	}
	fmt.Printf("agent-only Membership.Ping refused: %s\n", status.Code(err))
	fmt.Println("OK")
	return nil
}

func main() {
	o, err := parse()
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage error:", err)
		os.Exit(2)
	}
	err = run(o)
	if err == nil {
		return
	}
	var check checkError
	if errors.As(err, &check) {
		fmt.Fprintln(os.Stderr, "check failed:", err)
		os.Exit(1)
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		fmt.Fprintf(os.Stderr, "rpc error: %s: %s\n", s.Code(), s.Message())
		os.Exit(3)
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(3)
}
