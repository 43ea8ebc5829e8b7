package token

import (
	"encoding/binary"
	"hash/adler32"
)

// zlibHeader is a zlib stream header (RFC 1950 §2.2): CMF 0x78 (deflate, 32 KiB
// window) and FLG 0x01 (no preset dictionary, "fastest" level), which makes
// CMF*256+FLG a multiple of 31. The official Dart vector has the same header.
var zlibHeader = [2]byte{0x78, 0x01}

// maxStored is the most data one stored deflate block can hold (RFC 1951
// §3.2.4: LEN is 16 bits).
const maxStored = 0xFFFF

// appendZlib appends src to dst as a zlib stream whose deflate data is stored,
// uncompressed blocks: the header, then per block of at most maxStored bytes a
// BFINAL/BTYPE=00 byte, LEN and NLEN (little-endian) and the bytes themselves,
// then the Adler-32 of src (big-endian). Empty src gives one empty final block.
//
// Token content is a few hundred bytes that deflate barely shrinks, so
// storing it costs a dozen bytes of token length and saves all of the
// compressor's time.
func appendZlib(dst, src []byte) []byte {
	sum := adler32.Checksum(src)
	dst = append(dst, zlibHeader[:]...)
	for {
		n := min(len(src), maxStored)
		var final byte
		if n == len(src) {
			final = 1
		}
		dst = append(dst, final, byte(n), byte(n>>8), ^byte(n), ^byte(n>>8))
		dst = append(dst, src[:n]...)
		src = src[n:]
		if final == 1 {
			return binary.BigEndian.AppendUint32(dst, sum)
		}
	}
}
