"""Pseudonyms: the remembered ones are exactly the computed ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.logs import customer_ref
from streams.privacy import Pseudonyms


@given(key=st.binary(min_size=1, max_size=64),
       ids=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=60))
def test_a_pseudonym_is_the_keyed_hash_whether_remembered_or_not(key: bytes,
                                                                 ids: list[str]) -> None:
    pseudonyms = Pseudonyms(key)
    pseudonyms.MEMO_MAX = 7  # small, so the memo is emptied within one example
    for customer_id in ids + ids[::-1]:
        assert pseudonyms.ref(customer_id) == customer_ref(customer_id, key)
    assert len(pseudonyms._memo) <= 7
