"""The prebuilt answer of an accepted purge is byte for byte the v4 success envelope."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from edgecache.api.cloudflare.envelope import success, success_id


def test_a_job_ids_answer_is_the_envelope_of_its_id() -> None:
    job_id = uuid.uuid4().hex
    answer = success_id(job_id)
    assert answer.body == success({"id": job_id}).body
    assert answer.status == 200
    assert answer.content_type == "application/json"


@given(st.text())
def test_any_id_gets_the_same_body_as_the_envelope(job_id: str) -> None:
    assert success_id(job_id).body == success({"id": job_id}).body
