"""The memo grammar: what pocv writes parses back; whatever anyone else writes never crashes the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocv.errors import MalformedError
from pocv.market import memo as memos

VALUE = st.from_regex(r"[A-Za-z0-9@._,:+\-]{1,40}", fullmatch=True)


@given(job=VALUE, root=VALUE, bond=st.integers(0, 2**64 - 1))
def test_commit_memo_round_trip(job: str, root: str, bond: int) -> None:
    m = memos.make("commit", job=job, root=root, bond=bond)
    assert memos.parse(m.text()) == m


@given(st.text(max_size=300))
def test_parser_never_raises_on_junk(text: str) -> None:
    m = memos.parse(text)
    assert m is None or m.kind in memos.KINDS


@given(st.text(max_size=60))
def test_parser_never_raises_on_junk_after_a_valid_prefix(tail: str) -> None:
    memos.parse("pocv1 commit " + tail)


BAD = {
    "unknown kind": "pocv1 refund job=a root=b bond=1",
    "missing field": "pocv1 commit job=a root=b",
    "extra field": "pocv1 commit job=a root=b bond=1 x=2",
    "duplicate field": "pocv1 commit job=a job=a root=b bond=1",
    "space in value": "pocv1 commit job=a  root=b bond=1",
    "wrong prefix": "pocv2 commit job=a root=b bond=1",
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_malformed_memos_are_not_records(text: str) -> None:
    assert memos.parse(text) is None


def test_typed_accessors_reject_bad_values() -> None:
    m = memos.parse("pocv1 commit job=notbase58digest root=- bond=12a")
    assert m is not None
    with pytest.raises(MalformedError, match="base58 32-byte digest"):
        m.digest("job")
    with pytest.raises(MalformedError, match="non-negative integer"):
        m.int("bond")
    assert m.digest("root") == b""
