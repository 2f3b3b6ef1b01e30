"""Protocol-wide limits and defaults, each defined once (docs/protocol.md §15).

A limit bounds what a hostile input can make pocv read, allocate or loop over; each carries
its reason. Limits of one format live with that format (the bundle's in ``pocv.bundle``, a
state's in ``pocv.encoding``, a proof's in ``pocv.merkle``); those used by several modules are
here.
"""

from __future__ import annotations

from typing import Final

#: BLAKE3-256: every digest, root and job id
DIGEST_SIZE: Final = 32
#: ed25519 public keys and signatures (Solana keys)
PUBKEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
#: a beacon is 32 bytes the worker could not predict
BEACON_SIZE: Final = 32

#: 4 Gi steps: the leaf hashes alone would be 128 GiB
MAX_STEPS: Final = 1 << 32
#: indices in one challenge (and outcomes in one verdict): bounds the verifier's work
MAX_CHALLENGES: Final = 65_536
#: one JSON record; a verdict of MAX_CHALLENGES outcomes fits easily
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
#: one job spec as JSON
MAX_SPEC_BYTES: Final = 64 * 1024
#: the reason text of one outcome
MAX_DETAIL_BYTES: Final = 512
#: a fingerprint or environment mapping, as canonical JSON
MAX_META_BYTES: Final = 64 * 1024
#: 4 GiB: one encoded state
MAX_STATE_BYTES: Final = 1 << 32

#: the most challenged steps a worker answers by default: a verifier asking for more would make
#: the worker redo the job (p = 0.999999 at f = 0.01 needs 1,375); a job's terms may allow more
DEFAULT_MAX_ANSWER: Final = 2048

#: p: catch a worker who faked a fraction f of the steps with at least this probability
DEFAULT_CONFIDENCE: Final = 0.999
#: f: the fraction of faked steps the default challenge is sized for (k = 66 with p = 0.999)
DEFAULT_CHEAT_FRACTION: Final = 0.1
#: the most chunks of one state a job may ask to compare by sample (JobSpec.sample_chunks,
#: docs/protocol.md §8.1)
MAX_SAMPLE_CHUNKS: Final = 1024
