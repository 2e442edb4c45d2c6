"""Verifying a signed run (tlx verify --public-key) vs the manifest hash check, same files.

Usage: python benchmarks/sign_bar.py RUN SCRATCH  (RUN is hard-linked into SCRATCH/run;
warm page cache, 7 interleaved rounds, the first dropped; results in benchmarks/RESULTS.md).
"""

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

src, run = Path(sys.argv[1]), Path(sys.argv[2]) / "run"
shutil.rmtree(run.parent, ignore_errors=True)
run.parent.mkdir(parents=True)
subprocess.run(["cp", "-al", str(src), str(run)], check=True)
shutil.rmtree(run / "rejected", ignore_errors=True)
key = ec.generate_private_key(ec.SECP256R1())
(run.parent / "k.pem").write_bytes(
    key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
)
(run.parent / "p.pem").write_bytes(
    key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
)
r = subprocess.run(
    [sys.executable, "-m", "exporter", "sign", str(run), "--key", str(run.parent / "k.pem")],
    capture_output=True,
    text=True,
)
print("sign rc", r.returncode, r.stderr[-300:])
from exporter.core.runfolder import open_run  # noqa: E402 (after sys.path)
from exporter.sign.verification import verify_signature  # noqa: E402


def hash_check():
    info = open_run(run)  # a fresh opened run: every file hashed again
    m = info.manifest
    info.check_file(m.source)
    for e in m.artifacts.values():
        info.check_files(e.files)


def sig_check():
    verify_signature(run, run.parent / "p.pem")


t = {"hash": [], "signature": []}
for i in range(7):
    for name, fn in (
        (("hash", hash_check), ("signature", sig_check))
        if i % 2 == 0
        else (("signature", sig_check), ("hash", hash_check))
    ):
        t0 = time.perf_counter()
        fn()
        t[name].append(time.perf_counter() - t0)
med = {k: statistics.median(v[1:]) for k, v in t.items()}
size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
print({k: [round(x, 3) for x in v] for k, v in t.items()})
print(
    "median s",
    {k: round(v, 3) for k, v in med.items()},
    "ratio",
    round(med["signature"] / med["hash"], 2),
    "run MB",
    round(size / 1e6, 1),
)
