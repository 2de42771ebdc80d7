import pytest

from api.admission import Admission
from api.errors import APIError


def test_request_bound_gives_429_with_retry_after():
    admission = Admission(max_requests=2, max_tokens=10_000, retry_after_s=3)
    first = admission.admit("m", 1, 10)
    admission.admit("m", 1, 10)
    with pytest.raises(APIError) as refused:
        admission.admit("m", 1, 10)
    assert refused.value.status == 429 and refused.value.retry_after == 3
    admission.admit("other", 1, 10)  # bounds are per model
    first.release()
    first.release()  # idempotent: a second release must not free a slot twice
    admission.admit("m", 1, 10)
    with pytest.raises(APIError):
        admission.admit("m", 1, 10)


def test_token_bound_and_a_lone_large_request():
    admission = Admission(max_requests=100, max_tokens=1000)
    big = admission.admit("m", 1, 5000)  # nothing in flight: let in rather than refused forever
    with pytest.raises(APIError) as refused:
        admission.admit("m", 1, 1)
    assert refused.value.status == 429
    big.release()
    assert admission.load["m"].requests == 0 and admission.load["m"].tokens == 0
    small = admission.admit("m", 1, 600)
    with pytest.raises(APIError):
        admission.admit("m", 1, 500)
    admission.admit("m", 1, 400)
    small.release()


def test_choices_count_as_requests():
    admission = Admission(max_requests=3, max_tokens=10_000)
    with pytest.raises(APIError):
        admission.admit("m", 4, 10)
    admission.admit("m", 3, 10)
