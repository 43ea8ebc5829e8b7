// Package client is the broker API client of the CLI: it logs a person in at
// the identity provider a broker names (the RFC 8628 device grant, else the
// code flow with PKCE on a loopback redirect, RFC 8252), keeps their tokens in
// the user's config directory, refreshes them, and sends authenticated
// requests, returning the broker's problem documents as errors.
package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Session is one server's login as the CLI keeps it. Its tokens are secrets:
// they are written only to the credentials file and sent only to the server
// and the issuer's token endpoint.
type Session struct {
	Server       string    `json:"server"`
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"clientId"`
	TokenURL     string    `json:"tokenUrl"`
	Subject      string    `json:"subject"`
	Email        string    `json:"email,omitempty"`
	IDToken      string    `json:"idToken"`
	RefreshToken string    `json:"refreshToken,omitempty"`
	Expiry       time.Time `json:"expiry"` // the ID token's exp
}

// Store keeps sessions, one per server, in Dir/credentials.json (mode 0600,
// in a directory of mode 0700).
type Store struct{ Dir string }

// credentialsFile is the file name in Store.Dir.
const credentialsFile = "credentials.json"

// credentials is the file's content.
type credentials struct {
	Sessions map[string]Session `json:"sessions"`
}

func (s Store) path() string { return filepath.Join(s.Dir, credentialsFile) }

// read returns the file's sessions (none when there is no file). A file
// others may read is refused: it holds refresh tokens.
func (s Store) read() (credentials, error) {
	c := credentials{Sessions: map[string]Session{}}
	f, err := os.Open(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read credentials: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return c, fmt.Errorf("read credentials: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return c, fmt.Errorf("credentials file %s is open to other users (mode %04o): run chmod 600 on it, or remove it and log in again", s.path(), perm)
	}
	if err := json.NewDecoder(f).Decode(&c); err != nil {
		return c, fmt.Errorf("credentials file %s is not valid (remove it and log in again): %w", s.path(), err)
	}
	if c.Sessions == nil {
		c.Sessions = map[string]Session{}
	}
	return c, nil
}

// write replaces the file atomically (a private temporary file renamed over
// it), so that a reader never sees half of it.
func (s Store) write(c credentials) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	tmp, err := os.CreateTemp(s.Dir, ".credentials-*.json") // mode 0600
	if err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), s.path())
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write credentials: %w", werr)
	}
	return nil
}

// lockFile is the lock's file name in Store.Dir.
const lockFile = "credentials.lock"

// lockWait bounds how long a command waits for another's lock.
const lockWait = 30 * time.Second

// lock takes the credentials' lock (an flock on Dir/credentials.lock) and
// returns its release. A command holds it across reading, refreshing and
// writing a session, so that two commands at once neither refresh with the
// same refresh token (which a provider that rotates them may take for a
// stolen one, and end the login) nor write over each other's sessions.
func (s Store) lock() (unlock func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock credentials: %w", err)
	}
	path := filepath.Join(s.Dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock credentials: %w", err)
	}
	for deadline := time.Now().Add(lockWait); ; {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock credentials (%s): %w", path, err)
		}
		if ok {
			return func() { f.Close() }, nil // closing releases the flock
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another broker command has held %s for %v: try again when it ends", path, lockWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Load returns the session of server, and whether there is one.
func (s Store) Load(server string) (Session, bool, error) {
	c, err := s.read()
	if err != nil {
		return Session{}, false, err
	}
	ss, ok := c.Sessions[server]
	return ss, ok, nil
}

// Save stores ss as its server's session.
func (s Store) Save(ss Session) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.saveLocked(ss)
}

// saveLocked is Save for a caller that holds the lock.
func (s Store) saveLocked(ss Session) error {
	c, err := s.read()
	if err != nil {
		return err
	}
	c.Sessions[ss.Server] = ss
	return s.write(c)
}

// Delete forgets server's session; it reports whether there was one.
func (s Store) Delete(server string) (bool, error) {
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	c, err := s.read()
	if err != nil {
		return false, err
	}
	if _, ok := c.Sessions[server]; !ok {
		return false, nil
	}
	delete(c.Sessions, server)
	return true, s.write(c)
}

// NormalizeServer checks a broker's URL and returns its canonical form (no
// trailing slash), the key of its session. Bearer tokens travel to it, so it
// must be https, or http on a loopback host (broker dev).
func NormalizeServer(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	switch {
	case raw == "":
		return "", errors.New("no server given: --server URL or BROKER_SERVER")
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return "", fmt.Errorf("server %q is not an http(s) URL such as https://broker.example.com", raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("server %q: give only the scheme, host and path, without credentials, query or fragment", raw)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		return "", fmt.Errorf("server %q: tokens would travel in clear text; use https (http only on a loopback host)", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// loopback reports whether host is "localhost" or a loopback address.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
