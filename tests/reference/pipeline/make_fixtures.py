#!/usr/bin/env python3
"""Fixtures for tests/pipeline: SHA-256 of messages around the padding
boundaries and the run-directory contract's folder hash, from hashlib.

Folder hash (issue 8's run directory contract): SHA-256 over the folder's
files sorted by relative path, each contributing
    path bytes, NUL, the file's SHA-256 hex, newline.
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
    lengths = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4097]
    expected = {
        "tree_sha256": h.hexdigest(),
        "tree_bytes": sum(len(d) for d in files.values()),
        "files": {rel: hashlib.sha256(d).hexdigest() for rel, d in sorted(files.items())},
        "pattern_sha256": {str(n): hashlib.sha256(pattern(n)).hexdigest() for n in lengths},
    }
    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
