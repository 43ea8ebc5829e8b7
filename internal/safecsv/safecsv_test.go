package safecsv

import (
	"bytes"
	"encoding/csv"
	"testing"
)

func TestWriter_NeutralisesEveryFormulaCell(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	in := []string{"=1+2*3", "@SUM(1+1)", "+1", "-2", "\tx", "\ry", "plain", "", "a=b"}
	if err := w.Write(in); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := csv.NewReader(&b).Read()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"'=1+2*3", "'@SUM(1+1)", "'+1", "'-2", "'\tx", "'\ry", "plain", "", "a=b"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("cell %d: %q, want %q", i, got[i], want[i])
		}
		if Uncell(got[i]) != in[i] {
			t.Errorf("cell %d: Uncell(%q) = %q, want %q", i, got[i], Uncell(got[i]), in[i])
		}
	}
	if Uncell("'quoted") != "'quoted" {
		t.Error("Uncell must keep an apostrophe that cell did not add")
	}
}

func TestCell_NeutralisesFormulaPrefixesOnly(t *testing.T) {
	for in, want := range map[string]string{
		"=1+1": "'=1+1", "+1": "'+1", "-1": "'-1", "@x": "'@x", "\tx": "'\tx", "\rx": "'\rx",
		"": "", "alice": "alice", "a=b": "a=b", "'quoted": "'quoted", " =x": " =x",
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q; want %q", in, got, want)
		}
	}
}
