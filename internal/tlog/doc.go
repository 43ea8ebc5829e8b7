// Package tlog owns the transparency log's formats: checkpoints as signed
// notes, tiles, inclusion and consistency proofs, verified offline.
//
// The format functions listed below are pure: no database, no network, no
// clock. The Merkle tree is RFC 6962's with SHA-256, as computed by
// golang.org/x/mod/sumdb/tlog (imported here as xtlog), and signatures are
// golang.org/x/mod/sumdb/note Ed25519 note signatures. The formats follow
// the C2SP specifications:
//
//   - c2sp.org/signed-note: keys (GenerateKey, NewSigner, NewVerifier); the
//     log's key name is its origin.
//   - c2sp.org/tlog-checkpoint: Checkpoint, ParseCheckpoint, SignCheckpoint,
//     OpenCheckpoint. Signatures by unknown keys (witness cosignatures,
//     c2sp.org/tlog-cosignature) are tolerated and returned unverified.
//   - c2sp.org/tlog-tiles: TilePath, ParseTilePath, HashTile, EntryBundle,
//     ParseEntryBundle, with tile height 8 (256 hashes per full tile). An
//     entry bundle is the xtlog.Tile with level -1, as in x/mod.
//   - c2sp.org/tlog-proof: Proof, ParseProof, VerifyProof; VerifyConsistency
//     checks an RFC 6962 consistency proof between two checkpoints.
//
// Parsers are strict: they accept only the canonical encoding, so that one
// value has exactly one text and a parsed value marshals back to the same
// bytes. Errors name what is wrong and never contain key material.
package tlog
