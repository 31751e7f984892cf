#!/usr/bin/env python3
"""Fixtures for tests/pipeline: SHA-256 of messages around the padding
boundaries and the run-directory contract's folder hash, from hashlib.

Folder hash (issue 8's run directory contract): SHA-256 over the folder's
files sorted by relative path, each contributing
    path bytes, NUL, the file's SHA-256 hex, newline.
Also the cases that pin pipeline/sha256.cc (OpenSSL EVP) to hashlib:
text_sha256 (a text repeated: empty, "abc", 55/56/64 and a million "a"s),
pattern_sha256 (pattern(n) around the padding boundaries, and one million
bytes) and chunked_file (a pattern file longer than Sha256File's 1 MiB read
buffer, so it is hashed in several reads; the test writes it, only its length
and hash are stored).
Writes tree/ (a small folder) and expected.json. Run from this folder.
"""
import hashlib
import json
import os


def pattern(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


def main():
    files = {
        "config.json": b'{"hidden_size": 64}\n',
        "model.safetensors": pattern(1000),
        "sub/b.txt": b"beta\n",
        "sub/a.txt": b"",
        "sub/deeper/x.bin": pattern(64),
        "Z-upper.txt": b"sorted bytewise: uppercase before lowercase\n",
    }
    for rel, data in files.items():
        path = os.path.join("tree", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    h = hashlib.sha256()
    for rel in sorted(files, key=lambda p: p.encode()):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).hexdigest().encode() + b"\n")
    lengths = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4097, 1000000]
    texts = [("", 1), ("abc", 1), ("a", 55), ("a", 56), ("a", 64), ("a", 1000000)]
    chunked_length = (5 << 19) + 17  # 2.5 MiB + 17: two full reads and a short one
    expected = {
        "tree_sha256": h.hexdigest(),
        "tree_bytes": sum(len(d) for d in files.values()),
        "files": {rel: hashlib.sha256(d).hexdigest() for rel, d in sorted(files.items())},
        "pattern_sha256": {str(n): hashlib.sha256(pattern(n)).hexdigest() for n in lengths},
        "text_sha256": [
            {"text": t, "repeat": r, "sha256": hashlib.sha256((t * r).encode()).hexdigest()}
            for t, r in texts
        ],
        "chunked_file": {"bytes": chunked_length,
                         "sha256": hashlib.sha256(pattern(chunked_length)).hexdigest()},
    }
    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
