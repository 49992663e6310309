// Go's net/http client over TLS (h2 by ALPN): go run h2_go_client.go URL...
//
// GETs each URL at once, on one client (so on one HTTP/2 connection), and prints
// "PROTO_MAJOR STATUS BODY" for each, in order; exits 1 on any error or if a response did not
// come over HTTP/2.
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
)

func main() {
	// A custom TLS configuration turns Go's automatic HTTP/2 off unless ForceAttemptHTTP2 says so.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the test's throwaway certificate
		ForceAttemptHTTP2: true,
	}}
	urls := os.Args[1:]
	lines := make([]string, len(urls))
	failed := false
	var wg sync.WaitGroup
	for i, url := range urls {
		wg.Add(1)
		go func(i int, url string) {
			defer wg.Done()
			resp, err := client.Get(url)
			if err != nil {
				lines[i], failed = "error "+err.Error(), true
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.ProtoMajor != 2 {
				failed = true
			}
			lines[i] = fmt.Sprintf("%d %d %s", resp.ProtoMajor, resp.StatusCode, strings.TrimSpace(string(body)))
		}(i, url)
	}
	wg.Wait()
	fmt.Println(strings.Join(lines, "\n"))
	if failed {
		os.Exit(1)
	}
}
