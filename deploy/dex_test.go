package deploy

import (
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const dexConfigFile = "deploy/dex/config.yaml"

// dexConfig is the part of Dex's configuration these checks read.
type dexConfig struct {
	Issuer  string `json:"issuer"`
	Storage struct {
		Type string `json:"type"`
	} `json:"storage"`
	Telemetry struct {
		HTTP string `json:"http"`
	} `json:"telemetry"`
	OAuth2 struct {
		GrantTypes        []string `json:"grantTypes"`
		PasswordConnector string   `json:"passwordConnector"`
	} `json:"oauth2"`
	EnablePasswordDB bool        `json:"enablePasswordDB"`
	StaticClients    []dexClient `json:"staticClients"`
	StaticPasswords  []struct {
		Email  string   `json:"email"`
		Hash   string   `json:"hash"`
		Groups []string `json:"groups"`
	} `json:"staticPasswords"`
}

type dexClient struct {
	ID           string   `json:"id"`
	Secret       string   `json:"secret"`
	SecretEnv    string   `json:"secretEnv"`
	Public       bool     `json:"public"`
	RedirectURIs []string `json:"redirectURIs"`
}

func (c dexConfig) client(id string) (dexClient, bool) {
	i := slices.IndexFunc(c.StaticClients, func(c dexClient) bool { return c.ID == id })
	if i < 0 {
		return dexClient{}, false
	}
	return c.StaticClients[i], true
}

func readDexConfig(t *testing.T) dexConfig {
	t.Helper()
	var c dexConfig
	if err := yaml.Unmarshal(readFile(t, dexConfigFile), &c); err != nil {
		t.Fatalf("parse %s: %v", dexConfigFile, err)
	}
	return c
}

func TestDexConfig_DemoUsersCarryTheirGroups(t *testing.T) {
	c := readDexConfig(t)
	want := map[string][]string{
		"alice@example.com": {"broker-admins", "developers"},
		"bob@example.com":   {"developers"},
	}
	got := map[string][]string{}
	for _, u := range c.StaticPasswords {
		got[u.Email] = slices.Sorted(slices.Values(u.Groups))
		if !strings.HasPrefix(u.Hash, "$2") {
			t.Errorf("%s: hash is not bcrypt", u.Email)
		}
	}
	if len(got) != len(want) {
		t.Errorf("users = %v, want %v", got, want)
	}
	for email, groups := range want {
		if !slices.Equal(got[email], groups) {
			t.Errorf("%s groups = %v, want %v", email, got[email], groups)
		}
	}
}

func TestDexConfig_OffersThePasswordGrantOnItsLocalUsers(t *testing.T) {
	c := readDexConfig(t)
	if !c.EnablePasswordDB || c.OAuth2.PasswordConnector != "local" || !slices.Contains(c.OAuth2.GrantTypes, "password") {
		t.Errorf("want enablePasswordDB, oauth2.passwordConnector local and grant type password; got %v, %q, %v",
			c.EnablePasswordDB, c.OAuth2.PasswordConnector, c.OAuth2.GrantTypes)
	}
	if !slices.Contains(c.OAuth2.GrantTypes, "authorization_code") {
		t.Errorf("grant types %v: the console needs authorization_code", c.OAuth2.GrantTypes)
	}
	if c.Telemetry.HTTP == "" {
		t.Error("no telemetry listener: the compose health check polls its /healthz/ready")
	}
}

func TestDexConfig_ClientsKeepNoLiteralSecret(t *testing.T) {
	c := readDexConfig(t)
	app, ok := c.client("broker")
	if !ok || !app.Public || app.Secret != "" {
		t.Error("want a public client broker without secret (apps cannot keep one)")
	}
	console, ok := c.client("broker-console")
	switch {
	case !ok:
		t.Error("no client broker-console")
	case console.Secret != "" || console.SecretEnv == "":
		t.Error("broker-console must read its secret from the environment (secretEnv), never hold it")
	case !slices.Equal(console.RedirectURIs, []string{"http://localhost:8080/console/callback"}):
		t.Errorf("broker-console redirect URIs = %v", console.RedirectURIs)
	}
}
